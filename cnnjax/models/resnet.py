"""ResNet and its ImageNet relatives from one generic module.

One `ResNet` (stem, four stages of residual blocks, global average pooling,
`head`) builds, by its fields:

  ResNet-18/34/50/101/152   He et al. 2016, "Deep Residual Learning", Table 1
  plain nets                the same without shortcuts (`residual=False`), the
                            "plain" networks of the degradation experiment
                            (Table 2, Fig. 4)
  pre-activation ResNets    He et al. 2016, "Identity Mappings in Deep Residual
                            Networks": BN-ReLU-conv blocks
  ResNeXt                   Xie et al. 2017: grouped 3x3 convolutions
                            (`groups`, `width_per_group`)
  Wide ResNet               Zagoruyko & Komodakis 2016, torchvision's ImageNet
                            form: a wider bottleneck (`width_per_group=128`)
  SE-ResNet / SE-ResNeXt    Hu et al. 2018: squeeze-and-excitation (`se=True`)
  3D ResNets                `ndim=3`: every kernel becomes cubic (7x7x7 stem,
                            3x3x3 convolutions), for volumes such as
                            MedMNIST3D's 28x28x28x1

Layout (torchvision's, shapes for a 224x224x3 image):

  stem      7x7/2 conv (width) + BN + ReLU   (B, 112, 112, 64)
            3x3/2 max pool, padding 1        (B, 56, 56, 64)
  stage1    blocks at stride 1, planes = width         (B, 56, 56, 64 * e)
  stage2-4  first block at stride 2, planes doubled    ... (B, 7, 7, 512 * e)
  pool      global average                  (B, 512 * e)
  head      Dense(num_classes)

with e = 1 (basic blocks) or 4 (bottlenecks). Bottlenecks put the stride on
their 3x3 convolution, not on the first 1x1 as the paper's (Caffe) models
did: this is torchvision's "ResNet v1.5". A strided 1x1 reads only one
pixel in four of the block's input; v1.5 reads them all, which NVIDIA
measured as about 0.5% more top-1 accuracy, for 6% more multiply-adds
(4.09 G against 3.86 G for ResNet-50: the first 1x1 of stages 2-4 runs at
the higher resolution).

Shortcuts (paper section 3.3 and Table 3): 'projection' (option B, the
default and torchvision's) is the identity where the shape is kept and a
1x1 convolution + BN where it changes; 'zero_pad' (option A, parameter-free:
subsample and pad the new channels with zeros, the shortcut of the paper's
Table 2 ResNets that are compared with plain nets); 'projection_all'
(option C).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

ModuleDef = Any

SHORTCUTS = ("projection", "zero_pad", "projection_all")
STEMS = ("imagenet", "small")


def _zeros_if(flag: bool) -> dict[str, Any]:
  return {"scale_init": nn.initializers.zeros} if flag else {}


def _strided(x, strides: int):
  """Every `strides`-th position of each spatial dim: (B, *S, C) -> (B, *S', C)
  with S' = ceil(S / strides), the output size of a padded 3x3 conv."""
  if strides == 1:
    return x
  return x[(slice(None),) + (slice(None, None, strides),) * (x.ndim - 2)]


def shortcut_needs_weights(x, features: int, strides: int, kind: str) -> bool:
  """Whether a shortcut of `kind` is a (1x1) projection for this block."""
  changes = x.shape[-1] != features or strides != 1
  return kind == "projection_all" or (kind == "projection" and changes)


def zero_pad_shortcut(x, features: int, strides: int):
  """Option A: subsample, then append zero channels.

  (B, *S, C) -> (B, *S', F), F >= C.
  """
  x = _strided(x, strides)
  extra = features - x.shape[-1]
  if extra < 0:
    raise CnnjaxError(f"a zero-padding shortcut cannot reduce {x.shape[-1]} "
                      f"channels to {features}; use shortcut='projection'.")
  if extra:
    x = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + ((0, extra),))
  return x


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018, Fig. 3): channel gates from the
  global average, through C -> C // reduction -> C fully connected layers
  (with biases, as in the SENet paper and timm's legacy `seresnet50`), ReLU
  between and a sigmoid at the end. (B, *S, C) -> (B, *S, C)."""
  reduction: int = 16
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    s = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # (B, C): squeeze
    s = nn.relu(dense(max(1, channels // self.reduction), name="fc1")(s))
    s = nn.sigmoid(dense(channels, name="fc2")(s))  # (B, C): excitation
    return x * s.reshape((s.shape[0],) + (1,) * (x.ndim - 2) + (channels,))


class _Block(nn.Module):
  """Fields shared by every residual block (set by `ResNet`).

  `conv` is a bias-free `layers.Conv` partial (its `ndim` fixes 2D or 3D),
  `norm` a BatchNorm partial already bound to train/eval, `act` the
  activation; `features` is the block's planes (its output has
  `features * expansion` channels).
  """
  features: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  strides: int = 1
  groups: int = 1
  width_per_group: int = 64
  se: ModuleDef | None = None  # A SqueezeExcite partial, or None.
  shortcut: str = "projection"
  residual: bool = True  # False: a plain block, no shortcut at all.
  zero_init: bool = False  # Zero the branch's last scale: an identity block.


class BasicBlock(_Block):
  """Two 3x3 convolutions (ResNet-18/34), post-activation:
  relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
  expansion = 1
  preactivation = False

  @nn.compact
  def __call__(self, x):
    if self.groups != 1 or self.width_per_group != 64:
      raise CnnjaxError("basic blocks support only groups=1 and "
                        "width_per_group=64 (as torchvision); use bottlenecks.")
    y = self.conv(self.features, 3, strides=self.strides, padding=1,
                  name="conv1")(x)
    y = self.act(self.norm(name="bn1")(y))
    y = self.conv(self.features, 3, padding=1, name="conv2")(y)
    y = self.norm(name="bn2", **_zeros_if(self.zero_init))(y)
    return _merge(self, x, y, self.features)


