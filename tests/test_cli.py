"""The `cnnjax` command end to end, its error messages, and surviving kills."""

import json
import os
import signal
import subprocess
import time

import pytest

from cnnjax import config as config_lib
from cnnjax.cli import default_workdir, main
from cnnjax.train import loop
from conftest import CLI, EXPERIMENTS, REPO

CNN = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")
# A run long enough to be interrupted part-way: 1,500 steps on 800 examples,
# with augmentation on so that its random stream must resume exactly too.
LONG = ["--config.dataset.num_samples=1000", "--config.batch_size=50",
        "--config.num_steps=1500", "--config.log_every=50",
        "--config.eval_every=250", "--config.checkpoint_every=100",
        "--config.augment.translate=1", "--config.progress_bar=false"]


def _run(args, env, **kw):
  return subprocess.run(CLI + args, env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=300, **kw)


def test_train_smoke_end_to_end(tmp_path, cli_env):
  out = _run(["train", "--config", CNN, "--workdir", str(tmp_path),
              "--config.smoke=true"], cli_env)
  assert out.returncode == 0, out.stderr
  assert "Finished 12 steps" in out.stdout
  result = json.load(open(tmp_path / "result.json"))
  assert result["smoke"] is True and result["num_steps"] == 12

  out = _run(["eval", "--workdir", str(tmp_path)], cli_env)
  assert out.returncode == 0, out.stderr
  evaluated = json.loads(out.stdout)
  assert evaluated["step"] == 12
  assert evaluated["test/accuracy"] == pytest.approx(result["final"]["test/accuracy"])


@pytest.mark.parametrize("args, message", [
    (["train", "--config", CNN, "--config.optimizer.lr=0.1"],
     "unknown config key 'optimizer.lr'"),
    (["train", "--config", "experiments/nope.py"], "does not exist"),
    (["train", "--config", CNN, "--config.batch_size=big"], "expects an integer"),
    (["train", "--config", CNN, "--config.model.name=resnet9000"], "unknown model"),
    (["train", "--config", CNN, "--config.dataset.name=mnist2d"], "unknown dataset"),
    (["train", "--config", CNN, "--config.optimizer.name=lbfgs"], "unknown optimizer"),
    (["eval", "--workdir", "/nonexistent/run"], "not a cnnjax workdir"),
])
def test_user_errors_are_one_sentence_without_traceback(args, message, capsys, tmp_path):
  if args[0] == "train":
    args = args + ["--workdir", str(tmp_path / "w"), "--config.smoke=true"]
  code = main(args)
  err = capsys.readouterr().err
  assert code == 2
  assert message in err
  assert "Traceback" not in err
  assert len(err.strip().splitlines()) == 1


def test_models_lists_the_registry(capsys):
  assert main(["models"]) == 0
  out = capsys.readouterr().out
  assert "mnist1d_cnn" in out and "5,210" in out and "61,706" in out


def test_default_workdir_mirrors_the_experiment_path():
  assert default_workdir(CNN) == os.path.join("runs", "mnist1d", "cnn")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The long run's result, trained in one go (in-process)."""
  config = config_lib.load_config(CNN)
  config_lib.apply_overrides(config, LONG)
  return loop.train_and_evaluate(config, str(tmp_path_factory.mktemp("full")))


def _start_and_wait_for_checkpoint(workdir, env, step=200):
  proc = subprocess.Popen(CLI + ["train", "--config", CNN, "--workdir", str(workdir)]
                          + LONG, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not os.path.isdir(os.path.join(workdir, "checkpoints", str(step))):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.02)
  return proc


def test_kill_9_then_rerun_resumes_and_matches(tmp_path, cli_env, uninterrupted):
  proc = _start_and_wait_for_checkpoint(tmp_path, cli_env)
  proc.kill()  # SIGKILL: no chance to clean up
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  out = _run(["train", "--config", CNN, "--workdir", str(tmp_path)] + LONG, cli_env)
  assert out.returncode == 0, out.stderr
  assert "Resuming from the checkpoint at step" in out.stderr
  resumed_from = int(out.stderr.split("Resuming from the checkpoint at step ")[1].split()[0])
  assert 200 <= resumed_from < 1500
  result = json.load(open(tmp_path / "result.json"))
  assert result["final"] == uninterrupted["final"]


def test_sigterm_saves_a_checkpoint_and_rerun_matches(tmp_path, cli_env, uninterrupted):
  proc = _start_and_wait_for_checkpoint(tmp_path, cli_env)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  if proc.returncode == 0:
    pytest.skip("the run finished before the signal arrived")
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert "stopped by signal 15 at step" in err
  stopped_at = int(err.split("stopped by signal 15 at step ")[1].split(";")[0])
  assert os.path.isdir(tmp_path / "checkpoints" / str(stopped_at))
  out = _run(["train", "--config", CNN, "--workdir", str(tmp_path)] + LONG, cli_env)
  assert out.returncode == 0, out.stderr
  assert f"Resuming from the checkpoint at step {stopped_at}" in out.stderr
  assert json.load(open(tmp_path / "result.json"))["final"] == uninterrupted["final"]
