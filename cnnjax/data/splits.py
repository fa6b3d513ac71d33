"""Choosing what a dataset holds: its splits and its classes."""

from __future__ import annotations

import dataclasses

import numpy as np

from cnnjax.data.stream import StreamDataset
from cnnjax.errors import CnnjaxError


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
