"""Datasets: every source yields dicts with 'image' (or 'tokens') and 'label'.

`get_dataset(config.dataset)` picks the source by `config.dataset.name`:

  mnist1d, digits   generated or bundled, in memory (float inputs)
  image_folder      data_dir/train/<class>/*, data_dir/test/<class>/*
  medmnist          MedMNIST v2/+ npz files; `subset` and `image_size`
  mr, text_file     sentence classification (Kim 2014), k-fold splits
  anything else     a TFDS dataset by name (mnist, cifar10, imagenette, ...)

Data that fits `config.dataset.max_device_mb` is an `ArrayDataset` held on the
device as uint8 and batched inside jit; the rest is a `StreamDataset` read by
the host (tf.data for encoded images).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from cnnjax.data.arrays import ArrayDataset  # noqa: F401
from cnnjax.data.stream import StreamDataset  # noqa: F401
from cnnjax.errors import CnnjaxError, DataMissingError

# config.dataset.smoke_data: where a smoke run's data comes from.
SMOKE_DATA = ("auto", "synthetic", "real")
# Sources that generate or bundle their data: always present, no stand-in.
ALWAYS_PRESENT = ("mnist1d", "digits")


def _loaders():
  from cnnjax.data.digits import load_digits
  from cnnjax.data.image_folder import load_image_folder
  from cnnjax.data.medmnist import load_medmnist
  from cnnjax.data.mnist1d import load_mnist1d
  from cnnjax.data.text import load_mr, load_text_file
  return {"mnist1d": load_mnist1d, "digits": load_digits,
          "image_folder": load_image_folder, "medmnist": load_medmnist,
          "mr": load_mr, "text_file": load_text_file}


def list_datasets() -> list[str]:
  """cnnjax's own sources (any TFDS name works as well)."""
  return sorted(_loaders())


def get_dataset(dataset_config, *, smoke: bool = False):
  """The dataset named by `dataset_config.name`: ArrayDataset or StreamDataset.

  Smoke runs read `dataset_config.smoke_data`: 'auto' loads the real data and,
  when it is not on this machine (DataMissingError), a generated stand-in of
  the same shapes, classes, task and splits (cnnjax/data/standin.py);
  'synthetic' always takes the stand-in; 'real' never does. Full runs, and
  the generated or bundled sources (mnist1d, digits), always load the real data.
  """
  smoke_data = str(dataset_config.get("smoke_data", "auto"))
  if smoke_data not in SMOKE_DATA:
    raise CnnjaxError(f"config.dataset.smoke_data must be one of "
                      f"{', '.join(SMOKE_DATA)}, got '{smoke_data}'")
  if not smoke or smoke_data == "real" or dataset_config.name in ALWAYS_PRESENT:
    return _load_real(dataset_config, smoke=smoke)
  from cnnjax.data import standin
  if smoke_data == "synthetic":
    return standin.standin_dataset(dataset_config)
  try:
    return _load_real(dataset_config, smoke=smoke)
  except DataMissingError:
    if not standin.has_standin(dataset_config):
      raise
  print(f"smoke run: {standin.describe(dataset_config)} is not on this machine; "
        "using a generated stand-in of the same shape", file=sys.stderr, flush=True)
  return standin.standin_dataset(dataset_config)


def _load_real(dataset_config, *, smoke: bool):
  """The real data of `dataset_config.name`, from its loader or TFDS."""
  loaders = _loaders()
  name = dataset_config.name
  classes = tuple(dataset_config.get("classes", ()) or ())
  if name in loaders:
    dataset = select_splits(loaders[name](dataset_config, smoke=smoke), dataset_config)
    return select_classes(dataset, classes)
  if name.startswith("tfds:"):
    dataset_config = dataset_config.copy_and_resolve_references()
    with dataset_config.unlocked():
      dataset_config.name = name[len("tfds:"):]
  try:
    from cnnjax.data.tfdata_sources import load_tfds
    dataset = load_tfds(dataset_config, smoke=smoke)
  except CnnjaxError as e:
    # Only a missing TensorFlow is rewritten (a missing dataset's message may
    # name ~/tensorflow_datasets). Without it the data cannot be read here.
    if isinstance(e, DataMissingError) or "tensorflow" not in str(e).lower():
      raise
    raise DataMissingError(
        f"unknown dataset '{name}' (cnnjax's: {', '.join(sorted(loaders))}); "
        "TFDS names need `pip install tensorflow-cpu tensorflow-datasets`") from e
  return select_classes(dataset, classes)


