"""Sweep executors on a cluster: Ray tasks and SLURM jobs (through submitit).

Both engines are optional extras: `pip install 'cnnjax[ray]'` or
`'cnnjax[slurm]'`. Each trial becomes one task or job that calls
`trials.run_trial` on a machine that sees the sweep's directory (a shared
file system on a cluster), so the runs' directories and files are those of
a local sweep, and a rerun of the sweep finds what the cluster finished.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from cnnjax.errors import CnnjaxError
from cnnjax.sweep.executors import Executor
from cnnjax.sweep.trials import Outcome, Trial, run_trial


def _require(module: str, extra: str):
  # submitit configures logging when imported (logging.config.dictConfig,
  # which closes every handler already installed, the user's included)
  # unless told not to; the sweep reports its jobs itself.
  quiet = module == "submitit" and "SUBMITIT_LOG_LEVEL" not in os.environ
  if quiet:
    os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
  try:
    return __import__(module)
  except ImportError:
    raise CnnjaxError(f"the {extra} executor needs {module}, which is not installed: "
                      f"pip install 'cnnjax[{extra}]'") from None
  finally:
    if quiet:
      del os.environ["SUBMITIT_LOG_LEVEL"]


def _failed(trial: Trial, reason: str) -> list[Outcome]:
  reason = reason.strip().splitlines()[-1] if reason.strip() else "unknown failure"
  return [{"error": reason}] * len(trial.configs)


class RayExecutor(Executor):
  """Each trial a Ray task with its resource request.

  Args:
    address: a running cluster ('auto', 'ray://head:10001', 'host:6379');
      None starts a local Ray for the sweep and stops it afterwards.
    cpus_per_trial: the task's `num_cpus` (Ray also sets OMP_NUM_THREADS to it).
    gpus_per_trial: the task's `num_gpus` (fractions share a GPU).
  """
  name = "ray"

  def __init__(self, address: str | None = None, *, cpus_per_trial: float = 1,
               gpus_per_trial: float = 0):
    self.address = address
    self.cpus_per_trial = cpus_per_trial
    self.gpus_per_trial = gpus_per_trial

  def check(self) -> None:
    _require("ray", "ray")

  def describe(self) -> str:
    where = self.address or "a local Ray"
    return (f"ray on {where}, {self.cpus_per_trial:g} CPU"
            + (f" and {self.gpus_per_trial:g} GPU" if self.gpus_per_trial else "")
            + " per trial")

  def run(self, trials, on_done, say, workdir=""):
    del workdir
    if not trials:
      return
    ray = _require("ray", "ray")
    started_here = not ray.is_initialized()
    if started_here:
      kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                "configure_logging": False}
      if self.address:
        kwargs["address"] = self.address
      try:
        ray.init(**kwargs)
      except (ConnectionError, RuntimeError, ValueError) as e:
        raise CnnjaxError(f"Ray did not start on {self.address or 'this machine'}: "
                          f"{str(e).splitlines()[0]}") from e
    task = ray.remote(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial,
                      max_retries=0)(run_trial)
    pending = {task.remote(trial): trial for trial in trials}
    try:
      while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        trial = pending.pop(done[0])
        try:
          outcomes = ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - a task's failure is its trials'.
          outcomes = _failed(trial, f"its Ray task failed: {_ray_reason(e)}")
        on_done(trial, outcomes)
    except BaseException:
      for ref in pending:
        ray.cancel(ref)  # Interrupts the task; its run resumes from a checkpoint.
      raise
    finally:
      if started_here:
        ray.shutdown()


def _ray_reason(error: BaseException) -> str:
  cause = getattr(error, "cause", None)
  if cause is not None:
    return f"{type(cause).__name__}: {cause}".splitlines()[0]
  return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


class _TrialJob:
  """A trial as a submitit callable. Having `checkpoint` makes submitit
  requeue the job when SLURM preempts it or its time runs out; the requeued
  job resumes the trial's runs from their latest checkpoints."""

  def __call__(self, trial: Trial) -> list[Outcome]:
    return run_trial(trial)

  def checkpoint(self, trial: Trial):
    import submitit

    return submitit.helpers.DelayedSubmission(_TrialJob(), trial)


