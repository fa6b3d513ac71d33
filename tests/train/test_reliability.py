"""Reliability of a training run (issue 21, the training and run half).

Divergence that is not a NaN, the metric log across a stop between two log
steps, a full disk, mistakes that used to pass silently (a best metric no
evaluation reports, `--best` without a best checkpoint, a rerun with fewer
steps, a workdir that cannot be one), two trainers in one workdir, and a
SIGTERM before training starts.

The in-process runs are the tiny MNIST-1D recipe of conftest.py (40 steps);
the CLI tests start `cnnjax train` in subprocesses, as a user would.
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run, files
from cnnjax.runs.checkpoints import Checkpointer
from cnnjax.train import loop
from conftest import CLI, EXPERIMENTS, REPO, tiny_mnist1d_config

# Orbax leaves coroutines of a failed write unawaited; Python reports them.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

TIMEOUT_S = 300
WALL_CLOCK = ("time", "train/steps_per_s")


def _comparable_log(workdir):
  """metrics.jsonl without the wall-clock fields."""
  return [{k: v for k, v in e.items() if k not in WALL_CLOCK}
          for e in Run(str(workdir)).metrics()]


def _snapshot(directory):
  """{relative path: bytes} of every file below `directory`."""
  found = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, directory)] = f.read()
  return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted tiny run (40 steps; logs every 10, checkpoints every 20)."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  result = loop.train_and_evaluate(tiny_mnist1d_config(), workdir)
  return workdir, result


# ---- divergence

# The learning rate jumps at step 20 (after a good checkpoint at 15) by
# `schedule.gamma`: 1e8 takes it to 1e6, where the loss stays finite (near
# 1e27) but the float32 gradient norm overflows; 1e30 makes the loss NaN. A
# gamma beyond float32 (1e45) makes the schedule NaN from the start: the
# weights of step 1 are not finite while its loss and gradients are.
BLOW_UP = {"schedule.name": "multistep", "schedule.boundaries": (20,),
           "checkpoint_every": 15}


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("gamma, what, kept", [
    (1e8, "the gradient norm is inf at step 2[1-9]", 15),
    (1e30, "the loss is nan at step 2[1-9]", 15),
    (1e45, "a weight is no longer finite at step 1", None),
])
def test_divergence_stops_at_its_step_and_keeps_the_last_good_checkpoint(
    tmp_path, gamma, what, kept):
  config = tiny_mnist1d_config(**BLOW_UP, **{"schedule.gamma": gamma})
  with pytest.raises(loop.TrainingDiverged) as error:
    loop.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  where = (rf"the last good checkpoint \(step {kept}\) is kept in {tmp_path}"
           if kept else "no checkpoint was written")
  assert re.fullmatch(rf"training diverged: {what}; {where}; lower "
                      r"config.optimizer.learning_rate", message), message
  # A CnnjaxError without its own exit code: the CLI's exit status 2, as
  # for a NaN loss before.
  assert isinstance(error.value, CnnjaxError)
  assert getattr(error.value, "exit_code", 2) == 2
  # The diverged state is never saved.
  assert Run(str(tmp_path)).steps() == ([kept] if kept else [])
  assert not os.path.exists(tmp_path / "claim.json")


def test_a_loss_that_explodes_warns_once_and_result_json_says_so(tmp_path, capsys):
  # 1e7: a learning rate of 1e5 from step 20; the loss climbs to ~1e20 and
  # falls back, every value finite: a warning, not a stop.
  config = tiny_mnist1d_config(**BLOW_UP, **{"schedule.gamma": 1e7})
  result = loop.train_and_evaluate(config, str(tmp_path))
  warnings = [l for l in capsys.readouterr().err.splitlines()
              if l.startswith("cnnjax: warning:")]
  assert len(warnings) == 1, warnings
  assert re.match(r"cnnjax: warning: the mean train loss is \S+ at step 30, more "
                  r"than 100 times the loss of the first step \(2\.\d+\); ",
                  warnings[0]), warnings[0]
  warning = result["divergence_warning"]
  assert warning["step"] == 30 and warning["loss_factor"] == 100
  assert warning["train_loss"] > 100 * warning["first_loss"]
  # A rerun of the finished run (a resume that trains nothing) keeps it.
  again = loop.train_and_evaluate(config, str(tmp_path))
  assert again["divergence_warning"] == warning
  assert "cnnjax: warning:" not in capsys.readouterr().err  # Once.
  # Without the guard's stop, the non-finite gradient norm of 1e8 passes too
  # (as before), and the warning still comes.
  off = tiny_mnist1d_config(**BLOW_UP, **{"schedule.gamma": 1e8,
                                          "divergence.stop_on_nonfinite": False,
                                          "divergence.loss_factor": 0.0})
  assert loop.train_and_evaluate(off, str(tmp_path / "off"))["divergence_warning"] is None


@pytest.mark.parametrize("key, value, message", [
    ("divergence.loss_factor", 1.0, "must be above 1 \\(or 0 to turn the warning off\\)"),
    ("divergence.loss_factor", -5.0, "must be above 1"),
    ("divergence.stop_on_nonfinite", 1, "must be true or false"),
])
def test_the_divergence_keys_are_validated(key, value, message):
  config = tiny_mnist1d_config()
  with config.unlocked():
    config_lib.set_value(config, key, value)
  with pytest.raises(CnnjaxError, match=f"config.{key} {message}"):
    config_lib.validate(config)
  assert config_lib.is_resumable(key)  # A check, not training: may change on resume.


# ---- the metric log across a stop between two log steps


def _sigterm_after(monkeypatch, steps):
  """The next run in this process receives SIGTERM during its `steps`-th step."""
  original = loop.SeedGroup.__init__

  def init(self, setups):
    original(self, setups)
    train_fn, calls = self.train_fn, []

    def counting(*args):
      calls.append(1)
      if len(calls) == steps:
        os.kill(os.getpid(), signal.SIGTERM)
      return train_fn(*args)

    self.train_fn = counting

  monkeypatch.setattr(loop.SeedGroup, "__init__", init)


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_a_stop_between_log_steps_resumes_to_the_same_metric_log(
    tmp_path, monkeypatch, reference):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signals reach only the main thread")
  workdir = str(tmp_path / "w")
  # Twice in the window of steps 11..20 (logged at 20), neither a log nor a
  # periodic checkpoint step: a checkpoint at 13, then one at 17 that must
  # carry the sums of 11..13 it resumed with.
  for stopped_at, steps in ((13, 13), (17, 4)):
    _sigterm_after(monkeypatch, steps)
    with pytest.raises(loop.TrainingInterrupted,
                       match=f"stopped by signal 15 at step {stopped_at};"):
      loop.train_and_evaluate(tiny_mnist1d_config(), workdir)
    monkeypatch.undo()
    assert Run(workdir).steps()[-1] == stopped_at
  result = loop.train_and_evaluate(tiny_mnist1d_config(), workdir)
  full_dir, full = reference
  assert result["final"] == full["final"]
  assert _comparable_log(workdir) == _comparable_log(full_dir)


# ---- a full disk


def test_a_full_disk_in_an_atomic_write_is_one_sentence_and_keeps_the_file(
    tmp_path, monkeypatch):
  path = str(tmp_path / "result.json")
  files.write_json(path, {"a": 1})

  def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", no_space)
  with pytest.raises(files.DiskFull) as error:
    files.write_json(path, {"a": 2})
  assert re.fullmatch(rf"the disk is full: {path} could not be written \(.+ free "
                      r"there\); free some space and run the same command again",
                      str(error.value))
  assert error.value.exit_code == files.DISK_FULL_EXIT_CODE == 75
  assert json.load(open(path)) == {"a": 1}
  assert os.listdir(tmp_path) == ["result.json"]


@pytest.mark.slow  # Three runs in this process (~10 s).
def test_a_full_disk_while_checkpointing_stops_in_one_sentence_and_resumes(
    tmp_path, monkeypatch, reference, capsys):
  """Orbax's JSON writer (epath) raises ENOSPC for the checkpoint at step 40,
  in its writer thread, as a full disk would; then space is 'freed'."""
  from etils import epath

  workdir = str(tmp_path / "w")
  path_type = type(epath.Path(workdir))
  original = path_type.write_text
  full = [True]

  def write_text(self, *args, **kwargs):
    if full[0] and f"{os.sep}40.orbax-checkpoint-tmp" in os.fspath(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(path_type, "write_text", write_text)
  with pytest.raises(files.DiskFull) as error:
    loop.train_and_evaluate(tiny_mnist1d_config(), workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  assert re.fullmatch(
      rf"the disk is full: checkpoint 40 could not be written to {checkpoints} "
      r"\(a checkpoint takes about [\d.]+ KiB, .+ are free there now\); the last "
      r"good checkpoint \(step 20\) is kept; free some space and run the same "
      r"command again to resume", str(error.value)), str(error.value)
  assert error.value.exit_code == 75
  assert "Traceback" not in capsys.readouterr().err  # Orbax's records dropped.
  assert sorted(os.listdir(checkpoints)) == ["20"]  # The unfinished write went.
  assert not os.path.exists(os.path.join(workdir, "result.json"))

  full[0] = False  # Space freed: the same command resumes and finishes.
  result = loop.train_and_evaluate(tiny_mnist1d_config(), workdir)
  ref_dir, ref = reference
  assert result["final"] == ref["final"]
  assert _comparable_log(workdir) == _comparable_log(ref_dir)


def _can_mount_tmpfs():
  try:
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, timeout=30).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


@pytest.mark.slow  # Two CLI runs in a user namespace (~15 s).
def test_a_real_full_disk_ends_in_one_line_and_resumes_once_space_is_freed(
    tmp_path, cli_env, reference):
  """A 250 KiB tmpfs (in a user namespace, where the kernel allows one)
  holds the run's first checkpoint (~150 KiB) but not its second."""
  if not _can_mount_tmpfs():
    pytest.skip("no tmpfs without root here (unshare -rm is not allowed)")
  mount = str(tmp_path / "disk")
  os.makedirs(mount)
  flags = " ".join(["--config.dataset.num_samples=1000", "--config.batch_size=50",
                    "--config.num_steps=60", "--config.log_every=10",
                    "--config.eval_every=20", "--config.checkpoint_every=20",
                    "--config.progress_bar=false"])
  train = (f"{sys.executable} -m cnnjax.cli train --config "
           f"{os.path.join(EXPERIMENTS, 'mnist1d', 'cnn.py')} --workdir "
           f"{mount}/w {flags}")
  script = (f"mount -t tmpfs -o size=250k tmpfs {mount} && "
            f"{train} 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1; "
            f"mount -o remount,size=8m {mount} && "
            f"{train} 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2; "
            f"cp {mount}/w/result.json {mount}/w/metrics.jsonl {tmp_path}/")
  subprocess.run(["unshare", "-rm", "sh", "-c", script], env=cli_env, cwd=REPO,
                 timeout=TIMEOUT_S, stdout=subprocess.DEVNULL)
  read = lambda name: open(tmp_path / name).read()  # noqa: E731
  assert read("rc1").strip() == "75", read("err1")
  assert re.fullmatch(r"cnnjax: error: the disk is full: checkpoint 40 could not "
                      r"be written to .+; the last good checkpoint \(step 20\) is "
                      r"kept; free some space and run the same command again to "
                      r"resume\n", read("err1")), read("err1")
  assert read("rc2").strip() == "0", read("err2")
  # The same run as 60 uninterrupted steps: its first 40 are the reference's.
  resumed = json.loads(read("result.json"))
  assert resumed["num_steps"] == 60
  log = [{k: v for k, v in json.loads(l).items() if k not in WALL_CLOCK}
         for l in read("metrics.jsonl").splitlines()]
  assert [e for e in log if e["step"] <= 40] == _comparable_log(reference[0])


