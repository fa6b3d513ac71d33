"""COCO-style mAP on hand-built cases whose answers follow from COCO's rules."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from cnnjax.evaluators.detection import coco_map  # noqa: E402


def _case(gt, det):
  """gt: per image [(box, cls)]; det: per image [(box, score, cls)]."""
  g = max(1, max(len(x) for x in gt))
  d = max(1, max(len(x) for x in det))
  targets = {"boxes": np.zeros((len(gt), g, 4)), "classes": np.zeros((len(gt), g), int),
             "box_mask": np.zeros((len(gt), g), bool)}
  for n, objects in enumerate(gt):
    for j, (box, cls) in enumerate(objects):
      targets["boxes"][n, j], targets["classes"][n, j], targets["box_mask"][n, j] = box, cls, True
  detections = {"boxes": np.zeros((len(det), d, 4)), "scores": np.zeros((len(det), d)),
                "classes": np.zeros((len(det), d), int), "valid": np.zeros((len(det), d), bool)}
  for n, found in enumerate(det):
    for j, (box, score, cls) in enumerate(found):
      detections["boxes"][n, j], detections["scores"][n, j] = box, score
      detections["classes"][n, j], detections["valid"][n, j] = cls, True
  return coco_map(detections, targets)


def test_perfect_detections_score_one():
  box_a, box_b = [10, 10, 30, 40], [50, 5, 70, 25]
  result = _case([[(box_a, 1), (box_b, 2)], []],
                 [[(box_a, 0.9, 1), (box_b, 0.8, 2)], []])
  assert result["map"] == pytest.approx(1.0) and result["map_50"] == pytest.approx(1.0)
  assert result["ap_per_class"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_a_higher_scoring_false_positive_caps_precision_at_two_thirds():
  # Ranked: a false positive (on an image without objects), then two hits.
  # Precision 1/2 at recall 1/2 and 2/3 at recall 1; COCO interpolates to
  # the best precision at any higher recall: 2/3 at every recall point.
  a, b = [0, 0, 20, 20], [40, 40, 60, 60]
  result = _case([[(a, 1), (b, 1)], []],
                 [[(a, 0.8, 1), (b, 0.7, 1)], [([5, 5, 25, 25], 0.9, 1)]])
  assert result["map_50"] == pytest.approx(2 / 3, abs=1e-6)
  assert result["map"] == pytest.approx(2 / 3, abs=1e-6)


def test_a_loose_box_counts_only_below_its_iou():
  # IoU 0.62: a hit at thresholds 0.50, 0.55, 0.60 and a miss at the 7 others.
  gt = [0, 0, 100, 100]
  loose = [0, 0, 100, 62]
  result = _case([[(gt, 1)]], [[(loose, 0.9, 1)]])
  assert result["map_50"] == pytest.approx(1.0)
  assert result["map_75"] == pytest.approx(0.0)
  assert result["map"] == pytest.approx(0.3)
