"""Four ways to compute the same N-D convolution, for teaching and checking.

Every function takes channels-last arrays exactly like `lax.conv_general_dilated`
with dimension numbers ('NWC', 'WIO', 'NWC'), ('NHWC', 'HWIO', 'NHWC') or
('NDHWC', 'DHWIO', 'NDHWC'):

    x: (B, *spatial, C_in)    w: (*kernel, C_in // groups, C_out)

and returns (B, *out_spatial, C_out). The number of spatial dims is the rank of
the kernel minus two. As everywhere in deep learning, "convolution" means
cross-correlation (the kernel is not flipped):

    out[b, o, co] = sum_{k, ci} x_padded[b, o * s + k * d, ci] * w[k, ci, co]

All four are plain jax.numpy, jit-able and differentiable:

  conv_lax     the reference, one call to `lax.conv_general_dilated`.
  conv_direct  the definition: a Python loop over the F^N kernel offsets, each
               a strided slice of the padded input times one weight slice.
  conv_im2col  all those slices stacked into patches, then one matmul.
  conv_fft     the convolution theorem: a product in the frequency domain.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.errors import CnnjaxError

IntOrSeq = Union[int, Sequence[int]]
Padding = Union[str, int, Sequence[int], Sequence[tuple[int, int]]]

# Reference maths: no TF32/bf16 shortcuts on accelerators (no-op on CPU).
PRECISION = lax.Precision.HIGHEST


class ConvArgs(NamedTuple):
  """Convolution arguments normalized to one entry per spatial dim."""
  in_spatial: tuple[int, ...]
  kernel: tuple[int, ...]
  stride: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]  # explicit (lo, hi) per spatial dim
  dilation: tuple[int, ...]
  groups: int
  in_channels: int
  out_channels: int

  @property
  def ndim(self) -> int:
    return len(self.kernel)

  @property
  def kernel_eff(self) -> tuple[int, ...]:
    """Extent of the dilated kernel: (F - 1) * d + 1."""
    return tuple((f - 1) * d + 1 for f, d in zip(self.kernel, self.dilation))

  @property
  def padded(self) -> tuple[int, ...]:
    return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_spatial, self.padding))

  @property
  def out_spatial(self) -> tuple[int, ...]:
    """(W + P_lo + P_hi - F_eff) // S + 1 per spatial dim."""
    return tuple((p - fe) // s + 1
                 for p, fe, s in zip(self.padded, self.kernel_eff, self.stride))


def _as_int(value, name: str) -> int:
  if isinstance(value, bool):
    raise CnnjaxError(f"{name} must be an integer, got {value!r}")
  try:
    return operator.index(value)
  except TypeError:
    raise CnnjaxError(f"{name} must be an integer, got {value!r}") from None


