"""CIFAR-10: ResNet-32 (option A shortcuts, 0.46M parameters), He et al. 2016, section 4.2.

    cnnjax train --config experiments/cifar10/resnet32.py

The recipe of resnet20.py (SGD with momentum 0.9, batch 128, learning rate
0.1 divided by 10 at 32k and 48k iterations, 64k in all, weight decay 1e-4,
4-pixel zero padding, random 32x32 crops and flips); only the depth changes.

Published: 7.51% test error, i.e. 92.49% accuracy (He et al. 2016, Table 6).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "resnet32"
  config.reference.value = 0.9249
  config.reference.source = "He et al. 2016, Table 6 (ResNet-32: 7.51% error)"
  config.reproduce.seeds = 1
  return config
