"""The training driver, for one run or k seeds trained together: the only place
with side effects (files, logs, checkpoints, signals).

    train_and_evaluate(config, workdir)            # one run
    train_seeds_together(configs, workdirs)        # k seeds, one vmapped program

Both are the same driver. k = 1 is the plain run: any data, any number of
devices and processes. With k > 1 seeds of one setting (configs that differ
only in `seed`), the seeds' states are stacked on a leading axis and the pure
train step is `jax.vmap`ped over (state, step key, data-order key,
augmentation key): one call advances every seed by one step, on the same
resident training data, which keeps a device busy that one small model would
leave idle. Each seed still has its own run directory with the files a single
run writes, so `cnnjax train` can resume any of them alone, and a rerun of the
group resumes from the seeds' common latest step.

A run directory is claimed while it trains (runs/claim.py), its config is
checked against the one it started with, training resumes from the latest
readable checkpoint, metrics are logged every `log_every` steps (the only
host syncs), evaluation and checkpoints come every `eval_every` and
`checkpoint_every` steps, and SIGINT/SIGTERM save a checkpoint before
stopping. config.json is written only once the run is known to go on: a
rerun that is refused (fewer steps than it trained) leaves it as it was.

Divergence. The host sees every step's metrics where it fetches them anyway
(log steps, checkpoints), so it knows the first step whose loss, gradient
norm or weights (a flag the train step computes) stopped being finite; the
run stops there (`TrainingDiverged`, exit status 2) and a diverged state is
never checkpointed, so the last checkpoint is a good one. A logged mean loss
far above the first step's is a warning, once (`config.divergence`).

Logs across a stop. A checkpoint between two log steps stores the window's
metric sums so far ('window' in its meta record, with 'elapsed_s' and
'step'); the first log after the resume adds them first, so metrics.jsonl
of a stopped and resumed run is that of an uninterrupted one (up to the
wall-clock fields 'time' and 'train/steps_per_s').

A full disk ends the run in one sentence (runs/files.py `DiskFull`, exit
status 75) with the complete checkpoints kept; the same command resumes once
space is freed.

Preemption of a multi-process run. The processes must stop at the same step:
each train step holds collectives, so one process that stopped alone would
leave the others waiting. A signal only sets a flag (`_SignalFlag`); every
`parallel.preemption_check_every` steps (default: the log steps, where the
loop waits for the devices anyway) the processes all-gather their flags
(`parallel.max_over_processes`), and if any was signalled, all checkpoint
that step and raise `TrainingInterrupted`, the unsignalled ones saying that
another process was. A single process checks its flag after every step, with
no host sync. JAX's own `multihost_utils.reached_preemption_sync_point` was
not used: its notifier is a C++ SIGTERM handler that any Python handler
replaces (tried on CPU with Gloo: alone it agrees on a step; with our
handler installed it never fires), it does not see SIGINT nor say which
signal came, and it must be asked at every step.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from cnnjax import config as config_lib
from cnnjax import runtime
from cnnjax.ops import backend as conv_backend
from cnnjax.data import get_dataset
from cnnjax.errors import CnnjaxError
from cnnjax.parallel import initialize_distributed, is_primary, max_over_processes
from cnnjax.runs import Run
from cnnjax.train.evaluation import Evaluation, evaluate_run, save_artifacts
# LAST_VALUE_METRICS and train_means: part of this module's API before they
# moved to monitor.py.
from cnnjax.train.monitor import (LAST_VALUE_METRICS, SeedRecord,  # noqa: F401
                                  first_divergence, train_means)
from cnnjax.train.setup import Setup, build, seed_keys, train_function, train_inputs
from cnnjax.trees import stack, take


class TrainingInterrupted(CnnjaxError):
  """SIGINT or SIGTERM arrived; a checkpoint was saved before stopping."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


class TrainingDiverged(CnnjaxError):
  """The loss, the gradient norm or a weight stopped being finite; the last
  good checkpoint is kept. Exit status 2, as for any refused run."""


class GroupDiverged(TrainingDiverged):
  """A seed of a group trained together diverged: train the seeds one at a time."""


def can_train_together(configs: Sequence[ml_collections.ConfigDict]) -> str:
  """'' when the configs can share a vmapped step, else the reason why not."""
  if len(configs) < 2:
    return "a single seed"
  first = _without_seed(configs[0])
  if any(_without_seed(c) != first for c in configs[1:]):
    return "the configs differ in more than their seed"
  if jax.process_count() > 1:
    return "a multi-host run"
  return ""


def _without_seed(config) -> dict:
  d = config.to_dict()
  d.pop("seed")
  return d


