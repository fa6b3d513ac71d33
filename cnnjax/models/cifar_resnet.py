"""Residual networks for CIFAR: ResNet-20 ... 1202, plain nets, pre-activation
ResNets and Wide ResNets.

  CifarResNet    He et al. 2015, "Deep Residual Learning", section 4.2: a 3x3
                 conv of 16 filters, three stages of n basic blocks with
                 16/32/64 filters on 32x32/16x16/8x8 maps (the first conv of
                 stages 2 and 3 has stride 2), global average pooling and
                 `head`: 6n + 2 weighted layers. `residual=False` removes the
                 shortcuts: the plain nets of Fig. 6.
  PreActResNet   He et al. 2016, "Identity Mappings in Deep Residual
                 Networks": BN-ReLU-conv blocks, basic (6n + 2 layers) or
                 bottleneck (9n + 2, widths 16/32/64 -> 64/128/256 outputs).
  WideResNet     Zagoruyko & Komodakis 2016: pre-activation basic blocks
                 widened k times (16, 16k, 32k, 64k), n = (d - 4) / 6 blocks
                 per stage, dropout between the convolutions.

Shortcuts where a block changes shape (He et al. 2015, section 3.3): option
'A' subsamples by the stride and pads the new channels with zeros (no
parameters; the paper's choice for every CIFAR ResNet, Table 6); option 'B'
is a 1x1 convolution at the stride (+ BN in post-activation blocks; a bare
convolution in pre-activation ones, as in the authors' code). Identity
elsewhere.

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

The plain nets have the ResNets' counts (option A shortcuts are free).

3x3 convolutions pad one pixel on each side (torch's padding=1): at stride 2
the output at i is centred on input 2i, the pixel an option-A shortcut keeps;
flax's 'SAME' would pad (0, 1) and centre it on 2i + 1.
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

SHORTCUTS = ("A", "B")


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
                        f"channels to {self.features}; use shortcut='B'.")
    if self.strides != 1:
      x = x[(slice(None),) + (slice(None, None, self.strides),) *
            (x.ndim - 2)]
    if extra:
      x = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + ((0, extra),))
    return x


def _check_shortcut(shortcut: str) -> None:
  if shortcut not in SHORTCUTS:
    raise CnnjaxError(f"shortcut must be 'A' (zero padding) or 'B' "
                      f"(projection), got {shortcut!r}.")


def _blocks_per_stage(depth: int, layers_per_block: int, offset: int,
                      what: str) -> int:
  """n from depth = layers_per_block * 3 * n + offset (three stages)."""
  per_depth = 3 * layers_per_block
  if not isinstance(depth, int) or depth < per_depth + offset or (
      depth - offset) % per_depth:
    raise CnnjaxError(f"{what} needs depth = {per_depth}n + {offset} with "
                      f"n >= 1 (e.g. {per_depth + offset}, "
                      f"{2 * per_depth + offset}), got {depth!r}.")
  return (depth - offset) // per_depth


class BasicBlock(nn.Module):
  """He et al. 2015 (Fig. 2): conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU.

  `residual=False` drops the shortcut (a plain block); `zero_init` zeroes
  the scale of the last BN, so the block starts as its shortcut.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  shortcut: str = "A"
  residual: bool = True
  zero_init: bool = False

  @nn.compact
  def __call__(self, x):
    last_bn = {"scale_init": nn.initializers.zeros} if self.zero_init else {}
    y = self.conv(self.features, 3, strides=self.strides, padding=1,
                  name="conv1")(x)
    y = self.act(self.norm(name="bn1")(y))
    y = self.conv(self.features, 3, padding=1, name="conv2")(y)
    y = self.norm(name="bn2", **last_bn)(y)
    if not self.residual:
      return self.act(y)
    if x.shape[-1] == self.features and self.strides == 1:
      s = x
    elif self.shortcut == "A":
      s = ZeroPadShortcut(self.features, self.strides, name="shortcut")(x)
    else:
      s = self.conv(self.features, 1, strides=self.strides, padding=0,
                    name="shortcut_conv")(x)
      s = self.norm(name="shortcut_bn")(s)
    return self.act(y + s)


