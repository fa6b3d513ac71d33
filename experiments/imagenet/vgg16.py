"""ImageNet: VGG-16 (configuration D, no BatchNorm; 138M parameters) with torchvision's recipe.

    cnnjax train --config experiments/imagenet/vgg16.py \
        --config.dataset.data_dir=DIR   # DIR holds the prepared TFDS imagenet2012

The recipe of base.py with torchvision's change for networks without
BatchNorm: learning rate 0.01 instead of 0.1 ("AlexNet and VGG" in
references/classification). SGD with momentum 0.9, batch 256, 90 epochs,
divided by 10 every 30 epochs, weight decay 1e-4, random resized crops and
flips; single 224x224 center crop at evaluation. The paper (Simonyan &
Zisserman 2015) trains with scale jittering and tests densely over several
scales (Tables 3-4), which this pipeline does not do.

Published: 71.592% top-1 / 90.382% top-5 validation accuracy, single center
crop (torchvision VGG16_Weights.IMAGENET1K_V1, trained with this recipe).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "vgg16"
  config.optimizer.learning_rate = 0.01
  config.reference.value = 0.71592
  config.reference.source = ("torchvision VGG16_Weights.IMAGENET1K_V1 "
                             "(acc@1 71.592, acc@5 90.382)")
  config.reference.others = ("validation/top5_accuracy=0.90382",)
  return config
