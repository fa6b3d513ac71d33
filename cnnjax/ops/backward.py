"""The hand-written backward rules of a convolution layer and of max pooling.

Each function returns what `jax.vjp` of the forward op returns for an upstream
gradient dy = dE/dy; the tests check that. Layouts as in `cnnjax.ops.conv`:
x (B, *spatial, C_in), w (*kernel, C_in // groups, C_out), dy (B, *out, C_out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.errors import CnnjaxError
from cnnjax.ops.conv import (PRECISION, IntOrSeq, Padding, as_int_tuple, conv_lax,
                             normalize_conv_args, normalize_padding, pad_spatial,
                             window_index, window_views)


def _check_dy(dy, expected: tuple[int, ...]) -> None:
  if tuple(dy.shape) != expected:
    raise CnnjaxError(f"the upstream gradient dy has shape {tuple(dy.shape)} but the "
                      f"forward output has shape {expected}")


def conv_weight_grad(x: jax.Array, dy: jax.Array, kernel_shape: Sequence[int], *,
                     stride: IntOrSeq = 1, padding: Padding = 0, dilation: IntOrSeq = 1,
                     groups: int = 1) -> jax.Array:
  """dE/dW: the padded input correlated with the upstream gradient.

      dW[k, ci, co] = sum_{b, o} xp[b, o * s + k * d, ci] * dy[b, o, co]

  i.e. a correlation of xp with dy in which dy's taps step by the stride s
  over the input (dy dilated by s) and the output positions k step by the
  dilation d. One term per kernel offset k, each summing over batch and all
  output positions. With groups, ci and co only pair within the same group.

  Returns an array of shape `kernel_shape` = (*kernel, C_in // groups, C_out).
  """
  kernel_shape = tuple(kernel_shape)
  a = normalize_conv_args(x.shape, kernel_shape, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
  _check_dy(dy, (x.shape[0], *a.out_spatial, a.out_channels))
  g, cig, cog = a.groups, a.in_channels // a.groups, a.out_channels // a.groups
  xp = pad_spatial(x, a.padding)
  rows = x.shape[0] * math.prod(a.out_spatial)            # batch times output positions
  dy_g = dy.reshape(rows, g, cog)
  taps = []
  for _, view in window_views(xp, a.kernel, a.stride, a.dilation, a.out_spatial):
    view = view.reshape(rows, g, cig)                     # xp[b, o*s + k*d, ci]
    tap = jnp.einsum("rgi,rgj->igj", view, dy_g, precision=PRECISION)
    taps.append(tap.reshape(cig, a.out_channels))         # (C_in/G, C_out)
  return jnp.stack(taps).reshape(kernel_shape)


def conv_input_grad(dy: jax.Array, w: jax.Array, input_shape: Sequence[int], *,
                    stride: IntOrSeq = 1, padding: Padding = 0, dilation: IntOrSeq = 1,
                    groups: int = 1) -> jax.Array:
  """dE/dX: a full convolution of the stride-dilated dy with the flipped kernel.

  1. Insert S - 1 zeros between the elements of dy (undoes the stride).
  2. Pad it by F_eff - 1 on both sides ("full" convolution), plus
     r = (W + 2P - F_eff) % S on the high side: the last r padded-input rows
     were never used by the forward pass, so their gradient is zero.
  3. Correlate with the kernel flipped in every spatial dim, input and output
     channels swapped (per group), same dilation: the gradient of the padded
     input, (B, *padded, C_in).
  4. Crop the forward padding away.
  """
  input_shape = tuple(input_shape)
  a = normalize_conv_args(input_shape, w.shape, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
  _check_dy(dy, (input_shape[0], *a.out_spatial, a.out_channels))
  n, g = a.ndim, a.groups
  cig, cog = a.in_channels // g, a.out_channels // g
  # Steps 1 and 2 in one lax.pad: (lo, hi, interior) per axis.
  config = [(0, 0, 0)]
  for fe, s, p, out in zip(a.kernel_eff, a.stride, a.padded, a.out_spatial):
    unused = p - ((out - 1) * s + fe)                    # == (p - fe) % s
    config.append((fe - 1, fe - 1 + unused, s - 1))
  config.append((0, 0, 0))
  dy_full = lax.pad(dy, jnp.zeros((), dy.dtype), config)
  # Step 3: (*kernel, C_in/G, G*C_out/G) -> flipped (*kernel, C_out/G, G*C_in/G).
  w_t = jnp.flip(w, axis=tuple(range(n))).reshape(*a.kernel, cig, g, cog)
  w_t = jnp.swapaxes(w_t, -1, -3).reshape(*a.kernel, cog, a.in_channels)
  dxp = conv_lax(dy_full, w_t, dilation=a.dilation, groups=g)  # (B, *padded, C_in)
  # Step 4.
  crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(a.padding, a.in_spatial))
  return dxp[(slice(None), *crop, slice(None))]


def _pool_args(x_shape, window, stride, padding):
  """(window, stride, (lo, hi) pads, out_spatial) for pooling over x's spatial dims."""
  n = len(x_shape) - 2
  if n < 1:
    raise CnnjaxError(f"pooling needs an input of shape (B, *spatial, C), got {tuple(x_shape)}")
  window = as_int_tuple(window, n, "window")
  stride = window if stride is None else as_int_tuple(stride, n, "stride")
  in_spatial = tuple(x_shape[1:-1])
  pads = normalize_padding(padding, in_spatial, window, stride)
  out = []
  for i, (size, (lo, hi), f, s) in enumerate(zip(in_spatial, pads, window, stride)):
    if f > size + lo + hi:
      raise CnnjaxError(f"the pooling window (size {f}) is bigger than the padded input "
                        f"(size {size + lo + hi}) along spatial dim {i}")
    out.append((size + lo + hi - f) // s + 1)
  return window, stride, pads, tuple(out)


def _pool_fill(dtype):
  """The padding value that never wins a max: -inf (or the smallest integer)."""
  if jnp.issubdtype(dtype, jnp.floating):
    return -jnp.inf
  return jnp.iinfo(dtype).min


def max_pool(x: jax.Array, window: IntOrSeq, stride: IntOrSeq | None = None,
             padding: Padding = "VALID") -> jax.Array:
  """N-D max pooling over (B, *spatial, C), padding counting as -inf.

  As `flax.linen.max_pool`, except that the stride defaults to the window
  (non-overlapping windows, as in the lecture); flax's defaults to 1.
  """
  window, stride, pads, out = _pool_args(x.shape, window, stride, padding)
  xp = pad_spatial(x, pads, _pool_fill(x.dtype))
  result = None
  for _, view in window_views(xp, window, stride, (1,) * len(window), out):
    result = view if result is None else jnp.maximum(result, view)
  return result


def max_pool_grad(x: jax.Array, dy: jax.Array, window: IntOrSeq,
                  stride: IntOrSeq | None = None, padding: Padding = "VALID") -> jax.Array:
  """dE/dX of `max_pool`: each window's dy goes to the position of its maximum.

  Ties go to the first maximal position in row-major window order, which is
  what jax.grad of `lax.reduce_window` max does (XLA's select-and-scatter
  with a >= comparison). Overlapping windows (e.g. 3x3, stride 2) that pick
  the same element add their gradients.
  """
  window, stride, pads, out = _pool_args(x.shape, window, stride, padding)
  _check_dy(dy, (x.shape[0], *out, x.shape[-1]))
  xp = pad_spatial(x, pads, _pool_fill(x.dtype))
  ones = (1,) * len(window)
  offsets, views = zip(*window_views(xp, window, stride, ones, out))
  winner = jnp.argmax(jnp.stack(views), axis=0)         # (B, *out, C); first max wins
  dxp = jnp.zeros(xp.shape, dy.dtype)
  for i, k in enumerate(offsets):
    routed = jnp.where(winner == i, dy, jnp.zeros((), dy.dtype))
    dxp = dxp.at[window_index(k, stride, ones, out)].add(routed)
  crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, x.shape[1:-1]))
  return dxp[(slice(None), *crop, slice(None))]
