"""The `cnnjax` command end to end and its error messages."""

import json
import os
import subprocess

import pytest

from cnnjax.cli import default_workdir, main
from conftest import CLI, EXPERIMENTS, REPO

CNN = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")


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
  assert main(["models", "[lm]*"]) == 0  # lenet5*, mnist1d_*, ...
  out = capsys.readouterr().out
  assert "mnist1d_cnn" in out and "5,210" in out and "61,706" in out
  assert "resnet20" not in out


@pytest.mark.slow
def test_models_lists_every_registered_model(capsys):
  from cnnjax.models import list_models
  assert main(["models"]) == 0
  out = capsys.readouterr().out
  assert all(name in out for name in list_models())


def test_default_workdir_mirrors_the_experiment_path():
  assert default_workdir(CNN) == os.path.join("runs", "mnist1d", "cnn")


# Signals, kill -9 and damaged checkpoints: tests/train/test_faults.py.
