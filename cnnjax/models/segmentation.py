"""Semantic segmentation heads on the classifiers' feature backbones.

    model = create_model('fcn', backbone='resnet18', variant='8s', num_classes=4)
    model = create_model('unet', backbone='resnet18', num_classes=4)
    logits = model.apply(variables, images)  # (B, H, W, num_classes)

Any model with `features_only` (models/backbone.py: the ResNets, ResNeXts,
Wide ResNets, SE-ResNets, VGGs, DenseNets) plugs in by name; its variables
sit under 'encoder', keyed as the classifier's (so a classifier's weights
load there with `backbone_variables`). Both heads return logits at the
input's resolution; pair them with a dataset of task 'segmentation'
(per-pixel cross-entropy, mean IoU).

FCN (Long, Shelhamer and Darrell 2015). The deepest map (stride 32) is
scored by a 1x1 convolution into class maps; '32s' upsamples them 32 times
with one learned transposed convolution. '16s' first upsamples them twice
and adds the scores of the stride-16 map (a 1x1 convolution started at
zero, as in the paper), then upsamples 16 times; '8s' does the same once
more with the stride-8 map, then upsamples 8 times. Every upsampling is a
transposed convolution of kernel 2f and stride f started as bilinear
interpolation, as in the paper, and learned. Where sizes do not halve
exactly (odd inputs), an upsampled map is cut or edge-padded to the next.
`head_width` > 0 puts torchvision's FCNHead before the scores (3x3
convolution, BN, ReLU, dropout 0.1); the paper's VGG kept its FC6/FC7 as
convolutions there.

U-Net (Ronneberger, Fischer and Brox 2015) as a decoder over the backbone's
stages: from the deepest, each step upsamples 2x with a learned 2x2
transposed convolution, concatenates the next shallower stage's map (the
skip connection) and applies two 3x3 convolutions with BN and ReLU; after
the shallowest stage it upsamples to the input's size the same way and
scores the pixels with a 1x1 convolution. Convolutions are padded (the
paper's are not and crop the skips instead), so outputs keep the input's
size.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import create_model, register_model

FCN_VARIANTS = {"32s": 1, "16s": 2, "8s": 3}  # how many stages it reads


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
  """A (size, size, channels, channels) ConvTranspose kernel that upsamples
  each channel by bilinear interpolation (FCN's `upsample_filt`)."""
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 else factor - 0.5
  taps = 1 - np.abs(np.arange(size) - center) / factor
  filt = np.outer(taps, taps).astype(np.float32)
  kernel = np.zeros((size, size, channels, channels), np.float32)
  kernel[:, :, np.arange(channels), np.arange(channels)] = filt[..., None]
  return kernel


def _bilinear_init(key, shape, dtype=jnp.float32):
  del key
  kh, kw, out, inp = shape
  if kh != kw or out != inp:
    raise CnnjaxError("a bilinear upsampling kernel needs a square window and as "
                      f"many outputs as inputs, got {shape}")
  return jnp.asarray(bilinear_kernel(kh, out), dtype)


def upsample(x, factor: int, features: int, *, name: str, bilinear: bool = True,
             dtype: Any = jnp.float32):
  """A learned transposed convolution of kernel 2 f and stride f (f x the size)."""
  return layers.ConvTranspose(
      features, 2 * factor, strides=factor, padding=factor // 2, use_bias=False,
      kernel_init=_bilinear_init if bilinear else nn.initializers.lecun_normal(),
      dtype=dtype, name=name)(x)


def _fit(x, size):
  """x (B, h, w, C) cut or edge-padded at the bottom and right to size (H, W):
  maps of backbones that round sizes down (VGG's pooling) can come back a
  pixel short of the next stage's, those that round up a pixel long."""
  x = x[:, :size[0], :size[1]]
  pad = ((0, 0), (0, size[0] - x.shape[1]), (0, size[1] - x.shape[2]), (0, 0))
  return jnp.pad(x, pad, mode="edge") if any(p[1] for p in pad) else x


def _encoder(backbone: str, out_indices):
  return create_model(backbone, features_only=True, out_indices=out_indices)


class FCN(nn.Module):
  """FCN-32s/16s/8s on a feature backbone (module docstring)."""
  num_classes: int = 4
  backbone: str = "resnet18"
  variant: str = "8s"
  head_width: int = 0  # > 0: torchvision's FCNHead of this width first
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  def setup(self):
    if self.variant not in FCN_VARIANTS:
      raise CnnjaxError(f"FCN variant must be one of {', '.join(FCN_VARIANTS)}, got "
                        f"{self.variant!r}")
    stages = FCN_VARIANTS[self.variant]
    self.encoder = _encoder(self.backbone, tuple(range(-stages, 0)))

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    size = x.shape[1:3]
    maps = self.encoder(x.astype(self.dtype), train=train)  # shallow to deep
    reductions = [f["reduction"] for f in self.encoder.feature_info]
    deep = maps[-1]
    if self.head_width:
      deep = layers.Conv(self.head_width, 3, padding=1, use_bias=False, dtype=self.dtype,
                         name="head_conv")(deep)
      deep = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, name="head_bn")(deep))
      deep = nn.Dropout(self.dropout_rate, deterministic=not train)(deep)
    score = layers.Conv(self.num_classes, 1, dtype=self.dtype, name="score")(deep)
    for level in range(len(maps) - 2, -1, -1):
      factor = reductions[level + 1] // reductions[level]
      up = upsample(score, factor, self.num_classes, dtype=self.dtype,
                    name=f"up{reductions[level + 1]}")
      skip = layers.Conv(self.num_classes, 1, kernel_init=nn.initializers.zeros,
                         dtype=self.dtype, name=f"score{reductions[level]}")(maps[level])
      score = _fit(up, skip.shape[1:3]) + skip
    out = upsample(score, reductions[0], self.num_classes, dtype=self.dtype,
                   name="up_final")
    return _fit(out, size)


