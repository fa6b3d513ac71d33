"""Faults a long run meets: kill -9, SIGTERM/SIGINT, damaged checkpoints.

The CLI tests run `cnnjax train` in subprocesses and check that the run, once
finished by the same command, ends bit-identically to an uninterrupted one.
Two finished runs are shared by the module and start in the background with
the first test (the tests have two cores to share): the uninterrupted
reference, and the same run stopped after its second checkpoint.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import time

import jax.numpy as jnp
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.train import loop, setup
from cnnjax.runs.checkpoints import Checkpointer
from conftest import CLI, EXPERIMENTS, REPO, tiny_mnist1d_config

# Orbax leaves coroutines of a failed restore unawaited; Python reports them.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")

CHECKPOINT_EVERY = 250
LOG_EVERY = 50
NUM_STEPS = 1250
FLAGS = ["--config.dataset.num_samples=1000", "--config.batch_size=50",
         f"--config.log_every={LOG_EVERY}",
         f"--config.checkpoint_every={CHECKPOINT_EVERY}",
         f"--config.eval_every={CHECKPOINT_EVERY}", "--config.progress_bar=false",
         # Random shifts, mixup and a weight average: every random stream and
         # every part of the state must resume exactly too.
         "--config.augment.translate=1", "--config.mix.mixup_alpha=0.2",
         "--config.ema.decay=0.99"]
TMP_MARK = "orbax-checkpoint-tmp"  # In the names of Orbax's unfinished writes.
TIMEOUT_S = 300


class Run:
  """`cnnjax train` in a subprocess; its output goes to files in the workdir."""

  def __init__(self, workdir, env, num_steps=NUM_STEPS):
    self.workdir = str(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    count = len([n for n in os.listdir(self.workdir) if n.startswith("stderr")])
    self.stderr_path = os.path.join(self.workdir, f"stderr{count}.txt")
    self._out = open(os.path.join(self.workdir, f"stdout{count}.txt"), "w")
    self._err = open(self.stderr_path, "w")
    self.proc = subprocess.Popen(
        CLI + ["train", "--config", os.path.join(EXPERIMENTS, "mnist1d", "cnn.py"),
               "--workdir", self.workdir, f"--config.num_steps={num_steps}", *FLAGS],
        env=env, cwd=REPO, stdout=self._out, stderr=self._err)

  @property
  def checkpoints(self):
    return os.path.join(self.workdir, "checkpoints")

  def steps(self):
    """The finished checkpoints on disk."""
    try:
      return sorted(int(n) for n in os.listdir(self.checkpoints) if n.isdigit())
    except FileNotFoundError:
      return []

  def tmp_dirs(self):
    try:
      return [n for n in os.listdir(self.checkpoints) if TMP_MARK in n]
    except FileNotFoundError:
      return []

  def train_log_steps(self):
    """Steps of the train entries logged so far (read while it runs)."""
    steps = []
    try:
      with open(os.path.join(self.workdir, "metrics.jsonl")) as f:
        for line in f:
          try:
            event = json.loads(line)
          except json.JSONDecodeError:  # A line still being written.
            continue
          if "train/loss" in event:
            steps.append(event["step"])
    except FileNotFoundError:
      pass
    return steps

  def check_alive(self, what):
    if self.proc.poll() is not None:
      pytest.fail(f"the run ended (code {self.proc.returncode}) before {what}:\n"
                  + self.stderr())

  def wait_until(self, condition, what):
    """Polls `condition()` every millisecond while the run lives."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
      self.check_alive(what)
      if time.monotonic() > deadline:
        pytest.fail(f"timed out waiting for {what}")
      time.sleep(0.001)

  def finish(self):
    """Waits for the exit; returns the exit code."""
    try:
      return self.proc.wait(timeout=TIMEOUT_S)
    finally:
      self.stop()

  def stop(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self._out.close()
    self._err.close()

  def stderr(self):
    with open(self.stderr_path) as f:
      return f.read()

  def result(self):
    with open(os.path.join(self.workdir, "result.json")) as f:
      return json.load(f)


def _events(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _comparable(workdir):
  """metrics.jsonl without the wall-clock fields."""
  return [{k: v for k, v in e.items() if k not in ("time", "train/steps_per_s")}
          for e in _events(workdir)]


def _resumed_from(stderr):
  lines = [l for l in stderr.splitlines() if l.startswith("Resuming from")]
  return int(lines[0].split(" at step ")[1].split()[0]) if lines else 0


@pytest.fixture
def runs():
  """Starts the test's runs; kills whatever is left of them at the end."""
  started = []

  def start(*args, **kwargs):
    started.append(Run(*args, **kwargs))
    return started[-1]

  yield start
  for run in started:
    run.stop()


class FinishedRuns:
  """The module's shared runs, started in the background by the first test."""

  def __init__(self, root):
    self.root = root
    self._runs = {}

  def start(self, env):
    if not self._runs:
      self._runs["reference"] = Run(os.path.join(self.root, "reference"), env)
      self._runs["two_checkpoints"] = Run(os.path.join(self.root, "two"), env,
                                          num_steps=2 * CHECKPOINT_EVERY)
    return self

  def _get(self, name):
    run = self._runs[name]
    if run.proc.returncode is None:
      assert run.finish() == 0, run.stderr()
    return run

  def reference(self) -> Run:
    """The uninterrupted run of NUM_STEPS steps."""
    return self._get("reference")

  def two_checkpoints(self) -> str:
    """The workdir of the same run stopped after its second checkpoint."""
    run = self._get("two_checkpoints")
    assert run.steps() == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY]
    return run.workdir

  def stop(self):
    for run in self._runs.values():
      run.stop()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, compilation_cache):
  del compilation_cache  # Only ordering: the runs share its XLA cache.
  shared = FinishedRuns(str(tmp_path_factory.mktemp("finished")))
  yield shared
  shared.stop()


