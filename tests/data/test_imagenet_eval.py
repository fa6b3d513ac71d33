"""torchvision's ImageNet evaluation transform on image folders, and its config.

cnnjax's 'shorter_side_center_crop' resize, then its own normalization, must
give the float inputs torchvision's `Resize(256), CenterCrop(224), ToTensor,
Normalize` gives the same files through `torchvision.datasets.ImageFolder`
(labels included): in memory, streamed through tf.data, and for a folder with
only val/. The images are odd sizes on purpose: landscape and portrait, one
smaller than 256 (upsampled), one whose crop offset is a half pixel
(torchvision rounds half to even), grey and RGBA files that become RGB.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections
import numpy as np
import pytest

from cnnjax.config import base_config, load_config, validate
from cnnjax.data import StreamDataset, get_dataset, pipeline
from cnnjax.errors import CnnjaxError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_CONFIG = os.path.join(REPO, "experiments", "imagenet", "eval_torchvision.py")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# class -> [(file name, (width, height), PIL mode)]
FILES = {
    "n01": [("a.JPEG", (300, 260), "RGB"), ("b.png", (257, 400), "RGBA")],
    "n02": [("c.JPEG", (400, 257), "L"), ("d.png", (200, 230), "RGB")],
    "n03": [("e.JPEG", (224, 500), "RGB")],
}
_TORCHVISION_OPS = []  # Keeps the stand-in op library registered.


def _torchvision():
  """torchvision, importable without its compiled ops (only transforms are used)."""
  import torch
  try:
    torch.ops.torchvision.nms
  except (AttributeError, RuntimeError):
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
      lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS.append(lib)
  import torchvision
  return torchvision


def _write_folder(root, splits=("train", "val")):
  """root/<split>/<class>/<file>: smooth colour patterns plus noise."""
  import zlib

  from PIL import Image
  for split in splits:
    for name, files in FILES.items():
      os.makedirs(root / split / name)
      for file, (width, height), mode in files:
        rng = np.random.default_rng(zlib.crc32(file.encode()))  # The same in every split.
        y, x = np.mgrid[:height, :width]
        pattern = np.stack([x * 255 / width, y * 255 / height, (x + y) % 97 * 2.6], -1)
        pixels = np.clip(pattern + rng.normal(0, 25, pattern.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        image.save(root / split / name / file, **({"quality": 90} if "JPEG" in file else {}))
  return str(root)


def _torchvision_val(data_dir):
  """(float images NHWC, labels) of val/ through torchvision's own pipeline."""
  tv = _torchvision()
  t = tv.transforms
  transform = t.Compose([t.Resize(256), t.CenterCrop(224), t.ToTensor(),
                         t.Normalize(MEAN, STD)])
  folder = tv.datasets.ImageFolder(os.path.join(data_dir, "val"), transform=transform)
  images, labels = zip(*(folder[i] for i in range(len(folder))))
  return np.stack([x.numpy().transpose(1, 2, 0) for x in images]), np.asarray(labels)


def _cfg(data_dir, **changes):
  config = base_config().dataset
  config.name = "image_folder"
  config.data_dir = data_dir
  config.image_size = 224
  config.resize_mode = "shorter_side_center_crop"
  config.resize_size = 256
  config.eval_splits = ("val",)
  config.mean, config.std = MEAN, STD
  for key, value in changes.items():
    config[key] = value
  return config


def _model_inputs(dataset, config, uint8_images):
  """What the model sees: cnnjax's eval preprocessing (/255, then mean/std)."""
  stats = pipeline.channel_stats(dataset, config)
  _, eval_fn = pipeline.make_preprocess(base_config().augment, stats)
  return np.asarray(eval_fn({"image": uint8_images})["image"])


def _streamed_val(dataset):
  batches = list(dataset.eval_batches("val", 2))
  mask = np.concatenate([b["mask"] for b in batches]) > 0
  return (np.concatenate([b["image"] for b in batches])[mask],
          np.concatenate([b["label"] for b in batches])[mask])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  full = _write_folder(root / "full")
  val_only = _write_folder(root / "val_only", splits=("val",))
  return full, val_only, _torchvision_val(full)


def test_in_memory_inputs_equal_torchvisions(folders):
  data_dir, _, (expected, labels) = folders
  config = _cfg(data_dir)
  data = get_dataset(config)
  assert data.eval_splits == ["val"] and data.input_shape == (224, 224, 3)
  val = data.splits["val"]
  np.testing.assert_array_equal(val["label"], labels)
  inputs = _model_inputs(data, config, val["image"])
  assert np.abs(inputs - expected).max() <= 1e-5


