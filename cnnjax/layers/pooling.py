"""Pooling over 1, 2 or 3 spatial dims of channels-last inputs.

Inputs are (B, *spatial, C) with the number of spatial dims `x.ndim - 2`.
Windows, strides and int paddings follow PyTorch: an int is the same in every
spatial dim, `stride=None` means the window size, and an int padding `p` adds
`p` on both sides of every spatial dim (zeros for average pooling, -inf for
max pooling, so padding never wins a max). 'SAME' and 'VALID' are accepted
too. Each function has a Linen module twin whose attributes (`window_shape`,
`strides`, `padding`) analysis code can read through flax's interception.

`ceil_mode=True` rounds output sizes up as PyTorch (and Caffe) do:
ceil((L + 2p - k) / s) + 1 windows per dim instead of floor(...) + 1, minus
the last one if it would start at or beyond L + p (in the right padding).
The extra windows read past the padded input; max pooling ignores those
positions and average pooling leaves them out of its divisor, as torch does.
"""

from __future__ import annotations

import math

import numpy as np
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from cnnjax.errors import CnnjaxError
from cnnjax.layers.conv import check_window_fits, normalize_padding, spatial_tuple
from cnnjax.ops import pool_grad


def _spatial_ndim(x, what: str) -> int:
  n = x.ndim - 2
  if not 1 <= n <= 3:
    raise CnnjaxError(f"{what} needs inputs of shape (B, 1 to 3 spatial dims, "
                      f"C), got {x.shape}.")
  return n


