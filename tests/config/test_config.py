"""Config loading, overrides and their errors, durations."""

import os

import pytest

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from conftest import EXPERIMENTS


def _cnn():
  return config_lib.load_config(os.path.join(EXPERIMENTS, "mnist1d", "cnn.py"))


def test_experiment_config_has_the_shared_interface():
  c = _cnn()
  assert c.model.name == "mnist1d_cnn"
  assert c.dataset.name == "mnist1d"
  assert c.batch_size == 100 and c.num_steps == 6000
  assert c.optimizer.name == "adam" and c.optimizer.learning_rate == 1e-2
  assert c.reference.metric == "test/accuracy" and c.reference.value == 0.94
  assert c.smoke is False and c.seed == 0
  assert "data_dir" in c.dataset


def test_overrides_are_typed():
  c = _cnn()
  config_lib.apply_overrides(c, [
      "--config.optimizer.learning_rate=0.5", "--config.num_steps=10",
      "--config.smoke=true", "--config.optimizer.name=sgd",
      "--config.schedule.boundaries=3,6", "--config.dataset.shuffle_seq=True",
      "--config.optimizer.weight_decay=1"])
  assert c.optimizer.learning_rate == 0.5
  assert c.num_steps == 10 and isinstance(c.num_steps, int)
  assert c.smoke is True
  assert c.optimizer.name == "sgd"
  assert tuple(c.schedule.boundaries) == (3, 6)
  assert c.dataset.shuffle_seq is True
  assert c.optimizer.weight_decay == 1.0 and isinstance(c.optimizer.weight_decay, float)
  config_lib.apply_overrides(c, ["schedule.boundaries=7"])
  assert tuple(c.schedule.boundaries) == (7,)


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.learnig_rate=0.1", "did you mean 'optimizer.learning_rate'"),
    ("--config.nonsense=1", "unknown config key 'nonsense'"),
    ("--config.num_steps=ten", "expects an integer"),
    ("--config.num_steps=1.5", "expects an integer"),
    ("--config.optimizer.learning_rate=fast", "expects a number"),
    ("--config.smoke=maybe", "expects true or false"),
    ("--config.num_steps", "needs a value"),
])
def test_bad_overrides_raise_one_clear_error(override, message):
  with pytest.raises(CnnjaxError, match=message):
    config_lib.apply_overrides(_cnn(), [override])


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", 0, "batch_size must be positive"),
    ("num_epochs", 3.0, "exactly one of"),
    ("optimizer.learning_rate", -1.0, "learning_rate must be positive"),
    ("loss.label_smoothing", 1.0, "label_smoothing"),
    ("best_mode", "best", "best_mode"),
])
def test_validate_rejects_bad_values(key, value, message):
  c = _cnn()
  config_lib.apply_overrides(c, [f"{key}={value}"])
  with pytest.raises(CnnjaxError, match=message):
    config_lib.validate(c)


def test_load_config_errors(tmp_path):
  with pytest.raises(CnnjaxError, match="does not exist"):
    config_lib.load_config(tmp_path / "missing.py")
  (tmp_path / "empty.py").write_text("x = 1\n")
  with pytest.raises(CnnjaxError, match="no get_config"):
    config_lib.load_config(tmp_path / "empty.py")
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  with pytest.raises(CnnjaxError, match="failed to load"):
    config_lib.load_config(tmp_path / "broken.py")


def test_durations_convert_epochs_in_one_place():
  c = config_lib.base_config()
  c.batch_size = 100
  c.num_epochs = 2.5
  c.schedule.boundary_epochs = (1, 2)
  c.schedule.warmup_epochs = 0.5
  d = config_lib.resolve_durations(c, num_train_examples=1050)  # 10 steps/epoch
  assert d.steps_per_epoch == 10
  assert d.num_steps == 25
  assert d.boundaries == (10, 20)
  assert d.warmup_steps == 5
  with pytest.raises(CnnjaxError, match="fewer than one batch"):
    config_lib.resolve_durations(c, num_train_examples=50)


def test_smoke_shrinks_any_experiment():
  c = _cnn()
  config_lib.apply_overrides(c, ["smoke=true"])
  c = config_lib.apply_smoke(c)
  assert c.num_steps == c.smoke_steps
  assert c.batch_size <= 32
  config_lib.validate(c)


def test_derived_experiment_changes_only_what_it_says():
  shuffled = config_lib.load_config(os.path.join(EXPERIMENTS, "mnist1d", "cnn_shuffled.py"))
  diffs = config_lib.config_differences(_cnn().to_dict(), shuffled.to_dict())
  assert sorted(d.split(":")[0] for d in diffs) == [
      "dataset.shuffle_seq", "reference.source", "reference.value"]


def test_model_fields_can_be_overridden_without_being_declared():
  c = _cnn()
  config_lib.apply_overrides(c, ["--config.model.features=(8,8,8)",
                                 "--config.model.weight_init=torch"])
  assert tuple(c.model.features) == (8, 8, 8)
  assert c.model.weight_init == "torch"


@pytest.mark.parametrize("key, value, message", [
    ("augment.rotate", -5.0, "augment.rotate cannot be negative"),
    ("augment.brightness", -1.0, "augment.brightness cannot be negative"),
    ("augment.translate_mode", "wrap", "translate_mode must be edge, constant or reflect"),
])
def test_bad_augmentation_values_are_refused_before_any_work(key, value, message):
  config = _cnn()
  config_lib.apply_overrides(config, [f"{key}={value}"])
  with pytest.raises(CnnjaxError, match=message):
    config_lib.validate(config)
