"""MNIST-1D: the reference MLP: 100-100 ReLU with a residual second layer (15,210 parameters).

    cnnjax train --config experiments/mnist1d/mlp.py

Published: 68% test accuracy (Greydanus & Kobak 2024, Table 1).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "mnist1d_mlp"
  config.reference.value = 0.68
  return config
