"""The evaluator interface, its registry, and running a set of evaluators.

An evaluation runs in two halves. Inside the jitted eval step, every chosen
evaluator turns the batch's `EvalInputs` into a few per-example arrays
(`outputs`); the loop gathers them over the split, drops the padding rows and
hands them, concatenated, to each evaluator's `compute` on the host, which
returns metrics (floats) and artifacts (JSON-able values, e.g. a confusion
matrix). Per-example arrays rather than sums keep every metric exact over the
whole split: AUCs, F1 scores and confusion matrices do not add up per batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Sequence

import jax
import numpy as np

from cnnjax.data.arrays import CLASSIFICATION_TASKS, TASKS
from cnnjax.errors import CnnjaxError
from cnnjax.registry import Registry

SINGLE_LABEL_TASKS = tuple(t for t in CLASSIFICATION_TASKS if t != "multilabel")


@dataclasses.dataclass(frozen=True)
class EvalInputs:
  """What the eval step gives every evaluator, per batch, inside jit."""
  logits: jax.Array  # (B, K) float32, averaged over test-time views.
  labels: jax.Array  # (B,) int, or (B, K) 0/1 for multi-label.
  loss: jax.Array    # (B,) per-example loss of the run's loss function.
  multilabel: bool   # Static.


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """Host-side facts about the evaluated split."""
  task: str  # One of cnnjax.data.arrays.TASKS.
  num_classes: int
  class_names: tuple[str, ...] = ()
  split: str = ""

  def __post_init__(self):
    if self.task not in TASKS:
      raise CnnjaxError(f"unknown task '{self.task}' (known: {', '.join(TASKS)})")
    if self.class_names and len(self.class_names) != self.num_classes:
      raise ValueError(f"{len(self.class_names)} class names for "
                       f"{self.num_classes} classes")
    # Lists from metadata become tuples, so a context stays hashable.
    object.__setattr__(self, "class_names", tuple(map(str, self.class_names)))


@dataclasses.dataclass
class EvalResult:
  """What evaluating one split gives: floats, and anything else JSON-able."""
  metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)


class Evaluator:
  """One metric family; subclasses are registered with `@EVALUATORS.register`.

  A subclass sets the class attributes and implements `outputs` (traceable,
  per-example arrays with leading axis B, only what `compute` needs) and
  `compute` (host side, on the split's real rows). The registry makes one
  instance per class and gives it its registered `name`.
  """
  description: ClassVar[str] = ""
  # Every metric `compute` may report; `resolve` refuses two evaluators that
  # share one, since both would be logged as '<split>/<metric>'.
  metric_names: ClassVar[tuple[str, ...]] = ()
  # The tasks it makes sense for (segmentation's evaluators say so).
  tasks: ClassVar[tuple[str, ...]] = CLASSIFICATION_TASKS

  def __init__(self, name: str):
    self.name = name

  def outputs(self, inputs: EvalInputs) -> dict[str, jax.Array]:
    raise NotImplementedError

  def compute(self, outputs: dict[str, np.ndarray],
              context: EvalContext) -> EvalResult:
    raise NotImplementedError

  def __repr__(self) -> str:
    return f"<evaluator '{self.name}'>"


def _make_entry(name: str, cls: type) -> Evaluator:
  if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
    raise TypeError(f"evaluator '{name}' must be an Evaluator subclass, got {cls!r}")
  return cls(name)


# Filled by the modules beside this one, which the package imports.
EVALUATORS: Registry[Evaluator] = Registry("evaluator", make_entry=_make_entry)


def default_evaluators(task: str, metadata: Mapping | None = None) -> tuple[str, ...]:
  """The dataset's own: accuracy, plus the AUC for binary and multi-label
  tasks and for data whose metadata names the MedMNIST evaluator."""
  metadata = metadata or {}
  if task in ("segmentation", "detection"):
    return (task,)
  if task in ("binary", "multilabel") or metadata.get("evaluator") == "medmnist":
    return ("accuracy", "auc")
  return ("accuracy",)


def resolve(names: Sequence[str] | str, *, task: str,
            metadata: Mapping | None = None) -> tuple[str, ...]:
  """The evaluators to run on a dataset of `task`, checked.

  Args:
    names: evaluator names (a comma-separated string is split); empty takes
      `default_evaluators(task, metadata)`.
    task: the dataset's task, one of cnnjax.data.arrays.TASKS.
    metadata: the dataset's metadata (decides the defaults).

  Returns:
    The names, in the order given.

  Raises:
    CnnjaxError: an unknown name (naming close matches), a name listed twice,
      an evaluator that does not fit the task, or two evaluators reporting
      the same metric.
  """
  if task not in TASKS:
    raise CnnjaxError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
  if isinstance(names, str):  # 'accuracy,auc' from a command line.
    names = [n.strip() for n in names.split(",") if n.strip()]
  names = tuple(names)
  if not names:
    return default_evaluators(task, metadata)
  owners: dict[str, str] = {}  # metric -> the evaluator reporting it
  for position, name in enumerate(names):
    if name in names[:position]:
      raise CnnjaxError(f"evaluator '{name}' is listed twice; list each once")
    evaluator = EVALUATORS.get(name)  # Unknown: names the close matches.
    if task not in evaluator.tasks:
      raise CnnjaxError(
          f"evaluator '{name}' works on {_task_list(evaluator.tasks)} tasks, "
          f"not on this dataset's {task} task; remove it from the evaluators")
    for metric in evaluator.metric_names:
      if metric in owners:
        raise CnnjaxError(
            f"evaluators '{owners[metric]}' and '{name}' both report "
            f"'{metric}'; keep only one of them")
      owners[metric] = name
  return names


def batch_outputs(names: Sequence[str], inputs: EvalInputs) -> dict[str, jax.Array]:
  """Every evaluator's per-example outputs, keyed '<evaluator>/<key>'."""
  batch = jax.tree.leaves(inputs.labels)[0].shape[0]
  outputs = {}
  for name in names:
    evaluator = EVALUATORS.get(name)
    fits = ("multilabel" in evaluator.tasks if inputs.multilabel else
            any(t != "multilabel" for t in evaluator.tasks))
    if not fits:  # `resolve` refuses this first; a guard for direct calls.
      kind = "multi-label" if inputs.multilabel else "single-label"
      raise CnnjaxError(f"evaluator '{name}' cannot score {kind} labels; "
                        "remove it from the evaluators")
    for key, value in evaluator.outputs(inputs).items():
      if value.shape[:1] != (batch,):
        raise ValueError(f"evaluator '{name}' output '{key}' has shape "
                         f"{value.shape}, not a leading axis of {batch} examples")
      outputs[f"{name}/{key}"] = value
  return outputs


def compute(names: Sequence[str], outputs: Mapping[str, Any],
            context: EvalContext) -> EvalResult:
  """Metrics and artifacts of a whole split from `batch_outputs`' arrays.

  Args:
    names: the evaluators that produced `outputs`.
    outputs: '<evaluator>/<key>' -> array of the split's real rows only
      (padding removed), concatenated over its batches.
    context: the split's task, classes and name.

  Returns:
    The evaluators' metrics and artifacts, merged.
  """
  arrays = {key: np.asarray(value) for key, value in outputs.items()}
  rows = {len(a) for a in arrays.values()}
  if len(rows) > 1:
    raise ValueError(f"evaluator outputs of different lengths {sorted(rows)}")
  if rows == {0}:
    raise CnnjaxError(f"split '{context.split}' has no examples to evaluate")
  result = EvalResult()
  for name in names:
    evaluator = EVALUATORS.get(name)
    prefix = f"{name}/"
    own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not own:
      raise ValueError(f"no outputs of evaluator '{name}' (keys: {sorted(arrays)})")
    part = evaluator.compute(own, context)
    # Each evaluator's metrics in name order, the evaluators in the order
    # given: 'accuracy', 'loss', 'top5_accuracy', then 'auc'.
    for metric, value in sorted(part.metrics.items()):
      if metric not in evaluator.metric_names:
        raise ValueError(f"evaluator '{name}' reported '{metric}', which it "
                         "does not declare in metric_names")
      if metric in result.metrics:
        raise ValueError(f"two evaluators report '{metric}'")
      result.metrics[metric] = float(value)
    for key, value in part.artifacts.items():
      if key in result.artifacts:
        raise ValueError(f"two evaluators make the artifact '{key}'")
      result.artifacts[key] = value
  return result


def mean(values: np.ndarray) -> float:
  """The float64 mean of per-example values."""
  return float(np.mean(np.asarray(values, np.float64)))


def _task_list(tasks: Sequence[str]) -> str:
  tasks = list(tasks)
  return tasks[0] if len(tasks) == 1 else ", ".join(tasks[:-1]) + " and " + tasks[-1]
