"""Analyses: figures computed from the finished runs of an experiment.

`cnnjax reproduce` trains every row (setting) x seed of an experiment, then,
when its config names `reproduce.analysis`, calls

    figures = run_analysis(name, runs)  # {slug: {figure: value}}

with `runs` the finished runs, each a dict {'slug', 'setting', 'seed',
'workdir', 'result'}; the figures join the row's card. The analyses (the
`ANALYSES` registry):

- 'params': the number of trainable parameters of the row's model;
- 'shift_invariance': test accuracy on test inputs shifted by 0 to 4
  positions, black filling the uncovered border ('shift<k>/accuracy', mean
  over the seeds and the two directions of every spatial axis) and the drop
  from 0 to 2 ('shift_drop/0_to_2');
- 'ensemble': the accuracy of the seeds' averaged softmax
  ('ensemble/accuracy') against the mean single network
  ('single/accuracy_mean'), and the number of members ('members');
- 'generalization': the accuracy on the training split in evaluation mode
  (no dropout, no augmentation: 'train/accuracy') and the gap to the test
  accuracy ('gap/accuracy'), means over the seeds.

Every evaluation restores the run's latest checkpoint and uses the run's own
preprocessing (uint8 -> [0, 1], per-channel normalization, test-time views
if the run had them), jitted and batched over the whole split.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.registry import Registry
from cnnjax.runs import Run

Runs = Sequence[dict[str, Any]]
Figures = dict[str, dict[str, float]]

ANALYSES: Registry[Callable[[Runs], Figures]] = Registry("analysis")

SHIFTS = (0, 1, 2, 3, 4)


def list_analyses() -> list[str]:
  return sorted(ANALYSES.names())


def run_analysis(name: str, runs: Runs) -> Figures:
  """The figures of analysis `name` on the finished `runs`, by setting slug."""
  if name not in ANALYSES:
    # Every name, sorted: the config names one, and there are only a few.
    raise CnnjaxError(f"unknown analysis '{name}' in config.reproduce.analysis; "
                      f"the known ones are {', '.join(list_analyses())}")
  if not runs:
    return {}
  return ANALYSES.get(name)(runs)


# --------------------------------------------------------------------------
# A restored run and its predictions


def _load_trained(workdir: str):
  """The latest checkpoint of a finished single-label run (runs.TrainedModel)."""
  trained = Run.open(workdir).trained()
  if trained.dataset.task not in ("multiclass", "ordinal"):
    raise CnnjaxError(f"reproduce.analysis scores single-label classification; "
                      f"the run in '{workdir}' has a {trained.dataset.task} dataset")
  return trained


def _by_slug(runs: Runs) -> dict[str, list[dict[str, Any]]]:
  """The runs grouped by setting, in first-seen order, each sorted by seed."""
  groups: dict[str, list[dict[str, Any]]] = {}
  for run in runs:
    groups.setdefault(run["slug"], []).append(run)
  return {slug: sorted(group, key=lambda r: r["seed"]) for slug, group in groups.items()}


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(probabilities, axis=-1) == np.asarray(labels)))


def shift(images: np.ndarray, offset: int, axis: int, fill) -> np.ndarray:
  """images (N, *S, C) moved by `offset` positions along `axis` (a spatial
  axis, 1-based), the uncovered border set to `fill`; content moved past the
  edge is lost."""
  if offset == 0:
    return images
  out = np.full_like(images, fill)
  length = images.shape[axis]
  if abs(offset) >= length:
    return out
  source = [slice(None)] * images.ndim
  target = [slice(None)] * images.ndim
  if offset > 0:
    source[axis], target[axis] = slice(0, length - offset), slice(offset, None)
  else:
    source[axis], target[axis] = slice(-offset, None), slice(0, length + offset)
  out[tuple(target)] = images[tuple(source)]
  return out


def _black(trained) -> Any:
  """The stored value of black: 0 for uint8 images; for inputs stored as
  floats (digits are standardized) the training split's minimum, which is
  the standardized 0 of the background."""
  train = trained.dataset.splits[trained.dataset.train_split]["image"]
  return 0 if train.dtype == np.uint8 else float(np.min(train))


# --------------------------------------------------------------------------
# The analyses


@ANALYSES.register("params")
def params(runs: Runs) -> Figures:
  """{'params': trainable parameters of the row's model} per setting."""
  import jax

  figures = {}
  for slug, group in _by_slug(runs).items():
    trained = _load_trained(group[0]["workdir"])
    count = sum(int(np.size(leaf))
                for leaf in jax.tree.leaves(trained.variables.get("params", {})))
    figures[slug] = {"params": float(count)}
  return figures


@ANALYSES.register("shift_invariance")
def shift_invariance(runs: Runs, shifts: Sequence[int] = SHIFTS,
                     fill: float | None = None) -> Figures:
  """Test accuracy on shifted test inputs, means over seeds and directions;
  `fill` fills the uncovered border (None: the input's black, see _black)."""
  figures = {}
  for slug, group in _by_slug(runs).items():
    per_shift: dict[int, list[float]] = {k: [] for k in shifts}
    for entry in group:
      trained = _load_trained(entry["workdir"])
      split = trained.dataset.splits[trained.eval_split]
      images, labels = np.asarray(split["image"]), np.asarray(split["label"])
      probabilities = trained.probabilities
      border = _black(trained) if fill is None else fill
      axes = range(1, images.ndim - 1)  # the spatial axes
      for k in shifts:
        moves = [(0, 1)] if k == 0 else [(s * k, a) for a in axes for s in (1, -1)]
        accuracies = [_accuracy(probabilities(shift(images, o, a, border)), labels)
                      for o, a in moves]
        per_shift[k].append(float(np.mean(accuracies)))
    row = {f"shift{k}/accuracy": float(np.mean(v)) for k, v in per_shift.items()}
    if 0 in per_shift and 2 in per_shift:
      row["shift_drop/0_to_2"] = row["shift0/accuracy"] - row["shift2/accuracy"]
    figures[slug] = row
  return figures


@ANALYSES.register("ensemble")
def ensemble(runs: Runs) -> Figures:
  """The averaged softmax of every seed's final network against one network."""
  figures = {}
  for slug, group in _by_slug(runs).items():
    total, singles, labels = None, [], None
    for entry in group:
      trained = _load_trained(entry["workdir"])
      split = trained.dataset.splits[trained.eval_split]
      probabilities = trained.probabilities(split["image"])
      if labels is None:
        labels = np.asarray(split["label"])
      elif not np.array_equal(labels, split["label"]):
        raise CnnjaxError(f"the seeds of '{slug}' were tested on different data; "
                          "an ensemble needs the same test split for every member")
      singles.append(_accuracy(probabilities, labels))
      total = probabilities if total is None else total + probabilities
    figures[slug] = {"ensemble/accuracy": _accuracy(total / len(group), labels),
                     "single/accuracy_mean": float(np.mean(singles)),
                     "members": float(len(group))}
  return figures


@ANALYSES.register("generalization")
def generalization(runs: Runs) -> Figures:
  """Training-split accuracy in evaluation mode and its gap to the test's."""
  figures = {}
  for slug, group in _by_slug(runs).items():
    train_accuracies, gaps = [], []
    for entry in group:
      trained = _load_trained(entry["workdir"])
      probabilities = trained.probabilities
      accuracy = {}
      for name in (trained.dataset.train_split, trained.eval_split):
        split = trained.dataset.splits[name]
        accuracy[name] = _accuracy(probabilities(split["image"]), split["label"])
      train_accuracies.append(accuracy[trained.dataset.train_split])
      gaps.append(accuracy[trained.dataset.train_split] - accuracy[trained.eval_split])
    figures[slug] = {"train/accuracy": float(np.mean(train_accuracies)),
                     "gap/accuracy": float(np.mean(gaps))}
  return figures
