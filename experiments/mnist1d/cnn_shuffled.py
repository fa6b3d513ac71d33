"""MNIST-1D with the time axis of every signal permuted by one fixed random
order (`shuffle_seq`), trained with the reference CNN.

    cnnjax train --config experiments/mnist1d/cnn_shuffled.py

The paper's control experiment: shuffling removes the spatial structure that
convolutions exploit, so the CNN loses its advantage. Published: 56% (the
shuffled row of the table in the MNIST-1D repository's README: logistic
regression 32%, MLP 68%, CNN 56%, GRU 57%), below the MLP, which a fixed
permutation of its inputs cannot affect. The other three models' shuffled
rows: logreg_shuffled.py, mlp_shuffled.py, gru_shuffled.py.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "cnn.py")
  config.dataset.shuffle_seq = True
  config.reference.value = 0.56
  config.reference.source = ("Greydanus & Kobak 2024, MNIST-1D repository README, "
                             "'Comparing MNIST and MNIST-1D', row 'MNIST-1D (shuffle)'")
  return config
