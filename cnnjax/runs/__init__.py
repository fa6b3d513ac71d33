"""Run directories: what a training run writes, and typed access to it.

  run.py          Run: a workdir's config, result, metrics, checkpoints,
                  variables, model and data
  claim.py        the claim a training process holds on its workdir
  files.py        atomic writes, the metric log, curves
  checkpoints.py  Orbax checkpoints (the last K and the best), variables
                  read without the model
  inference.py    batched inference over a split, written once
  trained.py      TrainedModel: a model with a checkpoint's variables and
                  its data (logits, layers, features, probabilities)
"""

from cnnjax.runs.claim import RunClaim, RunClaimed  # noqa: F401
from cnnjax.runs.run import (Run, checkpoint_directory,  # noqa: F401
                             checkpoint_shapes, load_variables, model_for)
from cnnjax.runs.trained import Examples, TrainedModel  # noqa: F401
