"""Transfer learning: class selection, gradient clipping, per-group learning
rates, loading another run's checkpoint, and the three scenarios end to end."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import EXPERIMENTS, tiny_mnist1d_config
from cnnjax.config import (apply_overrides, base_config, load_config,
                           resolve_durations, set_value, validate)
from cnnjax.data import ArrayDataset, StreamDataset, get_dataset, select_classes
from cnnjax.errors import CnnjaxError
from cnnjax.train import optim, transfer
from cnnjax.train.loop import train_and_evaluate

LR = 0.1
BACKBONE = ("conv1", "conv2", "conv3")  # The MNIST-1D CNN's layers before 'head'.


# --------------------------------------------------------------------------
# dataset.classes


def _four_class_dataset(task="multiclass"):
  counts = {"train": [3, 4, 5, 6], "test": [2, 1, 2, 3]}
  splits = {}
  for split, n in counts.items():
    labels = np.repeat(np.arange(4), n).astype(np.int32)
    # The image remembers the original class, to check rows stay with labels.
    splits[split] = {"image": np.broadcast_to(labels[:, None, None, None],
                                              (len(labels), 2, 2, 1)).astype(np.uint8),
                     "label": labels}
  return ArrayDataset(name="four", splits=splits, num_classes=4, task=task,
                      metadata={"class_names": ["a", "b", "c", "d"]})


def test_classes_keep_and_renumber_in_the_given_order():
  selected = select_classes(_four_class_dataset(), (3, 1))
  assert selected.num_classes == 2
  train = selected.splits["train"]
  # Class 3 (6 examples) becomes 0, class 1 (4 examples) becomes 1.
  np.testing.assert_array_equal(np.bincount(train["label"]), [6, 4])
  np.testing.assert_array_equal(np.bincount(selected.splits["test"]["label"]), [3, 1])
  np.testing.assert_array_equal(train["image"][:, 0, 0, 0],
                                np.where(train["label"] == 0, 3, 1))
  assert train["label"].dtype == np.int32
  assert selected.metadata["classes"] == [3, 1]
  assert selected.metadata["class_names"] == ["d", "b"]
  assert select_classes(_four_class_dataset(), ()).num_classes == 4


def test_classes_through_get_dataset_count_every_example():
  config = ml_collections.ConfigDict({"name": "digits"})
  full = get_dataset(config)
  config.classes = (5, 6, 7, 8, 9)
  half = get_dataset(config)
  assert half.num_classes == 5
  for split in ("train", "test"):
    expected = np.bincount(full.splits[split]["label"], minlength=10)[5:]
    np.testing.assert_array_equal(
        np.bincount(half.splits[split]["label"], minlength=5), expected)
    assert len(half.splits[split]["image"]) == expected.sum()


def _stream():
  return StreamDataset(name="streamed", num_classes=10, input_shape=(4, 4, 1),
                       input_dtype=np.uint8, split_sizes={"train": 8, "test": 8},
                       train_batches=lambda *a, **k: iter(()),
                       eval_batches=lambda *a, **k: iter(()))


@pytest.mark.parametrize("dataset,classes,message", [
    (_four_class_dataset, (1, 1), "twice"),
    (_four_class_dataset, (0, 4), "classes 0 to 3"),
    (lambda: ArrayDataset("ml", {"train": {"image": np.zeros((2, 1, 1, 1), np.uint8),
                                           "label": np.eye(2, dtype=np.int32)}},
                          num_classes=2, task="multilabel"), (0, 1), "multi-label"),
    (_stream, (0, 1), "in-memory"),
])
def test_classes_refusals_are_one_sentence(dataset, classes, message):
  with pytest.raises(CnnjaxError, match=message) as info:
    select_classes(dataset(), classes)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("key,value,message", [
    ("dataset.classes", (3,), "two or more"),
    ("dataset.classes", (1, -2), "integers"),
    ("optimizer.clip_norm", -1.0, "clip_norm"),
    ("optimizer.lr_multipliers", ("head",), "REGEX=FACTOR"),
    ("transfer.freeze", "all", "'none' or 'backbone'"),
    ("transfer.init_step", "first", "init_step"),
    ("transfer.freeze", "backbone", "need config.transfer.init_from"),
    ("transfer.backbone_lr_factor", -0.1, "cannot be negative"),
    ("transfer.into", "encoder", "need config.transfer.init_from"),
    ("transfer.into", "encoder/", "submodule path"),
])
def test_validate_refuses_bad_transfer_settings(key, value, message):
  config = base_config()
  config.model.name, config.dataset.name, config.num_steps = "m", "d", 1
  validate(config)  # The defaults pass.
  set_value(config, key, value)
  with pytest.raises(CnnjaxError, match=message):
    validate(config)


# --------------------------------------------------------------------------
# optimizer.clip_norm and optimizer.lr_multipliers


def _make(params, **changes):
  c = base_config()
  c.batch_size, c.num_steps, c.optimizer.learning_rate = 100, 100, LR
  for key, value in changes.items():
    set_value(c, key, value)
  tx, learning_rate = optim.make_optimizer(c, resolve_durations(c, 1000), params)
  return tx, tx.init(params), learning_rate


_PARAMS = {"a": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]])},
           "b": {"bias": jnp.array([0.25, -1.0, 2.0])}}
# Global norm 5: sqrt(1 + 4 + 0 + 4 + 16).
_GRADS = {"a": {"kernel": jnp.array([[1.0, -2.0], [0.0, 2.0]])},
          "b": {"bias": jnp.array([0.0, 0.0, 4.0])}}


def test_clip_norm_clips_the_raw_gradients_before_weight_decay():
  wd = 0.1
  tx, state, _ = _make(_PARAMS, **{"optimizer.clip_norm": 1.0,
                                   "optimizer.weight_decay": wd})
  updates, _ = tx.update(_GRADS, state, _PARAMS)
  for layer, name in (("a", "kernel"), ("b", "bias")):
    g, w = np.asarray(_GRADS[layer][name]), np.asarray(_PARAMS[layer][name])
    np.testing.assert_allclose(updates[layer][name], -LR * (g / 5.0 + wd * w),
                               rtol=1e-6)
  # A norm under the limit leaves the gradients alone.
  tx, state, _ = _make(_PARAMS, **{"optimizer.clip_norm": 10.0})
  updates, _ = tx.update(_GRADS, state, _PARAMS)
  np.testing.assert_allclose(updates["b"]["bias"], -LR * _GRADS["b"]["bias"], rtol=1e-7)


def test_clip_norm_counts_only_trainable_gradients():
  tx, state, _ = _make(_PARAMS, **{"optimizer.clip_norm": 1.0,
                                   "optimizer.lr_multipliers": ("^b/=0",)})
  updates, _ = tx.update(_GRADS, state, _PARAMS)
  # a's gradient alone has norm 3; b's (frozen) would make it 5.
  np.testing.assert_allclose(updates["a"]["kernel"], -LR * _GRADS["a"]["kernel"] / 3.0,
                             rtol=1e-6)
  np.testing.assert_array_equal(updates["b"]["bias"], 0.0)


def test_zero_factor_freezes_bit_for_bit_without_optimizer_state():
  tx, state, _ = _make(_PARAMS, **{"optimizer.name": "adam",
                                   "optimizer.weight_decay": 0.1,
                                   "optimizer.lr_multipliers": ("bias=0",)})
  # No Adam moments for the frozen (3,) bias: only a's (2, 2) and counters.
  assert sorted({np.shape(x) for x in jax.tree.leaves(state)}) == [(), (2, 2)]
  update = jax.jit(tx.update)
  params = _PARAMS
  for i in range(5):
    grads = jax.tree.map(lambda g: g * (i + 1), _GRADS)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["b"]["bias"], _PARAMS["b"]["bias"])
  assert np.abs(np.asarray(params["a"]["kernel"] - _PARAMS["a"]["kernel"])).min() > 0.1


def test_half_factor_with_sgd_is_exactly_half_the_update():
  tx1, s1, _ = _make(_PARAMS, **{"optimizer.weight_decay": 0.01})
  tx2, s2, learning_rate = _make(_PARAMS, **{"optimizer.weight_decay": 0.01,
                                             "optimizer.lr_multipliers": ("^a/=0.5",)})
  full, _ = tx1.update(_GRADS, s1, _PARAMS)
  half, s2 = tx2.update(_GRADS, s2, _PARAMS)
  np.testing.assert_array_equal(half["a"]["kernel"], 0.5 * full["a"]["kernel"])
  np.testing.assert_array_equal(half["b"]["bias"], full["b"]["bias"])
  assert float(learning_rate(0, s2)) == pytest.approx(LR)  # The base rate.


def test_plateau_scale_still_applies_to_every_group():
  tx, state, learning_rate = _make(_PARAMS, **{
      "schedule.name": "plateau", "optimizer.lr_multipliers": ("^a/=0.5",)})
  updates, state = tx.update(_GRADS, state, _PARAMS, value=1.0)
  np.testing.assert_allclose(updates["a"]["kernel"], -0.5 * LR * _GRADS["a"]["kernel"],
                             rtol=1e-6)
  assert float(learning_rate(1, state)) == pytest.approx(LR)


def test_first_matching_rule_gives_the_factor():
  params = {"head": {"kernel": 0, "bias": 0}, "conv1": {"kernel": 0}}
  factors = optim.lr_factors(params, ("head/bias=0", "head=2.5"))
  assert factors == {"head": {"kernel": 2.5, "bias": 0.0}, "conv1": {"kernel": 1.0}}


@pytest.mark.parametrize("rules,message", [
    (("head",), "REGEX=FACTOR"),
    (("(head=1",), "invalid regular expression"),
    (("head=-1",), "factor >= 0"),
    (("head=fast",), "factor >= 0"),
    ((".*=0",), "nothing would train"),
])
def test_bad_multipliers_raise(rules, message):
  with pytest.raises(CnnjaxError, match=message):
    _make(_PARAMS, **{"optimizer.lr_multipliers": rules})


# --------------------------------------------------------------------------
# merge: what gets copied


def _tree(value, head_classes, dtype=np.float32):
  return {"params": {"conv": {"kernel": np.full((3, 3), value, dtype)},
                     "head": {"kernel": np.full((4, head_classes), value, dtype),
                              "bias": np.full((head_classes,), value, dtype)}},
          "batch_stats": {"bn": {"mean": np.full((3,), value, dtype)}}}


def test_merge_copies_matching_arrays_and_reports_the_rest():
  init = _tree(0.0, 2)
  init["params"]["new"] = {"w": np.zeros(2, np.float32)}
  pretrained = _tree(1.0, 5)
  pretrained["params"]["old"] = {"w": np.ones(2, np.float32)}
  variables, report = transfer.merge(init, pretrained)
  np.testing.assert_array_equal(variables["params"]["conv"]["kernel"], 1.0)
  np.testing.assert_array_equal(variables["batch_stats"]["bn"]["mean"], 1.0)
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"], 0.0)
  assert variables["params"]["head"]["kernel"].shape == (4, 2)
  assert set(report.loaded) == {"params/conv/kernel", "batch_stats/bn/mean"}
  assert report.loaded_params == ("conv/kernel",)
  assert set(report.reinitialised) == {"params/head/kernel", "params/head/bias",
                                       "params/new/w"}
  assert report.reasons["params/head/bias"].startswith("new shape")
  assert report.reasons["params/new/w"] == "not in the checkpoint"
  assert set(report.unused) == {"params/head/kernel", "params/head/bias", "params/old/w"}
  text = report.summary("ckpt")
  assert "loaded 2 of 5 arrays from ckpt (modules bn, conv)" in text
  assert "head: new shape" in text and "modules old are not in this model" in text


def test_a_classifier_loads_into_a_segmenters_backbone():
  """transfer.into='encoder': a ResNet-18 classifier's arrays land under the
  FCN's backbone, all of them but the head; the FCN's own layers stay new."""
  from cnnjax.models import create_model

  x = jnp.zeros((1, 32, 32, 3))
  shapes = lambda model: jax.eval_shape(model.init, jax.random.key(0), x)  # noqa: E731
  classifier = shapes(create_model("resnet18", num_classes=5))
  segmenter = shapes(create_model("fcn", backbone="resnet18", num_classes=3))
  pretrained = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), classifier)
  init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), segmenter)
  variables, report = transfer.merge(init, pretrained, into="encoder")
  loaded = {p for p in report.loaded}
  assert loaded and all(p.split("/")[1] == "encoder" for p in loaded)
  encoder = [p for p in flat(init) if p.split("/")[1] == "encoder"]
  assert sorted(loaded) == sorted(encoder)  # the whole backbone
  assert {_top(p) for p in report.unused} == {"head"}
  for path in encoder:
    np.testing.assert_array_equal(_get(variables, path), 0.5)
  np.testing.assert_array_equal(variables["params"]["score"]["kernel"], 0.0)
  assert "the checkpoint's modules head are not in this model" in report.summary()
  with pytest.raises(CnnjaxError, match="transfer.into 'decoder' is not a submodule"):
    transfer.merge(init, pretrained, into="decoder")


def flat(tree):
  from cnnjax.trees import flat_paths
  return flat_paths(dict(tree))


def _get(tree, path):
  for key in path.split("/"):
    tree = tree[key]
  return tree


def _top(path):
  return path.split("/")[2] if path.split("/")[1] == "encoder" else path.split("/")[1]


def test_merge_reinit_and_dtypes():
  variables, report = transfer.merge(_tree(0.0, 2), _tree(1.0, 2), reinit=("head",))
  np.testing.assert_array_equal(variables["params"]["head"]["bias"], 0.0)
  np.testing.assert_array_equal(variables["params"]["conv"]["kernel"], 1.0)
  assert report.reasons["params/head/bias"] == "asked (transfer.reinit)"
  # float64 arrays go into float32 ones; integers do not go into floats.
  variables, _ = transfer.merge(_tree(0.0, 2), _tree(1.0, 2, np.float64))
  assert variables["params"]["conv"]["kernel"].dtype == np.float32
  with pytest.raises(CnnjaxError, match="same architecture"):
    transfer.merge(_tree(0.0, 2), _tree(1, 2, np.int32))
  with pytest.raises(CnnjaxError, match="its top-level modules are conv, head"):
    transfer.merge(_tree(0.0, 2), _tree(1.0, 2), reinit=("fc",))


# --------------------------------------------------------------------------
# Loading another run, and the scenarios end to end (MNIST-1D CNN)


def _quiet(**changes):
  return tiny_mnist1d_config(**{"num_steps": 10, "log_every": 5, "eval_every": 10,
                                "checkpoint_every": 5, **changes})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A 10-class source run: checkpoints at steps 5 and 10."""
  workdir = str(tmp_path_factory.mktemp("source"))
  train_and_evaluate(_quiet(), workdir)
  return workdir


