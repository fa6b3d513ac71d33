"""MedMNIST v2: ResNet-50 + 3D on the 6 MedMNIST3D subsets (28x28x28 volumes).

    cnnjax train --config experiments/medmnist/resnet50_3d.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=nodulemnist3d]

As experiments/medmnist/resnet18_3d.py with ResNet-50 (bottleneck blocks,
cubic kernels, 3x3 stem without max pooling), batch 32.

Published (OrganMNIST3D, Table 4, ResNet-50 + 3D): test AUC 0.994, ACC 0.883.
"""

from cnnjax.config import config_from, module_from, set_value

BATCH_SIZE = 32


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet50_3d"
  config.model.stem = "small"
  config.dataset.image_size = 28
  config.batch_size = BATCH_SIZE
  for key, value in get_variants()["organmnist3d"].items():
    set_value(config, key, value)
  return config


def get_variants():
  targets = module_from(__file__, "_targets.py")
  return targets.variants(targets.RESNET50_3D, "Table 4, ResNet-50 + 3D", BATCH_SIZE,
                          volumetric=True)

