"""Classifier heads: pool the feature maps, then a linear softmax classifier."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from cnnjax.errors import CnnjaxError
from cnnjax.layers.pooling import global_avg_pool, global_max_pool

_POOLS = ("avg", "max", "flatten", "none")


def softmax_probabilities(logits):
  """Class probabilities from logits: softmax over the last axis."""
  return jax.nn.softmax(logits, axis=-1)


class ClassifierHead(nn.Dense):
  """Feature maps (B, *spatial, C) -> logits (B, features).

  Global average or max pooling over the spatial dims (or flattening them
  with `pool='flatten'`; 'none' applies the classifier at every position),
  dropout (only when `train=True`; needs the 'dropout' rng), then a dense
  layer of `features` (= `num_classes`) outputs. It returns logits: the
  softmax belongs to the loss, or `softmax_probabilities` for predictions.
  Already-flat (B, F) inputs skip the pooling.

  It is an `nn.Dense` (same fields: `features`, `use_bias`, `kernel_init`,
  ...). Its weights are a child Dense named `fc_name` ('fc'), or, with
  `fc_name=None`, its own `kernel` and `bias`: then a head named 'head' has
  exactly the parameters, and the initial values, of an `nn.Dense` named
  'head', which is how every cnnjax classifier ends (see `classify`).
  """
  pool: str = "avg"
  dropout_rate: float = 0.0
  fc_name: str | None = "fc"

  @property
  def num_classes(self) -> int:
    return self.features

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.pool not in _POOLS:
      raise CnnjaxError(f"ClassifierHead pool must be one of {', '.join(_POOLS)}"
                        f", got {self.pool!r}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise CnnjaxError(f"dropout_rate must be in [0, 1), got "
                        f"{self.dropout_rate!r}.")
    if x.ndim > 2 and self.pool != "none":
      if self.pool == "avg":
        x = global_avg_pool(x)  # (B, C)
      elif self.pool == "max":
        x = global_max_pool(x)  # (B, C)
      else:
        x = x.reshape((x.shape[0], -1))  # (B, prod(spatial) * C)
    if self.dropout_rate > 0.0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    if self.fc_name is None:
      return super().__call__(x)
    dense = {f.name: getattr(self, f.name) for f in dataclasses.fields(nn.Dense)
             if f.init and f.name not in ("parent", "name")}
    return nn.Dense(**dense, name=self.fc_name)(x)


def classify(x, num_classes: int, *, name: str = "head", **dense):
  """A model's classifier: logits from a `ClassifierHead` named `name` with
  its own `kernel` and `bias` (as an `nn.Dense` of that name), applied to
  the last axis of `x`; or, for `num_classes=0`, `x` itself: the features
  (every cnnjax model's convention for "no classifier").

  Call it inside a model's compact `__call__`; `dense` are `nn.Dense`
  fields (`dtype`, `param_dtype`, ...).
  """
  if not num_classes:
    return x
  return ClassifierHead(num_classes, pool="none", fc_name=None, name=name,
                        **dense)(x)
