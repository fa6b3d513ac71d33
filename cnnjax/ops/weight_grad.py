"""`lax.conv_general_dilated` with a weight gradient that runs in parallel on a CPU.

XLA's CPU backend computes a convolution's weight gradient as one
convolution whose window is the whole image (contraction over batch and
positions, a tiny output). For narrow layers that operation runs on one
core: on a 2-core machine it takes the same 16 ms with one core as with two,
for a 3x3, 16 -> 16 channel layer at batch 128 on 32x32 maps, 3x the forward
pass. Split
along the batch, the weight gradient becomes k independent convolutions that
XLA runs concurrently, each with its data in cache, and their sum is the
same gradient up to float rounding: 16 -> 7 ms for that layer (BENCHMARKS.md,
"CPU: the weight gradient").

`conv_general_dilated` is a drop-in replacement (same signature) that does
this on the CPU backend and is exactly `lax.conv_general_dilated` elsewhere
(cuDNN and TPU compute the weight gradient well). The forward pass and the
input gradient are XLA's own. `cnnjax.layers.Conv` uses it.
CNNJAX_WEIGHT_GRAD_CHUNKS=N fixes the number of chunks (1: XLA's plain
gradient), e.g. to measure the difference.
"""

from __future__ import annotations

import functools
import math
import numbers
import os

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.errors import CnnjaxError

# A chunk keeps at least this many examples; at most MAX_CHUNKS chunks for
# narrow kernels (at most NARROW input x output channel pairs), WIDE_CHUNKS
# for the others. Narrow layers gain most (a 3x3, 16 -> 16 layer at batch 128:
# 16 -> 7 ms with 8 chunks, 11 ms with 4); for wide ones 2 chunks already give
# the gain (ResNet-50 at batch 32: 3.2 -> 3.8 images/s) and every chunk is
# one more convolution to compile (ResNet-152 at batch 128 compiled in 54 s
# with 8 chunks everywhere, 21 s with none).
MIN_CHUNK, MAX_CHUNKS, WIDE_CHUNKS = 16, 8, 2
NARROW = 32 * 32
# Smaller weight gradients are not split: their chunks would cost more to
# compile (and to launch) than they save. A 3x3, 16 -> 16 layer on 32x32
# maps at batch 128 is 604 MFLOP; LeNet-5's C3 at batch 128 is 61 MFLOP.
MIN_FLOPS = 100e6


