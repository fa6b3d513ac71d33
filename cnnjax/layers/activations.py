"""Activation functions, learned activations (PReLU, Maxout) and a registry.

The plain functions are element-wise and shape-preserving. `get_activation`
turns a config string such as 'leaky_relu' into a callable.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError


def sigmoid(x):
  """The logistic function 1 / (1 + exp(-x))."""
  return jax.nn.sigmoid(x)


def tanh(x):
  """The hyperbolic tangent."""
  return jnp.tanh(x)


def relu(x):
  """max(x, 0)."""
  return jax.nn.relu(x)


def identity(x):
  """x, unchanged (a linear layer)."""
  return x


def leaky_relu(x, negative_slope: float = 0.1):
  """x for x >= 0, `negative_slope * x` otherwise.

  The default slope 0.1 is the lecture material's; torch's
  `nn.LeakyReLU` and `jax.nn.leaky_relu` default to 0.01.
  """
  return jnp.where(x >= 0, x, negative_slope * x)


def elu(x, alpha: float = 1.0):
  """x for x > 0, alpha * (exp(x) - 1) otherwise (Clevert et al. 2015)."""
  return jax.nn.elu(x, alpha)


def swish(x, beta: float = 1.0):
  """x * sigmoid(beta * x) (Ramachandran et al. 2017); beta=1 is SiLU."""
  return x * jax.nn.sigmoid(beta * x)


silu = swish  # SiLU is swish with beta = 1, the default.


def gelu(x, approximate: bool | str = False):
  """x * Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016).

  `approximate=False` (or torch's 'none') is the exact erf form;
  `approximate='tanh'` (or True) the tanh approximation
  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  """
  if approximate in (False, "none"):
    return jax.nn.gelu(x, approximate=False)
  if approximate in (True, "tanh"):
    return jax.nn.gelu(x, approximate=True)
  raise CnnjaxError(f"gelu: approximate must be False/'none' or True/'tanh', "
                    f"got {approximate!r}.")


class PReLU(nn.Module):
  """Leaky ReLU with a learned negative slope (He et al. 2015).

  Attributes:
    num_parameters: 1 for one slope shared by all channels, or the number of
      channels (the last axis) for one slope per channel, as in torch.
    negative_slope_init: the initial slope; 0.25 is torch's (and the
      paper's) default (`init` in torch; the name is taken by `Module.init`).

  The parameter is `negative_slope` of shape (num_parameters,).
  """
  num_parameters: int = 1
  negative_slope_init: float = 0.25
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.num_parameters not in (1, x.shape[-1]):
      raise CnnjaxError(f"PReLU has {self.num_parameters} slopes but the "
                        f"input has {x.shape[-1]} channels (last axis).")
    slope = self.param(
        "negative_slope",
        lambda key, shape, dtype: jnp.full(shape, self.negative_slope_init, dtype),
        (self.num_parameters,), self.param_dtype)
    x = jnp.asarray(x, self.dtype)
    # (num_parameters,) broadcasts against the channels-last axis.
    return jnp.where(x >= 0, x, jnp.asarray(slope, self.dtype) * x)


class Maxout(nn.Module):
  """Maxout units (Goodfellow et al. 2013): the max of `pieces` affine maps.

  A Dense layer (parameters under `dense`) produces features * pieces values
  on the last axis; output unit i is the max over columns
  [i * pieces, (i + 1) * pieces). (..., F_in) -> (..., features).
  """
  features: int
  pieces: int = 2
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.pieces < 1 or self.features < 1:
      raise CnnjaxError(f"Maxout needs positive features and pieces, got "
                        f"{self.features} and {self.pieces}.")
    z = nn.Dense(self.features * self.pieces, use_bias=self.use_bias,
                 dtype=self.dtype, param_dtype=self.param_dtype,
                 name="dense")(x)
    z = z.reshape(z.shape[:-1] + (self.features, self.pieces))
    return jnp.max(z, axis=-1)


ACTIVATIONS: dict[str, Callable[..., Any]] = {
    "identity": identity,
    "linear": identity,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "swish": swish,
    "silu": silu,
    "gelu": gelu,
    "gelu_tanh": functools.partial(gelu, approximate="tanh"),
}


def get_activation(name: str, **kwargs: Any) -> Callable[..., Any]:
  """The activation called `name`, with keyword arguments bound.

  E.g. `get_activation('leaky_relu', negative_slope=0.01)` or
  `get_activation('elu', alpha=0.5)`.
  """
  key = name.lower() if isinstance(name, str) else name
  if key not in ACTIVATIONS:
    raise CnnjaxError(f"unknown activation {name!r}; known: "
                      f"{', '.join(sorted(ACTIVATIONS))}.")
  fn = ACTIVATIONS[key]
  if not kwargs:
    return fn
  try:
    inspect.signature(fn).bind(None, **kwargs)
  except TypeError:
    raise CnnjaxError(f"activation {name!r} does not accept the arguments "
                      f"{sorted(kwargs)}.") from None
  return functools.partial(fn, **kwargs)
