"""MedMNIST v2: ResNet-18 (224) on the 12 2D subsets.

    cnnjax train --config experiments/medmnist/resnet18_224.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=dermamnist]

The recipe of experiments/medmnist/base.py with torchvision's ImageNet
ResNet-18 (7x7/2 stem and max pooling), as the official script uses for 224
pixels. Data: the MedMNIST+ files `<flag>_224.npz`, images made from the
source data at 224 pixels. The paper's 224 column instead enlarged the 28x28
images to 224 with nearest-neighbour resizing, so these inputs hold more
detail than the published runs saw. Each run holds a whole split in memory
(PathMNIST's training split is about 13.5 GB at this size).

Published (PathMNIST, Table 3, ResNet-18 (224)): test AUC 0.989, ACC 0.909.
"""

from cnnjax.config import config_from, module_from, set_value

BATCH_SIZE = 128


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet18"
  config.model.stem = "imagenet"
  config.dataset.image_size = 224
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = 256  # (256, 224, 224, 3) float32 inputs: 150 MB
  for key, value in get_variants()["pathmnist"].items():
    set_value(config, key, value)
  return config


def get_variants():
  targets = module_from(__file__, "_targets.py")
  return targets.variants(targets.RESNET18_224, "Table 3, ResNet-18 (224)", BATCH_SIZE,
                          volumetric=False)

