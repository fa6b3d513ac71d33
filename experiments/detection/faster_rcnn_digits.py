"""Detection of scattered handwritten digits: a two-stage Faster R-CNN-style detector
(Ren et al. 2015) on a ResNet-18 backbone's stride-4 map, from scratch.

    cnnjax train --config experiments/detection/faster_rcnn_digits.py

The data is generated in code (cnnjax/data/scenes.py): 4,000 training and
1,000 test images of 64x64 pixels with up to four of scikit-learn's 8x8
digits each, scaled and coloured (10 classes; some images have none), on
textured backgrounds. The
detector (models/detection.py): anchors of 12, 24 and 48 pixels at three
aspect ratios, a region proposal network, RoI Align, a two-layer box head;
SGD with momentum 0.9 at 0.02 with a warmup and cosine decay, batch 16,
5 epochs; no flips (a mirrored digit is not that digit). Evaluated by
COCO's mAP (pycocotools: the `detection` extra).

The detector reads the stride-4 map (`feature_index=1`, after the first
stage) where the shapes detector reads the stride-8 one: a digit of 8-25
pixels is one to three cells of a stride-8 map, too coarse to tell ten
glyphs apart. Measured with one seed at this budget: mAP@0.5 0.18 at
stride 8, 0.60 at stride 4.

No published figure: the data is this project's.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "faster_rcnn_shapes.py")
  config.dataset.name = "digits_detection"
  config.model.feature_index = 1
  config.augment.flip = False
  config.reference.source = "no published figure: procedural scenes (cnnjax.data.scenes)"
  return config
