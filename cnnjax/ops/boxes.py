"""Boxes for detection, with torchvision.ops' names and semantics, in JAX
with fixed shapes (so they run under `jit`).

Boxes are (..., 4) arrays [x1, y1, x2, y2] in pixels, x2 >= x1 and y2 >= y1.

- `box_area`, `box_iou`: as torchvision (an area is (x2 - x1) (y2 - y1),
  no +1; the IoU of two empty boxes is 0/0 = nan, as there).
- `encode_boxes` / `decode_boxes`: Faster R-CNN's box coder
  (torchvision.models.detection._utils.BoxCoder): centre offsets relative
  to the anchor's size and log size ratios, each times a weight; decoding
  clips the log ratios at log(1000 / 16) before exp.
- `clip_boxes_to_image`, `remove_small_boxes` (as a mask: shapes stay).
- `nms(boxes, scores, iou_threshold, max_output_size)`: greedy suppression
  in decreasing score order (ties keep their input order); a box is dropped
  when its IoU with a kept, higher-scoring box is > iou_threshold. Returns
  (indices, valid): `max_output_size` indices into `boxes` in the order
  kept, padded with -1 where `valid` is False. torchvision returns only the
  kept indices; `indices[valid]` is that, cut at max_output_size.
- `batched_nms`: nms within each category (torchvision's trick: boxes of
  category c are moved by c * (max coordinate + 1) so that categories never
  overlap), same outputs as `nms`.

Bad input, where it can be seen (concrete arrays): boxes with x2 < x1 or
y2 < y1 and a negative max_output_size are refused in one sentence.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.errors import CnnjaxError

# decode_boxes: log size ratios are clipped here before exp (torchvision's).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def check_boxes(boxes, what: str = "boxes") -> None:
  """Raises CnnjaxError when concrete `boxes` (..., 4) have x2 < x1 or
  y2 < y1, or are not (..., 4); traced boxes are not checked."""
  if boxes.shape[-1:] != (4,):
    raise CnnjaxError(f"{what} must be (..., 4) arrays [x1, y1, x2, y2], got "
                      f"shape {tuple(boxes.shape)}")
  if isinstance(boxes, jax.core.Tracer):
    return
  b = np.asarray(boxes).reshape(-1, 4)
  bad = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
  if bad.size:
    i = int(bad[0])
    raise CnnjaxError(f"{what}[{i}] = {b[i].tolist()} has x2 < x1 or y2 < y1 "
                      f"({bad.size} such box(es)); boxes are [x1, y1, x2, y2]")


def box_area(boxes: jax.Array) -> jax.Array:
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
  """(N, 4), (M, 4) -> (N, M) intersection over union."""
  area1, area2 = box_area(boxes1), box_area(boxes2)
  lt = jnp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
  rb = jnp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  wh = jnp.maximum(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  return inter / (area1[:, None] + area2[None, :] - inter)


def encode_boxes(boxes: jax.Array, anchors: jax.Array,
                 weights=(1.0, 1.0, 1.0, 1.0)) -> jax.Array:
  """Regression targets (..., 4) that turn `anchors` into `boxes`:
  (wx dx / w_a, wy dy / h_a, ww log(w / w_a), wh log(h / h_a)), with dx, dy
  the centres' offsets (torchvision's `encode_boxes`, reference = boxes)."""
  wx, wy, ww, wh = weights
  aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
  ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
  bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
  bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
  return jnp.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                    ww * jnp.log(bw / aw), wh * jnp.log(bh / ah)], axis=-1)


def decode_boxes(codes: jax.Array, anchors: jax.Array,
                 weights=(1.0, 1.0, 1.0, 1.0)) -> jax.Array:
  """The boxes (..., 4) that `codes` (from `encode_boxes`) make of `anchors`
  (torchvision's BoxCoder.decode_single, for one box per anchor)."""
  wx, wy, ww, wh = weights
  anchors = anchors.astype(codes.dtype)
  aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
  ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
  dx, dy = codes[..., 0] / wx, codes[..., 1] / wy
  dw = jnp.minimum(codes[..., 2] / ww, BBOX_XFORM_CLIP)
  dh = jnp.minimum(codes[..., 3] / wh, BBOX_XFORM_CLIP)
  cx, cy = dx * aw + ax, dy * ah + ay
  half_w, half_h = 0.5 * (jnp.exp(dw) * aw), 0.5 * (jnp.exp(dh) * ah)
  return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def clip_boxes_to_image(boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Boxes with x in [0, width] and y in [0, height]; size = (height, width)."""
  height, width = size
  x = jnp.clip(boxes[..., 0::2], 0, width)
  y = jnp.clip(boxes[..., 1::2], 0, height)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def remove_small_boxes(boxes: jax.Array, min_size: float) -> jax.Array:
  """A mask: True for boxes at least min_size wide and high."""
  return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & \
      ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def _check_max_output(max_output_size) -> int:
  if not isinstance(max_output_size, (int, np.integer)) or max_output_size < 0:
    raise CnnjaxError(f"max_output_size must be a non-negative int (the padded "
                      f"output length), got {max_output_size!r}")
  return int(max_output_size)


def nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float,
        max_output_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Greedy non-maximum suppression (module docstring): (indices, valid),
  each of length max_output_size (default: every box)."""
  check_boxes(boxes)
  n = boxes.shape[0]
  max_output_size = _check_max_output(n if max_output_size is None else max_output_size)
  if n == 0 or max_output_size == 0:
    return (jnp.full((max_output_size,), -1, jnp.int32),
            jnp.zeros((max_output_size,), bool))
  # Decreasing score, ties in input order (a stable sort of -score).
  order = jnp.argsort(-scores, stable=True)
  ordered = boxes[order]
  iou = box_iou(ordered, ordered)
  later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
  suppresses = (iou > iou_threshold) & later  # nan (empty boxes) suppresses nothing

  def visit(i, state):
    keep, removed = state
    kept = ~removed[i]
    keep = keep.at[i].set(kept)
    removed = removed | (suppresses[i] & kept)
    return keep, removed

  keep, _ = lax.fori_loop(0, n, visit, (jnp.zeros(n, bool), jnp.zeros(n, bool)))
  # The kept boxes' positions, in order, padded to max_output_size.
  rank = jnp.where(keep, jnp.arange(n), n)
  chosen = jnp.sort(rank)[:max_output_size]
  if chosen.shape[0] < max_output_size:
    chosen = jnp.pad(chosen, (0, max_output_size - chosen.shape[0]), constant_values=n)
  valid = chosen < n
  indices = jnp.where(valid, order[jnp.minimum(chosen, n - 1)], -1)
  return indices.astype(jnp.int32), valid


def batched_nms(boxes: jax.Array, scores: jax.Array, categories: jax.Array,
                iou_threshold: float, max_output_size: int | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """nms within each category (torchvision's coordinate offset trick)."""
  check_boxes(boxes)
  if boxes.shape[0] == 0:
    return nms(boxes, scores, iou_threshold, max_output_size)
  offsets = categories.astype(boxes.dtype) * (jnp.max(boxes) + 1)
  return nms(boxes + offsets[:, None], scores, iou_threshold, max_output_size)