def as_int_tuple(value: IntOrSeq, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
  """An int or a length-n sequence of ints as a tuple, each at least `minimum`."""
  if isinstance(value, Sequence) and not isinstance(value, str):
    if len(value) != n:
      raise CnnjaxError(f"{name} needs one value per spatial dim ({n}), got {list(value)}")
    values = tuple(_as_int(v, name) for v in value)
  else:
    values = (_as_int(value, name),) * n
  if any(v < minimum for v in values):
    raise CnnjaxError(f"{name} must be at least {minimum}, got {values}")
  return values


def normalize_padding(padding: Padding, in_spatial: Sequence[int],
                      window: Sequence[int], stride: Sequence[int]
                      ) -> tuple[tuple[int, int], ...]:
  """Explicit (lo, hi) pairs from an int, per-dim ints, pairs, 'SAME' or 'VALID'.

  `window` is the effective (dilated) window extent; 'SAME' means what lax
  means, also for stride > 1: out = ceil(W / S), extra padding on the high side.
  """
  n = len(in_spatial)
  if isinstance(padding, str):
    mode = padding.upper()
    if mode not in ("SAME", "VALID"):
      raise CnnjaxError(f"padding must be 'SAME', 'VALID', an int or (lo, hi) pairs, "
                        f"got {padding!r}")
    pads = lax.padtype_to_pads(tuple(in_spatial), tuple(window), tuple(stride), mode)
    return tuple((int(lo), int(hi)) for lo, hi in pads)
  if isinstance(padding, Sequence):
    if len(padding) != n:
      raise CnnjaxError(f"padding needs one entry per spatial dim ({n}), got {padding!r}; "
                        f"write a single 1-D (lo, hi) pair as ((lo, hi),)")
    pairs = []
    for p in padding:
      if isinstance(p, Sequence) and not isinstance(p, str):
        if len(p) != 2:
          raise CnnjaxError(f"each padding pair must be (lo, hi), got {p!r}")
        pairs.append((_as_int(p[0], "padding"), _as_int(p[1], "padding")))
      else:
        pairs.append((_as_int(p, "padding"),) * 2)
  else:
    pairs = [(_as_int(padding, "padding"),) * 2] * n
  if any(lo < 0 or hi < 0 for lo, hi in pairs):
    raise CnnjaxError(f"padding must not be negative, got {pairs}")
  return tuple(pairs)


def normalize_conv_args(x_shape: Sequence[int], w_shape: Sequence[int], *,
                        stride: IntOrSeq = 1, padding: Padding = 0,
                        dilation: IntOrSeq = 1, groups: int = 1) -> ConvArgs:
  """Checks shapes and turns the flexible arguments into per-dim tuples."""
  x_shape, w_shape = tuple(x_shape), tuple(w_shape)
  n = len(w_shape) - 2
  if n < 1:
    raise CnnjaxError(f"the kernel must have shape (*kernel, C_in // groups, C_out), "
                      f"got {w_shape}")
  if len(x_shape) != n + 2:
    raise CnnjaxError(f"a {n}-D kernel {w_shape} needs an input of rank {n + 2} "
                      f"(B, *spatial, C_in), got {x_shape}")
  groups = _as_int(groups, "groups")
  if groups < 1:
    raise CnnjaxError(f"groups must be at least 1, got {groups}")
  c_in, c_out = x_shape[-1], w_shape[-1]
  if c_in % groups:
    raise CnnjaxError(f"input channels {c_in} are not divisible by groups={groups}")
  if c_out % groups:
    raise CnnjaxError(f"output channels {c_out} are not divisible by groups={groups}")
  if w_shape[-2] != c_in // groups:
    raise CnnjaxError(f"the kernel's input-channel dim is {w_shape[-2]} but C_in / groups "
                      f"= {c_in} / {groups} = {c_in // groups}")
  kernel = w_shape[:-2]
  if any(f < 1 for f in kernel):
    raise CnnjaxError(f"the kernel has an empty spatial dim: {w_shape}")
  stride = as_int_tuple(stride, n, "stride")
  dilation = as_int_tuple(dilation, n, "dilation")
  in_spatial = x_shape[1:-1]
  kernel_eff = tuple((f - 1) * d + 1 for f, d in zip(kernel, dilation))
  pads = normalize_padding(padding, in_spatial, kernel_eff, stride)
  for i, (size, (lo, hi), fe) in enumerate(zip(in_spatial, pads, kernel_eff)):
    if fe > size + lo + hi:
      raise CnnjaxError(f"the kernel (size {fe} after dilation) is bigger than the padded "
                        f"input (size {size + lo + hi}) along spatial dim {i}")
  return ConvArgs(in_spatial, kernel, stride, pads, dilation, groups, c_in, c_out)


def pad_spatial(x: jax.Array, pads: Sequence[tuple[int, int]], value=0) -> jax.Array:
  """Pads the spatial axes of (B, *spatial, C) with (lo, hi) pairs."""
  if not any(lo or hi for lo, hi in pads):
    return x
  return jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=value)


def dilate(a: jax.Array, factors: Sequence[int], axes: Sequence[int]) -> jax.Array:
  """Inserts `factor - 1` zeros between neighbouring elements along each axis."""
  config = [(0, 0, 0)] * a.ndim
  for axis, f in zip(axes, factors):
    config[axis] = (0, 0, f - 1)
  return lax.pad(a, jnp.zeros((), a.dtype), config)


def window_index(offset: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                 out_spatial: Sequence[int]) -> tuple[slice, ...]:
  """Index of xp[:, o * s + k * d, :] for all outputs o at one kernel offset k."""
  spatial = tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                  for k, s, d, o in zip(offset, stride, dilation, out_spatial))
  return (slice(None), *spatial, slice(None))