class _PreActBlock(nn.Module):
  """Fields of the pre-activation blocks (He et al. 2016, Fig. 1b).

  The block computes x' + branch(x'), where x' is x or, with
  `preact_shortcut`, BN-ReLU(x): blocks that change shape pre-activate the
  input before it splits, so that the shortcut (zero padding or a bare 1x1
  projection) reads normalised activations (the authors' resnet-pre-act.lua,
  fb.resnet.torch's 'both_preact', the WRN code). `dropout` is an
  `nn.Dropout` partial (already bound to train/eval) applied before the last
  convolution, or None. `zero_init` zeroes the last convolution's kernel:
  zeroing the BN before it would feed ReLU exact zeros, where ReLU has no
  gradient, and the branch would never train (timm's `zero_init_last`).
  """
  features: int  # Output channels of the block.
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  shortcut: str = "B"
  preact_shortcut: bool = False
  dropout: ModuleDef | None = None
  zero_init: bool = False

  def _split(self, x):
    """(branch input, shortcut input)."""
    a = self.act(self.norm(name="bn1")(x))
    return a, (a if self.preact_shortcut else x)

  def _last_conv(self, y, kernel: int):
    init = {"kernel_init": nn.initializers.zeros} if self.zero_init else {}
    if self.dropout is not None:
      y = self.dropout(name="dropout")(y)
    return self.conv(self.features, kernel, padding=kernel // 2,
                     name=f"conv{self._num_convs}", **init)(y)

  def _merge(self, s, y):
    if s.shape[-1] == self.features and self.strides == 1:
      return y + s
    if self.shortcut == "A":
      return y + ZeroPadShortcut(self.features, self.strides,
                                 name="shortcut")(s)
    return y + self.conv(self.features, 1, strides=self.strides, padding=0,
                         name="shortcut_conv")(s)


class PreActBasicBlock(_PreActBlock):
  """BN-ReLU-conv3x3, BN-ReLU-[dropout]-conv3x3, + shortcut."""
  _num_convs = 2

  @nn.compact
  def __call__(self, x):
    y, s = self._split(x)
    y = self.conv(self.features, 3, strides=self.strides, padding=1,
                  name="conv1")(y)
    y = self.act(self.norm(name="bn2")(y))
    return self._merge(s, self._last_conv(y, 3))


class PreActBottleneckBlock(_PreActBlock):
  """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (x4), + shortcut.

  The stride is on the first 1x1 convolution, as in the authors' CIFAR code
  (resnet-pre-act.lua) and the original ResNet bottleneck.
  """
  expansion = 4
  _num_convs = 3

  @nn.compact
  def __call__(self, x):
    inner = self.features // self.expansion
    y, s = self._split(x)
    y = self.conv(inner, 1, strides=self.strides, padding=0, name="conv1")(y)
    y = self.act(self.norm(name="bn2")(y))
    y = self.conv(inner, 3, padding=1, name="conv2")(y)
    y = self.act(self.norm(name="bn3")(y))
    return self._merge(s, self._last_conv(y, 1))


def _building_blocks(module) -> tuple[ModuleDef, ModuleDef]:
  """(conv, norm) partials for `module`'s dtypes, bias-free convolutions."""
  conv = functools.partial(layers.Conv, use_bias=False, dtype=module.dtype,
                           param_dtype=module.param_dtype)
  norm = functools.partial(layers.TorchLikeBatchNorm, dtype=module.dtype,
                           param_dtype=module.param_dtype)
  return conv, norm


