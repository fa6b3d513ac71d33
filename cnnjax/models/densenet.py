"""DenseNet (Huang et al., 2017): every layer sees the maps of all before it.

A dense block of L layers concatenates each layer's k new maps ("growth
rate" k) onto its input, so layer l sees k0 + (l - 1) k channels. DenseNet-B
layers are bottlenecks, BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k); DenseNet-C
transitions compress, BN-ReLU-conv1x1(floor(0.5 c))-avgpool 2x2; DenseNet-BC
does both. Convolutions have no biases (BatchNorm follows each of them).

ImageNet networks (Table 1 of the paper; torchvision's densenet*): a 7x7/2
convolution with 2k channels, BN, ReLU and 3x3/2 max pooling, four dense
blocks with three transitions between them, then BN, ReLU, global average
pooling and the classifier `head`. CIFAR networks (Section 4): a 3x3
convolution (16 channels, or 2k for DenseNet-BC), three dense blocks on
32x32, 16x16 and 8x8 maps, and the same ending.

Module names follow the paper: `stem_conv`, `stem_bn`, `stem_pool`,
`denseblock1/layer1/...`, `transition1`, ..., `final_bn`, `head`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.backbone import FeatureStage
from cnnjax.models.registry import register_model


class DenseLayer(nn.Module):
  """One composite layer H_l; returns only its `growth_rate` new maps.

  With `bottleneck_width` b > 0 it is BN-ReLU-conv1x1(b k)-BN-ReLU-conv3x3(k)
  (DenseNet-B, b = 4 in the paper); with 0 it is BN-ReLU-conv3x3(k).
  `dropout` (if given) follows the 3x3 convolution, as in torchvision.
  """
  growth_rate: int
  bottleneck_width: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  act: Callable
  dropout: Callable[..., nn.Module] | None = None

  @nn.compact
  def __call__(self, x):  # (B, H, W, c) -> (B, H, W, k)
    if self.bottleneck_width:
      x = self.act(self.norm(name="bn1")(x))
      x = self.conv(self.bottleneck_width * self.growth_rate, kernel_size=1,
                    name="conv1")(x)
      x = self.act(self.norm(name="bn2")(x))
      x = self.conv(self.growth_rate, kernel_size=3, padding=1,
                    name="conv2")(x)
    else:
      x = self.act(self.norm(name="bn")(x))
      x = self.conv(self.growth_rate, kernel_size=3, padding=1, name="conv")(x)
    if self.dropout is not None:
      x = self.dropout()(x)
    return x


class DenseBlock(nn.Module):
  """`num_layers` dense layers, each fed the concatenation of all earlier
  maps: (B, H, W, c) -> (B, H, W, c + num_layers * k).

  `layer` is a `DenseLayer` (or its `nn.remat`) with everything but the name
  bound. Concatenating once per layer keeps only the growing block input
  alive, as torchvision does.
  """
  num_layers: int
  layer: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      new = self.layer(name=f"layer{i + 1}")(x)
      x = jnp.concatenate([x, new], axis=-1)
    return x


class Transition(nn.Module):
  """BN-ReLU-conv1x1(features)-avgpool 2x2/2 between two dense blocks."""
  features: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  act: Callable

  @nn.compact
  def __call__(self, x):  # (B, H, W, c) -> (B, H // 2, W // 2, features)
    x = self.act(self.norm(name="bn")(x))
    x = self.conv(self.features, kernel_size=1, name="conv")(x)
    return layers.AvgPool(2, 2, name="pool")(x)


class DenseNet(nn.Module):
  """A DenseNet; the defaults are DenseNet-121 (k=32) for ImageNet.

  Attributes:
    block_sizes: layers per dense block (Table 1; (16, 16, 16) for the
      CIFAR DenseNet-BC with L = 100).
    growth_rate: k, the maps each layer adds.
    init_features: channels of the stem convolution (2k for -BC nets).
    bottleneck_width: the 1x1 bottleneck makes this many times k maps; 0
      means no bottleneck (plain DenseNet layers).
    compression: theta; a transition keeps floor(theta * c) of c channels.
    stem: 'imagenet' (7x7/2 conv, BN, ReLU, 3x3/2 max pool) or 'cifar'
      (a single 3x3 conv; the first dense layer starts with BN-ReLU).
    drop_rate: dropout after each dense layer's 3x3 conv (0: none).
    memory_efficient: recompute each dense layer in the backward pass
      (`nn.remat`) instead of storing its BN/ReLU/bottleneck activations;
      the same numbers for less memory and more compute, like torchvision's
      flag of that name (Pleiss et al., 2017).
    num_classes: 0 means no classifier: return the pooled features.
  """
  block_sizes: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32
  init_features: int = 64
  bottleneck_width: int = 4
  compression: float = 0.5
  stem: str = "imagenet"
  drop_rate: float = 0.0
  memory_efficient: bool = False
  num_classes: int = 1000
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def feature_stages(self) -> tuple[FeatureStage, ...]:
    """The maps of a features_only backbone (models/backbone.py), numbered
    as timm's: the stem's ReLU (the CIFAR stem: its convolution), every
    dense block but the last (before its transition), final_bn's ReLU."""
    imagenet = self.stem == "imagenet"
    if imagenet:
      stages = [FeatureStage("stem_bn", self.init_features, 2, "relu")]
    else:
      stages = [FeatureStage("stem_conv", self.init_features, 1)]
    channels, reduction = self.init_features, 4 if imagenet else 1
    for i, num_layers in enumerate(self.block_sizes):
      channels += num_layers * self.growth_rate
      if i + 1 < len(self.block_sizes):
        stages.append(FeatureStage(f"denseblock{i + 1}", channels, reduction))
        channels = int(math.floor(channels * self.compression))
        reduction *= 2
    stages.append(FeatureStage("final_bn", channels, reduction, "relu"))
    return tuple(stages)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.stem not in ("imagenet", "cifar"):
      raise CnnjaxError(f"DenseNet stem must be 'imagenet' or 'cifar', got "
                        f"{self.stem!r}.")
    if not 0.0 < self.compression <= 1.0:
      raise CnnjaxError(f"DenseNet compression must be in (0, 1], got "
                        f"{self.compression!r}.")
    conv = functools.partial(layers.Conv, use_bias=False, padding=0,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(layers.TorchLikeBatchNorm,
                             use_running_average=not train, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    act = nn.relu
    dropout = (functools.partial(nn.Dropout, self.drop_rate,
                                 deterministic=not train)
               if self.drop_rate > 0.0 else None)
    layer_cls = nn.remat(DenseLayer) if self.memory_efficient else DenseLayer
    layer = functools.partial(layer_cls, growth_rate=self.growth_rate,
                              bottleneck_width=self.bottleneck_width,
                              conv=conv, norm=norm, act=act, dropout=dropout)

    if jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.init_features, kernel_size=7, strides=2, padding=3,
               name="stem_conv")(x)  # (B, 112, 112, 2k) at 224x224
      x = act(norm(name="stem_bn")(x))
      x = layers.MaxPool(3, 2, padding=1, name="stem_pool")(x)  # 56x56
    else:
      x = conv(self.init_features, kernel_size=3, padding=1,
               name="stem_conv")(x)  # (B, 32, 32, init) at 32x32
    channels = self.init_features
    for i, num_layers in enumerate(self.block_sizes):
      x = DenseBlock(num_layers, layer, name=f"denseblock{i + 1}")(x)
      channels += num_layers * self.growth_rate
      if i + 1 < len(self.block_sizes):
        channels = int(math.floor(channels * self.compression))
        x = Transition(channels, conv, norm, act, name=f"transition{i + 1}")(x)
    x = act(norm(name="final_bn")(x))
    x = layers.GlobalAvgPool(name="avgpool")(x)  # (B, channels)
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


def _register(name, input_shape, description, **fields):
  register_model(name, input_shape=input_shape, description=description)(
      functools.partial(DenseNet, **fields))


# ImageNet, Table 1 of the paper (DenseNet-BC: bottlenecks and theta = 0.5).
_register("densenet121", (224, 224, 3), "DenseNet-121 (k=32), ImageNet",
          block_sizes=(6, 12, 24, 16))
_register("densenet169", (224, 224, 3), "DenseNet-169 (k=32), ImageNet",
          block_sizes=(6, 12, 32, 32))
_register("densenet201", (224, 224, 3), "DenseNet-201 (k=32), ImageNet",
          block_sizes=(6, 12, 48, 32))
_register("densenet161", (224, 224, 3), "DenseNet-161 (k=48), ImageNet",
          block_sizes=(6, 12, 36, 24), growth_rate=48, init_features=96)
# CIFAR (Section 4, Table 2): L = 100 counts 3 x 16 bottleneck layers of two
# convolutions each, plus the first conv, two transitions and the classifier.
_register("densenet_bc100_k12", (32, 32, 3),
          "DenseNet-BC (L=100, k=12), CIFAR", block_sizes=(16, 16, 16),
          growth_rate=12, init_features=24, stem="cifar", num_classes=10)
# L = 40: 3 x 12 plain 3x3 layers, 16 stem channels, no compression.
_register("densenet40_k12", (32, 32, 3), "DenseNet (L=40, k=12), CIFAR",
          block_sizes=(12, 12, 12), growth_rate=12, init_features=16,
          bottleneck_width=0, compression=1.0, stem="cifar", num_classes=10)
