"""ImageNet: ResNet-18 (11.7M parameters) with torchvision's reference recipe.

    cnnjax train --config experiments/imagenet/resnet18.py \
        --config.dataset.data_dir=DIR   # DIR holds the prepared TFDS imagenet2012

The recipe of base.py: SGD with momentum 0.9, batch 256, 90 epochs, learning
rate 0.1 divided by 10 every 30 epochs, weight decay 1e-4, random resized
crops and flips; single 224x224 center crop at evaluation.

Published: 69.758% top-1 / 89.078% top-5 validation accuracy, single center
crop (torchvision ResNet18_Weights.IMAGENET1K_V1, trained with this recipe).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet18"
  config.reference.value = 0.69758
  config.reference.source = ("torchvision ResNet18_Weights.IMAGENET1K_V1 "
                             "(acc@1 69.758, acc@5 89.078)")
  config.reference.others = ("validation/top5_accuracy=0.89078",)
  return config