def _classify(module, x):
  """Global average pooling and `head`; features only if num_classes == 0."""
  x = layers.GlobalAvgPool(name="pool")(x)  # (B, C)
  if not module.num_classes:
    return x
  return nn.Dense(module.num_classes, dtype=module.dtype,
                  param_dtype=module.param_dtype, name="head")(x)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 images (He et al. 2015, section 4.2).

  Shapes for a 32x32x3 image: stem (B, 32, 32, 16), stage1 (B, 32, 32, 16),
  stage2 (B, 16, 16, 32), stage3 (B, 8, 8, 64), pool (B, 64), head
  (B, num_classes).

  Attributes:
    depth: 6n + 2 (20, 32, 44, 56, 110, 1202 in the paper).
    shortcut: 'A' (zero padding, the paper's CIFAR choice) or 'B'
      (projection where the shape changes).
    residual: False removes every shortcut (the plain nets).
    widths: the filters of the three stages (the stem has widths[0]).
    zero_init_residual: zero the scale of each block's last BN.
  """
  depth: int = 20
  shortcut: str = "A"
  residual: bool = True
  widths: Sequence[int] = (16, 32, 64)
  num_classes: int = 10  # 0: no classifier, return the pooled features.
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    n = _blocks_per_stage(self.depth, 2, 2, "a CIFAR ResNet")
    _check_shortcut(self.shortcut)
    if self.zero_init_residual and not self.residual:
      raise CnnjaxError("zero_init_residual needs shortcuts: a plain net "
                        "with zeroed BN scales outputs zeros.")
    conv, norm = _building_blocks(self)
    norm = functools.partial(norm, use_running_average=not train)
    act = nn.relu
    x = x.astype(self.dtype)
    x = conv(self.widths[0], 3, padding=1, name="stem_conv")(x)
    x = act(norm(name="stem_bn")(x))  # (B, 32, 32, 16)
    for s, width in enumerate(self.widths):
      for b in range(n):
        x = BasicBlock(width, 2 if s > 0 and b == 0 else 1, conv=conv,
                       norm=norm, act=act, shortcut=self.shortcut,
                       residual=self.residual,
                       zero_init=self.zero_init_residual,
                       name=f"stage{s + 1}_block{b}")(x)
    return _classify(self, x)


class PreActResNet(nn.Module):
  """Pre-activation ResNet for 32x32 images (He et al. 2016).

  conv3x3 (16), three stages of pre-activation blocks (the first of
  stages 2 and 3 at stride 2), BN-ReLU, global average pooling, `head`.
  Basic blocks output widths[s] channels (depth 6n + 2), bottlenecks
  4 * widths[s] (depth 9n + 2: ResNet-164 is n = 18). The first block of
  each stage pre-activates before the split (for stage 1, the paper's
  "activation right after conv1").

  Attributes:
    depth: 6n + 2 (basic) or 9n + 2 (bottleneck).
    bottleneck: bottleneck blocks (ResNet-164, -1001) or basic (-110).
    shortcut: 'A' or 'B' (a bare 1x1 convolution) where the shape changes.
    zero_init_residual: zero the kernel of each branch's last convolution.
  """
  depth: int = 164
  bottleneck: bool = True
  shortcut: str = "B"
  widths: Sequence[int] = (16, 32, 64)
  num_classes: int = 10  # 0: no classifier, return the pooled features.
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    block, expansion = ((PreActBottleneckBlock, 4) if self.bottleneck else
                        (PreActBasicBlock, 1))
    n = _blocks_per_stage(self.depth, 3 if self.bottleneck else 2, 2,
                          "a pre-activation ResNet with "
                          f"{'bottleneck' if self.bottleneck else 'basic'} "
                          "blocks")
    _check_shortcut(self.shortcut)
    conv, norm = _building_blocks(self)
    norm = functools.partial(norm, use_running_average=not train)
    act = nn.relu
    x = x.astype(self.dtype)
    x = conv(self.widths[0], 3, padding=1, name="stem_conv")(x)  # (B,32,32,16)
    for s, width in enumerate(self.widths):
      for b in range(n):
        x = block(width * expansion, 2 if s > 0 and b == 0 else 1,
                  conv=conv, norm=norm, act=act, shortcut=self.shortcut,
                  preact_shortcut=b == 0, zero_init=self.zero_init_residual,
                  name=f"stage{s + 1}_block{b}")(x)
    x = act(norm(name="final_bn")(x))  # (B, 8, 8, 64 * expansion)
    return _classify(self, x)


class WideResNet(nn.Module):
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
  depth: int = 28
  widen_factor: int = 10
  dropout_rate: float = 0.0
  num_classes: int = 10  # 0: no classifier, return the pooled features.
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    n = _blocks_per_stage(self.depth, 2, 4, "a Wide ResNet")
    if not isinstance(self.widen_factor, int) or self.widen_factor < 1:
      raise CnnjaxError(f"widen_factor must be a positive int, got "
                        f"{self.widen_factor!r}.")
    conv, norm = _building_blocks(self)
    norm = functools.partial(norm, use_running_average=not train)
    act = nn.relu
    dropout = None
    if self.dropout_rate:
      dropout = functools.partial(nn.Dropout, self.dropout_rate,
                                  deterministic=not train)
    x = x.astype(self.dtype)
    x = conv(16, 3, padding=1, name="stem_conv")(x)  # (B, 32, 32, 16)
    for s, width in enumerate((16, 32, 64)):
      for b in range(n):
        features = width * self.widen_factor
        strides = 2 if s > 0 and b == 0 else 1
        changes = strides != 1 or x.shape[-1] != features
        x = PreActBasicBlock(features, strides, conv=conv, norm=norm, act=act,
                             shortcut="B", preact_shortcut=changes,
                             dropout=dropout,
                             zero_init=self.zero_init_residual,
                             name=f"stage{s + 1}_block{b}")(x)
    x = act(norm(name="final_bn")(x))  # (B, 8, 8, 64k)
    return _classify(self, x)


def _register(name: str, factory, description: str, **fields):
  register_model(name, input_shape=(32, 32, 3), description=description)(
      functools.partial(factory, **fields))


for _depth in (20, 32, 44, 56, 110, 1202):
  _register(f"resnet{_depth}", CifarResNet,
            f"ResNet-{_depth} for CIFAR (He et al. 2015, Table 6), option-A "
            f"shortcuts", depth=_depth)
for _depth in (20, 32, 44, 56, 110):
  _register(f"plain{_depth}", CifarResNet,
            f"Plain-{_depth} for CIFAR: ResNet-{_depth} without shortcuts "
            f"(He et al. 2015, Fig. 6)", depth=_depth, residual=False)
_register("preact_resnet110", PreActResNet,
          "Pre-activation ResNet-110 for CIFAR (He et al. 2016), basic "
          "blocks, option-A shortcuts", depth=110, bottleneck=False,
          shortcut="A")
_register("preact_resnet164", PreActResNet,
          "Pre-activation ResNet-164 for CIFAR (He et al. 2016), bottleneck "
          "blocks, projection shortcuts", depth=164, bottleneck=True,
          shortcut="B")
for _depth, _k in ((16, 8), (28, 10), (40, 4)):
  _register(f"wrn{_depth}_{_k}", WideResNet,
            f"Wide ResNet WRN-{_depth}-{_k} for CIFAR (Zagoruyko & Komodakis "
            f"2016)", depth=_depth, widen_factor=_k)
