"""The claims experiments: their model, their analyses, their configs."""

from __future__ import annotations

import copy
import glob
import json
import os

import jax
import numpy as np
import pytest

from conftest import EXPERIMENTS, tiny_mnist1d_config
from viz_fixtures import train_tiny_workdir

from cnnjax.errors import CnnjaxError
from cnnjax.ops import random as random_ops


def _count(tree) -> int:
  return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


def _abstract_params(input_shape, **fields):
  from cnnjax.models import create_model

  model = create_model("rf_cnn", **fields)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.zeros((2, *input_shape), np.float32)))
  return variables["params"]


# --------------------------------------------------------------------------
# The rf_cnn model


@pytest.mark.parametrize("channels", [8, 32])
def test_rf_cnn_stage_parameters_2d(channels):
  c = channels
  stacked = _abstract_params((8, 8, 1), channels=c, stage="3x3x3")
  single = _abstract_params((8, 8, 1), channels=c, stage="7x7")
  stacked_stage = _count({k: v for k, v in stacked.items() if k.startswith("stage")})
  single_stage = _count({k: v for k, v in single.items() if k.startswith("stage")})
  assert stacked_stage == 3 * (9 * c * c + c)
  assert single_stage == 49 * c * c + c
  # Everything outside the stage is shared.
  assert _count(stacked) - stacked_stage == _count(single) - single_stage


def test_rf_cnn_stage_parameters_1d_and_shapes():
  c = 16
  stacked = _abstract_params((40, 1), channels=c, stage="3x3x3")
  single = _abstract_params((40, 1), channels=c, stage="7x7")
  assert _count(stacked) == 3370  # what `cnnjax models` lists
  assert _count(stacked) - _count(single) == 3 * (3 * c * c + c) - (7 * c * c + c)
  assert stacked["stage_conv1"]["kernel"].shape == (3, c, c)
  assert single["stage_conv"]["kernel"].shape == (7, c, c)


def test_rf_cnn_pooling_variants_share_parameters_and_differ_in_output():
  from cnnjax.models import create_model

  x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
  counts, outputs = set(), {}
  model = create_model("rf_cnn", channels=4, head="flatten", pooling="max")
  variables = random_ops.init(model, jax.random.key(0), x)
  for pooling in ("max", "avg", "none"):
    model = create_model("rf_cnn", channels=4, head="flatten", pooling=pooling)
    counts.add(_count(jax.eval_shape(lambda: model.init(jax.random.key(0), x))))
    outputs[pooling] = np.asarray(model.apply(variables, x))  # same weights
  assert len(counts) == 1
  assert outputs["max"].shape == (2, 10)
  assert not np.allclose(outputs["max"], outputs["avg"])
  assert not np.allclose(outputs["max"], outputs["none"])
  with pytest.raises(CnnjaxError, match="pooling must be one of"):
    create_model("rf_cnn", pooling="median").init(jax.random.key(0), x)


# --------------------------------------------------------------------------
# The analyses, on runs trained here


@pytest.fixture(scope="module")
def mnist1d_runs(tmp_path_factory):
  """Two seeds of a 40-step MNIST-1D CNN, as `reproduce` hands them over."""
  from cnnjax.train.loop import train_and_evaluate

  root = tmp_path_factory.mktemp("claims_mnist1d")
  runs = []
  for seed in (0, 1):
    workdir = str(root / "cnn" / f"seed_{seed}")
    result = train_and_evaluate(tiny_mnist1d_config(seed=seed), workdir)
    runs.append({"slug": "cnn", "setting": {}, "seed": seed, "workdir": workdir,
                 "result": result})
  return runs


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  workdir = train_tiny_workdir(str(tmp_path_factory.mktemp("claims_digits")))
  with open(os.path.join(workdir, "result.json")) as f:
    result = json.load(f)
  return {"slug": "lenet", "setting": {"model.name": "lenet5_relu"}, "seed": 0,
          "workdir": workdir, "result": result}


