"""Every experiment under experiments/ loads, names its target and passes a smoke run.

The smoke runs use generated stand-in data of each dataset's shape
(`dataset.smoke_data='synthetic'`), so they need neither downloads nor
`../shared`; the real loaders have their own tests. A file with variants
(MedMNIST's subsets) smoke-runs its first variant, ChestMNIST (multi-label)
and a 3D subset; every variant is loaded and validated.
"""

from __future__ import annotations

import math
import os

import jax
import pytest

from conftest import EXPERIMENTS
from cnnjax import config as config_lib, reproduce

ALL = reproduce.discover(EXPERIMENTS)
BY_ID = {e.id: e for e in ALL}


def _smoke_set() -> list[reproduce.Experiment]:
  """One experiment per file (its first variant), plus the odd MedMNIST ones."""
  chosen, seen = [], set()
  for e in ALL:
    if e.path not in seen:
      seen.add(e.path)
      chosen.append(e)
  for extra in ("medmnist/resnet18_28/chestmnist",):
    if extra in BY_ID and BY_ID[extra] not in chosen:
      chosen.append(BY_ID[extra])
  return chosen


# Smoke runs that take more than about 20 s on 2 CPU cores: deep, wide or 3D
# networks whose code path a lighter experiment of the same family already
# runs by default (resnet20 for the deeper CIFAR ResNets, cifar10/resnet18
# for the cosine recipe, alexnet for ImageNet's pipeline, resnet18_28 for
# MedMNIST). `pytest -m slow` runs them, and so
# does `cnnjax reproduce --smoke`.
SLOW = ("cifar10/resnet32", "cifar10/resnet44", "cifar10/resnet56", "cifar10/resnet110",
        "cifar10/plain32", "cifar10/plain44", "cifar10/plain56", "cifar10/densenet_bc100",
        "cifar10/wrn28_10", "cifar10/vgg16", "cifar100/", "imagenet/zfnet", "imagenet/vgg16",
        "imagenet/resnet18",
        "imagenet/googlenet", "imagenet/resnet50", "medmnist/resnet18_224",
        "medmnist/resnet50_", "medmnist/resnet18_3d", "medmnist/resnet18_28/bloodmnist",
        # The same network and data as cifar10/resnet20 with other durations.
        "cifar10/plain20", "cifar10/resnet20_cpu_budget", "claims/degradation",
        # Over 20 s at full size; by default they run narrow (NARROW, below).
        "imagenet/alexnet", "cifar10/resnet18", "medmnist/resnet18_28/chestmnist",
        # cifar10/resnet20 smoke-runs on its stand-in in tests/data/test_standin.py;
        # lenet5_transfer trains lenet5_first5 as its source, and 5to9_scratch is
        # its target without the transfer.
        "cifar10/resnet20", "digits/lenet5_first5", "digits/lenet5_5to9_scratch",
        # transfer_target trains transfer_source (both narrow by default), and
        # transfer_scratch is the target without the transfer.
        "cifar10/transfer_",
        # A 20 s smoke run (the octave ResNet-20 on CIFAR stand-in data); its layers
        # and model are tested in tests/layers/test_octconv.py and tests/models/.
        "claims/octconv",
        # New models and analyses, whose smoke runs CI runs in the slow tier; the
        # layers, models and analyses are tested by default in tests/layers/,
        # tests/models/, tests/train/test_kernel_init.py, tests/analysis/.
        "claims/handcrafted_features", "claims/initialization", "claims/weight_sharing",
        "digits/lenet5_1998", "mnist/lenet5_1998",
        # The unshuffled runs with dataset.shuffle_seq, which mnist1d/cnn_shuffled
        # smoke-runs by default.
        "mnist1d/gru_shuffled", "mnist1d/logreg_shuffled", "mnist1d/mlp_shuffled",
        # 4.4 s; the GRU trains by default in tests/models/test_models.py.
        "mnist1d/gru",
        # By default at a narrow width (NARROW, below).
        "cifar10/airbench94",
        # ResNet-18 encoders with decoders (25 s); the heads, loss, evaluator
        # and class-map augmentation are tested in tests/models/test_segmentation.py.
        "segmentation/",
        # ResNet-18 detectors (the driver trains a small one by default in
        # tests/train/test_detection_training.py).
        "detection/",
        # Claims that train two to five small models each (3-7 s on 2 cores);
        # the claim machinery runs by default in tests/reproduce/test_claims.py
        # and claims/optimizers smoke-runs here.
        "claims/dropout", "claims/ensemble", "claims/augmentation",
        "claims/pooling_shift", "claims/mlp_vs_cnn", "claims/stacked3x3_vs_7x7",
        # The frequency-band CNN's other two recipes; speech_commands runs
        # its model and features by default.
        "speech/freq_cnn_full", "speech/freq_cnn_limited")