class BottleneckBlock(_Block):
  """1x1 reduce, 3x3 (grouped for ResNeXt, carrying the stride: v1.5), 1x1
  expand to 4x planes, post-activation (ResNet-50/101/152, ResNeXt, Wide).

  The 3x3 width is int(planes * width_per_group / 64) * groups
  (torchvision's formula): planes for ResNet, 2x planes for ResNeXt 32x4d
  and for Wide ResNet-50-2.
  """
  expansion = 4
  preactivation = False

  @nn.compact
  def __call__(self, x):
    inner = _inner_width(self)
    out = self.features * self.expansion
    y = self.conv(inner, 1, padding=0, name="conv1")(x)
    y = self.act(self.norm(name="bn1")(y))
    y = self.conv(inner, 3, strides=self.strides, padding=1,
                  feature_group_count=self.groups, name="conv2")(y)
    y = self.act(self.norm(name="bn2")(y))
    y = self.conv(out, 1, padding=0, name="conv3")(y)
    y = self.norm(name="bn3", **_zeros_if(self.zero_init))(y)
    return _merge(self, x, y, out)


def _inner_width(block: _Block) -> int:
  inner = int(block.features * (block.width_per_group / 64.0)) * block.groups
  if inner < 1 or inner % block.groups:
    raise CnnjaxError(
        f"the bottleneck width int({block.features} * {block.width_per_group}"
        f" / 64) * {block.groups} is zero; raise width_per_group or width.")
  return inner


def _merge(block: _Block, x, y, out_features: int):
  """SE, shortcut, addition and the final activation of a post-activation
  block; `y` is the branch after its last BN."""
  if block.se is not None:
    y = block.se(name="se")(y)  # Hu et al.: before the addition.
  if not block.residual:
    return block.act(y)
  if shortcut_needs_weights(x, out_features, block.strides, block.shortcut):
    s = block.conv(out_features, 1, strides=block.strides, padding=0,
                   name="shortcut_conv")(x)
    s = block.norm(name="shortcut_bn")(s)
  else:
    s = zero_pad_shortcut(x, out_features, block.strides)
  return block.act(y + s)


