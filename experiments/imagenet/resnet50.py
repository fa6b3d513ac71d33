"""ImageNet: ResNet-50 (torchvision's v1.5: stride in the 3x3 convolution; 25.6M parameters).

    cnnjax train --config experiments/imagenet/resnet50.py \
        --config.dataset.data_dir=DIR   # DIR holds the prepared TFDS imagenet2012

The recipe of base.py: SGD with momentum 0.9, batch 256, 90 epochs, learning
rate 0.1 divided by 10 every 30 epochs, weight decay 1e-4, random resized
crops and flips; single 224x224 center crop at evaluation. He et al. (2016)
report 22.85% top-1 / 6.71% top-5 error for ResNet-50 with 10-crop testing
(Table 3), a different evaluation from the single crop here.

Published: 76.13% top-1 / 92.862% top-5 validation accuracy, single center
crop (torchvision ResNet50_Weights.IMAGENET1K_V1, trained with this recipe).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "resnet50"
  config.reference.value = 0.7613
  config.reference.source = ("torchvision ResNet50_Weights.IMAGENET1K_V1 "
                             "(acc@1 76.130, acc@5 92.862)")
  config.reference.others = ("validation/top5_accuracy=0.92862",)
  return config
