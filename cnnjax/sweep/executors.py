"""Where a sweep's trials train: one interface, several engines.

    sweep.run(config, grid, seeds, workdir=..., executor=sweep.LocalExecutor(4))

- `SerialExecutor` (the default): one trial after another in this process.
- `LocalExecutor(workers=N)`: N worker processes on this machine, each with
  its own devices: one GPU each where there are GPUs (several workers share
  a GPU only when asked for more workers than GPUs), otherwise an equal share
  of the CPU cores, pinned with `sched_setaffinity` and with the thread pools
  of XLA, OpenMP and TensorFlow sized to them so that N workers do not
  oversubscribe the machine.
- `RayExecutor` and `SlurmExecutor` (cnnjax/sweep/remote.py): a Ray task or
  a SLURM job (through submitit) per trial.

Every executor calls `trials.run_trial`, so a run's directory and files are
the same whoever trained it. `run(trials, on_done)` calls `on_done(trial,
outcomes)` in the calling process as trials finish, in any order.

Stopping: SIGINT or SIGTERM to the sweep makes the workers checkpoint and
stop, and the sweep raises TrainingInterrupted; a worker whose sweep
process disappears (kill -9) notices within a second, checkpoints and stops
itself, so a rerun resumes from its checkpoint instead of racing a stray
process (the run's claim makes the rerun wait for it).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing import connection
from typing import Any, Callable, Mapping, Sequence

from cnnjax.errors import CnnjaxError
from cnnjax.sweep.trials import Outcome, Trial, run_trial

OnDone = Callable[[Trial, list[Outcome]], Any]

# The environment variable that gives a local worker its end of the socket.
FD_ENV = "CNNJAX_SWEEP_FD"
CPUS_ENV = "CNNJAX_SWEEP_CPUS"  # And the cores it may use.
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS")


class Executor:
  """Runs trials; subclasses say how. `name` appears in progress lines."""
  name = "executor"

  def describe(self) -> str:
    return self.name

  def check(self) -> None:
    """Raises CnnjaxError, before anything trains, if this executor cannot
    run here (its engine is not installed, its scheduler is missing)."""

  def run(self, trials: Sequence[Trial], on_done: OnDone,
          say: Callable[[str], Any], workdir: str = "") -> None:
    """Trains `trials`, calling `on_done(trial, outcomes)` as each ends.

    `workdir` is the sweep's directory, for the executor's logs.
    """
    raise NotImplementedError


class SerialExecutor(Executor):
  """One trial after another, in this process (no start-up cost)."""
  name = "serial"

  def run(self, trials, on_done, say, workdir=""):
    del workdir
    for trial in trials:
      on_done(trial, run_trial(trial, say))


# --------------------------------------------------------------------------
# Local worker processes


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
  """The GPU ids this machine offers, without starting JAX (which would take
  them): CUDA_VISIBLE_DEVICES if set, else the /dev/nvidiaN device files."""
  environ = os.environ if environ is None else environ
  given = environ.get("CUDA_VISIBLE_DEVICES")
  if given is not None:
    return [g for g in given.split(",") if g.strip() and g.strip() != "-1"]
  try:
    names = os.listdir("/dev")
  except OSError:
    return []
  return sorted((n[len("nvidia"):] for n in names
                 if n.startswith("nvidia") and n[len("nvidia"):].isdigit()), key=int)


def worker_layout(workers: int, cpus: Sequence[int], gpus: Sequence[str]
                  ) -> list[dict[str, Any]]:
  """Per worker: its CPU cores and its environment variables.

  With GPUs, worker k sees GPU k mod G (and, when workers share a GPU, a
  share of its memory, allocated on demand); every worker may use every
  core, since the GPU does the work. Without GPUs, the cores are dealt out
  in contiguous blocks as evenly as they go (more workers than cores share
  one core each), and each worker's thread pools are sized to its block.
  """
  if workers < 1:
    raise CnnjaxError(f"--workers must be positive, got {workers}")
  layout = []
  for k in range(workers):
    env: dict[str, str] = {}
    if gpus:
      sharing = -(-workers // len(gpus))  # Workers per GPU, rounded up.
      env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
      if sharing > 1:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.3f}"
      mine = list(cpus)
    else:
      env["CUDA_VISIBLE_DEVICES"] = ""  # A CPU sweep never touches a GPU.
      if workers <= len(cpus):
        start, stop = (k * len(cpus)) // workers, ((k + 1) * len(cpus)) // workers
        mine = list(cpus[start:stop])
      else:
        mine = [cpus[k % len(cpus)]]
      for name in _THREAD_ENV:
        env[name] = str(len(mine))
      env["TF_NUM_INTEROP_THREADS"] = "1"
    layout.append({"cpus": mine, "env": env})
  return layout


class LocalExecutor(Executor):
  """N worker processes on this machine, each with its own devices.

  Args:
    workers: how many trials train at once.
    log_dir: where each worker's output goes (`worker_<k>.log`; default:
      the sweep's `logs/` directory).
  """
  name = "local"

  def __init__(self, workers: int = 2, *, log_dir: str | None = None):
    if workers < 1:
      raise CnnjaxError(f"--workers must be positive, got {workers}")
    self.workers = workers
    self.log_dir = log_dir

  def describe(self) -> str:
    return f"local, {self.workers} worker{'s' if self.workers > 1 else ''}"

  def run(self, trials, on_done, say, workdir=""):
    if not trials:
      return
    cpus = sorted(os.sched_getaffinity(0))
    gpus = visible_gpus()
    count = min(self.workers, len(trials))
    layout = worker_layout(count, cpus, gpus)
    log_dir = self.log_dir or (os.path.join(workdir, "logs") if workdir
                               else tempfile.mkdtemp(prefix="cnnjax-sweep-logs-"))
    os.makedirs(log_dir, exist_ok=True)
    pool = _Pool(layout, log_dir)
    with _sigterm_as_interrupt():
      try:
        pool.run(list(trials), on_done, say)
      finally:
        pool.stop()


@contextlib.contextmanager
def _sigterm_as_interrupt():
  """SIGTERM to the sweep stops it as Ctrl-C does (the workers save their
  checkpoints), instead of killing it without a word."""
  def handle(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  try:
    previous = signal.signal(signal.SIGTERM, handle)
  except ValueError:  # Not the main thread.
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


class _Pool:
  """The worker processes of one `LocalExecutor.run`, each joined to the
  sweep by a private socket pair (so no address, no key, and a worker that
  dies reads as end-of-file)."""

  def __init__(self, layout, log_dir):
    self.layout, self.log_dir = layout, log_dir
    self.procs: list[subprocess.Popen] = []
    self.conns: list[connection.Connection] = []

  def log(self, k: int) -> str:
    return os.path.join(self.log_dir, f"worker_{k}.log")

  def _start(self, k: int) -> None:
    spec = self.layout[k]
    mine, theirs = socket.socketpair()
    env = dict(os.environ)
    env.update(spec["env"])
    env[FD_ENV] = str(theirs.fileno())
    # The worker pins itself before JAX starts, so that XLA sizes its thread
    # pools to its cores (a preexec_fn would fork a multithreaded process).
    env[CPUS_ENV] = ",".join(map(str, spec["cpus"]))
    log = open(self.log(k), "ab")
    try:
      proc = subprocess.Popen(
          [sys.executable, "-m", "cnnjax.sweep.worker"], env=env,
          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
          pass_fds=(theirs.fileno(),))
    finally:
      log.close()
      theirs.close()
    self.procs.append(proc)
    self.conns.append(connection.Connection(mine.detach()))

  def run(self, trials: list[Trial], on_done: OnDone, say) -> None:
    for k in range(len(self.layout)):
      self._start(k)
    queue = list(trials)
    busy: dict[int, Trial] = {}  # Worker -> its trial.
    interrupted = None
    for k, conn in enumerate(self.conns):
      if queue:
        busy[k] = queue.pop(0)
        conn.send_bytes(pickle.dumps(busy[k]))
    while busy:
      ready = connection.wait([self.conns[k] for k in busy], timeout=1.0)
      for conn in ready:
        k = self.conns.index(conn)
        trial = busy.pop(k)
        try:
          kind, payload = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
          code = self.procs[k].wait()
          kind, payload = "error", (f"its worker process died (exit code {code}); "
                                    f"see {self.log(k)}")
        if kind == "outcomes":
          on_done(trial, payload)
        elif kind == "interrupted":
          if interrupted is None:  # Stop the others too, at their next step.
            for other in busy:
              self.procs[other].send_signal(signal.SIGTERM)
          interrupted = interrupted or payload
        else:
          on_done(trial, [{"error": payload}] * len(trial.configs))
          if self.procs[k].poll() is not None:
            continue  # That worker is gone; the others go on.
        if interrupted is None and queue and self.procs[k].poll() is None:
          busy[k] = queue.pop(0)
          conn.send_bytes(pickle.dumps(busy[k]))
      if interrupted is None and queue and not busy:
        raise CnnjaxError("every sweep worker died; see the logs in " + self.log_dir)
    if interrupted is not None:
      from cnnjax.train.loop import TrainingInterrupted

      message, signum = interrupted
      raise TrainingInterrupted(message, signum)

  def stop(self) -> None:
    """Tells idle workers to leave; stops busy ones with SIGTERM (they save a
    checkpoint first) and waits for them."""
    for conn in self.conns:
      try:
        conn.send_bytes(pickle.dumps(None))
      except OSError:
        pass
    deadline = time.monotonic() + 5.0
    for proc in self.procs:
      try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
    for proc in self.procs:
      try:
        proc.wait(timeout=300.0)
      except subprocess.TimeoutExpired:
        proc.kill()
    for conn in self.conns:
      conn.close()
