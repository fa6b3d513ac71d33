"""TFDS's speech_commands as log-mel features (cnnjax/data/speech_commands.py),
under tfds.testing.mock_data: random examples from the dataset's own feature
spec (MockPolicy.USE_CODE: no files, no metadata), or hand-made clips of
known lengths; its stand-in; and its experiment."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest

from cnnjax.data import get_dataset, list_datasets
from cnnjax.data import speech_commands as sc
from cnnjax.errors import CnnjaxError
from cnnjax.ops.audio import log_mel

from conftest import EXPERIMENTS

tfds = pytest.importorskip("tensorflow_datasets")

EXPERIMENT = os.path.join(EXPERIMENTS, "speech", "freq_cnn_speech_commands.py")
CLASS_NAMES = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
               "_silence_", "_unknown_")


def _config(**fields):
  values = {"name": "speech_commands", "data_dir": "", "download": True, "train_split": "",
            "eval_splits": (), "smoke_data": "real"}
  values.update(fields)
  return ml_collections.ConfigDict(values)


def _mock(**kwargs):
  return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, **kwargs)


def _clip(length: int, seed: int) -> np.ndarray:
  """An int16 clip: a tone whose pitch depends on the seed, in a little noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / sc.SAMPLE_RATE
  wave = 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * t) + 0.01 * rng.standard_normal(length)
  return np.round(wave * 32767).astype(np.int16)


# Per split: (clip length, label). Shorter than, exactly and longer than 1 s.
RECORDS = {"train": [(12000, 0), (16000, 5), (20000, 11)],
           "validation": [(8000, 3)],
           "test": [(16500, 10), (400, 1)]}


def _records(empty=()):
  import tensorflow as tf

  def as_dataset(self, split, **kwargs):
    name = split.partition("[")[0]
    rows = [] if name in empty else RECORDS[name]
    seeds = {"train": 0, "validation": 10, "test": 20}[name]

    def generate():
      for i, (length, label) in enumerate(rows):
        yield {"audio": _clip(length, seeds + i), "label": np.int64(label)}

    spec = {"audio": tf.TensorSpec((None,), tf.int16), "label": tf.TensorSpec((), tf.int64)}
    return tf.data.Dataset.from_generator(generate, output_signature=spec)

  return as_dataset


def test_fit_clip_scales_pads_and_cuts_to_one_second():
  short = np.array([16384, -32768, 32767], np.int16)
  out = sc.fit_clip(short)
  assert out.shape == (16000,) and out.dtype == np.float32
  np.testing.assert_allclose(out[:3], [0.5, -1.0, 32767 / 32768])
  assert not out[3:].any()
  long = np.arange(20000).astype(np.int16)
  np.testing.assert_array_equal(sc.fit_clip(long), long[:16000].astype(np.float32) / 32768)
  exact = _clip(16000, 1)
  np.testing.assert_array_equal(sc.fit_clip(exact), exact.astype(np.float32) / 32768)
  assert sc.FRAMES == 101


def test_mocked_speech_commands_load_as_log_mel_features():
  with _mock(num_examples=5):
    dataset = get_dataset(_config())
    names = tfds.builder("speech_commands").info.features["label"].names
  assert dataset.task == "multiclass" and dataset.num_classes == 12
  assert dataset.eval_splits == ["validation", "test"]
  assert dataset.metadata["class_names"] == tuple(names) == CLASS_NAMES
  assert dataset.input_shape == (40, 101)
  for arrays in dataset.splits.values():
    assert arrays["image"].shape == (5, 40, 101) and arrays["image"].dtype == np.float32
    assert arrays["label"].dtype == np.int32
    assert 0 <= arrays["label"].min() and arrays["label"].max() <= 11
  train = dataset.splits["train"]["image"]
  assert abs(train.mean()) < 1e-4 and abs(train.std() - 1) < 1e-3  # standardised


