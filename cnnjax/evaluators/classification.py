"""Accuracy and the multi-label scores: per-example hits, averaged on the host."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.evaluators.base import (EVALUATORS, EvalContext, EvalInputs,
                                    EvalResult, Evaluator, mean)


@EVALUATORS.register("accuracy")
class Accuracy(Evaluator):
  """Mean loss, top-1 accuracy and, with more than 5 classes, top-5 accuracy.

  The hits are those of cnnjax.train.metrics.classification_sums: argmax
  (and `lax.top_k`) of the float32 logits for single-label tasks; for
  multi-label tasks the fraction of labels right at logit > 0 (sigmoid 0.5).
  """
  description = "mean loss, top-1 accuracy, top-5 accuracy (over 5 classes)"
  metric_names = ("loss", "accuracy", "top5_accuracy")

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    logits = inputs.logits.astype(jnp.float32)
    labels = inputs.labels
    out = {"loss": inputs.loss.astype(jnp.float32)}
    if inputs.multilabel:
      out["correct"] = jnp.mean((logits > 0) == (labels > 0.5), axis=-1)
      return out
    out["correct"] = jnp.argmax(logits, axis=-1) == labels
    if logits.shape[-1] > 5:
      _, top5 = jax.lax.top_k(logits, 5)
      out["top5"] = jnp.any(top5 == labels[:, None], axis=-1)
    return out

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    metrics = {"loss": mean(outputs["loss"]),
               "accuracy": mean(outputs["correct"])}
    if "top5" in outputs:
      metrics["top5_accuracy"] = mean(outputs["top5"])
    return EvalResult(metrics=metrics)


@EVALUATORS.register("multilabel")
class MultiLabel(Evaluator):
  """Exact-match ratio and micro/macro F1 of multi-label predictions.

  A label is predicted when its logit is > 0 (sigmoid 0.5). The macro F1
  averages every label's F1; a label that is neither present nor predicted
  counts 0, as scikit-learn's `f1_score(..., zero_division=0)` counts it.
  """
  description = "exact match, micro and macro F1 at threshold 0.5 (multi-label)"
  metric_names = ("exact_match", "f1_micro", "f1_macro")
  tasks = ("multilabel",)

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    return {"predicted": inputs.logits.astype(jnp.float32) > 0,
            "labels": inputs.labels > 0.5}

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    predicted = np.asarray(outputs["predicted"], bool)
    labels = np.asarray(outputs["labels"], bool)
    true_pos = np.sum(predicted & labels, axis=0, dtype=np.int64)
    false_pos = np.sum(predicted & ~labels, axis=0, dtype=np.int64)
    false_neg = np.sum(~predicted & labels, axis=0, dtype=np.int64)
    return EvalResult(metrics={
        "exact_match": mean(np.all(predicted == labels, axis=-1)),
        "f1_micro": _f1(true_pos.sum(), false_pos.sum(), false_neg.sum()),
        "f1_macro": float(np.mean([_f1(*counts) for counts in
                                   zip(true_pos, false_pos, false_neg)])),
    })


def _f1(true_pos, false_pos, false_neg) -> float:
  """2TP / (2TP + FP + FN); 0 when there is nothing to score."""
  denominator = 2 * true_pos + false_pos + false_neg
  return float(2 * true_pos / denominator) if denominator else 0.0
