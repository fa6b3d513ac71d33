"""The confusion matrix of single-label predictions, as an artifact and a figure."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.evaluators.base import (EVALUATORS, SINGLE_LABEL_TASKS,
                                    EvalContext, EvalInputs, EvalResult,
                                    Evaluator)

# Above this many classes the cells are too small to print counts in.
MAX_ANNOTATED_CLASSES = 20


@EVALUATORS.register("confusion_matrix")
class ConfusionMatrix(Evaluator):
  """Counts of (true class, predicted class) pairs, and the balanced accuracy.

  The prediction is the argmax of the logits. The artifact
  'confusion_matrix' holds the K x K counts (rows: true class, columns:
  prediction), the class names and the split; 'balanced_accuracy' is the
  mean recall over the classes that occur in the split.
  """
  description = "K x K confusion matrix (artifact) and balanced accuracy"
  metric_names = ("balanced_accuracy",)
  tasks = SINGLE_LABEL_TASKS

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    return {"predicted": jnp.argmax(inputs.logits, axis=-1).astype(jnp.int32),
            "labels": inputs.labels.astype(jnp.int32)}

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    matrix = confusion_counts(outputs["labels"], outputs["predicted"],
                              context.num_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    recall = np.diag(matrix)[present] / support[present]
    names = context.class_names or tuple(str(c) for c in range(context.num_classes))
    artifact = {"matrix": matrix.tolist(), "class_names": list(names),
                "split": context.split}
    return EvalResult(metrics={"balanced_accuracy": float(np.mean(recall))},
                      artifacts={"confusion_matrix": artifact})


def confusion_counts(labels, predicted, num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) int64 counts; rows true class, columns prediction."""
  labels = np.asarray(labels, np.int64).reshape(-1)
  predicted = np.asarray(predicted, np.int64).reshape(-1)
  for what, values in (("labels", labels), ("predictions", predicted)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f"{what} in [{values.min()}, {values.max()}] for "
                       f"{num_classes} classes")
  flat = np.bincount(labels * num_classes + predicted,
                     minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes)


def confusion_matrix_json(artifact: Mapping[str, Any]) -> dict[str, Any]:
  """The artifact as a JSON-able dict with a fixed key order.

  Args:
    artifact: `EvalResult.artifacts['confusion_matrix']`.

  Returns:
    {'split', 'rows', 'columns', 'class_names', 'matrix', 'total'}: plain
    Python strings and ints only.
  """
  matrix = _matrix(artifact)
  return {
      "split": str(artifact.get("split", "")),
      "rows": "true class",
      "columns": "predicted class",
      "class_names": _class_names(artifact, len(matrix)),
      "matrix": [[int(v) for v in row] for row in matrix],
      "total": int(matrix.sum()),
  }


def confusion_matrix_figure(artifact: Mapping[str, Any]):
  """A heat map of the artifact: colour by row-normalised rate (recall), the
  counts printed in the cells up to `MAX_ANNOTATED_CLASSES` classes.

  Returns:
    A matplotlib Figure (Agg backend); the caller saves and closes it.
  """
  import matplotlib
  matplotlib.use("Agg")  # Here, not at import: the package stays light.
  import matplotlib.pyplot as plt

  matrix = _matrix(artifact)
  k = len(matrix)
  names = _class_names(artifact, k)
  support = matrix.sum(axis=1, keepdims=True)
  rates = matrix / np.maximum(support, 1)  # An absent class's row stays 0.

  side = min(4.0 + 0.45 * k, 24.0)
  fig, ax = plt.subplots(figsize=(side + 1.2, side))
  image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
               label="fraction of the true class")
  if k <= MAX_ANNOTATED_CLASSES:
    for i in range(k):
      for j in range(k):
        ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
  ticks = np.arange(k)
  shown = [_short(n) for n in names]
  ax.set_xticks(ticks)
  ax.set_yticks(ticks)
  ax.set_xticklabels(shown, rotation=90 if k > 4 else 0, fontsize=8)
  ax.set_yticklabels(shown, fontsize=8)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  split = artifact.get("split", "")
  total = int(matrix.sum())
  ax.set_title(f"confusion matrix, {split} ({total} examples)" if split
               else f"confusion matrix ({total} examples)")
  fig.tight_layout()
  return fig


def _matrix(artifact: Mapping[str, Any]) -> np.ndarray:
  matrix = np.asarray(artifact["matrix"], np.int64)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"a confusion matrix must be square, got shape {matrix.shape}")
  return matrix


def _class_names(artifact: Mapping[str, Any], k: int) -> list[str]:
  names = [str(n) for n in artifact.get("class_names") or ()]
  return names if len(names) == k else [str(c) for c in range(k)]


def _short(name: str, limit: int = 24) -> str:
  """Long class names (MedMNIST has some of 60 characters) cut for the axes."""
  return name if len(name) <= limit else name[:limit - 1] + "…"
