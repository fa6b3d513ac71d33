"""MNIST-1D (Greydanus & Kobak), generated locally with the `mnist1d` package."""

from __future__ import annotations

import numpy as np

from cnnjax.data.arrays import ArrayDataset


def load_mnist1d(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """4,000 train and 1,000 test signals of length 40 with the paper's defaults.

  `dataset_config.shuffle_seq` applies one fixed random permutation to the
  time axis of every signal (the paper's control that removes spatial
  structure). The generator is seeded by `dataset_config.seed` (the paper: 42),
  independent of the training seed.
  """
  from mnist1d.data import get_dataset_args, make_dataset  # ~1 s import

  args = get_dataset_args()
  args.num_samples = 1000 if smoke else int(dataset_config.get("num_samples", 5000))
  args.seed = int(dataset_config.get("seed", 42))
  args.shuffle_seq = bool(dataset_config.get("shuffle_seq", False))
  raw = make_dataset(args)

  def split(x, y):
    return {"image": np.asarray(x, np.float32)[..., None],  # (N, 40, 1)
            "label": np.asarray(y, np.int32)}

  return ArrayDataset(
      name="mnist1d",
      splits={"train": split(raw["x"], raw["y"]),
              "test": split(raw["x_test"], raw["y_test"])},
      num_classes=10)
