"""Data parallelism on 8 fake CPU devices: the same run as on one device.

XLA's device count is fixed when JAX starts, so the multi-device checks run
in one subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8
(`_run_checks` below) and report numbers that the tests assert on.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO

CHECKS = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import jax, numpy as np
    from conftest import tiny_mnist1d_config
    from cnnjax.train import loop, setup

    out = {"devices": len(jax.devices())}
    work = sys.argv[1]

    def digits_resnet(**changes):
      # BatchNorm, random shifts and flips: a tiny CIFAR ResNet on 8x8 digits.
      base = {"dataset.name": "digits", "model.name": "resnet20",
              "batch_size": 48, "num_steps": 12, "eval_every": 12,
              "checkpoint_every": 6, "log_every": 6, "augment.translate": 1,
              "augment.flip": True, "optimizer.name": "momentum",
              "optimizer.learning_rate": 0.05}
      base.update(changes)
      config = tiny_mnist1d_config(**base)
      with config.model.unlocked():
        config.model.depth = 8
        config.model.widths = (4, 8, 8)
      return config

    def mlp(n, dropout_rate=0.0, grad_accum_steps=1):
      config = tiny_mnist1d_config(**{
          "parallel.num_devices": n, "model.name": "mlp", "batch_size": 48,
          "num_steps": 12, "grad_accum_steps": grad_accum_steps})
      with config.model.unlocked():
        config.model.dropout_rate = dropout_rate
      return config

    def params(state):
      return [np.asarray(x).tolist() for x in jax.tree.leaves(
          {"p": state.params, "b": state.batch_stats})]

    def run(name, config):
      exp = setup.build(config)
      traces = []
      original = exp.train_step
      def counting(*a):
        traces.append(1)
        return original(*a)
      exp.train_step = counting
      feed = loop.SeedGroup(exp)
      data = feed.train_inputs(0)
      state, rng = exp.state, jax.random.key(0)
      for _ in range(config.num_steps):
        state, metrics = feed.train_fn(state, next(data), rng)
      leaf = jax.tree.leaves(state.params)[0]
      out[name] = {"metrics": feed.evaluate(state), "params": params(state),
                   "traces": len(traces),
                   "replicated": bool(leaf.sharding.is_fully_replicated),
                   "state_devices": len(leaf.sharding.device_set),
                   "loss": float(metrics["loss"])}

    for n in (1, 8):
      run(f"resnet_{n}", digits_resnet(**{"parallel.num_devices": n}))
      run(f"resnet_per_device_{n}", digits_resnet(**{
          "parallel.num_devices": n, "parallel.batch_norm": "per_device"}))
      run(f"dropout_{n}", mlp(n, dropout_rate=0.3))
    run("plain_8", mlp(8))
    run("accumulate_8", mlp(8, grad_accum_steps=3))
    with open(os.path.join(work, "checks.json"), "w") as f:
      json.dump(out, f)

    # The whole loop, with checkpoints: 8 devices, then resumed on 2.
    full = loop.train_and_evaluate(digits_resnet(), os.path.join(work, "full8"))
    loop.train_and_evaluate(digits_resnet(num_steps=6), os.path.join(work, "moved"))
    moved = loop.train_and_evaluate(digits_resnet(**{"parallel.num_devices": 2}),
                                    os.path.join(work, "moved"))
    out["loop"] = {"full8": full["final"], "resumed_on_2": moved["final"],
                   "device_count": full["device"]["count"]}
    with open(os.path.join(work, "checks.json"), "w") as f:
      json.dump(out, f)
''')


@pytest.fixture(scope="module")
def checks(tmp_path_factory, compilation_cache):
  work = tmp_path_factory.mktemp("multidevice")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  script = f"REPO = {REPO!r}\n" + CHECKS
  proc = subprocess.run([sys.executable, "-c", script, str(work)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(work / "checks.json") as f:
    return json.load(f)


def _close(a, b, rtol=2e-4, atol=2e-5):
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# About 75 s on 2 cores (a subprocess with 8 devices training several nets): -m slow.
@pytest.mark.slow
def test_eight_devices_train_like_one_with_the_same_global_batch(checks):
  assert checks["devices"] == 8
  one, eight = checks["resnet_1"], checks["resnet_8"]
  assert eight["state_devices"] == 8 and eight["replicated"]
  assert one["state_devices"] == 1
  # Synchronised BatchNorm, shifts, flips: the same parameters, statistics
  # and metrics within float tolerance.
  _close(one["params"], eight["params"])
  for k, v in one["metrics"].items():
    assert eight["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
  # Dropout masks too are the same whatever the device count.
  _close(checks["dropout_1"]["params"], checks["dropout_8"]["params"])
  assert not np.allclose(checks["dropout_8"]["params"][0],
                         checks["plain_8"]["params"][0])  # dropout did act


@pytest.mark.slow  # The 8-device run of `checks` (about 75 s).
def test_the_train_step_is_traced_once_on_eight_devices(checks):
  for name in ("resnet_8", "resnet_per_device_8", "dropout_8", "plain_8",
               "accumulate_8"):
    assert checks[name]["traces"] == 1, name


@pytest.mark.slow  # The 8-device run of `checks` (about 75 s).
def test_per_device_batch_norm_uses_each_shards_statistics(checks):
  # On one device "per device" is the global batch; on eight it is not.
  _close(checks["resnet_per_device_1"]["params"], checks["resnet_1"]["params"])
  diffs = [np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in
           zip(checks["resnet_per_device_8"]["params"], checks["resnet_8"]["params"])]
  assert max(diffs) > 1e-3
  assert checks["resnet_per_device_8"]["replicated"]


@pytest.mark.slow  # The 8-device run of `checks` (about 75 s).
def test_gradient_accumulation_over_devices_matches_one_big_batch(checks):
  # No BatchNorm in the MLP: three micro-batches of 16 give the same update.
  _close(checks["accumulate_8"]["params"], checks["plain_8"]["params"],
         rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # The 8-device run of `checks` (about 75 s).
def test_a_run_checkpointed_on_eight_devices_resumes_on_two(checks):
  loop = checks["loop"]
  assert loop["device_count"] == 8
  for k, v in loop["full8"].items():
    assert loop["resumed_on_2"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def multihost_command(workdir, steps: dict) -> list[str]:
  """`cnnjax train` of the tiny MNIST-1D recipe with jax.distributed on."""
  from conftest import CLI, EXPERIMENTS
  return [*CLI, "train", "--config", os.path.join(EXPERIMENTS, "mnist1d", "cnn.py"),
          "--workdir", str(workdir), "--config.dataset.num_samples=1000",
          "--config.progress_bar=false", "--config.parallel.distributed=true",
          *[f"--config.{k}={v}" for k, v in steps.items()]]


def start_processes(args: list[str], num_processes: int = 2,
                    devices_per_process: int = 2) -> list[subprocess.Popen]:
  """`args` as the processes of one jax.distributed job on this machine
  (Gloo between them, JAX_* variables), by process id; output in stdout."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
             JAX_NUM_PROCESSES=str(num_processes),
             JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  procs = {i: subprocess.Popen(args, env=dict(env, JAX_PROCESS_ID=str(i)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
           for i in reversed(range(num_processes))}
  return [procs[i] for i in range(num_processes)]


def finish_processes(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
  """Each process's output once it exits (all are killed on a timeout)."""
  try:
    return [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()


# Two JAX processes joined by jax.distributed (about 20 s): -m slow.
@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, compilation_cache):
  """Multi-host on one machine: 2 processes x 2 CPU devices, joined by
  jax.distributed (Gloo), each feeding its rows of the global batch."""
  from cnnjax.train import loop
  from conftest import tiny_mnist1d_config

  steps = {"batch_size": 48, "num_steps": 20, "log_every": 5, "eval_every": 10,
           "checkpoint_every": 10}
  procs = start_processes(multihost_command(tmp_path / "multi", steps))
  outputs = finish_processes(procs)
  assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:]
  with open(tmp_path / "multi" / "result.json") as f:
    multi = json.load(f)
  assert multi["device"]["count"] == 4
  assert sorted(os.listdir(tmp_path / "multi" / "checkpoints")) == ["10", "20"]
  single = loop.train_and_evaluate(tiny_mnist1d_config(**steps), str(tmp_path / "one"))
  for k, v in single["final"].items():
    assert multi["final"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