# ---- mistakes that passed silently


def test_a_best_metric_that_no_evaluation_reports_is_refused_before_training(tmp_path):
  with pytest.raises(CnnjaxError) as error:
    loop.train_and_evaluate(tiny_mnist1d_config(best_metric="test/acc"), str(tmp_path))
  assert str(error.value) == (
      "config.best_metric 'test/acc' is not a metric that this run's evaluations "
      "report (test/accuracy, test/loss, test/top5_accuracy); set it to one of "
      "them, or to '' to keep no best checkpoint")
  assert not os.path.exists(tmp_path / "config.json")
  assert not Run(str(tmp_path)).steps()


def test_best_of_a_run_that_keeps_no_best_checkpoint_is_refused(tmp_path, reference):
  from cnnjax.viz import load_trained

  workdir = str(tmp_path / "w")
  shutil.copytree(reference[0], workdir)
  stored = json.load(open(os.path.join(workdir, "config.json")))
  files.write_json(os.path.join(workdir, "config.json"), dict(stored, best_metric=""))
  for use_best in (lambda: loop.evaluate_workdir(workdir, which="best"),
                   lambda: load_trained(workdir, which="best")):
    with pytest.raises(CnnjaxError) as error:
      use_best()
    assert str(error.value) == (
        f"the run in '{workdir}' keeps no best checkpoint (it trained with an empty "
        "config.best_metric); use the latest, or train with "
        "--config.best_metric=test/accuracy (any evaluated metric) to keep one")
  # Nor does the checkpointer call the latest step the best.
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  assert checkpointer.best_step() is None
  checkpointer.close()


