"""Generated stand-ins for datasets that are not on this machine (smoke runs).

A smoke run (`config.smoke`, `cnnjax reproduce --smoke`, the tests) only has
to show that an experiment builds, trains a few steps and evaluates, so where
its real data is missing (`config.dataset.smoke_data = 'auto'`) or is not
wanted ('synthetic'), `get_dataset` takes a stand-in from here instead: seeded
random uint8 images (or token rows, or float log-mel features for
speech_commands) with the real data's input shape, dtype, number of classes,
task, label format, split names, model fields and metadata conventions, and
small splits (train 128 examples, every other split 64).

The label shifts each image's mean brightness per channel a little (raises a
band region of the features), so a smoke run's loss can drop; nothing else
about the stand-in means anything.
`metadata['standin']` is True.
"""

from __future__ import annotations

import zlib

import numpy as np

from cnnjax.data.splits import select_classes, select_splits
from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError

TRAIN_EXAMPLES = 128
EVAL_EXAMPLES = 64  # Each split other than the training split.

# TFDS name -> (height and width, channels, classes). A size of None takes
# config.dataset.image_size, else 224 (their images vary in size).
TFDS_SHAPES = {
    "mnist": (28, 1, 10),
    "fashion_mnist": (28, 1, 10),
    "kmnist": (28, 1, 10),
    "cifar10": (32, 3, 10),
    "cifar100": (32, 3, 100),
    "svhn_cropped": (32, 3, 10),
    "stl10": (96, 3, 10),
    "imagenet2012": (None, 3, 1000),
    "imagenette": (None, 3, 10),
}
# The evaluation split `load_tfds` picks when eval_splits is empty: 'test',
# or 'validation' for the datasets without a labelled test split.
TFDS_DEFAULT_EVAL = {"imagenet2012": "validation", "imagenette": "validation"}
IMAGE_FOLDER_CLASSES = 10
TEXT_SOURCES = ("mr", "text_file")
# Log-mel features as data/speech_commands.py stores them: float32 (bands,
# frames), standardised, 12 classes; TFDS split specifications.
SPEECH_SOURCES = ("speech_commands",)
OWN_SOURCES = ("image_folder", "medmnist") + TEXT_SOURCES + SPEECH_SOURCES

# The stand-in's words: class 1 favours the first group, class 0 the second,
# and the third is shared (made-up words, so nothing reads as real text).
_WORDS_PER_GROUP = 40
_SENTENCE_LENGTHS = (5, 20)  # Tokens per sentence, low inclusive, high exclusive.


def _source_name(dataset_config) -> str:
  name = str(dataset_config.name)
  return name[len("tfds:"):] if name.startswith("tfds:") else name


def has_standin(dataset_config) -> bool:
  """Whether `standin_dataset` can stand in for `dataset_config.name`."""
  name = _source_name(dataset_config)
  return name in TFDS_SHAPES or name in OWN_SOURCES


def describe(dataset_config) -> str:
  """The dataset's name for messages, with the MedMNIST subset."""
  name = _source_name(dataset_config)
  subset = dataset_config.get("subset", "") if name == "medmnist" else ""
  return f"{name} ({subset})" if subset else name


def standin_dataset(dataset_config) -> ArrayDataset:
  """A generated dataset shaped like the one `dataset_config` names.

  The same config gives the same arrays every time. `train_split`,
  `eval_splits` and `classes` apply as they do to the real source.

  Raises:
    CnnjaxError: there is no stand-in for the dataset, or the config asks for
      something the real source refuses too (an unknown MedMNIST subset or
      size, a split the source does not have).
  """
  name = _source_name(dataset_config)
  classes = tuple(dataset_config.get("classes", ()) or ())
  if name in TFDS_SHAPES:  # TFDS reads train_split and eval_splits as specs.
    return select_classes(_tfds(dataset_config, name), classes)
  if name in SPEECH_SOURCES:  # So does speech_commands.
    return select_classes(_speech_commands(dataset_config), classes)
  if name == "medmnist":
    dataset = _medmnist(dataset_config)
  elif name == "image_folder":
    dataset = _image_folder(dataset_config)
  elif name in TEXT_SOURCES:
    dataset = _text(dataset_config, name)
  else:
    raise CnnjaxError(
        f"there is no generated stand-in for dataset '{dataset_config.name}'; "
        "set config.dataset.smoke_data=real and put the data on this machine")
  return select_classes(select_splits(dataset, dataset_config), classes)


