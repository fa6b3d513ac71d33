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

from cnnjax.data.arrays import ArrayDataset  # noqa: F401
from cnnjax.data.stream import StreamDataset  # noqa: F401
from cnnjax.errors import CnnjaxError


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
  """The dataset named by `dataset_config.name`: ArrayDataset or StreamDataset."""
  loaders = _loaders()
  name = dataset_config.name
  if name in loaders:
    return select_splits(loaders[name](dataset_config, smoke=smoke), dataset_config)
  if name.startswith("tfds:"):
    dataset_config = dataset_config.copy_and_resolve_references()
    with dataset_config.unlocked():
      dataset_config.name = name[len("tfds:"):]
  try:
    from cnnjax.data.tfdata_sources import load_tfds
    return load_tfds(dataset_config, smoke=smoke)
  except CnnjaxError as e:
    if "tensorflow" not in str(e).lower():
      raise
    raise CnnjaxError(
        f"unknown dataset '{name}' (cnnjax's: {', '.join(sorted(loaders))}); "
        "TFDS names need `pip install tensorflow-cpu tensorflow-datasets`") from e


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
