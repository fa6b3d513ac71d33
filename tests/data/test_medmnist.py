"""MedMNIST: the official npz layout, the subset table and the official metrics.

The fixtures are tiny files in the exact format of the released ones; the
metrics are checked against medmnist's own Evaluator where the package is
installed (it is imported without torchvision, which only its download needs).
"""

from __future__ import annotations

import sys
import types

import ml_collections
import numpy as np
import pytest

from cnnjax.data.medmnist import (SUBSETS, TASK_FROM_MEDMNIST, load_medmnist,
                                  subset_info)
from cnnjax.errors import CnnjaxError
from cnnjax.evaluators.medmnist import official_metrics, scores_from_logits

SPLITS = ("train", "val", "test")


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def fake_arrays(flag, size=28, counts=(40, 10, 10), seed=0):
  """Random data shaped like the official `<flag>[_<size>].npz` file."""
  info = SUBSETS[flag]
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in zip(SPLITS, counts):
    shape = (n,) + (size,) * (3 if info.volumetric else 2)
    if info.num_channels == 3:
      shape += (3,)
    arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
    if info.task == "multilabel":
      labels = (rng.random((n, info.num_classes)) < 0.3).astype(np.uint8)
      labels[0], labels[1] = 0, 1  # Every label sees both values.
    else:  # Every class present, in shuffled order, as (N, 1).
      labels = rng.permutation(np.arange(n) % info.num_classes)[:, None]
    arrays[f"{split}_labels"] = labels.astype(np.uint8)
  return arrays


def write_npz(directory, flag, size=28, *, compressed=False, **arrays_kw):
  arrays = fake_arrays(flag, size, **arrays_kw)
  name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
  (np.savez_compressed if compressed else np.savez)(directory / name, **arrays)
  return arrays


# Loading.

def test_pathmnist_is_rgb_multiclass_with_the_files_arrays(tmp_path):
  arrays = write_npz(tmp_path, "pathmnist")
  data = load_medmnist(_cfg(subset="pathmnist", data_dir=str(tmp_path)))
  assert data.name == "pathmnist"
  assert (data.task, data.num_classes) == ("multiclass", 9)
  assert data.train_split == "train" and data.eval_splits == ["val", "test"]
  for split, n in zip(SPLITS, (40, 10, 10)):
    images, labels = data.splits[split]["image"], data.splits[split]["label"]
    assert images.shape == (n, 28, 28, 3) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int32
    np.testing.assert_array_equal(images, arrays[f"{split}_images"])
    np.testing.assert_array_equal(labels, arrays[f"{split}_labels"][:, 0])
  assert data.metadata == {
      "subset": "pathmnist", "image_size": 28,
      "label_names": list(SUBSETS["pathmnist"].label_names),
      "evaluator": "medmnist", "medmnist_task": "multi-class"}
  assert data.metadata["label_names"][8] == "colorectal adenocarcinoma epithelium"


def test_grey_binary_gets_a_channel_axis(tmp_path):
  arrays = write_npz(tmp_path, "pneumoniamnist")
  data = load_medmnist(_cfg(subset="PneumoniaMNIST", data_dir=str(tmp_path)))
  assert (data.task, data.num_classes) == ("binary", 2)
  assert data.input_shape == (28, 28, 1)
  np.testing.assert_array_equal(data.splits["val"]["image"][..., 0],
                                arrays["val_images"])
  assert data.metadata["medmnist_task"] == "binary-class"
  assert data.metadata["label_names"] == ["normal", "pneumonia"]


def test_chestmnist_keeps_fourteen_labels_per_image(tmp_path):
  arrays = write_npz(tmp_path, "chestmnist")
  data = load_medmnist(_cfg(subset="chestmnist", data_dir=str(tmp_path)))
  assert (data.task, data.num_classes) == ("multilabel", 14)
  labels = data.splits["test"]["label"]
  assert labels.shape == (10, 14) and labels.dtype == np.int32
  np.testing.assert_array_equal(labels, arrays["test_labels"])
  assert data.input_shape == (28, 28, 1)
  assert data.metadata["label_names"][13] == "hernia"
  assert data.metadata["medmnist_task"] == "multi-label, binary-class"


