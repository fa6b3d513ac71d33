"""Image folders: `data_dir/train/<class>/*.jpg` and `data_dir/test/<class>/*`.

Classes are the subfolders of `train/`, sorted by name (torchvision's
ImageFolder order); `test/` (and `val/` or `validation/`, if present) must use
the same class names. Images are decoded once into uint8 arrays and held on
the device when they fit in `config.dataset.max_device_mb` (CIFAR-sized data);
otherwise they stream through tf.data, decoded every epoch.

    config.dataset.name = 'image_folder'
    config.dataset.data_dir = '/data/cifar10'   # with train/ and test/ inside
    config.dataset.image_size = 0               # 0: keep the stored size
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError, DataMissingError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm",
                    ".tif", ".tiff", ".webp")
EVAL_FOLDERS = {"val": "val", "validation": "validation", "test": "test"}


def scan(data_dir: str) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
  """(class names, {split: (file paths, labels)}), checking the layout."""
  if not data_dir:
    raise DataMissingError("dataset 'image_folder' needs config.dataset.data_dir, a "
                      "directory with train/ and test/ inside, one subfolder per class")
  if os.path.isfile(data_dir) and data_dir.endswith((".tar", ".tar.gz", ".tgz", ".zip")):
    raise CnnjaxError(f"'{data_dir}' is an archive; extract it first (e.g. "
                      f"`tar xzf {data_dir} -C DIR`) and set "
                      "config.dataset.data_dir to the extracted directory")
  if not os.path.isdir(data_dir):
    raise DataMissingError(f"image folder '{data_dir}' does not exist; set "
                      "config.dataset.data_dir to a directory with train/ and test/")
  train_dir = os.path.join(data_dir, "train")
  if not os.path.isdir(train_dir):
    raise CnnjaxError(f"image folder '{data_dir}' has no train/ subfolder; it needs "
                      "train/<class>/<image> (and test/<class>/<image>)")
  classes = sorted(d for d in os.listdir(train_dir)
                   if os.path.isdir(os.path.join(train_dir, d)))
  if not classes:
    raise CnnjaxError(f"'{train_dir}' has no class subfolders; put each class's "
                      "images in train/<class>/")
  splits = {"train": _scan_split(train_dir, classes, "train")}
  for split, folder in EVAL_FOLDERS.items():
    path = os.path.join(data_dir, folder)
    if os.path.isdir(path):
      extra = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                     and d not in classes)
      if extra:
        raise CnnjaxError(f"'{path}' has classes that train/ lacks: {', '.join(extra[:5])}")
      splits[split] = _scan_split(path, classes, split)
  if len(splits) == 1:
    raise CnnjaxError(f"image folder '{data_dir}' has no test/ (or val/) subfolder "
                      "to evaluate on")
  return classes, splits


def _scan_split(split_dir: str, classes: Sequence[str], split: str):
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue  # A class may be absent from an evaluation split.
    files = sorted(f for f in os.listdir(class_dir)
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files and split == "train":
      raise CnnjaxError(f"class folder '{class_dir}' has no images "
                        f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    paths += [os.path.join(class_dir, f) for f in files]
    labels += [label] * len(files)
  if not paths:
    raise CnnjaxError(f"split folder '{split_dir}' has no images")
  return paths, np.asarray(labels, np.int32)


def _probe(path: str) -> tuple[int, int, int]:
  """(height, width, channels) of one image, channels 1 for grey, else 3."""
  from PIL import Image
  try:
    with Image.open(path) as image:
      return image.height, image.width, 1 if image.mode in ("L", "I;16", "1") else 3
  except Exception as e:  # PIL raises several types for bad files.
    raise CnnjaxError(f"cannot read image '{path}': {e}") from e


def decode_images(paths: Sequence[str], channels: int, image_size: int,
                  threads: int = 8) -> np.ndarray:
  """Decodes image files into one uint8 array (N, S, S, C) with PIL, in threads.

  Without `image_size` every image must have the first image's size.
  """
  from concurrent.futures import ThreadPoolExecutor

  from PIL import Image

  mode = "L" if channels == 1 else "RGB"
  first = _probe(paths[0])

  def load(path):
    try:
      with Image.open(path) as image:
        image = image.convert(mode)
        if image_size and image.size != (image_size, image_size):
          image = image.resize((image_size, image_size), Image.BILINEAR)
        array = np.asarray(image, np.uint8)
    except Exception as e:  # Truncated or not an image at all.
      raise CnnjaxError(f"cannot read image '{path}': {e}") from e
    if not image_size and array.shape[:2] != first[:2]:
      raise CnnjaxError(
          f"images differ in size ({first[0]}x{first[1]} in '{paths[0]}', "
          f"{array.shape[0]}x{array.shape[1]} in '{path}'); set "
          "config.dataset.image_size to resize them all")
    return array

  with ThreadPoolExecutor(threads) as pool:
    arrays = list(pool.map(load, paths, chunksize=64))
  images = np.stack(arrays)
  return images[..., None] if images.ndim == 3 else images


def load_image_folder(dataset_config, *, smoke: bool = False):
  """The folder as an ArrayDataset (fits the device) or a tf.data stream."""
  data_dir = os.path.expanduser(dataset_config.get("data_dir", ""))
  classes, splits = scan(data_dir)
  image_size = int(dataset_config.get("image_size", 0) or 0)
  height, width, channels = _probe(splits["train"][0][0])
  if smoke:  # A class-balanced few hundred: every class appears.
    splits = {s: _every_kth(p, l, 512 if s == "train" else 256)
              for s, (p, l) in splits.items()}
  total = sum(len(p) for p, _ in splits.values())
  size = (image_size, image_size) if image_size else (height, width)
  stored_mb = total * size[0] * size[1] * channels / 2**20
  metadata = {"class_names": classes, "data_dir": data_dir}
  if stored_mb <= float(dataset_config.get("max_device_mb", 4096)):
    arrays = {s: {"image": decode_images(p, channels, image_size), "label": l}
              for s, (p, l) in splits.items()}
    return ArrayDataset(name="image_folder", splits=arrays,
                        num_classes=len(classes), metadata=metadata)
  if not image_size:
    raise CnnjaxError(
        f"image folder '{data_dir}' is too big to hold in memory ({stored_mb:.0f} MiB "
        "> config.dataset.max_device_mb) and streams from disk; set "
        "config.dataset.image_size so the streamed images share one size")
  from cnnjax.data import tfdata_sources
  return tfdata_sources.image_folder_stream(
      splits, classes, channels, image_size, dataset_config, metadata)


def _every_kth(paths, labels, limit):
  if len(paths) <= limit:
    return paths, labels
  idx = np.linspace(0, len(paths) - 1, limit).astype(int)
  return [paths[i] for i in idx], labels[idx]