def weight_grad_chunks(batch: int, platform: str | None = None,
                       channel_pairs: int = 1) -> int:
  """How many batch chunks the weight gradient is split into (1: none).

  `channel_pairs`: input channels (per group) times output channels. A
  symbolic batch (a `jax.export` with a batch dimension of unknown size)
  gets 1: its size cannot be compared here, and XLA's own convolution is
  exact for any batch.
  """
  if not isinstance(batch, numbers.Integral):
    return 1
  if (platform or jax.default_backend()) != "cpu":
    return 1
  fixed = os.environ.get("CNNJAX_WEIGHT_GRAD_CHUNKS")
  if fixed:
    try:
      return max(1, min(batch, int(fixed)))
    except ValueError:
      raise CnnjaxError(f"CNNJAX_WEIGHT_GRAD_CHUNKS must be an integer, got "
                        f"{fixed!r}") from None
  most = MAX_CHUNKS if channel_pairs <= NARROW else WIDE_CHUNKS
  return max(1, min(most, batch // MIN_CHUNK))


def _bounds(size: int, chunks: int) -> list[tuple[int, int]]:
  edges = [round(i * size / chunks) for i in range(chunks + 1)]
  return list(zip(edges[:-1], edges[1:]))


def _pad_beforehand(lhs, rhs, spec, window_strides, padding, lhs_dilation,
                    rhs_dilation):
  """(lhs, padding), with the padding applied to lhs (and VALID returned)
  where a convolution's output is larger than its input along some axis.

  XLA's CPU weight gradient of such a convolution (a 2x2 kernel padded by 1
  on both sides, or any padding beyond the kernel's reach) takes seconds
  where the same convolution of the input padded beforehand takes
  milliseconds (64 -> 128 channels, 2x2 kernel, 32x32 maps, batch 32: 5.1 s
  against 25 ms on a 2-core Intel Xeon; both gradients 1.7 s against 50 ms on
  a 2-core AMD EPYC, BENCHMARKS.md). The result is the same: zero padding
  either way."""
  if any(d != 1 for d in (lhs_dilation or ())):
    return lhs, padding  # Transposed convolutions route themselves.
  spatial = spec.lhs_spec[2:]
  window = [rhs.shape[d] for d in spec.rhs_spec[2:]]
  dilation = rhs_dilation or (1,) * len(window)
  reach = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
  sizes = [lhs.shape[d] for d in spatial]
  if not all(isinstance(n, numbers.Integral) for n in sizes):
    return lhs, padding  # Symbolic sizes (an export): XLA's own padding.
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(sizes, reach, window_strides, padding)
  pads = [(int(lo), int(hi)) for lo, hi in padding]
  if any(p < 0 for pair in pads for p in pair):
    return lhs, padding
  grows = any((n + lo + hi - r) // s + 1 > n
              for n, (lo, hi), r, s in zip(sizes, pads, reach, window_strides))
  if not grows:
    return lhs, padding
  config = [(0, 0, 0)] * lhs.ndim
  for d, (lo, hi) in zip(spatial, pads):
    config[d] = (lo, hi, 0)
  return lax.pad(lhs, jnp.zeros((), lhs.dtype), config), [(0, 0)] * len(pads)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, whose weight gradient is batch-chunked on CPU
  (and whose input is padded beforehand where the output outgrows it)."""
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if jax.default_backend() == "cpu":
    lhs, padding = _pad_beforehand(lhs, rhs, numbers, window_strides, padding,
                                   lhs_dilation, rhs_dilation)
  conv = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  lhs_batch, out_batch = numbers.lhs_spec[0], numbers.out_spec[0]
  batch = lhs.shape[lhs_batch]
  pairs = rhs.shape[numbers.rhs_spec[0]] * rhs.shape[numbers.rhs_spec[1]]
  chunks = weight_grad_chunks(batch, channel_pairs=pairs)
  if chunks > 1:
    # The weight gradient's multiply-adds, output positions estimated from
    # the input's and the strides (cheap: no shape inference while tracing).
    positions = math.prod(lhs.shape[d] for d in numbers.lhs_spec[2:])
    positions /= math.prod(window_strides)
    if 2 * batch * positions * math.prod(rhs.shape) < MIN_FLOPS:
      chunks = 1
  if chunks == 1 or batch_group_count != 1:
    return conv(lhs, rhs)

  @jax.custom_vjp
  def chunked(lhs, rhs):
    return conv(lhs, rhs)

  def forward(lhs, rhs):
    return conv(lhs, rhs), (lhs, rhs)

  def backward(residuals, g):
    lhs, rhs = residuals
    d_lhs = jax.vjp(lambda x: conv(x, rhs), lhs)[1](g)[0]
    d_rhs = None
    for start, stop in _bounds(lhs.shape[lhs_batch], chunks):
      x = lax.slice_in_dim(lhs, start, stop, axis=lhs_batch)
      g_chunk = lax.slice_in_dim(g, start, stop, axis=out_batch)
      part = jax.vjp(lambda w, x=x: conv(x, w), rhs)[1](g_chunk)[0]
      part = part.astype(jnp.promote_types(part.dtype, jnp.float32))
      d_rhs = part if d_rhs is None else d_rhs + part
    return d_lhs, d_rhs.astype(rhs.dtype)

  chunked.defvjp(forward, backward)
  return chunked(lhs, rhs)
