"""The octave-convolution claim's analysis: parameters and FLOPs per row.

Octave convolution (experiments/claims/octconv_cifar10.py) claims the same
accuracy for fewer FLOPs at the same parameter count. The card keeps only
accuracies per seed, so 'params_and_flops' puts the arithmetic beside them:
the row's trainable parameters ('params') and its forward FLOPs per example
('flops', 2 per multiply-add of the convolution and dense layers, each
octave path counted at the resolution it runs at: cnnjax.analysis), both
from the row's model as its run built it, on one input of its data's shape.
Nothing trained is needed: no checkpoint is read.
"""

from __future__ import annotations

from cnnjax.analysis import summarize
from cnnjax.reproduce.analyses import ANALYSES, Figures, Runs
from cnnjax.runs import Run


@ANALYSES.register("params_and_flops")
def params_and_flops(runs: Runs) -> Figures:
  """{slug: {'params', 'flops'}} of each row's model, one input example."""
  figures = {}
  for run in runs:
    if run["slug"] in figures:
      continue  # Every seed of a row builds the same model.
    opened = Run.open(run["workdir"])
    summary = summarize(opened.model(), opened.dataset().input_shape,
                        xla_flops=False)
    figures[run["slug"]] = {"params": float(summary.params),
                            "flops": float(summary.flops_counted)}
  return figures