def _params(workdir, which="latest"):
  return transfer.load_variables(workdir, which)["params"]


def test_load_variables_reads_params_without_the_model(source):
  variables = transfer.load_variables(source)
  assert set(variables) == {"params", "batch_stats"}
  params = variables["params"]
  assert sorted(params) == sorted(BACKBONE + ("head",))
  assert isinstance(params["head"]["kernel"], np.ndarray)
  assert params["head"]["kernel"].shape == (125, 10)
  at_5 = _params(os.path.join(source, "checkpoints", "5"))  # A step directory.
  np.testing.assert_array_equal(at_5["conv1"]["kernel"],
                                _params(source, "5")["conv1"]["kernel"])
  assert not np.array_equal(at_5["conv1"]["kernel"], params["conv1"]["kernel"])
  best = _params(source, "best")  # Step 10 is the only one evaluated.
  np.testing.assert_array_equal(best["head"]["bias"], params["head"]["bias"])


@pytest.mark.parametrize("where,which,message", [
    ("missing", "latest", "does not exist"),
    ("empty", "latest", "holds no cnnjax checkpoint"),
    ("source", "7", "no checkpoint at step 7"),
])
def test_bad_init_from_is_one_sentence(source, tmp_path, where, which, message):
  path = {"missing": str(tmp_path / "nowhere"), "empty": str(tmp_path),
          "source": source}[where]
  with pytest.raises(CnnjaxError, match=message) as info:
    transfer.load_variables(path, which)
  assert "\n" not in str(info.value)


