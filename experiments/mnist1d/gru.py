"""MNIST-1D: the bidirectional GRU baseline, 6 units per direction (5,110 parameters; 5,134 in PyTorch).

    cnnjax train --config experiments/mnist1d/gru.py

Published: 91% test accuracy (Greydanus & Kobak 2024, Table 1).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "mnist1d_gru"
  config.reference.value = 0.91
  return config
