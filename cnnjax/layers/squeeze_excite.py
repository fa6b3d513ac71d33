"""Squeeze-and-excitation (Hu et al. 2018): channel gates from the context."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


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
