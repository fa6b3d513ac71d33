"""Datasets: every source yields dicts with 'image' (or 'tokens') and 'label'.

`get_dataset(config.dataset)` picks the source by `config.dataset.name`:

  mnist1d, digits   generated or bundled, in memory (float inputs)
  image_folder      data_dir/train/<class>/*, data_dir/test/<class>/*
  medmnist          MedMNIST v2/+ npz files; `subset` and `image_size`
  mr, text_file     sentence classification (Kim 2014), k-fold splits
  shapes_segmentation, digits_segmentation, shapes_detection, digits_detection
                    procedural scenes (data/scenes.py): class maps, or boxes
  tones             synthetic sounds as log-mel features (data/tones.py)
  voc, coco         TFDS's detection sets, resized, boxes padded (data/tfds_detection.py)
  speech_commands   TFDS's keyword clips as log-mel features (data/speech_commands.py)
  anything else     a TFDS dataset by name (mnist, cifar10, imagenette, ...)

Data that fits `config.dataset.max_device_mb` is an `ArrayDataset` held on the
device as uint8 and batched inside jit; the rest is a `StreamDataset` read by
the host (tf.data for encoded images).
"""

from __future__ import annotations

import functools
import sys


from cnnjax.data.arrays import ArrayDataset  # noqa: F401
from cnnjax.data.splits import select_classes, select_splits  # noqa: F401
from cnnjax.data.stream import StreamDataset  # noqa: F401
from cnnjax.errors import CnnjaxError, DataMissingError
from cnnjax.registry import Registry

# config.dataset.smoke_data: where a smoke run's data comes from.
SMOKE_DATA = ("auto", "synthetic", "real")
# Sources that generate or bundle their data: always present, no stand-in.
ALWAYS_PRESENT = ("mnist1d", "digits", "shapes_segmentation", "digits_segmentation",
                  "shapes_detection", "digits_detection", "tones")
# Sources of cnnjax's own that read TFDS and take `train_split` and
# `eval_splits` as TFDS split specifications (as TFDS names do), so their
# splits are not selected again by name.
TFDS_SPEC_SOURCES = ("voc", "coco", "speech_commands")


def _register_sources() -> None:
  # The loaders are imported only when a source is looked up.
  from cnnjax.data.digits import load_digits
  from cnnjax.data.image_folder import load_image_folder
  from cnnjax.data.medmnist import load_medmnist
  from cnnjax.data.mnist1d import load_mnist1d
  from cnnjax.data.scenes import load_detection, load_segmentation
  from cnnjax.data.speech_commands import load_speech_commands
  from cnnjax.data.text import load_mr, load_text_file
  from cnnjax.data.tfds_detection import load_tfds_detection
  from cnnjax.data.tones import load_tones

  for name, loader in (("mnist1d", load_mnist1d), ("digits", load_digits),
                       ("image_folder", load_image_folder),
                       ("medmnist", load_medmnist), ("mr", load_mr),
                       ("text_file", load_text_file), ("tones", load_tones),
                       ("speech_commands", load_speech_commands)):
    SOURCES.add(name, loader)
  for kind in ("shapes", "digits"):
    SOURCES.add(f"{kind}_segmentation", functools.partial(load_segmentation, kind))
    SOURCES.add(f"{kind}_detection", functools.partial(load_detection, kind))
  for name in ("voc", "coco"):  # TFDS's detection sets, as detection data
    SOURCES.add(name, functools.partial(load_tfds_detection, name))


# cnnjax's own sources: name -> loader(dataset_config, *, smoke) -> dataset.
# Any other name is looked up in TFDS.
SOURCES: Registry = Registry("dataset", populate=_register_sources)


def list_datasets() -> list[str]:
  """cnnjax's own sources (any TFDS name works as well)."""
  return sorted(SOURCES.names())


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
  name = dataset_config.name
  classes = tuple(dataset_config.get("classes", ()) or ())
  if name in SOURCES:
    loader = SOURCES.get(name)
    dataset = loader(dataset_config, smoke=smoke)
    if name not in TFDS_SPEC_SOURCES:
      dataset = select_splits(dataset, dataset_config)
    return select_classes(dataset, classes)
  if name.startswith("tfds:"):
    dataset_config = dataset_config.copy_and_resolve_references()
    with dataset_config.unlocked():
      dataset_config.name = name[len("tfds:"):]
  try:
    from cnnjax.data.tfdata_sources import load_tfds
    dataset = load_tfds(dataset_config, smoke=smoke, own_sources=list_datasets())
  except CnnjaxError as e:
    # Only a missing TensorFlow is rewritten (a missing dataset's message may
    # name ~/tensorflow_datasets). Without it the data cannot be read here.
    if isinstance(e, DataMissingError) or "tensorflow" not in str(e).lower():
      raise
    raise DataMissingError(
        f"unknown dataset '{name}' (cnnjax's: {', '.join(list_datasets())}); "
        "TFDS names need `pip install tensorflow-cpu tensorflow-datasets`") from e
  return select_classes(dataset, classes)
