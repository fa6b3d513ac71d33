"""Region-of-interest pooling on channels-last feature maps, with
torchvision.ops' names and semantics (its C++ kernels are the definition).

    roi_align(features, rois, output_size, spatial_scale=1.0,
              sampling_ratio=-1, aligned=False)       # Mask R-CNN's RoIAlign
    roi_pool(features, rois, output_size, spatial_scale=1.0)  # Fast R-CNN's

`features` is (N, H, W, C); `rois` is (K, 5), each row [batch index, x1, y1,
x2, y2] in input pixels; `spatial_scale` maps them onto the map (1/16 for a
stride-16 map). Both return (K, out_h, out_w, C) and are differentiable in
`features` (not in the boxes, as in torchvision).

roi_align. The box, scaled (and moved by -0.5 with `aligned=True`; without
it, at least 1x1), is cut into out_h x out_w bins; each bin averages a
grid of sampling_ratio x sampling_ratio bilinear samples at the grid
cells' centres, or with sampling_ratio <= 0 ceil(bin height) x ceil(bin
width) samples (adaptive). A sample more than one pixel outside the map
(y < -1 or y > H, likewise x) counts as 0; one inside [-1, 0] is read at
0, and one past the last row or column at the last. Bilinear sampling is
separable, so each bin's average is (row weights) F (column weights): two
small matrix products per box over its image's map (memory K x H x W x C).

Under `jit` the number of samples must be static: the adaptive grid is
capped at `max_sampling_ratio` per axis (default ceil(H / out_h) by
ceil(W / out_w), exact for every box inside the map; torchvision's
pure-PyTorch fallback caps it at the map size). Called on concrete boxes the
cap is computed from them, so the result is exact for any box.

roi_pool. The box's corners are scaled and rounded (half away from zero),
the box is at least 1x1 map cells (both ends included), and bin (i, j)
covers rows floor(i h / out_h) .. ceil((i + 1) h / out_h) - 1 of it (and
likewise columns), clipped to the map; it takes the maximum, or 0 for an
empty bin. The gradient goes to the first maximal element in row-major
order, as in the kernel. The largest bin is static under `jit`
(`max_bin_size`, default the whole map; computed from concrete boxes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.ops.boxes import check_boxes


def _pair(size, what: str) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    size = (size, size)
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise CnnjaxError(f"{what} must be a positive int or (height, width), got {size!r}")
  return size


def _check(features, rois, spatial_scale) -> None:
  if features.ndim != 4:
    raise CnnjaxError(f"features must be (N, H, W, C), got shape {tuple(features.shape)}")
  if rois.ndim != 2 or rois.shape[1] != 5:
    raise CnnjaxError(f"rois must be (K, 5) rows [batch index, x1, y1, x2, y2], got "
                      f"shape {tuple(rois.shape)}")
  if not (isinstance(spatial_scale, (int, float, np.floating)) and spatial_scale > 0):
    raise CnnjaxError(f"spatial_scale must be a positive number (feature map size / "
                      f"input size), got {spatial_scale!r}")
  check_boxes(rois[:, 1:], "rois[:, 1:]")
  if not isinstance(rois, jax.core.Tracer):
    index = np.asarray(rois[:, 0])
    bad = (index < 0) | (index >= features.shape[0]) | (index != np.round(index))
    if bad.any():
      raise CnnjaxError(f"rois[:, 0] must be batch indices in 0..{features.shape[0] - 1}, "
                        f"got {index[bad][0]!r}")


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


# -- roi_align --------------------------------------------------------------------

def _axis_weights(start, bin_size, grid, max_grid: int, bins: int, size: int, dtype):
  """Per box, the (bins, size) matrix whose row b averages the bilinear
  weights of bin b's `grid` samples along one axis of length `size`."""
  sample = jnp.arange(max_grid, dtype=dtype)[None, None, :]
  grid_f = grid.astype(dtype)[:, None, None]
  # The kernel's order of operations: start + b * bin + (i + .5) * bin / grid.
  pos = (start[:, None, None] + jnp.arange(bins, dtype=dtype)[None, :, None]
         * bin_size[:, None, None] + (sample + 0.5) * bin_size[:, None, None] / grid_f)
  inside = (pos >= -1.0) & (pos <= size) & (sample < grid_f)  # (K, bins, G)
  pos = jnp.maximum(pos, 0)
  low = jnp.floor(pos).astype(jnp.int32)
  last = low >= size - 1
  low = jnp.where(last, size - 1, low)
  high = jnp.where(last, size - 1, low + 1)
  frac = jnp.where(last, 0, pos - low)
  count = jnp.maximum(grid_f, 1)
  w_low = jnp.where(inside, 1 - frac, 0) / count
  w_high = jnp.where(inside, frac, 0) / count
  cells = jnp.arange(size)
  weights = (w_low[..., None] * (low[..., None] == cells) +
             w_high[..., None] * (high[..., None] == cells))
  return weights.sum(axis=2).astype(dtype)  # (K, bins, size)


