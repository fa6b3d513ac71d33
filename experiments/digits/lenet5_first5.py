"""LeNet-5 on the digits 0-4 only: the source run of a transfer experiment.

    cnnjax train --config experiments/digits/lenet5_first5.py

The LeNet-5 digits recipe (experiments/digits/lenet5.py) on the 0-4 half of
the classes, so a 5-way head. Its checkpoint (runs/digits/lenet5_first5) is
the pretrained network that experiments/digits/lenet5_transfer.py reuses on
the digits 5-9. No paper reports this split; the target, 98% test accuracy,
is the bar of the 10-class recipe.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "lenet5.py")
  config.dataset.classes = (0, 1, 2, 3, 4)
  # Half the examples: 11 steps an epoch instead of 22, so the same
  # evaluation and checkpoint cadence of every 10 epochs is 110 steps.
  config.eval_every = 110
  config.checkpoint_every = 110
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.98
  config.reference.source = "cnnjax target for digits 0-4 (no published figure)"
  return config
