"""CIFAR-10: ResNet-20 (option A shortcuts, 0.27M parameters), He et al. 2016, section 4.2.

    cnnjax train --config experiments/cifar10/resnet20.py                # TFDS cifar10
    cnnjax train --config experiments/cifar10/resnet20.py \
        --config.dataset.name=image_folder --config.dataset.data_dir=DIR   # DIR/train/<class>/*.jpg

The paper's recipe: SGD with momentum 0.9, batch 128, learning rate 0.1
divided by 10 at 32k and 48k iterations, 64k iterations in all, weight decay
1e-4, 4-pixel zero padding with a random 32x32 crop and a random horizontal
flip. The paper subtracts the per-pixel mean; here each channel is
normalized with the training split's mean and standard deviation.

Published: 8.75% test error, i.e. 91.25% accuracy (He et al. 2016, Table 6).
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "resnet20"
  config.dataset.name = "cifar10"
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_steps = 64_000
  config.optimizer.name = "momentum"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "multistep"
  config.schedule.boundaries = (32_000, 48_000)
  config.schedule.gamma = 0.1
  config.augment.translate = 4
  config.augment.translate_mode = "constant"
  config.augment.flip = True
  config.log_every = 200
  config.eval_every = 2000
  config.checkpoint_every = 2000
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.9125
  config.reference.source = "He et al. 2016, Table 6 (ResNet-20: 8.75% error)"
  return config
