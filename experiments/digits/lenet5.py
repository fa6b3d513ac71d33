"""LeNet-5 (classic: tanh, average pooling) on scikit-learn's 8x8 digits.

    cnnjax train --config experiments/digits/lenet5.py

The 8x8 digits are resized to 28x28 and zero-padded to LeNet-5's 32x32 field,
split 80/20 (1,437 train / 360 test), and shifted by up to 2 pixels at random
while training (without it, test accuracy stays near 97.5%). No paper reports LeNet-5 on this set;
the target, 98% test accuracy, is this project's bar for it (LeCun et al.
1998 report 99.05% on MNIST, a different and larger dataset).
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "lenet5"
  config.dataset.name = "digits"
  config.dataset.image_size = 32
  config.dataset.resize = 28
  config.dataset.split_seed = 0
  config.dataset.test_fraction = 0.2
  config.augment.translate = 2
  config.batch_size = 64
  config.num_epochs = 60.0
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.log_every = 50
  config.eval_every = 220
  config.checkpoint_every = 220
  config.reproduce.seeds = 3
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.98
  config.reference.source = "cnnjax target for digits (no published figure)"
  return config
