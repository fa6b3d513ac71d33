"""Tiny runs for the visualization tests: seconds, no files from elsewhere."""

from __future__ import annotations

import functools

import numpy as np

from conftest import tiny_mnist1d_config


@functools.lru_cache(maxsize=None)
def tiny_run(channels: int = 3, size: int = 32, seed: int = 0):
  """LeNet-5 (ReLU, max pooling) with random weights on 64 generated uint8
  images of 4 classes (a bright square in one quadrant), per-channel
  normalization on. A `cnnjax.runs.TrainedModel` built in memory."""
  import jax

  from cnnjax.data.arrays import ArrayDataset
  from cnnjax.models import create_model
  from cnnjax.ops import random as random_ops
  from cnnjax.viz import make_trained as make_run

  rng = np.random.default_rng(seed)
  n = 64
  labels = np.arange(n) % 4
  images = rng.integers(0, 60, size=(n, size, size, channels)).astype(np.uint8)
  half = size // 2
  for i, label in enumerate(labels):
    r, c = divmod(int(label), 2)
    images[i, r * half + 4:r * half + half - 4, c * half + 4:c * half + half - 4] = 230
  dataset = ArrayDataset(
      name="squares", num_classes=4,
      splits={"train": {"image": images, "label": labels},
              "test": {"image": images[:16], "label": labels[:16]}})
  model = create_model("lenet5_relu", num_classes=4)
  variables = random_ops.init(model, jax.random.key(seed),
                              np.zeros((1, size, size, channels), np.float32))
  stats = ((0.3,) * channels, (0.3,) * channels)
  return make_run(model, variables, dataset, stats=stats)


def train_tiny_workdir(workdir: str, **changes) -> str:
  """A real cnnjax workdir: LeNet-5 (ReLU) on the 8x8 digits padded to 32x32,
  trained for a few seconds; what `cnnjax visualize --workdir` reads."""
  from cnnjax.config import set_value
  from cnnjax.train.loop import train_and_evaluate

  config = tiny_mnist1d_config(**{
      "dataset.name": "digits", "dataset.image_size": 32, "model.name": "lenet5_relu",
      "num_steps": 30, "eval_every": 30, "checkpoint_every": 30, "log_every": 10,
      "optimizer.name": "adam", "optimizer.learning_rate": 3e-3})
  with config.unlocked():
    for key, value in changes.items():
      set_value(config, key, value)
  train_and_evaluate(config, workdir)
  return workdir
