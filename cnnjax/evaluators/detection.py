"""COCO-style average precision of detections, computed by pycocotools'
COCOeval (the `detection` extra), so that the figures are the ones papers
and torchvision's references report.

    result = coco_map(detections, targets)
    result["map"]       # AP averaged over IoU thresholds 0.50:0.05:0.95
    result["map_50"]    # AP at IoU 0.5 (PASCAL VOC's threshold)
    result["map_75"]
    result["ap_per_class"]  # AP@[.5:.95] per class id (None: no ground truth)

`detections`: 'boxes' (N, D, 4) [x1, y1, x2, y2] pixels, 'scores' (N, D),
'classes' (N, D) and 'valid' (N, D); `targets`: 'boxes' (N, G, 4),
'classes' (N, G), 'box_mask' (N, G), as the detector and the procedural
scenes give them. Every image counts, also one without objects (its
detections are all false positives). COCO's rules apply: 101-point
interpolated precision, at most 100 detections per image, all areas.
"""

from __future__ import annotations

import contextlib
import io

import jax
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.evaluators.base import EVALUATORS, EvalContext, EvalInputs, EvalResult, Evaluator


def _cocoeval():
  try:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
  except ImportError:
    raise CnnjaxError("COCO-style mAP needs pycocotools: pip install "
                      "'cnnjax[detection]'") from None
  return COCO, COCOeval


def _xywh(box):
  x1, y1, x2, y2 = (float(v) for v in box)
  return [x1, y1, x2 - x1, y2 - y1]


def coco_map(detections, targets) -> dict:
  """mAP@[.5:.95], mAP@0.5, mAP@0.75 and AP per class (module docstring)."""
  COCO, COCOeval = _cocoeval()
  gt_boxes, gt_classes = np.asarray(targets["boxes"]), np.asarray(targets["classes"])
  gt_mask = np.asarray(targets["box_mask"], bool)
  classes = sorted({int(c) for c in gt_classes[gt_mask]} |
                   {int(c) for c in np.asarray(detections["classes"])[
                       np.asarray(detections["valid"], bool)]})
  images, annotations = [], []
  for n in range(len(gt_boxes)):
    images.append({"id": n})
    for box, cls in zip(gt_boxes[n][gt_mask[n]], gt_classes[n][gt_mask[n]]):
      xywh = _xywh(box)
      annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": int(cls),
                          "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
  found = []
  valid = np.asarray(detections["valid"], bool)
  for n in range(len(valid)):
    for box, score, cls in zip(np.asarray(detections["boxes"])[n][valid[n]],
                               np.asarray(detections["scores"])[n][valid[n]],
                               np.asarray(detections["classes"])[n][valid[n]]):
      found.append([n, *_xywh(box), float(score), int(cls)])
  if not annotations:
    raise CnnjaxError("mAP needs at least one ground-truth box in the evaluated images")
  ground_truth = COCO()
  ground_truth.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": c} for c in classes]}
  with contextlib.redirect_stdout(io.StringIO()):
    ground_truth.createIndex()
    if not found:
      return {"map": 0.0, "map_50": 0.0, "map_75": 0.0,
              "ap_per_class": {c: 0.0 for c in classes}}
    predicted = ground_truth.loadRes(np.asarray(found, np.float64))
    evaluation = COCOeval(ground_truth, predicted, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
  # precision: (IoU thresholds, recall points, classes, areas, max dets)
  precision = evaluation.eval["precision"][:, :, :, 0, -1]
  per_class = {}
  for k, c in enumerate(evaluation.params.catIds):
    p = precision[:, :, k]
    per_class[c] = float(np.mean(p[p > -1])) if (p > -1).any() else None
  stats = evaluation.stats
  return {"map": float(stats[0]), "map_50": float(stats[1]), "map_75": float(stats[2]),
          "ap_per_class": per_class}


@EVALUATORS.register("detection")
class Detection(Evaluator):
  """COCO's mAP@[.5:.95], mAP@0.5 and mAP@0.75 over the split's images
  (`coco_map`); AP per class as an artifact. The 'logits' are a detector's
  outputs (boxes, scores, classes, valid) and the 'labels' its padded
  targets (boxes, classes, box_mask)."""
  description = "COCO mAP@[.5:.95], mAP@0.5, mAP@0.75 (detection; pycocotools)"
  metric_names = ("map", "map_50", "map_75")
  tasks = ("detection",)

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    det, gt = inputs.logits, inputs.labels
    return {"boxes": det["boxes"], "scores": det["scores"], "classes": det["classes"],
            "valid": det["valid"], "gt_boxes": gt["boxes"], "gt_classes": gt["classes"],
            "gt_mask": gt["box_mask"]}

  def compute(self, outputs: dict[str, np.ndarray], context: EvalContext) -> EvalResult:
    result = coco_map({k: outputs[k] for k in ("boxes", "scores", "classes", "valid")},
                      {"boxes": outputs["gt_boxes"], "classes": outputs["gt_classes"],
                       "box_mask": outputs["gt_mask"]})
    names = context.class_names
    per_class = {(names[c] if c < len(names) else str(c)): v
                 for c, v in result.pop("ap_per_class").items()}
    return EvalResult(metrics=result, artifacts={"ap_per_class": per_class})
