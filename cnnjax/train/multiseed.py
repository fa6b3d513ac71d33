"""Several seeds of one small experiment trained together: one compiled step.

A small model leaves a device mostly idle, so training the seeds of an
ablation one after another wastes it. Here the seeds' states are stacked on
a leading axis and the pure train step is `jax.vmap`ped over (state, step
key, data order key, augmentation key): one call advances every seed by one
step, on the same resident training data. Each seed still has its own
workdir with the files a single run writes (config.json, metrics.jsonl,
checkpoints/, result.json), so `cnnjax train` can resume any of them alone,
and a rerun of the group resumes from the seeds' common latest step.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from cnnjax import config as config_lib
from cnnjax.data import get_dataset
from cnnjax.errors import CnnjaxError
from cnnjax.train import loop, step as step_lib
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.writers import MetricWriter


class GroupDiverged(CnnjaxError):
  """A seed's loss is not finite: train the group one seed at a time."""


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


def _stack(trees):
  leaves = [jax.tree.leaves(t) for t in trees]
  treedef = jax.tree.structure(trees[0])
  return treedef.unflatten([jnp.stack(xs) for xs in zip(*leaves)])


def _take(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


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
  configs = [config_lib.apply_smoke(c) for c in configs]
  for config, workdir in zip(configs, workdirs):
    config_lib.validate(config)
    loop._prepare_workdir(config, workdir)
  config = configs[0]
  dataset = get_dataset(config.dataset, smoke=config.smoke)
  exps = [loop.build_experiment(c, dataset=dataset) for c in configs]
  exp = exps[0]
  if not exp.resident:
    raise CnnjaxError("these runs cannot be trained together: the training "
                      "data does not fit on the device")
  if exp.parallel.num_devices != 1:
    raise CnnjaxError("these runs cannot be trained together on several "
                      "devices; set config.parallel.num_devices=1")
  num_steps = exp.durations.num_steps
  checkpointers = [Checkpointer(os.path.join(w, "checkpoints"),
                                keep=config.keep_checkpoints,
                                best_metric=config.best_metric,
                                best_mode=config.best_mode) for w in workdirs]
  writers = [MetricWriter(w) for w in workdirs]
  latest = [c.latest_step() or 0 for c in checkpointers]
  start_step = min(latest)
  states, elapsed_before = [], 0.0
  for e, c in zip(exps, checkpointers):
    if start_step:
      state, meta = c.restore(start_step, e.state)
      elapsed_before = max(elapsed_before, float(meta.get("elapsed_s", 0.0)))
    else:
      state = e.state
    states.append(state)
  if start_step:
    print(f"Resuming {len(configs)} seeds from step {start_step}", file=sys.stderr)
  for w in writers:
    w.truncate_after(start_step)
  state = _stack(states)

  train, eval_step = loop.make_step_functions(exp)
  keys = [loop.seed_keys(c.seed) for c in configs]
  stacked_keys = {k: jnp.stack([d[k] for d in keys]) for k in keys[0]}
  train_fn = jax.jit(jax.vmap(train, in_axes=(0, None, 0, 0, 0)), donate_argnums=0)
  evaluate_fn = jax.jit(jax.vmap(
      lambda s, data: step_lib.evaluate(eval_step, s, data), in_axes=(0, None)))
  feed = loop.Feed(exp)
  data = next(feed.train_inputs(start_step))

  def evaluate(state) -> list[dict[str, float]]:
    per_seed = [dict() for _ in configs]
    variants = [("", state)]
    if config.ema.decay:
      variants.append(("_ema", jax.vmap(lambda s: s.ema_state())(state)))
    for suffix, s in variants:
      for split in dataset.eval_splits:
        sums, outputs = evaluate_fn(s, feed.eval_data(split))
        for i in range(len(configs)):
          values = feed.split_metrics(_take(sums, i), _take(outputs, i))
          per_seed[i].update({f"{split}{suffix}/{k}": v for k, v in values.items()})
    return per_seed

  t_start = time.perf_counter()
  pending: list[dict] = []
  last_log_time, last_log_step = t_start, start_step
  eval_metrics: list[dict[str, float]] = [{} for _ in configs]
  eval_step_done = -1
  saved_step = start_step

  def elapsed():
    return elapsed_before + time.perf_counter() - t_start

  def flush(step):
    nonlocal pending, last_log_time, last_log_step
    if not pending:
      return
    host = jax.device_get(pending)
    pending = []
    now = time.perf_counter()
    rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
    last_log_time, last_log_step = now, step
    for i, (c, w) in enumerate(zip(configs, writers)):
      means = loop.train_means([_take(m, i) for m in host])
      if not math.isfinite(means["train/loss"]):
        raise GroupDiverged(f"seed {c.seed} diverged by step {step}")
      w.write(step, dict(means, **{"train/steps_per_s": rate}))

  def save(step):
    nonlocal saved_step
    flush(step)  # Never checkpoint a diverged state.
    for i, c in enumerate(checkpointers):
      c.save(step, _take(state, i), {"elapsed_s": elapsed(), "step": step},
             metrics=eval_metrics[i] if eval_step_done == step else None)
    saved_step = step

  try:
    with loop._SignalFlag() as stop:
      step = start_step
      while step < num_steps:
        state, metrics = train_fn(state, data, stacked_keys["step"],
                                  stacked_keys["data"], stacked_keys["augment"])
        pending.append(metrics)
        step += 1
        last = step == num_steps
        if step % config.log_every == 0 or last:
          flush(step)
        if (config.eval_every and step % config.eval_every == 0) or last:
          eval_metrics = evaluate(state)
          eval_step_done = step
          for w, m in zip(writers, eval_metrics):
            w.write(step, m)
        if step % config.checkpoint_every == 0 or last:
          save(step)
        if stop.signum and not last:
          if saved_step != step:
            save(step)
          raise loop.TrainingInterrupted(
              f"stopped by signal {stop.signum} at step {step}; the seeds' "
              "checkpoints are saved; run the same command again to resume",
              stop.signum)
  finally:
    for c in checkpointers:
      c.wait()
    best_steps = [c.best_step() if config.best_metric else None
                  for c in checkpointers]
    for c in checkpointers:
      c.close()
    for w in writers:
      w.close()

  if start_step >= num_steps:  # Nothing trained: report the restored states.
    eval_metrics = evaluate(state)
  results = []
  for i, (c, w) in enumerate(zip(configs, workdirs)):
    results.append(loop.write_result(
        c, w, config_path=config_path, num_steps=num_steps,
        final=eval_metrics[i], best_step=best_steps[i],
        wall_time_s=elapsed_before if start_step >= num_steps else elapsed(),
        trained_with_seeds=[k.seed for k in configs],
        standin_data=bool(dataset.metadata.get("standin", False))))
  return results
