"""CIFAR-10: ResNet-44 (option A shortcuts, 0.66M parameters), He et al. 2016, section 4.2.

    cnnjax train --config experiments/cifar10/resnet44.py

The recipe of resnet20.py (SGD with momentum 0.9, batch 128, learning rate
0.1 divided by 10 at 32k and 48k iterations, 64k in all, weight decay 1e-4,
4-pixel zero padding, random 32x32 crops and flips); only the depth changes.

Published: 7.17% test error, i.e. 92.83% accuracy (He et al. 2016, Table 6).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "resnet44"
  config.reference.value = 0.9283
  config.reference.source = "He et al. 2016, Table 6 (ResNet-44: 7.17% error)"
  config.reproduce.seeds = 1
  return config
