"""The two-stage detector: torchvision's anchors, matching and balanced
sampling with fixed shapes, one compiled train step for batches with any
number of objects (none included), and detections of a fixed size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.data import scenes
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, detection
from cnnjax.ops import random as random_ops


def test_anchors_match_torchvisions_generator():
  from conftest import import_torchvision
  import_torchvision()
  import torch
  from torchvision.models.detection.anchor_utils import AnchorGenerator
  from torchvision.models.detection.image_list import ImageList

  sizes, ratios = (12.0, 24.0, 48.0), (0.5, 1.0, 2.0)
  generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
  images = ImageList(torch.zeros(1, 3, 40, 56), [(40, 56)])
  feature = torch.zeros(1, 8, 5, 7)  # stride 8
  want = generator(images, [feature])[0].numpy()
  np.testing.assert_allclose(detection.grid_anchors((5, 7), 8, sizes, ratios), want)


def test_matching_labels_objects_background_and_the_best_anchor():
  anchors = jnp.asarray([[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30],
                         [40, 40, 44, 44], [5, 0, 15, 10]], jnp.float32)
  gt = jnp.asarray([[0, 0, 10, 10], [41, 41, 60, 60], [0, 0, 0, 0]], jnp.float32)
  mask = jnp.asarray([True, True, False])
  matched, label = detection.match(anchors, gt, mask, 0.7, 0.3, low_quality=True)
  # IoUs with gt 0: 1, 0.9, 0, 0, 1/3; anchor 3 is gt 1's best (IoU 9/361 + ...).
  np.testing.assert_array_equal(label, [1, 1, 0, 1, -1])
  np.testing.assert_array_equal(matched[:2], [0, 0])
  assert matched[3] == 1


def test_sampling_is_balanced_and_of_fixed_size():
  label = jnp.asarray([1] * 10 + [0] * 300 + [-1] * 20)
  eligible = jnp.ones(330, bool).at[0].set(False)
  pos, neg = detection.sample(jax.random.key(0), label, eligible, 64, 0.25)
  assert int(pos.sum()) == 9 and int(neg.sum()) == 55  # 9 eligible objects, the rest background
  assert not pos[0] and not (pos & (label != 1)).any() and not (neg & (label != 0)).any()
  few = jnp.asarray([1] * 40 + [0] * 5)
  pos, neg = detection.sample(jax.random.key(1), few, jnp.ones(45, bool), 32, 0.5)
  assert int(pos.sum()) == 16 and int(neg.sum()) == 5


def _batch(seed, n=4, size=32):
  s = scenes.make_scenes("shapes", n, image_size=size, seed=seed, max_objects=2,
                         min_size=6, max_size=12)
  images = jnp.asarray(s["image"], jnp.float32) / 255 - 0.5
  return images, {k: jnp.asarray(s[k]) for k in ("boxes", "classes", "box_mask")}


@pytest.fixture(scope="module")
def small_detector():
  return create_model("faster_rcnn", num_classes=4, feature_index=2, anchor_sizes=(8.0, 16.0),
                      aspect_ratios=(1.0,), rpn_pre_nms=(64, 32), rpn_post_nms=(32, 16),
                      rpn_batch=64, box_batch=32, head_width=32, detections=10)


def test_one_compiled_step_trains_every_batch(small_detector):
  model = small_detector
  images, targets = _batch(0)
  variables = random_ops.init(model, jax.random.key(0), images)
  tx = optax.sgd(0.01, momentum=0.9)
  step = detection.make_train_step(model, tx)
  opt_state = tx.init(variables["params"])
  empty = dict(targets, box_mask=jnp.zeros_like(targets["box_mask"]),
               classes=jnp.zeros_like(targets["classes"]))
  first = None
  for i, (x, t) in enumerate([(images, targets), _batch(1), (images, empty), (images, targets),
                              (images, targets), (images, targets)]):
    variables, opt_state, out = step(variables, opt_state, x, t, jax.random.key(i))
    assert all(np.isfinite(float(v)) for v in out.values()), out
    if first is None:
      first = float(out["loss"])
  assert float(out["loss"]) < first
  assert step._cache_size() == 1
  detections = jax.jit(model.apply)(variables, images)
  assert detections["boxes"].shape == (4, 10, 4) and detections["valid"].shape == (4, 10)
  boxes = np.asarray(detections["boxes"])[np.asarray(detections["valid"])]
  assert ((boxes >= 0) & (boxes <= 32)).all()
  classes = np.asarray(detections["classes"])[np.asarray(detections["valid"])]
  assert ((classes >= 1) & (classes <= 3)).all()


def test_a_detector_needs_a_background_and_a_class():
  with pytest.raises(CnnjaxError, match="num_classes >= 2"):
    model = create_model("faster_rcnn", num_classes=1)
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