def test_fixed_feature_extractor(source, tmp_path, capsys):
  config = _quiet(**{"dataset.classes": (0, 1, 2), "transfer.init_from": source,
                     "transfer.freeze": "backbone"})
  result = train_and_evaluate(config, str(tmp_path))
  report = capsys.readouterr().err
  assert "loaded 6 of 8 arrays" in report
  assert "re-initialised 2 arrays (head: new shape)" in report
  before, after = _params(source), _params(str(tmp_path))
  for layer in BACKBONE:
    for name in ("kernel", "bias"):
      np.testing.assert_array_equal(after[layer][name], before[layer][name])
  assert after["head"]["kernel"].shape == (125, 3)
  at_5 = _params(str(tmp_path), "5")
  assert np.abs(after["head"]["kernel"] - at_5["head"]["kernel"]).max() > 1e-4
  # Rerunning the finished workdir restores its (partitioned) optimizer state.
  again = train_and_evaluate(config, str(tmp_path))
  assert again["final"] == pytest.approx(result["final"])


def test_fine_tuning_moves_the_backbone(source, tmp_path):
  config = _quiet(**{"dataset.classes": (0, 1, 2), "transfer.init_from": source,
                     "transfer.backbone_lr_factor": 0.1})
  train_and_evaluate(config, str(tmp_path))
  before, after = _params(source), _params(str(tmp_path))
  assert after["head"]["kernel"].shape == (125, 3)
  for layer in BACKBONE:
    assert not np.array_equal(after[layer]["kernel"], before[layer]["kernel"])