def test_retinamnist_is_ordinal_with_five_grades(tmp_path):
  write_npz(tmp_path, "retinamnist")
  data = load_medmnist(_cfg(subset="retinamnist", data_dir=str(tmp_path)))
  assert (data.task, data.num_classes) == ("ordinal", 5)
  assert data.input_shape == (28, 28, 3)
  assert sorted(set(data.splits["train"]["label"])) == [0, 1, 2, 3, 4]
  assert data.metadata["medmnist_task"] == "ordinal-regression"


def test_larger_sizes_read_the_suffixed_file(tmp_path):
  write_npz(tmp_path, "dermamnist", 64)
  data = load_medmnist(_cfg(subset="dermamnist", image_size=64,
                            data_dir=str(tmp_path)))
  assert data.name == "dermamnist_64"
  assert data.input_shape == (64, 64, 3) and data.num_classes == 7
  assert data.metadata["image_size"] == 64
  # The 28-pixel file is another file: asking for it names that one.
  with pytest.raises(CnnjaxError, match="dermamnist.npz is missing"):
    load_medmnist(_cfg(subset="dermamnist", data_dir=str(tmp_path)))


def test_3d_volumes_end_in_one_channel(tmp_path):
  arrays = write_npz(tmp_path, "organmnist3d")
  data = load_medmnist(_cfg(subset="organmnist3d", data_dir=str(tmp_path)))
  assert (data.task, data.num_classes) == ("multiclass", 11)
  volumes = data.splits["train"]["image"]
  assert volumes.shape == (40, 28, 28, 28, 1) and volumes.dtype == np.uint8
  np.testing.assert_array_equal(volumes[..., 0], arrays["train_images"])
  assert data.metadata["label_names"][0] == "liver"  # 3D order, not the 2D one.


@pytest.mark.parametrize("compressed", [False, True])
def test_smoke_keeps_the_first_512_and_256_examples(tmp_path, compressed):
  arrays = write_npz(tmp_path, "pneumoniamnist", compressed=compressed,
                     counts=(600, 300, 260))
  config = _cfg(subset="pneumoniamnist", data_dir=str(tmp_path))
  smoke = load_medmnist(config, smoke=True)
  full = load_medmnist(config)
  for split, kept, total in zip(SPLITS, (512, 256, 256), (600, 300, 260)):
    assert smoke.num_examples(split) == kept and full.num_examples(split) == total
    np.testing.assert_array_equal(smoke.splits[split]["image"][..., 0],
                                  arrays[f"{split}_images"][:kept])
    np.testing.assert_array_equal(smoke.splits[split]["label"],
                                  arrays[f"{split}_labels"][:kept, 0])


def test_smoke_keeps_small_splits_whole(tmp_path):
  write_npz(tmp_path, "chestmnist")
  data = load_medmnist(_cfg(subset="chestmnist", data_dir=str(tmp_path)),
                       smoke=True)
  assert [data.num_examples(s) for s in SPLITS] == [40, 10, 10]
  assert data.splits["train"]["label"].shape == (40, 14)


# Errors a user can make.

def test_missing_file_names_the_path_and_the_download_flag(tmp_path):
  with pytest.raises(CnnjaxError) as raised:
    load_medmnist(_cfg(subset="bloodmnist", image_size=128,
                       data_dir=str(tmp_path)))
  message = str(raised.value)
  assert str(tmp_path / "bloodmnist_128.npz") in message
  assert "--config.dataset.download=true" in message
  assert "pip install medmnist" in message