def test_a_rerun_with_fewer_steps_is_refused_and_changes_nothing(tmp_path, reference):
  workdir = str(tmp_path / "w")
  shutil.copytree(reference[0], workdir)
  before = _snapshot(workdir)
  with pytest.raises(CnnjaxError) as error:
    loop.train_and_evaluate(tiny_mnist1d_config(num_steps=20), workdir)
  assert str(error.value) == (
      f"workdir '{workdir}' holds a run trained for 40 steps, more than the 20 "
      "asked for; use another --workdir, or ask for at least as many steps")
  assert _snapshot(workdir) == before  # config.json and result.json included.


@pytest.mark.parametrize("where, message", [
    ("file", "workdir '{w}' is a file, not a directory"),
    ("file/run", "workdir '{w}' cannot be created: '{t}/file' is a file, not a "
                 "directory"),
    ("file/deeper/run", "workdir '{w}' cannot be created: '{t}/file' is a file, "
                        "not a directory"),
    ("/proc/cnnjax-no-such-process/run",
     "workdir '{w}' cannot be created (No such file or directory)"),
])
def test_a_workdir_that_cannot_be_one_is_one_sentence(tmp_path, where, message):
  if where.startswith("/proc") and not os.path.isdir("/proc/self"):
    pytest.skip("needs Linux's /proc")
  (tmp_path / "file").write_text("not a directory")
  workdir = where if where.startswith("/") else str(tmp_path / where)
  with pytest.raises(CnnjaxError) as error:
    loop.train_and_evaluate(tiny_mnist1d_config(), workdir)
  assert str(error.value) == message.format(w=workdir, t=tmp_path)