def _softmax(logits):
  z = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def test_ensemble_is_the_accuracy_of_the_averaged_softmax(mnist1d_runs):
  from cnnjax.reproduce.analyses import run_analysis
  from cnnjax.viz import load_trained as load_run

  figures = run_analysis("ensemble", mnist1d_runs)["cnn"]
  probabilities, singles = [], []
  for entry in mnist1d_runs:
    run = load_run(entry["workdir"])
    test = run.dataset.splits["test"]
    p = _softmax(np.asarray(run.logits(run.normalize(test["image"])), np.float64))
    probabilities.append(p)
    singles.append(np.mean(p.argmax(-1) == test["label"]))
    # The analysis evaluates as the training loop did.
    assert singles[-1] == pytest.approx(entry["result"]["final"]["test/accuracy"])
  expected = np.mean(np.mean(probabilities, axis=0).argmax(-1) == test["label"])
  assert figures["ensemble/accuracy"] == pytest.approx(expected)
  assert figures["single/accuracy_mean"] == pytest.approx(np.mean(singles))
  assert figures["members"] == 2
  assert 0.2 < figures["ensemble/accuracy"] <= 1.0  # 40 steps learn something


def test_shift_invariance_at_zero_is_the_test_accuracy(digits_run):
  from cnnjax.reproduce.analyses import run_analysis

  figures = run_analysis("shift_invariance", [digits_run])["lenet"]
  assert sorted(figures) == ["shift0/accuracy", "shift1/accuracy", "shift2/accuracy",
                             "shift3/accuracy", "shift4/accuracy",
                             "shift_drop/0_to_2"]
  assert figures["shift0/accuracy"] == pytest.approx(
      digits_run["result"]["final"]["test/accuracy"])
  assert figures["shift_drop/0_to_2"] == pytest.approx(
      figures["shift0/accuracy"] - figures["shift2/accuracy"])
  # Shifting the test digits by 4 of 32 pixels costs an untrained-for model.
  assert figures["shift4/accuracy"] < figures["shift0/accuracy"]


def test_signals_are_shifted_with_zeros_and_images_with_black(mnist1d_runs, digits_run,
                                                             monkeypatch):
  """'params_and_shift' fills a signal's border with 0 (MNIST-1D's background),
  an image's with black (the training split's minimum for standardized
  digits)."""
  from cnnjax.reproduce import analyses

  fills = []
  real = analyses.shift

  def spy(images, offset, axis, fill):
    fills.append(fill)
    return real(images, offset, axis, fill)

  monkeypatch.setattr(analyses, "shift", spy)
  figures = analyses.run_analysis("params_and_shift", mnist1d_runs[:1])["cnn"]
  assert set(fills) == {0.0} and figures["params"] > 0
  fills.clear()
  analyses.run_analysis("params_and_shift", [digits_run])
  train = analyses._load_trained(digits_run["workdir"]).dataset.splits["train"]["image"]
  assert set(fills) == {float(np.min(train))} and float(np.min(train)) < -0.5


def test_shift_moves_content_and_fills_the_border():
  from cnnjax.reproduce.analyses import shift

  images = np.arange(2 * 4 * 3 * 1, dtype=np.float32).reshape(2, 4, 3, 1) + 1
  down = shift(images, 1, 1, -5.0)
  np.testing.assert_array_equal(down[:, 1:], images[:, :-1])
  assert np.all(down[:, 0] == -5.0)
  left = shift(images, -2, 2, 0.0)
  np.testing.assert_array_equal(left[:, :, :1], images[:, :, 2:])
  assert np.all(left[:, :, 1:] == 0)
  assert np.all(shift(images, 4, 1, 0.0) == 0)  # moved out entirely
  np.testing.assert_array_equal(shift(images, 0, 1, 0.0), images)


def test_params_counts_the_model_of_each_setting(digits_run, mnist1d_runs):
  from cnnjax.reproduce.analyses import run_analysis

  figures = run_analysis("params", [digits_run, *mnist1d_runs])
  assert figures == {"lenet": {"params": 61706.0}, "cnn": {"params": 5210.0}}