# ------------------------------------------------------------------ images --

def _rng(name: str, *parts: str) -> np.random.Generator:
  """A generator seeded by names only (crc32 is stable across processes)."""
  return np.random.default_rng([zlib.crc32(p.encode()) for p in (name, *parts)])


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
  """(n,) int32, every class about equally often (each class once if n allows)."""
  return rng.permutation(np.arange(n) % num_classes).astype(np.int32)


def _multilabel_labels(rng: np.random.Generator, n: int, num_labels: int) -> np.ndarray:
  """(n, num_labels) int32 0/1, about 30% ones; every label has both values
  (when n >= 2), so a per-label AUC is defined."""
  labels = (rng.random((n, num_labels)) < 0.3).astype(np.int32)
  if n >= 2:
    rows = 2 * np.arange(num_labels) % n
    labels[rows, np.arange(num_labels)] = 1
    labels[(rows + 1) % n, np.arange(num_labels)] = 0
  return labels


def _image_split(name: str, split: str, n: int, shape: tuple[int, ...],
                 num_classes: int, task: str = "multiclass") -> dict[str, np.ndarray]:
  """{'image': (n, *shape) uint8, 'label': ...} for one split.

  Each class (each label, for multi-label data) has its own brightness per
  channel, shared by all splits; images are that level plus uniform noise.
  """
  channels = shape[-1]
  table = _rng(name, "levels")  # The same for every split of `name`.
  if task == "multilabel":
    # Each present label adds its own amount to each channel.
    weights = table.uniform(0.0, 160.0 / num_classes ** 0.5, (num_classes, channels))
  else:
    # Evenly spread levels, in a different class order on each channel.
    spread = np.linspace(48.0, 208.0, num_classes)
    levels = np.stack([table.permutation(spread) for _ in range(channels)], axis=1)
  rng = _rng(name, "split", split)
  if task == "multilabel":
    labels = _multilabel_labels(rng, n, num_classes)
    level = 64.0 + labels @ weights                      # (n, C)
  else:
    labels = _balanced_labels(rng, n, num_classes)
    level = levels[labels]                               # (n, C)
  # Uniform noise in [level - 64, level + 64), drawn as bytes and combined
  # one example at a time: big volumes stay cheap in time and memory.
  offset = (np.rint(level) - 64).astype(np.int16)
  offset = offset.reshape((n,) + (1,) * (len(shape) - 1) + (channels,))
  images = rng.integers(0, 128, (n, *shape), dtype=np.uint8)
  for i in range(n):
    images[i] = np.clip(images[i] + offset[i], 0, 255)  # int16, then back
  return {"image": images, "label": labels}


def _tfds(dataset_config, name: str) -> ArrayDataset:
  from cnnjax.data.tfdata_sources import KNOWN_STATS, parse_splits

  size, channels, num_classes = TFDS_SHAPES[name]
  image_size = int(dataset_config.get("image_size", 0) or 0)
  size = image_size or size or 224
  train_spec, eval_specs = parse_splits(
      dataset_config, "train", [TFDS_DEFAULT_EVAL.get(name, "test")])
  specs = {"train": train_spec, **eval_specs}  # As load_tfds names them.
  splits = {split: _image_split(name, split, TRAIN_EXAMPLES if split == "train"
                                else EVAL_EXAMPLES, (size, size, channels),
                                num_classes)
            for split in specs}
  metadata = {"tfds_name": name, "splits": specs, "standin": True,
              "class_names": [str(c) for c in range(num_classes)]}
  if name in KNOWN_STATS:
    metadata["mean"], metadata["std"] = KNOWN_STATS[name]
  return ArrayDataset(name=name, splits=splits, num_classes=num_classes,
                      metadata=metadata)


def _medmnist(dataset_config) -> ArrayDataset:
  """Laid out as `load_medmnist` returns it: channels last, (N, D, H, W, 1)
  for volumes; int32 labels (N,), or (N, 14) 0/1 for ChestMNIST."""
  from cnnjax.data import medmnist

  info = medmnist.subset_info(dataset_config.get("subset", None))
  image_size = medmnist.checked_image_size(info, dataset_config.get("image_size") or 28)
  spatial = (image_size,) * (3 if info.volumetric else 2)
  name = info.file_name(image_size)[:-len(".npz")]
  splits = {split: _image_split(name, split, TRAIN_EXAMPLES if split == "train"
                                else EVAL_EXAMPLES, spatial + (info.num_channels,),
                                info.num_classes, info.task)
            for split in medmnist.SPLITS}
  return ArrayDataset(
      name=name, splits=splits, num_classes=info.num_classes, task=info.task,
      metadata={"subset": info.flag, "image_size": image_size,
                "label_names": list(info.label_names), "evaluator": "medmnist",
                "medmnist_task": info.medmnist_task, "standin": True})


