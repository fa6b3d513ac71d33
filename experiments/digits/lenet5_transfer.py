"""Transfer learning with LeNet-5: features learnt on the digits 0-4, reused
for the digits 5-9 (a new 5-way head).

First train the source network, then this one:

    cnnjax train --config experiments/digits/lenet5_first5.py
    cnnjax train --config experiments/digits/lenet5_transfer.py

Every array of the source run whose path and shape fit is copied (c1, c3, c5,
f6); the head, 84 -> 5 in both runs but re-initialised through
transfer.reinit, starts fresh. The three scenarios:

  fixed feature extractor (this file's default): only the head trains;
  fine-tune everything, the pretrained layers at a tenth of the rate:
    cnnjax train --config experiments/digits/lenet5_transfer.py \\
      --workdir runs/digits/lenet5_finetune \\
      --config.transfer.freeze=none --config.transfer.backbone_lr_factor=0.1
  fine-tune the top layers only (c1 and c3 frozen):
    cnnjax train --config experiments/digits/lenet5_transfer.py \\
      --workdir runs/digits/lenet5_finetune_top \\
      --config.transfer.freeze=none --config.optimizer.lr_multipliers='^(c1|c3)/=0'

No paper reports this split; the target, 90% test accuracy for the frozen
backbone (a linear classifier on f6's 84 features), is this project's bar.
Training from scratch on digits 5-9 reaches about the same accuracy as
fine-tuning: transfer pays most when the target task is short of data, and
about 700 training images of 8x8 digits are not.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "lenet5.py")
  config.dataset.classes = (5, 6, 7, 8, 9)
  # Both halves have 5 classes, so the head's shape matches the source's:
  # it must be re-initialised explicitly (its outputs meant 0-4 there).
  config.transfer.init_from = "runs/digits/lenet5_first5"
  config.transfer.reinit = ("head",)
  config.transfer.freeze = "backbone"
  config.num_epochs = 20.0
  # The new head starts from scratch and wants a larger step than the
  # source's 1e-3; fine-tuned layers (backbone_lr_factor=0.1) get 1e-3.
  config.optimizer.learning_rate = 1e-2
  config.eval_every = 110
  config.checkpoint_every = 110
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.90
  config.reference.source = ("cnnjax target for a frozen LeNet-5 backbone on "
                             "digits 5-9 (no published figure)")
  # `cnnjax reproduce` trains the source first and points init_from at its
  # seed-0 run; the rows are the frozen backbone and fine-tuning everything
  # (the scratch baseline is experiments/digits/lenet5_5to9_scratch.py).
  config.reproduce.init_from_experiment = "digits/lenet5_first5"
  config.reproduce.compare = ("transfer.freeze=backbone,none",)
  config.reproduce.seeds = 3
  return config
