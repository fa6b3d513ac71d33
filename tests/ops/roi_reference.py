"""NumPy references for the region ops, transcribed loop for loop from the
definitions in torchvision's C++ CPU kernels (roi_align_kernel.cpp,
roi_pool_kernel.cpp, nms_kernel.cpp), in float32 where the kernels compute
in float32. Slow and plain on purpose: they are what cnnjax.ops is checked
against where torchvision's compiled kernels do not load.

Feature maps here are (N, H, W, C), as cnnjax's; the kernels' are NCHW,
which changes nothing in the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

f32 = np.float32


def _bilinear_terms(y, x, height, width):
  """The kernel's bilinear_interpolate / pre_calc: [(row, col, weight)] x 4,
  or [] for a sample outside [-1, H] x [-1, W]."""
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return []
  y, x = max(y, f32(0)), max(x, f32(0))
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_high = y_low = height - 1
    y = f32(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_high = x_low = width - 1
    x = f32(x_low)
  else:
    x_high = x_low + 1
  ly, lx = f32(y - y_low), f32(x - x_low)
  hy, hx = f32(1) - ly, f32(1) - lx
  return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
          (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]


def _align_samples(roi, height, width, pooled, spatial_scale, sampling_ratio, aligned):
  """For each bin (ph, pw): ([(row, col, weight)], count)."""
  ph_n, pw_n = pooled
  scale = f32(spatial_scale)
  offset = f32(0.5) if aligned else f32(0)
  x1, y1, x2, y2 = (f32(v) for v in roi[1:])
  start_w, start_h = f32(x1 * scale - offset), f32(y1 * scale - offset)
  end_w, end_h = f32(x2 * scale - offset), f32(y2 * scale - offset)
  roi_w, roi_h = f32(end_w - start_w), f32(end_h - start_h)
  if not aligned:
    roi_w, roi_h = max(roi_w, f32(1)), max(roi_h, f32(1))
  bin_h, bin_w = f32(roi_h / f32(ph_n)), f32(roi_w / f32(pw_n))
  grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / f32(ph_n)))
  grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / f32(pw_n)))
  count = max(grid_h * grid_w, 1)
  out = {}
  for ph in range(ph_n):
    for pw in range(pw_n):
      terms = []
      for iy in range(grid_h):
        y = f32(start_h + f32(ph) * bin_h + f32(f32(iy + .5) * bin_h) / f32(grid_h))
        for ix in range(grid_w):
          x = f32(start_w + f32(pw) * bin_w + f32(f32(ix + .5) * bin_w) / f32(grid_w))
          terms += _bilinear_terms(y, x, height, width)
      out[ph, pw] = (terms, count)
  return out


def roi_align(features, rois, pooled, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
  features = np.asarray(features, f32)
  _, height, width, channels = features.shape
  out = np.zeros((len(rois), *pooled, channels), f32)
  for k, roi in enumerate(np.asarray(rois, f32)):
    fmap = features[int(roi[0])]
    for (ph, pw), (terms, count) in _align_samples(roi, height, width, pooled, spatial_scale,
                                                   sampling_ratio, aligned).items():
      total = np.zeros(channels, f32)
      for r, c, w in terms:
        total += w * fmap[r, c]
      out[k, ph, pw] = total / f32(count)
  return out


def roi_align_backward(grad, features_shape, rois, pooled, spatial_scale=1.0,
                       sampling_ratio=-1, aligned=False):
  """The kernel's backward: each sample adds grad / count x weight to its
  four corners."""
  _, height, width, _ = features_shape
  grad_in = np.zeros(features_shape, np.float64)
  for k, roi in enumerate(np.asarray(rois, f32)):
    b = int(roi[0])
    for (ph, pw), (terms, count) in _align_samples(roi, height, width, pooled, spatial_scale,
                                                   sampling_ratio, aligned).items():
      for r, c, w in terms:
        grad_in[b, r, c] += grad[k, ph, pw] * w / count
  return grad_in


def _c_round(v):
  return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _pool_bins(roi, height, width, pooled, spatial_scale):
  ph_n, pw_n = pooled
  scale = f32(spatial_scale)
  start_w, start_h, end_w, end_h = (_c_round(f32(f32(v) * scale)) for v in roi[1:])
  roi_w, roi_h = max(end_w - start_w + 1, 1), max(end_h - start_h + 1, 1)
  bin_h, bin_w = f32(roi_h) / f32(ph_n), f32(roi_w) / f32(pw_n)
  for ph in range(ph_n):
    for pw in range(pw_n):
      hstart = int(math.floor(f32(ph) * bin_h))
      wstart = int(math.floor(f32(pw) * bin_w))
      hend = int(math.ceil(f32(ph + 1) * bin_h))
      wend = int(math.ceil(f32(pw + 1) * bin_w))
      hstart = min(max(hstart + start_h, 0), height)
      hend = min(max(hend + start_h, 0), height)
      wstart = min(max(wstart + start_w, 0), width)
      wend = min(max(wend + start_w, 0), width)
      yield ph, pw, hstart, hend, wstart, wend


def roi_pool(features, rois, pooled, spatial_scale=1.0):
  """(output, argmax) with argmax the flat index h * W + w, -1 when empty."""
  features = np.asarray(features, f32)
  _, height, width, channels = features.shape
  out = np.zeros((len(rois), *pooled, channels), f32)
  argmax = np.full((len(rois), *pooled, channels), -1, np.int64)
  for k, roi in enumerate(np.asarray(rois, f32)):
    fmap = features[int(roi[0])]
    for ph, pw, hs, he, ws, we in _pool_bins(roi, height, width, pooled, spatial_scale):
      empty = he <= hs or we <= ws
      for c in range(channels):
        best, where = (f32(0) if empty else -np.finfo(f32).max), -1
        for h in range(hs, he):
          for w in range(ws, we):
            if fmap[h, w, c] > best:
              best, where = fmap[h, w, c], h * width + w
        out[k, ph, pw, c], argmax[k, ph, pw, c] = best, where
  return out, argmax


def roi_pool_backward(grad, features_shape, rois, argmax):
  _, _, width, _ = features_shape
  grad_in = np.zeros(features_shape, np.float64)
  for k, roi in enumerate(np.asarray(rois, f32)):
    b = int(roi[0])
    for ph, pw, c in np.ndindex(*argmax.shape[1:]):
      index = argmax[k, ph, pw, c]
      if index >= 0:
        grad_in[b, index // width, index % width, c] += grad[k, ph, pw, c]
  return grad_in


def nms(boxes, scores, iou_threshold):
  """Kept indices in decreasing score order (a stable sort: ties keep their
  input order), as the CPU kernel."""
  boxes = np.asarray(boxes, f32)
  order = np.argsort(-np.asarray(scores, f32), kind="stable")
  x1, y1, x2, y2 = boxes.T
  areas = (x2 - x1) * (y2 - y1)
  suppressed = np.zeros(len(boxes), bool)
  keep = []
  for a, i in enumerate(order):
    if suppressed[i]:
      continue
    keep.append(int(i))
    for j in order[a + 1:]:
      if suppressed[j]:
        continue
      xx1, yy1 = max(x1[i], x1[j]), max(y1[i], y1[j])
      xx2, yy2 = min(x2[i], x2[j]), min(y2[i], y2[j])
      inter = f32(max(f32(0), xx2 - xx1) * max(f32(0), yy2 - yy1))
      with np.errstate(invalid="ignore", divide="ignore"):
        ovr = inter / f32(areas[i] + areas[j] - inter)
      if ovr > iou_threshold:
        suppressed[j] = True
  return np.asarray(keep, np.int64)
