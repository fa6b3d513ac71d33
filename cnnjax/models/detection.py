"""A two-stage detector in the Faster R-CNN way (Ren et al. 2015), with
fixed shapes throughout, on any feature backbone.

    model = create_model('faster_rcnn', backbone='resnet18', num_classes=4)
    losses, state = model.apply(variables, images, targets, train=True,
                                method=model.losses, rngs={'sampling': key},
                                mutable=['batch_stats'])
    detections = model.apply(variables, images)  # boxes, scores, classes, valid

`num_classes` counts the background (class 0), as torchvision's does.
Targets are padded: 'boxes' (B, G, 4) [x1, y1, x2, y2] in input pixels,
'classes' (B, G) in 1..num_classes-1 and 'box_mask' (B, G), False for the
padding rows (an image without objects has none). Every shape depends only
on the batch's shapes and the fields, so one compiled train step serves
every batch.

The parts, as torchvision's FasterRCNN has them (defaults scaled down for
small images):

1. The backbone's map at `feature_index` (timm's stage numbering; for the
   ResNets 2 is stride 8, 3 stride 16).
2. Anchors: `anchor_sizes` x `aspect_ratios` at every map position (stride
   apart, torchvision's AnchorGenerator layout).
3. The region proposal network: a 3x3 convolution and ReLU, then per anchor
   an objectness logit and 4 box deltas. Training labels anchors by IoU with
   the ground truth (>= 0.7 object, < 0.3 background, the best anchor of each
   object an object too), samples `rpn_batch` of them (at most half
   objects) and adds binary cross-entropy and smooth L1 (beta 1/9) over the
   sampled count. Proposals: decode, clip to the image, drop boxes under
   `min_size`, keep the `pre_nms` best, `nms` at 0.7, keep `post_nms`.
4. RoI Align (`roi_size` x `roi_size`, 2 samples per bin) of each proposal
   (in training, the ground-truth boxes join the proposals), two fully
   connected layers of `head_width`, then class logits and per-class box
   deltas (weights 10, 10, 5, 5). Training samples `box_batch` proposals per
   image (at most a quarter objects, IoU >= 0.5; background < 0.5) and adds
   cross-entropy and smooth L1 at the true class.
5. Detections: softmax scores, per-class boxes, scores over
   `score_threshold`, `batched_nms` at `nms_threshold` per class, the best
   `detections` kept (padded, with `valid`).

Sampling draws from the 'sampling' rng stream; without one, key 0.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import create_model, register_model
from cnnjax.ops import boxes as box_ops
from cnnjax.ops.roi import roi_align

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # the second stage's box coder (torchvision's)
SMOOTH_L1_BETA = 1 / 9


def grid_anchors(map_size: tuple[int, int], stride: int, sizes, ratios) -> np.ndarray:
  """(H * W * A, 4) anchors, position-major: torchvision's AnchorGenerator
  (zero-centred base anchors, rounded, shifted by stride * position)."""
  sizes, ratios = np.asarray(sizes, np.float32), np.asarray(ratios, np.float32)
  h_ratios = np.sqrt(ratios)
  w_ratios = 1 / h_ratios
  ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
  base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
  ys, xs = np.meshgrid(np.arange(map_size[0]) * stride, np.arange(map_size[1]) * stride,
                       indexing="ij")
  shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
  return (shifts + base[None]).reshape(-1, 4).astype(np.float32)


def smooth_l1(x, beta: float = SMOOTH_L1_BETA):
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def match(candidates, gt_boxes, gt_mask, high: float, low: float, low_quality: bool):
  """Per candidate: (matched ground-truth index, label 1 object / 0
  background / -1 ignored). torchvision's Matcher, on padded ground truth."""
  iou = box_ops.box_iou(candidates, gt_boxes)
  iou = jnp.where(gt_mask[None, :], jnp.nan_to_num(iou, nan=0.0), -1.0)
  best = jnp.max(iou, axis=1)
  matched = jnp.argmax(iou, axis=1)
  label = jnp.where(best >= high, 1, jnp.where(best < low, 0, -1))
  if low_quality:
    per_gt = jnp.max(iou, axis=0)
    top = jnp.any((iou == per_gt[None, :]) & gt_mask[None, :] & (per_gt[None, :] > 0), axis=1)
    label = jnp.where(top, 1, label)
  return matched, label