# The default suite runs these experiments' data, recipe and model family
# with a narrow model (the full-size smoke runs are under -m slow).
NARROW = {"imagenet/alexnet": {  # The two-GPU layout's groups, 1/6 of the width.
              "model.hidden": 64,
              "model.convs": ((16, 11, 4, 0, 1, True, True), (32, 5, 1, 2, 2, True, True),
                              (64, 3, 1, 1), (64, 3, 1, 1, 2), (32, 3, 1, 1, 2, True))},
          "cifar10/resnet18": {"model.width": 8, "model.stage_sizes": (1, 1, 1, 1)},
          "cifar10/airbench94": {"model.widths": (8, 16, 16)},
          "cifar10/transfer_target": {"model.width": 8, "model.stage_sizes": (1, 1, 1, 1)},
          "medmnist/resnet18_28/chestmnist": {"model.width": 8,
                                              "model.stage_sizes": (1, 1, 1, 1)}}


NARROW_SLOW = ("cifar10/transfer_target", "cifar10/resnet18",
               "medmnist/resnet18_28/chestmnist", "imagenet/alexnet",
               "cifar10/airbench94")


def _param(experiment):
  slow = any(experiment.id.startswith(prefix) for prefix in SLOW)
  return pytest.param(experiment, id=experiment.id,
                      marks=[pytest.mark.slow] if slow else [])


SMOKE = [_param(e) for e in _smoke_set()]


@pytest.fixture
def fast_compiles():
  """Two steps per run: compiling, not running, is what costs here."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def test_the_issue_list_of_experiments_exists():
  ids = set(BY_ID)
  expected = (
      [f"mnist1d/{m}{s}" for m in ("logreg", "mlp", "cnn", "gru") for s in ("", "_shuffled")]
      + ["digits/lenet5", "mnist/lenet5", "mr/kim_cnn_rand"]
      + [f"cifar10/resnet{d}" for d in (20, 32, 44, 56, 110)]
      + [f"cifar10/plain{d}" for d in (20, 32, 44, 56)]
      + ["cifar10/vgg16", "cifar10/resnet18", "cifar10/densenet_bc100", "cifar10/wrn28_10",
         "cifar100/resnet56", "cifar100/wrn28_10"]
      + [f"imagenet/{m}" for m in ("alexnet", "zfnet", "vgg16", "googlenet", "resnet18",
                                   "resnet50")]
      + [f"claims/{c}" for c in ("degradation_cifar10", "stacked3x3_vs_7x7", "mlp_vs_cnn",
                                 "pooling_shift", "optimizers", "dropout", "augmentation",
                                 "ensemble")])
  assert not sorted(set(expected) - ids)
  # MedMNIST: ResNet-18/50 at 28 and 224 on all 12 2D subsets, and the 3D ResNets.
  from cnnjax.data import medmnist
  flags_2d = [f for f, info in medmnist.SUBSETS.items() if not info.volumetric]
  flags_3d = [f for f, info in medmnist.SUBSETS.items() if info.volumetric]
  assert len(flags_2d) == 12 and len(flags_3d) == 6
  for family in ("resnet18_28", "resnet18_224", "resnet50_28", "resnet50_224"):
    assert {f"medmnist/{family}/{f}" for f in flags_2d} <= ids, family
  for family in ("resnet18_3d", "resnet50_3d"):
    assert {f"medmnist/{family}/{f}" for f in flags_3d} <= ids, family


@pytest.mark.parametrize("experiment", ALL, ids=lambda e: e.id)
def test_every_experiment_names_its_target(experiment):
  config = experiment.load()
  config_lib.validate(config)
  ref = config.reference
  assert ref.metric and ref.source, "reference.metric and reference.source are required"
  # A published figure, or a comparison of settings or an analysis (the
  # claims), or a stated absence ('no figure' / 'curves only' in the source).
  assert (ref.value > 0 or tuple(config.reproduce.compare) or config.reproduce.analysis
          or "figure" in ref.source.lower()), ref.source
  assert 0 <= ref.value <= 1
  for other in ref.others:
    metric, value = other.split("=")
    assert "/" in metric and 0 < float(value) <= 1
  with open(experiment.path) as f:
    assert f.read().lstrip().startswith('"""'), "a docstring with the recipe and its source"


