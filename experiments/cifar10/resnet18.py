"""CIFAR-10: ResNet-18 with the 3x3 stem (no 7x7 convolution, no max pooling; 11.2M parameters).

    cnnjax train --config experiments/cifar10/resnet18.py

The common 200-epoch recipe of kuangliu/pytorch-cifar, as in vgg16.py: SGD
with momentum 0.9, batch 128, learning rate 0.1 annealed to 0 by a cosine
over 200 epochs, weight decay 5e-4, 4-pixel zero padding with random 32x32
crops and random flips. The network is torchvision's ResNet-18 with the
CIFAR stem (`model.stem='small'`: one 3x3 convolution, stride 1), so the
four stages see 32, 16, 8 and 4 pixel maps.

Published: 93.02% test accuracy (kuangliu/pytorch-cifar README, "Accuracy"
table; posted with the repository's earlier 350-epoch step schedule).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "vgg16.py")
  config.model.name = "resnet18"
  config.model.stem = "small"
  config.reference.value = 0.9302
  config.reference.source = "kuangliu/pytorch-cifar README, Accuracy table (ResNet18: 93.02%)"
  return config
