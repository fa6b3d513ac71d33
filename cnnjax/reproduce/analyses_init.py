"""Analysis 'init_statistics': how the signal and the gradients of a network
scale from layer to layer at step 0, and the first logged training loss.

For every run, the model is initialized exactly as its training started
(`train.setup.initial_variables`: the config's seed, model.kernel_init and
transfer) and shown the run's first training batch (its data order and
augmentation at step 0). Per layer with a kernel (Dense, Conv), in the order
the forward pass calls them:

- the std of the layer's output (before its nonlinearity: He et al. 2015's
  responses y_l; the last layer's is the logits'), over the batch and the
  features;
- the std of the loss's gradient with respect to the layer's kernel (what
  the first update moves it by, up to the learning rate).

Figures per row (means over its seeds): 'act_std/first', 'act_std/last' and
'act_std/last_over_first' (below 1: the signal fades with depth);
'grad_std/first', 'grad_std/last' and 'grad_std/first_over_last' (below 1:
the gradient fades on its way back to the input); 'layers'; and
'train_loss/first_log', the first logged training loss (the mean over the
first `log_every` steps). The per-layer curves of every row are drawn in
`init_statistics.png`, and their numbers written to `init_statistics.json`,
in the folder that holds all the rows' runs (`<workdir>/<id>/` under
`cnnjax reproduce`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
from flax import traverse_util

from cnnjax.data import ArrayDataset, get_dataset, pipeline
from cnnjax.data.arrays import train_batch
from cnnjax.errors import CnnjaxError
from cnnjax.reproduce.analyses import ANALYSES, Figures, Runs
from cnnjax.runs import Run, files, model_for
from cnnjax.train import losses
from cnnjax.train.setup import initial_variables, seed_keys
from cnnjax.train.step import split_outputs

FIGURE_FILE = "init_statistics.png"
NUMBERS_FILE = "init_statistics.json"


def _group(runs: Runs) -> dict[str, list[dict[str, Any]]]:
  """The runs by setting slug, in first-seen order, each sorted by seed."""
  groups: dict[str, list[dict[str, Any]]] = {}
  for run in runs:
    groups.setdefault(run["slug"], []).append(run)
  return {slug: sorted(g, key=lambda r: r["seed"]) for slug, g in groups.items()}


def _dataset(config, cache: dict):
  """The run's data, loaded once for all the rows that share it."""
  key = json.dumps([config.dataset.to_dict(), bool(config.get("smoke", False))],
                   sort_keys=True, default=repr)
  if key not in cache:
    cache[key] = get_dataset(config.dataset, smoke=bool(config.get("smoke", False)))
  return cache[key]


def first_batch(config, dataset) -> dict[str, Any]:
  """The training batch of step 0 of a run of `config` on `dataset`,
  preprocessed as training saw it."""
  if not isinstance(dataset, ArrayDataset):
    raise CnnjaxError("analysis 'init_statistics' needs data held in memory; "
                      f"dataset '{dataset.name}' streams")
  keys = seed_keys(config.seed)
  batch = train_batch(dataset.splits[dataset.train_split], jnp.int32(0),
                      batch_size=config.batch_size, data_key=keys["data"])
  train_prep, _ = pipeline.make_preprocess(
      config.augment, pipeline.channel_stats(dataset, config.dataset))
  return train_prep(batch, jax.random.fold_in(keys["augment"], 0))


def layer_statistics(model: nn.Module, variables: dict, batch: dict, loss_fn,
                     input_key: str, rng: jax.Array) -> dict[str, list]:
  """{'layers': module paths in call order, 'act_std', 'grad_std'} of one
  training-mode forward and backward pass of `model` on `batch`."""
  kernels = [path[:-1] for path in traverse_util.flatten_dict(variables["params"])
             if path[-1] == "kernel"]
  order: list[tuple[str, ...]] = []

  def record(next_fun, args, kwargs, context):
    path = tuple(context.module.path)
    if context.method_name == "__call__" and path in kernels and path not in order:
      order.append(path)
    return next_fun(*args, **kwargs)

  def objective(params):
    with nn.intercept_methods(record):
      outputs, state = model.apply(
          {**variables, "params": params}, batch[input_key], train=True,
          rngs={"dropout": rng}, mutable=["batch_stats", "intermediates"],
          capture_intermediates=True)
    logits, _ = split_outputs(outputs)
    loss = jnp.mean(loss_fn(logits.astype(jnp.float32), batch["label"]))
    return loss, state["intermediates"]

  grads, intermediates = jax.jit(jax.grad(objective, has_aux=True))(variables["params"])
  grads = traverse_util.flatten_dict(grads)
  outputs = traverse_util.flatten_dict(intermediates)
  stats: dict[str, list] = {"layers": [], "act_std": [], "grad_std": []}
  for path in order:
    produced = outputs.get((*path, "__call__"))
    if not produced or not hasattr(produced[0], "shape"):
      continue
    stats["layers"].append("/".join(path))
    stats["act_std"].append(float(jnp.std(produced[0].astype(jnp.float32))))
    stats["grad_std"].append(float(jnp.std(grads[(*path, "kernel")])))
  return stats