def roi_align(features: jax.Array, rois: jax.Array, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False, *,
              max_sampling_ratio: tuple[int, int] | int | None = None) -> jax.Array:
  """RoI Align (module docstring): (N, H, W, C), (K, 5) -> (K, oh, ow, C)."""
  _check(features, rois, spatial_scale)
  out_h, out_w = _pair(output_size, "output_size")
  _, height, width, _ = features.shape
  dtype = features.dtype
  boxes = rois[:, 1:].astype(dtype)
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (boxes[:, i] * spatial_scale - offset for i in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  bin_h, bin_w = roi_h / out_h, roi_w / out_w
  if sampling_ratio > 0:
    grid_h = jnp.full(rois.shape[:1], sampling_ratio, jnp.int32)
    grid_w = grid_h
    max_h = max_w = int(sampling_ratio)
  else:
    grid_h = jnp.ceil(roi_h / out_h).astype(jnp.int32)
    grid_w = jnp.ceil(roi_w / out_w).astype(jnp.int32)
    if max_sampling_ratio is not None:
      max_h, max_w = _pair(max_sampling_ratio, "max_sampling_ratio")
    elif _concrete(grid_h) and rois.shape[0]:
      max_h, max_w = max(int(jnp.max(grid_h)), 1), max(int(jnp.max(grid_w)), 1)
    else:
      max_h, max_w = math.ceil(height / out_h), math.ceil(width / out_w)
    grid_h, grid_w = jnp.minimum(grid_h, max_h), jnp.minimum(grid_w, max_w)
  rows = _axis_weights(y1, bin_h, grid_h, max_h, out_h, height, dtype)  # (K, oh, H)
  cols = _axis_weights(x1, bin_w, grid_w, max_w, out_w, width, dtype)  # (K, ow, W)
  maps = features[rois[:, 0].astype(jnp.int32)]  # (K, H, W, C)
  return jnp.einsum("kph,khwc,kqw->kpqc", rows, maps, cols,
                    precision=jax.lax.Precision.HIGHEST)


# -- roi_pool ---------------------------------------------------------------------

def _round_half_away(x):
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _bin_edges(start, end, bins: int, size: int):
  """Per box, each bin's [first, stop) cells along one axis, clipped to the map."""
  extent = jnp.maximum(end - start + 1, 1).astype(jnp.float32)
  bin_size = extent / bins
  b = jnp.arange(bins, dtype=jnp.float32)
  first = jnp.floor(b[None, :] * bin_size[:, None]).astype(jnp.int32) + start[:, None]
  stop = jnp.ceil((b[None, :] + 1) * bin_size[:, None]).astype(jnp.int32) + start[:, None]
  return jnp.clip(first, 0, size), jnp.clip(stop, 0, size)


def roi_pool(features: jax.Array, rois: jax.Array, output_size, spatial_scale: float = 1.0,
             *, max_bin_size: tuple[int, int] | int | None = None) -> jax.Array:
  """RoI max pooling (module docstring): (N, H, W, C), (K, 5) -> (K, oh, ow, C)."""
  _check(features, rois, spatial_scale)
  out_h, out_w = _pair(output_size, "output_size")
  _, height, width, channels = features.shape
  boxes = rois[:, 1:].astype(jnp.float32) * spatial_scale
  x1, y1, x2, y2 = (_round_half_away(boxes[:, i]).astype(jnp.int32) for i in range(4))
  h_first, h_stop = _bin_edges(y1, y2, out_h, height)  # (K, oh)
  w_first, w_stop = _bin_edges(x1, x2, out_w, width)  # (K, ow)
  if max_bin_size is not None:
    span_h, span_w = _pair(max_bin_size, "max_bin_size")
  elif _concrete(h_first) and rois.shape[0]:
    span_h = max(int(jnp.max(h_stop - h_first)), 1)
    span_w = max(int(jnp.max(w_stop - w_first)), 1)
  else:
    span_h, span_w = height, width
  span_h, span_w = min(span_h, height), min(span_w, width)
  # The window of each bin: span_h x span_w cells from its first one, those
  # before its stop kept.
  dy, dx = jnp.arange(span_h), jnp.arange(span_w)
  ys = h_first[:, :, None] + dy  # (K, oh, sh)
  xs = w_first[:, :, None] + dx  # (K, ow, sw)
  ok_y = ys < h_stop[:, :, None]
  ok_x = xs < w_stop[:, :, None]
  ys, xs = jnp.minimum(ys, height - 1), jnp.minimum(xs, width - 1)
  batch = rois[:, 0].astype(jnp.int32)
  # (K, oh, ow, sh, sw, C)
  window = features[batch[:, None, None, None, None],
                    ys[:, :, None, :, None], xs[:, None, :, None, :]]
  ok = ok_y[:, :, None, :, None] & ok_x[:, None, :, None, :]
  flat = window.reshape(*window.shape[:3], span_h * span_w, channels)
  ok = ok.reshape(*ok.shape[:3], span_h * span_w)
  masked = jnp.where(ok[..., None], flat, -jnp.inf)
  # The first maximum in row-major order takes the gradient, as in the kernel.
  first = jnp.argmax(masked, axis=3)  # (K, oh, ow, C)
  best = jnp.take_along_axis(flat, first[:, :, :, None, :], axis=3)[:, :, :, 0]
  empty = ~ok.any(axis=3)
  return jnp.where(empty[..., None], jnp.zeros((), features.dtype), best)
