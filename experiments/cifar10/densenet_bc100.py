"""CIFAR-10: DenseNet-BC (L=100, k=12; 0.8M parameters), Huang et al. 2017.

    cnnjax train --config experiments/cifar10/densenet_bc100.py

The paper's CIFAR recipe (section 4.2): SGD with Nesterov momentum 0.9
(no dampening), batch 64, 300 epochs, learning rate 0.1 divided by 10 at
50% and 75% of training (epochs 150 and 225), weight decay 1e-4, the
standard augmentation (4-pixel zero padding, random 32x32 crops, random
flips; "C10+") and no dropout, since the data are augmented.

Published: 4.51% test error on C10+, i.e. 95.49% accuracy (Huang et al.
2017, "Densely Connected Convolutional Networks", Table 2).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "densenet_bc100_k12"
  config.batch_size = 64
  config.num_steps = 0
  config.num_epochs = 300.0
  config.optimizer.name = "nesterov"
  config.optimizer.weight_decay = 1e-4
  config.schedule.boundaries = ()
  config.schedule.boundary_epochs = (150.0, 225.0)
  config.eval_every = 7810  # ten epochs of 781 steps
  config.checkpoint_every = 7810
  config.reference.value = 0.9549
  config.reference.source = "Huang et al. 2017, Table 2 (DenseNet-BC L=100 k=12, C10+: 4.51% error)"
  config.reproduce.seeds = 1
  return config
