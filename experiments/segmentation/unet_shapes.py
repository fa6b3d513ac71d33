"""Segmentation of procedural shapes: a U-Net decoder (Ronneberger et al.
2015) on a ResNet-18 backbone, from scratch.

    cnnjax train --config experiments/segmentation/unet_shapes.py

The data is generated in code (cnnjax/data/scenes.py): 4,000 training and
1,000 test images of 64x64 pixels, each with up to four squares, circles and
triangles on textured backgrounds, and a class map (background + 3
classes). Adam at 1e-3 with a cosine decay, batch 32, 30 epochs, random
flips and 4-pixel translations (the class maps move with their images).
Evaluated by mean IoU (background included) and pixel accuracy.

No published figure: the data is this project's. The comparison that
matters is U-Net against FCN-8s on the same data (segmentation/fcn8s_shapes).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "fcn8s_shapes.py")
  config.model.name = "unet"
  del config.model["variant"]  # FCN's
  return config
