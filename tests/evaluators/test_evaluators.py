"""cnnjax.evaluators: each evaluator against hand-worked cases and scikit-learn,
the accuracy evaluator against the eval step's sums, and the name checks."""

from __future__ import annotations

import functools
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from cnnjax.data.arrays import CLASSIFICATION_TASKS, TASKS
from cnnjax.errors import CnnjaxError
from cnnjax.evaluators import (EVALUATORS, EvalContext, EvalInputs, EvalResult,
                               Evaluator, batch_outputs, compute,
                               confusion_matrix_figure, confusion_matrix_json,
                               default_evaluators, official_metrics, resolve)
from cnnjax.train.metrics import classification_sums, sums_to_means


@functools.partial(jax.jit, static_argnums=(0, 4))
def _outputs(names, logits, labels, loss, multilabel):
  return batch_outputs(names, EvalInputs(logits, labels, loss, multilabel))


def evaluate(names, logits, labels, *, task, loss=None, mask=None, batch=None,
             class_names=(), split="test"):
  """As the loop does it: jitted per-batch outputs, padding rows dropped on
  the host, the split's rows concatenated, then `compute`."""
  logits = np.asarray(logits, np.float32)
  labels = np.asarray(labels)
  n = len(logits)
  loss = np.zeros(n, np.float32) if loss is None else np.asarray(loss, np.float32)
  mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  batch = batch or n
  gathered = []
  for start in range(0, n, batch):
    rows = slice(start, start + batch)
    out = _outputs(tuple(names), logits[rows], labels[rows], loss[rows],
                   task == "multilabel")
    gathered.append({k: np.asarray(v)[mask[rows]] for k, v in out.items()})
  outputs = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]}
  context = EvalContext(task=task, num_classes=logits.shape[-1],
                        class_names=class_names, split=split)
  return compute(names, outputs, context)


def _softmax(logits):
  return np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))


# The registry.

def test_the_registered_evaluators_and_their_metrics():
  assert EVALUATORS.kind == "evaluator"
  assert set(EVALUATORS.names()) == {"accuracy", "auc", "medmnist", "multilabel",
                                     "confusion_matrix", "segmentation", "detection"}
  declared = {name: EVALUATORS.get(name).metric_names for name in EVALUATORS}
  assert declared["accuracy"] == ("loss", "accuracy", "top5_accuracy")
  assert declared["medmnist"] == ("auc", "acc")
  assert declared["segmentation"] == ("loss", "pixel_accuracy", "mean_iou")
  assert declared["detection"] == ("map", "map_50", "map_75")
  for name, evaluator in EVALUATORS.items():
    assert isinstance(evaluator, Evaluator) and evaluator.name == name
    assert evaluator.description and set(evaluator.tasks) <= set(TASKS)


def test_batch_outputs_are_namespaced_and_compute_splits_them_back():
  logits = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]], np.float32)
  out = _outputs(("accuracy", "confusion_matrix"), logits, np.array([0, 1]),
                 np.array([0.5, 1.5], np.float32), False)
  assert sorted(out) == ["accuracy/correct", "accuracy/loss",
                         "confusion_matrix/labels", "confusion_matrix/predicted"]
  assert all(v.shape[0] == 2 for v in out.values())
  result = compute(("accuracy", "confusion_matrix"), jax.device_get(out),
                   EvalContext("multiclass", 3, split="val"))
  assert isinstance(result, EvalResult)
  assert result.metrics == {"loss": 1.0, "accuracy": 0.5, "balanced_accuracy": 0.5}
  assert result.artifacts["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 0, 1],
                                                            [0, 0, 0]]
  with pytest.raises(CnnjaxError, match="split 'val' has no examples"):
    compute(("accuracy",), {k: v[:0] for k, v in jax.device_get(out).items()},
            EvalContext("multiclass", 3, split="val"))


# accuracy