def test_a_folder_with_only_val_evaluates_and_refuses_training(folders):
  _, data_dir, (expected, labels) = folders
  config = _cfg(data_dir)
  data = get_dataset(config)
  images, got_labels = _streamed_val(data)
  np.testing.assert_array_equal(got_labels, labels)
  assert np.abs(_model_inputs(data, config, images) - expected).max() <= 1e-5
  assert data.eval_splits == ["val"] and data.metadata["evaluation_only"]
  training = "has no train/ subfolder, so it can only be evaluated"
  with pytest.raises(CnnjaxError, match=training):
    data.num_examples(data.train_split)
  with pytest.raises(CnnjaxError, match=training):
    data.train_batches(4, 0, 0)
  with pytest.raises(CnnjaxError, match="set config.dataset.mean and config.dataset.std"):
    pipeline.channel_stats(data, _cfg(data_dir, mean=(), std=()))
  # Without eval_splits naming val, a missing train/ stays the layout error.
  with pytest.raises(CnnjaxError, match="has no train/ subfolder; .*eval_splits"):
    get_dataset(_cfg(data_dir, eval_splits=()))


@pytest.mark.slow  # TensorFlow's import.
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="the streamed path needs TensorFlow")
def test_streamed_inputs_equal_torchvisions(folders):
  data_dir, val_only, (expected, labels) = folders
  for folder in (data_dir, val_only):
    config = _cfg(folder, max_device_mb=0)
    data = get_dataset(config)
    assert isinstance(data, StreamDataset)
    images, got_labels = _streamed_val(data)
    np.testing.assert_array_equal(got_labels, labels)
    assert np.abs(_model_inputs(data, config, images) - expected).max() <= 1e-5
  # Training without random crops streams the same crops (in its own order).
  data = get_dataset(_cfg(data_dir, max_device_mb=0))
  batch = next(data.train_batches(5, 0, 0))
  expected_uint8 = {image.tobytes() for image in _streamed_val(data)[0]}
  assert {image.tobytes() for image in batch["image"]} <= expected_uint8


def test_default_resize_mode_is_the_square_resize(folders):
  data_dir, _, _ = folders
  config = _cfg(data_dir, resize_mode="square", resize_size=0, image_size=32)
  images = get_dataset(config).splits["val"]["image"]
  from PIL import Image
  with Image.open(os.path.join(data_dir, "val", "n01", "a.JPEG")) as image:
    square = np.asarray(image.convert("RGB").resize((32, 32), Image.BILINEAR))
  np.testing.assert_array_equal(images[0], square)


@pytest.mark.parametrize("changes, message", [
    ({"resize_mode": "crop"},
     "config.dataset.resize_mode must be square or shorter_side_center_crop, got 'crop'"),
    ({"resize_size": -1}, "config.dataset.resize_size must be a whole number of pixels"),
    ({"resize_size": 200}, r"config.dataset.resize_size \(200\) must be at least "
                           r"config.dataset.image_size \(224\)"),
    ({"image_size": 0}, "needs config.dataset.image_size, the side of the central crop"),
    ({"name": "imagenet2012"}, "works with the image_folder source only, not 'imagenet2012'"),
    ({"resize_mode": "square"}, "config.dataset.resize_size applies only to"),
])
def test_resize_keys_are_validated_in_one_sentence(changes, message):
  config = load_config(EVAL_CONFIG)
  with config.unlocked():
    config.model.name = "resnet50"
  validate(config)  # The experiment itself is valid.
  for key, value in changes.items():
    config.dataset[key] = value
  with pytest.raises(CnnjaxError, match=message):
    validate(config)
  if "name" not in changes:  # The loader checks the keys too (cnnjax eval).
    with pytest.raises(CnnjaxError, match=message):
      get_dataset(ml_collections.ConfigDict(config.dataset.to_dict()))


def test_resize_size_zero_takes_image_size_over_0_875():
  from cnnjax.data.image_folder import crop_resize_size
  assert crop_resize_size(_cfg("", resize_size=0)) == 256
  assert crop_resize_size(_cfg("", resize_size=0, image_size=299)) == 342
  assert crop_resize_size(_cfg("", resize_mode="square", resize_size=0)) == 0


def test_published_figures_and_files_are_torchvisions():
  from cnnjax.config import import_experiment_file
  from cnnjax.models import list_models
  module = import_experiment_file(EVAL_CONFIG)
  models = _torchvision().models
  for name, (weights, top1, top5, file) in module.PUBLISHED.items():
    assert name in list_models()
    tv_name = module.TORCHVISION_NAMES.get(name, name)
    enum = models.get_model_weights(tv_name).IMAGENET1K_V1
    assert weights == f"{type(enum).__name__}.IMAGENET1K_V1"
    metrics = enum.meta["_metrics"]["ImageNet-1K"]
    assert (top1, top5) == (metrics["acc@1"], metrics["acc@5"])
    assert module.WEIGHTS_URL + file == enum.url
    preset = enum.transforms()
    assert (preset.resize_size, preset.crop_size) == ([256], [224])
    assert (tuple(preset.mean), tuple(preset.std)) == (MEAN, STD)
  config = load_config(EVAL_CONFIG)
  with config.unlocked():
    config.model.name = "densenet121"
  module.apply_reference(config)
  assert config.reference.metric == "val/accuracy" and config.reference.value == 0.74434
  assert config.reference.others == ("val/top5_accuracy=0.91972",)
  with pytest.raises(CnnjaxError, match="torchvision's 'googlenet' weights fit "
                                        "cnnjax's 'googlenet_tv'"):
    module.reference_for("googlenet")