def test_features_are_log_mel_of_each_clip_padded_or_cut(monkeypatch):
  monkeypatch.setattr(sc, "BATCH", 2)  # two calls on train, the last one a partial batch
  with _mock(as_dataset_fn=_records()):
    dataset = get_dataset(_config(train_split="train[:3]",
                                  eval_splits=("val=validation", "test")))
  assert list(dataset.splits) == ["train", "val", "test"]
  assert dataset.metadata["splits"] == {"train": "train[:3]", "val": "validation",
                                        "test": "test"}
  mean, std = dataset.metadata["feature_mean"], dataset.metadata["feature_std"]
  seeds = {"train": 0, "val": 10, "test": 20}
  for split, rows in (("train", RECORDS["train"]), ("val", RECORDS["validation"]),
                      ("test", RECORDS["test"])):
    arrays = dataset.splits[split]
    np.testing.assert_array_equal(arrays["label"], [label for _, label in rows])
    for i, (length, _) in enumerate(rows):
      clip = _clip(length, seeds[split] + i).astype(np.float32) / 32768
      fitted = np.concatenate([clip, np.zeros(max(0, 16000 - length), np.float32)])[:16000]
      expected = np.asarray(log_mel(fitted[None], sample_rate=16000, n_fft=400,
                                    hop_length=160, n_mels=40))[0].T
      np.testing.assert_allclose(arrays["image"][i] * std + mean, expected, atol=2e-4)


def test_a_split_without_examples_is_one_sentence():
  with _mock(as_dataset_fn=_records(empty=("test",))):
    with pytest.raises(CnnjaxError, match=r"^split 'test' \(test\) of TFDS dataset "
                                          r"'speech_commands' has no examples$"):
      get_dataset(_config())


def test_standin_has_the_real_shapes_and_stands_in_when_the_data_is_missing(tmp_path, capsys):
  from cnnjax.data.standin import has_standin, standin_dataset

  assert has_standin(_config())
  dataset = standin_dataset(_config(eval_splits=("val=train[90%:]", "test")))
  assert list(dataset.splits) == ["train", "val", "test"] and dataset.num_classes == 12
  assert dataset.metadata["class_names"] == CLASS_NAMES
  for arrays in dataset.splits.values():
    assert arrays["image"].shape[1:] == (40, 101) and arrays["image"].dtype == np.float32
  missing = get_dataset(_config(data_dir=str(tmp_path), download=False, smoke_data="auto"),
                        smoke=True)
  assert missing.metadata["standin"] and missing.eval_splits == ["validation", "test"]
  assert "speech_commands is not on this machine" in capsys.readouterr().err


def test_experiment_loads_validates_and_names_the_source():
  from cnnjax import config as config_lib

  config = config_lib.load_config(EXPERIMENT)
  config_lib.validate(config)
  assert config.dataset.name == "speech_commands" and "speech_commands" in list_datasets()
  assert config.model.name == "freq_cnn" and config.model.weight_sharing == "full"
  assert config.batch_size == 128 and config.num_epochs == 20
  assert config.reference.metric == "test/accuracy" and config.reference.value == 0.0
  assert "no published figure" in config.reference.source


def test_experiment_smoke_trains_on_mocked_data(tmp_path):
  from cnnjax import config as config_lib
  from cnnjax.train.loop import train_and_evaluate

  config = config_lib.load_config(EXPERIMENT)
  with config.unlocked():
    config.smoke = True
    config.smoke_steps = 2
    config.batch_size = 4
    config.progress_bar = False
    config.dataset.smoke_data = "real"
    config.dataset.download = True
    config.dataset.data_dir = str(tmp_path / "tfds")
  with _mock(num_examples=8):
    result = train_and_evaluate(config, str(tmp_path / "run"))
  assert result["smoke"] and result["num_steps"] == 2
  assert np.isfinite(result["final"]["test/accuracy"])
  assert "validation/accuracy" in result["final"]
