"""Claim: dropout reduces overfitting, the gap between training and test
accuracy (Srivastava et al. 2014, "Dropout", section 6; the material's
regularization slides).

    cnnjax reproduce --filter claims/dropout

The MNIST-1D reference MLP (experiments/mnist1d/mlp.py), which fits its
4,000 training signals far better than it generalizes (68% test in the
paper), with dropout 0, 0.2 and 0.5 after each hidden layer; 3 seeds, 3,000
of the recipe's 6,000 steps. Analysis 'generalization': the accuracy on the
training split in evaluation mode (no dropout) and the train-test gap.

Measured on 2 busy CPU cores (load average 14): one row (dropout 0.5, one
seed) trained in 21 s (62.0% test accuracy), so the 3 rows x 3 seeds take
about 3.5 minutes.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../mnist1d/mlp.py")
  config.model.dropout_rate = 0.0
  config.num_steps = 3000
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("Srivastava et al. 2014 (Dropout), section 6: dropout "
                             "lowers test error of overfitting networks")
  config.reproduce.seeds = 3
  config.reproduce.compare = ("model.dropout_rate=0.0,0.2,0.5",)
  # The train-test gap ('generalization' analysis) is a mean over seeds in
  # the card, not kept per seed, so the claims are tested on the headline
  # metric: dropout raises test accuracy (the paper's lower test error).
  config.reproduce.claim = ("dropout_rate=0.2 > dropout_rate=0.0",
                            "dropout_rate=0.5 > dropout_rate=0.0")
  config.reproduce.analysis = "generalization"
  config.reproduce.note = "MNIST-1D MLP, 3,000 of the recipe's 6,000 steps"
  return config
