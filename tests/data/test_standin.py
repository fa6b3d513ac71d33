"""Generated stand-ins for smoke runs (cnnjax/data/standin.py) and the
`dataset.smoke_data` choice of `get_dataset`."""

import json
import os

import ml_collections
import numpy as np
import pytest

from cnnjax.data import get_dataset
from cnnjax.data.standin import has_standin, standin_dataset
from cnnjax.errors import CnnjaxError, DataMissingError

from conftest import EXPERIMENTS


def dataset_config(**fields):
  return ml_collections.ConfigDict(fields)


def shapes(dataset):
  return {split: arrays[dataset.input_key].shape for split, arrays in dataset.splits.items()}


# ------------------------------------------------------------------- TFDS --

@pytest.mark.parametrize("fields, image_shape, num_classes, eval_split", [
    (dict(name="mnist"), (28, 28, 1), 10, "test"),
    (dict(name="fashion_mnist"), (28, 28, 1), 10, "test"),
    (dict(name="cifar10"), (32, 32, 3), 10, "test"),
    (dict(name="tfds:cifar100"), (32, 32, 3), 100, "test"),
    (dict(name="svhn_cropped"), (32, 32, 3), 10, "test"),
    (dict(name="stl10"), (96, 96, 3), 10, "test"),
    (dict(name="imagenet2012", image_size=40), (40, 40, 3), 1000, "validation"),
    (dict(name="imagenette", image_size=24), (24, 24, 3), 10, "validation"),
    (dict(name="cifar10", image_size=16), (16, 16, 3), 10, "test"),
])
def test_tfds_standins_have_the_real_shapes(fields, image_shape, num_classes, eval_split):
  dataset = standin_dataset(dataset_config(**fields))
  assert dataset.num_classes == num_classes and dataset.task == "multiclass"
  assert shapes(dataset) == {"train": (128, *image_shape), eval_split: (64, *image_shape)}
  for arrays in dataset.splits.values():
    assert arrays["image"].dtype == np.uint8 and arrays["label"].dtype == np.int32
    assert arrays["label"].shape == (len(arrays["image"]),)
    assert 0 <= arrays["label"].min() and arrays["label"].max() < num_classes
  assert dataset.metadata["standin"] is True
  assert len(dataset.metadata["class_names"]) == num_classes


def test_imagenet_standin_defaults_to_224_and_carries_imagenet_statistics():
  dataset = standin_dataset(dataset_config(name="imagenet2012"))
  assert dataset.input_shape == (224, 224, 3)
  assert dataset.metadata["mean"] == (0.485, 0.456, 0.406)


def test_tfds_standin_names_eval_splits_as_load_tfds_does():
  dataset = standin_dataset(dataset_config(
      name="mnist", eval_splits=("val=train[90%:]", "test")))
  assert list(dataset.splits) == ["train", "val", "test"]
  assert dataset.metadata["splits"] == {"train": "train", "val": "train[90%:]",
                                        "test": "test"}


# ------------------------------------------------------ own sources --

def test_image_folder_standin_and_class_selection():
  dataset = standin_dataset(dataset_config(name="image_folder", data_dir="/nowhere"))
  assert shapes(dataset) == {"train": (128, 32, 32, 3), "test": (64, 32, 32, 3)}
  assert dataset.num_classes == 10 and len(dataset.metadata["class_names"]) == 10
  picked = standin_dataset(dataset_config(name="image_folder", image_size=20,
                                          classes=(7, 2)))
  assert picked.num_classes == 2 and picked.input_shape == (20, 20, 3)
  assert set(np.unique(picked.splits["test"]["label"])) == {0, 1}
  assert picked.metadata["classes"] == [7, 2]
  # The same examples as the full stand-in's classes 7 and 2, renumbered.
  full = dataset.splits["train"]
  assert len(picked.splits["train"]["label"]) == np.isin(full["label"], (7, 2)).sum()
  with pytest.raises(CnnjaxError, match="no split 'validation'"):
    standin_dataset(dataset_config(name="image_folder", eval_splits=("validation",)))


