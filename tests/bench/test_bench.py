"""`cnnjax benchmark`: the PyTorch twins, the figures it reports, the CLI."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import runtime
from cnnjax.bench import model as bench
from cnnjax.models.registry import create_model
from tests.conftest import CLI

torch = pytest.importorskip("torch")
from cnnjax.bench import torch_models as tm  # noqa: E402

STAGES = {"resnet20": [3, 3, 3], "resnet18": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3],
          "lenet5": None, "lenet5_relu": None}


def _init(name, shape, num_classes=10):
  model = create_model(name, num_classes=num_classes)
  x = np.random.default_rng(0).standard_normal((4, *shape), np.float32)
  return model, jax.jit(model.init)(jax.random.key(0), x), x


@pytest.mark.parametrize("name, shape, count", [
    ("resnet20", (32, 32, 3), 269_722),
    ("resnet18", (224, 224, 3), 11_689_512),  # torchvision's resnet18
    ("resnet50", (224, 224, 3), 25_557_032),  # torchvision's resnet50
    ("resnet152", (224, 224, 3), 60_192_808),
    ("lenet5", (32, 32, 1), 61_706),
])
def test_twins_have_the_papers_parameter_counts(name, shape, count):
  model = create_model(name, num_classes=10 if name in ("resnet20", "lenet5") else 1000)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros((1, *shape))))
  twin = tm.create_torch_model(name, 10 if name in ("resnet20", "lenet5") else 1000,
                               shape[-1])
  assert tm.param_count(variables) == tm.count_parameters(twin) == count


@pytest.mark.parametrize("name, shape", [
    ("resnet20", (32, 32, 3)), ("resnet18", (48, 48, 3)),
    pytest.param("resnet50", (48, 48, 3), marks=pytest.mark.slow),
    ("lenet5", (32, 32, 1)), ("lenet5_relu", (32, 32, 1))])
def test_twins_compute_the_same_function(name, shape):
  model, variables, x = _init(name, shape)
  twin = tm.create_torch_model(name, 10, shape[-1])
  tm.load_flax_variables(twin, variables, stage_sizes=STAGES[name])
  twin.eval()
  ours = np.asarray(jax.jit(model.apply)(variables, x))
  with torch.no_grad():
    theirs = twin(tm.to_torch_input(x)).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # tests/layers/test_batchnorm_update.py checks a step in the default suite.
def test_one_training_step_matches_torch():
  """The benchmarked step (SGD, momentum, weight decay, BN in training mode)
  moves the weights exactly as the PyTorch twin's does."""
  from cnnjax.train import losses
  from cnnjax.train import step as step_lib
  from cnnjax.train.state import TrainState

  model, variables, x = _init("resnet20", (32, 32, 3))
  labels = np.arange(4, dtype=np.int32)
  twin = tm.create_torch_model("resnet20", 10, 3)
  tm.load_flax_variables(twin, variables, stage_sizes=STAGES["resnet20"])
  twin.train()
  opt = torch.optim.SGD(twin.parameters(), lr=bench.LEARNING_RATE,
                        momentum=bench.MOMENTUM, weight_decay=bench.WEIGHT_DECAY)
  for _ in range(2):  # The second step uses the momentum buffer.
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(twin(tm.to_torch_input(x)),
                                             torch.from_numpy(labels.astype(np.int64)))
    loss.backward()
    opt.step()

  tx = optax.chain(optax.add_decayed_weights(bench.WEIGHT_DECAY),
                   optax.sgd(bench.LEARNING_RATE, momentum=bench.MOMENTUM))
  state = TrainState.create(apply_fn=model.apply, variables=variables, tx=tx)
  step = jax.jit(step_lib.make_train_step(losses.softmax_cross_entropy,
                                          lambda s, o: bench.LEARNING_RATE))
  for _ in range(2):
    state, metrics = step(state, {"image": x, "label": labels}, jax.random.key(0))
  np.testing.assert_allclose(float(metrics["loss"]) / 4, loss.item(), rtol=1e-4)
  ours = state.params["stage2_block0"]["conv1"]["kernel"]
  theirs = twin.blocks[3].conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=2e-5)
  np.testing.assert_allclose(state.params["head"]["kernel"],
                             twin.head.weight.detach().numpy().T, rtol=1e-3, atol=2e-5)
  np.testing.assert_allclose(
      state.batch_stats["stem_bn"]["var"], twin.stem_bn.running_var.numpy(), rtol=1e-4)


def test_benchmark_reports_the_figures_and_the_ratio():
  options = bench.Options(model="lenet5", batch_size=16, steps=2, repeats=2,
                          warmup=1, compare="torch",
                          torch_layouts=("channels_first",))
  r = bench.benchmark_model(options)
  # The twin trained in a process of its own (the default).
  assert r["torch_process"] == "separate"
  assert r["torch"]["channels_first"]["pid"] != os.getpid()
  assert r["images_per_s"] > 0 and r["torch_images_per_s"] > 0
  assert r["ratio"] == pytest.approx(r["images_per_s"] / r["torch_images_per_s"])
  assert r["compile_s"] > 0 and r["peak_memory_bytes"] > 0
  # LeNet-5 forward: 416,520 multiply-adds; a train step is about 3 forward
  # passes, less C1's input gradient (not needed).
  forward = 2 * 416_520
  assert 2 * forward < r["flops_per_image"] < 3.5 * forward
  assert r["achieved_flops"] == pytest.approx(r["flops_per_image"] * r["images_per_s"])
  assert 0 < r["utilization"] < 1
  assert np.isfinite(r["final_loss"]) and np.isfinite(r["torch"]["channels_first"]["final_loss"])
  assert "ratio" in bench.format_result(r)


