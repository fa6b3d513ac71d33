"""Sweep executors: local worker processes, Ray, SLURM through submitit; the
same runs and summary whoever trains them, and sweeps that survive kill -9
and a second copy of themselves."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from cnnjax import sweep
from cnnjax.cli import main
from cnnjax.errors import CnnjaxError
from cnnjax.sweep import executors
from conftest import CLI, EXPERIMENTS, tiny_mnist1d_config

CNN = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")
GRID = {"optimizer.learning_rate": [0.01, 0.003]}
SEEDS = (0, 1)


def _config(steps=20):
  return tiny_mnist1d_config(num_steps=steps, eval_every=steps, checkpoint_every=steps,
                             log_every=steps)


def _metric_columns(path):
  """summary.csv without the wall time: what must not depend on the executor."""
  with open(path) as f:
    return [{k: v for k, v in row.items() if not k.startswith("wall_time")}
            for row in csv.DictReader(f)]


def _assert_same_metrics(path, reference_path):
  """The same rows and columns; numbers equal to 1e-6 relative (1e-5 absolute: a std of
  two near-equal losses and its interval amplify the last digit). A worker pinned
  to one core runs XLA:CPU with fewer threads than the serial process, which
  changes the order of float additions in the reductions (the mean loss moves
  in the 9th digit); accuracies are counts and come out identical."""
  mine, theirs = _metric_columns(path), _metric_columns(reference_path)
  assert [list(r) for r in mine] == [list(r) for r in theirs]
  for a, b in zip(mine, theirs):
    for key in a:
      try:
        x, y = float(a[key]), float(b[key])
      except ValueError:
        assert a[key] == b[key], key
        continue
      if "accuracy" in key:
        assert x == y, key
      else:
        assert x == pytest.approx(y, rel=1e-6, abs=1e-5), key


def _quiet(line):
  del line


# --------------------------------------------------------------------------
# Placing workers on devices (no processes)


def test_cpu_workers_get_disjoint_blocks_of_cores_and_matching_thread_pools():
  layout = executors.worker_layout(2, list(range(8)), [])
  assert [w["cpus"] for w in layout] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  for w in layout:
    assert w["env"]["OMP_NUM_THREADS"] == w["env"]["TF_NUM_INTRAOP_THREADS"] == "4"
    assert w["env"]["CUDA_VISIBLE_DEVICES"] == ""
  uneven = executors.worker_layout(3, list(range(8)), [])
  cores = [c for w in uneven for c in w["cpus"]]
  assert sorted(cores) == list(range(8)) and {len(w["cpus"]) for w in uneven} == {2, 3}
  # More workers than cores: one core each, shared round-robin.
  crowded = executors.worker_layout(3, [4, 5], [])
  assert [w["cpus"] for w in crowded] == [[4], [5], [4]]
  assert all(w["env"]["OMP_NUM_THREADS"] == "1" for w in crowded)


def test_gpu_workers_get_one_gpu_each_and_share_only_when_asked_to():
  layout = executors.worker_layout(2, [0, 1], ["3", "5"])
  assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in layout] == ["3", "5"]
  assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in w["env"] for w in layout)
  shared = executors.worker_layout(4, [0, 1], ["0", "1"])
  assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in shared] == ["0", "1", "0", "1"]
  assert {w["env"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] for w in shared} == {"0.450"}
  assert executors.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,7"}) == ["2", "7"]
  assert executors.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
  with pytest.raises(CnnjaxError, match="--workers must be positive"):
    executors.worker_layout(0, [0], [])


# --------------------------------------------------------------------------
# One sentence for what cannot run


def test_missing_engines_and_misplaced_options_are_one_sentence(monkeypatch, capsys, tmp_path):
  monkeypatch.setitem(sys.modules, "ray", None)  # As if Ray were not installed.
  monkeypatch.setitem(sys.modules, "submitit", None)
  base = ["sweep", "--config", CNN, "--workdir", str(tmp_path / "s"),
          "--config.num_steps=1", "--config.dataset.num_samples=1000"]
  cases = [
      (["--executor", "ray"], "pip install 'cnnjax[ray]'"),
      (["--executor", "slurm", "--slurm-cluster", "local"], "pip install 'cnnjax[slurm]'"),
      (["--executor", "ray", "--workers", "2"], "--workers is an option of --executor local"),
      (["--workers", "2", "--slurm-time", "5"], "--slurm-time is an option of --executor slurm"),
      (["--workers", "0"], "--workers must be positive"),
  ]
  for extra, message in cases:
    assert main(base + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
  monkeypatch.delitem(sys.modules, "submitit")
  monkeypatch.setattr("shutil.which", lambda name: None)  # No SLURM here.
  assert main(base + ["--executor", "slurm"]) == 2
  assert "sbatch" in capsys.readouterr().err


# --------------------------------------------------------------------------
# The same sweep on every executor


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("serial"))
  summary = sweep.run(_config(), GRID, SEEDS, workdir=root, config_path=CNN,
                      progress=_quiet)
  return root, summary


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda: sweep.LocalExecutor(2),
    lambda: sweep.SlurmExecutor(cluster="local", poll_s=0.2),
    lambda: sweep.RayExecutor(cpus_per_trial=1),
], ids=["local", "slurm", "ray"])
def test_every_executor_trains_the_same_runs_into_the_same_files(serial, make, tmp_path):
  serial_root, serial_summary = serial
  root = str(tmp_path / "sweep")
  summary = sweep.run(_config(), GRID, SEEDS, workdir=root, config_path=CNN,
                      executor=make(), progress=_quiet)
  assert [r["status"] for r in summary.runs] == ["trained"] * 4
  for mine, theirs in zip(summary.runs, serial_summary.runs):
    assert os.path.relpath(mine["workdir"], root) == os.path.relpath(theirs["workdir"], serial_root)
    final, reference = mine["result"]["final"], theirs["result"]["final"]
    assert sorted(final) == sorted(reference)
    for key in final:  # Accuracies exact, losses to float32 rounding (see above).
      assert final[key] == (reference[key] if "accuracy" in key else
                            pytest.approx(reference[key], rel=1e-6)), key
    assert sorted(os.listdir(mine["workdir"])) == sorted(os.listdir(theirs["workdir"]))
  _assert_same_metrics(os.path.join(root, "summary.csv"),
                       os.path.join(serial_root, "summary.csv"))
  # A rerun on the same executor finds everything finished.
  again = sweep.run(_config(), GRID, SEEDS, workdir=root, config_path=CNN,
                    executor=make(), progress=_quiet)
  assert [r["status"] for r in again.runs] == ["done"] * 4


@pytest.mark.slow  # 20 s: two worker processes; the default suite keeps the pure layout tests.
def test_local_workers_train_vmapped_seed_groups_and_report_failures(serial, tmp_path):
  _, serial_summary = serial
  root = str(tmp_path / "sweep")
  grid = {**GRID, "model.name": ["mnist1d_cnn", "no_such_model"]}
  lines = []
  summary = sweep.run(_config(), grid, SEEDS, workdir=root, config_path=CNN,
                      vmap_seeds=True, executor=sweep.LocalExecutor(2),
                      progress=lines.append)
  good = [r for r in summary.runs if r["setting"]["model.name"] == "mnist1d_cnn"]
  bad = [r for r in summary.runs if r["setting"]["model.name"] == "no_such_model"]
  assert [r["status"] for r in good] == ["trained"] * 4
  assert [r["status"] for r in bad] == ["failed"] * 4
  assert all("no_such_model" in r["error"] and "\n" not in r["error"] for r in bad)
  for mine, theirs in zip(good, serial_summary.runs):
    assert mine["result"]["trained_with_seeds"] == [0, 1]
    assert mine["result"]["final"] == pytest.approx(theirs["result"]["final"], abs=1e-5)
  assert any("4 trials on local, 2 workers" in line for line in lines)
  assert os.path.exists(os.path.join(root, "logs", "worker_0.log"))


# --------------------------------------------------------------------------
# Kill -9 and a second copy


def _sweep_command(root, *extra):
  return [*CLI, "sweep", "--config", CNN, "--workdir", root, "--seeds", "2",
          "--grid", "optimizer.learning_rate=0.01,0.003",
          "--config.dataset.num_samples=1000", "--config.batch_size=50",
          "--config.num_steps=120", "--config.log_every=20", "--config.eval_every=60",
          "--config.checkpoint_every=20", "--config.progress_bar=false", *extra]


def _count(root, name):
  return sum(name in files for _, _, files in os.walk(root))


def _wait_for(condition, proc, timeout=240.0):
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if condition():
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.05)
  raise AssertionError("the sweep never reached the moment to kill it")


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_three_times_ends_as_an_uninterrupted_one(
    tmp_path, cli_env):
  """kill -9 of the sweep process (its workers then checkpoint and stop) at
  three moments: during the first runs, after the first result, after three;
  each rerun resumes, and the summary equals an uninterrupted sweep's."""
  whole = str(tmp_path / "whole")
  subprocess.run(_sweep_command(whole), env=cli_env, check=True,
                 capture_output=True, timeout=600)
  root = str(tmp_path / "killed")
  moments = [
      lambda: any(d.isdigit() for _, dirs, _ in os.walk(root) for d in dirs),
      lambda: _count(root, "result.json") >= 1,
      lambda: _count(root, "result.json") >= 3,
  ]
  killed = 0
  for moment in moments:
    proc = subprocess.Popen(_sweep_command(root, "--workers", "2"), env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if _wait_for(moment, proc):
      proc.send_signal(signal.SIGKILL)
      killed += 1
    proc.wait(timeout=60)
  assert killed >= 2  # The last moment may come after the sweep ended.
  finish = subprocess.run(_sweep_command(root, "--workers", "2"), env=cli_env,
                          capture_output=True, text=True, timeout=600)
  assert finish.returncode == 0, finish.stderr
  _assert_same_metrics(os.path.join(root, "summary.csv"),
                       os.path.join(whole, "summary.csv"))


@pytest.mark.slow
def test_two_copies_of_one_sweep_never_train_a_run_twice(tmp_path, cli_env):
  root = str(tmp_path / "twice")
  procs = [subprocess.Popen(_sweep_command(root, *extra), env=cli_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for extra in ((), ("--workers", "2"))]
  outputs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
  trained = 0
  for out, _ in outputs:
    line = [l for l in out.splitlines() if "trained" in l and "failed" in l
            or l.startswith("Nothing new was trained")][-1]
    trained += 0 if line.startswith("Nothing") else int(line.split()[0])
  assert trained == 4  # Each of the 2 x 2 runs by exactly one of the copies.
