"""Classifier heads: pool the feature maps, then a linear softmax classifier."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError
from cnnjax.layers.pooling import global_avg_pool, global_max_pool

_POOLS = ("avg", "max", "flatten")


def softmax_probabilities(logits):
  """Class probabilities from logits: softmax over the last axis."""
  return jax.nn.softmax(logits, axis=-1)


class ClassifierHead(nn.Module):
  """Feature maps (B, *spatial, C) -> logits (B, num_classes).

  Global average or max pooling over the spatial dims (or flattening them
  with `pool='flatten'`), dropout (only when `train=True`; needs the
  'dropout' rng), then a Dense layer named `fc`. It returns logits: the
  softmax belongs to the loss, or `softmax_probabilities` for predictions.
  Already-flat (B, F) inputs skip the pooling.
  """
  num_classes: int
  pool: str = "avg"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.pool not in _POOLS:
      raise CnnjaxError(f"ClassifierHead pool must be one of {', '.join(_POOLS)}"
                        f", got {self.pool!r}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise CnnjaxError(f"dropout_rate must be in [0, 1), got "
                        f"{self.dropout_rate!r}.")
    if x.ndim > 2:
      if self.pool == "avg":
        x = global_avg_pool(x)  # (B, C)
      elif self.pool == "max":
        x = global_max_pool(x)  # (B, C)
      else:
        x = x.reshape((x.shape[0], -1))  # (B, prod(spatial) * C)
    if self.dropout_rate > 0.0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="fc")(x)
