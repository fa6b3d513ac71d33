"""MNIST-1D with the time axis of every signal permuted by one fixed random
order (`shuffle_seq`), trained with the bidirectional GRU of gru.py.

    cnnjax train --config experiments/mnist1d/gru_shuffled.py

Published: 57% (the shuffled row of the table in the MNIST-1D repository's
README). The GRU reads the signal in order, so it loses its advantage as the
CNN does (91% unshuffled).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "gru.py")
  config.dataset.shuffle_seq = True
  config.reference.value = 0.57
  config.reference.source = ("Greydanus & Kobak 2024, MNIST-1D repository README, "
                             "'Comparing MNIST and MNIST-1D', row 'MNIST-1D (shuffle)'")
  return config
