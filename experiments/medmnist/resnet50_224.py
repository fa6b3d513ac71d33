"""MedMNIST v2: ResNet-50 (224) on the 12 2D subsets.

    cnnjax train --config experiments/medmnist/resnet50_224.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=dermamnist]

The recipe of experiments/medmnist/base.py with torchvision's ImageNet
ResNet-50 (7x7/2 stem and max pooling) on the MedMNIST+ files
`<flag>_224.npz`. The paper's 224 column enlarged the 28x28 images to 224
with nearest-neighbour resizing instead, so these inputs hold more detail
than the published runs saw.

Published (PathMNIST, Table 3, ResNet-50 (224)): test AUC 0.989, ACC 0.892.
"""

from cnnjax.config import config_from, module_from, set_value

BATCH_SIZE = 128


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet50"
  config.model.stem = "imagenet"
  config.dataset.image_size = 224
  config.batch_size = BATCH_SIZE
  config.eval_batch_size = 256  # (256, 224, 224, 3) float32 inputs: 150 MB
  for key, value in get_variants()["pathmnist"].items():
    set_value(config, key, value)
  return config


def get_variants():
  targets = module_from(__file__, "_targets.py")
  return targets.variants(targets.RESNET50_224, "Table 3, ResNet-50 (224)", BATCH_SIZE,
                          volumetric=False)