def test_generalization_reports_train_accuracy_and_gap(mnist1d_runs):
  from cnnjax.reproduce.analyses import run_analysis
  from cnnjax.viz import load_trained as load_run

  figures = run_analysis("generalization", mnist1d_runs[:1])["cnn"]
  run = load_run(mnist1d_runs[0]["workdir"])
  train = run.dataset.splits["train"]
  logits = np.asarray(run.logits(run.normalize(train["image"])))
  expected = np.mean(logits.argmax(-1) == train["label"])
  assert figures["train/accuracy"] == pytest.approx(expected)
  assert figures["gap/accuracy"] == pytest.approx(
      expected - mnist1d_runs[0]["result"]["final"]["test/accuracy"])


def test_unknown_analysis_lists_the_known_ones():
  from cnnjax.reproduce.analyses import list_analyses, run_analysis

  names = list_analyses()
  assert {"ensemble", "generalization", "params", "shift_invariance",
          "handcrafted_features", "init_statistics", "params_and_flops",
          "params_and_shift"} <= set(names)
  with pytest.raises(CnnjaxError, match="the known ones are " + ", ".join(names) + "$"):
    run_analysis("bagging", [])


# --------------------------------------------------------------------------
# The experiment files


# The experiments, not the bases they share (reproduce skips base*, _*).
CLAIMS = sorted(p for p in glob.glob(os.path.join(EXPERIMENTS, "claims", "*.py"))
                if not os.path.basename(p).startswith(("base", "_")))
DIGITS = [os.path.join(EXPERIMENTS, "digits", name)
          for name in ("lenet5_transfer.py", "lenet5_5to9_scratch.py")]


def test_every_claim_is_there():
  names = {os.path.basename(p)[:-3] for p in CLAIMS}
  assert names >= {"degradation_cifar10", "stacked3x3_vs_7x7", "mlp_vs_cnn",
                   "pooling_shift", "optimizers", "dropout", "augmentation",
                   "ensemble"}


@pytest.mark.parametrize("path", CLAIMS + DIGITS, ids=os.path.basename)
def test_claims_config_loads_and_every_row_validates(path):
  from cnnjax import config as config_lib
  from cnnjax.reproduce.analyses import list_analyses
  from cnnjax.models import list_models
  from cnnjax.sweep import parse_grid_flag

  config = config_lib.load_config(path)
  assert config.reference.metric == "test/accuracy"
  assert config.reproduce.analysis in ("", *list_analyses())
  if "/claims/" in path:
    assert config.reference.value == 0.0 and config.reference.source
    assert config.reproduce.compare or config.reproduce.analysis
  assert config.reproduce.seeds >= 1
  rows = [{}]
  for text in config.reproduce.compare:
    key, values = parse_grid_flag(text)
    rows = [dict(row, **{key: v}) for row in rows for v in values]
  for row in rows:
    variant = copy.deepcopy(config)
    config_lib.apply_overrides(variant, [f"{k}={v}" for k, v in row.items()])
    if variant.transfer.init_from or variant.reproduce.init_from_experiment:
      with variant.unlocked():  # reproduce points it at the source's run
        variant.transfer.init_from = "runs/source"
    config_lib.validate(variant)
    assert variant.model.name in list_models()


# --------------------------------------------------------------------------
# reproduce.claim: the statements the cards test


@pytest.mark.parametrize("path", CLAIMS + DIGITS, ids=os.path.basename)
def test_every_claim_names_rows_of_its_compare_grid(path):
  from cnnjax import config as config_lib
  from cnnjax.reproduce.planning import parse_claims
  from cnnjax.sweep import parse_grid_flag

  config = config_lib.load_config(path)
  claims = parse_claims(config, os.path.basename(path))
  assert [c.statement for c in claims] == list(config.reproduce.claim)
  if "/claims/" in path and config.reproduce.compare:
    assert claims, "a claims experiment with compare rows states its claim"
  grid = dict(parse_grid_flag(text) for text in config.reproduce.compare)
  for claim in claims:
    assert claim.direction in ("greater", "less")
    assert claim.metric in ("", config.reference.metric)
    for side in (claim.left, claim.right):
      assert sorted(side) == sorted(grid)  # one row: every compare key named