def test_the_default_folder_is_the_packages(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(CnnjaxError, match=str(tmp_path / ".medmnist" / "octmnist.npz")):
    load_medmnist(_cfg(subset="octmnist"))


def test_corrupt_and_truncated_files_are_named(tmp_path):
  (tmp_path / "pathmnist.npz").write_bytes(b"not a zip file at all" * 10)
  with pytest.raises(CnnjaxError, match="cannot read the MedMNIST file .*pathmnist.npz"):
    load_medmnist(_cfg(subset="pathmnist", data_dir=str(tmp_path)))
  write_npz(tmp_path, "octmnist")
  whole = (tmp_path / "octmnist.npz").read_bytes()
  (tmp_path / "octmnist.npz").write_bytes(whole[:len(whole) // 2])
  with pytest.raises(CnnjaxError, match="cannot read the MedMNIST file .*octmnist.npz"):
    load_medmnist(_cfg(subset="octmnist", data_dir=str(tmp_path)))


def test_missing_arrays_are_listed(tmp_path):
  arrays = fake_arrays("pathmnist")
  del arrays["val_labels"], arrays["test_images"]
  np.savez(tmp_path / "pathmnist.npz", **arrays)
  with pytest.raises(CnnjaxError, match="lacks the arrays val_labels, test_images"):
    load_medmnist(_cfg(subset="pathmnist", data_dir=str(tmp_path)))


def test_images_of_the_wrong_size_or_channels_are_refused(tmp_path):
  arrays = fake_arrays("pathmnist", size=32)  # A 32-pixel file named as 28.
  np.savez(tmp_path / "pathmnist.npz", **arrays)
  with pytest.raises(CnnjaxError, match=r"train images of shape \(40, 32, 32, 3\).*"
                     r"needs \(N, 28, 28, 3\)"):
    load_medmnist(_cfg(subset="pathmnist", data_dir=str(tmp_path)))
  arrays = fake_arrays("pneumoniamnist")  # Grey images where RGB belongs.
  np.savez(tmp_path / "dermamnist.npz", **arrays)
  with pytest.raises(CnnjaxError, match=r"\(40, 28, 28\).*'dermamnist'"):
    load_medmnist(_cfg(subset="dermamnist", data_dir=str(tmp_path)))
  arrays = fake_arrays("nodulemnist3d")
  arrays["test_images"] = arrays["test_images"].astype(np.float32)
  np.savez(tmp_path / "nodulemnist3d.npz", **arrays)
  with pytest.raises(CnnjaxError, match="test images of type float32"):
    load_medmnist(_cfg(subset="nodulemnist3d", data_dir=str(tmp_path)))


def test_labels_of_the_wrong_shape_or_range_are_refused(tmp_path):
  arrays = fake_arrays("pathmnist")
  arrays["val_labels"] = np.zeros((10, 2), np.uint8)
  np.savez(tmp_path / "pathmnist.npz", **arrays)
  with pytest.raises(CnnjaxError, match=r"val labels of shape \(10, 2\).*\(10, 1\)"):
    load_medmnist(_cfg(subset="pathmnist", data_dir=str(tmp_path)))
  arrays = fake_arrays("pathmnist")
  arrays["train_labels"][3] = 9  # PathMNIST has classes 0..8.
  np.savez(tmp_path / "pathmnist.npz", **arrays)
  with pytest.raises(CnnjaxError, match=r"labels in \[0, 9\] but 9 classes"):
    load_medmnist(_cfg(subset="pathmnist", data_dir=str(tmp_path)))
  arrays = fake_arrays("chestmnist")
  arrays["test_labels"][0, 5] = 2
  np.savez(tmp_path / "chestmnist.npz", **arrays)
  with pytest.raises(CnnjaxError, match="other than 0 and 1"):
    load_medmnist(_cfg(subset="chestmnist", data_dir=str(tmp_path)))


def test_unknown_subsets_and_sizes_are_refused(tmp_path):
  with pytest.raises(CnnjaxError, match="unknown MedMNIST subset 'pathmnst'; "
                     "did you mean 'pathmnist'.*synapsemnist3d"):
    load_medmnist(_cfg(subset="pathmnst", data_dir=str(tmp_path)))
  with pytest.raises(CnnjaxError, match="needs a subset"):
    load_medmnist(_cfg(data_dir=str(tmp_path)))
  with pytest.raises(CnnjaxError, match="2D subset 'pathmnist' comes in image_size "
                     "28, 64, 128, 224, not 96"):
    load_medmnist(_cfg(subset="pathmnist", image_size=96, data_dir=str(tmp_path)))
  with pytest.raises(CnnjaxError, match="3D subset 'vesselmnist3d'.*28, 64, not 128"):
    load_medmnist(_cfg(subset="vesselmnist3d", image_size=128,
                       data_dir=str(tmp_path)))
  with pytest.raises(CnnjaxError, match="not 28.5"):  # Not truncated to 28.
    load_medmnist(_cfg(subset="octmnist", image_size=28.5, data_dir=str(tmp_path)))
  assert subset_info("OrganMNIST3D") is SUBSETS["organmnist3d"]


# Download through the medmnist package (faked: tests never use the network).

def _fake_medmnist(monkeypatch, behaviour):
  calls = []

  class FakeBreastMNIST:
    def __init__(self, **kwargs):
      calls.append(kwargs)
      behaviour(kwargs)

  module = types.ModuleType("medmnist")
  module.BreastMNIST = FakeBreastMNIST
  monkeypatch.setitem(sys.modules, "medmnist", module)
  return calls


def test_download_calls_the_medmnist_class_once(tmp_path, monkeypatch):
  folder = tmp_path / "new" / "folder"  # Made for medmnist, which needs it.

  def fetch(kwargs):
    np.savez(folder / "breastmnist_128.npz", **fake_arrays("breastmnist", 128))

  calls = _fake_medmnist(monkeypatch, fetch)
  config = _cfg(subset="breastmnist", image_size=128, data_dir=str(folder),
                download=True)
  data = load_medmnist(config)
  assert calls == [dict(split="train", download=True, size=128, root=str(folder))]
  assert data.input_shape == (128, 128, 1)
  load_medmnist(config)  # The file is there now: no second download.
  assert len(calls) == 1


def test_download_failures_are_one_sentence(tmp_path, monkeypatch):
  def fail(kwargs):
    raise RuntimeError("\n    Automatic download failed! Please download ...\n")

  _fake_medmnist(monkeypatch, fail)
  config = _cfg(subset="breastmnist", data_dir=str(tmp_path), download=True)
  with pytest.raises(CnnjaxError, match="breastmnist.npz with medmnist failed "
                     r"\(Automatic download failed! .*zenodo.org/records/10519652"):
    load_medmnist(config)
  _fake_medmnist(monkeypatch, lambda kwargs: None)  # Claims success, writes nothing.
  with pytest.raises(CnnjaxError, match="still missing"):
    load_medmnist(config)
  monkeypatch.setitem(sys.modules, "medmnist", None)  # Not installed.
  with pytest.raises(CnnjaxError, match="needs the medmnist package: run "
                     "`pip install medmnist`"):
    load_medmnist(config)


# Metrics.

def test_metrics_of_small_cases_worked_by_hand():
  # Binary: positives score 0.4 and 0.9, negatives 0.1 and 0.6; of the four
  # (positive, negative) pairs three are ordered right; 0.6 and 0.4 are
  # thresholded wrongly.
  two_columns = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
  got = official_metrics("binary", np.array([0, 0, 1, 1]), two_columns)
  assert got == {"acc": 0.5, "auc": 0.75}
  assert official_metrics("binary", [[0], [0], [1], [1]], two_columns[:, 1]) == got
  # Multi-class: argmax (the first of a tie) right on 2 of 3, yet every
  # class's own scores rank its example first: each one-vs-rest AUC is 1.
  scores = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.45, 0.45]])
  got = official_metrics("multiclass", np.array([0, 1, 2]), scores)
  assert got["acc"] == pytest.approx(2 / 3) and got["auc"] == 1.0
  # Multi-label: label 0 right twice (AUC 1), label 1 wrong twice (AUC 0).
  got = official_metrics("multilabel", np.array([[1, 0], [0, 1]]),
                         np.array([[0.7, 0.8], [0.2, 0.3]]))
  assert got == {"acc": 0.5, "auc": 0.5}
  # A class no label has makes the mean AUC undefined, as in medmnist.
  got = official_metrics("ordinal", np.array([0, 1, 1]), scores)
  assert np.isnan(got["auc"]) and got["acc"] == 1.0


