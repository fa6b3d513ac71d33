"""config.model.kernel_init: every kernel of a model drawn again from one scheme.

    variables = model.init(rng, x, train=False)
    variables = from_config(config, variables, model=model, example=x)

Each model keeps its own initializers (torchvision's, its paper's) unless
config.model.kernel_init names one of `SCHEMES` (config.KERNEL_INITS): then,
after `model.init`, every parameter called 'kernel' is drawn again from that
scheme of `jax.nn.initializers`. Biases, norm scales and embeddings keep the
model's values. No model declares the option, so one pass over the
parameters honours it for every model; train/setup.py makes that pass before
`config.transfer` copies another run's arrays in (the transfer wins).

Fans. A kernel holds its input features at axis -2 and its outputs at axis
-1: Dense (in, out), Conv (*window, in / groups, out), ConvTranspose
(*window, out / groups, in, counted as torch counts it). So
`variance_scaling(in_axis=-2, out_axis=-1)` takes fan_in = prod(shape[:-1])
and fan_out = prod(window) * shape[-1], torch's `_calculate_fan_in_and_fan_out`.
Two layers store other layouts and say so with a class attribute
`kernel_layout`:

- a locally connected layer (layers/local.py) holds one kernel per output
  position, (*positions, patch, out): the positions are batch axes, so the
  fan-in is the patch, as the layer's own initializer counts it;
- LeNet-5's sparse C3 (models/lenet.py `SparseConv`) holds one kernel per
  connection of its table, (*window, connections), with a fan-in that
  differs between output maps: it keeps its own (LeCun 1998's) init.

Keys: the scheme's stream of the seed, `fold_in(key(seed), 4)` (0 is
model.init's; 1 to 3 the data order's, the augmentation's and the step's),
folded with the CRC-32 of each kernel's path ('dense1/kernel'): the same
seed draws the same kernel for the same layer, whatever the other layers.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from jax.nn import initializers

from cnnjax.errors import CnnjaxError

# The seed's stream for the kernels (see the module docstring).
KEY_STREAM = 4

# name -> factory(in_axis, out_axis, batch_axis) -> initializer; the names
# are config.base.KERNEL_INITS (which validation reads), in its order.
SCHEMES: dict[str, Callable[..., initializers.Initializer]] = {
    "lecun_normal": initializers.lecun_normal,
    "lecun_uniform": initializers.lecun_uniform,
    "glorot_normal": initializers.glorot_normal,
    "glorot_uniform": initializers.glorot_uniform,
    "he_normal": initializers.he_normal,
    "he_uniform": initializers.he_uniform,
    "he_normal_fan_out": functools.partial(
        initializers.variance_scaling, 2.0, "fan_out", "truncated_normal"),
    "he_uniform_fan_out": functools.partial(
        initializers.variance_scaling, 2.0, "fan_out", "uniform"),
    # "Small random numbers": N(0, 0.01^2) whatever the layer's size.
    "normal_0.01": lambda **axes: initializers.normal(0.01),
}

# A layer whose kernel is not laid out as Dense / Conv's says so with a class
# attribute `kernel_layout` (typing.ClassVar, not a module field), one of:
PER_POSITION = "per_position"  # (*positions, patch, out): positions are batch axes
OWN = "own"  # the layer's own initializer stays; the scheme skips it


def _layout_of(module: nn.Module) -> str | None:
  layout = getattr(type(module), "kernel_layout", None)
  if layout not in (None, PER_POSITION, OWN):
    raise CnnjaxError(f"{type(module).__name__}.kernel_layout is {layout!r}; "
                      f"known: {PER_POSITION!r}, {OWN!r}")
  return layout


def scheme(name: str, *, batch_axis: tuple[int, ...] = ()) -> initializers.Initializer:
  """The initializer `name` (one of SCHEMES) for kernels laid out (..., in, out)."""
  if name not in SCHEMES:
    raise CnnjaxError(f"unknown kernel initializer {name!r}; known: "
                      f"{', '.join(SCHEMES)}")
  return SCHEMES[name](in_axis=-2, out_axis=-1, batch_axis=batch_axis)


def kernel_key(key: jax.Array, path: tuple[str, ...]) -> jax.Array:
  """The key of the kernel at `path`: a stable hash of its names (not hash(),
  which Python salts per process)."""
  return jax.random.fold_in(key, np.uint32(zlib.crc32("/".join(path).encode())))


def layouts(model: nn.Module, example: Any) -> dict[tuple[str, ...], str]:
  """{module path: PER_POSITION or OWN} of the layers of `model` whose kernel
  is not laid out as Dense / Conv's, found by tracing its init abstractly."""
  found: dict[tuple[str, ...], str] = {}

  def record(next_fun, args, kwargs, context):
    layout = _layout_of(context.module)
    if layout:
      found[tuple(context.module.path)] = layout
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), example, train=False))
  return found


def redraw_kernels(variables: Mapping[str, Any], name: str, key: jax.Array, *,
                   layout: Mapping[tuple[str, ...], str] | None = None) -> dict:
  """`variables` with every kernel of 'params' drawn from scheme `name`.

  Args:
    variables: a model's variables ({'params': ..., 'batch_stats': ...}).
    name: one of SCHEMES; '' returns `variables` unchanged.
    key: the scheme's key; each kernel's is `kernel_key(key, path)`.
    layout: from `layouts(model, example)`; None treats every kernel of two
      or more axes as Dense / Conv's.
  """
  if not name:
    return dict(variables)
  scheme(name)  # An unknown name: one sentence, before any work.
  layout = layout or {}
  flat = traverse_util.flatten_dict(variables["params"])
  chosen = {path: layout.get(path[:-1]) for path, leaf in flat.items()
            if path[-1] == "kernel" and np.ndim(leaf) >= 2
            and layout.get(path[:-1]) != OWN}

  # Drawn op by op, not in one jit: the compiled draws are cached by shape,
  # so layers of one shape (and later runs in the process) compile nothing.
  for path, kind in chosen.items():
    leaf = flat[path]
    batch = tuple(range(leaf.ndim - 2)) if kind == PER_POSITION else ()
    flat[path] = scheme(name, batch_axis=batch)(
        kernel_key(key, tuple(str(p) for p in path)), leaf.shape, leaf.dtype)
  return {**variables, "params": traverse_util.unflatten_dict(flat)}


def from_config(config, variables: Mapping[str, Any], *, model: nn.Module,
                example: Any) -> dict:
  """`variables` with the kernels config.model.kernel_init asks for (drawn
  from config.seed's kernel stream); unchanged without one."""
  name = config.model.get("kernel_init", "") or ""
  if not name:
    return dict(variables)
  key = jax.random.fold_in(jax.random.key(config.seed), KEY_STREAM)
  return redraw_kernels(variables, name, key, layout=layouts(model, example))
