"""TFDS datasets, and image folders too big for memory, through tf.data.

TFDS datasets whose images have one fixed shape and fit in
`config.dataset.max_device_mb` (mnist, fashion_mnist, cifar10, cifar100,
svhn_cropped, ...) are read once into uint8 arrays and take the in-memory
path. The others (imagenette, imagenet2012, any dataset of variable-size
images) stream: see `cnnjax.data.tfdata`.
"""

from __future__ import annotations

import difflib
import math
import os

import jax
import numpy as np

from cnnjax.data import tfdata
from cnnjax.data.arrays import ArrayDataset
from cnnjax.data.stream import StreamDataset
from cnnjax.data.tf_utils import import_tensorflow, import_tfds
from cnnjax.errors import CnnjaxError, DataMissingError

# Per-channel statistics in [0, 1] units, for datasets too big to measure.
KNOWN_STATS = {
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
IMAGENET_MANUAL = ("imagenet2012 cannot be downloaded automatically: put "
                   "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                   "{dir}/downloads/manual, then run once with "
                   "--config.dataset.download=true to prepare it")


def parse_splits(dataset_config, default_train: str, default_eval: list[str]):
  """(train spec, {eval name: spec}) from `train_split` and `eval_splits`."""
  train = dataset_config.get("train_split", "") or default_train
  evals = {}
  for item in dataset_config.get("eval_splits", ()) or default_eval:
    name, sep, spec = str(item).partition("=")
    if not sep:
      name, spec = _split_name(item), item
    if not name or not spec:
      raise CnnjaxError(f"config.dataset.eval_splits item '{item}' must be a split "
                        "such as 'test' or NAME=SPEC such as 'val=train[90%:]'")
    evals[name] = spec
  return train, evals


def _split_name(spec: str) -> str:
  """'test' -> 'test'; 'train[90%:]' -> 'train_90pc_' (a metric-safe name)."""
  return "".join(c if c.isalnum() else "_" for c in spec.replace("%", "pc")).strip("_")


def tfds_builder(name: str, data_dir: str, download: bool, own_sources=()):
  tfds = import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    known = sorted(own_sources)
    # Without the community index, which is fetched over the network (seconds
    # without one): the names of the datasets TFDS itself defines.
    names = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(name, known + list(names), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise CnnjaxError(f"unknown dataset '{name}'{hint} (cnnjax's: "
                      f"{', '.join(known)}; or any TFDS name)") from e
  if not builder.is_prepared():
    where = data_dir or os.path.expanduser("~/tensorflow_datasets")
    if not download:
      raise DataMissingError(
          f"TFDS dataset '{name}' is not in {where}; run with "
          "--config.dataset.download=true to fetch it, or set "
          "config.dataset.data_dir to where it is")
    try:
      builder.download_and_prepare()
    except tfds.core.download.download_manager.NonMatchingChecksumError as e:
      raise CnnjaxError(f"downloading '{name}' failed a checksum check: {e}") from e
    except AssertionError as e:  # TFDS's manual-download message
      if name.startswith("imagenet2012"):
        raise CnnjaxError(IMAGENET_MANUAL.format(dir=where)) from e
      raise CnnjaxError(f"preparing '{name}' failed: {str(e).splitlines()[0]}") from e
    except OSError as e:
      raise CnnjaxError(f"downloading TFDS dataset '{name}' failed ({e}); check the "
                        "network or put the prepared data in config.dataset.data_dir") from e
  return builder


def _keys(builder) -> tuple[str, str]:
  keys = builder.info.supervised_keys
  if not keys or not isinstance(keys[0], str):
    raise CnnjaxError(f"TFDS dataset '{builder.name}' is not an (image, label) "
                      "classification dataset")
  return keys[0], keys[1]


def _split_size(builder, spec: str) -> int | None:
  try:
    return builder.info.splits[spec].num_examples
  except (KeyError, ValueError):
    return None


def load_tfds(dataset_config, *, smoke: bool = False, own_sources=()):
  """Any TFDS image classification dataset, by name. `own_sources`: cnnjax's
  own source names, offered when the name is in neither."""
  tfds = import_tfds()
  name = dataset_config.name
  data_dir = os.path.expanduser(dataset_config.get("data_dir", "") or "")
  builder = tfds_builder(name, data_dir, bool(dataset_config.get("download", False)),
                     own_sources)
  image_key, label_key = _keys(builder)
  feature = builder.info.features[image_key]
  shape = tuple(feature.shape)
  num_classes = builder.info.features[label_key].num_classes
  available = list(builder.info.splits)
  default_eval = ([s for s in ("test",) if s in available] or
                  [s for s in ("validation",) if s in available] or ["test"])
  train_spec, eval_specs = parse_splits(dataset_config, "train", default_eval)
  specs = {"train": train_spec, **eval_specs}
  if smoke:  # The first few hundred examples of each split.
    specs = {s: f"{spec}[:{512 if s == 'train' else 256}]"
             if "[" not in spec else spec for s, spec in specs.items()}
  sizes = {s: _split_size(builder, spec) for s, spec in specs.items()}
  image_size = int(dataset_config.get("image_size", 0) or 0)
  out_shape = (image_size, image_size, shape[-1]) if image_size else shape
  fixed = None not in out_shape
  if fixed and None in sizes.values():  # sliced splits: count the records
    skip = {image_key: tfds.decode.SkipDecoding()}
    sizes = {s: n if n is not None else _count(builder.as_dataset(
        split=specs[s], decoders=skip)) for s, n in sizes.items()}
  stored_mb = (sum(sizes.values()) * math.prod(out_shape) / 2**20) if fixed else math.inf
  metadata = {"tfds_name": builder.name, "splits": specs,
              "class_names": builder.info.features[label_key].names}
  if name in KNOWN_STATS:
    metadata["mean"], metadata["std"] = KNOWN_STATS[name]
  if fixed and stored_mb <= float(dataset_config.get("max_device_mb", 4096)):
    splits = {}
    for split, spec in specs.items():
      ds = builder.as_dataset(split=spec, shuffle_files=False)
      splits[split] = _to_arrays(tfds, ds, image_key, label_key, image_size, split, name)
    return ArrayDataset(name=name, splits=splits, num_classes=num_classes,
                        metadata=metadata)
  if not image_size:
    raise CnnjaxError(f"TFDS dataset '{name}' has images of varying size; set "
                      "config.dataset.image_size (e.g. 224) to stream it")
  return _tfds_stream(tfds, builder, specs, sizes, image_key, label_key,
                      out_shape, num_classes, dataset_config, metadata)


def _to_arrays(tfds, ds, image_key, label_key, image_size, split, name):
  tf = import_tensorflow()

  def pick(example):
    image = example[image_key]
    if image_size:
      image = tf.cast(tf.round(tf.image.resize(image, [image_size, image_size],
                                               antialias=True)), tf.uint8)
    return image, example[label_key]

  images, labels = [], []
  for x, y in tfds.as_numpy(ds.map(pick).batch(8192)):
    images.append(x)
    labels.append(y)
  if not images:
    raise CnnjaxError(f"split '{split}' of TFDS dataset '{name}' is empty")
  return {"image": np.concatenate(images).astype(np.uint8),
          "label": np.concatenate(labels).astype(np.int32)}


def _count(ds) -> int:
  n = int(ds.cardinality())
  if n >= 0:
    return n
  return int(ds.reduce(np.int64(0), lambda c, _: c + 1))


def _tfds_stream(tfds, builder, specs, sizes, image_key, label_key, shape,
                 num_classes, dataset_config, metadata):
  skip = {image_key: tfds.decode.SkipDecoding()}
  channels = shape[-1]
  process_count = jax.process_count()
  buffer = int(dataset_config.get("shuffle_buffer", 16384))

  def records(spec, *, shuffle_seed=None):
    if process_count > 1:  # Each host reads its own part of the split.
      spec = tfds.split_for_jax_process(spec)
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed) if shuffle_seed is not None \
        else None
    ds = builder.as_dataset(split=spec, shuffle_files=shuffle_seed is not None,
                            decoders=skip, read_config=read_config)
    return ds.map(lambda ex: (ex[image_key], ex[label_key]))

  for split, spec in specs.items():
    if sizes[split] is None:
      sizes[split] = _count(records(spec))
  train_spec = specs["train"]

  def train_batches(batch_size, start_step, seed, crop_scale=(), crop_ratio=(3 / 4, 4 / 3)):
    local = batch_size // process_count
    steps_per_epoch = sizes["train"] // batch_size
    transform = tfdata.train_transform(shape[0], channels, crop_scale, crop_ratio)

    def epoch_records(epoch):
      s = (seed * 1_000_003 + epoch) % 2**31
      return records(train_spec, shuffle_seed=s).shuffle(buffer, seed=s)

    return tfdata.train_stream(epoch_records, steps_per_epoch, local, start_step,
                               seed, transform)

  def eval_batches(split, batch_size, center_crop=False):
    transform = tfdata.eval_transform(shape[0], channels, center_crop)
    return tfdata.eval_stream(records(specs[split]), batch_size, transform)

  return StreamDataset(
      name=builder.name, num_classes=num_classes, input_shape=shape,
      input_dtype=np.uint8, split_sizes=dict(sizes), train_batches=train_batches,
      eval_batches=eval_batches, metadata=metadata, host_crops=True)


def image_folder_stream(splits, classes, channels, image_size, dataset_config,
                        metadata, decode=None) -> StreamDataset:
  """An image folder streamed from disk: paths shuffled per epoch, decoded by tf.data.

  `decode(path) -> uint8 (H, W[, C])`, when given, replaces TensorFlow's
  decoding and square resize: the images are then the in-memory path's,
  pixel for pixel (PIL in a `tf.numpy_function`; the shorter-side resize and
  center crop of `config.dataset.resize_mode`). Evaluation then ignores
  `center_crop` (the crop is the policy's), and so does training without
  `crop_scale`; random resized crops are still cut by TensorFlow from the
  full image.
  """
  tf = import_tensorflow()
  from cnnjax.data.arrays import data_key_for_seed
  from cnnjax.data.stream import epoch_order

  shape = (image_size, image_size, channels)
  process_count, process_index = jax.process_count(), jax.process_index()

  def read(path, label):
    return tf.io.read_file(path), label

  def decoded(path, label, *unused_seed):
    image = tf.numpy_function(lambda p: decode(p.decode()).reshape(shape), [path],
                              tf.uint8, stateful=False)
    image.set_shape(shape)
    return image, label

  def records(paths, labels, pil):
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds if pil else ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)

  def train_batches(batch_size, start_step, seed, crop_scale=(), crop_ratio=(3 / 4, 4 / 3)):
    paths, labels = splits["train"]
    paths = np.asarray(paths)
    steps_per_epoch = len(paths) // batch_size
    data_key = data_key_for_seed(seed)
    pil = decode is not None and not crop_scale
    transform = (decoded if pil else
                 tfdata.train_transform(image_size, channels, crop_scale, crop_ratio))

    def epoch_records(epoch):
      order = epoch_order(data_key, epoch, len(paths))
      # Each host takes every process_count-th example of the global order.
      order = order[process_index::process_count]
      return records(paths[order], labels[order], pil)

    return tfdata.train_stream(epoch_records, steps_per_epoch,
                               batch_size // process_count, start_step, seed, transform)

  def eval_batches(split, batch_size, center_crop=False):
    paths, labels = splits[split]
    pil = decode is not None
    transform = (decoded if pil else
                 tfdata.eval_transform(image_size, channels, center_crop))
    return tfdata.eval_stream(records(np.asarray(paths), labels, pil), batch_size,
                              transform)

  return StreamDataset(
      name="image_folder", num_classes=len(classes), input_shape=shape,
      input_dtype=np.uint8, split_sizes={s: len(p) for s, (p, _) in splits.items()},
      train_batches=train_batches, eval_batches=eval_batches, metadata=metadata,
      host_crops=True)