# About 50 s on 2 cores (a dozen CLI runs killed at random moments): -m slow.
@pytest.mark.slow
def test_kill_9_at_any_moment_then_the_same_command_ends_like_an_uninterrupted_run(
    tmp_path, runs, finished, cli_env):
  finished.start(cli_env)
  workdir = tmp_path / "w"
  kills = [  # (what to wait for, then how long to wait before the kill)
      ("write", 0.0),  # A checkpoint half-written in its temporary dir.
      ("finished", 0.0),  # The moment a new checkpoint is renamed into place.
      ("finished", random.Random(0).uniform(0.05, 0.3))]  # Some moment later.
  latest, left_behind = 0, []
  for moment, delay_s in kills:
    run = runs(workdir, cli_env)
    steps_before, tmp_before = set(run.steps()), set(run.tmp_dirs())
    if moment == "write":
      run.wait_until(lambda: set(run.tmp_dirs()) - tmp_before, "a checkpoint write")
    else:
      run.wait_until(lambda: set(run.steps()) - steps_before, "a new checkpoint")
    time.sleep(delay_s)
    run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    assert _resumed_from(run.stderr()) == latest
    latest = max(run.steps(), default=0)
    left_behind += [n for n in run.tmp_dirs() if n not in tmp_before]
  assert left_behind  # The kill mid-write left a temporary dir...

  final = runs(workdir, cli_env)
  assert final.finish() == 0, final.stderr()
  assert _resumed_from(final.stderr()) == latest  # ...never taken for a step,
  assert "cnnjax: warning" not in final.stderr()  # and nothing was damaged.
  full = finished.reference()
  assert final.result()["final"] == full.result()["final"]
  assert _comparable(final.workdir) == _comparable(full.workdir)


def _signal_moment(run, after):
  """Whether to signal now: a new train log, one or two past a checkpoint.

  The loop runs ahead of the device to the next host sync (the next train log)
  and stops there: one log later, or two if this poll came late, so never at a
  periodic checkpoint.
  """
  logged = max(run.train_log_steps(), default=0)
  return (run.steps() and logged > max(after, CHECKPOINT_EVERY) and
          logged % CHECKPOINT_EVERY in (LOG_EVERY, 2 * LOG_EVERY))


# About 30-45 s on 2 cores (three CLI runs); tests/train/test_train.py stops a
# run with SIGTERM in-process by default: -m slow.
@pytest.mark.slow
def test_sigterm_then_sigint_save_a_checkpoint_and_the_same_command_finishes_the_run(
    tmp_path, runs, finished, cli_env):
  finished.start(cli_env)
  workdir = tmp_path / "w"
  stopped = [0]
  for signum in (signal.SIGTERM, signal.SIGINT):
    run = runs(workdir, cli_env)
    run.wait_until(lambda: _signal_moment(run, stopped[-1]), "a train log")
    run.proc.send_signal(signum)
    assert run.finish() == 128 + signum
    stderr = run.stderr()
    assert _resumed_from(stderr) == stopped[-1]
    assert "Traceback" not in stderr
    messages = [l for l in stderr.splitlines() if l.startswith("cnnjax:")]
    assert len(messages) == 1, stderr
    assert messages[0].startswith(
        f"cnnjax: error: stopped by signal {int(signum)} at step ")
    assert messages[0].endswith("; run the same command again to resume")
    stopped.append(int(messages[0].split(" at step ")[1].split(";")[0]))
    assert stopped[-2] < stopped[-1] < NUM_STEPS
    assert stopped[-1] % CHECKPOINT_EVERY != 0  # Not a periodic checkpoint,
    assert run.steps()[-1] == stopped[-1]  # but one saved on the way out.

  final = runs(workdir, cli_env)
  assert final.finish() == 0, final.stderr()
  assert _resumed_from(final.stderr()) == stopped[-1]
  full = finished.reference()
  assert final.result()["final"] == full.result()["final"]
  # Each stop fell between two log steps; the checkpoints carried the
  # window's sums, so the log is the uninterrupted run's.
  assert _comparable(final.workdir) == _comparable(full.workdir)