def test_freezing_everything_is_refused(source, tmp_path):
  # Same 10 classes: the head fits too, so nothing would be left to train.
  config = _quiet(**{"transfer.init_from": source, "transfer.freeze": "backbone"})
  with pytest.raises(CnnjaxError, match="nothing would train"):
    train_and_evaluate(config, str(tmp_path))


def test_digits_transfer_pair_in_smoke_mode(tmp_path, capsys):
  first, second = str(tmp_path / "first5"), str(tmp_path / "transfer")
  config = load_config(os.path.join(EXPERIMENTS, "digits", "lenet5_first5.py"))
  apply_overrides(config, ["smoke=true", "progress_bar=false"])
  train_and_evaluate(config, first)
  config = load_config(os.path.join(EXPERIMENTS, "digits", "lenet5_transfer.py"))
  apply_overrides(config, ["smoke=true", "progress_bar=false",
                           f"transfer.init_from={first}"])
  result = train_and_evaluate(config, second)
  assert "head: asked" in capsys.readouterr().err
  assert result["num_steps"] == config.smoke_steps
  before, after = _params(first), _params(second)
  for layer in ("c1", "c3", "c5", "f6"):
    np.testing.assert_array_equal(after[layer]["kernel"], before[layer]["kernel"])
  assert not np.array_equal(after["head"]["kernel"], before["head"]["kernel"])


