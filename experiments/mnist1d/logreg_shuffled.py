"""MNIST-1D with the time axis of every signal permuted by one fixed random
order (`shuffle_seq`), trained with the logistic regression of logreg.py.

    cnnjax train --config experiments/mnist1d/logreg_shuffled.py

Published: 32% (the shuffled row of the table in the MNIST-1D repository's
README). A fixed permutation of the inputs is a relabelling of the weights,
so the shuffled accuracy should equal the unshuffled one (32%).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "logreg.py")
  config.dataset.shuffle_seq = True
  config.reference.value = 0.32
  config.reference.source = ("Greydanus & Kobak 2024, MNIST-1D repository README, "
                             "'Comparing MNIST and MNIST-1D', row 'MNIST-1D (shuffle)'")
  return config