def ceil_mode_padding(size: int, window: int, stride: int,
                      padding: Any = 0) -> tuple[int, int]:
  """(low, high) padding of one dim that gives torch's `ceil_mode=True`
  output size with floor-rounding pooling.

  `padding` is the user's padding of that dim, an int or a (low, high)
  pair; the result adds to its high side the positions the last window
  needs: ceil((size + low + high - window) / stride) + 1 windows, minus one
  if the last would start at or beyond size + low (torch's rule).
  """
  low, high = (padding, padding) if isinstance(padding, int) else padding
  span = size + low + high - window
  if span < 0:
    return low, high  # No window fits either way; the pooling reports it.
  out = -(-span // stride) + 1
  if (out - 1) * stride >= size + low:
    out -= 1
  return low, high + max(0, (out - 1) * stride + window - size - low - high)


def _window_args(x, window, stride, padding, what: str,
                 ceil_mode: bool = False):
  """Full-rank (window, strides, padding) for `lax.reduce_window`, and the
  high-side padding added per spatial dim by `ceil_mode`."""
  n = _spatial_ndim(x, what)
  window = spatial_tuple(window, n, f"{what} window")
  strides = window if stride is None else spatial_tuple(stride, n,
                                                        f"{what} stride")
  padding = normalize_padding(padding, n)
  if padding not in ("SAME", "VALID") and isinstance(padding, str):
    raise CnnjaxError(f"{what} supports 'SAME', 'VALID' or numeric padding, "
                      f"got {padding!r}.")
  check_window_fits(x.shape[1:-1], window, padding, f"{what} window")
  extra = (0,) * n
  if ceil_mode:
    if padding == "SAME":
      raise CnnjaxError(f"{what} with ceil_mode needs numeric or 'VALID' "
                        f"padding, got 'SAME'.")
    user = ((0, 0),) * n if padding == "VALID" else padding
    if any(max(pair) > w // 2 for pair, w in zip(user, window)):
      raise CnnjaxError(f"{what} with ceil_mode pads at most half the window "
                        f"on each side (as torch), got padding {user} for "
                        f"window {window}.")
    padding = tuple(ceil_mode_padding(size, w, s, pair) for size, w, s, pair
                    in zip(x.shape[1:-1], window, strides, user))
    extra = tuple(hi - pair[1] for (_, hi), pair in zip(padding, user))
  if not isinstance(padding, str):
    padding = ((0, 0),) + padding + ((0, 0),)
  return (1,) + window + (1,), (1,) + strides + (1,), padding, extra


def _zero(dtype) -> Any:
  """The identity of addition as a Python scalar (see `pool_grad.lowest`)."""
  return 0.0 if jnp.issubdtype(dtype, jnp.inexact) else 0


def max_pool(x, window, stride=None, padding: Any = "VALID",
             ceil_mode: bool = False):
  """Max over each window; padding is -inf. (B, *S, C) -> (B, *S', C).

  `ceil_mode` rounds the output size up as torch does (module docstring).
  """
  dims, strides, pads, _ = _window_args(x, window, stride, padding,
                                        "max_pool", ceil_mode)
  if jnp.issubdtype(x.dtype, jnp.floating):  # oneDNN's where chosen and able.
    from cnnjax.ops import backend
    return backend.max_pool(x, dims, strides, pads)
  return lax.reduce_window(x, pool_grad.lowest(x.dtype), lax.max, dims, strides, pads)


def avg_pool(x, window, stride=None, padding: Any = "VALID",
             count_include_pad: bool = True, ceil_mode: bool = False):
  """Mean over each window, zero padded.

  With `count_include_pad=True` (torch's default) every window is divided by
  its size within the padded input (its full size, except for a last window
  that `ceil_mode` lets run past the padding); with False only by the number
  of real input elements under it.
  """
  dims, strides, pads, extra = _window_args(x, window, stride, padding,
                                            "avg_pool", ceil_mode)
  zero = _zero(x.dtype)
  total = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
  if pads == "VALID" or (count_include_pad and not any(extra)):
    return total / math.prod(dims)
  spatial = x.shape[1:-1]
  if count_include_pad:
    # Ones over the user-padded input; only ceil mode's extra is left out.
    spatial = tuple(s + lo + hi - e for s, (lo, hi), e in zip(
        spatial, pads[1:-1], extra))
    pads = ((0, 0),) + tuple((0, e) for e in extra) + ((0, 0),)
  ones = jnp.ones(spatial, x.dtype)[None, ..., None]  # (1, *S, 1)
  count = lax.reduce_window(ones, zero, lax.add, dims, strides, pads)
  return total / count


def lp_pool(x, p: float, window, stride=None):
  """Power-average pooling as torch's LPPool: (sum over window of x^p)^(1/p).

  There is no padding. Like torch, no absolute value is taken: odd `p` with
  negative inputs can give a negative sum, whose fractional root is NaN (as
  in torch); use non-negative inputs (e.g. after a ReLU) or an even `p`.
  p=1 is sum pooling, p=2 the Euclidean norm of the window, p -> inf max
  pooling (for non-negative inputs).
  """
  if p <= 0:
    raise CnnjaxError(f"lp_pool needs a positive power p, got {p!r}.")
  dims, strides, pads, _ = _window_args(x, window, stride, "VALID",
                                        "lp_pool")
  total = lax.reduce_window(x ** p, _zero(x.dtype), lax.add, dims, strides,
                            pads)
  return total ** (1.0 / p)


def global_avg_pool(x, keepdims: bool = False):
  """Mean over all spatial dims: (B, *S, C) -> (B, C), or (B, 1.., C)."""
  _spatial_ndim(x, "global_avg_pool")
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def global_max_pool(x, keepdims: bool = False):
  """Max over all spatial dims: (B, *S, C) -> (B, C), or (B, 1.., C)."""
  _spatial_ndim(x, "global_max_pool")
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def _adaptive_matrix(size_in: int, size_out: int):
  """(out, in) averaging weights of PyTorch's adaptive bins: bin i covers
  [floor(i * in / out), ceil((i + 1) * in / out))."""
  m = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    lo = (i * size_in) // size_out
    hi = -((-(i + 1) * size_in) // size_out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x, output_size):
  """Average pooling to a fixed spatial size, with PyTorch's bins.

  torchvision's VGG and AlexNet pool to 7x7 / 6x6 this way before their
  classifiers so that any input size works; when the input already has the
  output size this is the identity, and a smaller input is repeated.
  """
  n = _spatial_ndim(x, "adaptive_avg_pool")
  output_size = spatial_tuple(output_size, n, "adaptive_avg_pool output size")
  for axis, size_out in enumerate(output_size, start=1):
    size_in = x.shape[axis]
    if size_in == size_out:
      continue
    m = jnp.asarray(_adaptive_matrix(size_in, size_out), x.dtype)
    x = jnp.moveaxis(jnp.tensordot(x, m, axes=([axis], [1])), -1, axis)
  return x


def _adaptive_bins(size_in: int, size_out: int):
  """(out, longest bin) input indices of PyTorch's adaptive bins, each row
  padded with its bin's first index (a repeat never changes a max and,
  coming later, never wins a tie)."""
  bins = [range((i * size_in) // size_out, -((-(i + 1) * size_in) // size_out))
          for i in range(size_out)]
  longest = max(len(b) for b in bins)
  return np.array([list(b) + [b[0]] * (longest - len(b)) for b in bins],
                  np.int32)


def adaptive_max_pool(x, output_size):
  """Max pooling to a fixed spatial size, with PyTorch's bins (those of
  `adaptive_avg_pool`).

  A max over a box is a max over one dim after another, so each spatial dim
  is pooled in turn, the last first: on ties the first element in row-major
  order wins and gets the gradient, as in torch.
  """
  n = _spatial_ndim(x, "adaptive_max_pool")
  output_size = spatial_tuple(output_size, n, "adaptive_max_pool output size")
  for axis in range(n, 0, -1):
    size_in, size_out = x.shape[axis], output_size[axis - 1]
    if size_in == size_out:
      continue
    bins = _adaptive_bins(size_in, size_out)
    windows = jnp.take(x, jnp.asarray(bins), axis=axis)  # bins -> 2 axes
    first = jnp.expand_dims(jnp.argmax(windows, axis=axis + 1), axis + 1)
    x = jnp.squeeze(jnp.take_along_axis(windows, first, axis=axis + 1),
                    axis + 1)
  return x


def channel_max_pool(x, pool_size: int):
  """Cross-channel max pooling: max over groups of `pool_size` channels.

  Channels [0, pool_size) give output channel 0, the next `pool_size`
  channel 1, and so on: (..., C) -> (..., C // pool_size). Works on any
  channels-last input.
  """
  channels = x.shape[-1]
  if not isinstance(pool_size, int) or pool_size < 1 or channels % pool_size:
    raise CnnjaxError(f"channel_max_pool: pool_size={pool_size!r} must be a "
                      f"positive int that divides the {channels} channels.")
  x = x.reshape(x.shape[:-1] + (channels // pool_size, pool_size))
  return jnp.max(x, axis=-1)


class MaxPool(nn.Module):
  """`max_pool` as a module; MaxPool(3, 2) is AlexNet's overlapping pooling."""
  window_shape: Any
  strides: Any = None
  padding: Any = "VALID"
  ceil_mode: bool = False

  def __call__(self, x):
    return max_pool(x, self.window_shape, self.strides, self.padding,
                    self.ceil_mode)


class AvgPool(nn.Module):
  """`avg_pool` as a module."""
  window_shape: Any
  strides: Any = None
  padding: Any = "VALID"
  count_include_pad: bool = True
  ceil_mode: bool = False

  def __call__(self, x):
    return avg_pool(x, self.window_shape, self.strides, self.padding,
                    self.count_include_pad, self.ceil_mode)


class LPPool(nn.Module):
  """`lp_pool` as a module (no padding, so `padding` is always 'VALID')."""
  p: float
  window_shape: Any
  strides: Any = None

  @property
  def padding(self) -> str:
    return "VALID"

  def __call__(self, x):
    return lp_pool(x, self.p, self.window_shape, self.strides)


class GlobalAvgPool(nn.Module):
  """`global_avg_pool` as a module."""
  keepdims: bool = False

  def __call__(self, x):
    return global_avg_pool(x, self.keepdims)


class GlobalMaxPool(nn.Module):
  """`global_max_pool` as a module."""
  keepdims: bool = False

  def __call__(self, x):
    return global_max_pool(x, self.keepdims)


class ChannelMaxPool(nn.Module):
  """`channel_max_pool` as a module."""
  pool_size: int

  def __call__(self, x):
    return channel_max_pool(x, self.pool_size)


class AdaptiveAvgPool(nn.Module):
  """`adaptive_avg_pool` as a module."""
  output_size: Any

  def __call__(self, x):
    return adaptive_avg_pool(x, self.output_size)


class AdaptiveMaxPool(nn.Module):
  """`adaptive_max_pool` as a module."""
  output_size: Any

  def __call__(self, x):
    return adaptive_max_pool(x, self.output_size)