# ---- the user's side of the claim, and a signal at start-up


def _train_command(workdir, *flags):
  return CLI + ["train", "--config", os.path.join(EXPERIMENTS, "mnist1d", "cnn.py"),
                "--workdir", str(workdir), "--config.dataset.num_samples=1000",
                "--config.batch_size=50", "--config.progress_bar=false", *flags]


def _train_lines(workdir):
  return [e for e in Run(str(workdir)).metrics() if "train/loss" in e]


@pytest.mark.slow  # Two real training processes (about 11 s).
def test_a_second_trainer_in_the_same_workdir_is_refused_and_changes_nothing(
    tmp_path, cli_env):
  workdir = tmp_path / "w"
  # Long enough (a second or two) to be caught training at its first log.
  flags = ["--config.num_steps=600", "--config.log_every=10",
           "--config.eval_every=200", "--config.checkpoint_every=200"]
  first = subprocess.Popen(_train_command(workdir, *flags), env=cli_env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + TIMEOUT_S
    while not _train_lines(workdir):  # It trains.
      assert first.poll() is None, first.stderr.read()
      assert time.monotonic() < deadline, "the first run never logged"
      time.sleep(0.001)
    first.send_signal(signal.SIGSTOP)  # Held mid-run: the comparison is exact.
    before = _snapshot(workdir)
    second = subprocess.run(_train_command(workdir, *flags), env=cli_env, cwd=REPO,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert _snapshot(workdir) == before
  finally:
    first.send_signal(signal.SIGCONT)
  assert second.returncode == 2
  lines = second.stderr.splitlines()
  assert len(lines) == 1, second.stderr
  host = json.loads(before["claim.json"])["host"]
  assert re.fullmatch(
      rf"cnnjax: error: workdir '{workdir}' is in use by another cnnjax process "
      rf"\(host {re.escape(host)}, pid {first.pid}, since [^)]+\); wait for it to "
      r"finish, stop it, or use another --workdir", lines[0]), lines[0]
  assert first.wait(timeout=TIMEOUT_S) == 0, first.stderr.read()
  # A clean run's log: each train log once (60 lines), each evaluation (3).
  events = Run(str(workdir)).metrics()
  assert [e["step"] for e in events if "train/loss" in e] == list(range(10, 601, 10))
  assert [e["step"] for e in events if "test/loss" in e] == [200, 400, 600]
  assert not os.path.exists(workdir / "claim.json")


def _catches_sigterm(pid):
  """Whether process `pid` has a handler for SIGTERM (Linux's SigCgt mask)."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("SigCgt:"):
          return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
  except OSError:
    pass
  return False


def test_sigterm_before_training_starts_says_so_and_exits_143(tmp_path, cli_env):
  if not os.path.isdir("/proc/self"):
    pytest.skip("needs Linux's /proc to see when the handler is in place")
  workdir = tmp_path / "w"
  process = subprocess.Popen(_train_command(workdir, "--config.num_steps=40"),
                             env=cli_env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + TIMEOUT_S
  # The CLI takes SIGTERM over first thing; JAX is still importing then.
  while not _catches_sigterm(process.pid) and process.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.001)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=TIMEOUT_S)
  assert process.returncode == 128 + signal.SIGTERM
  assert "Traceback" not in stderr
  lines = stderr.splitlines()
  assert len(lines) == 1, stderr
  # Landing in training instead (a slow import elsewhere) is the other answer.
  assert lines[0] in (
      "cnnjax: stopped by signal 15 before training started; nothing to save; "
      "run the same command again",
  ) or re.fullmatch(r"cnnjax: error: stopped by signal 15 at step \d+; .*", lines[0])
  assert not os.path.exists(workdir / "claim.json")  # Released on the way out.
