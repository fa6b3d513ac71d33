"""MedMNIST v2: ResNet-50 (28) on the 12 2D subsets.

    cnnjax train --config experiments/medmnist/resnet50_28.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=dermamnist]

The recipe of experiments/medmnist/base.py with the official ResNet-50 for
28x28 inputs (bottleneck blocks, CIFAR-style 3x3 stem without max pooling).

Published (PathMNIST, Table 3, ResNet-50 (28)): test AUC 0.990, ACC 0.911.
"""

from cnnjax.config import config_from, module_from, set_value

BATCH_SIZE = 128


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet50"
  config.model.stem = "small"
  config.dataset.image_size = 28
  config.batch_size = BATCH_SIZE
  for key, value in get_variants()["pathmnist"].items():
    set_value(config, key, value)
  return config


def get_variants():
  targets = module_from(__file__, "_targets.py")
  return targets.variants(targets.RESNET50_28, "Table 3, ResNet-50 (28)", BATCH_SIZE,
                          volumetric=False)

