"""Octave ResNets (Chen et al. 2019, "Drop an Octave"): ResNets whose block
convolutions are octave convolutions (`layers.OctConv`).

Every convolution of every residual block, the 1x1s and 3x3s and the
projection shortcuts, becomes an OctConv with BatchNorm on each frequency
group (`layers.OctConvUnit`); the shortcut sum and the ReLU after it act on
each group. Where alpha is 0 follows the authors' code
(facebookresearch/OctConv, `utils/gluon/utils/resnetv1.py`: `ratio=[r, r,
r, 0.]`; d-li14/octconv.pytorch, `oct_resnet.py`):

  stem          plain: 7x7/2 conv + BN + ReLU + 3x3/2 max pool (ImageNet)
  stage 1       block 0 converts: its first conv and its projection shortcut
                take the plain map (alpha_in = 0) and give octave pairs
  stages 1..n-1 alpha_in = alpha_out = alpha
  stage n       alpha 0: block 0's first conv and projection merge the pair
                back (alpha_in = alpha, alpha_out = 0); the rest is plain
  head          global average pool of the (now plain) map, dense

The CIFAR form (`stem='small'`) has no projection in its first block, so
its 3x3 stem is the converting OctConv (alpha_in = 0, alpha_out = alpha).
Blocks stride on their 3x3 (torchvision's v1.5, as d-li14's code), and a
strided OctConv average-pools first (layers/octconv.py): at alpha = 0 the
network is therefore the ResNet with average-pool-then-conv downsampling,
which is also the authors' alpha = 0 baseline, with the same parameters and
counted FLOPs as the plain ResNet.

Parameters equal the ResNet's (an OctConv splits the kernel into four blocks
and each group's BN covers its channels): oct_resnet50 25,557,032, as
ResNet-50 and the d-li14 README's 25.557M. FLOPs at 224x224 (counted by
`cnnjax summary`, 2 per multiply-add, each path at its own resolution):
ResNet-50 and oct_resnet50 at alpha 0 8.18 G (4.09 G multiply-adds); alpha
0.125 7.13 G (3.57 G); alpha 0.25 6.21 G (3.10 G); alpha 0.5 4.73 G (2.367 G
multiply-adds, the d-li14 README's 2.367 G for its Oct-ResNet-50).

Option-A (zero-padding) shortcuts pad each group to its new width; where a
block changes the octave layout (the merge in the last stage) a projection
is used instead, so oct_resnet20 has one 1x1 projection (2,176 parameters)
more than ResNet-20 at alpha > 0 and the same 269,722 at alpha = 0.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.layers.octconv import OctConvUnit, check_alpha, octave_channels
from cnnjax.layers.residual import ZeroPadShortcut, shortcut_option
from cnnjax.models.registry import register_model
from cnnjax.models.resnet import STAGE_SIZES

ModuleDef = Any
STEMS = ("imagenet", "small")


class OctBlock(nn.Module):
  """A post-activation residual block on octave pairs.

  `alpha_in` is the input's low share, `alpha` the block's (its output's);
  `unit` an `OctConvUnit` partial with conv, norm and act bound.
  """
  features: int
  unit: ModuleDef
  alpha_in: float
  alpha: float
  strides: int = 1
  shortcut: str = "B"
  act: Callable = nn.relu

  expansion = 1

  def _shortcut(self, x, y):
    high, low = x
    out_h, out_l = y
    changes = (self.strides != 1 or
               high.shape[-1] + (0 if low is None else low.shape[-1]) !=
               self.features * self.expansion)
    layout = (low is None) != (out_l is None)  # A conversion or a merge.
    option = shortcut_option(self.shortcut)
    if option == "C" or layout or (option == "B" and changes):
      return self.unit(self.features * self.expansion, 1, self.alpha_in,
                       self.alpha, strides=self.strides, padding=0,
                       act=None, name="shortcut")(x)
    if not changes:
      return x
    return (ZeroPadShortcut(out_h.shape[-1], self.strides,
                            name="shortcut_h")(high),
            None if low is None else ZeroPadShortcut(
                out_l.shape[-1], self.strides, name="shortcut_l")(low))

  def _add(self, x, y):
    s = self._shortcut(x, y)
    return tuple(None if b is None else self.act(b + a)
                 for b, a in zip(y, s))


class OctBasicBlock(OctBlock):
  """Two 3x3 OctConv-BN units: relu(bn2(conv2(relu(bn1(conv1(x))))) + s)."""

  @nn.compact
  def __call__(self, x):
    y = self.unit(self.features, 3, self.alpha_in, self.alpha,
                  strides=self.strides, padding=1, name="conv1")(x)
    y = self.unit(self.features, 3, self.alpha, self.alpha, padding=1,
                  act=None, name="conv2")(y)
    return self._add(x, y)


class OctBottleneckBlock(OctBlock):
  """1x1 reduce, 3x3 (at the stride), 1x1 expand to 4x, all OctConv-BN."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    y = self.unit(self.features, 1, self.alpha_in, self.alpha, padding=0,
                  name="conv1")(x)
    y = self.unit(self.features, 3, self.alpha, self.alpha,
                  strides=self.strides, padding=1, name="conv2")(y)
    y = self.unit(self.features * self.expansion, 1, self.alpha, self.alpha,
                  padding=0, act=None, name="conv3")(y)
    return self._add(x, y)


