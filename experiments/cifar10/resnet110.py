"""CIFAR-10: ResNet-110 (option A shortcuts, 1.7M parameters), He et al. 2016, section 4.2.

    cnnjax train --config experiments/cifar10/resnet110.py

The recipe of resnet20.py (SGD with momentum 0.9, batch 128, learning rate
0.1 divided by 10 at 32k and 48k iterations, 64k in all, weight decay 1e-4,
4-pixel zero padding, random 32x32 crops and flips), plus the paper's warmup
for this depth: it trains at 0.01 until the training error falls below 80%
(about 400 iterations), then returns to 0.1. cnnjax's warmup is linear, so
here the rate rises from 0 to 0.1 over the first 400 iterations instead.

Published: 6.43% test error, best of 5 runs; 6.61 +- 0.16% their mean, i.e.
93.39% accuracy (He et al. 2016, Table 6). The target is the mean, the
figure a single run is comparable with.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "resnet110"
  config.schedule.warmup_steps = 400
  config.reference.value = 0.9339
  config.reference.source = ("He et al. 2016, Table 6 (ResNet-110: 6.61 +- 0.16% "
                             "mean error of 5 runs; best 6.43%)")
  config.reproduce.seeds = 1
  config.reproduce.note = ("A linear warmup from 0 to 0.1 over the first 400 "
                           "iterations stands in for the paper's constant 0.01.")
  return config
