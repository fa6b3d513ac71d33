"""`cnnjax benchmark-data`: can the input keep up with the model?

Times, for one experiment config, the input pipeline alone (batch selection
or streaming, uint8 -> float, augmentation, normalization: everything the
train step receives) and the train step alone on a ready batch, in images per
second, and prints their ratio. A ratio well above 1 means the input never
holds the model back.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np


def _time_repeats(run, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return times


def benchmark_input(config, *, steps: int = 20, repeats: int = 3) -> dict[str, Any]:
  """Images/s of the input pipeline and of the train step for `config`.

  Each figure is the median over `repeats` timed runs of `steps` batches,
  after one untimed warm-up run (compilation, caches).
  """
  from cnnjax import config as config_lib
  from cnnjax.data.arrays import data_key_for_seed, train_batch
  from cnnjax.train.setup import build, train_inputs

  config_lib.validate(config)
  exp = build(config)
  batch_size = config.batch_size
  train_prep, _ = exp.preprocess
  augment_key = jax.random.key(1)
  data_key = data_key_for_seed(config.seed)

  inputs = train_inputs(exp, 0)
  example = next(inputs)  # the device split, or one batch
  if hasattr(inputs, "close"):  # stops a stream's producer thread
    inputs.close()
  if exp.resident:
    data = example

    @jax.jit
    def input_step(step):
      batch = train_batch(data, step, batch_size=batch_size, data_key=data_key)
      return train_prep(batch, jax.random.fold_in(augment_key, step))

    def run_input():
      out = None
      for step in range(steps):
        out = input_step(np.int32(step))
      jax.block_until_ready(out)
  else:
    prep = jax.jit(lambda batch, step: train_prep(batch, jax.random.fold_in(
        augment_key, step)))
    position = [0]

    def run_input():
      batches = train_inputs(exp, position[0])
      out = None
      for step in range(steps):
        out = prep(next(batches), np.int32(step))
      batches.close()
      position[0] += steps
      jax.block_until_ready(out)

  if exp.resident:
    batch = jax.jit(lambda d: train_batch(d, np.int32(0), batch_size=batch_size,
                                          data_key=data_key))(example)
  else:
    batch = example
  batch = jax.block_until_ready(jax.jit(train_prep)(batch, augment_key))
  step_fn = jax.jit(exp.train_step, donate_argnums=0)
  rng = jax.random.key(2)
  state = [exp.state]

  def run_train():
    s = state[0]
    for _ in range(steps):
      s, metrics = step_fn(s, batch, rng)
    jax.block_until_ready(metrics)
    state[0] = s

  run_input()  # warm-up: compile, fill caches
  run_train()
  input_times = _time_repeats(run_input, repeats)
  train_times = _time_repeats(run_train, repeats)
  images = steps * batch_size
  input_rate = images / statistics.median(input_times)
  train_rate = images / statistics.median(train_times)
  return {
      "dataset": exp.dataset.name, "model": config.model.name,
      "batch_size": batch_size, "steps": steps, "repeats": repeats,
      "path": "device" if exp.resident else "host stream",
      "input_images_per_s": input_rate,
      "train_step_images_per_s": train_rate,
      "ratio": input_rate / train_rate,
      "input_runs_s": input_times, "train_runs_s": train_times,
      "device": jax.devices()[0].device_kind, "cpu_count": _cpus(),
  }


def _cpus():
  import os
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def format_result(r: dict[str, Any]) -> str:
  return (f"{r['model']} on {r['dataset']} ({r['path']}), batch {r['batch_size']}, "
          f"{r['steps']} steps x {r['repeats']} runs on {r['device']} "
          f"({r['cpu_count']} CPUs):\n"
          f"  input pipeline  {r['input_images_per_s']:10.0f} images/s\n"
          f"  train step      {r['train_step_images_per_s']:10.0f} images/s\n"
          f"  input / train   {r['ratio']:10.1f}x")
