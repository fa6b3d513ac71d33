"""TFDS object detection sets (`voc`, `coco`) as detection data.

    cnnjax train --config experiments/detection/faster_rcnn_shapes.py \
        --config.dataset.name=voc --config.dataset.image_size=256 \
        --config.dataset.data_dir=~/tensorflow_datasets

For users who have the data prepared (TFDS `voc` or `coco`; `download=true`
fetches it where the network allows). Every image is resized to
`image_size` x `image_size` (default 256) and held in memory as uint8; its
objects' boxes (TFDS: [ymin, xmin, ymax, xmax] in [0, 1]) become [x1, y1,
x2, y2] in pixels of the resized image, classes are TFDS's label + 1 (0 is
the background and the padding), and each image keeps up to `max_objects`
(default 64: COCO's largest images have more; the rest are dropped, and the
count is said once). COCO's crowd regions (`is_crowd`) are left out, as its
evaluation ignores them. An image without objects is a valid example.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from cnnjax.data.arrays import ArrayDataset
from cnnjax.data.tf_utils import import_tensorflow, import_tfds
from cnnjax.errors import CnnjaxError

SOURCES = {"voc": ("train", "validation"), "coco": ("train", "validation")}
DEFAULT_IMAGE_SIZE = 256
DEFAULT_MAX_OBJECTS = 64


def load_tfds_detection(name: str, dataset_config, *, smoke: bool = False) -> ArrayDataset:
  from cnnjax.data.tfdata_sources import parse_splits, tfds_builder

  import_tfds()
  data_dir = os.path.expanduser(dataset_config.get("data_dir", "") or "")
  builder = tfds_builder(name, data_dir, bool(dataset_config.get("download", False)))
  size = int(dataset_config.get("image_size", 0) or DEFAULT_IMAGE_SIZE)
  limit = int(dataset_config.get("max_objects", 0) or DEFAULT_MAX_OBJECTS)
  default_train, default_eval = SOURCES[name]
  train_spec, eval_specs = parse_splits(dataset_config, default_train, [default_eval])
  specs = {"train": train_spec, **eval_specs}
  if smoke:
    specs = {s: f"{spec}[:{64 if s == 'train' else 32}]" if "[" not in spec else spec
             for s, spec in specs.items()}
  objects = builder.info.features["objects"]
  names = ("background",) + tuple(objects["label"].names)
  splits, dropped = {}, 0
  for split, spec in specs.items():
    arrays, cut = _to_arrays(builder.as_dataset(split=spec, shuffle_files=False), size, limit)
    if not len(arrays["label"]):
      raise CnnjaxError(f"split '{split}' ({spec}) of TFDS dataset '{name}' is empty")
    splits[split] = arrays
    dropped += cut
  if dropped:
    print(f"{name}: {dropped} objects beyond config.dataset.max_objects={limit} per image "
          "were left out", file=sys.stderr)
  return ArrayDataset(name=name, splits=splits, num_classes=len(names), task="detection",
                      metadata={"class_names": names, "tfds_name": builder.name,
                                "splits": specs})


def _to_arrays(ds, size: int, limit: int) -> tuple[dict, int]:
  tf = import_tensorflow()

  def pick(example):
    image = tf.image.resize(example["image"], [size, size], antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    objects = example["objects"]
    # Real records give every field one entry per object; take the common
    # length anyway (generated test records need not).
    count = tf.minimum(tf.shape(objects["bbox"])[0], tf.shape(objects["label"])[0])
    keep = tf.ones([count], tf.bool)
    if "is_crowd" in objects:
      count = tf.minimum(count, tf.shape(objects["is_crowd"])[0])
      keep = tf.logical_not(objects["is_crowd"][:count])
    bbox = tf.boolean_mask(objects["bbox"][:count], keep[:count]) * size  # ymin, xmin, ymax, xmax
    boxes = tf.stack([bbox[:, 1], bbox[:, 0], bbox[:, 3], bbox[:, 2]], axis=-1)
    labels = tf.boolean_mask(objects["label"][:count], keep[:count]) + 1
    return image, boxes, labels

  images, all_boxes, all_labels, dropped = [], [], [], 0
  for image, boxes, labels in ds.map(pick).as_numpy_iterator():
    dropped += max(0, len(labels) - limit)
    images.append(image)
    all_boxes.append(np.asarray(boxes, np.float32)[:limit])
    all_labels.append(np.asarray(labels, np.int32)[:limit])
  n = len(images)
  width = max([len(l) for l in all_labels] + [1])
  boxes = np.zeros((n, width, 4), np.float32)
  labels = np.zeros((n, width), np.int32)
  for i, (b, l) in enumerate(zip(all_boxes, all_labels)):
    boxes[i, :len(l)], labels[i, :len(l)] = b, l
  stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
  return {"image": stacked, "label": labels, "boxes": boxes}, dropped
