"""MedMNIST v2: ResNet-18 (28) on the 12 2D subsets, the benchmark's baseline.

    cnnjax train --config experiments/medmnist/resnet18_28.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=dermamnist]

DIR holds the official `<flag>.npz` files (or add --config.dataset.download=true
with `pip install medmnist`). The recipe is experiments/medmnist/base.py; the
network is the official one for 28x28 inputs: ResNet-18 with the CIFAR-style
stem (3x3 convolution, no max pooling). The default is PathMNIST; the variants
(get_variants) cover every 2D subset, ChestMNIST with sigmoid cross-entropy.

Published (PathMNIST, Table 3, ResNet-18 (28)): test AUC 0.983, ACC 0.907.
"""

from cnnjax.config import config_from, module_from, set_value

BATCH_SIZE = 128


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet18"
  config.model.stem = "small"
  config.dataset.image_size = 28
  config.batch_size = BATCH_SIZE
  for key, value in get_variants()["pathmnist"].items():
    set_value(config, key, value)
  return config


def get_variants():
  targets = module_from(__file__, "_targets.py")
  return targets.variants(targets.RESNET18_28, "Table 3, ResNet-18 (28)", BATCH_SIZE,
                          volumetric=False)