class SlurmExecutor(Executor):
  """Each trial a SLURM job (one job array per sweep) through submitit.

  Args:
    folder: where submitit keeps the jobs' pickles and logs (default: the
      sweep's `slurm/` directory).
    partition, constraint: `--partition`, `--constraint`.
    time_min: each job's time limit in minutes.
    gpus_per_trial, cpus_per_trial, mem_gb: each job's resources.
    array_parallelism: how many of the array's jobs run at once.
    cluster: 'slurm' (the default; refused in one sentence where `sbatch`
      is missing), 'local' (the jobs as processes on this machine, through
      submitit: a dry run, and what the tests use) or 'debug' (in this
      process).
    poll_s: how often the sweep looks at its jobs.
  """
  name = "slurm"

  def __init__(self, folder: str | None = None, *, partition: str | None = None,
               time_min: int = 60, gpus_per_trial: int = 0, cpus_per_trial: int = 1,
               mem_gb: float | None = None, constraint: str | None = None,
               array_parallelism: int = 256, cluster: str | None = "slurm",
               poll_s: float = 1.0):
    self.folder = folder
    self.partition, self.constraint = partition, constraint
    self.time_min, self.mem_gb = time_min, mem_gb
    self.gpus_per_trial, self.cpus_per_trial = gpus_per_trial, cpus_per_trial
    self.array_parallelism = array_parallelism
    self.cluster, self.poll_s = cluster or "slurm", poll_s

  def describe(self) -> str:
    return (f"slurm ({self.cluster}), {self.gpus_per_trial} GPU and "
            f"{self.cpus_per_trial} CPU per trial, {self.time_min} min")

  def check(self) -> None:
    _require("submitit", "slurm")
    if self.cluster == "slurm" and shutil.which("sbatch") is None:
      raise CnnjaxError("--executor slurm needs SLURM's sbatch, which is not on "
                        "this machine's PATH; --slurm-cluster local runs the jobs "
                        "here through submitit instead")

  def parameters(self) -> dict[str, Any]:
    """submitit's parameters (the slurm_ ones are ignored off SLURM)."""
    params: dict[str, Any] = {"timeout_min": self.time_min,
                              "gpus_per_node": self.gpus_per_trial,
                              "cpus_per_task": self.cpus_per_trial,
                              "tasks_per_node": 1, "nodes": 1,
                              "name": "cnnjax-sweep",
                              "slurm_array_parallelism": self.array_parallelism}
    if self.mem_gb:
      params["mem_gb"] = self.mem_gb
    if self.partition:
      params["slurm_partition"] = self.partition
    if self.constraint:
      params["slurm_constraint"] = self.constraint
    return params

  def run(self, trials, on_done, say, workdir=""):
    if not trials:
      return
    self.check()
    submitit = _require("submitit", "slurm")
    folder = os.path.join(self.folder or os.path.join(workdir, "slurm"), "%j")
    try:
      executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
      executor.update_parameters(**self.parameters())
      jobs = executor.map_array(_TrialJob(), list(trials))
    except (RuntimeError, ValueError, OSError) as e:
      raise CnnjaxError(f"submitit could not submit the sweep's jobs: "
                        f"{str(e).strip().splitlines()[0]}") from e
    say(f"submitted {len(jobs)} job(s) ({jobs[0].job_id.split('_')[0] if jobs else '-'}); "
        f"logs in {os.path.dirname(folder)}")
    pending = dict(zip(jobs, trials))
    try:
      while pending:
        finished = [job for job in pending if job.done()]
        if not finished:
          time.sleep(self.poll_s)
          continue
        for job in finished:
          trial = pending.pop(job)
          try:
            outcomes = job.result()
          except Exception as e:  # noqa: BLE001 - a job's failure is its trials'.
            outcomes = _failed(trial, f"its job {job.job_id} failed: {e}")
          on_done(trial, outcomes)
    except BaseException:
      for job in pending:
        try:
          job.cancel(check=False)
        except Exception:  # noqa: BLE001 - cancelling is best effort.
          pass
      raise
