"""Detection through the one training driver: the task's data checks, boxes
flipped with their images, and `train_and_evaluate` reporting COCO mAP."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.config import base_config
from cnnjax.data import augment
from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError


def _split(boxes, classes):
  n = len(classes)
  return {"image": np.zeros((n, 16, 16, 3), np.uint8), "label": np.asarray(classes, np.int32),
          "boxes": np.asarray(boxes, np.float32)}


@pytest.mark.parametrize("boxes,classes,message", [
    ([[[5, 1, 2, 4]]], [[1]], "x2 < x1"),
    ([[[1, 1, 2, 4]]], [[4]], "object classes in"),
    ([[1, 1, 2, 4]], [[1]], "boxes of shape"),
])
def test_detection_data_is_checked(boxes, classes, message):
  with pytest.raises(CnnjaxError, match=message):
    ArrayDataset("bad", {"train": _split(boxes, classes)}, num_classes=3, task="detection")
  # A padding row (class 0) may hold anything.
  ArrayDataset("ok", {"train": _split([[[5, 1, 2, 4]]], [[0]])}, num_classes=3,
               task="detection")


def test_boxes_are_mirrored_with_their_images():
  images = np.zeros((8, 10, 12, 3), np.float32)
  images[:, 2:5, 1:4] = 1.0  # an object at x 1..4, y 2..5
  boxes = np.tile(np.asarray([[1, 2, 4, 5], [0, 0, 0, 0]], np.float32), (8, 1, 1))
  batch = {"image": jnp.asarray(images), "boxes": jnp.asarray(boxes),
           "label": jnp.asarray(np.tile([[1, 0]], (8, 1)))}
  out = augment.augment_batch(batch, jax.random.key(3), ml_collections.ConfigDict({"flip": True}))
  flipped = 0
  for image, (x1, y1, x2, y2) in zip(np.asarray(out["image"]), np.asarray(out["boxes"])[:, 0]):
    ys, xs = np.nonzero(image[..., 0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
    flipped += x1 == 8
  assert 0 < flipped < 8
  with pytest.raises(CnnjaxError, match="away from their boxes"):
    augment.augment_batch(batch, jax.random.key(3),
                          ml_collections.ConfigDict({"translate": 2}))


@pytest.mark.slow  # 6-9 s; the compiled step (tests/models/test_detection.py) and
# the COCO evaluator (tests/evaluators) are tested by default.
def test_the_driver_trains_a_detector_and_reports_coco_map(tmp_path):
  pytest.importorskip("pycocotools")
  from cnnjax.train.loop import train_and_evaluate

  config = base_config()
  config.model.name = "faster_rcnn"
  with config.model.unlocked():
    config.model.anchor_sizes = (8.0, 16.0)
    config.model.aspect_ratios = (1.0,)
    config.model.rpn_pre_nms = (64, 32)
    config.model.rpn_post_nms = (32, 16)
    config.model.rpn_batch = 64
    config.model.box_batch = 32
    config.model.head_width = 32
    config.model.detections = 10
  config.dataset.name = "shapes_detection"
  config.dataset.image_size = 32
  config.smoke = True
  config.smoke_steps = 3
  config.batch_size = 8
  config.eval_batch_size = 32
  config.num_steps = 3
  config.optimizer.learning_rate = 0.01
  config.augment.flip = True
  config.progress_bar = False
  config.best_metric = "test/map"
  result = train_and_evaluate(config, str(tmp_path / "run"))
  final = result["final"]
  assert {"test/map", "test/map_50", "test/map_75"} <= set(final)
  assert all(math.isfinite(final[k]) and 0 <= final[k] <= 1 for k in ("test/map", "test/map_50"))
  assert (tmp_path / "run" / "result.json").exists()
