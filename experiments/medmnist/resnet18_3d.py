"""MedMNIST v2: ResNet-18 + 3D on the 6 MedMNIST3D subsets (28x28x28 volumes).

    cnnjax train --config experiments/medmnist/resnet18_3d.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=nodulemnist3d]

The recipe of experiments/medmnist/base.py on volumes: the official 3D
baseline is the 28-pixel ResNet-18 (3x3 stem, no max pooling) with every
kernel made cubic, so `resnet18_3d` with stem='small'. The batch is 32, the
default of the official MedMNIST3D script. Departure: that script's
--shape_transform option for the shape subsets (AdrenalMNIST3D,
VesselMNIST3D: volumes times a random factor in training, times 0.5 in
evaluation) has no counterpart here.

Published (OrganMNIST3D, Table 4, ResNet-18 + 3D): test AUC 0.996, ACC 0.907.
"""

from cnnjax.config import config_from, module_from, set_value

BATCH_SIZE = 32


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet18_3d"
  config.model.stem = "small"
  config.dataset.image_size = 28
  config.batch_size = BATCH_SIZE
  for key, value in get_variants()["organmnist3d"].items():
    set_value(config, key, value)
  return config


def get_variants():
  targets = module_from(__file__, "_targets.py")
  return targets.variants(targets.RESNET18_3D, "Table 4, ResNet-18 + 3D", BATCH_SIZE,
                          volumetric=True)

