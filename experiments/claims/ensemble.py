"""Claim: averaging the predictions of several independently trained
networks beats one of them (Krizhevsky et al. 2012, AlexNet, section 6:
7 CNNs, 18.2% -> 15.4% top-5 error; the material's ensemble slide).

    cnnjax reproduce --filter claims/ensemble

The MNIST-1D reference CNN (experiments/mnist1d/cnn.py) trained with 5
seeds; analysis 'ensemble': the test accuracy of the 5 networks' averaged
softmax ('ensemble/accuracy') against the mean of the single networks
('single/accuracy_mean'). 3,000 of the recipe's 6,000 steps.

Measured on 2 busy CPU cores (load average 14): one seed trained in 19 s
(95.1% test accuracy), so the 5 seeds take about 2 minutes.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../mnist1d/cnn.py")
  config.num_steps = 3000
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("Krizhevsky et al. 2012 (AlexNet), section 6: an "
                             "ensemble of 7 CNNs beats one")
  config.reproduce.seeds = 5
  config.reproduce.analysis = "ensemble"
  # No claim to test on compare rows: there are none, and the ensemble's
  # accuracy is one figure over all 5 seeds, which has no per-seed pairing.
  config.reproduce.claim = ()
  config.reproduce.note = ("MNIST-1D CNN, 5 networks instead of 7, 3,000 of the "
                           "recipe's 6,000 steps")
  return config