class SeedGroup:
  """The compiled programs of k >= 1 seeds of one setting.

  `train_fn(state, data, rng) -> (state, metric sums)` advances every seed by
  one step (jitted once; the state is donated and comes back replicated);
  `rng` holds the seeds' step keys (`self.rng`). `evaluate_seeds(state)`
  gives each seed's metrics and artifacts, the weight average's too.
  """

  def __init__(self, setups: Setup | Sequence[Setup]):
    if isinstance(setups, Setup):
      setups = [setups]
    self.setups = list(setups)
    self.k = len(self.setups)
    first = self.setups[0]
    if self.k > 1 and not first.resident:
      raise CnnjaxError("these runs cannot be trained together: the training "
                        "data does not fit on the device")
    if self.k > 1 and first.parallel.num_devices != 1:
      raise CnnjaxError("these runs cannot be trained together on several "
                        "devices; set config.parallel.num_devices=1")
    keys = [seed_keys(s.config.seed) for s in self.setups]
    train = train_function(first)
    replicated = first.parallel.replicated
    if self.k == 1:
      data_key, augment_key = keys[0]["data"], keys[0]["augment"]
      self.rng = keys[0]["step"]
      step = lambda state, data, rng: train(state, data, rng, data_key, augment_key)  # noqa: E731
    else:
      data_keys = jnp.stack([k["data"] for k in keys])
      augment_keys = jnp.stack([k["augment"] for k in keys])
      self.rng = jnp.stack([k["step"] for k in keys])
      vmapped = jax.vmap(train, in_axes=(0, None, 0, 0, 0))
      step = lambda state, data, rng: vmapped(state, data, rng, data_keys, augment_keys)  # noqa: E731
    self.train_fn = jax.jit(step, donate_argnums=0,
                            out_shardings=(replicated, replicated))
    self.evaluation = Evaluation(
        dataset=first.dataset, parallel=first.parallel, eval_batch=first.eval_batch,
        evaluators=first.evaluators, eval_batch_size=first.config.eval_batch_size,
        resident=first.resident, host_crops=bool(first.host_crops), seeds=self.k)

  def initial_state(self):
    states = [s.state for s in self.setups]
    return states[0] if self.k == 1 else stack(states)

  def state_of(self, state, i: int):
    """Seed i's TrainState."""
    return state if self.k == 1 else take(state, i)

  def train_inputs(self, start_step: int):
    return train_inputs(self.setups[0], start_step)

  def evaluate_seeds(self, state) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """Per seed: (metrics '<split>/<metric>', with a weight average also
    '<split>_ema/<metric>'; artifacts by split)."""
    results = self.evaluation.evaluate(state.variables)
    if state.ema is not None:
      average = {k: v for k, v in state.ema.items() if v}
      for (metrics, _), (ema_metrics, _) in zip(results, self.evaluation.evaluate(
          average, "_ema")):
        metrics.update(ema_metrics)
    return results

  def evaluate(self, state) -> dict[str, float]:
    """The metrics of a single seed's state (k = 1)."""
    return self.evaluate_seeds(state)[0][0]


def _close_quietly(checkpointers, logs) -> None:
  """Finishes the writes under way and closes, while another error is raised
  (that one is the one to report)."""
  for c in checkpointers:
    for finish in (c.wait, c.close):
      try:
        finish()
      except Exception:  # E.g. the same full disk, already being reported.
        pass
  for log in logs:
    try:
      log.close()
    except Exception:
      pass


def device_description() -> dict[str, Any]:
  devices = jax.devices()
  return {"platform": devices[0].platform, "kind": devices[0].device_kind,
          "count": len(devices), "host": platform.node(),
          "cpu_count": os.cpu_count(), "conv_backend": conv_backend.active()}


def versions() -> dict[str, str]:
  import flax
  import jaxlib
  import optax
  import orbax.checkpoint

  import cnnjax
  return {"cnnjax": cnnjax.__version__, "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "flax": flax.__version__, "optax": optax.__version__,
          "orbax-checkpoint": orbax.checkpoint.__version__,
          "python": platform.python_version()}


class _SignalFlag:
  """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.signum = 0
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum:  # A second signal: stop now, without waiting for the step.
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, config_path: str = "") -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Returns the content of `<workdir>/result.json`.
  """
  return _Driver([config], [workdir], config_path=config_path).run()[0]