@pytest.mark.parametrize("subset, image_size, image_shape, num_classes, task", [
    ("pathmnist", 0, (28, 28, 3), 9, "multiclass"),
    ("octmnist", 64, (64, 64, 1), 4, "multiclass"),
    ("retinamnist", 28, (28, 28, 3), 5, "ordinal"),
    ("breastmnist", 28, (28, 28, 1), 2, "binary"),
    ("organmnist3d", 28, (28, 28, 28, 1), 11, "multiclass"),
    ("nodulemnist3d", 28, (28, 28, 28, 1), 2, "binary"),
])
def test_medmnist_standins_follow_the_subset_table(subset, image_size, image_shape,
                                                   num_classes, task):
  dataset = standin_dataset(dataset_config(name="medmnist", subset=subset,
                                           image_size=image_size))
  assert dataset.task == task and dataset.num_classes == num_classes
  assert shapes(dataset) == {"train": (128, *image_shape), "val": (64, *image_shape),
                             "test": (64, *image_shape)}
  assert dataset.name == (subset if image_size in (0, 28) else f"{subset}_{image_size}")
  assert dataset.metadata["evaluator"] == "medmnist"
  assert dataset.metadata["subset"] == subset
  assert len(dataset.metadata["label_names"]) == num_classes
  for arrays in dataset.splits.values():
    assert arrays["label"].dtype == np.int32 and arrays["label"].ndim == 1
    # Balanced: every class is in every split, so each class's AUC is defined.
    assert len(np.unique(arrays["label"])) == num_classes


def test_chestmnist_standin_is_multilabel_with_both_values_per_label():
  dataset = standin_dataset(dataset_config(name="medmnist", subset="ChestMNIST"))
  assert dataset.task == "multilabel" and dataset.num_classes == 14
  for split, n in (("train", 128), ("val", 64), ("test", 64)):
    labels = dataset.splits[split]["label"]
    assert labels.shape == (n, 14) and set(np.unique(labels)) == {0, 1}
    assert (labels.min(axis=0) == 0).all() and (labels.max(axis=0) == 1).all()
  assert dataset.input_shape == (28, 28, 1)


def test_medmnist_standin_refuses_what_the_loader_refuses():
  with pytest.raises(CnnjaxError, match="image_size"):
    standin_dataset(dataset_config(name="medmnist", subset="organmnist3d",
                                   image_size=128))
  with pytest.raises(CnnjaxError, match="did you mean 'pathmnist'"):
    standin_dataset(dataset_config(name="medmnist", subset="pathmnsit"))


def write_mr(folder, n=30):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "rt-polarity.pos"), "w") as f:
    f.write("".join(f"a good film number {i} , truly great\n" for i in range(n)))
  with open(os.path.join(folder, "rt-polarity.neg"), "w") as f:
    f.write("".join(f"a bad film number {i} , dull and long\n" for i in range(n)))


def test_mr_standin_matches_load_mr_conventions(tmp_path):
  dataset = standin_dataset(dataset_config(name="mr", max_length=12, pad=4))
  assert shapes(dataset) == {"train": (128, 20), "test": (64, 20)}
  tokens = dataset.splits["train"]["tokens"]
  vocabulary = dataset.metadata["vocabulary"]
  assert tokens.dtype == np.int32 and vocabulary[:2] == ["<pad>", "<unk>"]
  assert dataset.model_fields == {"vocab_size": len(vocabulary)}
  assert 0 <= tokens.min() and tokens.max() < len(vocabulary)
  assert (tokens[:, :4] == 0).all()  # The padding at the front.
  assert dataset.num_classes == 2 and set(np.unique(dataset.splits["test"]["label"])) == {0, 1}
  write_mr(str(tmp_path / "mr"))
  real = get_dataset(dataset_config(name="mr", data_dir=str(tmp_path / "mr"), num_folds=3))
  assert set(dataset.metadata) == set(real.metadata) | {"standin"}
  assert set(dataset.model_fields) == set(real.model_fields)
  longest = standin_dataset(dataset_config(name="text_file"))
  assert longest.metadata["max_length"] == longest.splits["train"]["tokens"].shape[1] - 8


def test_standins_are_deterministic_and_their_labels_are_learnable():
  first = standin_dataset(dataset_config(name="cifar10"))
  again = standin_dataset(dataset_config(name="cifar10"))
  for split in first.splits:
    for key in ("image", "label"):
      np.testing.assert_array_equal(first.splits[split][key], again.splits[split][key])
  assert not np.array_equal(first.splits["train"]["image"][:64], first.splits["test"]["image"])
  text = [standin_dataset(dataset_config(name="mr")).splits["train"]["tokens"]
          for _ in range(2)]
  np.testing.assert_array_equal(*text)
  # The nearest class mean (of per-channel image means) on train labels most
  # of test: the label is in the image.
  def features(arrays):
    return arrays["image"].reshape(len(arrays["image"]), -1, 3).mean(axis=1)
  train, test = first.splits["train"], first.splits["test"]
  centres = np.stack([features(train)[train["label"] == c].mean(0) for c in range(10)])
  guess = np.argmin(((features(test)[:, None] - centres) ** 2).sum(-1), axis=1)
  assert (guess == test["label"]).mean() > 0.9


