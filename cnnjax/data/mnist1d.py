"""MNIST-1D (Greydanus & Kobak), generated locally with the `mnist1d` package."""

from __future__ import annotations

import functools
import random

import numpy as np

from cnnjax.data.arrays import ArrayDataset


def load_mnist1d(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """4,000 train and 1,000 test signals of length 40 with the paper's defaults.

  `dataset_config.shuffle_seq` applies one fixed random permutation to the
  time axis of every signal (the paper's control that removes spatial
  structure). The generator is seeded by `dataset_config.seed` (the paper: 42),
  independent of the training seed. The signals are generated once per
  process and setting (about 0.7 s per 1,000 signals); each call gets its
  own copies.
  """
  num_samples = 1000 if smoke else int(dataset_config.get("num_samples", 5000))
  x, y, x_test, y_test = _generate(num_samples, int(dataset_config.get("seed", 42)),
                                   bool(dataset_config.get("shuffle_seq", False)))
  return ArrayDataset(
      name="mnist1d",
      splits={"train": {"image": x.copy(), "label": y.copy()},
              "test": {"image": x_test.copy(), "label": y_test.copy()}},
      num_classes=10)


@functools.lru_cache(maxsize=8)
def _generate(num_samples: int, seed: int, shuffle_seq: bool):
  """(train signals (N, 40, 1), labels, test signals, labels), read-only.
  The package seeds NumPy's and Python's global generators; the caller's
  states are put back afterwards."""
  from mnist1d.data import get_dataset_args, make_dataset  # ~1 s import

  args = get_dataset_args()
  args.num_samples, args.seed, args.shuffle_seq = num_samples, seed, shuffle_seq
  numpy_state, python_state = np.random.get_state(), random.getstate()
  try:
    raw = make_dataset(args)
  finally:
    np.random.set_state(numpy_state)
    random.setstate(python_state)
  arrays = (np.asarray(raw["x"], np.float32)[..., None], np.asarray(raw["y"], np.int32),
            np.asarray(raw["x_test"], np.float32)[..., None],
            np.asarray(raw["y_test"], np.int32))
  for array in arrays:
    array.flags.writeable = False
  return arrays
