"""LeNet-5 on the digits 5-9 trained from scratch: the baseline of the
transfer experiment (experiments/digits/lenet5_transfer.py).

    cnnjax train --config experiments/digits/lenet5_5to9_scratch.py

The transfer run's data (the 5-9 half of the digits, a 5-way head) and
recipe (20 epochs, Adam at 1e-2, cosine), with every layer initialised at
random instead of from the digits 0-4 network. No paper reports this split;
the target is the transfer run's bar, 90% test accuracy: on about 700
training images of 8x8 digits, scratch training is expected to match the
frozen backbone and fine-tuning.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "lenet5_transfer.py")
  config.transfer.init_from = ""
  config.transfer.reinit = ()
  config.transfer.freeze = "none"
  config.transfer.backbone_lr_factor = 1.0
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.90
  config.reference.source = ("cnnjax target for LeNet-5 from scratch on digits "
                             "5-9 (no published figure)")
  config.reproduce.init_from_experiment = ""
  config.reproduce.compare = ()
  config.reproduce.seeds = 3
  return config