def select_classes(dataset, classes):
  """Keeps only the examples of `classes`, renumbered 0..k-1 in that order.

  For in-memory single-label datasets (`dataset.classes`, e.g. the two halves
  of a transfer-learning experiment). metadata['classes'] keeps the original
  class numbers, and class or label names follow the new numbering. () keeps
  everything.
  """
  classes = tuple(classes)
  if not classes:
    return dataset
  if isinstance(dataset, StreamDataset):
    raise CnnjaxError(f"config.dataset.classes needs an in-memory dataset, but "
                      f"'{dataset.name}' streams from the host; raise "
                      "config.dataset.max_device_mb or drop the class selection")
  if dataset.task == "multilabel":
    raise CnnjaxError(f"config.dataset.classes cannot select from the multi-label "
                      f"dataset '{dataset.name}' (an example has several labels)")
  if len(set(classes)) != len(classes):
    raise CnnjaxError(f"config.dataset.classes lists a class twice: {classes}")
  outside = [c for c in classes if not 0 <= int(c) < dataset.num_classes]
  if outside:
    raise CnnjaxError(f"config.dataset.classes has {', '.join(map(str, outside))}, "
                      f"but dataset '{dataset.name}' has classes 0 to "
                      f"{dataset.num_classes - 1}")
  new_label = np.full(dataset.num_classes, -1, np.int64)  # old -> new, -1: dropped
  new_label[np.asarray(classes, np.int64)] = np.arange(len(classes))
  splits = {}
  for split, arrays in dataset.splits.items():
    labels = np.asarray(arrays["label"])
    keep = new_label[labels] >= 0
    if not keep.any():
      raise CnnjaxError(f"split '{split}' of dataset '{dataset.name}' has no example "
                        f"of config.dataset.classes {classes}")
    splits[split] = {k: np.asarray(v)[keep] for k, v in arrays.items()}
    splits[split]["label"] = new_label[labels[keep]].astype(labels.dtype)
  metadata = dict(dataset.metadata, classes=[int(c) for c in classes])
  for key in ("class_names", "label_names"):
    names = metadata.get(key)
    if names is not None and len(names) == dataset.num_classes:
      metadata[key] = [names[c] for c in classes]
  return dataclasses.replace(dataset, splits=splits, num_classes=len(classes),
                             metadata=metadata)


def select_splits(dataset, dataset_config):
  """Applies `train_split` and `eval_splits` to a source with named splits.

  (TFDS sources read them as split specifications instead.)
  """
  streamed = isinstance(dataset, StreamDataset)
  available = list(dataset.split_sizes if streamed else dataset.splits)
  train = dataset_config.get("train_split", "") or dataset.train_split
  evals = [str(s) for s in dataset_config.get("eval_splits", ()) or ()]
  unknown = [s for s in [train, *evals] if s not in available]
  if unknown:
    raise CnnjaxError(
        f"dataset '{dataset.name}' has no split {', '.join(repr(s) for s in unknown)}; "
        f"its splits are {', '.join(available)}")
  if train == dataset.train_split and not evals:
    return dataset
  keep = [train] + [s for s in (evals or dataset.eval_splits) if s != train]
  if streamed:
    return dataclasses.replace(
        dataset, split_sizes={s: dataset.split_sizes[s] for s in keep}, train_split=train)
  return dataclasses.replace(dataset, splits={s: dataset.splits[s] for s in keep},
                             train_split=train)
