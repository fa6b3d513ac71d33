"""The baseline of the CIFAR-10 transfer experiment (transfer_target.py):
the same ResNet-18, data (classes 5-9 of the JPEG copy) and 2-epoch budget,
every layer initialised at random.

    cnnjax train --config experiments/cifar10/transfer_scratch.py --config.dataset.data_dir=DIR

No paper reports this split; the target is the transfer run's bar, 70%.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "transfer_target.py")
  config.transfer.init_from = ""
  config.transfer.reinit = ()
  config.transfer.freeze = "none"
  config.transfer.backbone_lr_factor = 1.0
  config.reference.source = ("cnnjax target for ResNet-18 from scratch on CIFAR-10 "
                             "classes 5-9 in 2 epochs (no published figure)")
  config.reproduce.note = "CIFAR-10 (JPEG copy), classes 5-9, 2 epochs on 2 CPU cores."
  config.reproduce.init_from_experiment = ""
  config.reproduce.compare = ()
  return config
