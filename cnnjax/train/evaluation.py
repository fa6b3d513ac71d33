"""Evaluation: the eval step over every evaluation split, then the evaluators.

`Evaluation` runs the pure `eval_batch(variables, batch)` (step.py) over each
evaluation split and hands the per-example outputs to the config's
evaluators (`cnnjax.evaluators`), which turn them into metrics
('<split>/<metric>') and artifacts (a confusion matrix). Data held on the
device is evaluated in one compiled call per split (`runs.inference.map_stacked`
over padded batches stacked on the device); streamed data batch by batch.
The outputs are gathered to every process (replicated), so multi-host runs
evaluate the same way.

With k > 1 seeds trained together the variables carry a leading seed axis
and the whole evaluation is vmapped over it.

`evaluate_run(workdir)` is `cnnjax eval`: a finished run's checkpoint
evaluated on its data, through the Run (no optimizer needed).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from cnnjax import evaluators as evaluators_lib
from cnnjax.data.arrays import stack_eval_batches
from cnnjax.data.stream import StreamDataset, as_stream, prefetch
from cnnjax.parallel import DataParallel, make_data_parallel
from cnnjax.runs import Run, inference, model_for
from cnnjax.trees import take

CONFUSION_DIR = "confusion_matrix"


def class_names(dataset) -> tuple[str, ...]:
  names = dataset.metadata.get("class_names") or dataset.metadata.get("label_names")
  if names and len(names) == dataset.num_classes:
    return tuple(str(n) for n in names)
  if "classes" in dataset.metadata:  # dataset.classes: the original ids
    return tuple(str(c) for c in dataset.metadata["classes"])
  return tuple(str(i) for i in range(dataset.num_classes))


class Evaluation:
  """Evaluates variables on every evaluation split of a dataset.

  Args:
    dataset: an ArrayDataset or StreamDataset.
    parallel: the device mesh; batches are split over it.
    eval_batch: pure (variables, batch) -> per-example outputs with 'mask'.
    evaluators: names from `cnnjax.evaluators`.
    eval_batch_size: the global evaluation batch.
    resident: the data is in memory and small enough for the device.
    host_crops: the run's random resized crop happens on the host (streams
      then evaluate a center crop).
    seeds: k; with k > 1 the variables have a leading seed axis.
  """

  def __init__(self, *, dataset, parallel: DataParallel, eval_batch,
               evaluators, eval_batch_size: int, resident: bool,
               host_crops: bool = False, seeds: int = 1):
    self.dataset = dataset
    self.parallel = parallel
    self.evaluators = tuple(evaluators)
    self.resident = resident
    self.host_crops = host_crops
    self.seeds = seeds
    # Each process reads its own rows of every global batch.
    self.batch_size = parallel.round_up(eval_batch_size)
    self._stacked: dict[str, Any] = {}
    replicated = parallel.replicated

    def split_outputs(variables, stacked):
      return inference.map_stacked(lambda batch: eval_batch(variables, batch), stacked)

    batch_outputs = eval_batch
    if seeds > 1:  # Variables with a leading seed axis, the same data.
      split_outputs = jax.vmap(split_outputs, in_axes=(0, None))
      batch_outputs = jax.vmap(eval_batch, in_axes=(0, None))
    self._split_fn = jax.jit(split_outputs, out_shardings=replicated)
    self._batch_fn = jax.jit(batch_outputs, out_shardings=replicated)

  def metric_names(self, *, ema: bool = False) -> set[str]:
    """Every '<split>/<metric>' an evaluation may report ('<split>_ema/...'
    too with `ema`), from the metrics the evaluators declare."""
    suffixes = ("", "_ema") if ema else ("",)
    return {f"{split}{suffix}/{metric}" for split in self.dataset.eval_splits
            for suffix in suffixes for name in self.evaluators
            for metric in evaluators_lib.EVALUATORS.get(name).metric_names}

  def _stacked_split(self, split: str):
    """A resident split as stacked, padded batches on the devices (cached)."""
    if split not in self._stacked:
      self._stacked[split] = self.parallel.put_batch(
          stack_eval_batches(self.dataset.splits[split], self.batch_size,
                             multiple_of=self.parallel.num_devices),
          self.parallel.stacked_batches)
    return self._stacked[split]

  def outputs(self, variables, split: str) -> list[dict[str, np.ndarray]]:
    """Per seed, the per-example outputs of `split` without padding rows."""
    if self.resident:
      outputs = self._split_fn(variables, self._stacked_split(split))
    else:
      center = {"center_crop": True} if self.host_crops else {}
      stream = (self.dataset if isinstance(self.dataset, StreamDataset)
                else as_stream(self.dataset))
      batches = stream.eval_batches(split, self.batch_size // jax.process_count(),
                                    **center)
      parts = [jax.device_get(self._batch_fn(variables, batch)) for batch in
               prefetch(batches, size=2, transfer=self.parallel.host_batch_to_global)]
      # (num_batches, B, ...) like the resident path (seeds first if k > 1).
      outputs = jax.tree.map(lambda *xs: np.stack(xs, axis=1 if self.seeds > 1 else 0),
                             *parts)
    outputs = jax.device_get(outputs)
    per_seed = ([take(outputs, i) for i in range(self.seeds)] if self.seeds > 1
                else [outputs])
    result = []
    for out in per_seed:
      out = dict(out)
      mask = out.pop("mask")
      result.append(inference.unpad(out, mask))
    return result

  def evaluate(self, variables, suffix: str = ""
               ) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """Per seed: (metrics as '<split><suffix>/<metric>', artifacts by split)."""
    per_seed = [({}, {}) for _ in range(self.seeds)]
    for split in self.dataset.eval_splits:
      context = evaluators_lib.EvalContext(
          task=self.dataset.task, num_classes=self.dataset.num_classes,
          class_names=class_names(self.dataset), split=split + suffix)
      for (metrics, artifacts), outputs in zip(per_seed, self.outputs(variables, split)):
        result = evaluators_lib.compute(self.evaluators, outputs, context)
        metrics.update({f"{split}{suffix}/{k}": v for k, v in result.metrics.items()})
        if result.artifacts:
          artifacts[split + suffix] = result.artifacts
    return per_seed


def save_artifacts(run: Run, artifacts: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """Writes the evaluators' artifacts into the run: for every split with a
  confusion matrix, confusion_matrix/<split>.json and .png. Returns the paths."""
  paths = []
  for split, found in artifacts.items():
    matrix = found.get("confusion_matrix")
    if matrix is None:
      continue
    paths.append(run.write_json(f"{CONFUSION_DIR}/{split}.json",
                                evaluators_lib.confusion_matrix_json(matrix)))
    paths.append(run.save_figure(f"{CONFUSION_DIR}/{split}.png",
                                 evaluators_lib.confusion_matrix_figure(matrix)))
  return paths


def evaluate_run(workdir: str, *, which: str = "latest") -> dict[str, Any]:
  """Evaluates a checkpoint ('latest', 'best' or a step) of a finished or
  running run on its evaluation splits; writes the evaluators' artifacts
  into the run. The weight average is evaluated too when the run keeps one."""
  from cnnjax.train.setup import evaluation_parts, is_resident

  run = Run.open(workdir)
  config = run.config
  step = run.step(which)
  dataset = run.dataset()
  parallel = make_data_parallel(config.parallel.num_devices)
  model = model_for(config, dataset)
  _, eval_batch, names = evaluation_parts(config, dataset, model.apply, parallel)
  evaluation = Evaluation(
      dataset=dataset, parallel=parallel, eval_batch=eval_batch, evaluators=names,
      eval_batch_size=config.eval_batch_size,
      resident=is_resident(config, dataset),
      host_crops=isinstance(dataset, StreamDataset) and dataset.host_crops)
  stored = run.variables(step)
  variables = parallel.put_replicated({k: v for k, v in stored.items() if v})
  metrics, artifacts = evaluation.evaluate(variables)[0]
  ema = run.variables(step, collections=("ema",)).get("ema")
  if ema:
    ema_metrics, _ = evaluation.evaluate(
        parallel.put_replicated({k: v for k, v in ema.items() if v}), "_ema")[0]
    metrics.update(ema_metrics)
  save_artifacts(run, artifacts)
  return {"step": step, "checkpoint": which, **metrics}