def _smoke_config(experiment, **changes):
  config = experiment.load()
  with config.unlocked():
    config.smoke = True
    config.smoke_steps = 2
    config.dataset.smoke_data = "synthetic"
    config.progress_bar = False
    for key, value in changes.items():
      config_lib.set_value(config, key, value)
  return config


# The 3D MedMNIST networks at full width need over 20 GB and about 9 minutes
# per smoke run on 2 cores (XLA's CPU compile of 3D convolutions): under
# -m slow they run at a narrow width, with the same data, recipe and 3D code.
NARROW_3D = {"model.width": 8, "model.stage_sizes": (1, 1, 1, 1)}


@pytest.mark.parametrize("experiment", SMOKE)
def test_experiment_smoke_run(experiment, tmp_path, fast_compiles):
  config = _smoke_config(experiment)
  if config.model.get("ndim", 2) == 3 or "_3d" in experiment.id:
    with config.model.unlocked():
      for key, value in NARROW_3D.items():
        config_lib.set_value(config, key, value)
  _smoke_run(config, tmp_path)


@pytest.mark.parametrize("experiment_id", [
    # All in the slow tier (5-8 s each, most of it compiling): the default
    # suite loads and validates every recipe (tests/train/test_train_sources.py),
    # trains the smaller ones above through the same driver, and the digits
    # pair runs reproduce's source-then-target path.
    pytest.param(e, marks=pytest.mark.slow) if e in NARROW_SLOW else e
    for e in sorted(NARROW)])
def test_experiment_smoke_run_with_a_narrow_model(experiment_id, tmp_path, fast_compiles):
  config = _smoke_config(BY_ID[experiment_id])
  _narrow(config, NARROW[experiment_id])
  _smoke_run(config, tmp_path, NARROW[experiment_id])


def _narrow(config, overrides):
  with config.model.unlocked():
    for key, value in overrides.items():
      config_lib.set_value(config, key, value)


def _smoke_run(config, tmp_path, narrow=None):
  from cnnjax.train.loop import train_and_evaluate

  if config.reproduce.init_from_experiment:
    # The transfer source, as `cnnjax reproduce` would train it first (as
    # narrow as its target, whose layers it must fit).
    source = _smoke_config(BY_ID[config.reproduce.init_from_experiment])
    _narrow(source, narrow or {})
    train_and_evaluate(source, str(tmp_path / "source"))
    with config.unlocked():
      config.transfer.init_from = str(tmp_path / "source")
  result = train_and_evaluate(config, str(tmp_path / "run"))
  assert result["smoke"] and result["num_steps"] == 2
  metric = config.reference.metric
  assert metric in result["final"], sorted(result["final"])
  assert math.isfinite(result["final"][metric])
  if config.reproduce.analysis:
    from cnnjax.reproduce import analyses as claims
    run = {"slug": "base", "setting": {}, "seed": config.seed,
           "workdir": str(tmp_path / "run"), "result": result}
    figures = claims.run_analysis(config.reproduce.analysis, [run])
    assert figures["base"] and all(math.isfinite(v) for v in figures["base"].values())


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_reproduce_smoke_cli_runs_a_set_into_its_own_results(tmp_path, monkeypatch,
                                                             fast_compiles):
  """`cnnjax reproduce --smoke` trains a filtered set and never touches RESULTS.md."""
  from cnnjax import cli

  monkeypatch.chdir(os.path.dirname(EXPERIMENTS))
  with open("RESULTS.md", "rb") as f:
    before = f.read()
  code = cli.main(["reproduce", "--smoke", "--filter", "mnist1d/logreg",
                   "--workdir", str(tmp_path / "w"), "--config.smoke_steps=2"])
  assert code == 0
  with open("RESULTS.md", "rb") as f:
    assert f.read() == before
  with open(tmp_path / "w" / "RESULTS.md") as f:
    text = f.read()
  assert "### mnist1d/logreg" in text and "| test/accuracy (%) | 32.0 |" in text