def test_scores_from_logits_are_softmax_or_sigmoid():
  logits = np.array([[0.0, np.log(3.0)], [1000.0, -1000.0]])
  np.testing.assert_allclose(scores_from_logits("binary", logits),
                             [[0.25, 0.75], [1.0, 0.0]], atol=1e-15)
  np.testing.assert_allclose(scores_from_logits("multilabel", logits),
                             [[0.5, 0.75], [1.0, 0.0]], atol=1e-15)
  np.testing.assert_allclose(scores_from_logits("binary", [[np.log(3.0)]]),
                             [[0.75]], atol=1e-15)
  with pytest.raises(CnnjaxError, match="unknown MedMNIST task 'regression'"):
    scores_from_logits("regression", logits)


def _scores(task, labels, num_classes, near_perfect, rng):
  """Random probabilities, or ones that mostly favour the true labels."""
  n = len(labels)
  if task == "multilabel":
    probs = rng.random((n, num_classes))
    if near_perfect:
      probs = np.clip(0.9 * labels + 0.05 + 0.1 * (probs - 0.5), 0, 1)
    return probs
  logits = rng.normal(size=(n, num_classes))
  if near_perfect:
    logits[np.arange(n), labels.reshape(-1)] += 3.0
  return scores_from_logits(task, logits)