@pytest.mark.slow  # 4 s; the separate process is the default and is tested above.
def test_the_twin_can_train_in_this_process_too():
  options = bench.Options(model="lenet5", batch_size=8, steps=1, repeats=1, warmup=0,
                          compare="torch", torch_layouts=("channels_last",),
                          torch_process="same")
  r = bench.benchmark_model(options)
  assert r["torch"]["channels_last"]["pid"] == os.getpid() and r["ratio"] > 0
  assert "torch in the same process" in bench.format_result(r)


def test_a_torch_process_that_ends_early_is_one_sentence(monkeypatch):
  monkeypatch.setattr(sys, "executable", shutil.which("false"))
  with pytest.raises(bench.CnnjaxError, match=r"ended \(exit status 1\) before answering"):
    bench.TorchProcess(bench.Options(model="lenet5", steps=1), ("channels_last",))


@pytest.mark.parametrize("change, message", [
    ({"dtype": "float16"}, "--dtype"), ({"steps": 0}, "--steps"),
    ({"torch_process": "thread"}, "--torch-process"),
    ({"compare": "tf"}, "--compare"), ({"model": "bert"}, "unknown model"),
    ({"model": "kim_cnn_rand"}, "image models")])
def test_bad_options_are_one_clear_error(change, message):
  options = bench.Options(**{"model": "lenet5", **change})
  with pytest.raises(bench.CnnjaxError, match=message):
    bench.benchmark_model(options)


# About 10 s (a CLI run timing two frameworks); the library call is tested above: -m slow.
@pytest.mark.slow
def test_cli_writes_the_json_keys(tmp_path, cli_env):
  out = tmp_path / "bench.json"
  proc = subprocess.run(
      CLI + ["benchmark", "lenet5", "--batch-size", "8", "--steps", "1", "--repeats",
             "1", "--warmup", "0", "--compare", "torch", "--json", str(out)],
      env=cli_env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  figures = json.loads(out.read_text())
  for key in ("images_per_s", "compile_s", "flops_per_image", "torch_images_per_s",
              "ratio"):
    assert figures[key] > 0
  assert "train step" in proc.stdout


def test_cli_refuses_an_unwritable_json_path_before_running(tmp_path, cli_env):
  proc = subprocess.run(
      CLI + ["benchmark", "lenet5", "--json", str(tmp_path / "no" / "x.json")],
      env=cli_env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_xla_cpu_flags_are_added_but_never_override_the_user(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  added = runtime.apply_xla_defaults()
  assert added and all(f in __import__("os").environ["XLA_FLAGS"] for f in added)
  assert "--xla_force_host_platform_device_count=8" in __import__("os").environ["XLA_FLAGS"]
  mine = "--xla_cpu_experimental_ynn_fusion_type=+dot"
  monkeypatch.setenv("XLA_FLAGS", mine)
  assert runtime.apply_xla_defaults() == [] and __import__("os").environ["XLA_FLAGS"] == mine
  monkeypatch.setenv("CNNJAX_XLA_DEFAULTS", "0")
  monkeypatch.setenv("XLA_FLAGS", "")
  assert runtime.apply_xla_defaults() == [] and __import__("os").environ["XLA_FLAGS"] == ""


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_the_cpu_flags_take_effect_in_a_fresh_process(cli_env):
  """The weight gradient of a convolution is compiled without YNNPACK."""
  code = (
      "import cnnjax.runtime, jax, jax.numpy as jnp\n"
      "cnnjax.runtime.apply_xla_defaults()  # what the cnnjax command does first\n"
      "conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
      "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
      "f = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1])\n"
      "x = jnp.ones((128, 32, 32, 16))\n"
      "print('ynn' in f.lower(x, jnp.ones((3, 3, 16, 16)), x).compile().as_text())\n")
  run = lambda env: subprocess.run(  # noqa: E731
      [CLI[0], "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert run(cli_env).stdout.strip() == "False"
  assert run(dict(cli_env, CNNJAX_XLA_DEFAULTS="0")).stdout.strip() == "True"


def test_contenders_are_timed_in_turns_in_rotating_order():
  """--compare torch: one run of each contender per round, the first one
  changing every round, so no contender always runs after the same one."""
  calls = []
  contenders = {name: bench.Timed(run=lambda name=name: calls.append(name), count=10,
                                  finish=None) for name in ("cnnjax", "cf", "cl")}
  rates = bench.interleaved_rates(contenders, repeats=4)
  assert calls == ["cnnjax", "cf", "cl", "cf", "cl", "cnnjax", "cl", "cnnjax", "cf",
                   "cnnjax", "cf", "cl"]
  assert {name: len(r) for name, r in rates.items()} == {"cnnjax": 4, "cf": 4, "cl": 4}
  assert all(rate > 0 for r in rates.values() for rate in r)


def test_runs_without_steps_last_about_a_second_and_at_least_ten_steps():
  import time
  sleep = lambda seconds_per_step: (lambda n: time.sleep(n * seconds_per_step))  # noqa: E731
  assert bench.auto_steps(sleep(0.01), seconds=0.25) in range(20, 26)
  assert bench.auto_steps(sleep(0.02), seconds=0.02) == bench.MIN_STEPS
  assert bench.auto_steps(lambda n: None, seconds=10.0) == bench.MAX_STEPS
