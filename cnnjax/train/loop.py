"""`train_and_evaluate(config, workdir)`: the one training loop, and the only
place with side effects (files, logs, checkpoints, signals).
"""

from __future__ import annotations

import dataclasses
import itertools
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
from cnnjax.data import ArrayDataset, get_dataset, pipeline
from cnnjax.data.arrays import (data_key_for_seed, nbytes, stack_eval_batches,
                                train_batch)
from cnnjax.data.stream import StreamDataset, as_stream, prefetch
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model
from cnnjax.parallel import (DataParallel, initialize_distributed, is_primary,
                             make_data_parallel)
from cnnjax.train import losses, optim, precision, step as step_lib
from cnnjax.train import transfer
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.metrics import add_sums, sums_to_means
from cnnjax.train.state import TrainState
from cnnjax.train.writers import MetricWriter, plot_curves


# Train metrics that are a value per step (logged at the last step), not
# sums over examples.
LAST_VALUE_METRICS = ("learning_rate", "loss_scale")


class TrainingInterrupted(CnnjaxError):
  """SIGINT or SIGTERM arrived; a checkpoint was saved before stopping."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


@dataclasses.dataclass
class Experiment:
  """Everything built from a config before the first step."""
  config: ml_collections.ConfigDict
  dataset: Any  # ArrayDataset or StreamDataset
  resident: bool  # the training data lives on the device
  durations: config_lib.Durations
  state: TrainState
  train_step: Any  # pure: (state, batch, rng) -> (state, metric sums)
  eval_step: Any  # pure: (state, batch) -> (metric sums, outputs)
  preprocess: tuple[Any, Any]  # on-device (train_fn(batch, key), eval_fn(batch))
  model_name: str
  parallel: DataParallel  # the device mesh and shardings

  @property
  def stream(self) -> StreamDataset:
    return self.dataset if isinstance(self.dataset, StreamDataset) else as_stream(self.dataset)


def _check_task(config, dataset) -> None:
  if dataset.task == "multilabel" and config.loss.name != "sigmoid_cross_entropy":
    raise CnnjaxError(
        f"dataset '{dataset.name}' is multi-label ({dataset.num_classes} labels "
        "per example); set --config.loss.name=sigmoid_cross_entropy")


def build_experiment(config: ml_collections.ConfigDict, *,
                     dataset=None) -> Experiment:
  """Data, model, optimizer and initial state for `config` (already validated).

  `dataset`: the already loaded data of `config.dataset` (runs that differ
  only in their seed share it).
  """
  if config.parallel.distributed:
    initialize_distributed()
  data_parallel = make_data_parallel(config.parallel.num_devices)
  data_parallel.check_batch_size(config.batch_size)
  if dataset is None:
    dataset = get_dataset(config.dataset, smoke=config.smoke)
  _check_task(config, dataset)
  if (config.mix.mixup_alpha or config.mix.cutmix_alpha) and not np.issubdtype(
      pipeline.model_input_dtype(dataset), np.floating):
    raise CnnjaxError(f"mixup and cutmix mix images; dataset '{dataset.name}' "
                      "has token inputs")
  resident = (isinstance(dataset, ArrayDataset) and
              nbytes(dataset) <= config.dataset.max_device_mb * 2**20)
  durations = config_lib.resolve_durations(config,
                                           dataset.num_examples(dataset.train_split))
  overrides = {k: v for k, v in config.model.items() if k != "name"}
  overrides.setdefault("num_classes", dataset.num_classes)
  if config.precision != "float32":
    overrides.setdefault("dtype", precision.DTYPES[config.precision])
  for field, value in dataset.model_fields.items():
    overrides.setdefault(field, value)
  model = create_model(config.model.name, **overrides)
  init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  example = np.zeros((1, *dataset.input_shape), pipeline.model_input_dtype(dataset))
  try:
    variables = jax.jit(lambda r, x: model.init(r, x, train=False))(init_rng, example)
  except (TypeError, ValueError) as e:
    raise CnnjaxError(
        f"model '{config.model.name}' cannot take inputs of shape "
        f"{dataset.input_shape} from dataset '{dataset.name}': "
        f"{str(e).splitlines()[0]}") from e
  variables = transfer.initialize_from(config, variables)
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
  loss_scale = (precision.LossScale.create(
      config.loss_scale.initial, config.loss_scale.growth_interval,
      config.loss_scale.backoff) if config.precision == "float16" else None)
  state = data_parallel.put_replicated(TrainState.create(
      apply_fn=model.apply, variables=variables, tx=tx,
      ema=config.ema.decay > 0, loss_scale=loss_scale))
  loss_fn = losses.get_loss(config.loss)
  stats = pipeline.channel_stats(dataset, config.dataset)
  host_crops = isinstance(dataset, StreamDataset) and dataset.host_crops
  multilabel = dataset.task == "multilabel"
  return Experiment(
      config=config, dataset=dataset, resident=resident, durations=durations,
      state=state,
      train_step=step_lib.make_train_step(
          loss_fn, learning_rate, l1=config.optimizer.l1,
          aux_weight=config.loss.aux_weight,
          max_norm_value=config.optimizer.max_norm,
          max_norm_layers=constrained,
          grad_accum_steps=config.grad_accum_steps,
          mix=config.mix.to_dict(),
          ema_decay=config.ema.decay, ema_warmup=config.ema.warmup,
          per_device_mesh=(data_parallel.mesh
                           if config.parallel.batch_norm == "per_device" else None),
          frozen_batch_stats=optim.frozen_batch_stats(config, variables)),
      eval_step=step_lib.make_eval_step(
          loss_fn, views=pipeline.test_time_views(config.augment),
          multilabel=multilabel, with_scores=wants_scores(dataset)),
      preprocess=pipeline.make_preprocess(config.augment, stats,
                                          host_crops=host_crops),
      model_name=config.model.name, parallel=data_parallel)


def wants_scores(dataset) -> bool:
  """Binary and multi-label tasks, and MedMNIST, also report the AUC."""
  return (dataset.task in ("binary", "multilabel") or
          dataset.metadata.get("evaluator") == "medmnist")


def make_jitted(exp: Experiment):
  """The compiled functions of the loop.

  `train(state, data, rng)`: `data` is the whole training split on the device
  (the batch is selected inside, from the step number) or, for streamed data,
  the batch itself. `evaluate(state, stacked)` scans stacked eval batches;
  `eval_batch(state, batch)` evaluates one streamed batch. Each is compiled
  once; the state is donated and comes back replicated over the mesh, and
  every batch is split over it.
  """
  seeded_train, eval_step = make_step_functions(exp)
  keys = seed_keys(exp.config.seed)
  dp = exp.parallel

  def train(state, data, rng):
    return seeded_train(state, data, rng, keys["data"], keys["augment"])

  def evaluate(state, stacked):
    return step_lib.evaluate(eval_step, state, stacked)

  replicated = dp.replicated
  return (jax.jit(train, donate_argnums=0, out_shardings=(replicated, replicated)),
          jax.jit(evaluate), jax.jit(eval_step))


def seed_keys(seed: int) -> dict[str, jax.Array]:
  """The keys of a run: the data order, the augmentation, the train step."""
  return {"data": data_key_for_seed(seed),
          "augment": jax.random.fold_in(jax.random.key(seed), 3),
          "step": jax.random.fold_in(jax.random.key(seed), 2)}


def make_step_functions(exp: Experiment):
  """`train(state, data, rng, data_key, augment_key)` and `eval_step(state,
  batch)`, pure and not jitted (the seed's keys are arguments, so that runs
  of several seeds can be vmapped together)."""
  batch_size = exp.config.batch_size
  train_prep, eval_prep = exp.preprocess
  dp = exp.parallel

  def train(state, data, rng, data_key, augment_key):
    if exp.resident:
      data = train_batch(data, state.step, batch_size=batch_size, data_key=data_key)
    data = jax.lax.with_sharding_constraint(data, dp.batch)
    batch = train_prep(data, jax.random.fold_in(augment_key, state.step))
    return exp.train_step(state, batch, rng)

  def eval_step(state, batch):
    batch = jax.lax.with_sharding_constraint(batch, dp.batch)
    return exp.eval_step(state, eval_prep(batch))

  return train, eval_step


class Feed:
  """Where the loop's batches come from: the device, or a host stream."""

  def __init__(self, exp: Experiment):
    self.exp = exp
    self.config = exp.config
    self.parallel = exp.parallel
    self.train_fn, self.evaluate_fn, self.eval_batch_fn = make_jitted(exp)
    self._eval_data = None
    crops = exp.config.augment
    self.crops = ({"crop_scale": tuple(crops.crop_scale),
                   "crop_ratio": tuple(crops.crop_ratio)}
                  if isinstance(exp.dataset, StreamDataset) and exp.dataset.host_crops
                  else {})
    # Each process reads its own rows of every global batch.
    self.eval_batch_size = self.parallel.round_up(self.config.eval_batch_size)

  def train_inputs(self, start_step: int):
    """An endless iterator of what `train_fn` takes as `data`."""
    if self.exp.resident:  # Every device holds the whole split (uint8).
      data = self.parallel.put_replicated(
          self.exp.dataset.splits[self.exp.dataset.train_split])
      return itertools.repeat(data)
    batches = self.exp.stream.train_batches(
        self.config.batch_size // jax.process_count(), start_step,
        self.config.seed, **self.crops)
    return prefetch(batches, size=3, transfer=self.parallel.host_batch_to_global)

  def evaluate(self, state) -> dict[str, float]:
    """Metrics of every evaluation split, as '<split>/<metric>'; with an
    average of the weights also '<split>_ema/<metric>'."""
    metrics = self._evaluate(state, "")
    if state.ema is not None:
      metrics.update(self._evaluate(state.ema_state(), "_ema"))
    return metrics

  def eval_data(self, split: str):
    """A resident split as stacked, padded batches on the devices (cached)."""
    if self._eval_data is None:
      self._eval_data = {
          s: self.parallel.put_batch(
              stack_eval_batches(self.exp.dataset.splits[s], self.eval_batch_size,
                                 multiple_of=self.parallel.num_devices),
              self.parallel.stacked_batches)
          for s in self.exp.dataset.eval_splits}
    return self._eval_data[split]

  def split_metrics(self, sums, outputs) -> dict[str, float]:
    """Means (and the AUC where it applies) from an evaluation's sums."""
    values = sums_to_means(sums)
    if outputs:
      values.update(score_metrics(self.exp.dataset.task, jax.device_get(outputs)))
    return values

  def _evaluate(self, state, suffix: str) -> dict[str, float]:
    metrics = {}
    for split in self.exp.dataset.eval_splits:
      if self.exp.resident:
        sums, outputs = self.evaluate_fn(state, self.eval_data(split))
      else:
        center = {"center_crop": bool(self.crops.get("crop_scale"))} if self.crops else {}
        batches = self.exp.stream.eval_batches(
            split, self.eval_batch_size // jax.process_count(), **center)
        sums, outputs = None, []
        for batch in prefetch(batches, size=2,
                              transfer=self.parallel.host_batch_to_global):
          batch_sums, batch_outputs = self.eval_batch_fn(state, batch)
          sums = batch_sums if sums is None else add_sums(sums, batch_sums)
          outputs.append(batch_outputs)
        outputs = jax.tree.map(lambda *xs: np.stack(xs), *outputs) if outputs[0] else {}
      for k, v in self.split_metrics(sums, outputs).items():
        metrics[f"{split}{suffix}/{k}"] = v
    return metrics


def score_metrics(task: str, outputs) -> dict[str, float]:
  """MedMNIST's official AUC (and ACC) from the gathered probabilities."""
  from cnnjax.data.medmnist import official_metrics

  mask = np.asarray(outputs["mask"]).reshape(-1) > 0
  scores = np.asarray(outputs["scores"])
  labels = np.asarray(outputs["label"])
  scores = scores.reshape(-1, scores.shape[-1])[mask]
  labels = labels.reshape(-1, *labels.shape[2:])[mask]
  auc = official_metrics(task, labels, scores)["auc"]
  # NaN when a class (or label) never occurs in the split: then no AUC.
  return {"auc": auc} if math.isfinite(auc) else {}


def train_means(host: list[dict]) -> dict[str, float]:
  """'train/<metric>' averages of per-step metric sums fetched to the host."""
  totals = {k: sum(float(m[k]) for m in host) for k in host[0]
            if k not in LAST_VALUE_METRICS}
  count = totals.pop("count")
  means = {f"train/{k}": v / count for k, v in totals.items()}
  for k in LAST_VALUE_METRICS:  # Values at the last step, not sums.
    if k in host[-1]:
      means[f"train/{k}"] = float(host[-1][k])
  return means


def _prepare_workdir(config, workdir: str) -> None:
  if not is_primary():  # Process 0 of a multi-host run writes the files.
    return
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
               if not config_lib.is_resumable(d.split(":")[0])]
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
  if config.parallel.distributed:  # Before anything starts JAX's backend.
    initialize_distributed()
  _prepare_workdir(config, workdir)
  exp = build_experiment(config)
  num_steps = exp.durations.num_steps
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              keep=config.keep_checkpoints,
                              best_metric=config.best_metric,
                              best_mode=config.best_mode)
  writer = MetricWriter(workdir)
  state, elapsed_before = exp.state, 0.0
  # Damaged checkpoints are moved aside, with a warning, for the one before.
  restored = checkpointer.restore_latest(state)
  start_step = restored[0] if restored else 0
  if restored:
    _, state, meta = restored
    elapsed_before = float(meta.get("elapsed_s", 0.0))
    print(f"Resuming from the checkpoint at step {start_step} in {workdir}",
          file=sys.stderr)
  writer.truncate_after(start_step)

  feed = Feed(exp)
  train_inputs = feed.train_inputs(start_step)
  rng = seed_keys(config.seed)["step"]

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
    means = train_means(jax.device_get(pending))
    pending = []
    check_finite(means["train/loss"], step)
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
        state, metrics = feed.train_fn(state, next(train_inputs), rng)
        pending.append(metrics)
        step += 1
        pbar.update(1)
        last = step == num_steps
        if step % config.log_every == 0 or last:
          flush_train_metrics(step)
        if (config.eval_every and step % config.eval_every == 0) or last:
          eval_metrics = feed.evaluate(state)
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
  finally:
    if hasattr(train_inputs, "close"):  # Stops a streaming producer thread.
      train_inputs.close()

  finished_before = start_step >= num_steps
  if finished_before:  # Nothing trained: report the restored state again.
    eval_metrics = feed.evaluate(state)
  checkpointer.wait()
  best_step = checkpointer.best_step() if config.best_metric else None
  checkpointer.close()
  eval_metrics.pop("step", None)
  result = write_result(
      config, workdir, config_path=config_path, num_steps=num_steps,
      final=eval_metrics, best_step=best_step,
      wall_time_s=elapsed_before if finished_before else elapsed(),
      standin_data=bool(exp.dataset.metadata.get("standin", False)))
  writer.close()
  return result


def write_result(config, workdir: str, *, config_path: str, num_steps: int,
                 final: dict[str, float], best_step: int | None,
                 wall_time_s: float, **extra) -> dict[str, Any]:
  """Writes `<workdir>/result.json` and the curves; returns the record."""
  result = {
      "experiment": config_path,
      "model": config.model.name,
      "dataset": config.dataset.name,
      "num_steps": num_steps,
      "batch_size": config.batch_size,
      "seed": config.seed,
      "final": final,
      "best_step": best_step,
      "wall_time_s": round(wall_time_s, 2),
      "device": device_description(),
      "versions": versions(),
      "smoke": bool(config.smoke),
      **extra,
  }
  if config.reference.metric:
    result["reference"] = config.reference.to_dict()
    if config.reference.metric in final:
      result["reference"]["measured"] = final[config.reference.metric]
  if is_primary():
    with open(os.path.join(workdir, "result.json.tmp"), "w") as f:
      json.dump(result, f, indent=2)
    os.replace(os.path.join(workdir, "result.json.tmp"),
               os.path.join(workdir, "result.json"))
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
  metrics = Feed(exp).evaluate(state)
  return {"step": step, "checkpoint": which, **metrics}


def _tuples(tree):
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree
