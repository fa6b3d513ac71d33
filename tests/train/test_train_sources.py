"""Every data source through `train_and_evaluate`, with tiny models and data."""

import json
import os

import numpy as np
import pytest

from cnnjax.config import base_config, set_value
from cnnjax.errors import CnnjaxError
from cnnjax.train import loop
from cnnjax.ops import random as random_ops
from data_fixtures import make_folder


def _config(**changes):
  config = base_config()
  with config.unlocked():
    config.batch_size = 6
    config.eval_batch_size = 7
    config.num_steps = 6
    config.log_every = 3
    config.eval_every = 3
    config.checkpoint_every = 3
    config.progress_bar = False
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.model.name = "mlp_cifar"
    config.model.hidden_sizes = (16,)
    for key, value in changes.items():
      set_value(config, key, value)
  return config


def _images_folder(tmp_path):
  root = tmp_path / "images"
  make_folder(root, train=8, test=3, size=(12, 12))
  return str(root)


def test_image_folder_trains_in_memory_with_every_augmentation(tmp_path):
  config = _config(**{
      "dataset.name": "image_folder", "dataset.data_dir": _images_folder(tmp_path),
      "augment.crop_scale": (0.5, 1.0), "augment.rotate": 10.0,
      "augment.translate": 2, "augment.translate_mode": "constant",
      "augment.flip": True, "augment.brightness": 0.2, "augment.contrast": 0.2,
      "augment.saturation": 0.2, "augment.tta_flip": True, "augment.tta_shift": 1})
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["num_steps"] == 6
  assert 0.0 <= result["final"]["test/accuracy"] <= 1.0
  assert np.isfinite(result["final"]["test/loss"])


def test_streamed_runs_resume_to_the_same_result(tmp_path):
  """Host streams (tf.data from files) resume exactly, as device data does."""
  data_dir = _images_folder(tmp_path)
  changes = {"dataset.name": "image_folder", "dataset.data_dir": data_dir,
             "dataset.image_size": 8, "dataset.max_device_mb": 0,
             "augment.crop_scale": (0.4, 1.0), "augment.flip": True}
  full = loop.train_and_evaluate(_config(**changes), str(tmp_path / "full"))
  loop.train_and_evaluate(_config(num_steps=3, **changes), str(tmp_path / "split"))
  resumed = loop.train_and_evaluate(_config(**changes), str(tmp_path / "split"))
  assert resumed["final"] == pytest.approx(full["final"], rel=1e-6)


def test_tfds_dataset_trains_under_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = _config(**{"dataset.name": "cifar10", "dataset.download": True,
                      "augment.translate": 4, "augment.flip": True})
  with tfds.testing.mock_data(num_examples=20):
    result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert set(result["final"]) >= {"test/accuracy", "test/loss"}


def _write_chestmnist(path, n=30, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {}
  for split in ("train", "val", "test"):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), np.uint8)
    labels = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    labels[0], labels[1] = 0, 1  # every label has both values: AUC is defined
    arrays[f"{split}_labels"] = labels
  np.savez_compressed(path, **arrays)


def test_medmnist_multilabel_trains_with_sigmoids_and_reports_auc(tmp_path):
  _write_chestmnist(tmp_path / "chestmnist.npz")
  changes = {"dataset.name": "medmnist", "dataset.subset": "chestmnist",
             "dataset.data_dir": str(tmp_path), "best_metric": "val/auc"}
  with pytest.raises(CnnjaxError, match="multi-label .*sigmoid_cross_entropy"):
    loop.train_and_evaluate(_config(**changes), str(tmp_path / "bad"))
  config = _config(**changes, **{"loss.name": "sigmoid_cross_entropy"})
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  final = result["final"]
  assert 0.0 <= final["val/auc"] <= 1.0 and 0.0 <= final["test/auc"] <= 1.0
  assert result["best_step"] in (3, 6)
  # The metric is MedMNIST's own, on the same predictions (checked in
  # test_medmnist.py); here: it is logged with the other evaluation metrics.
  events = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert any("val/auc" in e for e in events)


