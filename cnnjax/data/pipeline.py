"""What happens to a batch between the dataset and the model, on the device.

Images stored as uint8 become float in [0, 1], are augmented (training only),
then normalized per channel; float inputs (MNIST-1D, standardized digits) are
only augmented; tokens pass through. Both functions run inside the jitted
steps, so the host never touches a pixel of in-memory data.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from cnnjax.data import augment as augment_lib
from cnnjax.errors import CnnjaxError


def channel_stats(dataset, dataset_config) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
  """Per-channel (mean, std) in [0, 1] units for uint8 images, else None.

  From `config.dataset.mean/std` if set, else what the source knows (ImageNet),
  else measured on the training split (in-memory data) or on its first 4,096
  examples (streams).
  """
  if dataset.input_key != "image" or np.dtype(input_dtype(dataset)) != np.uint8:
    return None
  channels = dataset.input_shape[-1]
  mean, std = tuple(dataset_config.get("mean", ())), tuple(dataset_config.get("std", ()))
  if not mean and "mean" in dataset.metadata:
    mean, std = tuple(dataset.metadata["mean"]), tuple(dataset.metadata["std"])
  if not mean:
    mean, std = _measure(dataset)
  if len(mean) != channels or len(std) != channels:
    raise CnnjaxError(f"config.dataset.mean and std need {channels} values for "
                      f"{channels}-channel images, got {len(mean)} and {len(std)}")
  if min(std) <= 0:
    raise CnnjaxError(f"config.dataset.std must be positive, got {std}")
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def first_inputs(dataset, count: int, key: str | None = None) -> np.ndarray:
  """The first `count` training inputs (all of them if fewer), as stored:
  from memory, or read from the start of a stream."""
  key = key or dataset.input_key
  if hasattr(dataset, "splits"):
    return dataset.splits[dataset.train_split][key][:count]
  batches = []
  for batch in dataset.eval_batches(dataset.train_split, 256):
    batches.append(batch[key][batch["mask"] > 0])
    if sum(len(b) for b in batches) >= count:
      break
  return np.concatenate(batches)[:count]


def _measure(dataset):
  if hasattr(dataset, "splits"):
    images = dataset.splits[dataset.train_split]["image"]
  else:  # Whole batches, until 4,096 images or more.
    batches = []
    for batch in dataset.eval_batches(dataset.train_split, 256):
      batches.append(batch["image"][batch["mask"] > 0])
      if sum(len(b) for b in batches) >= 4096:
        break
    images = np.concatenate(batches)
  axes = tuple(range(images.ndim - 1))
  total = np.zeros(images.shape[-1])
  squares = np.zeros(images.shape[-1])
  for start in range(0, len(images), 8192):  # float64 sums without a float copy
    chunk = images[start:start + 8192].astype(np.float64) / 255.0
    total += chunk.sum(axis=axes)
    squares += np.square(chunk).sum(axis=axes)
  count = images.size / images.shape[-1]
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
  return tuple(mean.tolist()), tuple(std.tolist())


def input_dtype(dataset) -> Any:
  if hasattr(dataset, "splits"):
    return dataset.splits[dataset.train_split][dataset.input_key].dtype
  return dataset.input_dtype


def model_input_dtype(dataset) -> Any:
  """The dtype the model sees: float32 for uint8 images, else as stored."""
  dtype = np.dtype(input_dtype(dataset))
  return np.dtype(np.float32) if dtype == np.uint8 else dtype


def make_preprocess(augment_config, stats, *, host_crops: bool = False
                    ) -> tuple[Callable, Callable]:
  """(train_fn(batch, key) -> batch, eval_fn(batch) -> batch), both traceable.

  With `host_crops` the random resized crop already happened on the host
  (streamed data, cropped from the full-size image) and is not repeated.
  """
  if host_crops and augment_config.get("crop_scale", ()):
    augment_config = augment_config.copy_and_resolve_references()
    with augment_config.unlocked():
      augment_config.crop_scale = ()
  augmenting = augment_lib.augmentation_enabled(augment_config)

  def common(batch):
    if "image" not in batch:
      return batch
    images = augment_lib.to_float(batch["image"])
    return dict(batch, image=images)

  def finish(batch):
    if stats is None or "image" not in batch:
      return batch
    return dict(batch, image=augment_lib.normalize(batch["image"], *stats))

  def train_fn(batch, key):
    batch = common(batch)
    if augmenting:
      batch = augment_lib.augment_batch(batch, key, augment_config)
    return finish(batch)

  def eval_fn(batch):
    return finish(common(batch))

  return train_fn, eval_fn


def test_time_views(augment_config) -> Callable[[jax.Array], jax.Array] | None:
  """images (B, ...) -> views (V, B, ...) for test-time augmentation, or None."""
  flip = bool(augment_config.get("tta_flip", False))
  shift = int(augment_config.get("tta_shift", 0))
  if not flip and not shift:
    return None
  mode = augment_config.get("translate_mode", "edge")

  def views(images):
    return augment_lib.tta_views(images, flip=flip, shift=shift, mode=mode)

  return views
