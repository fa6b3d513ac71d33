"""Image folders: `data_dir/train/<class>/*.jpg` and `data_dir/test/<class>/*`.

Classes are the subfolders of `train/`, sorted by name (torchvision's
ImageFolder order); `test/` (and `val/` or `validation/`, if present) must use
the same class names. Images are decoded once into uint8 arrays and held on
the device when they fit in `config.dataset.max_device_mb` (CIFAR-sized data);
otherwise they stream through tf.data, decoded every epoch.

    config.dataset.name = 'image_folder'
    config.dataset.data_dir = '/data/cifar10'   # with train/ and test/ inside
    config.dataset.image_size = 0               # 0: keep the stored size

How images reach `image_size` is `config.dataset.resize_mode`: 'square' (the
default) resizes each image to image_size x image_size, whatever its aspect;
'shorter_side_center_crop' is torchvision's ImageNet evaluation transform,
`Resize(resize_size)` then `CenterCrop(image_size)` on PIL images, with
torchvision's rounding, so a model converted from torchvision sees the
pixels it saw there (the streamed path decodes with PIL as well).

A folder without train/ (an ImageNet validation set: val/<wnid>/*.JPEG) is
evaluation data: when `config.dataset.eval_splits` names its splits, it
loads with the classes of its first evaluation folder, and only training on
it is refused (`EvalOnlyFolder`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from cnnjax.config.validate import check_resize
from cnnjax.data.arrays import ArrayDataset
from cnnjax.data.stream import StreamDataset, array_eval_batches
from cnnjax.errors import CnnjaxError, DataMissingError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm",
                    ".tif", ".tiff", ".webp")
EVAL_FOLDERS = {"val": "val", "validation": "validation", "test": "test"}
# resize_size 0 with 'shorter_side_center_crop': image_size / 0.875 (224 of 256).
CROP_FRACTION = 0.875


def scan(data_dir: str, *, evaluation_only: bool = False
         ) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
  """(class names, {split: (file paths, labels)}), checking the layout.

  With `evaluation_only` a folder without train/ is accepted: its classes
  are those of its first evaluation folder (val/, validation/, test/).
  """
  _check_data_dir(data_dir)
  train_dir = os.path.join(data_dir, "train")
  eval_dirs = {split: os.path.join(data_dir, folder) for split, folder in EVAL_FOLDERS.items()
               if os.path.isdir(os.path.join(data_dir, folder))}
  has_train = os.path.isdir(train_dir)
  if not has_train and not (evaluation_only and eval_dirs):
    raise CnnjaxError(f"image folder '{data_dir}' has no train/ subfolder; it needs "
                      "train/<class>/<image> (and test/<class>/<image>), or, to only "
                      "evaluate a val/ or test/ folder, config.dataset.eval_splits "
                      "naming it")
  class_dir = train_dir if has_train else next(iter(eval_dirs.values()))
  classes = sorted(d for d in os.listdir(class_dir)
                   if os.path.isdir(os.path.join(class_dir, d)))
  if not classes:
    raise CnnjaxError(f"'{class_dir}' has no class subfolders; put each class's "
                      f"images in {os.path.basename(class_dir)}/<class>/")
  splits = {"train": _scan_split(train_dir, classes, "train")} if has_train else {}
  for split, path in eval_dirs.items():
    extra = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                   and d not in classes)
    if extra:
      raise CnnjaxError(f"'{path}' has classes that {os.path.basename(class_dir)}/ "
                        f"lacks: {', '.join(extra[:5])}")
    splits[split] = _scan_split(path, classes, split)
  if not eval_dirs:
    raise CnnjaxError(f"image folder '{data_dir}' has no test/ (or val/) subfolder "
                      "to evaluate on")
  return classes, splits


def _check_data_dir(data_dir: str) -> None:
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


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
  """(width, height) with the shorter side `size`, torchvision's `Resize(size)`
  rounding: the longer side is int(size * long / short), truncated."""
  if width <= height:
    return size, int(size * height / width)
  return int(size * width / height), size


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
  """PIL's (left, top, right, bottom) of torchvision's `CenterCrop(crop)`:
  top = int(round((height - crop) / 2)), Python's round (half to even)."""
  top = int(round((height - crop) / 2.0))
  left = int(round((width - crop) / 2.0))
  return left, top, left + crop, top + crop


def fit_image(image, image_size: int, resize_size: int = 0):
  """A PIL image brought to the stored size.

  resize_size > 0: the shorter side resized to it (bilinear; PIL antialiases
  when it shrinks, as torchvision's PIL path does), then the central
  image_size square. Otherwise a square resize to image_size (0: as it is).
  """
  from PIL import Image

  if resize_size:
    size = shorter_side_size(image.width, image.height, resize_size)
    if size != image.size:  # torchvision skips an identity resize too.
      image = image.resize(size, Image.BILINEAR)
    return image.crop(center_crop_box(image.width, image.height, image_size))
  if image_size and image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.BILINEAR)
  return image


def decode_file(path: str, channels: int, image_size: int,
                resize_size: int = 0) -> np.ndarray:
  """One image file as uint8 (H, W) or (H, W, 3), converted first (to 'L' or
  'RGB', as torchvision's ImageFolder converts to 'RGB'), then `fit_image`."""
  from PIL import Image

  try:
    with Image.open(path) as image:
      image = fit_image(image.convert("L" if channels == 1 else "RGB"),
                        image_size, resize_size)
      return np.asarray(image, np.uint8)
  except Exception as e:  # Truncated or not an image at all.
    raise CnnjaxError(f"cannot read image '{path}': {e}") from e


