"""MedMNIST's official metrics (Yang et al. 2023), and the evaluators using them.

`official_metrics` is the benchmark's ACC and AUC (medmnist's `getACC` and
`getAUC`, threshold 0.5), so numbers here compare with the paper's tables;
tests/data/test_medmnist.py checks them against medmnist's own Evaluator. The
evaluator 'auc' reports the AUC alone (a dataset's default for binary and
multi-label tasks and for MedMNIST), 'medmnist' the official pair.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data.medmnist import TASK_FROM_MEDMNIST
from cnnjax.errors import CnnjaxError
from cnnjax.evaluators.base import (EVALUATORS, EvalContext, EvalInputs,
                                    EvalResult, Evaluator)


def scores_from_logits(task: str, logits) -> np.ndarray:
  """Probabilities the metrics expect: sigmoid per label, else softmax.

  A binary task with one logit per example, (N, 1), gets a sigmoid too.
  """
  task = _our_task(task)
  logits = np.asarray(logits, np.float64)
  if task == "multilabel" or (task == "binary" and logits.shape[-1] == 1):
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid, without overflow
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


def official_metrics(task: str, labels, scores) -> dict[str, float]:
  """MedMNIST's ACC and AUC of probabilities `scores` against `labels`.

  Args:
    task: ours ('multiclass', 'binary', 'multilabel', 'ordinal') or medmnist's.
    labels: (N,) or (N, 1) class indices; (N, L) 0/1 for multi-label.
    scores: softmax probabilities (N, C) for multiclass and ordinal; for
      binary (N, 2) (the last column is the positive class, as medmnist's
      Evaluator takes it) or (N,); sigmoid probabilities (N, L) for multi-label.

  Returns:
    {'acc': ..., 'auc': ...}. ACC is top-1 accuracy, or for binary and
    multi-label the accuracy of `score > 0.5` (averaged over labels); AUC is
    the ROC AUC of the positive class, or averaged over the one-vs-rest AUC
    of every class or label. Like medmnist with scikit-learn >= 1.6, the AUC
    is NaN when a class or label has only one value among the labels.
  """
  task = _our_task(task)
  labels = np.asarray(labels)
  scores = np.asarray(scores)
  n = len(labels)
  if len(scores) != n:
    raise ValueError(f"{len(scores)} score rows for {n} labels")
  if task == "multilabel":
    labels = labels.reshape(n, -1)
    scores = scores.reshape(n, -1)
    if labels.shape != scores.shape:
      raise ValueError(f"multi-label scores {scores.shape} for labels {labels.shape}")
    predictions = scores > 0.5
    acc = np.mean([np.mean(labels[:, j] == predictions[:, j])
                   for j in range(labels.shape[1])])
    auc = np.mean([_roc_auc(labels[:, j], scores[:, j])
                   for j in range(labels.shape[1])])
  elif task == "binary":
    labels = labels.reshape(-1)
    positive = scores.reshape(n, -1)[:, -1]  # (N,) P(class 1)
    acc = np.mean(labels == (positive > 0.5))
    auc = _roc_auc(labels, positive)
  else:  # multiclass and ordinal: scored alike, as in medmnist.
    labels = labels.reshape(-1)
    if scores.ndim != 2:
      raise ValueError(f"{task} scores need shape (N, C), got {scores.shape}")
    acc = np.mean(labels == np.argmax(scores, axis=-1))
    auc = np.mean([_roc_auc(labels == c, scores[:, c])
                   for c in range(scores.shape[1])])
  return {"acc": float(acc), "auc": float(auc)}


def _roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
  from sklearn.metrics import roc_auc_score

  if np.all(is_positive == is_positive[0]):
    return float("nan")  # Undefined with one class; sklearn would warn.
  return roc_auc_score(is_positive, score)


def _our_task(task: str) -> str:
  task = TASK_FROM_MEDMNIST.get(task, task)
  if task not in TASK_FROM_MEDMNIST.values():
    raise CnnjaxError(f"unknown MedMNIST task '{task}' (known: "
                      f"{', '.join(TASK_FROM_MEDMNIST.values())})")
  return task


class _Scored(Evaluator):
  """Per-example probabilities on the device, MedMNIST's metrics on the host."""

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    # float32 on the device, as the eval step computed them before evaluators
    # existed, so that the numbers do not move; one logit is a binary sigmoid.
    logits = inputs.logits.astype(jnp.float32)
    sigmoid = inputs.multilabel or logits.shape[-1] == 1
    scores = jax.nn.sigmoid(logits) if sigmoid else jax.nn.softmax(logits)
    return {"scores": scores, "labels": inputs.labels}

  def official(self, outputs, context: EvalContext) -> dict[str, float]:
    found = official_metrics(context.task, outputs["labels"], outputs["scores"])
    # NaN when a class (or label) never occurs in the split: then no AUC.
    return {k: v for k, v in found.items() if math.isfinite(v)}


@EVALUATORS.register("auc")
class Auc(_Scored):
  """MedMNIST's official AUC: of the positive class for binary tasks, else
  the mean one-vs-rest AUC over the classes (labels); absent when a class
  (label) has only one value in the split."""
  description = "ROC AUC, MedMNIST's official definition (mean one-vs-rest)"
  metric_names = ("auc",)

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    found = self.official(outputs, context)
    return EvalResult(metrics={k: found[k] for k in ("auc",) if k in found})


@EVALUATORS.register("medmnist")
class MedMnist(_Scored):
  """MedMNIST's official pair, 'auc' and 'acc' (see `official_metrics`)."""
  description = "MedMNIST's official AUC and ACC (threshold 0.5)"
  metric_names = ("auc", "acc")

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    return EvalResult(metrics=self.official(outputs, context))