def sample(key, label, eligible, batch: int, positive_fraction: float):
  """Masks (positives, negatives) of a random sample of `batch` candidates,
  at most positive_fraction of them positives (torchvision's
  BalancedPositiveNegativeSampler, with fixed shapes)."""
  k_pos, k_neg = jax.random.split(key)
  n = label.shape[0]
  batch = min(batch, n)
  positive = (label == 1) & eligible
  negative = (label == 0) & eligible
  max_pos = int(batch * positive_fraction)
  pos_score = jnp.where(positive, jax.random.uniform(k_pos, (n,)), -1.0)
  _, pos_idx = jax.lax.top_k(pos_score, max(max_pos, 1))
  num_pos = jnp.minimum(jnp.sum(positive), max_pos)
  take_pos = (jnp.arange(pos_idx.shape[0]) < num_pos)
  pos_mask = jnp.zeros(n, bool).at[pos_idx].max(take_pos)
  neg_score = jnp.where(negative, jax.random.uniform(k_neg, (n,)), -1.0)
  _, neg_idx = jax.lax.top_k(neg_score, batch)
  num_neg = jnp.minimum(jnp.sum(negative), batch - num_pos)
  neg_mask = jnp.zeros(n, bool).at[neg_idx].max(jnp.arange(batch) < num_neg)
  return pos_mask, neg_mask


