"""CIFAR-100: DenseNet-BC (L=100, k=12; 0.8M parameters), Huang et al. 2017.

    cnnjax train --config experiments/cifar100/densenet_bc100.py

The recipe of ../cifar10/densenet_bc100.py (SGD with Nesterov momentum 0.9,
batch 64, 300 epochs, learning rate 0.1 divided by 10 at epochs 150 and 225,
weight decay 1e-4, standard augmentation, no dropout) on TFDS `cifar100`
("C100+"); the classifier's 100 outputs follow from the data.

Published: 22.27% test error on C100+, i.e. 77.73% accuracy (Huang et al.
2017, "Densely Connected Convolutional Networks", Table 2).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../cifar10/densenet_bc100.py")
  config.dataset.name = "cifar100"
  config.reference.value = 0.7773
  config.reference.source = ("Huang et al. 2017, Table 2 (DenseNet-BC L=100 k=12, "
                             "C100+: 22.27% error)")
  return config