def _image_folder(dataset_config) -> ArrayDataset:
  size = int(dataset_config.get("image_size", 0) or 0) or 32
  splits = {split: _image_split("image_folder", split, n, (size, size, 3),
                                IMAGE_FOLDER_CLASSES)
            for split, n in (("train", TRAIN_EXAMPLES), ("test", EVAL_EXAMPLES))}
  metadata = {"class_names": [f"class_{c}" for c in range(IMAGE_FOLDER_CLASSES)],
              "data_dir": str(dataset_config.get("data_dir", "") or ""),
              "standin": True}
  return ArrayDataset(name="image_folder", splits=splits,
                      num_classes=IMAGE_FOLDER_CLASSES, metadata=metadata)


# ------------------------------------------------------------------ speech --

# TFDS's label names for speech_commands (its ClassLabel), without TFDS.
SPEECH_COMMANDS_CLASSES = ("down", "go", "left", "no", "off", "on", "right", "stop", "up",
                           "yes", "_silence_", "_unknown_")


def _speech_commands(dataset_config) -> ArrayDataset:
  """Shaped as `load_speech_commands` returns it: (N, 40, 101) float32
  features of about zero mean and unit variance, int32 labels 0..11, the
  splits named as its specifications name them. Each class raises a band
  region of its own, so a smoke run's loss can drop."""
  from cnnjax.data import speech_commands as sc
  from cnnjax.data.tfdata_sources import parse_splits

  train_spec, eval_specs = parse_splits(dataset_config, "train", list(sc.DEFAULT_EVAL))
  specs = {"train": train_spec, **eval_specs}
  num_classes = len(SPEECH_COMMANDS_CLASSES)
  splits = {}
  for split in specs:
    rng = _rng(sc.NAME, "split", split)
    n = TRAIN_EXAMPLES if split == "train" else EVAL_EXAMPLES
    labels = _balanced_labels(rng, n, num_classes)
    features = rng.standard_normal((n, sc.N_MELS, sc.FRAMES)).astype(np.float32)
    low = labels * (sc.N_MELS - 4) // (num_classes - 1)  # bands low .. low + 3
    for i, start in enumerate(low):
      features[i, start:start + 4] += 1.5
    splits[split] = {"image": features, "label": labels}
  metadata = {"tfds_name": sc.NAME, "splits": specs, "standin": True,
              "class_names": SPEECH_COMMANDS_CLASSES, "sample_rate": sc.SAMPLE_RATE,
              "frames": sc.FRAMES, "feature_mean": 0.0, "feature_std": 1.0}
  return ArrayDataset(name=sc.NAME, splits=splits, num_classes=num_classes,
                      metadata=metadata)


# -------------------------------------------------------------------- text --

def _sentences(name: str, split: str, n: int) -> tuple[list[list[str]], np.ndarray]:
  """n made-up sentences (token lists) and their 0/1 labels: each token is
  one of its class's words with probability 0.4, else a shared word."""
  rng = _rng(name, "split", split)
  labels = _balanced_labels(rng, n, 2)
  groups = [[f"{kind}{i:02d}" for i in range(_WORDS_PER_GROUP)]
            for kind in ("neg", "pos", "word")]
  sentences = []
  for label in labels:
    length = int(rng.integers(*_SENTENCE_LENGTHS))
    own = rng.random(length) < 0.4
    picks = rng.integers(0, _WORDS_PER_GROUP, length)
    sentences.append([groups[label if o else 2][p] for o, p in zip(own, picks)])
  return sentences, labels


def _text(dataset_config, name: str) -> ArrayDataset:
  """Encoded as `load_mr` encodes MR: the same options (max_length, pad,
  min_count, vocab_from, fold), vocabulary, model_fields and metadata."""
  from cnnjax.data import text

  options = text.text_options(dataset_config)  # Refuses what the loader refuses.
  splits = {split: _sentences(name, split, n)
            for split, n in (("train", TRAIN_EXAMPLES), ("test", EVAL_EXAMPLES))}
  return text.encode_dataset(name, splits, 2, options, {"standin": True})