class FasterRCNN(nn.Module):
  """Faster R-CNN with fixed shapes (module docstring)."""
  num_classes: int = 4  # background included
  backbone: str = "resnet18"
  feature_index: int = 2
  anchor_sizes: tuple[float, ...] = (12.0, 24.0, 48.0)
  aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
  rpn_pre_nms: tuple[int, int] = (600, 300)  # (training, inference)
  rpn_post_nms: tuple[int, int] = (200, 100)
  rpn_nms_threshold: float = 0.7
  rpn_batch: int = 256
  box_batch: int = 128
  roi_size: int = 7
  head_width: int = 256
  min_size: float = 1e-3
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  detections: int = 100
  dtype: Any = jnp.float32

  def setup(self):
    if self.num_classes < 2:
      raise CnnjaxError(f"a detector needs num_classes >= 2 (the background is class "
                        f"0), got {self.num_classes}")
    self.encoder = create_model(self.backbone, features_only=True,
                                out_indices=(self.feature_index,))
    anchors = len(self.anchor_sizes) * len(self.aspect_ratios)
    normal = nn.initializers.normal(0.01)
    self.rpn_conv = nn.Conv(self._channels(), (3, 3), padding=1, kernel_init=normal,
                            dtype=self.dtype)
    self.rpn_objectness = nn.Conv(anchors, (1, 1), kernel_init=normal, dtype=self.dtype)
    self.rpn_deltas = nn.Conv(4 * anchors, (1, 1), kernel_init=normal, dtype=self.dtype)
    self.fc6 = nn.Dense(self.head_width, dtype=self.dtype)
    self.fc7 = nn.Dense(self.head_width, dtype=self.dtype)
    self.cls_score = nn.Dense(self.num_classes, kernel_init=normal, dtype=self.dtype)
    self.bbox_pred = nn.Dense(4 * self.num_classes,
                              kernel_init=nn.initializers.normal(0.001), dtype=self.dtype)

  def _channels(self) -> int:
    return self.encoder.feature_info[0]["num_chs"]

  # -- shared parts ---------------------------------------------------------------

  def _features(self, images, train):
    fmap = self.encoder(images.astype(self.dtype), train=train)[0]
    stride = self.encoder.feature_info[0]["reduction"]
    anchors = grid_anchors(fmap.shape[1:3], stride, self.anchor_sizes, self.aspect_ratios)
    y = nn.relu(self.rpn_conv(fmap))
    batch = images.shape[0]
    objectness = self.rpn_objectness(y).reshape(batch, -1).astype(jnp.float32)
    deltas = self.rpn_deltas(y).reshape(batch, -1, 4).astype(jnp.float32)
    return fmap, jnp.asarray(anchors), objectness, deltas, stride

  def _proposals(self, anchors, objectness, deltas, image_size, train):
    pre, post = (self.rpn_pre_nms[0], self.rpn_post_nms[0]) if train else (
        self.rpn_pre_nms[1], self.rpn_post_nms[1])
    pre = min(pre, anchors.shape[0])

    def one(scores, codes):
      boxes = box_ops.clip_boxes_to_image(box_ops.decode_boxes(codes, anchors), image_size)
      scores = jnp.where(box_ops.remove_small_boxes(boxes, self.min_size), scores, -jnp.inf)
      scores, top = jax.lax.top_k(scores, pre)
      boxes = boxes[top]
      keep, valid = box_ops.nms(boxes, scores, self.rpn_nms_threshold, post)
      valid = valid & jnp.isfinite(scores[jnp.maximum(keep, 0)])
      return boxes[jnp.maximum(keep, 0)], valid

    return jax.vmap(one)(jax.lax.stop_gradient(objectness), jax.lax.stop_gradient(deltas))

  def _box_head(self, fmap, proposals, stride):
    """proposals (B, P, 4) -> class logits (B, P, K), deltas (B, P, K, 4)."""
    batch, count = proposals.shape[:2]
    index = jnp.repeat(jnp.arange(batch, dtype=proposals.dtype), count)[:, None]
    rois = jnp.concatenate([index, proposals.reshape(-1, 4)], axis=1)
    pooled = roi_align(fmap.astype(jnp.float32), rois, self.roi_size, 1.0 / stride,
                       sampling_ratio=2)
    x = pooled.reshape(batch * count, -1).astype(self.dtype)
    x = nn.relu(self.fc7(nn.relu(self.fc6(x))))
    logits = self.cls_score(x).astype(jnp.float32).reshape(batch, count, -1)
    deltas = self.bbox_pred(x).astype(jnp.float32).reshape(batch, count, -1, 4)
    return logits, deltas

  # -- inference ------------------------------------------------------------------

  def __call__(self, images, *, train: bool = False):
    """Detections: boxes (B, D, 4), scores (B, D), classes (B, D), valid (B, D)."""
    image_size = images.shape[1:3]
    fmap, anchors, objectness, deltas, stride = self._features(images, train)
    proposals, proposal_valid = self._proposals(anchors, objectness, deltas, image_size,
                                                train=False)
    logits, box_deltas = self._box_head(fmap, proposals, stride)
    return jax.vmap(lambda *a: self._detect(*a, image_size))(
        proposals, proposal_valid, logits, box_deltas)

  def _detect(self, proposals, proposal_valid, logits, deltas, image_size):
    k = self.num_classes
    scores = jax.nn.softmax(logits, axis=-1)[:, 1:]  # (P, K - 1)
    boxes = box_ops.decode_boxes(deltas[:, 1:], proposals[:, None, :], BOX_WEIGHTS)
    boxes = box_ops.clip_boxes_to_image(boxes, image_size).reshape(-1, 4)
    scores = scores.reshape(-1)
    classes = jnp.tile(jnp.arange(1, k), proposals.shape[0])
    ok = (jnp.repeat(proposal_valid, k - 1) & (scores > self.score_threshold)
          & box_ops.remove_small_boxes(boxes, self.min_size))
    scores = jnp.where(ok, scores, -jnp.inf)
    keep, valid = box_ops.batched_nms(boxes, scores, classes, self.nms_threshold,
                                      self.detections)
    index = jnp.maximum(keep, 0)
    valid = valid & jnp.isfinite(scores[index])
    return {"boxes": jnp.where(valid[:, None], boxes[index], 0.0),
            "scores": jnp.where(valid, scores[index], 0.0),
            "classes": jnp.where(valid, classes[index], 0),
            "valid": valid}

  # -- training -------------------------------------------------------------------

  def losses(self, images, targets, *, train: bool = True):
    """The four losses and their sum, {'rpn_objectness', 'rpn_box',
    'box_classifier', 'box_regression', 'loss'} (module docstring)."""
    image_size = images.shape[1:3]
    gt_boxes = targets["boxes"].astype(jnp.float32)
    gt_classes = targets["classes"].astype(jnp.int32)
    gt_mask = targets["box_mask"].astype(bool)
    key = (self.make_rng("sampling") if self.has_rng("sampling") else jax.random.key(0))
    k_rpn, k_box = jax.random.split(key)
    batch = images.shape[0]
    fmap, anchors, objectness, deltas, stride = self._features(images, train)

    # The region proposal network's losses.
    def rpn_targets(boxes, mask, key):
      matched, label = match(anchors, boxes, mask, 0.7, 0.3, low_quality=True)
      pos, neg = sample(key, label, jnp.ones(label.shape, bool), self.rpn_batch, 0.5)
      # Only positives have a box to move to (others may match a padding row).
      codes = jnp.where(pos[:, None], box_ops.encode_boxes(boxes[matched], anchors), 0.0)
      return pos, neg, codes

    pos, neg, codes = jax.vmap(rpn_targets)(gt_boxes, gt_mask,
                                            jax.random.split(k_rpn, batch))
    sampled = jnp.maximum(jnp.sum(pos | neg), 1)
    bce = optax.sigmoid_binary_cross_entropy(objectness, pos.astype(jnp.float32))
    rpn_objectness = jnp.sum(jnp.where(pos | neg, bce, 0.0)) / sampled
    rpn_box = jnp.sum(jnp.where(pos, smooth_l1(deltas - codes).sum(-1), 0.0)) / sampled

    # The box head's losses, on sampled proposals and the ground truth.
    proposals, proposal_valid = self._proposals(anchors, objectness, deltas, image_size,
                                                train=True)
    candidates = jnp.concatenate([proposals, gt_boxes], axis=1)
    eligible = jnp.concatenate([proposal_valid, gt_mask], axis=1)
    count = min(self.box_batch, candidates.shape[1])

    def box_targets(candidates, eligible, boxes, classes, mask, key):
      matched, label = match(candidates, boxes, mask, 0.5, 0.5, low_quality=False)
      pos, neg = sample(key, label, eligible, count, 0.25)
      chosen = jnp.argsort(~(pos | neg), stable=True)[:count]  # sampled first
      used = (pos | neg)[chosen]
      cls = jnp.where(pos[chosen], classes[matched[chosen]], 0)
      codes = jnp.where(pos[chosen][:, None], box_ops.encode_boxes(
          boxes[matched[chosen]], candidates[chosen], BOX_WEIGHTS), 0.0)
      return candidates[chosen], used, pos[chosen], cls, codes

    rois, used, positive, cls, codes = jax.vmap(box_targets)(
        candidates, eligible, gt_boxes, gt_classes, gt_mask, jax.random.split(k_box, batch))
    logits, box_deltas = self._box_head(fmap, jax.lax.stop_gradient(rois), stride)
    n_used = jnp.maximum(jnp.sum(used), 1)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), cls[..., None], -1)[..., 0]
    box_classifier = jnp.sum(jnp.where(used, ce, 0.0)) / n_used
    predicted = jnp.take_along_axis(box_deltas, cls[..., None, None], axis=2)[:, :, 0]
    box_regression = jnp.sum(jnp.where(positive, smooth_l1(predicted - codes).sum(-1),
                                       0.0)) / n_used
    out = {"rpn_objectness": rpn_objectness, "rpn_box": rpn_box,
           "box_classifier": box_classifier, "box_regression": box_regression}
    out["loss"] = sum(out.values())
    return out


def make_train_step(model: FasterRCNN, tx: optax.GradientTransformation):
  """`step(variables, opt_state, images, targets, key) -> (variables,
  opt_state, losses)`, jitted once with the state donated: a detector's
  train step, for a batch of fixed shapes (normalised float images)."""

  def step(variables, opt_state, images, targets, key):
    def objective(params):
      out, state = model.apply(dict(variables, params=params), images, targets, train=True,
                               method=model.losses, rngs={"sampling": key},
                               mutable=["batch_stats"])
      return out["loss"], (out, state)

    grads, (out, state) = jax.grad(objective, has_aux=True)(variables["params"])
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    return dict(variables, params=params, **state), opt_state, out

  return jax.jit(step, donate_argnums=(0, 1))


register_model("faster_rcnn", input_shape=(64, 64, 3),
               description="two-stage detector: RPN, RoI Align, box head "
                           "(Ren et al. 2015) on a feature backbone")(FasterRCNN)
