"""Transposed convolution with PyTorch's `nn.ConvTranspose{1,2,3}d` meaning.

A transposed convolution is the input gradient of a convolution: each input
position adds a copy of the kernel, scaled by its value, into the output,
copies `strides` apart. It upsamples (decoders, segmentation, GAN
generators). Per spatial dim the output size is torch's

    (in - 1) * stride - 2 * padding + dilation * (kernel - 1)
        + output_padding + 1

`padding` crops that many positions from both ends of the full result;
`output_padding` adds positions at the high end, to pick one of the input
sizes that a strided convolution maps to the same output size, so (as in
torch) it must be smaller than the stride or the dilation.

Kernel layout: (*kernel_size, features // groups, in_features). That is
torch's weight (in, out // groups, *kernel) moved channels-last with the
permutation used for `Conv` kernels ((O, I, *k) -> (*k, I, O)): the kernel of
the convolution this layer transposes.

Everywhere it can run as one `lax.conv_general_dilated` ('dilated'): the
input dilated by the stride, padded by dilation * (kernel - 1) - padding on
each side (plus output_padding on the high side), convolved with the
spatially flipped kernel whose channel axes are swapped within each group.
On the CPU, without dilation or groups, two cheaper forms compute the same
numbers (`_route`):

- 'blocks', when no kernel is wider than its stride (U-Net's 2x2, stride 2):
  one matrix product, each input position's block of the output;
- 'phases' otherwise: one stride-1 convolution with one group of output
  channels per phase of the stride (the sub-pixel form), its outputs
  interleaved; on either backend (oneDNN does not take a dilated input).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError
from cnnjax.layers.conv import kernel_ndim, spatial_tuple
from cnnjax.ops import backend

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
                      3: ("NDHWC", "DHWIO", "NDHWC")}


def _non_negative_tuple(value: Any, ndim: int, what: str) -> tuple[int, ...]:
  """An int or `ndim` ints as a tuple of `ndim` non-negative ints."""
  if isinstance(value, numbers.Integral):
    value = (value,) * ndim
  try:
    ok = len(value) == ndim and all(
        isinstance(v, numbers.Integral) and v >= 0 for v in value)
  except TypeError:
    ok = False
  if not ok:
    raise CnnjaxError(f"{what} must be a non-negative int or {ndim} "
                      f"non-negative ints (one per spatial dim), got "
                      f"{value!r}.")
  return tuple(int(v) for v in value)


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1,
                               padding: int = 0, output_padding: int = 0,
                               dilation: int = 1) -> int:
  """Output length of one spatial dim (torch's formula, module docstring)."""
  return ((size - 1) * stride - 2 * padding + dilation * (kernel_size - 1)
          + output_padding + 1)


def _geometry(ndim: int, strides, padding, output_padding, dilation):
  """Per-dim tuples of the geometry arguments, checked as torch checks them."""
  strides = spatial_tuple(strides, ndim, "conv_transpose strides")
  dilation = spatial_tuple(dilation, ndim, "conv_transpose dilation")
  padding = _non_negative_tuple(padding, ndim, "conv_transpose padding")
  output_padding = _non_negative_tuple(output_padding, ndim,
                                       "conv_transpose output_padding")
  if any(op >= max(s, d) for op, s, d in zip(output_padding, strides,
                                             dilation)):
    raise CnnjaxError(f"conv_transpose output_padding {output_padding} must "
                      f"be smaller than the stride {strides} or the dilation "
                      f"{dilation} in every dim (as torch requires).")
  return strides, padding, output_padding, dilation


def _check_group_count(groups: Any) -> None:
  if not isinstance(groups, numbers.Integral) or groups < 1:
    raise CnnjaxError(f"conv_transpose groups must be a positive int, got "
                      f"{groups!r}.")


def _check_groups(groups: Any, in_features: int, features: int) -> None:
  if in_features % groups or features % groups:
    raise CnnjaxError(f"conv_transpose groups={groups} must divide both the "
                      f"input channels ({in_features}) and the output "
                      f"features ({features}).")


def _direct_kernel(kernel, groups: int = 1):
  """The kernel of the equivalent direct convolution on the dilated input.

  (*k, out // groups, in) -> (*k, in // groups, out) for
  `lax.conv_general_dilated` with `feature_group_count=groups`: flipped in
  space, in and out swapped within each group (output channel
  g * (out // groups) + b reads input channels of group g, as torch).
  """
  n = kernel.ndim - 2
  *k, out_per_group, in_features = kernel.shape
  w = jnp.flip(kernel, axis=tuple(range(n)))
  w = w.reshape(*k, out_per_group, groups, in_features // groups)
  w = w.transpose(tuple(range(n)) + (n + 2, n + 1, n))  # (*k, I/g, g, O/g)
  return w.reshape(*k, in_features // groups, groups * out_per_group)


def conv_transpose(x, kernel, strides: Any = 1, padding: Any = 0,
                   output_padding: Any = 0, dilation: Any = 1,
                   groups: int = 1, precision=None):
  """Transposed convolution of channels-last `x`, with torch's arguments.

  Args:
    x: (B, *spatial, in_features), 1 to 3 spatial dims.
    kernel: (*kernel_size, features // groups, in_features) (module
      docstring).
    strides, padding, output_padding, dilation: ints, or one int per
      spatial dim, with torch's meaning.
    groups: as in torch; divides in_features and features.
    precision: passed to `lax.conv_general_dilated`.

  Returns:
    (B, *spatial', features), spatial' from `conv_transpose_output_size`.
  """
  n = kernel.ndim - 2
  if not 1 <= n <= 3:
    raise CnnjaxError(f"conv_transpose needs a kernel of shape (1 to 3 "
                      f"spatial dims, out // groups, in), got {kernel.shape}.")
  if x.ndim != n + 2:
    raise CnnjaxError(f"a {n}D transposed convolution needs inputs of shape "
                      f"(B, {n} spatial dims, C), got {x.shape}.")
  strides, padding, output_padding, dilation = _geometry(
      n, strides, padding, output_padding, dilation)
  in_features = x.shape[-1]
  if kernel.shape[-1] != in_features:
    raise CnnjaxError(f"the conv_transpose kernel {kernel.shape} takes "
                      f"{kernel.shape[-1]} input channels, the input has "
                      f"{in_features}.")
  _check_group_count(groups)
  _check_groups(groups, in_features, kernel.shape[-2] * groups)
  kernel_size = kernel.shape[:n]
  out = tuple(conv_transpose_output_size(*args) for args in zip(
      x.shape[1:-1], kernel_size, strides, padding, output_padding, dilation))
  if any(size < 1 for size in out):
    raise CnnjaxError(f"conv_transpose of an input of spatial shape "
                      f"{x.shape[1:-1]} with padding {padding} leaves an "
                      f"empty output {out}.")
  # Low and high padding of the dilated input; negative values crop.
  pads = tuple((d * (k - 1) - p, d * (k - 1) - p + op) for k, p, op, d in zip(
      kernel_size, padding, output_padding, dilation))
  dtype = jnp.result_type(x, kernel)
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  route = _route(kernel_size, strides, dilation, groups)
  if route == "blocks":
    return _crop(_blocks(x, kernel, strides, precision), padding, out)
  if route == "phases":
    return _crop(_phases(x, kernel, strides, precision), padding, out)
  return backend.conv_general_dilated(
      x, _direct_kernel(kernel, groups),
      window_strides=(1,) * n,
      padding=pads, lhs_dilation=strides, rhs_dilation=dilation,
      dimension_numbers=_DIMENSION_NUMBERS[n], feature_group_count=groups,
      precision=precision)


def _route(kernel_size, strides, dilation, groups) -> str:
  """How `conv_transpose` computes (module docstring): 'blocks', 'phases' or
  'dilated'. The first two are for the CPU, where XLA's convolution of a
  dilated input is slow, its gradients most (forward and both gradients on
  a 2-core Xeon, batch 32: a 4x4, stride-2 layer of 64 -> 32 channels at
  32x32, 1.45 s dilated against 0.04 s as phases; a 2x2, stride-2 layer of
  256 -> 128 channels at 16x16, 3.4 s against 0.08 s as blocks, while another
  job shared the cores; BENCHMARKS.md), and where oneDNN does not take a
  dilated input."""
  if groups != 1 or any(d != 1 for d in dilation) or jax.default_backend() != "cpu":
    return "dilated"
  if all(k <= s for k, s in zip(kernel_size, strides)):
    return "blocks"
  return "phases"


def _blocks(x, kernel, strides, precision):
  """The full (uncropped) transposed convolution when no kernel is wider
  than its stride: each input position writes its own stride-sized block,
  x[q] times the kernel, zero-padded to the stride (one matrix product,
  then the blocks interleaved with the positions)."""
  k = kernel.shape[:-2]
  w = jnp.pad(kernel, [(0, s - kk) for kk, s in zip(k, strides)] + [(0, 0), (0, 0)])
  w = jnp.moveaxis(w, -1, 0)  # (in, *strides, out)
  return _interleave(jnp.tensordot(x, w, axes=1, precision=precision), strides)


def _phases(x, kernel, strides, precision):
  """The full transposed convolution as one stride-1 convolution whose
  output channels are the stride's phases (sub-pixel form): output
  s * q + r sums x[q - j] * kernel[r + s * j] over j < ceil(k / s), a
  correlation with the phase's taps reversed; the phases are then
  interleaved with the positions."""
  n = len(strides)
  b, *space, cin = x.shape
  *k, out, _ = kernel.shape
  taps = [-(-kk // s) for kk, s in zip(k, strides)]
  w = jnp.pad(kernel, [(0, s * m - kk) for kk, s, m in zip(k, strides, taps)]
              + [(0, 0), (0, 0)])
  w = w.reshape(*(v for m, s in zip(taps, strides) for v in (m, s)), out, cin)
  w = jnp.flip(w, axis=tuple(2 * i for i in range(n)))
  w = w.transpose([2 * i for i in range(n)] + [2 * n + 1]
                  + [2 * i + 1 for i in range(n)] + [2 * n])  # (*taps, in, *strides, out)
  w = w.reshape(*taps, cin, math.prod(strides) * out)
  # Padded beforehand: XLA's CPU weight gradient of a convolution whose
  # output outgrows its input takes seconds (5.1 s against 25 ms for a 2x2
  # kernel, 64 -> 128 channels at 32x32, batch 32, on a 2-core Xeon).
  x = jnp.pad(x, [(0, 0)] + [(m - 1, m - 1) for m in taps] + [(0, 0)])
  y = backend.conv_general_dilated(
      x, w, window_strides=(1,) * n, padding="VALID",
      dimension_numbers=_DIMENSION_NUMBERS[n], precision=precision)
  return _interleave(y.reshape(*y.shape[:-1], *strides, out), strides)


def _interleave(y, strides):
  """(B, *positions, *strides, C) -> (B, *(positions x strides), C): each
  position's block of stride-many outputs put in its place."""
  n = len(strides)
  b, *space = y.shape[:1 + n]
  order = [0] + [a for i in range(n) for a in (1 + i, 1 + n + i)] + [1 + 2 * n]
  return y.transpose(order).reshape(
      b, *(q * s for q, s in zip(space, strides)), y.shape[-1])


def _crop(full, padding, out):
  """torch's output from the full result: `padding` positions off the low
  end, then `out` positions (zeros past the full result's end)."""
  short = [max(0, p + o - f) for p, o, f in zip(padding, out, full.shape[1:-1])]
  if any(short):
    full = jnp.pad(full, [(0, 0)] + [(0, v) for v in short] + [(0, 0)])
  return full[(slice(None),) + tuple(slice(p, p + o) for p, o in zip(padding, out))]


class ConvTranspose(nn.Module):
  """`conv_transpose` with learned parameters: torch's ConvTranspose{1,2,3}d.

  Attributes:
    features: output channels.
    kernel_size: an int (the same in each of `ndim` spatial dims) or one int
      per spatial dim; stored as a tuple.
    strides, padding, output_padding, dilation: int or per-dim ints with
      torch's meaning (module docstring); stored as tuples.
    groups: as in torch; divides the input channels and `features`.
    use_bias: adds a (features,) bias.
    ndim: spatial dims for an int `kernel_size`; None means 2, or the length
      of a tuple `kernel_size`.
    kernel_init: the default, lecun_normal over the kernel's fan-in axis
      (features // groups) * prod(kernel_size), has torch's fan-in.

  Parameters: `kernel` (*kernel_size, features // groups, in_features) and
  `bias` (features,). Copy torch's weight in with
  `weight.permute(*range(2, w.ndim), 1, 0)`.
  """
  features: int
  kernel_size: Any
  strides: Any = 1
  padding: Any = 0
  output_padding: Any = 0
  groups: int = 1
  dilation: Any = 1
  use_bias: bool = True
  ndim: int | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  def __post_init__(self):
    # Canonicalised before flax freezes the dataclass (as `Conv` does), so
    # analysis code reads tuples and clones see the same values.
    kernel = self.kernel_size
    ndim = kernel_ndim(kernel, self.ndim, "ConvTranspose")
    if not isinstance(self.features, int) or self.features < 1:
      raise CnnjaxError(f"ConvTranspose features must be a positive int, got "
                        f"{self.features!r}.")
    _check_group_count(self.groups)
    strides, padding, output_padding, dilation = _geometry(
        ndim, self.strides, self.padding, self.output_padding, self.dilation)
    values = dict(ndim=ndim, strides=strides, padding=padding,
                  output_padding=output_padding, dilation=dilation,
                  kernel_size=spatial_tuple(kernel, ndim,
                                            "ConvTranspose kernel_size"))
    for key, value in values.items():
      object.__setattr__(self, key, value)
    super().__post_init__()

  @nn.compact
  def __call__(self, x):
    """(B, *spatial, C) -> (B, *spatial', features)."""
    if x.ndim != self.ndim + 2:
      raise CnnjaxError(f"a {self.ndim}D ConvTranspose needs inputs of shape "
                        f"(B, {self.ndim} spatial dims, C), got {x.shape}.")
    in_features = x.shape[-1]
    _check_groups(self.groups, in_features, self.features)
    kernel = self.param(
        "kernel", self.kernel_init,
        self.kernel_size + (self.features // self.groups, in_features),
        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
    y = conv_transpose(x.astype(dtype), kernel.astype(dtype), self.strides,
                       self.padding, self.output_padding, self.dilation,
                       self.groups, self.precision)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(dtype)
    return y
