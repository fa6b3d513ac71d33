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
before adding noise), so signals are shifted with zeros filling the border
(fill=0.0); images keep the default.
"""

from __future__ import annotations

import numpy as np

from cnnjax.reproduce.analyses import ANALYSES, Figures, Runs, params, shift_invariance
from cnnjax.runs import Run


@ANALYSES.register("params_and_shift")
def params_and_shift(runs: Runs) -> Figures:
  """{slug: {'params', 'shift<k>/accuracy', 'shift_drop/0_to_2'}}."""
  figures = {slug: dict(row) for slug, row in params(runs).items()}
  trained = Run.open(runs[0]["workdir"]).trained()
  split = trained.dataset.splits[trained.eval_split]
  is_signal = np.ndim(split["image"]) == 3  # (N, L, C)
  shifted = shift_invariance(runs, fill=0.0 if is_signal else None)
  for slug, row in shifted.items():
    figures.setdefault(slug, {}).update(row)
  return figures
