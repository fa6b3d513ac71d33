"""CIFAR-10: plain-32, ResNet-32 without its shortcuts, He et al. 2016, Figure 6.

    cnnjax train --config experiments/cifar10/plain32.py

The recipe of resnet20.py (SGD with momentum 0.9, batch 128, learning rate
0.1 divided by 10 at 32k and 48k iterations, 64k in all, weight decay 1e-4,
4-pixel zero padding, random 32x32 crops and flips) on the same stack of
3x3 convolutions with no identity shortcuts. The paper's point is the
degradation problem: deeper plain nets end with higher training and test
error than shallower ones, while deeper ResNets end lower.

Published: no figure in a table; Figure 6 (left) shows the plain nets' error
curves only, so the card has no number to compare with.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "plain32"
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = "He et al. 2016, Figure 6 (curves only, no figure in a table)"
  config.reproduce.seeds = 1
  return config
