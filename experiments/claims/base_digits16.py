"""What the digits claims share (not an experiment: `reproduce` skips base*):
scikit-learn's 8x8 digits resized to 12x12 in a 16x16 field, a fixed
80/20 split, no augmentation (any shift robustness is the model's), Adam
at 1e-3 with a cosine decay, batch 64. Each claim sets its model, steps,
reference and reproduce keys.
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.dataset.name = "digits"
  config.dataset.image_size = 16
  config.dataset.resize = 12
  config.dataset.split_seed = 0
  config.dataset.test_fraction = 0.2
  config.augment.translate = 0
  config.batch_size = 64
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.log_every = 50
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  return config
