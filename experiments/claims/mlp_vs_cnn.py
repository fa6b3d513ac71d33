"""Claim: on data with spatial structure a CNN beats an MLP with fewer
parameters, because it shares weights across positions (the material's
MLP-vs-CNN comparison; Greydanus & Kobak 2024, MNIST-1D, Table 1: MLP 68%
with 15,210 parameters, CNN 94% with 5,210).

    cnnjax reproduce --filter claims/mlp_vs_cnn

The MNIST-1D reference MLP (mnist1d_mlp) against the reference CNN
(mnist1d_cnn) on the same 4,000 training signals, with the paper's recipe
(Adam 1e-2, batch 100) cut to 3,000 of its 6,000 steps; the card shows each
row's parameter count (analysis 'params'). The control, the same CNN on
shuffled signals, is experiments/mnist1d/cnn_shuffled.py.

Measured on 2 busy CPU cores (load average 14): one row (the MLP, one seed)
trained in 21 s (38 s with start-up), 66.3% test accuracy; the CNN row takes
about as long (1,000 steps in 6 s on quieter cores), so the 2 rows x 3 seeds
take about 2.5 minutes.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../mnist1d/base.py")
  config.model.name = "mnist1d_cnn"
  config.num_steps = 3000
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("Greydanus & Kobak 2024, MNIST-1D, Table 1: the CNN "
                             "(5,210 parameters) beats the MLP (15,210)")
  config.reproduce.seeds = 3
  config.reproduce.compare = ("model.name=mnist1d_mlp,mnist1d_cnn",)
  config.reproduce.claim = ("name=mnist1d_cnn > name=mnist1d_mlp",)
  config.reproduce.analysis = "params"
  config.reproduce.note = "3,000 of the recipe's 6,000 steps"
  return config