class OctResNet(nn.Module):
  """An octave ResNet (see the module docstring).

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for Oct-ResNet-50.
    alpha: the low-frequency share of every stage but the last (the
      paper's ImageNet models: 0.125 to 0.75); 0 gives the ResNet with
      average-pool downsampling.
    bottleneck: bottleneck blocks (ResNet-50 and deeper) or basic ones.
    num_classes: 0 for no head: return the pooled features.
    widths: the planes of each stage; the stem has the first.
    stem: 'imagenet' (7x7/2 conv + BN-ReLU + 3x3/2 max pool, plain) or
      'small' (a 3x3 OctConv-BN-ReLU that converts to octave pairs: CIFAR).
    shortcut: 'A' ('zero_pad'), 'B' ('projection') or 'C'
      ('projection_all'), as `layers.residual`.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  alpha: float = 0.25
  bottleneck: bool = True
  num_classes: int = 1000
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = "imagenet"
  shortcut: str = "projection"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _check(self, x):
    check_alpha(self.alpha, "OctResNet's alpha")
    shortcut_option(self.shortcut)
    if self.stem not in STEMS:
      raise CnnjaxError(f"stem must be one of {', '.join(STEMS)}, got "
                        f"{self.stem!r}.")
    if x.ndim != 4:
      raise CnnjaxError(f"an OctResNet needs images of shape (B, H, W, C), "
                        f"got {x.shape}.")
    sizes, widths = tuple(self.stage_sizes), tuple(self.widths)
    if not sizes or len(sizes) != len(widths) or min(sizes) < 1:
      raise CnnjaxError(f"stage_sizes {sizes} and widths {widths} must give "
                        f"each stage a positive number of blocks.")
    for width in widths[:-1]:  # Empty low groups are refused here, by name.
      octave_channels(width, self.alpha, "OctResNet's alpha")

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    self._check(x)
    conv = functools.partial(layers.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(layers.TorchLikeBatchNorm,
                             use_running_average=not train, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    act = nn.relu
    unit = functools.partial(OctConvUnit, conv=conv, norm=norm, act=act)
    block_cls = OctBottleneckBlock if self.bottleneck else OctBasicBlock
    # The last stage is plain (alpha 0): its first block merges the pair.
    alphas = (self.alpha,) * (len(self.widths) - 1) + (0.0,)

    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.widths[0], 7, strides=2, padding=3, name="stem_conv")(x)
      x = act(norm(name="stem_bn")(x))  # (B, 112, 112, 64) at 224
      x = layers.MaxPool(3, 2, padding=1, name="stem_pool")(x)
      pair, alpha_in = (x, None), 0.0  # (B, 56, 56, 64) at 224
    else:
      pair = unit(self.widths[0], 3, 0.0, alphas[0], padding=1,
                  name="stem")(x)
      alpha_in = alphas[0]

    for s, (num_blocks, planes) in enumerate(zip(self.stage_sizes,
                                                 self.widths)):
      for b in range(num_blocks):
        pair = block_cls(planes, unit, alpha_in, alphas[s],
                         strides=2 if s > 0 and b == 0 else 1,
                         shortcut=self.shortcut, act=act,
                         name=f"stage{s + 1}_block{b}")(pair)
        alpha_in = alphas[s]
    x = layers.GlobalAvgPool(name="pool")(pair[0])  # (B, C); no low left.
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


def _register(name: str, description: str, input_shape, **fields):
  register_model(name, input_shape=input_shape, description=description)(
      functools.partial(OctResNet, **fields))


_register("oct_resnet50", "Oct-ResNet-50 (Chen et al. 2019), alpha 0.25 in "
          "stages 1-3", (224, 224, 3), stage_sizes=STAGE_SIZES[50])
_register("oct_resnet20", "Oct-ResNet-20 for CIFAR: ResNet-20 with octave "
          "convolutions, alpha 0.25 in stages 1-2", (32, 32, 3),
          stage_sizes=(3, 3, 3), bottleneck=False, num_classes=10,
          widths=(16, 32, 64), stem="small", shortcut="A")