def test_explicit_multipliers_win_over_the_transfer_factor(source):
  params = _params(source)
  params["head"] = {"kernel": np.zeros((125, 3), np.float32),  # A new 3-way head.
                    "bias": np.zeros(3, np.float32)}
  config = _quiet(**{"transfer.init_from": source, "transfer.backbone_lr_factor": 0.1,
                     "optimizer.name": "sgd", "optimizer.lr_multipliers": ("^conv1/=0",)})
  lr = config.optimizer.learning_rate
  tx, _ = optim.make_optimizer(config, resolve_durations(config, 1000), params)
  ones = jax.tree.map(np.ones_like, params)
  updates, _ = tx.update(ones, tx.init(params), params)
  np.testing.assert_array_equal(updates["conv1"]["kernel"], 0.0)
  np.testing.assert_allclose(updates["conv2"]["kernel"], -0.1 * lr, rtol=1e-6)
  np.testing.assert_allclose(updates["conv3"]["bias"], -0.1 * lr, rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["kernel"], -lr, rtol=1e-6)
  set_value(config, "transfer.freeze", "backbone")
  tx, _ = optim.make_optimizer(config, resolve_durations(config, 1000), params)
  updates, _ = tx.update(ones, tx.init(params), params)
  np.testing.assert_array_equal(updates["conv3"]["kernel"], 0.0)
  np.testing.assert_allclose(updates["head"]["bias"], -lr, rtol=1e-6)


def test_a_frozen_batchnorm_backbone_keeps_its_running_statistics(tmp_path):
  """A fixed feature extractor with BatchNorm: scales, offsets and running
  averages of the backbone all stay the pretrained ones."""
  def resnet(**changes):
    config = _quiet(**{"dataset.name": "digits", "model.name": "resnet20",
                       "batch_size": 32, "num_steps": 6, "eval_every": 6,
                       "checkpoint_every": 6, **changes})
    with config.model.unlocked():
      config.model.depth = 8
      config.model.widths = (4, 8, 8)
    return config

  source = str(tmp_path / "source")
  train_and_evaluate(resnet(**{"dataset.classes": (0, 1, 2, 3, 4)}), source)
  target = str(tmp_path / "target")
  train_and_evaluate(resnet(**{"dataset.classes": (5, 6, 7, 8, 9),
                               "transfer.init_from": source,
                               "transfer.reinit": ("head",),
                               "transfer.freeze": "backbone"}), target)
  before, after = transfer.load_variables(source), transfer.load_variables(target)
  stats_before = transfer.flat_paths(before["batch_stats"])
  stats_after = transfer.flat_paths(after["batch_stats"])
  assert stats_before and stats_before.keys() == stats_after.keys()
  for path, value in stats_before.items():
    np.testing.assert_array_equal(stats_after[path], value, err_msg=path)
  params_before = transfer.flat_paths(before["params"])
  for path, value in transfer.flat_paths(after["params"]).items():
    if not path.startswith("head/"):
      np.testing.assert_array_equal(value, params_before[path], err_msg=path)