def _damage(step_dir, how):
  """Overwrites every file with garbage, or deletes what a cut copy lacks.

  Returns the files left, relative to `step_dir`.
  """
  files = [os.path.join(root, name)
           for root, _, names in os.walk(step_dir) for name in names]
  for path in files:
    if how == "garbage":
      with open(path, "wb") as f:
        f.write(b"\x00not a checkpoint")
    elif os.sep + "d" + os.sep in path or os.sep + "meta" + os.sep in path:
      os.remove(path)  # The array chunks and the meta record never arrived.
  return sorted(os.path.relpath(p, step_dir) for p in files if os.path.exists(p))


def _files(directory):
  return sorted(os.path.relpath(os.path.join(root, name), directory)
                for root, _, names in os.walk(directory) for name in names)


@pytest.mark.slow  # Two CLI processes each (about 20 s); the slow tier runs them.
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_one_before_resumes(
    tmp_path, runs, finished, cli_env):
  shutil.copytree(finished.start(cli_env).two_checkpoints(), tmp_path / "w")
  damaged = 2 * CHECKPOINT_EVERY
  kept_files = _damage(tmp_path / "w" / "checkpoints" / str(damaged), "garbage")

  run = runs(tmp_path / "w", cli_env)
  assert run.finish() == 0, run.stderr()
  stderr = run.stderr()
  warnings = [l for l in stderr.splitlines() if l.startswith("cnnjax: warning:")]
  assert len(warnings) == 1, stderr
  assert warnings[0].startswith(f"cnnjax: warning: checkpoint {damaged} in "
                                f"{run.checkpoints} cannot be read (")
  assert warnings[0].endswith(
      f"); moved it to {run.checkpoints}.corrupt/{damaged} and resuming from "
      f"step {CHECKPOINT_EVERY}")
  assert _resumed_from(stderr) == CHECKPOINT_EVERY
  # The damaged copy is kept as it was, out of the way of the new checkpoints.
  assert _files(os.path.join(run.checkpoints + ".corrupt", str(damaged))) == kept_files
  assert run.steps()[-1] == NUM_STEPS
  full = finished.reference()
  assert run.result()["final"] == full.result()["final"]
  assert _comparable(run.workdir) == _comparable(full.workdir)


@pytest.fixture(scope="module")
def own_state():
  """The initial TrainState of the module's runs, built in this process."""
  from cnnjax import config as config_lib

  config = tiny_mnist1d_config(**{"ema.decay": 0.99})  # As FLAGS: an EMA.
  config_lib.validate(config)
  return setup.build(config).state


@pytest.mark.slow  # Needs the `finished` reference run (CLI processes, ~15 s).
def test_a_checkpoint_of_another_model_is_refused_and_nothing_moves(
    tmp_path, finished, cli_env, own_state):
  from cnnjax import config as config_lib

  checkpoints = str(tmp_path / "checkpoints")
  shutil.copytree(os.path.join(finished.start(cli_env).two_checkpoints(),
                               "checkpoints"), checkpoints)
  before = sorted(os.listdir(checkpoints))
  latest = 2 * CHECKPOINT_EVERY
  narrower = tiny_mnist1d_config(**{"model.features": (16, 16, 16),
                                    "ema.decay": 0.99})
  config_lib.validate(narrower)
  targets = [setup.build(narrower).state,  # Other shapes.
             own_state.replace(params={**own_state.params,  # Another tree.
                                       "extra": {"bias": jnp.zeros(3)}})]
  for target in targets:
    ckpt = Checkpointer(checkpoints)
    with pytest.raises(CnnjaxError) as error:
      ckpt.restore_latest(target)
    ckpt.close()
    assert str(error.value).startswith(
        f"checkpoint {latest} in '{checkpoints}' does not match this model and "
        "optimizer (")
    assert "\n" not in str(error.value)
  assert sorted(os.listdir(checkpoints)) == before
  assert not os.path.exists(checkpoints + ".corrupt")
  # The run's own model restores, with its step and record.
  ckpt = Checkpointer(checkpoints)
  step, state, meta = ckpt.restore_latest(own_state)
  ckpt.close()
  assert (step, int(state.step), meta["step"]) == (latest, latest, latest)


