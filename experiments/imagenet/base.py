"""The shared ImageNet recipe: torchvision's classification reference
(references/classification in pytorch/vision), which trained the torchvision
weights the experiments here aim at.

ILSVRC-2012 through TFDS `imagenet2012` (1,281,167 training images, scored
on the 50,000 `validation` images; TFDS's `test` split has no labels).
Training images get a random resized crop (8%-100% of the area, aspect 3/4
to 4/3) and a random flip; evaluation takes the central 87.5% square and
resizes it to 224 (224 of 256). Channels are normalized with ImageNet's
mean and standard deviation. SGD with momentum 0.9, batch 256 (8 GPUs x 32
in the reference), 90 epochs, learning rate 0.1 divided by 10 every 30
epochs, weight decay 1e-4. The model files set the model, any recipe
changes and the published target; top-1 is `validation/accuracy` and top-5
`validation/top5_accuracy`.
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "imagenet2012"
  config.dataset.image_size = 224
  config.dataset.eval_splits = ("validation",)
  config.augment.crop_scale = (0.08, 1.0)
  config.augment.flip = True
  config.batch_size = 256
  config.eval_batch_size = 500
  config.num_epochs = 90.0
  config.optimizer.name = "momentum"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "step"
  config.schedule.step_size_epochs = 30.0
  config.schedule.gamma = 0.1
  config.log_every = 500
  config.eval_every = 5004  # one epoch of 5,004 steps
  config.checkpoint_every = 5004
  config.best_metric = "validation/accuracy"
  config.reference.metric = "validation/accuracy"
  config.reproduce.seeds = 1
  return config
