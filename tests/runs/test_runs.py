"""Run directories: typed access, atomic files, and the claim a training
process holds on its workdir."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run, RunClaim, RunClaimed
from cnnjax.runs import files

from conftest import CLI, EXPERIMENTS, REPO


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
  path = str(tmp_path / "record.json")
  files.write_json(path, {"a": 1})

  class Unwritable:
    def __repr__(self):
      raise RuntimeError("cannot be written")

  with pytest.raises(RuntimeError):
    files.write_json(path, {"a": Unwritable()})
  assert json.load(open(path)) == {"a": 1}
  assert os.listdir(tmp_path) == ["record.json"]  # No temporary left behind.


def test_writing_below_a_file_is_one_sentence(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(CnnjaxError, match="is a file, not a directory"):
    files.write_json(str(tmp_path / "file" / "record.json"), {})


def test_open_needs_a_run_directory(tmp_path):
  with pytest.raises(CnnjaxError, match="not a cnnjax workdir"):
    Run.open(str(tmp_path))
  (tmp_path / "f").write_text("")
  with pytest.raises(CnnjaxError, match="is a file"):
    Run.open(str(tmp_path / "f"))
  with pytest.raises(CnnjaxError, match="workdir is empty"):
    Run("")


def test_a_claim_refuses_a_second_holder_and_names_the_first(tmp_path):
  workdir = str(tmp_path / "w")
  with RunClaim(workdir, heartbeat_s=0) as first:
    holder = json.load(open(os.path.join(workdir, "claim.json")))
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(RunClaimed, match=rf"in use by another cnnjax process \(host "
                       rf"{socket.gethostname()}, pid {os.getpid()}, since "):
      RunClaim(workdir, heartbeat_s=0).acquire()
    assert first.held
  assert not os.path.exists(os.path.join(workdir, "claim.json"))  # Released.
  with RunClaim(workdir, heartbeat_s=0):  # Free again.
    pass


def test_the_claim_of_a_dead_process_is_taken_over_with_a_note(tmp_path, capsys):
  workdir = str(tmp_path / "w")
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  os.makedirs(workdir)
  files.write_json(os.path.join(workdir, "claim.json"),
                   {"host": socket.gethostname(), "pid": int(dead.stdout),
                    "since": time.time() - 60, "token": "old"})
  with RunClaim(workdir, heartbeat_s=0):
    holder = json.load(open(os.path.join(workdir, "claim.json")))
    assert holder["pid"] == os.getpid()
  assert f"pid {int(dead.stdout)}" in capsys.readouterr().err


def test_another_hosts_claim_is_stale_only_after_its_heartbeat_stops(tmp_path):
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  path = os.path.join(workdir, "claim.json")
  files.write_json(path, {"host": "elsewhere", "pid": 1, "since": time.time(),
                          "token": "theirs"})
  with pytest.raises(RunClaimed, match="host elsewhere, pid 1"):
    RunClaim(workdir, heartbeat_s=0, stale_after_s=60).acquire()
  old = time.time() - 120
  os.utime(path, (old, old))  # No heartbeat for two minutes.
  with RunClaim(workdir, heartbeat_s=0, stale_after_s=60):
    assert json.load(open(path))["pid"] == os.getpid()


def test_the_heartbeat_refreshes_the_claim(tmp_path):
  workdir = str(tmp_path / "w")
  with RunClaim(workdir, heartbeat_s=0.05):
    path = os.path.join(workdir, "claim.json")
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - os.path.getmtime(path) < 100


def test_a_second_cnnjax_train_in_a_claimed_workdir_exits_2(tmp_path, cli_env):
  workdir = str(tmp_path / "w")
  config = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")
  with RunClaim(workdir, heartbeat_s=0):
    out = subprocess.run(CLI + ["train", "--config", config, "--workdir", workdir,
                                "--config.smoke=true", "--compilation-cache", "none"],
                         env=cli_env, capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "is in use by another cnnjax process" in lines[0]
  assert f"pid {os.getpid()}" in lines[0]
  assert not os.path.exists(os.path.join(workdir, "config.json"))  # Nothing written.


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A 40-step MNIST-1D run that also keeps a confusion matrix."""
  from cnnjax.train import loop

  from conftest import tiny_mnist1d_config

  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_mnist1d_config(evaluators=("accuracy", "confusion_matrix"))
  loop.train_and_evaluate(config, workdir)
  return workdir


