"""Image folders, TFDS (mocked), host streams and the loop's two input paths."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from cnnjax.data import ArrayDataset, StreamDataset, get_dataset
from cnnjax.data.arrays import data_key_for_seed, train_batch
from cnnjax.data.stream import array_train_batches, as_stream, prefetch
from cnnjax.errors import CnnjaxError
from data_fixtures import CLASSES, make_folder


def _cfg(**kw):
  base = dict(name="image_folder", data_dir="", image_size=0, max_device_mb=4096,
              train_split="", eval_splits=(), shuffle_buffer=64, download=False,
              mean=(), std=())
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_image_folder_decodes_every_file_with_its_class(tmp_path):
  written = make_folder(tmp_path)
  data = get_dataset(_cfg(data_dir=str(tmp_path)))
  assert isinstance(data, ArrayDataset)
  assert data.num_classes == 3 and data.metadata["class_names"] == list(CLASSES)
  train = data.splits["train"]
  assert train["image"].shape == (18, 8, 10, 3) and train["image"].dtype == np.uint8
  # Sorted by class, then by file name: cat/00 is first, emu/05 last.
  np.testing.assert_array_equal(train["label"], np.repeat([0, 1, 2], 6))
  np.testing.assert_array_equal(train["image"][0],
                                written[str(tmp_path / "train/cat/00.png")])
  np.testing.assert_array_equal(train["image"][-1],
                                written[str(tmp_path / "train/emu/05.png")])
  assert data.eval_splits == ["test"] and data.num_examples("test") == 6


def test_image_folder_grey_images_keep_one_channel_and_resize(tmp_path):
  make_folder(tmp_path, mode="L", size=(12, 12))
  data = get_dataset(_cfg(data_dir=str(tmp_path), image_size=6))
  assert data.splits["train"]["image"].shape == (18, 6, 6, 1)
  # A constant image stays constant after a bilinear resize.
  assert np.ptp(data.splits["train"]["image"][5, 1:, 1:]) == 0


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("archive", "is an archive; extract it first"),
    ("no_train", "has no train/ subfolder"),
    ("no_test", "has no test/ \\(or val/\\) subfolder"),
    ("empty_class", "has no images"),
    ("corrupt", "cannot read image .*03.png"),
    ("sizes", "images differ in size .*set config.dataset.image_size"),
    ("extra_class", "has classes that train/ lacks: yak"),
])
def test_image_folder_problems_get_one_sentence(tmp_path, problem, message):
  root = tmp_path / "data"
  if problem != "missing":
    make_folder(root)
  path = str(root)
  if problem == "archive":
    path = str(tmp_path / "cifar.tar.gz")
    open(path, "wb").close()
  elif problem == "no_train":
    os.rename(root / "train", root / "training")
  elif problem == "no_test":
    os.rename(root / "test", root / "testing")
  elif problem == "empty_class":
    os.makedirs(root / "train" / "zebra")
  elif problem == "corrupt":
    (root / "train" / "dog" / "03.png").write_bytes(b"not a png at all")
  elif problem == "sizes":
    from PIL import Image
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train/dog/03.png")
  elif problem == "extra_class":
    os.makedirs(root / "test" / "yak")
  with pytest.raises(CnnjaxError, match=message):
    get_dataset(_cfg(data_dir=path))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_host_array_stream_equals_the_device_batches_and_resumes():
  rng = np.random.default_rng(0)
  arrays = {"image": rng.integers(0, 255, (23, 4, 4, 3), np.uint8),
            "label": rng.integers(0, 3, 23).astype(np.int32)}
  key = data_key_for_seed(5)
  host = _take(array_train_batches(arrays, 4, 0, key), 12)  # 5 steps an epoch
  for step in (0, 3, 4, 5, 11):
    device = train_batch(jax.device_put(arrays), np.int32(step), batch_size=4,
                         data_key=key)
    for k in arrays:
      np.testing.assert_array_equal(host[step][k], np.asarray(device[k]))
  resumed = _take(array_train_batches(arrays, 4, 7, key), 5)
  for a, b in zip(host[7:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_prefetch_keeps_order_and_raises_the_producers_error():
  assert list(prefetch(iter(range(10)), size=2)) == list(range(10))

  def broken():
    yield 1
    raise CnnjaxError("disk on fire")

  it = prefetch(broken())
  assert next(it) == 1
  with pytest.raises(CnnjaxError, match="disk on fire"):
    next(it)


def _epoch_labels(stream, batches):
  return np.concatenate([b["label"] for b in batches])


def test_streamed_image_folder_is_deterministic_resumable_and_covers_the_split(tmp_path):
  written = make_folder(tmp_path, train=8, test=3, size=(8, 8))
  data = get_dataset(_cfg(data_dir=str(tmp_path), image_size=8, max_device_mb=0))
  assert isinstance(data, StreamDataset) and data.host_crops
  assert data.split_sizes == {"train": 24, "test": 9}
  first = _take(data.train_batches(5, 0, 3), 9)  # 4 steps an epoch
  again = _take(data.train_batches(5, 0, 3), 9)
  resumed = _take(data.train_batches(5, 6, 3), 3)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(first[6:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert first[0]["image"].shape == (5, 8, 8, 3) and first[0]["image"].dtype == np.uint8
  # One epoch: 20 distinct images; the next epoch is another order.
  epoch = [image.tobytes() for b in first[:4] for image in b["image"]]
  assert len(set(epoch)) == 20
  assert [image.tobytes() for image in first[4]["image"]] != epoch[:5]
  # Evaluation: every test image once, in file order, the rest masked.
  batches = list(data.eval_batches("test", 4))
  assert [b["image"].shape[0] for b in batches] == [4, 4, 4]
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(mask, [1] * 9 + [0] * 3)
  images = np.concatenate([b["image"] for b in batches])[:9]
  expected = [written[str(tmp_path / "test" / c / f"{i:02d}.png")]
              for c in CLASSES for i in range(3)]
  np.testing.assert_array_equal(images, np.stack(expected))


def test_streamed_random_resized_crops_are_seeded_per_example(tmp_path):
  make_folder(tmp_path, size=(16, 16))
  data = get_dataset(_cfg(data_dir=str(tmp_path), image_size=8, max_device_mb=0))
  crops = dict(crop_scale=(0.2, 0.5), crop_ratio=(0.75, 1.33))
  a = next(data.train_batches(6, 0, 1, **crops))
  b = next(data.train_batches(6, 0, 1, **crops))
  plain = next(data.train_batches(6, 0, 1))
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["label"], plain["label"])
  assert a["image"].shape == (6, 8, 8, 3)


def test_as_stream_serves_an_array_dataset_batch_for_batch():
  x = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
  data = ArrayDataset("t", {"train": {"image": x, "label": np.arange(10) % 2},
                            "test": {"image": x[:3], "label": np.arange(3) % 2}}, 2)
  stream = as_stream(data)
  assert stream.split_sizes == {"train": 10, "test": 3} and not stream.host_crops
  batch = next(stream.train_batches(4, 0, 0))
  device = train_batch(jax.device_put(data.splits["train"]), np.int32(0),
                       batch_size=4, data_key=data_key_for_seed(0))
  np.testing.assert_array_equal(batch["image"], np.asarray(device["image"]))
  (only,) = list(stream.eval_batches("test", 5))
  np.testing.assert_array_equal(only["mask"], [1, 1, 1, 0, 0])


# --------------------------------------------------------------------------
# TFDS, through tfds.testing.mock_data (random examples, no files).

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_fixed_shape_datasets_load_into_memory():
  with tfds.testing.mock_data(num_examples=24):
    data = get_dataset(_cfg(name="cifar10", download=True))
  assert isinstance(data, ArrayDataset)
  assert data.splits["train"]["image"].shape == (24, 32, 32, 3)
  assert data.splits["train"]["image"].dtype == np.uint8
  assert data.num_classes == 10 and data.eval_splits == ["test"]
  assert len(data.metadata["class_names"]) == 10


def test_tfds_named_eval_splits_and_grey_images():
  with tfds.testing.mock_data(num_examples=10):
    data = get_dataset(_cfg(name="mnist", download=True,
                            eval_splits=("val=train[90%:]", "test")))
  assert data.eval_splits == ["val", "test"]
  assert data.input_shape == (28, 28, 1)
  assert data.metadata["splits"] == {"train": "train", "val": "train[90%:]",
                                     "test": "test"}


def test_tfds_variable_size_images_stream_at_image_size():
  with tfds.testing.mock_data(num_examples=12):
    with pytest.raises(CnnjaxError, match="varying size; set config.dataset.image_size"):
      get_dataset(_cfg(name="imagenette", download=True, eval_splits=("validation",)))
    small = get_dataset(_cfg(name="imagenette", download=True, image_size=16,
                             eval_splits=("validation",)))
    assert isinstance(small, ArrayDataset)  # resized, it fits in memory
    data = get_dataset(_cfg(name="imagenette", download=True, image_size=16,
                            eval_splits=("validation",), max_device_mb=0))
    assert isinstance(data, StreamDataset) and data.host_crops
    assert data.split_sizes == {"train": 12, "validation": 12}
    first = _take(data.train_batches(4, 0, 0, crop_scale=(0.3, 1.0)), 4)
    resumed = _take(data.train_batches(4, 2, 0, crop_scale=(0.3, 1.0)), 2)
    evaluated = list(data.eval_batches("validation", 5, center_crop=True))
  assert first[0]["image"].shape == (4, 16, 16, 3)
  for a, b in zip(first[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert sum(b["mask"].sum() for b in evaluated) == 12


def test_tfds_missing_and_unknown_datasets_are_one_sentence(tmp_path):
  with pytest.raises(CnnjaxError, match="TFDS dataset 'mnist' is not in .*download=true"):
    get_dataset(_cfg(name="mnist", data_dir=str(tmp_path)))
  with pytest.raises(CnnjaxError, match="unknown dataset 'cifar_11'"):
    get_dataset(_cfg(name="cifar_11", data_dir=str(tmp_path)))


def test_named_splits_of_a_local_source_can_be_chosen(tmp_path):
  make_folder(tmp_path)
  os.rename(tmp_path / "test", tmp_path / "val")
  make_folder(tmp_path / "more")
  os.rename(tmp_path / "more" / "test", tmp_path / "test")
  data = get_dataset(_cfg(data_dir=str(tmp_path)))
  assert data.eval_splits == ["val", "test"]
  assert get_dataset(_cfg(data_dir=str(tmp_path), eval_splits=("test",))).eval_splits == ["test"]
  with pytest.raises(CnnjaxError, match="has no split 'validation'; its splits are train, val, test"):
    get_dataset(_cfg(data_dir=str(tmp_path), eval_splits=("validation",)))
  streamed = get_dataset(_cfg(data_dir=str(tmp_path), eval_splits=("test",),
                              image_size=8, max_device_mb=0))
  assert isinstance(streamed, StreamDataset) and streamed.eval_splits == ["test"]
  assert sum(b["mask"].sum() for b in streamed.eval_batches("test", 4)) == 6
