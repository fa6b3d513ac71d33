"""Recurrent baselines for sequences laid out as (batch, time, features)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model


class GRUClassifier(nn.Module):
  """A (bidirectional) GRU whose outputs at every time step feed a classifier.

  The defaults are the MNIST-1D GRU baseline: 6 hidden units per direction
  over the 40 time steps, all 40 x 12 outputs flattened into a linear layer.
  Flax's GRUCell omits the two recurrent biases that PyTorch's GRU adds to the
  reset and update gates (they are redundant with the input biases), so this
  model has 5,110 parameters where the PyTorch reference has 5,134.

  `weight_init='torch'` draws every GRU weight and bias from U(-1/sqrt(H), 1/sqrt(H))
  as PyTorch does, instead of Flax's LeCun-normal / orthogonal / zero init.
  """
  num_classes: int = 10
  hidden_size: int = 6
  bidirectional: bool = True
  weight_init: str = "flax"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    if x.ndim == 2:
      x = x[..., None]

    def rnn(name):
      inits = {}
      if self.weight_init == "torch":
        bound = 1.0 / self.hidden_size ** 0.5
        uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
            key, shape, dtype, -bound, bound)
        inits = dict(kernel_init=uniform, recurrent_kernel_init=uniform,
                     bias_init=uniform)
      elif self.weight_init != "flax":
        raise CnnjaxError(f"GRUClassifier.weight_init must be 'flax' or 'torch', got '{self.weight_init}'")
      cell = nn.GRUCell(self.hidden_size, dtype=self.dtype,
                        param_dtype=self.param_dtype, **inits)
      return nn.RNN(cell, name=name)

    if self.bidirectional:
      h = nn.Bidirectional(rnn("forward"), rnn("backward"))(x)
    else:
      h = rnn("forward")(x)
    h = h.reshape((h.shape[0], -1))  # (B, T * hidden)
    return layers.classify(h, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model(
    "mnist1d_gru", input_shape=(40, 1),
    description="MNIST-1D GRU baseline: bidirectional, 6 units, PyTorch-style "
    "init")(functools.partial(GRUClassifier, weight_init="torch"))