def run_statistics(workdir: str, cache: dict | None = None) -> dict[str, Any]:
  """`layer_statistics` of a run at step 0, and its first logged train loss;
  `cache` keeps the data loaded between runs."""
  run = Run.open(workdir)
  config = run.config
  dataset = _dataset(config, {} if cache is None else cache)
  model = model_for(config, dataset)
  variables = initial_variables(config, model, dataset)
  stats = layer_statistics(model, variables, first_batch(config, dataset),
                           losses.get_loss(config.loss), dataset.input_key,
                           jax.random.fold_in(seed_keys(config.seed)["step"], 0))
  logged = [e["train/loss"] for e in run.metrics() if "train/loss" in e]
  stats["train_loss/first_log"] = float(logged[0]) if logged else float("nan")
  return stats


def _ratio(a: float, b: float) -> float:
  """a / b; NaN (None in the card) when b is 0: a signal that vanished
  entirely (float32 flushes values below about 1e-38 to 0) has no ratio."""
  return float(a / b) if b > 0 else float("nan")


def _row_figures(per_seed: list[dict[str, Any]]) -> tuple[dict[str, float], dict]:
  """(figures, mean per-layer curves) of one row from its seeds' statistics."""
  act = np.mean([s["act_std"] for s in per_seed], axis=0)
  grad = np.mean([s["grad_std"] for s in per_seed], axis=0)
  figures = {"layers": float(len(act)),
             "act_std/first": float(act[0]), "act_std/last": float(act[-1]),
             "act_std/last_over_first": _ratio(act[-1], act[0]),
             "grad_std/first": float(grad[0]), "grad_std/last": float(grad[-1]),
             "grad_std/first_over_last": _ratio(grad[0], grad[-1])}
  first_logs = [s["train_loss/first_log"] for s in per_seed
                if np.isfinite(s["train_loss/first_log"])]
  if first_logs:
    figures["train_loss/first_log"] = float(np.mean(first_logs))
  curves = {"layers": per_seed[0]["layers"], "act_std": act.tolist(),
            "grad_std": grad.tolist()}
  return figures, curves


def plot_statistics(curves: dict[str, dict], path: str) -> str:
  """Per-layer output and kernel-gradient stds of every row, log scale."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(1, 2, figsize=(11, 4))
  for slug, row in curves.items():
    depth = np.arange(1, len(row["act_std"]) + 1)
    for ax, values in zip(axes, (row["act_std"], row["grad_std"])):
      zeros = sum(v == 0 for v in values)  # Not drawn on a log scale.
      ax.plot(depth, values, marker=".",
              label=slug + (f" ({zeros} layers at 0)" if zeros else ""))
  for ax, title in zip(axes, ("layer output std (before the nonlinearity)",
                              "std of the loss gradient w.r.t. the kernel")):
    ax.set_yscale("log")
    ax.set_xlabel("layer (forward order)")
    ax.set_title(title + ", step 0", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  return files.save_figure(figure, path, dpi=110, bbox_inches="tight")


@ANALYSES.register("init_statistics")
def init_statistics(runs: Runs) -> Figures:
  """Step-0 per-layer statistics per row (see the module docstring)."""
  figures, curves, cache = {}, {}, {}
  for slug, group in _group(runs).items():
    figures[slug], curves[slug] = _row_figures(
        [run_statistics(r["workdir"], cache) for r in group])
  folder = os.path.commonpath([os.path.dirname(os.path.abspath(r["workdir"]))
                               for r in runs])
  plot_statistics(curves, os.path.join(folder, FIGURE_FILE))
  files.write_json(os.path.join(folder, NUMBERS_FILE),
                   {slug: {**curves[slug], **figures[slug]} for slug in curves})
  return figures
