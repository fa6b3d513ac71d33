"""MNIST-1D: logistic regression (410 parameters).

    cnnjax train --config experiments/mnist1d/logreg.py

Published: 32% test accuracy (Greydanus & Kobak 2024, Table 1).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "base.py")
  config.model.name = "logistic_regression"
  config.reference.value = 0.32
  return config
