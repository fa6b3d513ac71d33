"""The weight-sharing claims' analysis: parameter counts and shifted inputs.

An experiment names one `reproduce.analysis`; the weight-sharing experiments
(experiments/claims/weight_sharing_*.py) want two of the existing ones side
by side, so 'params_and_shift' is the union of the figures of 'params'
(trainable parameters per row) and 'shift_invariance' (test accuracy on test
inputs shifted by 0 to 4 positions, 'shift<k>/accuracy', and the drop from 0
to 2, 'shift_drop/0_to_2').

One change for signals (B, L, C): 'shift_invariance' fills the uncovered
border with "black", the training split's minimum for float inputs, which on
MNIST-1D is a value 5.5 standard deviations below the mean, a spike no
training signal has (a measured local CNN scored lower at a shift of 1 than
at 2). A signal's background is zero (MNIST-1D pads its digits with zeros
before adding noise), so signals are shifted with zeros filling the border;
images keep 'shift_invariance' itself.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cnnjax.reproduce.analyses import (ANALYSES, SHIFTS, Figures, Runs, params,
                                       shift, shift_invariance)
from cnnjax.runs import Run


def _signal_shift_accuracies(trained, shifts: Sequence[int]) -> dict[int, float]:
  """{k: test accuracy on the signals moved by k positions, the mean of the
  two directions}, zeros filling the uncovered end."""
  split = trained.dataset.splits[trained.eval_split]
  signals, labels = np.asarray(split["image"]), np.asarray(split["label"])
  accuracies = {}
  for k in shifts:
    offsets = [0] if k == 0 else [k, -k]
    accuracies[k] = float(np.mean([
        np.mean(np.argmax(trained.probabilities(shift(signals, o, 1, 0.0)), -1)
                == labels) for o in offsets]))
  return accuracies


def signal_shift_invariance(runs: Runs, shifts: Sequence[int] = SHIFTS) -> Figures:
  """'shift_invariance' for signals, with zeros filling the border."""
  groups: dict[str, list[dict[str, float]]] = {}
  for run in runs:
    trained = Run.open(run["workdir"]).trained()
    groups.setdefault(run["slug"], []).append(
        _signal_shift_accuracies(trained, shifts))
  figures = {}
  for slug, per_seed in groups.items():
    row = {f"shift{k}/accuracy": float(np.mean([s[k] for s in per_seed]))
           for k in shifts}
    if 0 in shifts and 2 in shifts:
      row["shift_drop/0_to_2"] = row["shift0/accuracy"] - row["shift2/accuracy"]
    figures[slug] = row
  return figures


@ANALYSES.register("params_and_shift")
def params_and_shift(runs: Runs) -> Figures:
  """{slug: {'params', 'shift<k>/accuracy', 'shift_drop/0_to_2'}}."""
  figures = {slug: dict(row) for slug, row in params(runs).items()}
  trained = Run.open(runs[0]["workdir"]).trained()
  split = trained.dataset.splits[trained.eval_split]
  is_signal = np.ndim(split["image"]) == 3  # (N, L, C)
  shifted = signal_shift_invariance(runs) if is_signal else shift_invariance(runs)
  for slug, row in shifted.items():
    figures.setdefault(slug, {}).update(row)
  return figures
