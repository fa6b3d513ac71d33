"""ImageNet: AlexNet, the paper's two-GPU layout (grouped conv2/4/5, LRN; 61M parameters), Krizhevsky et al. 2012.

    cnnjax train --config experiments/imagenet/alexnet.py \
        --config.dataset.data_dir=DIR   # DIR holds the prepared TFDS imagenet2012

The paper's recipe (section 5): SGD with momentum 0.9, batch 128, weight
decay 5e-4, learning rate 0.01 divided by 10 when the error stopped
improving (three times in all), about 90 epochs; dropout 0.5 in the first
two fully connected layers, LRN after conv1 and conv2; 227x227 inputs.
Here the rate is divided by 10 when the epoch-average training loss has not
improved for 5 epochs (the paper watched the validation error by hand), the
training crops are random resized crops with flips (the paper: random
224 crops of 256x256 images, flips and PCA colour noise) and evaluation is
one center crop (the paper averages 10 crops). torchvision's `alexnet_tv`
with its own recipe reaches 56.52% top-1 instead: a different network and
recipe, not this file's.

Published: 40.7% top-1 / 18.2% top-5 validation error for one CNN, i.e.
59.3% / 81.8% accuracy (Krizhevsky et al. 2012, section 6, Table 2).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "alexnet_groups"
  config.dataset.image_size = 227
  # The network needs inputs of 67 pixels or more (smoke runs cap at 64).
  config.smoke_image_size = 227
  config.batch_size = 128
  config.optimizer.learning_rate = 0.01
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "plateau"
  config.schedule.step_size_epochs = 0.0
  config.schedule.patience = 5
  config.schedule.factor = 0.1
  config.eval_every = 10008  # one epoch of 10,008 steps
  config.checkpoint_every = 10008
  config.reference.value = 0.593
  config.reference.source = ("Krizhevsky et al. 2012, Table 2 (1 CNN: 40.7% top-1, "
                             "18.2% top-5 validation error)")
  config.reference.others = ("validation/top5_accuracy=0.818",)
  config.reproduce.note = ("Plateau on the training loss, random resized crops and "
                           "one center crop at test stand in for the paper's "
                           "manual schedule, fixed-size crops and 10-crop testing.")
  return config
