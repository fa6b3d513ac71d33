"""scikit-learn's 8x8 handwritten digits (UCI optdigits test set), bundled."""

from __future__ import annotations

import numpy as np

from cnnjax.data.arrays import ArrayDataset


def load_digits(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """1,797 digits split 80/20 (stratified, seeded), as (N, S, S, 1) float32.

  With `image_size` > 8 the 8x8 images are resized (bilinear) to `resize`
  pixels and zero-padded to `image_size`, the way MNIST's 20x20 digits sit in
  LeNet-5's 32x32 field. Pixels are standardized with the training split's
  mean and standard deviation.
  """
  import jax
  import sklearn.datasets
  import sklearn.model_selection

  digits = sklearn.datasets.load_digits()
  images = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
  labels = digits.target.astype(np.int32)
  image_size = int(dataset_config.get("image_size") or 8)
  resize = int(dataset_config.get("resize", image_size))
  if resize != 8:
    images = np.asarray(jax.image.resize(
        images, (len(images), resize, resize), method="bilinear"))
  if image_size > resize:
    lo = (image_size - resize) // 2
    hi = image_size - resize - lo
    images = np.pad(images, ((0, 0), (lo, hi), (lo, hi)))
  x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
      images, labels, test_size=float(dataset_config.get("test_fraction", 0.2)),
      stratify=labels, random_state=int(dataset_config.get("split_seed", 0)))
  if smoke:
    x_train, y_train, x_test, y_test = x_train[:256], y_train[:256], x_test[:128], y_test[:128]
  mean, std = x_train.mean(), x_train.std()
  return ArrayDataset(
      name="digits",
      splits={"train": {"image": ((x_train - mean) / std)[..., None], "label": y_train},
              "test": {"image": ((x_test - mean) / std)[..., None], "label": y_test}},
      num_classes=10)