class _PreActBlock(_Block):
  """A pre-activation block (He et al. 2016b): x + branch(x), where the
  branch starts with BN-ReLU and ends with a convolution, and nothing
  follows the addition.

  As in the authors' ImageNet code (fb.resnet.torch, preresnet.lua),
  `preact` says where the input's BN-ReLU goes: 'branch' (the usual), 'both'
  (first block of stages 2-4: the shortcut reads the activated input too) or
  'none' (first block of stage 1: the stem already ended with BN-ReLU).
  Projection shortcuts are a 1x1 convolution without BN, as there: the sum
  is normalised by the next block's pre-activation. `zero_init` zeroes the
  last convolution's kernel (timm's ResNetV2 `zero_init_last`): zeroing the
  BN before it would feed ReLU exact zeros, where ReLU has no gradient, and
  the branch would never train.
  """
  preact: str = "branch"
  preactivation = True

  def _preact(self, x):
    """(branch input, shortcut input)."""
    if self.preact == "none":
      return x, x
    a = self.act(self.norm(name="bn1")(x))
    return (a, a) if self.preact == "both" else (a, x)

  def _last_conv(self, features: int, kernel: int, name: str):
    init = {"kernel_init": nn.initializers.zeros} if self.zero_init else {}
    return self.conv(features, kernel, padding=kernel // 2, name=name, **init)

  def _merge(self, s, y, out_features: int):
    if self.se is not None:
      y = self.se(name="se")(y)
    if not self.residual:
      return y
    if shortcut_needs_weights(s, out_features, self.strides, self.shortcut):
      s = self.conv(out_features, 1, strides=self.strides, padding=0,
                    name="shortcut_conv")(s)
    else:
      s = zero_pad_shortcut(s, out_features, self.strides)
    return y + s


class PreActBasicBlock(_PreActBlock):
  """BN-ReLU-3x3, BN-ReLU-3x3, then + shortcut (He et al. 2016b, Fig. 1b)."""
  expansion = 1

  @nn.compact
  def __call__(self, x):
    if self.groups != 1 or self.width_per_group != 64:
      raise CnnjaxError("basic blocks support only groups=1 and "
                        "width_per_group=64 (as torchvision); use bottlenecks.")
    y, s = self._preact(x)
    y = self.conv(self.features, 3, strides=self.strides, padding=1,
                  name="conv1")(y)
    y = self.act(self.norm(name="bn2")(y))
    y = self._last_conv(self.features, 3, "conv2")(y)
    return self._merge(s, y, self.features)


class PreActBottleneckBlock(_PreActBlock):
  """BN-ReLU-1x1, BN-ReLU-3x3 (stride, groups), BN-ReLU-1x1, + shortcut."""
  expansion = 4

  @nn.compact
  def __call__(self, x):
    inner = _inner_width(self)
    out = self.features * self.expansion
    y, s = self._preact(x)
    y = self.conv(inner, 1, padding=0, name="conv1")(y)
    y = self.act(self.norm(name="bn2")(y))
    y = self.conv(inner, 3, strides=self.strides, padding=1,
                  feature_group_count=self.groups, name="conv2")(y)
    y = self.act(self.norm(name="bn3")(y))
    y = self._last_conv(out, 1, "conv3")(y)
    return self._merge(s, y, out)


BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": BottleneckBlock,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneckBlock,
}


