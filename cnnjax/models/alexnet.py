"""AlexNet (Krizhevsky et al., 2012), its torchvision variant, and ZFNet.

All four networks share one shape: five convolutions (ReLU after each), max
pooling after some of them, optionally LRN after a pooling, then three fully
connected layers with dropout 0.5 before FC6 and FC7. They differ only in the
list of `ConvSpec`s below.

  alexnet         the lecture material's single-tower AlexNet on 227x227x3:
                  CONV1 96 11x11/4 -> 55, POOL 3x3/2 -> 27, LRN, CONV2 256 5x5
                  -> 27, POOL -> 13, LRN, CONV3 384, CONV4 384, CONV5 256 (3x3)
                  -> 13, POOL -> 6, FC6 4096, FC7 4096, FC8 1000.
  alexnet_groups  the paper's two-GPU layout (Fig. 2): CONV2, CONV4 and CONV5
                  only see the maps of their own GPU, i.e. two groups; CONV3
                  and the FC layers are connected across both.
  alexnet_tv      torchvision's `alexnet` (the "one weird trick" widths
                  64-192-384-256-256, 11x11/4 pad 2 on 224x224, no LRN,
                  adaptive average pooling to 6x6).
  zfnet           Zeiler & Fergus (2014), Fig. 3: 7x7/2 first layer, 5x5/2
                  second, on 224x224x3.

The paper itself normalises before pooling; the lecture material (and
Caffe's reference model) pools first, which is what is used here, for both
AlexNet and ZFNet (whose Fig. 3 caption also lists pooling before the
contrast normalisation).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.models.registry import register_model


class ConvSpec(NamedTuple):
  """One convolution of an AlexNet-style network and what follows its ReLU.

  `padding` is torch-style (an int on both sides of every dim). `pool` adds a
  3x3 stride-2 max pooling, `lrn` local response normalisation after it.
  """
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  pool: bool = False
  lrn: bool = False


# Krizhevsky et al. 2012, Fig. 2 and section 3.5, one tower (both GPUs'
# kernels together): 227 -> 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6.
ALEXNET = (
    ConvSpec(96, 11, stride=4, padding=0, pool=True, lrn=True),  # 55 -> 27
    ConvSpec(256, 5, padding=2, pool=True, lrn=True),  # 27 -> 13
    ConvSpec(384, 3, padding=1),  # 13
    ConvSpec(384, 3, padding=1),  # 13
    ConvSpec(256, 3, padding=1, pool=True),  # 13 -> 6
)
# The two-GPU original: "the kernels of the third convolutional layer are
# connected to all kernel maps in the second layer"; layers 2, 4 and 5 only
# to the maps on their own GPU (section 3.5), i.e. feature_group_count=2.
ALEXNET_GROUPS = (
    ALEXNET[0],
    ALEXNET[1]._replace(groups=2),
    ALEXNET[2],
    ALEXNET[3]._replace(groups=2),
    ALEXNET[4]._replace(groups=2),
)
# torchvision.models.alexnet (Krizhevsky 2014, "One weird trick"):
# 224 -> 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6, no LRN.
ALEXNET_TV = (
    ConvSpec(64, 11, stride=4, padding=2, pool=True),
    ConvSpec(192, 5, padding=2, pool=True),
    ConvSpec(384, 3, padding=1),
    ConvSpec(256, 3, padding=1),
    ConvSpec(256, 3, padding=1, pool=True),
)
# Zeiler & Fergus 2014, Fig. 3, with the map sizes printed there:
# 224 -conv1-> 110 -pool-> 55 -conv2-> 26 -pool-> 13 -conv3,4,5-> 13 -pool-> 6.
# The figure gives no paddings; these are the ones that reproduce its sizes:
# - conv1, 7x7/2: floor((224 + 2p - 7) / 2) + 1 = 110 needs p = 1 (p = 0
#   gives 109; Caffe's later "ZF" models use p = 3, giving 112).
# - conv2, 5x5/2: floor((55 - 5) / 2) + 1 = 26 with p = 0.
# - conv3-5, 3x3/1: p = 1 keeps 13.
# - The 3x3/2 poolings 110 -> 55 and 26 -> 13 need ceil rounding (Caffe's
#   pooling rule, ceil((n - 3) / 2) + 1), i.e. one extra row and column at
#   the bottom/right, which `ceil_mode=True` adds; at 13 -> 6 it adds none.
ZFNET = (
    ConvSpec(96, 7, stride=2, padding=1, pool=True, lrn=True),
    ConvSpec(256, 5, stride=2, padding=0, pool=True, lrn=True),
    ConvSpec(384, 3, padding=1),
    ConvSpec(384, 3, padding=1),
    ConvSpec(256, 3, padding=1, pool=True),
)


class AlexNet(nn.Module):
  """An AlexNet-style network: five convolutions then three dense layers.

  Attributes:
    convs: the five (or any number of) `ConvSpec`s.
    hidden: the width of FC6 and FC7 (4096 in all four papers).
    adaptive_pool: if set, average-pool the last maps to this size before
      the classifier (torchvision's `AdaptiveAvgPool2d((6, 6))`), so that any
      input size keeps the FC6 size; None flattens whatever comes out.
    ceil_mode: round pooling output sizes up (ZFNet; see `ZFNET`).
    num_classes: 0 returns the FC7 features (after ReLU) instead of logits.
  """
  convs: Sequence[ConvSpec] = ALEXNET
  num_classes: int = 1000
  hidden: int = 4096
  dropout_rate: float = 0.5
  adaptive_pool: int | None = None
  ceil_mode: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    conv = functools.partial(layers.Conv, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    act = nn.relu
    x = x.astype(self.dtype)
    for i, spec in enumerate(self.convs, start=1):
      spec = ConvSpec(*spec)
      x = conv(spec.features, kernel_size=spec.kernel, strides=spec.stride,
               padding=spec.padding, feature_group_count=spec.groups,
               name=f"conv{i}")(x)
      x = act(x)
      if spec.pool:
        x = layers.MaxPool(3, 2, ceil_mode=self.ceil_mode, name=f"pool{i}")(x)
      if spec.lrn:  # The paper's constants: n=5, k=2, alpha=1e-4, beta=0.75.
        x = layers.LocalResponseNorm(name=f"lrn{i}")(x)
    if self.adaptive_pool is not None:
      x = layers.AdaptiveAvgPool(self.adaptive_pool, name="avgpool")(x)
    x = x.reshape((x.shape[0], -1))  # (B, 6 * 6 * 256) at the default sizes.
    # Dropout before FC6 and FC7, as torchvision (the paper: "in the first
    # two fully-connected layers").
    for i in (6, 7):
      x = nn.Dropout(self.dropout_rate, deterministic=not train,
                     name=f"dropout{i}")(x)
      x = act(dense(self.hidden, name=f"fc{i}")(x))
    # The paper's FC8; num_classes=0: the FC7 features.
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model(
    "alexnet", input_shape=(227, 227, 3),
    description="AlexNet, one tower (lecture material): LRN, 62.4M params")(
        functools.partial(AlexNet, convs=ALEXNET))
register_model(
    "alexnet_groups", input_shape=(227, 227, 3),
    description="AlexNet, the paper's two-GPU layout (grouped conv2/4/5)")(
        functools.partial(AlexNet, convs=ALEXNET_GROUPS))
register_model(
    "alexnet_tv", input_shape=(224, 224, 3),
    description="AlexNet as torchvision: 64-192-384-256-256, no LRN")(
        functools.partial(AlexNet, convs=ALEXNET_TV, adaptive_pool=6))
register_model(
    "zfnet", input_shape=(224, 224, 3),
    description="ZFNet (Zeiler & Fergus 2014): 7x7/2 first layer")(
        functools.partial(AlexNet, convs=ZFNET, ceil_mode=True))
