"""Fully connected baselines: logistic regression and the MLP."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.models.registry import register_model


class LogisticRegression(nn.Module):
  """Multinomial logistic regression: one dense layer on the flattened input."""
  num_classes: int = 10
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    x = x.reshape((x.shape[0], -1))
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


class MLP(nn.Module):
  """Multilayer perceptron on the flattened input (ReLU by default).

  With `residual`, every hidden layer after the first adds its input back
  (h = h + relu(W h + b)), as in the MNIST-1D reference MLP. `activation`
  names the hidden layers' nonlinearity (layers.get_activation: 'tanh',
  'sigmoid', ...), e.g. for a deep plain MLP whose initialization matters
  (experiments/claims/initialization.py).
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (100, 100)
  residual: bool = False
  dropout_rate: float = 0.0
  activation: str = "relu"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    act = layers.get_activation(self.activation)
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden_sizes):
      h = act(nn.Dense(width, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"dense{i + 1}")(x))
      x = x + h if (self.residual and i > 0 and x.shape[-1] == width) else h
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


# MNIST-1D baselines (Greydanus & Kobak): 40-sample signals, 10 classes.
register_model("logistic_regression", input_shape=(40, 1))(LogisticRegression)
register_model(
    "mlp", input_shape=(40, 1),
    description="Two hidden ReLU layers of 100 units")(MLP)
register_model(
    "mnist1d_mlp", input_shape=(40, 1),
    description="MNIST-1D reference MLP: 100-100 ReLU, residual second layer "
    "(15,210 parameters)")(
        functools.partial(MLP, hidden_sizes=(100, 100), residual=True))