@pytest.mark.slow  # Needs the `finished` reference run (CLI processes, ~15 s).
def test_temporary_dirs_of_unfinished_writes_are_not_steps(
    tmp_path, finished, cli_env, own_state):
  checkpoints = tmp_path / "checkpoints"
  shutil.copytree(os.path.join(finished.start(cli_env).two_checkpoints(),
                               "checkpoints"), checkpoints)
  latest = 2 * CHECKPOINT_EVERY
  # What kills during writes leave: a complete-looking copy, and an empty dir
  # (with the timestamp suffix that other Orbax versions add).
  unfinished = [f"{3 * CHECKPOINT_EVERY}.{TMP_MARK}",
                f"{4 * CHECKPOINT_EVERY}.{TMP_MARK}-1700000000"]
  shutil.copytree(checkpoints / str(latest), checkpoints / unfinished[0])
  (checkpoints / unfinished[1]).mkdir()
  ckpt = Checkpointer(str(checkpoints))
  assert ckpt.latest_step() == latest
  step, _, _ = ckpt.restore_latest(own_state)
  ckpt.close()
  assert step == latest
  assert sorted(os.listdir(checkpoints)) == sorted(
      [str(CHECKPOINT_EVERY), str(latest)] + unfinished)


@pytest.mark.slow  # Two CLI processes each (about 20 s); the slow tier runs them.
def test_a_half_written_checkpoint_is_moved_aside_and_saving_goes_on(
    tmp_path, finished, cli_env, own_state, capsys):
  checkpoints = str(tmp_path / "checkpoints")
  shutil.copytree(os.path.join(finished.start(cli_env).two_checkpoints(),
                               "checkpoints"), checkpoints)
  damaged = 2 * CHECKPOINT_EVERY
  kept_files = _damage(os.path.join(checkpoints, str(damaged)), "half_written")
  ckpt = Checkpointer(checkpoints)
  assert ckpt.latest_step() == damaged
  capsys.readouterr()
  step, state, meta = ckpt.restore_latest(own_state)
  warnings = capsys.readouterr().err.splitlines()
  assert (step, int(state.step), meta["step"]) == (CHECKPOINT_EVERY,) * 3
  assert len(warnings) == 1 and warnings[0].endswith(
      f"moved it to {checkpoints}.corrupt/{damaged} and resuming from step "
      f"{CHECKPOINT_EVERY}")
  assert _files(os.path.join(checkpoints + ".corrupt", str(damaged))) == kept_files
  # The manager sees the steps left (and, without a best_metric, calls none
  # of them the best), and saves the moved step's number again.
  assert (ckpt.latest_step(), ckpt.best_step()) == (CHECKPOINT_EVERY, None)
  ckpt.save(damaged, state, {"step": damaged})
  ckpt.wait()
  assert ckpt.latest_step() == damaged
  ckpt.close()
  assert sorted(os.listdir(checkpoints)) == sorted([str(CHECKPOINT_EVERY),
                                                    str(damaged)])


def test_when_no_checkpoint_can_be_read_the_run_starts_over_and_keeps_it(
    tmp_path, capsys):
  loop.train_and_evaluate(tiny_mnist1d_config(num_steps=20), str(tmp_path))
  checkpoints = str(tmp_path / "checkpoints")
  _damage(os.path.join(checkpoints, "20"), "garbage")
  os.makedirs(os.path.join(checkpoints + ".corrupt", "20"))  # An earlier casualty.
  capsys.readouterr()
  loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path))
  stderr = capsys.readouterr().err
  warnings = [l for l in stderr.splitlines() if l.startswith("cnnjax: warning:")]
  assert len(warnings) == 1, stderr
  assert warnings[0].startswith(f"cnnjax: warning: checkpoint 20 in {checkpoints} "
                                "cannot be read (")
  assert warnings[0].endswith(f"moved it to {checkpoints}.corrupt/20.1 and "
                              "starting from scratch")
  assert "Resuming" not in stderr
  with open(os.path.join(checkpoints + ".corrupt", "20.1", "meta", "metadata"),
            "rb") as f:
    assert f.read() == b"\x00not a checkpoint"  # Moved, not rewritten.
  events = _events(str(tmp_path))
  assert [e["step"] for e in events if "train/loss" in e] == [10, 20, 30, 40]
  assert sorted(int(n) for n in os.listdir(checkpoints)) == [20, 40]