def test_run_gives_typed_access_to_a_finished_run(trained_run):
  import numpy as np

  run = Run.open(trained_run)
  assert run.config.model.name == "mnist1d_cnn" and run.config.num_steps == 40
  assert isinstance(run.config.model.get("features", ()), tuple)  # JSON lists back to tuples
  result = run.result()
  assert result["num_steps"] == 40
  assert [e["step"] for e in run.metrics() if "test/accuracy" in e] == [20, 40]
  assert run.steps() == [20, 40] and run.step("latest") == 40
  assert run.step("best") == result["best_step"]
  with pytest.raises(CnnjaxError, match="no checkpoint at step 7"):
    run.step(7)
  variables = run.variables()
  assert set(variables) == {"params", "batch_stats"}
  trained = run.trained()
  test = trained.dataset.splits["test"]
  probabilities = trained.probabilities(test["image"], batch_size=64)
  accuracy = float(np.mean(np.argmax(probabilities, -1) == test["label"]))
  assert accuracy == pytest.approx(result["final"]["test/accuracy"], abs=1e-6)


def test_the_confusion_matrix_is_saved_in_the_run(trained_run):
  import numpy as np

  run = Run.open(trained_run)
  record = json.load(open(run.path("confusion_matrix", "test.json")))
  matrix = np.asarray(record["matrix"])
  result = run.result()
  assert matrix.shape == (10, 10) and matrix.sum() == len(run.dataset().splits["test"]["label"])
  assert np.trace(matrix) / matrix.sum() == pytest.approx(result["final"]["test/accuracy"])
  assert "test/balanced_accuracy" in result["final"]
  assert os.path.getsize(run.path("confusion_matrix", "test.png")) > 1000


def test_eval_of_the_best_checkpoint_matches_its_logged_metrics(trained_run):
  from cnnjax.train.evaluation import evaluate_run

  run = Run.open(trained_run)
  best = run.step("best")
  logged = next(e for e in run.metrics() if e["step"] == best and "test/accuracy" in e)
  again = evaluate_run(trained_run, which="best")
  assert again["step"] == best
  assert again["test/accuracy"] == pytest.approx(logged["test/accuracy"], abs=1e-6)
  assert again["test/loss"] == pytest.approx(logged["test/loss"], rel=1e-5)


def test_a_claimed_directory_that_stays_empty_is_removed_again(tmp_path, capsys):
  """A run refused before its first file (a config mistake) leaves no directory
  behind; one that existed before, or that got a file, stays."""
  fresh = str(tmp_path / "fresh")
  with RunClaim(fresh, heartbeat_s=0):
    assert os.path.isdir(fresh)
  assert not os.path.exists(fresh)
  existing = tmp_path / "existing"
  existing.mkdir()
  with RunClaim(str(existing), heartbeat_s=0):
    pass
  assert existing.is_dir()
  used = str(tmp_path / "used")
  with RunClaim(used, heartbeat_s=0):
    open(os.path.join(used, "config.json"), "w").close()
  assert "config.json" in os.listdir(used)
  from cnnjax.cli import main
  bad = str(tmp_path / "bad")
  config = os.path.join(EXPERIMENTS, "detection", "faster_rcnn_shapes.py")
  assert main(["train", "--config", config,
               "--config.model.backbone=resnet81", "--workdir", bad]) == 2
  assert "unknown model 'resnet81'" in capsys.readouterr().err
  assert not os.path.exists(bad)
