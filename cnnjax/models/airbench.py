"""A fast CIFAR-10 network in the spirit of Keller Jordan's airbench94
(Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU"), written
from the paper's description for cnnjax.

Shapes for a 32x32x3 image (widths 64, 256, 256):

  whiten   2x2 conv 24, no padding, fixed   (B, 31, 31, 24)  then GELU
  block1   3x3 conv 64 -> 2x2 max pool -> BN -> GELU      (B, 15, 15, 64)
           3x3 conv 64 -> BN -> GELU
  block2   the same with 256 channels                     (B, 7, 7, 256)
  block3   the same with 256 channels                     (B, 3, 3, 256)
  pool     3x3 max pool                                   (B, 256)
  head     linear, no bias, times 1/9                     (B, num_classes)

What makes it fast to train, as the paper describes it:

- **Whitening.** The first layer's 24 filters are fixed, not learned: the
  12 eigenvectors of the covariance of the training images' 2x2 patches,
  each divided by the square root of its eigenvalue (plus 5e-4), and their
  negatives. They are computed from data, so the layer is set by
  `init_from_data` (the train driver calls it with 5,000 normalised
  training images before the first step) and its kernel has learning-rate
  factor 0 in the experiment's config. Its bias learns.
- **Identity-like convolutions.** Of each 3x3 convolution's filters, the
  first `in_features` start as the identity (Dirac: 1 at the centre tap of
  their own channel), the others as PyTorch's default (uniform in
  +-1/sqrt(fan_in)).
- **BatchNorm without scale** (the scale stays 1), eps 1e-12, and running
  statistics that follow the last batches closely: `bn_momentum` 0.6 in
  flax's convention (the average keeps 60% of itself per batch; airbench94
  gives PyTorch's BatchNorm one minus its 0.6).
- **Faster norm biases.** The paper trains the BN biases with a learning
  rate 64 times the others' but the same weight decay. Here the bias is
  stored divided by `bias_scale` = 8 and multiplied back in the layer: with
  (momentum) SGD and coupled weight decay, a parameter b = 8 b' moves by
  lr (64 g + wd b) per step, which is exactly that, with one optimizer for
  every parameter.
- **A scaled head**: logits are the linear layer's outputs times 1/9.

The training recipe (label smoothing 0.2, Nesterov SGD, the triangular
learning rate, flips and 2-pixel translations, flip test-time
augmentation) is the experiment's config: experiments/cifar10/airbench94.py.

1,971,640 parameters for 10 classes (the fixed whitening kernel's 288 included).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import layers
from cnnjax.models.registry import register_model

WHITEN_EPS = 5e-4
WHITEN_PATCH = 2


def torch_uniform(key, shape, dtype=jnp.float32):
  """PyTorch's default for Conv2d / Linear weights: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(np.prod(shape[:-1]))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def dirac_partial_init(key, shape, dtype=jnp.float32):
  """torch's default init, with the first `in` filters set to the identity
  (a (kh, kw, in, out) kernel, out >= in)."""
  kh, kw, cin, cout = shape
  kernel = torch_uniform(key, shape, dtype)
  identity = jnp.zeros((kh, kw, cin, cin), dtype).at[kh // 2, kw // 2].set(
      jnp.eye(cin, dtype=dtype))
  return kernel.at[..., :min(cin, cout)].set(identity[..., :min(cin, cout)])


class Whitening(nn.Module):
  """A 2x2 convolution with fixed, data-derived filters (see the module
  docstring) and a learned bias."""
  features: int = 24
  # The kernel comes from data, not from a scheme (train/kernel_init.py).
  kernel_layout: ClassVar[str] = "own"

  @nn.compact
  def __call__(self, x):
    return layers.Conv(self.features, WHITEN_PATCH, padding="VALID",
                       kernel_init=torch_uniform, name="conv")(x)