def window_views(xp: jax.Array, window: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int], out_spatial: Sequence[int]
                 ) -> Iterator[tuple[tuple[int, ...], jax.Array]]:
  """Yields (k, xp[:, o * s + k * d, :]) for every window offset k, row-major.

  Each view has shape (B, *out_spatial, C): the input element that kernel tap
  k meets, for every output position at once.
  """
  extent = tuple((o - 1) * s + 1 for o, s in zip(out_spatial, stride))
  sizes = (xp.shape[0], *extent, xp.shape[-1])
  every_s = (slice(None), *(slice(None, None, s) for s in stride), slice(None))
  for k in itertools.product(*(range(f) for f in window)):
    start = (0, *(ki * d for ki, d in zip(k, dilation)), 0)
    # Same values as xp[window_index(k, ...)], but a dynamic slice plus one fixed
    # strided slice: run eagerly, every offset (and its gradient) then reuses
    # the same compiled ops instead of compiling a new slice per offset.
    yield k, lax.dynamic_slice(xp, start, sizes)[every_s]


def conv_lax(x: jax.Array, w: jax.Array, *, stride: IntOrSeq = 1, padding: Padding = 0,
             dilation: IntOrSeq = 1, groups: int = 1) -> jax.Array:
  """The reference: `lax.conv_general_dilated` with channels-last layouts."""
  args = normalize_conv_args(x.shape, w.shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups)
  spatial = "DHW"[-args.ndim:] if args.ndim <= 3 else None
  if spatial is None:  # lax accepts any rank given explicit layouts as tuples
    dn = lax.ConvDimensionNumbers(
        lhs_spec=(0, x.ndim - 1, *range(1, x.ndim - 1)),
        rhs_spec=(w.ndim - 1, w.ndim - 2, *range(w.ndim - 2)),
        out_spec=(0, x.ndim - 1, *range(1, x.ndim - 1)))
  else:
    dn = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
  return lax.conv_general_dilated(
      x, w, window_strides=args.stride, padding=args.padding, rhs_dilation=args.dilation,
      dimension_numbers=dn, feature_group_count=args.groups, precision=PRECISION)


