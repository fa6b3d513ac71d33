"""Max pooling whose gradient XLA's CPU backend computes in a few passes.

`max_pool(x, window, strides, padding)` is `lax.reduce_window(x, -inf,
lax.max, ...)` with a `custom_vjp`. JAX's own gradient of a max pool is a
select-and-scatter, which XLA's CPU backend lowers to an indexed reduction
and a scatter; here the gradient is built from the window offsets instead:
for each offset k (row-major within the window) the strided slice x_k of the
padded input, whose equality with the output marks the windows where k holds
the maximum, the first such k per window taking the gradient (what
select-and-scatter picks), and the window's gradient placed back with an
interior-padded `lax.pad`. All of it is elementwise work XLA fuses.
Forward and backward, AMD EPYC, 2 cores (scripts/bench_max_pool.py, two
runs): ResNet's stem pool (3x3 / 2 over 32x112x112x64) 193-198 ms against
select-and-scatter's 289-337 ms; VGG's 2x2 / 2 over 32x224x224x64 98-117
against 657-849 ms; GoogLeNet's 3x3 / 1 over 32x28x28x192 32-45 against
148-170 ms. The oneDNN backend has its own kernel (cnnjax.ops.onednn.pooling).

Used on the CPU by `cnnjax.ops.backend.max_pool` for windows of up to
`MAX_WINDOW` elements; GPUs and TPUs keep select-and-scatter.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

# Larger windows unroll into as many slices: beyond this, select-and-scatter.
MAX_WINDOW = 32


def lowest(dtype):
  """The identity of max: -inf for floats, the smallest integer otherwise.

  A Python scalar, not an array: only then does `lax.reduce_window` see the
  monoid and use `reduce_window_max`, which has a gradient.
  """
  if jnp.issubdtype(dtype, jnp.inexact):
    return -float("inf")
  return int(jnp.iinfo(dtype).min)


def explicit_padding(shape, window, strides, padding) -> tuple[tuple[int, int], ...]:
  """lax's padding ('SAME', 'VALID' or (low, high) pairs, one per dim of
  `shape`) as a tuple of int pairs."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(shape, window, strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _reference(x, window, strides, padding):
  return lax.reduce_window(x, lowest(x.dtype), lax.max, window, strides, padding)


def max_pool(x, window, strides, padding):
  """`lax.reduce_window(x, -inf, lax.max, window, strides, padding)` with
  the gradient above (full-rank window, strides and padding, as lax takes
  them); other arguments than a floating x and a window of at most
  MAX_WINDOW elements get lax's own."""
  if not jnp.issubdtype(x.dtype, jnp.floating) or math.prod(window) > MAX_WINDOW:
    return _reference(x, window, strides, padding)
  pads = explicit_padding(x.shape, window, strides, padding)
  return _max_pool(x, (tuple(window), tuple(strides), pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, geometry):
  return _reference(x, *geometry)


def _forward(x, geometry):
  y = _reference(x, *geometry)
  return y, (x, y)


def _backward(geometry, residuals, dy):
  window, strides, pads = geometry
  x, y = residuals
  padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in pads])
  taken = dx = None  # taken: the windows whose maximum an earlier offset held.
  for offset in itertools.product(*(range(w) for w in window)):
    limit = [o + (n - 1) * s + 1 for o, n, s in zip(offset, y.shape, strides)]
    here = lax.slice(padded, offset, limit, strides) == y
    if taken is not None:
      here = here & ~taken
    taken = here if taken is None else taken | here
    # Back to the padded input's positions: offset, then stride - 1 between.
    part = lax.pad(jnp.where(here, dy, jnp.zeros((), dy.dtype)), jnp.zeros((), dy.dtype),
                   [(o, size - end, s - 1)
                    for o, end, s, size in zip(offset, limit, strides, padded.shape)])
    dx = part if dx is None else dx + part
  return (lax.slice(dx, [lo for lo, _ in pads],
                    [lo + n for (lo, _), n in zip(pads, x.shape)]),)


_max_pool.defvjp(_forward, _backward)
