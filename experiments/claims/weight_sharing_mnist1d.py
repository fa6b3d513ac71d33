"""Claim: a CNN is a fully connected network with local connectivity and
weight sharing, and each step helps on signals: fewer parameters and higher
test accuracy (the course material's "CNN = local connectivity + weight
sharing" slides: 7 inputs, 3 hidden units, 21 -> 9 -> 3 weights).

    cnnjax reproduce --filter claims/weight_sharing_mnist1d

Three networks of the same depth and layer shapes on MNIST-1D (model
sharing_mnist1d: the reference CNN's geometry, three layers of 25 channels,
kernels 5/3/3, stride 2, padding 1, a dense classifier on the 5 x 25 maps)
that differ only in connectivity: fully connected layers ('dense', 171,110
parameters), locally connected ones with a kernel per position ('local',
32,610) and convolutions ('conv', 5,210, the reference CNN itself). The
paper's recipe (Adam 1e-2, batch 100) cut to 3,000 of its 6,000 steps.

The card shows each row's parameter count and its test accuracy on the test
signals shifted by 0 to 4 of their 40 samples, zeros filling the uncovered
end (analysis 'params_and_shift', cnnjax/reproduce/analyses_sharing.py).
MNIST-1D's generator already moves each digit by a random offset, so all
three rows see shifted examples in training; the shift figures are means
over the seeds, so the claims test the unshifted test accuracy.

Measured on 2 CPU cores (load average 1.5 to 2), one seed per row: 'dense'
trained 3,000 steps in 13 s (19 s with start-up), 64.2% test accuracy;
'local' in 22 s (27 s), 89.2%; 'conv' in 22 s (34 s), 93.7%. Shifted by 0,
1, 2, 3, 4 samples: dense 64.2, 63.5, 60.1, 59.3, 57.0%; local 89.2, 85.5,
81.7, 77.8, 73.2%; conv 93.7, 90.5, 87.8, 84.7, 82.0%. The 3 rows x 3 seeds
take about 4 minutes.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../mnist1d/base.py")
  config.model.name = "sharing_mnist1d"
  config.model.connectivity = "conv"
  config.num_steps = 3000
  config.augment.translate = 0  # no augmentation: shift robustness is the model's
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("the course material: CNN = local connectivity + "
                             "weight sharing (21 -> 9 -> 3 weights for 7 inputs "
                             "and 3 hidden units)")
  config.reproduce.seeds = 3
  config.reproduce.compare = ("model.connectivity=dense,local,conv",)
  config.reproduce.claim = ("connectivity=conv > connectivity=dense",
                            "connectivity=conv > connectivity=local",
                            "connectivity=local > connectivity=dense")
  config.reproduce.analysis = "params_and_shift"
  config.reproduce.note = "3,000 of the recipe's 6,000 steps"
  return config
