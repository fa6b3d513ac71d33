"""LeNet-5 (LeCun et al., 1998)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.models.registry import register_model

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu, "sigmoid": nn.sigmoid}


class LeNet5(nn.Module):
  """LeNet-5 on 32x32 inputs: C1 6@5x5, S2, C3 16@5x5, S4, C5 120, F6 84, out.

  `activation='tanh', pooling='avg'` is the classic network; ReLU and max
  pooling the modern one. C3 is fully connected to S2 (the paper's sparse
  connection table is not used), and C5 is a dense layer on the 5x5x16 maps,
  which is the same as a 5x5 convolution there: 61,706 parameters for 10
  classes and one input channel.
  """
  num_classes: int = 10
  activation: str = "tanh"
  pooling: str = "avg"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    act = _ACTIVATIONS[self.activation]
    pool = {"avg": layers.AvgPool, "max": layers.MaxPool}[self.pooling]
    conv = functools.partial(layers.Conv, kernel_size=5, padding="VALID",
                             dtype=self.dtype, param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    x = act(conv(6, name="c1")(x))  # (B, 28, 28, 6)
    x = pool(2, 2, name="s2")(x)  # (B, 14, 14, 6)
    x = act(conv(16, name="c3")(x))  # (B, 10, 10, 16)
    x = pool(2, 2, name="s4")(x)  # (B, 5, 5, 16)
    x = x.reshape((x.shape[0], -1))
    x = act(dense(120, name="c5")(x))
    x = act(dense(84, name="f6")(x))
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model("lenet5", input_shape=(32, 32, 1),
               description="LeNet-5, classic: tanh and average pooling")(LeNet5)
register_model("lenet5_relu", input_shape=(32, 32, 1),
               description="LeNet-5, modern: ReLU and max pooling")(
                   functools.partial(LeNet5, activation="relu", pooling="max"))
