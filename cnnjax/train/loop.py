"""`train_and_evaluate(config, workdir)`: the one training loop, and the only
place with side effects (files, logs, checkpoints, signals).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from cnnjax import config as config_lib
from cnnjax.data import ArrayDataset, get_dataset, stack_eval_batches, train_batch
from cnnjax.data.augment import augment_batch
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model
from cnnjax.train import losses, optim, step as step_lib
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.metrics import sums_to_means
from cnnjax.train.state import TrainState
from cnnjax.train.writers import MetricWriter, plot_curves


class TrainingInterrupted(CnnjaxError):
  """SIGINT or SIGTERM arrived; a checkpoint was saved before stopping."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


@dataclasses.dataclass
class Experiment:
  """Everything built from a config before the first step."""
  config: ml_collections.ConfigDict
  dataset: ArrayDataset
  durations: config_lib.Durations
  state: TrainState
  train_step: Any  # pure: (state, batch, rng) -> (state, metric sums)
  eval_step: Any  # pure: (state, batch) -> metric sums
  model_name: str


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Data, model, optimizer and initial state for `config` (already validated)."""
  dataset = get_dataset(config.dataset, smoke=config.smoke)
  durations = config_lib.resolve_durations(config,
                                           dataset.num_examples(dataset.train_split))
  overrides = {k: v for k, v in config.model.items() if k != "name"}
  overrides.setdefault("num_classes", dataset.num_classes)
  model = create_model(config.model.name, **overrides)
  init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  example = np.zeros((1, *dataset.input_shape),
                     dataset.splits[dataset.train_split][dataset.input_key].dtype)
  try:
    variables = jax.jit(lambda r, x: model.init(r, x, train=False))(init_rng, example)
  except (TypeError, ValueError) as e:
    raise CnnjaxError(
        f"model '{config.model.name}' cannot take inputs of shape "
        f"{dataset.input_shape} from dataset '{dataset.name}': "
        f"{str(e).splitlines()[0]}") from e
  constrained = [n.strip() for n in config.optimizer.max_norm_layers.split(",")
                 if n.strip()]
  missing = [n for n in constrained if n not in variables["params"] or
             "kernel" not in variables["params"][n]]
  if config.optimizer.max_norm and missing:
    raise CnnjaxError(
        f"config.optimizer.max_norm_layers names {', '.join(missing)}, which "
        f"model '{config.model.name}' does not have; its top-level layers are "
        f"{', '.join(variables['params'])}")
  tx, learning_rate = optim.make_optimizer(config, durations, variables["params"])
  state = TrainState.create(apply_fn=model.apply, variables=variables, tx=tx)
  loss_fn = losses.get_loss(config.loss)
  return Experiment(
      config=config, dataset=dataset, durations=durations, state=state,
      train_step=step_lib.make_train_step(
          loss_fn, learning_rate, l1=config.optimizer.l1,
          aux_weight=config.loss.aux_weight,
          max_norm_value=config.optimizer.max_norm,
          max_norm_layers=constrained),
      eval_step=step_lib.make_eval_step(loss_fn), model_name=config.model.name)


def make_jitted(exp: Experiment):
  """The compiled functions of the loop: train (data selection fused in) and eval."""
  batch_size = exp.config.batch_size
  data_key = jax.random.fold_in(jax.random.key(exp.config.seed), 1)
  augment_key = jax.random.fold_in(jax.random.key(exp.config.seed), 3)
  augment = exp.config.augment

  def train(state, train_data, rng):
    batch = train_batch(train_data, state.step, batch_size=batch_size,
                        data_key=data_key)
    if augment.translate or augment.flip:
      batch = augment_batch(batch, jax.random.fold_in(augment_key, state.step),
                            augment)
    return exp.train_step(state, batch, rng)

  def evaluate(state, stacked):
    return step_lib.evaluate(exp.eval_step, state, stacked)

  return jax.jit(train, donate_argnums=0), jax.jit(evaluate)


def _eval_all(eval_fn, state, eval_data) -> dict[str, float]:
  metrics = {}
  for split, stacked in eval_data.items():
    for k, v in sums_to_means(eval_fn(state, stacked)).items():
      metrics[f"{split}/{k}"] = v
  return metrics


def _prepare_workdir(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      try:
        previous = json.load(f)
      except json.JSONDecodeError:
        previous = None
    if previous is not None:
      diffs = [d for d in config_lib.config_differences(previous, current)
               if d.split(":")[0] not in config_lib.RESUMABLE_KEYS]
      if diffs:
        raise CnnjaxError(
            f"workdir '{workdir}' holds a run with a different config "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); "
            "use another --workdir, or delete this one to start over")
  with open(path + ".tmp", "w") as f:
    json.dump(current, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


def device_description() -> dict[str, Any]:
  devices = jax.devices()
  return {"platform": devices[0].platform, "kind": devices[0].device_kind,
          "count": len(devices), "host": platform.node(),
          "cpu_count": os.cpu_count()}


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
  config = config_lib.apply_smoke(config)
  config_lib.validate(config)
  _prepare_workdir(config, workdir)
  exp = build_experiment(config)
  num_steps = exp.durations.num_steps
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              keep=config.keep_checkpoints,
                              best_metric=config.best_metric,
                              best_mode=config.best_mode)
  writer = MetricWriter(workdir)
  state, elapsed_before = exp.state, 0.0
  start_step = checkpointer.latest_step() or 0
  if start_step:
    state, meta = checkpointer.restore(start_step, state)
    elapsed_before = float(meta.get("elapsed_s", 0.0))
    print(f"Resuming from the checkpoint at step {start_step} in {workdir}",
          file=sys.stderr)
  writer.truncate_after(start_step)

  train_fn, eval_fn = make_jitted(exp)
  train_data = jax.device_put(exp.dataset.splits[exp.dataset.train_split])
  eval_data = {s: jax.device_put(stack_eval_batches(exp.dataset.splits[s],
                                                    config.eval_batch_size))
               for s in exp.dataset.eval_splits}
  rng = jax.random.fold_in(jax.random.key(config.seed), 2)

  from tqdm.auto import tqdm  # Only the loop needs it.
  t_start = time.perf_counter()
  eval_metrics: dict[str, float] = {}
  pending: list[dict] = []  # Device-side metric sums since the last log.
  last_log_time, last_log_step = time.perf_counter(), start_step
  saved_step = start_step

  def elapsed():
    return elapsed_before + time.perf_counter() - t_start

  def check_finite(loss_sum, step):
    if not math.isfinite(loss_sum):
      last = checkpointer.latest_step()
      raise CnnjaxError(
          f"training diverged: the loss is {loss_sum} by step {step}; "
          + (f"the last good checkpoint (step {last}) is kept in {workdir}"
             if last else "no checkpoint was written") +
          "; lower config.optimizer.learning_rate")

  def flush_train_metrics(step):
    nonlocal pending, last_log_time, last_log_step
    if not pending:
      return
    host = jax.device_get(pending)
    pending = []
    totals = {k: sum(float(m[k]) for m in host) for k in host[0]
              if k != "learning_rate"}
    check_finite(totals["loss"], step)
    count = totals.pop("count")
    means = {f"train/{k}": v / count for k, v in totals.items()}
    means["train/learning_rate"] = float(host[-1]["learning_rate"])
    now = time.perf_counter()
    means["train/steps_per_s"] = (step - last_log_step) / max(now - last_log_time, 1e-9)
    last_log_time, last_log_step = now, step
    writer.write(step, means)
    pbar.set_postfix(loss=f"{means['train/loss']:.4f}", refresh=False)

  def save(step):
    nonlocal saved_step
    # Never checkpoint a diverged state (this waits for the pending steps).
    check_finite(sum(float(m["loss"]) for m in jax.device_get(pending)), step)
    checkpointer.save(step, state, {"elapsed_s": elapsed(), "step": step},
                      metrics=eval_metrics if eval_metrics.get("step") == step
                      else None)
    saved_step = step

  try:
    with _SignalFlag() as stop, tqdm(total=num_steps, initial=start_step,
                                     unit="step", disable=not config.progress_bar,
                                     dynamic_ncols=True, mininterval=0.5) as pbar:
      step = start_step
      while step < num_steps:
        state, metrics = train_fn(state, train_data, rng)
        pending.append(metrics)
        step += 1
        pbar.update(1)
        last = step == num_steps
        if step % config.log_every == 0 or last:
          flush_train_metrics(step)
        if (config.eval_every and step % config.eval_every == 0) or last:
          eval_metrics = _eval_all(eval_fn, state, eval_data)
          writer.write(step, eval_metrics)
          eval_metrics["step"] = step
        if step % config.checkpoint_every == 0 or last:
          save(step)
        if stop.signum and not last:
          if saved_step != step:
            save(step)
          raise TrainingInterrupted(
              f"stopped by signal {stop.signum} at step {step}; the checkpoint is "
              f"saved in {workdir}; run the same command again to resume",
              stop.signum)
  except BaseException:  # Errors, signals: finish the writes under way.
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    raise

  finished_before = start_step >= num_steps
  if finished_before:  # Nothing trained: report the restored state again.
    eval_metrics = _eval_all(eval_fn, state, eval_data)
  checkpointer.wait()
  best_step = checkpointer.best_step() if config.best_metric else None
  checkpointer.close()
  eval_metrics.pop("step", None)
  result = {
      "experiment": config_path,
      "model": config.model.name,
      "dataset": config.dataset.name,
      "num_steps": num_steps,
      "batch_size": config.batch_size,
      "seed": config.seed,
      "final": eval_metrics,
      "best_step": best_step,
      "wall_time_s": round(elapsed_before if finished_before else elapsed(), 2),
      "device": device_description(),
      "versions": versions(),
      "smoke": bool(config.smoke),
  }
  if config.reference.metric:
    result["reference"] = config.reference.to_dict()
    if config.reference.metric in eval_metrics:
      result["reference"]["measured"] = eval_metrics[config.reference.metric]
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(result, f, indent=2)
  writer.close()
  plot_curves(workdir)
  return result


def evaluate_workdir(workdir: str, *, which: str = "latest") -> dict[str, Any]:
  """Evaluates the latest (or best) checkpoint of a finished or running run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CnnjaxError(f"'{workdir}' is not a cnnjax workdir (no config.json)")
  with open(path) as f:
    # JSON turns tuples into lists; the model fields want tuples.
    config = ml_collections.ConfigDict(_tuples(json.load(f)))
  exp = build_experiment(config)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True,
                              best_metric=config.best_metric,
                              best_mode=config.best_mode)
  step = checkpointer.best_step() if which == "best" else checkpointer.latest_step()
  if step is None:
    raise CnnjaxError(f"no checkpoint found in '{workdir}/checkpoints'")
  state, _ = checkpointer.restore(step, exp.state)
  _, eval_fn = make_jitted(exp)
  eval_data = {s: stack_eval_batches(exp.dataset.splits[s], config.eval_batch_size)
               for s in exp.dataset.eval_splits}
  metrics = _eval_all(eval_fn, state, eval_data)
  return {"step": step, "checkpoint": which, **metrics}


def _tuples(tree):
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree
