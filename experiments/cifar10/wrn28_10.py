"""CIFAR-10: Wide ResNet WRN-28-10 with dropout 0.3 (36.5M parameters), Zagoruyko & Komodakis 2016.

    cnnjax train --config experiments/cifar10/wrn28_10.py

The paper's CIFAR recipe (section 3): SGD with Nesterov momentum 0.9 (no
dampening), batch 128, 200 epochs, learning rate 0.1 multiplied by 0.2 at
epochs 60, 120 and 160, weight decay 5e-4, random crops of the image padded
by 4 reflected pixels and random flips, mean/std normalization; dropout 0.3
between the two convolutions of every block (the "dropout" rows of the
paper's results).

Published: 3.89% test error, i.e. 96.11% accuracy (Zagoruyko & Komodakis
2016, "Wide Residual Networks", WRN-28-10 with dropout).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "wrn28_10"
  config.model.dropout_rate = 0.3
  config.num_steps = 0
  config.num_epochs = 200.0
  config.optimizer.name = "nesterov"
  config.optimizer.weight_decay = 5e-4
  config.schedule.boundaries = ()
  config.schedule.boundary_epochs = (60.0, 120.0, 160.0)
  config.schedule.gamma = 0.2
  config.augment.translate_mode = "reflect"
  config.eval_every = 3900  # ten epochs of 390 steps
  config.checkpoint_every = 3900
  config.reference.value = 0.9611
  config.reference.source = ("Zagoruyko & Komodakis 2016, WRN-28-10 with dropout "
                             "0.3 on CIFAR-10: 3.89% error")
  config.reproduce.seeds = 1
  return config