def test_unknown_dataset_has_no_standin():
  assert not has_standin(dataset_config(name="oxford_flowers102"))
  assert has_standin(dataset_config(name="tfds:stl10"))
  with pytest.raises(CnnjaxError, match="no generated stand-in for dataset "
                     "'oxford_flowers102'.*smoke_data=real"):
    standin_dataset(dataset_config(name="oxford_flowers102"))


# ------------------------------------------------- get_dataset(smoke=...) --

def test_auto_falls_back_on_a_missing_tfds_dataset(tmp_path, capsys):
  config = dataset_config(name="cifar10", data_dir=str(tmp_path), smoke_data="auto")
  dataset = get_dataset(config, smoke=True)
  assert dataset.metadata["standin"] is True and dataset.input_shape == (32, 32, 3)
  assert ("smoke run: cifar10 is not on this machine; using a generated stand-in"
          in capsys.readouterr().err)
  with pytest.raises(DataMissingError, match="TFDS dataset 'cifar10' is not in"):
    get_dataset(dataset_config(name="cifar10", data_dir=str(tmp_path),
                               smoke_data="real"), smoke=True)
  with pytest.raises(DataMissingError, match="is not in"):  # A full run never stands in.
    get_dataset(config, smoke=False)


def test_auto_falls_back_on_a_missing_medmnist_file(tmp_path, capsys):
  config = dataset_config(name="medmnist", subset="dermamnist", data_dir=str(tmp_path))
  dataset = get_dataset(config, smoke=True)
  assert dataset.metadata["standin"] is True and dataset.num_classes == 7
  assert "medmnist (dermamnist) is not on this machine" in capsys.readouterr().err
  config.smoke_data = "real"
  with pytest.raises(DataMissingError, match="dermamnist.npz is missing"):
    get_dataset(config, smoke=True)


def test_smoke_data_choices(tmp_path):
  write_mr(str(tmp_path / "mr"))
  present = dataset_config(name="mr", data_dir=str(tmp_path / "mr"), num_folds=3,
                           smoke_data="auto")
  assert "standin" not in get_dataset(present, smoke=True).metadata  # Real data wins.
  present.smoke_data = "synthetic"
  assert get_dataset(present, smoke=True).metadata["standin"] is True
  assert "standin" not in get_dataset(present).metadata  # Full runs: real data.
  digits = get_dataset(dataset_config(name="digits", smoke_data="synthetic"), smoke=True)
  assert "standin" not in digits.metadata  # Bundled: never a stand-in.
  with pytest.raises(DataMissingError, match="data_dir is not set"):
    get_dataset(dataset_config(name="mr", smoke_data="real"), smoke=True)
  with pytest.raises(CnnjaxError, match="smoke_data must be one of auto, synthetic, real"):
    get_dataset(dataset_config(name="mr", smoke_data="fake"), smoke=True)
  # No stand-in to fall back on: the loader's own error stands.
  with pytest.raises(DataMissingError, match="does not exist"):
    get_dataset(dataset_config(name="image_folder", data_dir=str(tmp_path / "no"),
                               classes=(1, 2)), smoke=False)


def test_validate_refuses_a_bad_smoke_data():
  from cnnjax.config import base_config, validate

  config = base_config()
  config.model.name, config.dataset.name, config.num_steps = "lenet5", "digits", 10
  validate(config)
  config.dataset.smoke_data = "sometimes"
  with pytest.raises(CnnjaxError, match="smoke_data must be auto, synthetic or real"):
    validate(config)


# ----------------------------------------------------------- end to end --

@pytest.fixture
def quick_compile():
  """XLA with most optimizations off: on a CPU, compiling is most of the
  cost of a 3-step run, and this about halves it."""
  import jax

  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


@pytest.mark.usefixtures("quick_compile")
@pytest.mark.parametrize("experiment, smoke_data", [
    # 8 s of ResNet-20 compiling; 'synthetic' is chosen in test_smoke_data_choices
    # and a stand-in trains through the driver below.
    pytest.param("cifar10/resnet20.py", "synthetic", marks=pytest.mark.slow),
    ("mr/kim_cnn_rand.py", "auto"),  # No data_dir: falls back to the stand-in.
])
def test_smoke_run_trains_on_a_standin(tmp_path, experiment, smoke_data):
  from cnnjax.config import load_config
  from cnnjax.train.loop import train_and_evaluate

  config = load_config(os.path.join(EXPERIMENTS, experiment))
  with config.unlocked():
    config.smoke = True
    config.smoke_steps = 3
    config.dataset.smoke_data = smoke_data
    config.progress_bar = False
  workdir = str(tmp_path / "run")
  result = train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "result.json")) as f:
    written = json.load(f)
  assert written["num_steps"] == result["num_steps"] == 3
  assert 0.0 <= written["final"]["test/accuracy"] <= 1.0