def test_mr_text_trains_the_kim_cnn(tmp_path):
  pos = ["a gripping , funny film", "great acting and a fine story",
         "the best movie of the year", "warm , wise and funny"] * 6
  neg = ["a dull , tired mess", "boring and far too long",
         "the worst script of the year", "flat , lifeless and dull"] * 6
  (tmp_path / "rt-polarity.pos").write_text("\n".join(pos) + "\n", encoding="latin-1")
  (tmp_path / "rt-polarity.neg").write_text("\n".join(neg) + "\n", encoding="latin-1")
  config = _config(**{"dataset.name": "mr", "dataset.data_dir": str(tmp_path),
                      "dataset.num_folds": 4, "model.name": "kim_cnn_rand",
                      "optimizer.max_norm": 3.0})
  with config.unlocked():
    config.model = type(config.model)({"name": "kim_cnn_rand", "embed_dim": 8,
                                       "num_filters": 4})
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["final"]["test/accuracy"] >= 0.0
  saved = json.load(open(tmp_path / "run" / "config.json"))
  assert saved["dataset"]["name"] == "mr"


def test_missing_data_is_one_line_from_the_cli(tmp_path, cli_env):
  import subprocess
  import sys
  from conftest import EXPERIMENTS
  out = subprocess.run(
      [sys.executable, "-m", "cnnjax.cli", "train", "--config",
       os.path.join(EXPERIMENTS, "cifar10", "resnet20.py"),
       "--workdir", str(tmp_path / "w"), "--config.dataset.name=image_folder",
       f"--config.dataset.data_dir={tmp_path / 'nowhere'}"],
      capture_output=True, text=True, env=cli_env, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith(
      "cnnjax: error: image folder") and "Traceback" not in out.stderr


def test_benchmark_data_times_both_paths_and_prints_the_ratio(tmp_path, capsys):
  from cnnjax.cli import main
  from conftest import EXPERIMENTS
  data_dir = _images_folder(tmp_path)
  common = [f"--config.dataset.data_dir={data_dir}", "--config.dataset.name=image_folder",
            "--config.model.name=mlp_cifar", "--config.model.hidden_sizes=(8,)",
            "--config.batch_size=4", "--steps", "2", "--repeats", "1"]
  config = os.path.join(EXPERIMENTS, "cifar10", "resnet20.py")
  assert main(["benchmark-data", "--config", config, *common,
               "--json", str(tmp_path / "b.json")]) == 0
  out = capsys.readouterr().out
  assert "input / train" in out and "(device)" in out
  result = json.load(open(tmp_path / "b.json"))
  assert result["input_images_per_s"] > 0 and result["train_step_images_per_s"] > 0
  assert result["ratio"] == pytest.approx(
      result["input_images_per_s"] / result["train_step_images_per_s"])
  assert main(["benchmark-data", "--config", config, *common,
               "--config.dataset.max_device_mb=0", "--config.dataset.image_size=8"]) == 0
  assert "(host stream)" in capsys.readouterr().out


def _experiment_files():
  from conftest import EXPERIMENTS
  return sorted(os.path.relpath(os.path.join(d, f), EXPERIMENTS)
                for d, _, files in os.walk(EXPERIMENTS) for f in files
                if f.endswith(".py") and not f.startswith(("base", "_")))  # bases, tables


@pytest.mark.parametrize("name", _experiment_files())
def test_every_experiment_loads_validates_and_names_a_known_source(name):
  from cnnjax import config as config_lib
  from cnnjax.data import list_datasets
  from cnnjax.models import list_models
  from conftest import EXPERIMENTS
  path = os.path.join(EXPERIMENTS, name)
  config = config_lib.load_config(path)
  module = config_lib.import_experiment_file(path)
  if not config.model.name and hasattr(module, "apply_reference"):
    # An evaluation config for converted weights (imagenet/eval_torchvision.py):
    # the model, and with it the published target, come from the user.
    config.model.name = "resnet50"
    module.apply_reference(config)
  config_lib.validate(config)
  assert config.model.name in list_models()
  tfds = pytest.importorskip("tensorflow_datasets")
  assert config.dataset.name in list_datasets() + list(
      tfds.list_builders(with_community_datasets=False))
  assert config.reference.metric and config.reference.source


@pytest.mark.slow  # About 10 s of CLI smoke runs.
def test_source_experiments_run_in_smoke_mode_from_the_cli(tmp_path, capsys):
  from cnnjax.cli import main
  from conftest import EXPERIMENTS
  rng = np.random.default_rng(0)
  arrays = {}
  for split in ("train", "val", "test"):
    arrays[f"{split}_images"] = rng.integers(0, 256, (40, 28, 28, 3), np.uint8)
    arrays[f"{split}_labels"] = (np.arange(40) % 9).reshape(40, 1).astype(np.uint8)
  np.savez(tmp_path / "pathmnist.npz", **arrays)
  assert main(["train", "--config", os.path.join(EXPERIMENTS, "medmnist", "resnet18_28.py"),
               "--workdir", str(tmp_path / "med"), f"--config.dataset.data_dir={tmp_path}",
               "--config.smoke=true", "--config.smoke_steps=2",
               "--config.progress_bar=false",
               # The same network, narrow and one block per stage: the source
               # is what is tested, and the full width costs 20 s here.
               "--config.model.width=8", "--config.model.stage_sizes=(1,1,1,1)"]) == 0
  assert "test/auc" in json.load(open(tmp_path / "med" / "result.json"))["final"]
  (tmp_path / "rt-polarity.pos").write_text("a fine , warm film\n" * 30, encoding="latin-1")
  (tmp_path / "rt-polarity.neg").write_text("a dull , cold mess\n" * 30, encoding="latin-1")
  assert main(["train", "--config", os.path.join(EXPERIMENTS, "mr", "kim_cnn_rand.py"),
               "--workdir", str(tmp_path / "mr"), f"--config.dataset.data_dir={tmp_path}",
               "--config.smoke=true", "--config.smoke_steps=2",
               "--config.progress_bar=false"]) == 0
  assert "Published test/accuracy: 0.761" in capsys.readouterr().out


def test_test_time_augmentation_averages_the_softmax_of_the_views():
  import jax
  import jax.numpy as jnp
  from cnnjax.data.pipeline import test_time_views
  from cnnjax.models import create_model
  from cnnjax.train import losses, step as step_lib
  import ml_collections

  model = create_model("mlp_cifar", num_classes=3, hidden_sizes=(5,))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 6, 3)), jnp.float32)
  labels = jnp.array([0, 1, 2, 1])
  variables = random_ops.init(model, jax.random.key(0), x)
  views = test_time_views(ml_collections.ConfigDict({"tta_flip": True, "tta_shift": 0}))
  eval_batch = step_lib.make_eval_batch(model.apply, losses.softmax_cross_entropy,
                                        views=views, keep_logits=True)
  out = eval_batch(variables, {"image": x, "label": labels})
  # Sums over the batch and the averaged probabilities, from the per-example outputs.
  sums = {"loss": out["accuracy/loss"].sum(), "accuracy": out["accuracy/correct"].sum()}
  outputs = {"scores": jax.nn.softmax(out["logits"])}
  probs = (jax.nn.softmax(model.apply(variables, x)) +
           jax.nn.softmax(model.apply(variables, jnp.flip(x, axis=2)))) / 2
  np.testing.assert_allclose(outputs["scores"], probs, rtol=1e-5)
  expected_loss = -jnp.sum(jnp.log(probs[jnp.arange(4), labels]))
  np.testing.assert_allclose(sums["loss"], expected_loss, rtol=1e-5)
  assert sums["accuracy"] == np.sum(np.argmax(probs, -1) == np.asarray(labels))
  five = test_time_views(ml_collections.ConfigDict({"tta_flip": True, "tta_shift": 2}))
  assert five(x).shape == (10, 4, 6, 6, 3)