@pytest.mark.parametrize("flag,size", [("pathmnist", 28), ("pneumoniamnist", 64),
                                       ("chestmnist", 28), ("retinamnist", 28)])
def test_official_metrics_equal_medmnists_evaluator(tmp_path, flag, size):
  evaluator = pytest.importorskip("medmnist.evaluator")
  write_npz(tmp_path, flag, size, counts=(20, 30, 60), seed=1)
  data = load_medmnist(_cfg(subset=flag, image_size=size, data_dir=str(tmp_path)))
  rng = np.random.default_rng(7)
  for split in ("val", "test"):
    labels = data.splits[split]["label"]
    official = evaluator.Evaluator(flag, split, size=size, root=str(tmp_path))
    for near_perfect in (False, True):
      scores = _scores(data.task, labels, data.num_classes, near_perfect, rng)
      want = official.evaluate(scores)
      for task in (data.task, data.metadata["medmnist_task"]):
        for stored_labels in (labels, official.labels):  # (N,) and (N, 1).
          got = official_metrics(task, stored_labels, scores)
          assert got["acc"] == pytest.approx(want.ACC, abs=1e-12)
          assert got["auc"] == pytest.approx(want.AUC, abs=1e-12)
      if near_perfect:
        assert got["acc"] > 0.85 and got["auc"] > 0.95
      else:
        assert 0.2 < got["auc"] < 0.8


# The table against the package's own (guards the transcription).

def test_the_table_matches_medmnist_info():
  info = pytest.importorskip("medmnist.info")
  assert info.__version__ == "3.0.2"
  assert sorted(SUBSETS) == sorted(info.INFO)
  for flag, official in info.INFO.items():
    ours = SUBSETS[flag]
    assert ours.medmnist_task == official["task"], flag
    assert ours.task == TASK_FROM_MEDMNIST[official["task"]], flag
    assert ours.num_channels == official["n_channels"], flag
    assert ours.num_classes == len(official["label"]), flag
    assert ours.label_names == tuple(official["label"][str(i)]
                                     for i in range(len(official["label"]))), flag
    assert ours.split_sizes == tuple(official["n_samples"][s] for s in SPLITS), flag
    assert ours.python_class == official["python_class"], flag
    assert ours.volumetric == flag.endswith("3d"), flag


def test_the_table_by_heart():
  """A few facts from the MedMNIST v2 paper, independent of the package."""
  assert len(SUBSETS) == 18 and sum(s.volumetric for s in SUBSETS.values()) == 6
  assert SUBSETS["pathmnist"].split_sizes == (89996, 10004, 7180)
  assert SUBSETS["chestmnist"].split_sizes == (78468, 11219, 22433)
  assert SUBSETS["organmnist3d"].split_sizes == (971, 161, 610)
  assert {s.task for s in SUBSETS.values()} == {"multiclass", "binary",
                                                "multilabel", "ordinal"}
  assert SUBSETS["retinamnist"].task == "ordinal"
  assert SUBSETS["tissuemnist"].num_channels == 1
  assert SUBSETS["bloodmnist"].num_channels == 3