class UNet(nn.Module):
  """A U-Net decoder over a feature backbone (module docstring)."""
  num_classes: int = 4
  backbone: str = "resnet18"
  final_width: int = 32  # channels of the last, input-sized stage
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = _encoder(self.backbone, None)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    size = x.shape[1:3]
    maps = self.encoder(x.astype(self.dtype), train=train)
    info = self.encoder.feature_info
    conv = functools.partial(layers.Conv, kernel_size=3, padding=1, use_bias=False,
                             dtype=self.dtype)
    norm = functools.partial(layers.batch_norm, train=train, dtype=self.dtype)

    def block(y, width, name):
      for i in (1, 2):
        y = nn.relu(norm(name=f"{name}_bn{i}")(conv(width, name=f"{name}_conv{i}")(y)))
      return y

    y = maps[-1]
    for level in range(len(maps) - 2, -1, -1):
      width = info[level]["num_chs"]
      factor = info[level + 1]["reduction"] // info[level]["reduction"]
      if factor > 1:
        y = upsample(y, factor, width, bilinear=False, dtype=self.dtype,
                     name=f"up{info[level + 1]['reduction']}")
        y = _fit(y, maps[level].shape[1:3])
      y = jnp.concatenate([y, maps[level]], axis=-1)
      y = block(y, width, f"dec{info[level]['reduction']}")
    factor = info[0]["reduction"]
    if factor > 1:
      y = _fit(upsample(y, factor, self.final_width, bilinear=False, dtype=self.dtype,
                        name="up_final"), size)
    y = block(y, self.final_width, "dec_out")
    return layers.Conv(self.num_classes, 1, dtype=self.dtype, name="score")(y)


_SHAPE = (64, 64, 3)
register_model("fcn", input_shape=_SHAPE,
               description="FCN-32s/16s/8s segmentation head on a feature backbone "
                           "(Long et al. 2015)")(FCN)
register_model("unet", input_shape=_SHAPE,
               description="U-Net decoder on a feature backbone (Ronneberger et al. 2015)")(UNet)
