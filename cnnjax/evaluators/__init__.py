"""Evaluators: named metric functions that every evaluation runs.

    names = resolve(config.evaluators, task=dataset.task, metadata=dataset.metadata)
    # inside the jitted eval step, per batch:
    outputs = batch_outputs(names, EvalInputs(logits, labels, loss, multilabel))
    # on the host, with the split's real rows concatenated:
    result = compute(names, outputs, EvalContext(task, num_classes, class_names, split))
    result.metrics    # {'loss': ..., 'accuracy': ..., 'auc': ...}
    result.artifacts  # {'confusion_matrix': {...}}

Registered (`EVALUATORS.names()`): 'accuracy' (loss, accuracy,
top5_accuracy), 'auc', 'medmnist' (auc, acc), 'multilabel' (exact_match,
f1_micro, f1_macro), 'confusion_matrix' (balanced_accuracy, and the matrix
as an artifact), 'segmentation' (loss, pixel_accuracy, mean_iou) and
'detection' (COCO map, map_50, map_75; pycocotools). A new
one subclasses `Evaluator` and registers with
`@EVALUATORS.register(name)`.
"""

from cnnjax.evaluators.base import (EVALUATORS, EvalContext, EvalInputs,
                                    EvalResult, Evaluator, batch_outputs,
                                    compute, default_evaluators, resolve)
# In this order so that `EVALUATORS.names()` lists them so.
from cnnjax.evaluators import classification  # noqa: F401
from cnnjax.evaluators.medmnist import official_metrics, scores_from_logits
from cnnjax.evaluators.confusion import (confusion_matrix_figure,
                                         confusion_matrix_json)
from cnnjax.evaluators import segmentation, detection  # noqa: F401, E402

__all__ = [
    "EVALUATORS", "EvalContext", "EvalInputs", "EvalResult", "Evaluator",
    "batch_outputs", "compute", "confusion_matrix_figure",
    "confusion_matrix_json", "default_evaluators", "official_metrics",
    "resolve", "scores_from_logits",
]
