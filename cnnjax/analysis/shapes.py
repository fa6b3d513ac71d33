"""Shape, parameter and FLOP arithmetic of convolution and pooling layers.

The lecture's rule for one spatial dimension is

    W_out = (W - F + 2P) / S + 1

with a dilated filter spanning F_eff = D * (F - 1) + 1 inputs. Frameworks round
down silently when S does not divide W - F_eff + 2P; `conv_output_size` refuses
by default instead, because such a layer ignores the last input rows (the
lecture's example: a 3x3 filter at stride 3 on a 7x7 input "doesn't fit").
"""

from __future__ import annotations

import math
from typing import Sequence

from cnnjax.errors import CnnjaxError


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
  """How many inputs a dilated filter spans: D * (F - 1) + 1."""
  return dilation * (kernel_size - 1) + 1


def same_padding(input_size: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1) -> tuple[int, int]:
  """(low, high) padding of 'SAME' (output ceil(W / S)); the extra goes high."""
  out = -(-input_size // stride)
  total = max((out - 1) * stride + effective_kernel_size(kernel_size, dilation)
              - input_size, 0)
  return total // 2, total - total // 2


def _pads(padding, input_size, kernel_size, stride, dilation) -> tuple[int, int]:
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "VALID":
      return 0, 0
    if mode == "SAME":
      return same_padding(input_size, kernel_size, stride, dilation)
    raise CnnjaxError(
        f"padding must be an integer, a (low, high) pair, 'SAME' or 'VALID', "
        f"not {padding!r}")
  if isinstance(padding, int):
    lo = hi = padding
  else:
    lo, hi = padding
  if lo < 0 or hi < 0:
    raise CnnjaxError(f"padding must not be negative, got {padding!r}")
  return int(lo), int(hi)


def conv_output_size(input_size: int, kernel_size: int, stride: int = 1,
                     padding=0, dilation: int = 1, *,
                     strict: bool = True) -> int:
  """(W - F_eff + P_low + P_high) / S + 1 for one spatial dimension.

  Args:
    input_size: W.
    kernel_size: F (of a filter or pooling window).
    stride: S.
    padding: P on each side (int), a (low, high) pair, 'SAME' or 'VALID'.
    dilation: D; the filter spans D * (F - 1) + 1 inputs.
    strict: raise when S does not divide W - F_eff + 2P (the filter does not
      fit evenly); with False, round down as lax, PyTorch and Flax do.

  Raises:
    CnnjaxError: a size is not positive, the filter is larger than the padded
      input, or (strict) the filter does not fit at this stride.
  """
  for what, value in (("input size", input_size), ("kernel size", kernel_size),
                      ("stride", stride), ("dilation", dilation)):
    if int(value) != value or value < 1:
      raise CnnjaxError(f"the {what} must be a positive integer, got {value!r}")
  lo, hi = _pads(padding, input_size, kernel_size, stride, dilation)
  span = effective_kernel_size(kernel_size, dilation)
  room = input_size + lo + hi - span
  if room < 0:
    raise CnnjaxError(
        f"a filter spanning {span} does not fit an input of size {input_size} "
        f"with padding ({lo}, {hi})")
  if strict and room % stride:
    raise CnnjaxError(
        f"a {kernel_size}-wide filter with stride {stride} does not fit an input "
        f"of size {input_size} with padding ({lo}, {hi}): "
        f"({input_size} - {span} + {lo + hi}) / {stride} + 1 = "
        f"{room / stride + 1:.2f} is not an integer")
  return room // stride + 1


def _per_dim(value, ndim: int, what: str) -> tuple:
  if isinstance(value, (int, str)):
    return (value,) * ndim
  value = tuple(value)
  if len(value) != ndim:
    raise CnnjaxError(f"{what} {value!r} does not have {ndim} entries")
  return value


def conv_output_shape(input_shape: Sequence[int], kernel_size, stride=1,
                      padding=0, dilation=1, *,
                      strict: bool = True) -> tuple[int, ...]:
  """`conv_output_size` for every spatial dimension of `input_shape`."""
  ndim = len(input_shape)
  kernel_size = _per_dim(kernel_size, ndim, "kernel size")
  stride = _per_dim(stride, ndim, "stride")
  dilation = _per_dim(dilation, ndim, "dilation")
  if isinstance(padding, str):
    padding = (padding,) * ndim
  elif isinstance(padding, int):
    padding = (padding,) * ndim
  else:
    padding = _per_dim(padding, ndim, "padding")
  return tuple(
      conv_output_size(w, f, s, p, d, strict=strict)
      for w, f, s, p, d in zip(input_shape, kernel_size, stride, padding,
                               dilation))


def conv_parameters(kernel_size, in_channels: int, out_channels: int, *,
                    groups: int = 1, bias: bool = True) -> int:
  """Weights (F^N * C_in / groups * C_out) plus one bias per output channel."""
  if in_channels % groups or out_channels % groups:
    raise CnnjaxError(
        f"{groups} groups do not divide {in_channels} input and "
        f"{out_channels} output channels")
  kernel = math.prod(kernel_size) if not isinstance(kernel_size, int) else (
      kernel_size * kernel_size)
  return kernel * (in_channels // groups) * out_channels + (
      out_channels if bias else 0)


def conv_flops(output_shape: Sequence[int], kernel_size, in_channels: int,
               out_channels: int, *, groups: int = 1) -> int:
  """Floating-point operations of a convolution, counting a multiply-add as 2.

  `output_shape` is the spatial shape of the output; the bias add is not
  counted (the usual convention, as in fvcore and the papers' "FLOPs" that
  are really multiply-adds: divide by 2 to compare with those).
  """
  kernel = math.prod(kernel_size) if not isinstance(kernel_size, int) else (
      kernel_size * kernel_size)
  return 2 * math.prod(output_shape) * out_channels * kernel * (
      in_channels // groups)


def stacked_versus_single(num_layers: int = 3, kernel_size: int = 3,
                          channels: int = 64) -> dict:
  """Compares N stacked FxF convolutions (stride 1) with the single filter
  seeing the same receptive field, N * (F - 1) + 1 wide, at C channels in and
  out, without biases: the lecture's 3 * 9C^2 against 49C^2 for N=3, F=3."""
  field = num_layers * (kernel_size - 1) + 1
  return {
      "receptive_field": field,
      "stacked_parameters": num_layers * kernel_size**2 * channels**2,
      "single_kernel_size": field,
      "single_parameters": field**2 * channels**2,
  }
