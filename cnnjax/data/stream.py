"""Datasets that stream batches from the host: too big for the device, or read
from files by tf.data.

A stream is deterministic in (seed, start step): the batches after a resume are
the ones an uninterrupted run would have seen, as for the in-memory path.
Training streams never end; evaluation streams pass once over a split, with the
last batch padded to full size and a 'mask' marking the real examples (so one
compiled eval step serves every batch).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from cnnjax.data.arrays import TASKS, pad_batch
from cnnjax.errors import CnnjaxError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class StreamDataset:
  """A dataset read batch by batch; the same attributes as `ArrayDataset`.

  `train_batches(batch_size, start_step, seed, **crops)` returns an endless
  iterator of training batches beginning at `start_step`;
  `eval_batches(split, batch_size, **crops)` one pass over `split` with a
  'mask'.
  """
  name: str
  num_classes: int
  input_shape: tuple[int, ...]
  input_dtype: Any
  split_sizes: dict[str, int]
  train_batches: Callable[[int, int, int], Iterator[Batch]]
  eval_batches: Callable[[str, int], Iterator[Batch]]
  train_split: str = "train"
  input_key: str = "image"
  task: str = "multiclass"
  # True when training crops are cut on the host from full-size images
  # (tf.data streams): `train_batches` then takes crop_scale and crop_ratio.
  host_crops: bool = False
  model_fields: dict = dataclasses.field(default_factory=dict)
  metadata: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.task not in TASKS:
      raise CnnjaxError(f"dataset '{self.name}': unknown task '{self.task}'")
    for split, n in self.split_sizes.items():
      if n <= 0:
        raise CnnjaxError(f"split '{split}' of dataset '{self.name}' is empty")

  @property
  def eval_splits(self) -> list[str]:
    return [s for s in self.split_sizes if s != self.train_split]

  def num_examples(self, split: str) -> int:
    return self.split_sizes[split]


def epoch_order(data_key: jax.Array, epoch: int, n: int) -> np.ndarray:
  """The example order of `epoch`: the permutation `train_batch` draws on the
  device, so streamed and device-resident runs see the same batches."""
  with jax.default_device(jax.devices("cpu")[0]):
    return np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), n))


def array_train_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                        start_step: int, data_key: jax.Array) -> Iterator[Batch]:
  """Endless training batches gathered on the host from in-memory arrays."""
  n = len(arrays["label"])
  steps_per_epoch = n // batch_size
  epoch, position = divmod(start_step, steps_per_epoch)
  while True:
    order = epoch_order(data_key, epoch, n)
    for p in range(position, steps_per_epoch):
      idx = order[p * batch_size:(p + 1) * batch_size]
      yield {k: v[idx] for k, v in arrays.items()}
    epoch, position = epoch + 1, 0


def array_eval_batches(arrays: Mapping[str, np.ndarray],
                       batch_size: int) -> Iterator[Batch]:
  n = len(arrays["label"])
  for start in range(0, n, batch_size):
    yield pad_batch({k: v[start:start + batch_size] for k, v in arrays.items()},
                    batch_size)


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


def prefetch(iterator: Iterator[Any], size: int = 2,
             transfer: Callable[[Any], Any] | None = None) -> Iterator[Any]:
  """Runs `iterator` in a background thread, `size` items ahead.

  `transfer` (e.g. `jax.device_put`) is applied in the thread as well, so the
  copy to the device overlaps the running step. Errors in the producer are
  raised in the consumer.
  """
  items: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def produce():
    try:
      for item in iterator:
        if stop.is_set():
          return
        items.put(transfer(item) if transfer else item)
      items.put(done)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      items.put(_Failure(e))

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = items.get()
      if item is done:
        return
      if isinstance(item, _Failure):
        raise item.error
      yield item
  finally:
    stop.set()
    while not items.empty():  # Unblock a producer waiting on a full queue.
      items.get_nowait()


def as_stream(dataset) -> StreamDataset:
  """An in-memory ArrayDataset served from the host, batch by batch (for data
  too big for the device); the batches equal the device-resident ones."""
  from cnnjax.data.arrays import data_key_for_seed

  splits = dataset.splits
  train = splits[dataset.train_split]

  def train_batches(batch_size, start_step, seed, **unused_crops):
    return array_train_batches(train, batch_size, start_step, data_key_for_seed(seed))

  def eval_batches(split, batch_size, **unused_crops):
    return array_eval_batches(splits[split], batch_size)

  return StreamDataset(
      name=dataset.name, num_classes=dataset.num_classes,
      input_shape=dataset.input_shape, input_dtype=train[dataset.input_key].dtype,
      split_sizes={s: dataset.num_examples(s) for s in splits},
      train_batches=train_batches, eval_batches=eval_batches,
      train_split=dataset.train_split, input_key=dataset.input_key,
      task=dataset.task, model_fields=dataset.model_fields,
      metadata=dataset.metadata)
