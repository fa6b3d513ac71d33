"""Residual blocks and their shortcuts, shared by the residual networks.

Shortcuts (He et al. 2015, section 3.3 and Table 3), by option:

  'A' ('zero_pad')        where a block changes shape, subsample by the
                          stride and append zero channels (`ZeroPadShortcut`,
                          no parameters); identity elsewhere
  'B' ('projection')      where a block changes shape, a 1x1 convolution at
                          the stride, `shortcut_conv`, followed in
                          post-activation blocks by a BatchNorm,
                          `shortcut_bn` (pre-activation blocks leave the sum
                          to the next block's BN, as the authors' code does);
                          identity elsewhere
  'C' ('projection_all')  the projection in every block

Blocks, each (B, *S, C) -> (B, *S / stride, features * expansion):

  BasicBlock             conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU
  BottleneckBlock        conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN,
                         + shortcut, ReLU
  PreActBasicBlock       BN-ReLU-conv3x3, BN-ReLU-conv3x3, + shortcut
  PreActBottleneckBlock  BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1
                         (x4), + shortcut

(He et al. 2016, "Identity Mappings", Fig. 1b for the pre-activation ones.)
Convolutions pad one pixel on each side (torch's padding=1): at stride 2 the
output at i is centred on input 2i, the pixel an option-A shortcut keeps
(flax's 'SAME' would pad (0, 1) and centre it on 2i + 1).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError

ModuleDef = Any

# Both spellings of each option: the paper's letters and descriptive names.
SHORTCUTS = {"A": "A", "zero_pad": "A", "B": "B", "projection": "B",
             "C": "C", "projection_all": "C"}


def shortcut_option(value: Any) -> str:
  """'A', 'B' or 'C' for either spelling of a shortcut option."""
  if isinstance(value, str) and value in SHORTCUTS:
    return SHORTCUTS[value]
  raise CnnjaxError(f"shortcut must be one of 'A' ('zero_pad'), 'B' "
                    f"('projection') or 'C' ('projection_all'), got "
                    f"{value!r}.")


class ZeroPadShortcut(nn.Module):
  """Option-A shortcut: keep every `strides`-th position, append zero channels.

  (B, *S, C) -> (B, *ceil(S / strides), features), channels [C, features)
  all zero (appended after the input's, as fb.resnet.torch does). No
  parameters. `window_shape` and `padding` describe it to the summary's
  receptive-field analysis as a 1-wide pooling window at the stride.
  """
  features: int
  strides: int = 1

  @property
  def window_shape(self) -> int:
    return 1

  @property
  def padding(self) -> str:
    return "VALID"

  def __call__(self, x):
    extra = self.features - x.shape[-1]
    if extra < 0:
      raise CnnjaxError(f"a zero-padding shortcut cannot reduce {x.shape[-1]} "
                        f"channels to {self.features}; use shortcut='B' "
                        f"(projection).")
    if self.strides != 1:
      x = x[(slice(None),) + (slice(None, None, self.strides),) *
            (x.ndim - 2)]
    if extra:
      x = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + ((0, extra),))
    return x


class ResidualBlock(nn.Module):
  """Fields shared by every residual block (the network sets them).

  `conv` is a bias-free `layers.Conv` partial (its `ndim` fixes 1D, 2D or
  3D), `norm` a BatchNorm partial already bound to train/eval, `act` the
  activation; `features` is the block's planes (its output has
  `features * expansion` channels). `se` is a `SqueezeExcite` partial
  applied to the branch before the addition, `dropout` an `nn.Dropout`
  partial (bound to train/eval) before the branch's last convolution.
  `residual=False` drops the shortcut (a plain block); `zero_init` makes
  the branch start at zero, so that the block starts as its shortcut.
  """
  features: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  strides: int = 1
  groups: int = 1
  width_per_group: int = 64
  se: ModuleDef | None = None
  shortcut: str = "B"
  residual: bool = True
  zero_init: bool = False
  dropout: ModuleDef | None = None
  # Bottlenecks: the stride on the first 1x1 (the original ResNet, the
  # authors' pre-activation CIFAR code) instead of the 3x3 (torchvision's
  # "v1.5": a strided 1x1 reads only one pixel in four).
  stride_1x1: bool = False

  expansion = 1  # Output channels per plane.
  branch_layers = 2  # Weighted layers of the branch, for depth counts.
  preactivation = False

  def _check_basic(self):
    if self.groups != 1 or self.width_per_group != 64:
      raise CnnjaxError("basic blocks support only groups=1 and "
                        "width_per_group=64 (as torchvision); use bottlenecks.")

  def _inner_width(self) -> int:
    """The bottleneck's 3x3 width, torchvision's formula: planes for ResNet,
    2x planes for ResNeXt 32x4d and Wide ResNet-50-2."""
    inner = int(self.features * (self.width_per_group / 64.0)) * self.groups
    if inner < 1 or inner % self.groups:
      raise CnnjaxError(
          f"the bottleneck width int({self.features} * {self.width_per_group}"
          f" / 64) * {self.groups} is zero; raise width_per_group or width.")
    return inner

  def _reduce(self, y, bn: int):
    """A bottleneck's 1x1 reduce and 3x3 (grouped), each followed by BN
    (`bn{bn}`, `bn{bn + 1}`) and ReLU."""
    inner = self._inner_width()
    stride1, stride3 = ((self.strides, 1) if self.stride_1x1 else
                        (1, self.strides))
    y = self.conv(inner, 1, strides=stride1, padding=0, name="conv1")(y)
    y = self.act(self.norm(name=f"bn{bn}")(y))
    y = self.conv(inner, 3, strides=stride3, padding=1,
                  feature_group_count=self.groups, name="conv2")(y)
    return self.act(self.norm(name=f"bn{bn + 1}")(y))

  def _dropout(self, y):
    return y if self.dropout is None else self.dropout(name="dropout")(y)

  def _shortcut(self, x, features: int):
    changes = x.shape[-1] != features or self.strides != 1
    option = shortcut_option(self.shortcut)
    if option == "C" or (option == "B" and changes):
      s = self.conv(features, 1, strides=self.strides, padding=0,
                    name="shortcut_conv")(x)
      return s if self.preactivation else self.norm(name="shortcut_bn")(s)
    if changes:
      return ZeroPadShortcut(features, self.strides, name="shortcut")(x)
    return x

  def _add(self, s, y):
    """SE, the shortcut of `s` and the sum; `y` is the finished branch."""
    if self.se is not None:
      y = self.se(name="se")(y)  # Hu et al.: before the addition.
    if not self.residual:
      return y if self.preactivation else self.act(y)
    y = y + self._shortcut(s, y.shape[-1])
    return y if self.preactivation else self.act(y)


def _last_bn(zero: bool) -> dict[str, Any]:
  return {"scale_init": nn.initializers.zeros} if zero else {}


class BasicBlock(ResidualBlock):
  """Two 3x3 convolutions (ResNet-18/34, the CIFAR ResNets), post-activation:
  relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

  @nn.compact
  def __call__(self, x):
    self._check_basic()
    y = self.conv(self.features, 3, strides=self.strides, padding=1,
                  name="conv1")(x)
    y = self._dropout(self.act(self.norm(name="bn1")(y)))
    y = self.conv(self.features, 3, padding=1, name="conv2")(y)
    return self._add(x, self.norm(name="bn2", **_last_bn(self.zero_init))(y))