def train_seeds_together(configs: Sequence[ml_collections.ConfigDict],
                         workdirs: Sequence[str], *,
                         config_path: str = "") -> list[dict[str, Any]]:
  """Trains configs that differ only in `seed` as one vmapped program.

  Returns each seed's result (what `train_and_evaluate` returns). Raises
  `GroupDiverged` when a seed's loss stops being finite (its checkpoints so
  far are kept; train the seeds alone to get each one's own outcome).
  """
  reason = can_train_together(configs)
  if reason:
    raise CnnjaxError(f"these runs cannot be trained together: {reason}")
  return _Driver(list(configs), list(workdirs), config_path=config_path).run()


def evaluate_workdir(workdir: str, *, which: str = "latest") -> dict[str, Any]:
  """Evaluates the latest (or best) checkpoint of a finished or running run."""
  return evaluate_run(workdir, which=which)


class _Driver:
  """One training session of k >= 1 runs (see the module docstring)."""

  def __init__(self, configs, workdirs, *, config_path: str):
    self.configs = [config_lib.apply_smoke(c) for c in configs]
    for c in self.configs:
      config_lib.validate(c)
    self.config = self.configs[0]
    self.runs = [Run(w) for w in workdirs]
    self.config_path = config_path
    self.k = len(self.configs)
    self.stop: _SignalFlag | None = None  # Taken early in multi-host runs.

  def run(self) -> list[dict[str, Any]]:
    runtime.enable_compilation_cache(self.config.get("compilation_cache", "auto"))
    with contextlib.ExitStack() as claims:
      if self.config.parallel.distributed:  # Before anything starts JAX's backend.
        initialize_distributed()
        # jax.distributed's preemption notifier has just taken SIGTERM (and
        # would swallow it): take the signals back before the setup, so that
        # a signal while compiling stops the run at its first agreed step.
        self.stop = claims.enter_context(_SignalFlag())
      # Before any model is traced; a backend that cannot run is refused here.
      conv_backend.set_conv_backend(self.config.get("conv_backend", ""))
      if is_primary():  # Process 0 of a multi-host run writes the files.
        for run, config in zip(self.runs, self.configs):
          claims.enter_context(run.claim())
          run.check_config(config)  # config.json: once the run goes on.
      dataset = (get_dataset(self.config.dataset, smoke=self.config.smoke)
                 if self.k > 1 else None)
      self.group = SeedGroup([build(c, dataset=dataset) for c in self.configs])
      self._check_best_metric()
      return self._train()

  def _check_best_metric(self) -> None:
    """Refuses a best_metric that no evaluation of this run can report (the
    best checkpoint would silently never be kept)."""
    metric = self.config.best_metric
    if not metric:
      return
    known = self.group.evaluation.metric_names(
        ema=self.group.setups[0].state.ema is not None)
    if metric not in known:
      raise CnnjaxError(
          f"config.best_metric '{metric}' is not a metric that this run's "
          f"evaluations report ({', '.join(sorted(known))}); set it to one of "
          "them, or to '' to keep no best checkpoint")

  # ---- resuming

  def _restore(self, checkpointers) -> tuple[int, Any, float, list[dict]]:
    """(start step, state, wall time so far, each seed's checkpoint record)."""
    group = self.group
    if self.k == 1:
      # Damaged checkpoints are moved aside, with a warning, for the one before.
      restored = checkpointers[0].restore_latest(group.initial_state())
      if not restored:
        return 0, group.initial_state(), 0.0, [{}]
      step, state, meta = restored
      print(f"Resuming from the checkpoint at step {step} in {self.runs[0].workdir}",
            file=sys.stderr)
      return step, state, float(meta.get("elapsed_s", 0.0)), [meta]
    start = min(c.latest_step() or 0 for c in checkpointers)
    if not start:
      return 0, group.initial_state(), 0.0, [{}] * self.k
    states, metas = [], []
    for setup, checkpointer in zip(group.setups, checkpointers):
      state, meta = checkpointer.restore(start, setup.state)
      states.append(state)
      metas.append(meta)
    print(f"Resuming {self.k} seeds from step {start}", file=sys.stderr)
    elapsed = max(float(m.get("elapsed_s", 0.0)) for m in metas)
    return start, stack(states), elapsed, metas

  # ---- the loop

  def _train(self) -> list[dict[str, Any]]:
    config, group, k = self.config, self.group, self.k
    num_steps = group.setups[0].durations.num_steps
    checkpointers = [run.checkpointer(keep=config.keep_checkpoints,
                                      best_metric=config.best_metric,
                                      best_mode=config.best_mode)
                     for run in self.runs]
    logs = [run.metric_log(enabled=is_primary()) for run in self.runs]
    try:
      start_step, state, elapsed_before, metas = self._restore(checkpointers)
      if start_step > num_steps:  # Refused before config.json changes.
        raise CnnjaxError(
            f"workdir '{self.runs[0].workdir}' holds a run trained for {start_step} "
            f"steps, more than the {num_steps} asked for; use another --workdir, "
            "or ask for at least as many steps")
      if is_primary():
        for run, cfg in zip(self.runs, self.configs):
          run.write_config(cfg)
      for log in logs:
        log.truncate_after(start_step)
    except BaseException:
      _close_quietly(checkpointers, logs)
      raise
    inputs = group.train_inputs(start_step)
    records = [SeedRecord(m) for m in metas]
    guard = config.divergence

    from tqdm.auto import tqdm  # Only the loop needs it.
    t_start = time.perf_counter()
    evaluated: list[tuple[dict, dict]] = [({}, {}) for _ in range(k)]
    evaluated_at = -1
    pending: list[dict] = []  # Device-side metric sums since the last log.
    last_log_time, last_log_step = time.perf_counter(), start_step
    saved_step = start_step
    best_reported = not config.best_metric

    def elapsed():
      return elapsed_before + time.perf_counter() - t_start

    def check(per_seed: list[list[dict]], first_step: int):
      """Stops at the first diverged step of the rows (of steps first_step...)."""
      for i, (rows, record) in enumerate(zip(per_seed, records)):
        record.note_first_step(rows, first_step)
        found = first_divergence(rows, first_step, nonfinite=guard.stop_on_nonfinite)
        if found is None:
          continue
        step, what = found
        if k > 1:
          raise GroupDiverged(f"seed {self.configs[i].seed} diverged: {what} at "
                              f"step {step}")
        last = checkpointers[0].latest_step()
        raise TrainingDiverged(
            f"training diverged: {what} at step {step}; "
            + (f"the last good checkpoint (step {last}) is kept in "
               f"{self.runs[0].workdir}" if last else "no checkpoint was written")
            + "; lower config.optimizer.learning_rate")

    def seed_rows(host: list[dict]) -> list[list[dict]]:
      return [host] if k == 1 else [[take(m, i) for m in host] for i in range(k)]

    def flush(step, pbar):
      nonlocal pending, last_log_time, last_log_step
      if not pending:
        return
      per_seed = seed_rows(jax.device_get(pending))
      pending = []
      check(per_seed, last_log_step + 1)
      means = [train_means(rows, r.carried) for rows, r in zip(per_seed, records)]
      now = time.perf_counter()
      rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
      last_log_time, last_log_step = now, step
      for i, (log, m, record) in enumerate(zip(logs, means, records)):
        record.carried = None  # Added to this window's means.
        log.write(step, dict(m, **{"train/steps_per_s": rate}))
        warning = record.loss_warning(m["train/loss"], step, guard.loss_factor)
        if warning and is_primary():
          who = f"seed {self.configs[i].seed}: " if k > 1 else ""
          print(f"cnnjax: warning: {who}{warning}", file=sys.stderr)
      pbar.set_postfix(loss=f"{means[0]['train/loss']:.4f}", refresh=False)

    def report_best_metric(metrics: dict):
      """One warning if an evaluation lacks the best metric after all."""
      nonlocal best_reported
      if best_reported or config.best_metric in metrics:
        return
      best_reported = True
      if is_primary():
        print(f"cnnjax: warning: the evaluation at step {evaluated_at} reported no "
              f"{config.best_metric} (config.best_metric), so no checkpoint is "
              f"kept as the best; it reported {', '.join(sorted(metrics))}",
              file=sys.stderr)

    def save(step):
      nonlocal saved_step
      # Never checkpoint a diverged state (this waits for the pending steps).
      per_seed = seed_rows(jax.device_get(pending))
      check(per_seed, last_log_step + 1)
      for i, checkpointer in enumerate(checkpointers):
        checkpointer.save(step, group.state_of(state, i),
                          {"elapsed_s": elapsed(), "step": step,
                           **records[i].meta(per_seed[i])},
                          metrics=evaluated[i][0] if evaluated_at == step else None)
      saved_step = step

    processes = jax.process_count()
    check_every = (config.parallel.get("preemption_check_every", 0)
                   or config.log_every)

    def agreed_signal(step, metrics) -> int:
      """The signal to stop on after `step`, the same in every process."""
      if processes == 1:
        return stop.signum  # Checked every step: no host sync.
      if step % check_every:
        return 0
      # Every process's steps so far are done (no collective is in flight),
      # then one number per process is all-gathered.
      jax.block_until_ready(metrics)
      return max_over_processes(stop.signum)

    def stop_message(signum, step) -> str:
      where = (f"the checkpoint is saved in {self.runs[0].workdir}" if k == 1
               else "the seeds' checkpoints are saved")
      if processes == 1:
        return (f"stopped by signal {signum} at step {step}; {where}; run the "
                "same command again to resume")
      why = (f"by signal {stop.signum} at step {step}, the first step at which "
             f"the {processes} processes compared their signals"
             if stop.signum else
             f"at step {step} because another of the {processes} processes "
             f"received signal {signum}")
      return (f"stopped {why}; {where}; run the same command again in every "
              "process to resume")

    try:
      signals = contextlib.nullcontext(self.stop) if self.stop else _SignalFlag()
      with signals as stop, tqdm(total=num_steps, initial=start_step, unit="step",
                                 disable=not config.progress_bar,
                                 dynamic_ncols=True, mininterval=0.5) as pbar:
        step = start_step
        while step < num_steps:
          state, metrics = group.train_fn(state, next(inputs), group.rng)
          pending.append(metrics)
          step += 1
          pbar.update(1)
          last = step == num_steps
          if step % config.log_every == 0 or last:
            flush(step, pbar)
          if (config.eval_every and step % config.eval_every == 0) or last:
            evaluated, evaluated_at = group.evaluate_seeds(state), step
            report_best_metric(evaluated[0][0])
            for log, (metrics_i, _) in zip(logs, evaluated):
              log.write(step, metrics_i)
          if step % config.checkpoint_every == 0 or last:
            save(step)
          signum = 0 if last else agreed_signal(step, metrics)
          if signum:
            if saved_step != step:
              save(step)
            for c in checkpointers:  # The message says saved: it must be.
              c.wait()
            raise TrainingInterrupted(stop_message(signum, step),
                                      stop.signum or signum)
    except BaseException:  # Errors, signals: finish the writes under way.
      _close_quietly(checkpointers, logs)
      raise
    finally:
      if hasattr(inputs, "close"):  # Stops a streaming producer thread.
        inputs.close()

    # Trained: a signal now waits for the last writes (a second one stops).
    try:
      with _SignalFlag() as late:
        results = self._wrap_up(checkpointers, logs, state, evaluated, records,
                                num_steps=num_steps, start_step=start_step,
                                elapsed_before=elapsed_before, elapsed=elapsed)
    except BaseException:
      _close_quietly(checkpointers, logs)
      raise
    if late.signum:
      print(f"cnnjax: signal {late.signum} came after the last step; the run "
            "finished first", file=sys.stderr)
    return results

  def _wrap_up(self, checkpointers, logs, state, evaluated, records, *,
               num_steps: int, start_step: int, elapsed_before: float,
               elapsed) -> list[dict[str, Any]]:
    """Waits for the last checkpoints, then writes each run's result."""
    finished_before = start_step >= num_steps
    if finished_before:  # Nothing trained: report the restored state again.
      evaluated = self.group.evaluate_seeds(state)
    for c in checkpointers:
      c.wait()
    best_steps = [c.best_step() for c in checkpointers]
    for c in checkpointers:
      c.close()
    wall_time_s = elapsed_before if finished_before else elapsed()
    seeds = [c.seed for c in self.configs]
    results = []
    for i, (run, cfg) in enumerate(zip(self.runs, self.configs)):
      extra = {"trained_with_seeds": seeds} if self.k > 1 else {}
      results.append(self._finish(
          run, cfg, num_steps=num_steps, evaluated=evaluated[i],
          best_step=best_steps[i], divergence_warning=records[i].warning,
          wall_time_s=wall_time_s, **extra))
    for log in logs:
      log.close()
    return results

  def _finish(self, run: Run, config, *, num_steps: int, evaluated, best_step,
              divergence_warning, wall_time_s: float, **extra) -> dict[str, Any]:
    """Writes result.json, the curves and the evaluators' artifacts."""
    final, artifacts = evaluated
    final = {k: v for k, v in final.items() if k != "step"}
    record = {
        "experiment": self.config_path,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "num_steps": num_steps,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "final": final,
        "best_step": best_step,
        # The loss warning (config.divergence.loss_factor), or None.
        "divergence_warning": divergence_warning,
        "wall_time_s": round(wall_time_s, 2),
        "device": device_description(),
        "versions": versions(),
        "smoke": bool(config.smoke),
        **extra,
        "standin_data": bool(self.group.setups[0].dataset.metadata.get("standin", False)),
    }
    if config.reference.metric:
      record["reference"] = config.reference.to_dict()
      if config.reference.metric in final:
        record["reference"]["measured"] = final[config.reference.metric]
    if is_primary():
      save_artifacts(run, artifacts)
      run.write_result(record)
    return record
