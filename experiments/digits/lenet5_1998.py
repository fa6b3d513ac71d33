"""LeNet-5 as published (LeCun et al. 1998) on scikit-learn's 8x8 digits.

    cnnjax train --config experiments/digits/lenet5_1998.py

The paper's network (model `lenet5_1998`, 60,000 parameters): trainable
subsampling, Table I's sparse C3, the scaled tanh A tanh(S a) and 10 fixed
Euclidean RBF outputs, trained with softmax cross-entropy on the negated RBF
distances (the paper's MAP loss without its constant 'rubbish' class). The
data and shifts are experiments/digits/lenet5.py's: the 8x8 digits resized to
28x28, zero-padded to 32x32, split 80/20 (1,437 train / 360 test) and shifted
by up to 2 pixels at random while training. No paper reports LeNet-5 on this
set; the target, 98% test accuracy, is this project's bar for the digits
(LeCun et al. 1998 report 99.05% on MNIST, a different and larger dataset:
experiments/mnist/lenet5_1998.py). The recipe is lenet5.py's, set here
explicitly: Adam at 1e-3 with cosine decay, batch 64, 60 epochs (1,320 steps).

Measured on 2 CPU cores: 98.3%, 98.1% and 98.1% test accuracy for seeds 0, 1
and 2; 49 s wall time for seed 0 (34-39 s of training per seed).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "lenet5.py")
  config.model.name = "lenet5_1998"
  config.batch_size = 64
  config.num_epochs = 60.0
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.98
  config.reference.source = "cnnjax target for digits (no published figure)"
  return config
