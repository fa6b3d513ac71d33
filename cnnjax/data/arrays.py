"""Datasets held in memory, placed on the device once, batched inside jit.

A training batch is a pure function of the step number: the epoch's order is a
permutation drawn from `fold_in(data_key, epoch)`, and the step's batch is one
slice of it. So the input stream needs no state of its own, a resumed run sees
exactly the batches an uninterrupted run would, and nothing crosses from the
host to the device while training.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError

INPUT_KEYS = ("image", "tokens")  # 'image' is any dense input: (B, L, C) too.

# What the labels mean, which decides the loss and the metrics:
#   multiclass  int labels (N,) in [0, num_classes), softmax cross-entropy;
#   binary      int labels (N,) in {0, 1}, num_classes 2 (two logits);
#   multilabel  0/1 labels (N, num_classes), one sigmoid per class;
#   ordinal     int labels (N,) of ordered grades, trained and scored as
#               multiclass (MedMNIST's RetinaMNIST protocol);
#   segmentation  int class maps (N, H, W), one class per pixel of the
#               image, IGNORE_LABEL where a pixel has none (VOC's borders):
#               per-pixel softmax cross-entropy, mean IoU;
#   detection   int classes (N, G) of up to G objects per image (0: no
#               object, the padding) and their 'boxes' (N, G, 4) [x1, y1,
#               x2, y2] in pixels: a detector's own losses, COCO mAP.
CLASSIFICATION_TASKS = ("multiclass", "binary", "multilabel", "ordinal")
TASKS = CLASSIFICATION_TASKS + ("segmentation", "detection")
# A pixel of this label is left out of the loss and the scores.
IGNORE_LABEL = 255


@dataclasses.dataclass
class ArrayDataset:
  """Named splits, each a dict of equal-length NumPy arrays with a 'label'."""
  name: str
  splits: dict[str, dict[str, np.ndarray]]
  num_classes: int
  train_split: str = "train"
  task: str = "multiclass"
  # Model fields the data decides, set unless the config sets them (e.g. the
  # vocabulary size of a text CNN).
  model_fields: dict = dataclasses.field(default_factory=dict)
  # Anything else a loader knows: class names, the vocabulary, the source.
  metadata: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.task not in TASKS:
      raise CnnjaxError(f"dataset '{self.name}': unknown task '{self.task}' "
                        f"(known: {', '.join(TASKS)})")
    if self.train_split not in self.splits:
      raise CnnjaxError(f"dataset '{self.name}' has no '{self.train_split}' split")
    for split, arrays in self.splits.items():
      _check_split(self.name, split, arrays, self.num_classes, self.task)

  @property
  def eval_splits(self) -> list[str]:
    return [s for s in self.splits if s != self.train_split]

  @property
  def input_key(self) -> str:
    return input_key(self.splits[self.train_split])

  def num_examples(self, split: str) -> int:
    return len(self.splits[split]["label"])

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.splits[self.train_split][self.input_key].shape[1:])


def input_key(batch: Mapping[str, object]) -> str:
  for key in INPUT_KEYS:
    if key in batch:
      return key
  raise CnnjaxError(f"a batch needs one of the keys {INPUT_KEYS}, got {sorted(batch)}")


def _check_split(name, split, arrays, num_classes, task="multiclass"):
  if "label" not in arrays:
    raise CnnjaxError(f"split '{split}' of dataset '{name}' has no labels")
  input_key(arrays)  # Raises if the split has no input.
  n = len(arrays["label"])
  if n == 0:
    raise CnnjaxError(f"split '{split}' of dataset '{name}' is empty")
  for k, a in arrays.items():
    if len(a) != n:
      raise CnnjaxError(f"split '{split}' of dataset '{name}': '{k}' has {len(a)} "
                        f"rows but 'label' has {n}")
  labels = np.asarray(arrays["label"])
  if task == "multilabel":
    if labels.ndim != 2 or labels.shape[1] != num_classes:
      raise CnnjaxError(f"split '{split}' of dataset '{name}' has labels of "
                        f"shape {labels.shape}; a multi-label task with "
                        f"{num_classes} labels needs (N, {num_classes})")
    if not np.isin(labels, (0, 1)).all():
      raise CnnjaxError(f"split '{split}' of dataset '{name}' has multi-label "
                        "targets other than 0 and 1")
    return
  if task == "detection":
    _check_detection(name, split, arrays, labels, num_classes)
    return
  if task == "segmentation":
    images = arrays[input_key(arrays)]
    if labels.ndim != 3 or labels.shape != images.shape[:3]:
      raise CnnjaxError(f"split '{split}' of dataset '{name}' has masks of shape "
                        f"{labels.shape} for images of shape {images.shape}; a "
                        "segmentation task needs one (H, W) class map per image, "
                        "of the image's size")
    known = (labels >= 0) & (labels < num_classes) | (labels == IGNORE_LABEL)
    if not known.all():
      raise CnnjaxError(f"split '{split}' of dataset '{name}' has mask values "
                        f"{np.unique(labels[~known])[:5].tolist()}; they must be "
                        f"classes 0 to {num_classes - 1} or {IGNORE_LABEL} (ignored)")
    return
  if labels.ndim != 1:
    raise CnnjaxError(f"split '{split}' of dataset '{name}' has labels of shape "
                      f"{labels.shape}; a {task} task needs one integer per example")
  lo, hi = labels.min(), labels.max()
  if lo < 0 or hi >= num_classes:
    raise CnnjaxError(f"split '{split}' of dataset '{name}' has labels in "
                      f"[{lo}, {hi}] but {num_classes} classes; labels must be "
                      f"0 to {num_classes - 1}")


def _check_detection(name, split, arrays, labels, num_classes):
  boxes = np.asarray(arrays.get("boxes", np.zeros((0,))))
  where = f"split '{split}' of dataset '{name}'"
  if labels.ndim != 2 or boxes.shape != (*labels.shape, 4):
    raise CnnjaxError(f"{where} has classes of shape {labels.shape} and boxes of shape "
                      f"{boxes.shape}; a detection task needs classes (N, G) and boxes "
                      "(N, G, 4), padded with class 0")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise CnnjaxError(f"{where} has object classes in [{labels.min()}, {labels.max()}] but "
                      f"{num_classes} classes; they must be 1 to {num_classes - 1} (0: no object)")
  real = boxes[labels > 0]
  bad = (real[:, 2] < real[:, 0]) | (real[:, 3] < real[:, 1])
  if bad.any():
    raise CnnjaxError(f"{where} has a box {real[bad][0].tolist()} with x2 < x1 or y2 < y1; "
                      "boxes are [x1, y1, x2, y2]")


def data_key_for_seed(seed: int) -> jax.Array:
  """The key of the training order (one place, shared by every input path)."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def nbytes(dataset) -> int:
  """Bytes of all the arrays of an in-memory dataset."""
  return sum(a.nbytes for arrays in dataset.splits.values() for a in arrays.values())


