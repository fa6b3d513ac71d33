"""Segmentation of procedural shapes: FCN-8s on a ResNet-18 backbone, from
scratch (Long et al. 2015's skips and learned upsampling).

    cnnjax train --config experiments/segmentation/fcn8s_shapes.py

The data is generated in code (cnnjax/data/scenes.py): 4,000 training and
1,000 test images of 64x64 pixels, each with up to four squares, circles and
triangles on textured backgrounds, and a class map (background + 3
classes). Adam at 1e-3 with a cosine decay, batch 32, 30 epochs, random
flips and 4-pixel translations (the class maps move with their images).
Evaluated by mean IoU (background included) and pixel accuracy.

No published figure: the data is this project's. The comparison that
matters is FCN against U-Net on the same data (segmentation/unet_shapes).
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "fcn"
  config.model.backbone = "resnet18"
  config.model.variant = "8s"
  config.dataset.name = "shapes_segmentation"
  config.dataset.image_size = 64
  config.batch_size = 32
  config.eval_batch_size = 100
  config.num_epochs = 30
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-5
  config.schedule.name = "cosine"
  config.schedule.warmup_epochs = 1
  config.augment.flip = True
  config.augment.translate = 4
  config.augment.translate_mode = "constant"
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.best_metric = "test/mean_iou"
  config.reference.metric = "test/mean_iou"
  config.reference.source = "no published figure: procedural scenes (cnnjax.data.scenes)"
  return config
