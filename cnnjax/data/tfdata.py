"""tf.data pipelines for encoded images (TFDS records or image files).

Used when a dataset is too big to hold decoded on the device (ImageNet,
Imagenette, large image folders). Each epoch's order is drawn from (seed,
epoch), and a resumed run skips the records of the steps already taken before
anything is decoded, so resuming costs no decoding and sees the same batches.

On the host: decode, then crop and resize to `image_size` (training: a random
resized crop drawn from the example's own stateless seed when
`augment.crop_scale` is set, else a plain resize; evaluation: the central
87.5% when crops are used in training, as the ImageNet recipes do, else a
plain resize). Everything else (flips, colour, normalization) happens on the
device, as for in-memory data.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import numpy as np

from cnnjax.data.arrays import pad_batch
from cnnjax.data.tf_utils import import_tensorflow

EVAL_CROP_FRACTION = 0.875  # 224 of 256 (Szegedy et al.; the torchvision recipe)


def _decode(tf, encoded, channels):
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def _resize(tf, image, size):
  image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def train_transform(image_size: int, channels: int, crop_scale=(), crop_ratio=(3 / 4, 4 / 3)):
  """(encoded bytes, label, example seed (2,)) -> (uint8 image, label)."""
  tf = import_tensorflow()

  def transform(encoded, label, seed):
    image = _decode(tf, encoded, channels)
    if crop_scale:
      begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
          tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
          min_object_covered=0.0, aspect_ratio_range=tuple(crop_ratio),
          area_range=tuple(crop_scale), max_attempts=10,
          use_image_if_no_bounding_boxes=True)
      image = tf.slice(image, begin, size)
    if image_size:
      image = _resize(tf, image, image_size)
    return image, label

  return transform


def eval_transform(image_size: int, channels: int, center_crop: bool):
  tf = import_tensorflow()

  def transform(encoded, label):
    image = _decode(tf, encoded, channels)
    if center_crop and image_size:
      shape = tf.shape(image)
      side = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
      crop = tf.cast(tf.round(side * EVAL_CROP_FRACTION), tf.int32)
      top, left = (shape[0] - crop) // 2, (shape[1] - crop) // 2
      image = tf.slice(image, [top, left, 0], [crop, crop, channels])
    if image_size:
      image = _resize(tf, image, image_size)
    return image, label

  return transform


def train_stream(records_for_epoch: Callable[[int], object], steps_per_epoch: int,
                 batch_size: int, start_step: int, seed: int,
                 transform, parallel: int | None = None) -> Iterator[dict]:
  """Endless batches {'image', 'label'} as NumPy arrays.

  `records_for_epoch(epoch)` returns that epoch's shuffled tf.data dataset of
  (encoded, label) pairs; the first `start_step` batches are skipped before
  decoding.
  """
  tf = import_tensorflow()
  autotune = parallel or tf.data.AUTOTUNE
  epoch, position = divmod(start_step, steps_per_epoch)
  for epoch in itertools.count(epoch):
    records = records_for_epoch(epoch).take(steps_per_epoch * batch_size)
    # Each example's crop seed: (seed, epoch * n + index), stateless.
    index = tf.data.Dataset.range(steps_per_epoch * batch_size)
    ds = tf.data.Dataset.zip(records, index)
    if position:
      ds = ds.skip(position * batch_size)
    base = epoch * steps_per_epoch * batch_size
    ds = ds.map(lambda r, i: transform(r[0], r[1], tf.stack(
        [tf.constant(seed, tf.int64), base + i])), num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
    for image, label in ds.as_numpy_iterator():
      yield {"image": image, "label": label.astype(np.int32)}
    position = 0


def eval_stream(records, batch_size: int, transform,
                parallel: int | None = None) -> Iterator[dict]:
  """One pass over (encoded, label) records, padded batches with a 'mask'."""
  tf = import_tensorflow()
  ds = records.map(transform, num_parallel_calls=parallel or tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).prefetch(2)
  for image, label in ds.as_numpy_iterator():
    yield pad_batch({"image": image, "label": label.astype(np.int32)}, batch_size)
