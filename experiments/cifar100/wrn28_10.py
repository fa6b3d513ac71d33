"""CIFAR-100: Wide ResNet WRN-28-10 with dropout 0.3 (36.5M parameters), Zagoruyko & Komodakis 2016.

    cnnjax train --config experiments/cifar100/wrn28_10.py

The recipe of ../cifar10/wrn28_10.py (SGD with Nesterov momentum 0.9, batch
128, 200 epochs, learning rate 0.1 multiplied by 0.2 at epochs 60, 120 and
160, weight decay 5e-4, reflect-padded random crops and flips, dropout 0.3)
on TFDS `cifar100`; the classifier's 100 outputs follow from the data.

Published: 18.85% test error, i.e. 81.15% accuracy (Zagoruyko & Komodakis
2016, "Wide Residual Networks", WRN-28-10 with dropout on CIFAR-100).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../cifar10/wrn28_10.py")
  config.dataset.name = "cifar100"
  config.reference.value = 0.8115
  config.reference.source = ("Zagoruyko & Komodakis 2016, WRN-28-10 with dropout "
                             "0.3 on CIFAR-100: 18.85% error")
  return config