def train_batch(data: Mapping[str, jax.Array], step: jax.Array, *,
                batch_size: int, data_key: jax.Array) -> dict[str, jax.Array]:
  """The training batch of `step` (traceable): a slice of the epoch's order.

  Examples that do not fill a last batch are left out of that epoch; since the
  order changes every epoch, each example is still seen about equally often.
  """
  n = jax.tree.leaves(data)[0].shape[0]
  steps_per_epoch = n // batch_size
  epoch, position = jnp.divmod(step, steps_per_epoch)
  order = jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
  idx = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
  return {k: jnp.take(v, idx, axis=0) for k, v in data.items()}


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads `batch` with zero rows to `batch_size` and adds a 'mask' marking the
  real examples, so padded rows count for nothing."""
  n = len(batch["label"])
  out = {k: np.concatenate([np.asarray(v), np.zeros((batch_size - n, *np.shape(v)[1:]),
                                                    np.asarray(v).dtype)])
         if n < batch_size else np.asarray(v) for k, v in batch.items()}
  out["mask"] = (np.arange(batch_size) < n).astype(np.float32)
  return out


def stack_eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int, *,
                       multiple_of: int = 1) -> dict[str, np.ndarray]:
  """Pads a split to whole batches and stacks them: (num_batches, B, ...),
  with the 'mask' of `pad_batch`. B is at most the split's size, rounded up
  to a multiple of `multiple_of` (the device count)."""
  n = len(arrays["label"])
  batch_size = -(-min(batch_size, n) // multiple_of) * multiple_of
  num_batches = -(-n // batch_size)
  padded = pad_batch(arrays, num_batches * batch_size)
  return {k: v.reshape(num_batches, batch_size, *v.shape[1:]) for k, v in padded.items()}
