"""MNIST-1D: the reference CNN: three strided 1D convolutions of 25 channels (5,210 parameters).

    cnnjax train --config experiments/mnist1d/cnn.py

Published: 94% test accuracy (Greydanus & Kobak 2024, Table 1).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "mnist1d_cnn"
  config.reference.value = 0.94
  return config