def decode_images(paths: Sequence[str], channels: int, image_size: int,
                  threads: int = 8, resize_size: int = 0) -> np.ndarray:
  """Decodes image files into one uint8 array (N, S, S, C) with PIL, in threads.

  Without `image_size` every image must have the first image's size; with
  `resize_size` each is cut as `fit_image` cuts it.
  """
  from concurrent.futures import ThreadPoolExecutor

  first = _probe(paths[0])

  def load(path):
    array = decode_file(path, channels, image_size, resize_size)
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


def crop_resize_size(dataset_config) -> int:
  """The shorter side before the center crop; 0 for the 'square' resize."""
  check_resize(dataset_config)
  if dataset_config.get("resize_mode", "square") == "square":
    return 0
  image_size = int(dataset_config.image_size)
  return int(dataset_config.get("resize_size", 0) or 0) or round(image_size / CROP_FRACTION)


def load_image_folder(dataset_config, *, smoke: bool = False):
  """The folder as an ArrayDataset (fits the device) or a tf.data stream; a
  folder without train/ as an `EvalOnlyFolder`."""
  resize_size = crop_resize_size(dataset_config)  # The keys before the disk.
  data_dir = os.path.expanduser(dataset_config.get("data_dir", ""))
  evaluation_only = bool(tuple(dataset_config.get("eval_splits", ()) or ()))
  classes, splits = scan(data_dir, evaluation_only=evaluation_only)
  image_size = int(dataset_config.get("image_size", 0) or 0)
  first_split = next(iter(splits))
  height, width, channels = _probe(splits[first_split][0][0])
  if smoke:  # A class-balanced few hundred: every class appears.
    splits = {s: _every_kth(p, l, 512 if s == "train" else 256)
              for s, (p, l) in splits.items()}
  total = sum(len(p) for p, _ in splits.values())
  size = (image_size, image_size) if image_size else (height, width)
  stored_mb = total * size[0] * size[1] * channels / 2**20
  metadata = {"class_names": classes, "data_dir": data_dir}
  if stored_mb <= float(dataset_config.get("max_device_mb", 4096)):
    arrays = {s: {"image": decode_images(p, channels, image_size, resize_size=resize_size),
                  "label": l} for s, (p, l) in splits.items()}
    if "train" not in splits:
      return _evaluation_only(
          data_dir, {s: len(p) for s, (p, _) in splits.items()},
          lambda split, batch_size: array_eval_batches(arrays[split], batch_size),
          (*size, channels), len(classes), metadata)
    return ArrayDataset(name="image_folder", splits=arrays,
                        num_classes=len(classes), metadata=metadata)
  if not image_size:
    raise CnnjaxError(
        f"image folder '{data_dir}' is too big to hold in memory ({stored_mb:.0f} MiB "
        "> config.dataset.max_device_mb) and streams from disk; set "
        "config.dataset.image_size so the streamed images share one size")
  from cnnjax.data import tfdata_sources
  decode = (functools.partial(decode_file, channels=channels, image_size=image_size,
                              resize_size=resize_size) if resize_size else None)
  stream = tfdata_sources.image_folder_stream(
      splits, classes, channels, image_size, dataset_config, metadata, decode=decode)
  if "train" not in splits:
    return _evaluation_only(data_dir, stream.split_sizes, stream.eval_batches,
                            stream.input_shape, len(classes), metadata)
  return stream


@dataclasses.dataclass
class EvalOnlyFolder(StreamDataset):
  """An image folder without train/: its evaluation splits stream (from
  memory or disk), and anything that needs the training split (training,
  measuring the channel statistics) gets one sentence instead.

  `split_sizes` holds a nominal 'train' entry (the loaders and split
  selection expect one); `num_examples('train')` is the refusal.
  """
  missing_train: str = ""

  def num_examples(self, split: str) -> int:
    if split == self.train_split:
      raise CnnjaxError(self.missing_train)
    return super().num_examples(split)


def _evaluation_only(data_dir, sizes, eval_batches, shape, num_classes,
                     metadata) -> EvalOnlyFolder:
  missing = (f"image folder '{data_dir}' has no train/ subfolder, so it can only be "
             "evaluated; add train/<class>/<image> to train on it")

  def refuse_training(*unused_args, **unused_crops):
    raise CnnjaxError(missing)

  def eval_only_batches(split, batch_size, **unused_crops):
    if split not in sizes:
      raise CnnjaxError(f"image folder '{data_dir}' has no train/ subfolder to "
                        "measure the channel mean and std on; set "
                        "config.dataset.mean and config.dataset.std")
    return eval_batches(split, batch_size)

  return EvalOnlyFolder(
      name="image_folder", num_classes=num_classes, input_shape=tuple(shape),
      input_dtype=np.uint8, split_sizes={"train": max(sizes.values()), **sizes},
      train_batches=refuse_training, eval_batches=eval_only_batches,
      metadata=dict(metadata, evaluation_only=True), missing_train=missing)


def _every_kth(paths, labels, limit):
  if len(paths) <= limit:
    return paths, labels
  idx = np.linspace(0, len(paths) - 1, limit).astype(int)
  return [paths[i] for i in idx], labels[idx]
