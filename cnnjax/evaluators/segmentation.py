"""Semantic segmentation: pixel accuracy and mean IoU from one confusion
matrix over the whole split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data.arrays import IGNORE_LABEL
from cnnjax.evaluators.base import (EVALUATORS, EvalContext, EvalInputs,
                                    EvalResult, Evaluator, mean)


def confusion_counts(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """(B, K, K) int32: per image, pixels of true class t predicted as p,
  IGNORE_LABEL pixels left out. logits (B, H, W, K), labels (B, H, W)."""
  classes = logits.shape[-1]
  valid = (labels != IGNORE_LABEL)[..., None]
  truth = jax.nn.one_hot(jnp.where(labels == IGNORE_LABEL, 0, labels), classes,
                         dtype=jnp.int32) * valid
  predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), classes, dtype=jnp.int32)
  return jnp.einsum("bhwt,bhwp->btp", truth, predicted)


def scores(confusion: np.ndarray) -> dict:
  """Pixel accuracy, per-class IoU (nan for a class neither present nor
  predicted) and their mean over the other classes, background included."""
  confusion = np.asarray(confusion, np.float64)
  hits = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - hits
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, hits / union, np.nan)
  total = confusion.sum()
  return {"pixel_accuracy": float(hits.sum() / total) if total else float("nan"),
          "iou": iou,
          "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")}


@EVALUATORS.register("segmentation")
class Segmentation(Evaluator):
  """Mean loss, pixel accuracy and mean IoU (PASCAL VOC's: per class
  TP / (TP + FP + FN) over every pixel of the split, background included,
  classes that neither occur nor are predicted left out of the mean); the
  per-class IoUs are an artifact."""
  description = "mean loss, pixel accuracy, mean IoU (segmentation)"
  metric_names = ("loss", "pixel_accuracy", "mean_iou")
  tasks = ("segmentation",)

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    return {"loss": inputs.loss.astype(jnp.float32),
            "confusion": confusion_counts(inputs.logits, inputs.labels)}

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    confusion = np.asarray(outputs["confusion"], np.int64).sum(0)
    s = scores(confusion)
    names = context.class_names or tuple(str(c) for c in range(context.num_classes))
    return EvalResult(
        metrics={"loss": mean(outputs["loss"]), "pixel_accuracy": s["pixel_accuracy"],
                 "mean_iou": s["mean_iou"]},
        artifacts={"iou_per_class": {n: (None if np.isnan(v) else float(v))
                                     for n, v in zip(names, s["iou"])}})
