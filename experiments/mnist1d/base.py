"""The shared MNIST-1D recipe (Greydanus & Kobak, "Scaling Down Deep Learning
with MNIST-1D", ICML 2024): 4,000 training and 1,000 test signals generated
with the paper's default arguments, Adam at 1e-2, batch 100, 6,000 steps, no
weight decay. The model-specific files set the model and the published target.
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "mnist1d"
  config.dataset.seed = 42  # The generator's seed in the paper (not the training seed).
  config.dataset.num_samples = 5000
  config.dataset.shuffle_seq = False
  config.batch_size = 100
  config.num_steps = 6000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.log_every = 100
  config.eval_every = 500
  config.checkpoint_every = 1000
  config.best_metric = "test/accuracy"
  config.reproduce.seeds = 3
  config.reference.metric = "test/accuracy"
  config.reference.source = ("Greydanus & Kobak 2024, Scaling Down Deep Learning "
                             "with MNIST-1D, Table 1")
  return config