class ResNet(nn.Module):
  """A residual network (see the module docstring for the families).

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block_cls: a block class or its name in `BLOCKS` ('basic', 'bottleneck',
      'preact_basic', 'preact_bottleneck').
    num_classes: 0 for no head: return the pooled features.
    width: stem channels and stage-1 planes (64); stage s has width * 2^s.
    groups, width_per_group: the bottleneck's 3x3 has
      int(planes * width_per_group / 64) * groups channels in `groups` groups
      (ResNeXt 32x4d: 32, 4; Wide ResNet-50-2: 1, 128).
    se, se_reduction: squeeze-and-excitation at the end of every branch.
    ndim: spatial dims, 2 for images, 3 for volumes (or 1 for signals).
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max pool) or 'small' (3x3/1 conv,
      no pool: the CIFAR-style stem of kuangliu/pytorch-cifar, which the
      MedMNIST v2 baselines' own ResNets use on 28^3 volumes).
    shortcut: 'projection' (option B), 'zero_pad' (A) or 'projection_all'
      (C).
    residual: False removes every shortcut: the plain counterpart.
    zero_init_residual: start every residual branch at zero, so that each
      block is initially act(shortcut(x)) (Goyal et al. 2017).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block_cls: Any = BasicBlock
  num_classes: int = 1000
  width: int = 64
  groups: int = 1
  width_per_group: int = 64
  se: bool = False
  se_reduction: int = 16
  ndim: int = 2
  stem: str = "imagenet"
  shortcut: str = "projection"
  residual: bool = True
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _check(self, x):
    if self.ndim not in (1, 2, 3):
      raise CnnjaxError(f"ResNet ndim must be 1, 2 or 3, got {self.ndim!r}.")
    if x.ndim != self.ndim + 2:
      raise CnnjaxError(f"a ResNet with ndim={self.ndim} needs inputs of shape"
                        f" (B, {self.ndim} spatial dims, C), got {x.shape}.")
    if self.shortcut not in SHORTCUTS:
      raise CnnjaxError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got "
                        f"{self.shortcut!r}.")
    if self.stem not in STEMS:
      raise CnnjaxError(f"stem must be one of {', '.join(STEMS)}, got "
                        f"{self.stem!r}.")
    if not self.stage_sizes or any(n < 1 for n in self.stage_sizes):
      raise CnnjaxError(f"stage_sizes must be positive block counts, got "
                        f"{tuple(self.stage_sizes)!r}.")
    if self.zero_init_residual and not self.residual:
      raise CnnjaxError("zero_init_residual needs residual=True: without "
                        "shortcuts a zero branch would block the signal.")
    if self.se and self.se_reduction < 1:
      raise CnnjaxError(f"se_reduction must be a positive int, got "
                        f"{self.se_reduction!r}.")

  def _block_class(self):
    if isinstance(self.block_cls, str):
      if self.block_cls not in BLOCKS:
        raise CnnjaxError(f"unknown block {self.block_cls!r}; known: "
                          f"{', '.join(BLOCKS)}.")
      return BLOCKS[self.block_cls]
    return self.block_cls

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    self._check(x)
    block_cls = self._block_class()
    preact = getattr(block_cls, "preactivation", False)
    conv = functools.partial(layers.Conv, use_bias=False, ndim=self.ndim,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(layers.TorchLikeBatchNorm,
                             use_running_average=not train, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    act = nn.relu
    se = functools.partial(SqueezeExcite, reduction=self.se_reduction,
                           dtype=self.dtype,
                           param_dtype=self.param_dtype) if self.se else None

    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.width, 7, strides=2, padding=3, name="stem_conv")(x)
    else:
      x = conv(self.width, 3, padding=1, name="stem_conv")(x)
    # Pre-activation nets keep this BN-ReLU too (fb.resnet.torch): their
    # first block then skips its own.
    x = act(norm(name="stem_bn")(x))  # (B, 112, 112, 64) at 224
    if self.stem == "imagenet":
      # (B, 56, 56, 64) at 224.
      x = layers.MaxPool(3, 2, padding=1, name="stem_pool")(x)

    for s, num_blocks in enumerate(self.stage_sizes):
      for b in range(num_blocks):
        extra = {}
        if preact:  # See _PreActBlock.
          extra["preact"] = ("branch" if b > 0 else
                             "none" if s == 0 else "both")
        x = block_cls(
            features=self.width * 2**s, strides=2 if s > 0 and b == 0 else 1,
            conv=conv, norm=norm, act=act, groups=self.groups,
            width_per_group=self.width_per_group, se=se,
            shortcut=self.shortcut, residual=self.residual,
            zero_init=self.zero_init_residual, name=f"stage{s + 1}_block{b}",
            **extra)(x)
    if preact:  # The last block's sum is not normalised yet.
      x = act(norm(name="final_bn")(x))
    x = layers.GlobalAvgPool(name="pool")(x)  # (B, C)
    if not self.num_classes:
      return x
    return nn.Dense(self.num_classes, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="head")(x)


# ---------------------------------------------------------------------------
# Registered variants. Stage sizes from He et al. 2016, Table 1.

STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def _register(name: str, description: str, *, input_shape=(224, 224, 3),
              **fields):
  register_model(name, input_shape=input_shape, description=description)(
      functools.partial(ResNet, **fields))


for _depth, _stages in STAGE_SIZES.items():
  _bottleneck = _depth >= 50
  _register(f"resnet{_depth}", f"ResNet-{_depth} (He et al. 2016; "
            f"torchvision v1.5)", stage_sizes=_stages,
            block_cls=BottleneckBlock if _bottleneck else BasicBlock)
  # Plain nets: the ResNet minus every shortcut, so minus the projection
  # parameters (1x1 conv + BN where a stage changes shape); the paper's
  # plain-18/34 (Table 2) and, beyond it, bottleneck plain nets.
  _register(f"plain{_depth}", f"Plain-{_depth}: ResNet-{_depth} without "
            f"shortcuts (He et al. 2016, Table 2)", stage_sizes=_stages,
            block_cls=BottleneckBlock if _bottleneck else BasicBlock,
            residual=False)
  _register(f"preact_resnet{_depth}", f"Pre-activation ResNet-{_depth} "
            f"(He et al. 2016, Identity Mappings)", stage_sizes=_stages,
            block_cls=(PreActBottleneckBlock if _bottleneck
                       else PreActBasicBlock))

_register("resnext50_32x4d", "ResNeXt-50 32x4d (Xie et al. 2017)",
          stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock, groups=32,
          width_per_group=4)
_register("resnext101_32x8d", "ResNeXt-101 32x8d (Xie et al. 2017)",
          stage_sizes=STAGE_SIZES[101], block_cls=BottleneckBlock, groups=32,
          width_per_group=8)
_register("wide_resnet50_2", "Wide ResNet-50-2 (torchvision: 2x bottleneck "
          "width)", stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock,
          width_per_group=128)
_register("wide_resnet101_2", "Wide ResNet-101-2 (torchvision: 2x bottleneck "
          "width)", stage_sizes=STAGE_SIZES[101], block_cls=BottleneckBlock,
          width_per_group=128)
_register("se_resnet50", "SE-ResNet-50 (Hu et al. 2018), reduction 16",
          stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock, se=True)
_register("se_resnext50_32x4d", "SE-ResNeXt-50 32x4d (Hu et al. 2018)",
          stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock, se=True,
          groups=32, width_per_group=4)

# 3D: the same networks with cubic kernels on MedMNIST3D volumes
# (28x28x28x1), 11 classes by default (OrganMNIST3D). The ImageNet stem is
# kept (28 -> 14 -> 7 -> 4 -> 2 -> 1 through the stages). The MedMNIST v2
# baselines (MedMNIST/experiments, MedMNIST3D/models.py, then converted to
# 3D by ACSConv's converters) instead use kuangliu/pytorch-cifar's 3x3/1
# stem without max pooling: `stem='small'` gives that network
# (33,145,419 parameters for ResNet-18, 1 channel, 11 classes).
_register("resnet18_3d", "3D ResNet-18 (3x3x3 kernels) for MedMNIST3D",
          input_shape=(28, 28, 28, 1), stage_sizes=STAGE_SIZES[18],
          block_cls=BasicBlock, ndim=3, num_classes=11)
_register("resnet50_3d", "3D ResNet-50 (3x3x3 kernels) for MedMNIST3D",
          input_shape=(28, 28, 28, 1), stage_sizes=STAGE_SIZES[50],
          block_cls=BottleneckBlock, ndim=3, num_classes=11)
