"""GoogLeNet / Inception v1 (Szegedy et al., 2015) and torchvision's variant.

An Inception module (Figure 2b of the paper) runs four branches on the same
input and concatenates their maps: a 1x1 convolution; a 1x1 "reduce" then a
3x3; a 1x1 reduce then a 5x5; and a 3x3/1 max pool then a 1x1 "pool
projection". The 1x1 reductions are what make it affordable: the naive
module (Figure 2a, `NaiveInception`) convolves the full input with the 3x3
and 5x5 filters, and its pooling branch passes every input channel through,
so depth can only grow from module to module.

The network (Table 1), at 224x224 inputs:

  conv 7x7/2 (64)          112x112    maxpool 3x3/2, LRN        56x56
  conv 1x1 (64), 3x3 (192)  56x56     LRN, maxpool 3x3/2        28x28
  inception 3a, 3b          28x28     maxpool 3x3/2             14x14
  inception 4a-4e           14x14     maxpool 3x3/2              7x7
  inception 5a, 5b           7x7      avgpool 7x7, dropout 0.4, linear

Two auxiliary classifiers (Section 5), on the outputs of 4a and 4d, add
0.3 x their losses in training (`config.loss.aux_weight`, applied by the
train step to every output after the first). In training
(`train=True` and `aux_logits`) the model returns `(logits, aux1, aux2)`,
in inference the logits only.

Other input sizes: the final 7x7 average pool is a global average pool (the
same at 224x224), and the auxiliary heads' 5x5/3 average pool, which gives
4x4 maps only at 14x14 to 16x16, is replaced there by torchvision's adaptive
average pooling to 4x4, so the heads keep their 4*4*128 inputs.

`googlenet_tv` is torchvision's model: BatchNorm (eps 1e-3) after every
bias-free convolution, 3x3 kernels in the "5x5" branch (a known slip kept
for its pretrained weights), no LRN, a 2x2/2 fourth max pool, dropout 0.2 and
always-adaptive auxiliary pooling. Its ImageNet weights were trained on
inputs scaled to [-1, 1] ((x - 0.5) / 0.5 per channel), so torchvision
turns on `transform_input` with them: the model takes the usual
ImageNet-normalized input and first maps it back to that range
(`transform_input=True` here; cnnjax.weights sets it when it imports them).
Max pools round their output sizes up
(`ceil_mode=True`, as torch's and Caffe's), giving 112, 56, 28, 14, 7 at
224x224.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION_TABLE = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

# The LRN of Caffe's bvlc_googlenet (the paper gives no constants): n=5,
# k=1, alpha=1e-4 divided by n, beta=0.75.
# ImageNet's channel statistics, which torchvision's preprocessing divides by.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LRN = dict(size=5, k=1.0, alpha=1e-4, beta=0.75, alpha_per_size=True)


class Inception(nn.Module):
  """The Inception module with 1x1 reductions (Figure 2b).

  `features` is a row of Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce,
  #5x5, pool proj); the output has #1x1 + #3x3 + #5x5 + pool proj channels
  at the input's spatial size. `large_kernel` is the "5x5" branch's kernel
  (torchvision uses 3).
  """
  features: Sequence[int]
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module] | None
  act: Callable
  large_kernel: int = 5

  reductions = True  # The 1x1 reduces and the pool projection.

  @nn.compact
  def __call__(self, x):
    c1, c3_reduce, c3, c5_reduce, c5, pool_proj = self.features
    unit = functools.partial(layers.ConvUnit, conv=self.conv, norm=self.norm,
                             act=self.act)

    def reduce(features: int, name: str):
      return unit(features, 1, name=name)(x) if self.reductions else x

    k = self.large_kernel
    b1 = unit(c1, 1, name="b1x1")(x)
    b2 = reduce(c3_reduce, "b3x3_reduce")
    b2 = unit(c3, 3, padding=1, name="b3x3")(b2)
    b3 = reduce(c5_reduce, "b5x5_reduce")
    b3 = unit(c5, k, padding=k // 2, name="b5x5")(b3)
    b4 = layers.MaxPool(3, 1, padding=1, name="pool")(x)
    if self.reductions:
      b4 = unit(pool_proj, 1, name="pool_proj")(b4)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class NaiveInception(Inception):
  """The naive Inception module (Figure 2a): 1x1, 3x3 and 5x5 convolutions
  and 3x3/1 max pooling side by side on the full input, concatenated.

  Takes the same Table 1 row as `Inception` but uses only #1x1, #3x3 and
  #5x5: there are no reductions and no pool projection, so the output has
  #1x1 + #3x3 + #5x5 + C_in channels and the big filters see all C_in.
  """
  reductions = False


class AuxClassifier(nn.Module):
  """An auxiliary classifier (Section 5): 5x5/3 average pooling (4x4 maps
  at 14x14; elsewhere, or with `adaptive_pool`, adaptive pooling to 4x4),
  1x1 conv (128) + ReLU, FC (1024) + ReLU, dropout (0.7), FC (classes)."""
  num_classes: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module] | None
  act: Callable
  dense: Callable[..., nn.Module]
  dropout: Callable[..., nn.Module]
  features: int = 128
  hidden: int = 1024
  dropout_rate: float = 0.7
  adaptive_pool: bool = False

  @nn.compact
  def __call__(self, x):  # (B, 14, 14, C) at 224x224 -> (B, classes)
    paper_pool = all((s - 5) // 3 + 1 == 4 for s in x.shape[1:-1])
    if paper_pool and not self.adaptive_pool:
      x = layers.AvgPool(5, 3, name="pool")(x)  # (B, 4, 4, C)
    else:
      x = layers.AdaptiveAvgPool(4, name="pool")(x)  # (B, 4, 4, C)
    x = layers.ConvUnit(self.features, 1, self.conv, self.norm, self.act,
                        name="conv")(x)
    x = x.reshape((x.shape[0], -1))  # (B, 4 * 4 * 128)
    x = self.act(self.dense(self.hidden, name="fc1")(x))
    x = self.dropout(self.dropout_rate, name="dropout")(x)
    return self.dense(self.num_classes, name="fc2")(x)


class GoogLeNet(nn.Module):
  """GoogLeNet (Table 1); the defaults are the paper's network.

  Attributes:
    num_classes: 0 means no classifier (and no auxiliary classifiers):
      return the pooled 1024 features.
    aux_logits: build the two auxiliary classifiers (after 4a and 4d); in
      training the model then returns (logits, aux1, aux2). They also run
      in inference (their outputs are dropped; jit removes that dead code)
      so that `init` creates their parameters whatever `train` is.
    block_cls: `Inception`, or `NaiveInception` for the naive network.
    batch_norm: conv + BatchNorm(eps `bn_epsilon`) + ReLU without conv biases
      (torchvision) instead of conv + bias + ReLU (the paper).
    lrn: the paper's two local response normalisations.
    large_kernel: kernel of the "5x5" branch (3 in torchvision).
    pool4_window: window of the max pool before 5a (3 in the paper, 2 in
      torchvision; both give 7x7 from 14x14 with ceil rounding).
    transform_input: map ImageNet-normalized inputs to (x - 0.5) / 0.5
      first, as torchvision does for its pretrained weights.
    dropout_rate, aux_dropout_rate: before the classifier / in the aux heads.
    aux_adaptive_pool: always pool the aux heads' input adaptively to 4x4
      (torchvision) instead of 5x5/3 where that gives 4x4.
    width_multiplier: scales every convolution and hidden width (rounded,
      at least 1); 1.0 is the paper. For small stand-ins in tests.
  """
  num_classes: int = 1000
  aux_logits: bool = True
  block_cls: Any = Inception
  batch_norm: bool = False
  bn_epsilon: float = 1e-3
  lrn: bool = True
  large_kernel: int = 5
  pool4_window: int = 3
  dropout_rate: float = 0.4
  aux_dropout_rate: float = 0.7
  aux_adaptive_pool: bool = False
  width_multiplier: float = 1.0
  transform_input: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.width_multiplier <= 0:
      raise CnnjaxError(f"GoogLeNet width_multiplier must be positive, got "
                        f"{self.width_multiplier!r}.")

    def width(c: int) -> int:
      return max(1, int(round(c * self.width_multiplier)))

    conv = functools.partial(layers.Conv, use_bias=not self.batch_norm,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = (functools.partial(layers.TorchLikeBatchNorm,
                              use_running_average=not train,
                              epsilon=self.bn_epsilon, dtype=self.dtype,
                              param_dtype=self.param_dtype)
            if self.batch_norm else None)
    act = nn.relu
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    dropout = functools.partial(nn.Dropout, deterministic=not train)
    unit = functools.partial(layers.ConvUnit, conv=conv, norm=norm, act=act)
    block = functools.partial(self.block_cls, conv=conv, norm=norm, act=act,
                              large_kernel=self.large_kernel)
    with_aux = self.aux_logits and self.num_classes > 0
    aux = functools.partial(
        AuxClassifier, self.num_classes, conv, norm, act, dense, dropout,
        features=width(128), hidden=width(1024),
        dropout_rate=self.aux_dropout_rate,
        adaptive_pool=self.aux_adaptive_pool)

    def inception(name, x):
      row = tuple(width(c) for c in INCEPTION_TABLE[name])
      return block(row, name=f"inception{name}")(x)

    if jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(self.dtype)
    if self.transform_input:  # ImageNet mean/std normalization -> [-1, 1].
      mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
      std = jnp.asarray(IMAGENET_STD, x.dtype)
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    # Sizes at 224x224.
    x = unit(width(64), 7, strides=2, padding=3, name="conv1")(x)  # 112
    pool = functools.partial(layers.MaxPool, strides=2, ceil_mode=True)
    x = pool(3, name="maxpool1")(x)  # 56
    if self.lrn:
      x = layers.LocalResponseNorm(**_LRN, name="lrn1")(x)
    x = unit(width(64), 1, name="conv2")(x)  # 3x3 reduce
    x = unit(width(192), 3, padding=1, name="conv3")(x)
    if self.lrn:
      x = layers.LocalResponseNorm(**_LRN, name="lrn2")(x)
    x = pool(3, name="maxpool2")(x)  # 28
    x = inception("3a", x)  # (B, 28, 28, 256)
    x = inception("3b", x)  # (B, 28, 28, 480)
    x = pool(3, name="maxpool3")(x)  # 14
    x = inception("4a", x)  # (B, 14, 14, 512)
    aux1 = aux(name="aux1")(x) if with_aux else None
    x = inception("4b", x)
    x = inception("4c", x)
    x = inception("4d", x)  # (B, 14, 14, 528)
    aux2 = aux(name="aux2")(x) if with_aux else None
    x = inception("4e", x)  # (B, 14, 14, 832)
    x = pool(self.pool4_window, name="maxpool4")(x)  # 7
    x = inception("5a", x)
    x = inception("5b", x)  # (B, 7, 7, 1024)
    # The paper's 7x7/1 average pool, for any input size.
    x = layers.GlobalAvgPool(name="avgpool")(x)  # (B, 1024)
    if not self.num_classes:
      return x
    x = dropout(self.dropout_rate, name="dropout")(x)
    logits = layers.classify(x, self.num_classes, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    if train and with_aux:
      return logits, aux1, aux2
    return logits


register_model("googlenet", input_shape=(224, 224, 3),
               description="GoogLeNet / Inception v1, the paper's network "
               "(LRN, biases, auxiliary classifiers)")(GoogLeNet)
register_model("googlenet_tv", input_shape=(224, 224, 3),
               description="GoogLeNet as torchvision builds it (BatchNorm, "
               "3x3 '5x5' branch)")(
                   functools.partial(
                       GoogLeNet, aux_logits=False, batch_norm=True, lrn=False,
                       large_kernel=3, pool4_window=2, dropout_rate=0.2,
                       aux_adaptive_pool=True))
register_model("googlenet_naive", input_shape=(224, 224, 3),
               description="GoogLeNet built from naive Inception modules "
               "(no 1x1 reductions)")(
                   functools.partial(GoogLeNet, block_cls=NaiveInception,
                                     aux_logits=False))
