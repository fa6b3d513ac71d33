"""ImageNet: ZFNet (AlexNet with a 7x7/2 first layer and a stride-2 conv2; 62M parameters), Zeiler & Fergus 2014.

    cnnjax train --config experiments/imagenet/zfnet.py \
        --config.dataset.data_dir=DIR   # DIR holds the prepared TFDS imagenet2012

The paper's recipe (section 3.1): SGD with momentum 0.9, batch 128,
learning rate 0.01 annealed by hand when the validation error plateaued,
dropout 0.5 in the fully connected layers, 70 epochs, 224x224 inputs. The
paper gives no weight decay; AlexNet's 5e-4 is used. Here the rate is
divided by 10 when the epoch-average training loss has not improved for 5
epochs; the paper's renormalization of first-layer filters whose RMS
exceeds 0.1 is not done; training crops are random resized crops with flips
(the paper: 10 fixed 224 crops of 256x256 images) and evaluation is one
center crop.

Published: 38.4% top-1 / 16.5% top-5 validation error for one network, i.e.
61.6% / 83.5% accuracy (Zeiler & Fergus 2014, ECCV, Table 2, "1 convnet as
per Fig. 3").
"""

from cnnjax.config import config_from


def get_config():
  # Zeiler & Fergus trained as Krizhevsky et al. did (section 3.1), so this
  # is the AlexNet file with ZFNet's network, input size and epochs.
  config = config_from(__file__, "alexnet.py")
  config.model.name = "zfnet"
  config.dataset.image_size = 224
  config.smoke_image_size = 64
  config.num_epochs = 70.0
  config.reference.value = 0.616
  config.reference.source = ("Zeiler & Fergus 2014, Table 2 (1 convnet as per "
                             "Fig. 3: 38.4% top-1, 16.5% top-5 validation error)")
  config.reference.others = ("validation/top5_accuracy=0.835",)
  config.reproduce.note = ("No filter-RMS renormalization; plateau on the training "
                           "loss, random resized crops and one center crop at test.")
  return config
