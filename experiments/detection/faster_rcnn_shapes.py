"""Detection of procedural shapes: a two-stage Faster R-CNN-style detector
(Ren et al. 2015) on a ResNet-18 backbone's stride-8 map, from scratch.

    cnnjax train --config experiments/detection/faster_rcnn_shapes.py

The data is generated in code (cnnjax/data/scenes.py): 4,000 training and
1,000 test images of 64x64 pixels with up to four squares, circles and
triangles each (some images have none) on textured backgrounds. The
detector (models/detection.py): anchors of 12, 24 and 48 pixels at three
aspect ratios, a region proposal network, RoI Align, a two-layer box head;
SGD with momentum 0.9 at 0.02 with a warmup and cosine decay, batch 16,
5 epochs (1,250 steps: about 8 minutes on two CPU cores), random flips
(boxes mirrored with their images). Evaluated by COCO's mAP (pycocotools:
the `detection` extra).

No published figure: the data is this project's. The issue's aim is
mAP@0.5 >= 0.9 on these shapes.
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "faster_rcnn"
  config.model.backbone = "resnet18"
  config.dataset.name = "shapes_detection"
  config.dataset.image_size = 64
  config.batch_size = 16
  config.eval_batch_size = 100
  config.num_epochs = 5
  config.optimizer.name = "momentum"
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.clip_norm = 10.0
  config.schedule.name = "cosine"
  config.schedule.warmup_epochs = 1
  config.augment.flip = True
  config.log_every = 100
  config.eval_every = 2500  # at the end
  config.checkpoint_every = 1000
  config.best_metric = "test/map_50"
  config.reference.metric = "test/map_50"
  config.reference.source = ("no published figure: procedural scenes (cnnjax.data.scenes); "
                             "the aim is mAP@0.5 >= 0.9")
  return config
