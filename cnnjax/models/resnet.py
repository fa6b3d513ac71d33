"""Residual networks, ImageNet and CIFAR, from one generic module.

`ResidualNetwork` builds a stem, stages of residual blocks (the first of
every stage but the first at stride 2), global average pooling and `head`,
from fields: the stem kind, the block kind (basic, bottleneck,
pre-activation basic or bottleneck; `cnnjax.layers.residual`), the shortcut
option (A, B or C), the stage widths and the stage depths. Four subclasses
only change its defaults, one per family of papers, and every registered
network is one of them with a few fields set:

  ResNet         ImageNet (torchvision's layout, shapes at 224x224x3):
                   stem   7x7/2 conv (width) + BN + ReLU   (B, 112, 112, 64)
                          3x3/2 max pool, padding 1        (B, 56, 56, 64)
                   stage1 blocks at stride 1, planes = width
                   stage2-4 first block at stride 2, planes doubled
                   pool   global average                   (B, 512 * e)
                 with e = 1 (basic blocks) or 4 (bottlenecks).
                   ResNet-18/34/50/101/152  He et al. 2016, Table 1
                   plain nets       `residual=False`: the "plain" networks of
                                    the degradation experiment (Table 2)
                   pre-activation   He et al. 2016, "Identity Mappings":
                                    BN-ReLU-conv blocks
                   ResNeXt          Xie et al. 2017: grouped 3x3s (`groups`,
                                    `width_per_group`)
                   Wide ResNet      torchvision's ImageNet form: a wider
                                    bottleneck (`width_per_group=128`)
                   SE-ResNet(X)t    Hu et al. 2018: squeeze-and-excitation
                   3D ResNets       `ndim=3`: cubic kernels, for volumes such
                                    as MedMNIST3D's 28x28x28x1
  CifarResNet    He et al. 2015, section 4.2: a 3x3 conv of 16 filters, three
                 stages of n basic blocks with 16/32/64 filters on 32x32/
                 16x16/8x8 maps, option-A shortcuts: 6n + 2 weighted layers.
                 `residual=False` gives the plain nets of Fig. 6.
  PreActResNet   He et al. 2016 on CIFAR: a bare 3x3 conv, pre-activation
                 blocks, basic (6n + 2 layers) or bottleneck (9n + 2, widths
                 16/32/64 -> 64/128/256 outputs), then BN-ReLU.
  WideResNet     Zagoruyko & Komodakis 2016: pre-activation basic blocks
                 widened k times (16, 16k, 32k, 64k), n = (d - 4) / 6 blocks
                 per stage, dropout between the convolutions.

ImageNet bottlenecks put the stride on their 3x3 convolution, not on the
first 1x1 as the paper's (Caffe) models did: torchvision's "ResNet v1.5". A
strided 1x1 reads only one pixel in four of the block's input; v1.5 reads
them all, which NVIDIA measured as about 0.5% more top-1 accuracy, for 6%
more multiply-adds (4.09 G against 3.86 G for ResNet-50). The CIFAR
pre-activation bottlenecks keep the stride on the 1x1, as the authors' code
(`stride_1x1`).

Pre-activation blocks that start a stage normalise their input before it
splits, so that the shortcut reads it too (the authors' CIFAR and ImageNet
code; `preact_shortcut='first'`); the Wide ResNets do so where a block
changes shape ('changes', the WRN code). After a stem that ends with
BN-ReLU (ImageNet) the first block has no input BN (fb.resnet.torch).

Parameter counts for 10 classes (biases only in `head`):

  resnet20     269,722    (Table 6: 0.27M)   272,474 with shortcut='B'
  resnet32     464,154    (0.46M)
  resnet44     658,586    (0.66M)
  resnet56     853,018    (0.85M)
  resnet110  1,727,962    (1.7M)
  resnet1202 19,421,274   (19.4M)
  preact_resnet110  1,727,962  (1.7M; option A, as the plain ResNet-110)
  preact_resnet164  1,703,258  (1.7M; option B, as the authors' code)
  wrn16_8     10,961,370  (WRN paper: 11.0M)
  wrn28_10    36,479,194  (36.5M)
  wrn40_4      8,949,210  (8.9M)

The plain nets have the ResNets' counts (option-A shortcuts are free).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.layers.residual import (BLOCKS, BasicBlock, BottleneckBlock,
                                    PreActBasicBlock, PreActBottleneckBlock,
                                    shortcut_option)
from cnnjax.models.backbone import FeatureStage
from cnnjax.models.registry import register_model

STEMS = ("imagenet", "small", "conv")
PREACT_SHORTCUTS = ("first", "changes")


class ResidualNetwork(nn.Module):
  """A residual network (see the module docstring for the families).

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50; None:
      equal stages from `depth`.
    depth: the weighted layers of a network of equal stages, e.g. 20 for
      ResNet-20: 6n + 2 with basic blocks, 9n + 2 with bottlenecks (for
      three stages; Wide ResNets count 6n + 4, as their paper). Give it or
      `stage_sizes`, not both.
    block_cls: a block class or its name in `layers.residual.BLOCKS`
      ('basic', 'bottleneck', 'preact_basic', 'preact_bottleneck').
    bottleneck: True or False picks the bottleneck or basic form of
      `block_cls`'s kind (pre-activation or not); None keeps `block_cls`.
    num_classes: 0 for no head: return the pooled features.
    width: the stem's channels (and, without `widths`, stage 1's planes,
      doubled at every stage); None: the first of `widths`.
    widths: the planes of each stage (CIFAR: (16, 32, 64)); None: from
      `width`.
    widen_factor: multiplies every stage's planes, not the stem (WRN's k).
    groups, width_per_group: the bottleneck's 3x3 has
      int(planes * width_per_group / 64) * groups channels in `groups` groups
      (ResNeXt 32x4d: 32, 4; Wide ResNet-50-2: 1, 128).
    se, se_reduction: squeeze-and-excitation at the end of every branch.
    ndim: spatial dims, 2 for images, 3 for volumes (or 1 for signals).
    stem: 'imagenet' (7x7/2 conv + BN-ReLU + 3x3/2 max pool), 'small'
      (3x3/1 conv + BN-ReLU, no pool: the CIFAR ResNets', and that of
      kuangliu/pytorch-cifar, which the MedMNIST v2 baselines' own ResNets
      use on 28^3 volumes) or 'conv' (a bare 3x3/1 conv: the pre-activation
      CIFAR nets, whose first block normalises).
    shortcut: 'A' ('zero_pad'), 'B' ('projection') or 'C'
      ('projection_all'); see `layers.residual`.
    residual: False removes every shortcut: the plain counterpart.
    zero_init_residual: start every residual branch at zero (the last BN's
      scale; in pre-activation blocks the last convolution's kernel), so
      that each block starts as its shortcut (Goyal et al. 2017).
    dropout_rate: dropout before each branch's last convolution (WRN).
    preact_shortcut: which pre-activation blocks normalise their input
      before the split: 'first' of each stage or where the shape 'changes'.
    stride_1x1: bottlenecks stride their first 1x1, not their 3x3.
  """
  stage_sizes: Sequence[int] | None = (2, 2, 2, 2)
  depth: int | None = None
  block_cls: Any = BasicBlock
  bottleneck: bool | None = None
  num_classes: int = 1000
  width: int | None = 64
  widths: Sequence[int] | None = None
  widen_factor: int = 1
  groups: int = 1
  width_per_group: int = 64
  se: bool = False
  se_reduction: int = 16
  ndim: int = 2
  stem: str = "imagenet"
  shortcut: str = "projection"
  residual: bool = True
  zero_init_residual: bool = False
  dropout_rate: float = 0.0
  preact_shortcut: str = "first"
  stride_1x1: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  depth_offset = 2  # depth = branch layers + the stem conv and `head`.

  def _check(self, x):
    if self.ndim not in (1, 2, 3):
      raise CnnjaxError(f"ResNet ndim must be 1, 2 or 3, got {self.ndim!r}.")
    if x.ndim != self.ndim + 2:
      raise CnnjaxError(f"a ResNet with ndim={self.ndim} needs inputs of shape"
                        f" (B, {self.ndim} spatial dims, C), got {x.shape}.")
    shortcut_option(self.shortcut)
    for field, value, allowed in (
        ("stem", self.stem, STEMS),
        ("preact_shortcut", self.preact_shortcut, PREACT_SHORTCUTS)):
      if value not in allowed:
        raise CnnjaxError(f"{field} must be one of {', '.join(allowed)}, got "
                          f"{value!r}.")
    if self.zero_init_residual and not self.residual:
      raise CnnjaxError("zero_init_residual needs shortcuts (residual=True): "
                        "without them a zeroed branch blocks the signal.")
    if self.se and self.se_reduction < 1:
      raise CnnjaxError(f"se_reduction must be a positive int, got "
                        f"{self.se_reduction!r}.")

  def _block_class(self):
    block = self.block_cls
    if isinstance(block, str):
      if block not in BLOCKS:
        raise CnnjaxError(f"unknown block {block!r}; known: "
                          f"{', '.join(BLOCKS)}.")
      block = BLOCKS[block]
    if self.bottleneck is not None:
      kind = "bottleneck" if self.bottleneck else "basic"
      block = BLOCKS[("preact_" if block.preactivation else "") + kind]
    return block

  def _widths(self) -> tuple[tuple[int, ...], int]:
    """(planes of each stage, stem channels)."""
    if not isinstance(self.widen_factor, int) or self.widen_factor < 1:
      raise CnnjaxError(f"widen_factor must be a positive int, got "
                        f"{self.widen_factor!r}.")
    if self.widths is not None:
      widths = tuple(self.widths)
    elif self.width is not None and self.stage_sizes:
      widths = tuple(self.width * 2**s for s in range(len(self.stage_sizes)))
    else:
      raise CnnjaxError("a ResNet needs widths, or width with stage_sizes.")
    stem = widths[0] if self.width is None else self.width
    return tuple(w * self.widen_factor for w in widths), stem

  def _stage_sizes(self, block, stages: int) -> tuple[int, ...]:
    if self.depth is None:
      if not self.stage_sizes or any(n < 1 for n in self.stage_sizes):
        raise CnnjaxError(f"stage_sizes must be positive block counts, got "
                          f"{self.stage_sizes!r}.")
      sizes = tuple(self.stage_sizes)
      if len(sizes) != stages:
        raise CnnjaxError(f"stage_sizes {sizes} and widths have different "
                          f"numbers of stages.")
      return sizes
    if self.stage_sizes is not None:
      raise CnnjaxError("give a ResNet depth or stage_sizes, not both; set the "
                        "other to None.")
    per, offset = stages * block.branch_layers, self.depth_offset
    if not isinstance(self.depth, int) or self.depth < per + offset or (
        self.depth - offset) % per:
      kind = "bottleneck" if block.expansion > 1 else "basic"
      raise CnnjaxError(
          f"a {type(self).__name__} of {stages} stages of {kind} blocks needs "
          f"depth = {per}n + {offset} with n >= 1 (e.g. {per + offset}, "
          f"{2 * per + offset}), got {self.depth!r}.")
    return ((self.depth - offset) // per,) * stages

  def _preact(self, stage: int, index: int, changes: bool) -> str:
    """Where a pre-activation block puts its input BN-ReLU (PreActBlock)."""
    if stage == 0 and index == 0 and self.stem != "conv":
      return "none"  # The stem ended with BN-ReLU.
    starts = changes if self.preact_shortcut == "changes" else index == 0
    return "both" if starts else "branch"

  def feature_stages(self) -> tuple[FeatureStage, ...]:
    """The maps of a features_only backbone (models/backbone.py), numbered
    as timm's: the stem's ReLU (a bare 'conv' stem: its convolution), then
    every stage's last block; pre-activation nets end with final_bn's ReLU.
    """
    block = self._block_class()
    widths, stem_width = self._widths()
    sizes = self._stage_sizes(block, len(widths))
    imagenet = self.stem == "imagenet"  # A strided conv and a max pool.
    if self.stem == "conv":
      stages = [FeatureStage("stem_conv", stem_width, 1)]
    else:
      stages = [FeatureStage("stem_bn", stem_width, 2 if imagenet else 1,
                             "relu")]
    reduction = 4 if imagenet else 1
    for s, (num_blocks, planes) in enumerate(zip(sizes, widths)):
      reduction *= 2 if s > 0 else 1
      stages.append(FeatureStage(f"stage{s + 1}_block{num_blocks - 1}",
                                 planes * block.expansion, reduction))
    if block.preactivation:
      stages[-1] = dataclasses.replace(stages[-1], module="final_bn",
                                       act="relu")
    return tuple(stages)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    self._check(x)
    block_cls = self._block_class()
    widths, stem_width = self._widths()
    stage_sizes = self._stage_sizes(block_cls, len(widths))
    conv = functools.partial(layers.Conv, use_bias=False, ndim=self.ndim,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(layers.TorchLikeBatchNorm,
                             use_running_average=not train, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    act = nn.relu
    block = functools.partial(
        block_cls, conv=conv, norm=norm, act=act, groups=self.groups,
        width_per_group=self.width_per_group, shortcut=self.shortcut,
        residual=self.residual, zero_init=self.zero_init_residual,
        stride_1x1=self.stride_1x1)
    if self.se:
      block = functools.partial(block, se=functools.partial(
          layers.SqueezeExcite, reduction=self.se_reduction, dtype=self.dtype,
          param_dtype=self.param_dtype))
    if self.dropout_rate:
      block = functools.partial(block, dropout=functools.partial(
          nn.Dropout, self.dropout_rate, deterministic=not train))

    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(stem_width, 7, strides=2, padding=3, name="stem_conv")(x)
    else:
      x = conv(stem_width, 3, padding=1, name="stem_conv")(x)
    if self.stem != "conv":
      x = act(norm(name="stem_bn")(x))  # (B, 112, 112, 64) at 224
    if self.stem == "imagenet":
      # (B, 56, 56, 64) at 224.
      x = layers.MaxPool(3, 2, padding=1, name="stem_pool")(x)

    for s, (num_blocks, planes) in enumerate(zip(stage_sizes, widths)):
      for b in range(num_blocks):
        strides = 2 if s > 0 and b == 0 else 1
        extra = {}
        if block_cls.preactivation:
          changes = strides != 1 or x.shape[-1] != planes * block_cls.expansion
          extra["preact"] = self._preact(s, b, changes)
        x = block(planes, strides=strides, name=f"stage{s + 1}_block{b}",
                  **extra)(x)
    if block_cls.preactivation:  # The last block's sum is not normalised yet.
      x = act(norm(name="final_bn")(x))
    x = layers.GlobalAvgPool(name="pool")(x)  # (B, C)
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


class ResNet(ResidualNetwork):
  """The ImageNet residual networks: ResNet-18 ... 152 (torchvision v1.5),
  plain, pre-activation, ResNeXt, Wide, SE and 3D variants (defaults:
  ResNet-18)."""


class CifarResNet(ResidualNetwork):
  """ResNet-(6n+2) for 32x32 images (He et al. 2015, section 4.2).

  Shapes for a 32x32x3 image: stem (B, 32, 32, 16), stage1 (B, 32, 32, 16),
  stage2 (B, 16, 16, 32), stage3 (B, 8, 8, 64), pool (B, 64), head
  (B, num_classes). `depth` 6n + 2 (20, 32, 44, 56, 110, 1202 in the
  paper); `widths` the filters of the three stages (the stem has the
  first); shortcut 'A' (the paper's CIFAR choice) or 'B'.
  """
  stage_sizes: Sequence[int] | None = None
  depth: int | None = 20
  num_classes: int = 10
  width: int | None = None
  widths: Sequence[int] | None = (16, 32, 64)
  stem: str = "small"
  shortcut: str = "A"


class PreActResNet(CifarResNet):
  """Pre-activation ResNet for 32x32 images (He et al. 2016).

  conv3x3 (16), three stages of pre-activation blocks (the first of
  stages 2 and 3 at stride 2), BN-ReLU, global average pooling, `head`.
  Basic blocks output widths[s] channels (depth 6n + 2), bottlenecks
  4 * widths[s] (depth 9n + 2: ResNet-164 is n = 18), with the stride on
  their first 1x1 as in the authors' code. The first block of each stage
  pre-activates before the split (for stage 1, the paper's "activation
  right after conv1").
  """
  depth: int | None = 164
  block_cls: Any = "preact_basic"
  bottleneck: bool | None = True
  stem: str = "conv"
  shortcut: str = "B"
  stride_1x1: bool = True


class WideResNet(CifarResNet):
  """WRN-d-k for 32x32 images (Zagoruyko & Komodakis 2016, Table 1).

  conv3x3 (16), three stages of n = (d - 4) / 6 pre-activation basic blocks
  with 16k, 32k, 64k filters (the first of stages 2 and 3 at stride 2),
  BN-ReLU, global average pooling, `head`. Where a block changes shape its
  shortcut is a 1x1 convolution reading the pre-activated input; elsewhere
  the identity. Dropout sits between the two convolutions, after the
  second BN-ReLU, as in the authors' code (the paper uses 0.3 in some runs).

  Shapes for WRN-28-10 on 32x32x3: stem (B, 32, 32, 16), stages
  (B, 32, 32, 160), (B, 16, 16, 320), (B, 8, 8, 640), pool (B, 640).
  """
  depth: int | None = 28
  block_cls: Any = "preact_basic"
  width: int | None = 16
  widen_factor: int = 10
  stem: str = "conv"
  shortcut: str = "B"
  preact_shortcut: str = "changes"

  depth_offset = 4  # The WRN paper's count: 6n + 4.


# ---------------------------------------------------------------------------
# Registered networks. ImageNet stage sizes from He et al. 2016, Table 1.

STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)
_VOLUME = (28, 28, 28, 1)  # MedMNIST3D


def _register(name: str, family: type, description: str,
              input_shape=_IMAGENET, **fields):
  register_model(name, input_shape=input_shape, description=description)(
      functools.partial(family, **fields))


for _depth, _stages in STAGE_SIZES.items():
  _bottleneck = _depth >= 50
  _block, _preact = ((BottleneckBlock, PreActBottleneckBlock) if _bottleneck
                     else (BasicBlock, PreActBasicBlock))
  _register(f"resnet{_depth}", ResNet, f"ResNet-{_depth} (He et al. 2016; "
            f"torchvision v1.5)", stage_sizes=_stages, block_cls=_block)
  # Plain nets: the ResNet minus every shortcut, so minus the projection
  # parameters (1x1 conv + BN where a stage changes shape); the paper's
  # plain-18/34 (Table 2) and, beyond it, bottleneck plain nets.
  _register(f"plain{_depth}", ResNet, f"Plain-{_depth}: ResNet-{_depth} "
            f"without shortcuts (He et al. 2016, Table 2)",
            stage_sizes=_stages, block_cls=_block, residual=False)
  _register(f"preact_resnet{_depth}", ResNet, f"Pre-activation "
            f"ResNet-{_depth} (He et al. 2016, Identity Mappings)",
            stage_sizes=_stages, block_cls=_preact)

_register("resnext50_32x4d", ResNet, "ResNeXt-50 32x4d (Xie et al. 2017)",
          stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock, groups=32,
          width_per_group=4)
_register("resnext101_32x8d", ResNet, "ResNeXt-101 32x8d (Xie et al. 2017)",
          stage_sizes=STAGE_SIZES[101], block_cls=BottleneckBlock, groups=32,
          width_per_group=8)
_register("wide_resnet50_2", ResNet, "Wide ResNet-50-2 (torchvision: 2x "
          "bottleneck width)", stage_sizes=STAGE_SIZES[50],
          block_cls=BottleneckBlock, width_per_group=128)
_register("wide_resnet101_2", ResNet, "Wide ResNet-101-2 (torchvision: 2x "
          "bottleneck width)", stage_sizes=STAGE_SIZES[101],
          block_cls=BottleneckBlock, width_per_group=128)
_register("se_resnet50", ResNet, "SE-ResNet-50 (Hu et al. 2018), reduction "
          "16", stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock,
          se=True)
_register("se_resnext50_32x4d", ResNet, "SE-ResNeXt-50 32x4d (Hu et al. "
          "2018)", stage_sizes=STAGE_SIZES[50], block_cls=BottleneckBlock,
          se=True, groups=32, width_per_group=4)

# 3D: the same networks with cubic kernels on MedMNIST3D volumes
# (28x28x28x1), 11 classes by default (OrganMNIST3D). The ImageNet stem is
# kept (28 -> 14 -> 7 -> 4 -> 2 -> 1 through the stages). The MedMNIST v2
# baselines (MedMNIST/experiments, MedMNIST3D/models.py, then converted to
# 3D by ACSConv's converters) instead use kuangliu/pytorch-cifar's 3x3/1
# stem without max pooling: `stem='small'` gives that network
# (33,145,419 parameters for ResNet-18, 1 channel, 11 classes).
_register("resnet18_3d", ResNet, "3D ResNet-18 (3x3x3 kernels) for "
          "MedMNIST3D", _VOLUME, stage_sizes=STAGE_SIZES[18],
          block_cls=BasicBlock, ndim=3, num_classes=11)
_register("resnet50_3d", ResNet, "3D ResNet-50 (3x3x3 kernels) for "
          "MedMNIST3D", _VOLUME, stage_sizes=STAGE_SIZES[50],
          block_cls=BottleneckBlock, ndim=3, num_classes=11)

# CIFAR.
for _depth in (20, 32, 44, 56, 110, 1202):
  _register(f"resnet{_depth}", CifarResNet, f"ResNet-{_depth} for CIFAR (He "
            f"et al. 2015, Table 6), option-A shortcuts", _CIFAR, depth=_depth)
for _depth in (20, 32, 44, 56, 110):
  _register(f"plain{_depth}", CifarResNet, f"Plain-{_depth} for CIFAR: "
            f"ResNet-{_depth} without shortcuts (He et al. 2015, Fig. 6)",
            _CIFAR, depth=_depth, residual=False)
_register("preact_resnet110", PreActResNet, "Pre-activation ResNet-110 for "
          "CIFAR (He et al. 2016), basic blocks, option-A shortcuts", _CIFAR,
          depth=110, bottleneck=False, shortcut="A")
_register("preact_resnet164", PreActResNet, "Pre-activation ResNet-164 for "
          "CIFAR (He et al. 2016), bottleneck blocks, projection shortcuts",
          _CIFAR, depth=164, bottleneck=True, shortcut="B")
for _depth, _k in ((16, 8), (28, 10), (40, 4)):
  _register(f"wrn{_depth}_{_k}", WideResNet, f"Wide ResNet WRN-{_depth}-{_k} "
            f"for CIFAR (Zagoruyko & Komodakis 2016)", _CIFAR, depth=_depth,
            widen_factor=_k)
