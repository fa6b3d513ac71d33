"""One-dimensional CNNs for signals laid out as (batch, length, channels)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.models.registry import register_model


class Conv1DNet(nn.Module):
  """A stack of strided 1D convolutions with ReLU, then a linear classifier.

  The defaults are the MNIST-1D reference CNN (Greydanus & Kobak): three
  convolutions of 25 channels, kernels 5/3/3, stride 2, zero padding 1, so a
  40-sample signal shrinks to 19, 10 and 5 positions; 5 x 25 features feed the
  classifier, 5,210 parameters in all.
  """
  num_classes: int = 10
  features: Sequence[int] = (25, 25, 25)
  kernel_sizes: Sequence[int] = (5, 3, 3)
  strides: Sequence[int] = (2, 2, 2)
  padding: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    if x.ndim == 2:  # (B, L): a single-channel signal.
      x = x[..., None]
    for i, (f, k, s) in enumerate(zip(self.features, self.kernel_sizes,
                                      self.strides)):
      x = nn.Conv(f, (k,), strides=(s,), padding=[(self.padding, self.padding)],
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  name=f"conv{i + 1}")(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model("mnist1d_cnn", input_shape=(40, 1))(Conv1DNet)