class BottleneckBlock(ResidualBlock):
  """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand to 4x planes,
  post-activation (ResNet-50/101/152, ResNeXt, Wide ResNet-50-2)."""
  expansion = 4
  branch_layers = 3

  @nn.compact
  def __call__(self, x):
    y = self._dropout(self._reduce(x, bn=1))
    y = self.conv(self.features * self.expansion, 1, padding=0,
                  name="conv3")(y)
    return self._add(x, self.norm(name="bn3", **_last_bn(self.zero_init))(y))


class PreActBlock(ResidualBlock):
  """A pre-activation block (He et al. 2016b): x + branch(x), where the
  branch starts with BN-ReLU and ends with a convolution, and nothing
  follows the addition.

  `preact` says where the input's BN-ReLU (`bn1`) goes: 'branch' (the
  usual), 'both' (the shortcut reads the activated input too: blocks that
  start a stage, in the authors' code) or 'none' (no `bn1`: the first
  block after a stem that already ends with BN-ReLU, fb.resnet.torch's
  ImageNet layout). `zero_init` zeroes the last convolution's kernel (timm's
  ResNetV2 `zero_init_last`): zeroing the BN before it would feed ReLU exact
  zeros, where ReLU has no gradient, and the branch would never train.
  """
  preact: str = "branch"

  preactivation = True

  def _split(self, x):
    """(branch input, shortcut input)."""
    if self.preact == "none":
      return x, x
    a = self.act(self.norm(name="bn1")(x))
    return (a, a) if self.preact == "both" else (a, x)

  def _last_conv(self, y, features: int, kernel: int, name: str):
    init = {"kernel_init": nn.initializers.zeros} if self.zero_init else {}
    return self.conv(features, kernel, padding=kernel // 2, name=name,
                     **init)(self._dropout(y))


class PreActBasicBlock(PreActBlock):
  """BN-ReLU-3x3, BN-ReLU-[dropout]-3x3, then + shortcut (Fig. 1b)."""

  @nn.compact
  def __call__(self, x):
    self._check_basic()
    y, s = self._split(x)
    y = self.conv(self.features, 3, strides=self.strides, padding=1,
                  name="conv1")(y)
    y = self.act(self.norm(name="bn2")(y))
    return self._add(s, self._last_conv(y, self.features, 3, "conv2"))


class PreActBottleneckBlock(PreActBlock):
  """BN-ReLU-1x1, BN-ReLU-3x3 (groups), BN-ReLU-[dropout]-1x1 (x4),
  + shortcut."""
  expansion = 4
  branch_layers = 3

  @nn.compact
  def __call__(self, x):
    y, s = self._split(x)
    y = self._reduce(y, bn=2)
    return self._add(s, self._last_conv(y, self.features * self.expansion, 1,
                                        "conv3"))


BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": BottleneckBlock,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneckBlock,
}
