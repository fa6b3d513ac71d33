"""CIFAR-100: ResNet-56 (option A shortcuts, 0.86M parameters) with He et al.'s CIFAR-10 recipe.

    cnnjax train --config experiments/cifar100/resnet56.py

The recipe of ../cifar10/resnet56.py (He et al. 2016, section 4.2: SGD with
momentum 0.9, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k in all, weight decay 1e-4, 4-pixel zero padding, random
crops and flips) on TFDS `cifar100` (fine labels); the classifier's 100
outputs follow from the data. He et al. report no CIFAR-100 figure.

Published: 72.63% top-1 and 91.94% top-5 test accuracy for ResNet-56
(chenyaofo/pytorch-cifar-models README, "Model Zoo", CIFAR-100), trained
there with its own 200-epoch recipe, not this one.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../cifar10/resnet56.py")
  config.dataset.name = "cifar100"
  config.reference.value = 0.7263
  config.reference.source = ("chenyaofo/pytorch-cifar-models README, Model Zoo, "
                             "CIFAR-100 ResNet-56: 72.63% top-1")
  config.reference.others = ("test/top5_accuracy=0.9194",)
  config.reproduce.note = ("He et al.'s CIFAR-10 schedule; the cited figure comes "
                           "from a different 200-epoch recipe.")
  return config