def test_accuracy_worked_by_hand():
  logits = [[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [5.0, 0.0, 0.0]]
  got = evaluate(["accuracy"], logits, [0, 2, 2, 1], task="multiclass",
                 loss=[1.0, 2.0, 3.0, 6.0]).metrics
  assert got == {"loss": 3.0, "accuracy": 0.5}  # No top-5 with 3 classes.
  # Multi-label: per example the fraction of labels right at logit > 0.
  got = evaluate(["accuracy"], [[1.0, -1.0], [1.0, 1.0]], [[1, 1], [0, 1]],
                 task="multilabel").metrics
  assert got == {"loss": 0.0, "accuracy": 0.5}


@pytest.mark.parametrize("num_classes,multilabel", [(10, False), (5, False),
                                                     (2, False), (14, True)])
def test_accuracy_equals_the_eval_steps_sums(num_classes, multilabel):
  rng = np.random.default_rng(num_classes)
  n = 70  # Two batches of 40, the last padded with 10 rows.
  logits = rng.normal(size=(n + 10, num_classes)).astype(np.float32)
  if multilabel:
    labels = (rng.random((n + 10, num_classes)) < 0.3).astype(np.int32)
  else:
    labels = rng.integers(0, num_classes, n + 10).astype(np.int32)
  loss = rng.exponential(size=n + 10).astype(np.float32)
  mask = np.arange(n + 10) < n
  sums = classification_sums(jnp.asarray(logits), jnp.asarray(labels),
                             jnp.asarray(loss), jnp.asarray(mask, jnp.float32))
  want = sums_to_means(sums)
  task = "multilabel" if multilabel else "multiclass"
  got = evaluate(["accuracy"], logits, labels, task=task, loss=loss, mask=mask,
                 batch=40).metrics
  assert sorted(got) == sorted(want)
  assert ("top5_accuracy" in got) == (num_classes > 5 and not multilabel)
  for key in want:
    assert got[key] == pytest.approx(want[key], rel=1e-6), key


# auc and medmnist

def test_auc_worked_by_hand_and_omitted_when_undefined():
  # P(positive) 0.1, 0.6 for the negatives, 0.4, 0.9 for the positives: three
  # of the four pairs are ordered right.
  logits = np.log([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
  got = evaluate(["auc"], logits, [0, 0, 1, 1], task="binary").metrics
  assert got == {"auc": pytest.approx(0.75)}
  # Class 2 never occurs: its one-vs-rest AUC, hence the mean, is undefined.
  got = evaluate(["auc"], np.eye(3)[[0, 1, 1]], [0, 1, 1], task="multiclass")
  assert got.metrics == {} and got.artifacts == {}


@pytest.mark.parametrize("task,num_classes", [("binary", 2), ("multiclass", 6),
                                              ("ordinal", 5), ("multilabel", 4)])
def test_auc_equals_scikit_learn_and_the_old_path(task, num_classes):
  rng = np.random.default_rng(3)
  n = 60
  logits = rng.normal(size=(n, num_classes)).astype(np.float32)
  if task == "multilabel":
    labels = (rng.random((n, num_classes)) < 0.4).astype(np.int32)
    labels[0], labels[1] = 0, 1
    scores = np.asarray(jax.nn.sigmoid(jnp.asarray(logits)))
    want = skm.roc_auc_score(labels, scores, average="macro")
  else:
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    scores = _softmax(logits)
    want = (skm.roc_auc_score(labels, scores[:, 1]) if task == "binary" else
            skm.roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
  got = evaluate(["auc"], logits, labels, task=task, batch=25).metrics
  assert got["auc"] == pytest.approx(want, abs=1e-12)
  # The loop's former path: official_metrics of the float32 probabilities.
  assert got["auc"] == official_metrics(task, labels, scores)["auc"]


def test_medmnist_pair_worked_by_hand():
  # Binary: ACC thresholds the positive class's probability at 0.5.
  logits = np.log([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
  got = evaluate(["medmnist"], logits, [0, 0, 1, 1], task="binary").metrics
  assert got == {"auc": pytest.approx(0.75), "acc": 0.5}
  # Multi-class: top-1; every class ranks its own example first.
  logits = np.log([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.4, 0.5]])
  got = evaluate(["medmnist"], logits, [0, 1, 2], task="multiclass").metrics
  assert got == {"auc": pytest.approx(1.0), "acc": 1.0}
  # Multi-label: label 0 right twice, label 1 wrong twice (AUC 1 and 0).
  logits = [[2.0, 1.0], [-2.0, -1.0]]
  got = evaluate(["medmnist"], logits, [[1, 0], [0, 1]], task="multilabel").metrics
  assert got == {"auc": 0.5, "acc": 0.5}
  # Undefined AUC: only the ACC.
  got = evaluate(["medmnist"], np.eye(3)[[0, 1, 0]], [0, 1, 1], task="ordinal")
  assert got.metrics == {"acc": pytest.approx(2 / 3)}


# multilabel

def test_multilabel_worked_by_hand_and_against_scikit_learn():
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
  predicted = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
  logits = np.where(predicted, 2.0, -2.0)
  got = evaluate(["multilabel"], logits, labels, task="multilabel").metrics
  # Rows 0 and 2 are exact. Label 0: TP 2, FP 1 -> F1 0.8; label 1: TP 1,
  # FN 1 -> 2/3; label 2 never present nor predicted -> 0. Micro: TP 3,
  # FP 1, FN 1 -> 0.75.
  assert got == {"exact_match": 0.5, "f1_micro": 0.75,
                 "f1_macro": pytest.approx((0.8 + 2 / 3 + 0) / 3)}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert got["exact_match"] == skm.accuracy_score(labels, predicted)
    for average in ("micro", "macro"):
      assert got[f"f1_{average}"] == pytest.approx(
          skm.f1_score(labels, predicted, average=average, zero_division=0))


def test_multilabel_against_scikit_learn_on_random_data():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(90, 7)).astype(np.float32)
  labels = (rng.random((90, 7)) < 0.35).astype(np.int32)
  got = evaluate(["multilabel", "accuracy"], logits, labels, task="multilabel",
                 batch=32).metrics
  predicted = (logits > 0).astype(int)
  assert got["exact_match"] == pytest.approx(skm.accuracy_score(labels, predicted))
  for average in ("micro", "macro"):
    assert got[f"f1_{average}"] == pytest.approx(
        skm.f1_score(labels, predicted, average=average, zero_division=0))


# confusion_matrix

def test_confusion_matrix_against_scikit_learn():
  rng = np.random.default_rng(9)
  k = 6
  logits = rng.normal(size=(120, k)).astype(np.float32)
  labels = rng.integers(0, k - 1, 120).astype(np.int32)  # Class 5 absent.
  names = tuple(f"class {c}" for c in range(k))
  result = evaluate(["confusion_matrix"], logits, labels, task="multiclass",
                    batch=50, class_names=names, split="val")
  artifact = result.artifacts["confusion_matrix"]
  predicted = logits.argmax(-1)
  want = skm.confusion_matrix(labels, predicted, labels=range(k))
  assert artifact == {"matrix": want.tolist(), "class_names": list(names),
                      "split": "val"}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # 'y_pred contains classes not in y_true'
    balanced = skm.balanced_accuracy_score(labels, predicted)
  assert result.metrics == {"balanced_accuracy": pytest.approx(balanced)}


def test_confusion_matrix_by_hand_with_default_names():
  logits = np.eye(3)[[0, 0, 1, 2, 2]]  # Predictions 0, 0, 1, 2, 2.
  result = evaluate(["confusion_matrix"], logits, [0, 1, 1, 1, 2], task="ordinal")
  artifact = result.artifacts["confusion_matrix"]
  assert artifact["matrix"] == [[1, 0, 0], [1, 1, 1], [0, 0, 1]]
  assert artifact["class_names"] == ["0", "1", "2"]
  assert result.metrics["balanced_accuracy"] == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_confusion_matrix_json_and_figure(tmp_path):
  artifact = {"matrix": np.array([[5, 1], [2, 7]]), "class_names": ("cat", "dog"),
              "split": "test"}
  doc = confusion_matrix_json(artifact)
  assert list(doc) == ["split", "rows", "columns", "class_names", "matrix", "total"]
  assert json.loads(json.dumps(doc)) == doc
  assert doc["matrix"] == [[5, 1], [2, 7]] and doc["total"] == 15
  assert doc["class_names"] == ["cat", "dog"]

  import matplotlib.pyplot as plt

  fig = confusion_matrix_figure(artifact)
  ax = fig.axes[0]
  assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "5", "7"]
  assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]
  assert "test" in ax.get_title()
  np.testing.assert_allclose(ax.images[0].get_array(), [[5 / 6, 1 / 6], [2 / 9, 7 / 9]])
  fig.savefig(tmp_path / "test.png")
  plt.close(fig)
  assert (tmp_path / "test.png").stat().st_size > 0
  big = np.diag(np.arange(25))  # Too many classes to print counts; class 0 absent.
  fig = confusion_matrix_figure({"matrix": big.tolist(), "class_names": [],
                                 "split": ""})
  assert not fig.axes[0].texts
  assert [t.get_text() for t in fig.axes[0].get_xticklabels()][:2] == ["0", "1"]
  plt.close(fig)


# Choosing evaluators.

def test_default_evaluators_follow_the_old_rule():
  assert default_evaluators("segmentation", {}) == ("segmentation",)
  assert default_evaluators("detection", {}) == ("detection",)
  for task in CLASSIFICATION_TASKS:
    for metadata in ({}, {"evaluator": "medmnist"}, {"evaluator": "other"}):
      # The loop's former `wants_scores`: the AUC for binary and multi-label
      # tasks and for MedMNIST data.
      wants_scores = (task in ("binary", "multilabel") or
                      metadata.get("evaluator") == "medmnist")
      want = ("accuracy", "auc") if wants_scores else ("accuracy",)
      assert default_evaluators(task, metadata) == want
      assert resolve((), task=task, metadata=metadata) == want


def test_resolve_keeps_valid_names_in_order():
  assert resolve(["confusion_matrix", "accuracy", "medmnist"], task="ordinal",
                 metadata={}) == ("confusion_matrix", "accuracy", "medmnist")
  assert resolve("accuracy, multilabel", task="multilabel",
                 metadata={}) == ("accuracy", "multilabel")


def _one_sentence(raised) -> str:
  message = str(raised.value)
  assert "\n" not in message and message.count("; ") <= 1
  return message


def test_resolve_refuses_unknown_names_with_a_close_match():
  with pytest.raises(CnnjaxError, match="unknown evaluator 'acuracy'; did you "
                     "mean 'accuracy'") as raised:
    resolve(["acuracy"], task="multiclass", metadata={})
  _one_sentence(raised)
  with pytest.raises(CnnjaxError, match="unknown evaluator 'confusion'; did you "
                     "mean 'confusion_matrix'"):
    resolve(["accuracy", "confusion"], task="multiclass", metadata={})


def test_resolve_refuses_evaluators_that_do_not_fit_the_task():
  with pytest.raises(CnnjaxError, match="evaluator 'multilabel' works on "
                     "multilabel tasks, not on this dataset's binary task") as raised:
    resolve(["multilabel"], task="binary", metadata={})
  _one_sentence(raised)
  with pytest.raises(CnnjaxError, match="'confusion_matrix' works on multiclass, "
                     "binary and ordinal tasks, not on this dataset's multilabel"):
    resolve(["accuracy", "confusion_matrix"], task="multilabel", metadata={})
  with pytest.raises(CnnjaxError, match="unknown task 'regression'"):
    resolve(["accuracy"], task="regression", metadata={})
  # The same guard inside the eval step, for callers that skip `resolve`.
  with pytest.raises(CnnjaxError, match="'confusion_matrix' cannot score "
                     "multi-label labels"):
    _outputs(("confusion_matrix",), np.zeros((2, 3), np.float32),
             np.zeros((2, 3), np.int32), np.zeros(2, np.float32), True)


def test_resolve_refuses_two_evaluators_of_one_metric():
  with pytest.raises(CnnjaxError, match="evaluators 'auc' and 'medmnist' both "
                     "report 'auc'; keep only one of them") as raised:
    resolve(["accuracy", "auc", "medmnist"], task="binary", metadata={})
  _one_sentence(raised)
  with pytest.raises(CnnjaxError, match="evaluator 'accuracy' is listed twice"):
    resolve(["accuracy", "accuracy"], task="binary", metadata={})
