"""The in-memory datasets: sizes, layouts, splits and their checks."""

import ml_collections
import numpy as np
import pytest

from cnnjax.data import ArrayDataset, get_dataset
from cnnjax.data.arrays import stack_eval_batches
from cnnjax.errors import CnnjaxError


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def test_mnist1d_matches_the_paper_defaults():
  data = get_dataset(_cfg(name="mnist1d"))
  assert data.num_examples("train") == 4000 and data.num_examples("test") == 1000
  assert data.input_shape == (40, 1)
  assert data.splits["train"]["image"].dtype == np.float32
  labels = data.splits["train"]["label"]
  assert set(np.unique(labels)) == set(range(10))
  # make_dataset standardizes the whole set (train and test together).
  x = np.concatenate([data.splits["train"]["image"], data.splits["test"]["image"]])
  assert abs(x.mean()) < 1e-3 and abs(x.std() - 1) < 1e-3


def test_mnist1d_is_generated_once_and_leaves_the_global_generators_alone():
  import random
  np.random.seed(7)
  random.seed(7)
  expected = np.random.rand(), random.random()
  np.random.seed(7)
  random.seed(7)
  first = get_dataset(_cfg(name="mnist1d", num_samples=300, seed=3))
  # The package seeds NumPy's and Python's generators; ours are as they were.
  assert (np.random.rand(), random.random()) == expected
  second = get_dataset(_cfg(name="mnist1d", num_samples=300, seed=3))
  other = get_dataset(_cfg(name="mnist1d", num_samples=300, seed=4))
  for split in ("train", "test"):
    for key in ("image", "label"):
      a, b = first.splits[split][key], second.splits[split][key]
      np.testing.assert_array_equal(a, b)
      a[...] = 0  # Each load has arrays of its own.
      assert not np.array_equal(a, b)
  assert not np.array_equal(second.splits["train"]["image"], other.splits["train"]["image"])


def test_mnist1d_shuffle_seq_permutes_time_the_same_way_for_every_signal():
  plain = get_dataset(_cfg(name="mnist1d", num_samples=500))
  shuffled = get_dataset(_cfg(name="mnist1d", num_samples=500, shuffle_seq=True))
  a = plain.splits["train"]["image"][..., 0]
  b = shuffled.splits["train"]["image"][..., 0]
  np.testing.assert_array_equal(plain.splits["train"]["label"],
                                shuffled.splits["train"]["label"])
  # One permutation maps every plain signal onto its shuffled twin.
  # perm[j]: the plain time step that became shuffled time step j.
  perm = [int(np.argmin(np.abs(a - b[:, [j]]).sum(axis=0))) for j in range(40)]
  assert sorted(perm) == list(range(40)) and perm != list(range(40))
  np.testing.assert_allclose(a[:, perm], b, atol=1e-5)


def test_digits_are_resized_padded_and_standardized():
  data = get_dataset(_cfg(name="digits", image_size=32, resize=28))
  assert data.num_examples("train") == 1437 and data.num_examples("test") == 360
  train = data.splits["train"]["image"]
  assert train.shape == (1437, 32, 32, 1)
  assert abs(train.mean()) < 1e-4 and abs(train.std() - 1) < 1e-4
  # The 2-pixel border is padding: one constant value (zero before standardizing).
  border = np.concatenate([train[:, :2].ravel(), train[:, -2:].ravel()])
  assert np.ptp(border) == 0
  # Stratified split: every class is in the test set in proportion.
  counts = np.bincount(data.splits["test"]["label"], minlength=10)
  assert counts.min() >= 35


def test_unknown_dataset_and_bad_splits_are_reported():
  # Names that are neither cnnjax's nor TFDS's get the closest of either.
  with pytest.raises(CnnjaxError, match="unknown dataset 'mnist_1d'.*did you mean 'mnist1d'"):
    get_dataset(_cfg(name="mnist_1d"))
  with pytest.raises(CnnjaxError, match="unknown dataset 'cifar_10'.*did you mean 'cifar10'"):
    get_dataset(_cfg(name="cifar_10"))
  x = np.zeros((4, 3, 1), np.float32)
  with pytest.raises(CnnjaxError, match="labels in \\[0, 5\\] but 3 classes"):
    ArrayDataset("t", {"train": {"image": x, "label": np.array([0, 1, 2, 5])}}, 3)
  with pytest.raises(CnnjaxError, match="is empty"):
    ArrayDataset("t", {"train": {"image": x[:0], "label": np.zeros(0, int)}}, 3)
  with pytest.raises(CnnjaxError, match="has 4 rows but 'label' has 3"):
    ArrayDataset("t", {"train": {"image": x, "label": np.zeros(3, int)}}, 3)


def test_eval_batches_pad_with_a_mask():
  arrays = {"image": np.arange(5, dtype=np.float32)[:, None], "label": np.arange(5)}
  stacked = stack_eval_batches(arrays, batch_size=2)
  assert stacked["image"].shape == (3, 2, 1)
  np.testing.assert_array_equal(stacked["mask"].ravel(), [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(stacked["label"].ravel()[:5], np.arange(5))