def whitening_kernel(images: np.ndarray, features: int) -> np.ndarray:
  """(2, 2, C, features) filters whitening the 2x2 patches of `images`
  (N, H, W, C): the top features/2 eigenvectors of the patches' (uncentred)
  covariance, scaled by 1/sqrt(eigenvalue + eps), then their negatives."""
  images = np.asarray(images, np.float64)
  n, h, w, c = images.shape
  p = WHITEN_PATCH
  patches = np.stack([images[:, i:h - p + 1 + i, j:w - p + 1 + j]
                      for i in range(p) for j in range(p)], axis=3)
  flat = patches.reshape(-1, p * p * c)  # (patches, (i, j, c))
  covariance = flat.T @ flat / len(flat)
  values, vectors = np.linalg.eigh(covariance)  # ascending
  half = features // 2
  values, vectors = values[::-1][:half], vectors[:, ::-1][:, :half]
  filters = vectors / np.sqrt(values + WHITEN_EPS)  # ((i, j, c), half)
  filters = np.concatenate([filters, -filters], axis=1)
  return filters.reshape(p, p, c, features).astype(np.float32)


class ScaledBias(nn.Module):
  """x + scale * b, with b a learned (channels,) vector started at zero."""
  scale: float = 8.0

  @nn.compact
  def __call__(self, x):
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return x + (self.scale * bias).astype(x.dtype)


class ScaledBiasNorm(nn.Module):
  """BatchNorm without scale whose bias is stored divided by `bias_scale`."""
  momentum: float = 0.6
  epsilon: float = 1e-12
  bias_scale: float = 8.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = layers.batch_norm(train=train, momentum=self.momentum, epsilon=self.epsilon,
                          use_scale=False, use_bias=False, dtype=self.dtype,
                          name="bn")(x)
    return ScaledBias(self.bias_scale, name="shift")(x)


class AirbenchNet(nn.Module):
  """airbench94's network (module docstring)."""
  num_classes: int = 10  # 0: the pooled 256 features.
  widths: tuple[int, int, int] = (64, 256, 256)
  whiten_features: int = 24
  bn_momentum: float = 0.6  # flax's convention: the share the average keeps
  bias_scale: float = 8.0  # the norm biases learn bias_scale**2 times faster
  head_scale: float = 1 / 9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    conv = functools.partial(layers.Conv, kernel_size=3, padding="SAME",
                             use_bias=False, kernel_init=dirac_partial_init,
                             dtype=self.dtype)
    norm = functools.partial(ScaledBiasNorm, momentum=self.bn_momentum,
                             bias_scale=self.bias_scale, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = nn.gelu(Whitening(self.whiten_features, name="whiten")(x), approximate=False)
    for i, width in enumerate(self.widths, start=1):
      x = conv(width, name=f"block{i}_conv1")(x)
      x = nn.max_pool(x, (2, 2), (2, 2))
      x = nn.gelu(norm(name=f"block{i}_norm1")(x, train=train), approximate=False)
      x = conv(width, name=f"block{i}_conv2")(x)
      x = nn.gelu(norm(name=f"block{i}_norm2")(x, train=train), approximate=False)
    x = jnp.max(x, axis=(1, 2))  # 3x3 -> 1x1 for a 32x32 input
    if not self.num_classes:
      return x
    x = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_uniform,
                 dtype=self.dtype, name="head")(x)
    return x * self.head_scale

  @nn.nowrap
  def init_from_data(self, variables: dict, images: np.ndarray) -> dict:
    """`variables` with the whitening filters computed from `images`
    (normalised training images, N x 32 x 32 x 3; the paper uses 5,000)."""
    kernel = whitening_kernel(images, self.whiten_features)
    params = dict(variables["params"])
    whiten = dict(params["whiten"])
    whiten["conv"] = dict(whiten["conv"], kernel=jnp.asarray(kernel))
    params["whiten"] = whiten
    return {**variables, "params": params}


register_model("airbench94", input_shape=(32, 32, 3),
               description="airbench94-style fast CIFAR-10 net (Jordan 2024)")(
                   AirbenchNet)