def conv_direct(x: jax.Array, w: jax.Array, *, stride: IntOrSeq = 1, padding: Padding = 0,
                dilation: IntOrSeq = 1, groups: int = 1) -> jax.Array:
  """The sliding-window definition, vectorized over outputs, looping over taps.

  For each of the F^N kernel offsets k, the strided slice xp[:, o*s + k*d, :]
  (B, *out, C_in) is multiplied by the weight slice w[k] (C_in/G, C_out) and
  accumulated. With groups G, input channel block g only meets output block g.
  """
  a = normalize_conv_args(x.shape, w.shape, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
  g, cig, cog = a.groups, a.in_channels // a.groups, a.out_channels // a.groups
  xp = pad_spatial(x, a.padding)
  taps = w.reshape(-1, cig, g, cog)                       # (K, C_in/G, G, C_out/G)
  out = None
  views = window_views(xp, a.kernel, a.stride, a.dilation, a.out_spatial)
  for i, (_, view) in enumerate(views):
    view = view.reshape(*view.shape[:-1], g, cig)         # (B, *out, G, C_in/G)
    # w[k] (C_in/G, G, C_out/G); a dynamic index for the reason in window_views.
    wk = lax.dynamic_index_in_dim(taps, i, keepdims=False)
    term = jnp.einsum("...gi,igj->...gj", view, wk, precision=PRECISION)
    out = term if out is None else out + term
  return out.reshape(*out.shape[:-2], a.out_channels)


def im2col_patches(x: jax.Array, kernel_size: IntOrSeq, *, stride: IntOrSeq = 1,
                   padding: Padding = 0, dilation: IntOrSeq = 1) -> jax.Array:
  """Patches (B, *out_spatial, K * C_in), K = prod(kernel_size), built from slices.

  The feature axis is ordered (kernel offset row-major, then channel), so that
  for groups=1 `patches @ w.reshape(K * C_in, C_out)` is the convolution.
  (`lax.conv_general_dilated_patches` orders it (channel, kernel offset).)
  """
  n = jnp.ndim(x) - 2
  kernel = as_int_tuple(kernel_size, n, "kernel_size")
  a = normalize_conv_args(x.shape, (*kernel, x.shape[-1], 1), stride=stride,
                          padding=padding, dilation=dilation)
  xp = pad_spatial(x, a.padding)
  views = [v for _, v in window_views(xp, a.kernel, a.stride, a.dilation, a.out_spatial)]
  patches = jnp.stack(views, axis=-2)                    # (B, *out, K, C_in)
  return patches.reshape(*patches.shape[:-2], -1)


def conv_im2col(x: jax.Array, w: jax.Array, *, stride: IntOrSeq = 1, padding: Padding = 0,
                dilation: IntOrSeq = 1, groups: int = 1) -> jax.Array:
  """Unfold the input into patches, then one (grouped) matrix multiply."""
  a = normalize_conv_args(x.shape, w.shape, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
  g, cig, cog = a.groups, a.in_channels // a.groups, a.out_channels // a.groups
  kk = math.prod(a.kernel)
  patches = im2col_patches(x, a.kernel, stride=a.stride, padding=a.padding,
                           dilation=a.dilation)
  out_shape = patches.shape[:-1]                         # (B, *out)
  # Split channels into groups: (B, *out, K, G, C_in/G) -> (B, *out, G, K * C_in/G).
  patches = patches.reshape(*out_shape, kk, g, cig)
  patches = jnp.moveaxis(patches, -2, -3).reshape(*out_shape, g, kk * cig)
  # (*kernel, C_in/G, G * C_out/G) -> (G, K * C_in/G, C_out/G), same (k, ci) order.
  wm = jnp.moveaxis(w.reshape(kk, cig, g, cog), 2, 0).reshape(g, kk * cig, cog)
  out = jnp.einsum("...gp,gpj->...gj", patches, wm, precision=PRECISION)
  return out.reshape(*out_shape, a.out_channels)


def next_fast_len(n: int) -> int:
  """The smallest m >= n with no prime factor above 7: a fast FFT length."""
  m = n
  while True:
    r = m
    for p in (2, 3, 5, 7):
      while r % p == 0:
        r //= p
    if r == 1:
      return m
    m += 1


def conv_fft(x: jax.Array, w: jax.Array, *, stride: IntOrSeq = 1, padding: Padding = 0,
             dilation: IntOrSeq = 1, groups: int = 1) -> jax.Array:
  """The convolution theorem, for a cross-correlation.

  With an FFT length L at least the padded input size P, IFFT(X * conj(W)) is
  the circular correlation c[o] = sum_k xp[(o + k) mod L] w[k]. For the valid
  outputs o <= P - F_eff the index never wraps, so no padding beyond P is
  needed (conj(W) is the FFT of the flipped kernel, for real w); L is rounded
  up to a fast length all the same (P = 94 = 2 * 47 transforms slowly, 96 fast).
  Dilation: zeros inserted into the kernel. Stride: computed at stride 1,
  then every S-th output kept.
  """
  a = normalize_conv_args(x.shape, w.shape, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
  n, g = a.ndim, a.groups
  cig, cog = a.in_channels // g, a.out_channels // g
  xp = pad_spatial(x, a.padding)                         # (B, *P, C_in)
  wd = dilate(w, a.dilation, range(n))                   # (*F_eff, C_in/G, C_out)
  size = tuple(next_fast_len(p) for p in a.padded)      # L >= P per spatial dim
  # rfftn zero-pads both to L first; L' = L with the last dim L // 2 + 1.
  xf = jnp.fft.rfftn(xp, s=size, axes=tuple(range(1, n + 1)))  # (B, *L', C_in)
  wf = jnp.fft.rfftn(wd, s=size, axes=tuple(range(n)))         # (*L', C_in/G, C_out)
  freq = xf.shape[1:-1]
  xf = xf.reshape(xf.shape[0], *freq, g, cig)
  wf = wf.reshape(*freq, cig, g, cog)
  # Per frequency: a (C_in/G -> C_out/G) matrix product for each group.
  yf = jnp.einsum("b...gi,...igj->b...gj", xf, jnp.conj(wf), precision=PRECISION)
  yf = yf.reshape(yf.shape[0], *freq, a.out_channels)
  y = jnp.fft.irfftn(yf, s=size, axes=tuple(range(1, n + 1)))  # (B, *L, C_out)
  y = y[window_index((0,) * n, a.stride, (1,) * n, a.out_spatial)]
  return y.astype(jnp.result_type(x, w))


CONV_IMPLEMENTATIONS = {
    "lax": conv_lax,
    "direct": conv_direct,
    "im2col": conv_im2col,
    "fft": conv_fft,
}
