"""A trained run, ready to be looked inside: model, weights, data, any layer.

`load_run(workdir)` restores a checkpoint of a cnnjax run and gives the
visualization methods one interface:

- `run.examples(split, n)` -> `Examples`: model inputs (normalized, as the
  network sees them), the same images for display (floats in [0, 1]) and
  labels;
- `run.logits(inputs)`, `run.layer_names()`, `run.activations(inputs, layers)`
  (any module's output, by path such as 'c3' or 'stage2_block0/conv1');
- `run.apply_at(inputs, layer, edit)`: the logits with `edit` applied to one
  layer's output (for gradients with respect to a feature map: Grad-CAM,
  neuron maximization);
- `run.to_display(inputs)`: model inputs back to displayable [0, 1] images.

Layers are found with Flax's method interception, so every registered model
works without changes. Everything here is pure JAX and can be jitted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError


@dataclasses.dataclass
class Examples:
  inputs: np.ndarray  # (N, ...) as the model sees them (normalized)
  images: np.ndarray  # (N, H, W, C) floats in [0, 1], for display
  labels: np.ndarray  # (N,)
  indices: np.ndarray  # (N,) rows of the split they came from


@dataclasses.dataclass
class Run:
  """A model with trained variables and the data it was trained on."""
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: Any
  dataset: Any
  stats: tuple | None  # per-channel (mean, std) of uint8 images, else None
  step: int
  workdir: str = ""

  # ---- data

  @property
  def class_names(self) -> list[str]:
    names = self.dataset.metadata.get("class_names")
    if names and len(names) == self.dataset.num_classes:
      return [str(n) for n in names]
    if "classes" in self.dataset.metadata:  # dataset.classes: the original ids
      return [str(c) for c in self.dataset.metadata["classes"]]
    return [str(i) for i in range(self.dataset.num_classes)]

  @property
  def eval_split(self) -> str:
    splits = self.dataset.eval_splits
    return "test" if "test" in splits else splits[0]

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.dataset.input_shape)

  def split_size(self, split: str) -> int:
    return self.dataset.num_examples(split)

  def examples(self, split: str | None = None, n: int | None = None, *,
               indices: Sequence[int] | None = None) -> Examples:
    """The first `n` examples of `split` (or the given rows)."""
    split = split or self.eval_split
    arrays = self.dataset.splits[split]
    total = len(arrays["label"])
    if indices is None:
      indices = np.arange(total if n is None else min(n, total))
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= total):
      raise CnnjaxError(f"split '{split}' has {total} examples; index "
                        f"{int(indices.max())} is out of range")
    raw = np.asarray(arrays["image"][indices])
    inputs = np.asarray(self.normalize(raw))
    return Examples(inputs=inputs, images=np.asarray(self.to_display(inputs)),
                    labels=np.asarray(arrays["label"][indices]), indices=indices)

  def normalize(self, raw) -> jax.Array:
    """Stored images (uint8, or floats) -> model inputs, as in evaluation."""
    images = jnp.asarray(raw)
    if images.dtype == jnp.uint8:
      images = images.astype(jnp.float32) / 255.0
    if self.stats is not None:
      mean, std = (jnp.asarray(s, jnp.float32) for s in self.stats)
      images = (images - mean) / std
    return images

  def to_display(self, inputs) -> jax.Array:
    """Model inputs -> images in [0, 1]: undo the normalization, or (for
    inputs stored as floats, e.g. standardized digits) rescale each image's
    range to [0, 1]."""
    x = jnp.asarray(inputs, jnp.float32)
    if self.stats is not None:
      mean, std = (jnp.asarray(s, jnp.float32) for s in self.stats)
      return jnp.clip(x * std + mean, 0.0, 1.0)
    axes = tuple(range(1, x.ndim))
    lo = jnp.min(x, axis=axes, keepdims=True)
    hi = jnp.max(x, axis=axes, keepdims=True)
    return (x - lo) / jnp.maximum(hi - lo, 1e-8)

  def input_range(self) -> tuple[float, float]:
    """The model-input values of black and white (for clipping synthesized
    images): (0 - mean) / std and (1 - mean) / std for normalized uint8 data,
    else the training split's min and max."""
    if self.stats is not None:
      mean, std = (np.asarray(s, np.float32) for s in self.stats)
      return float(np.min(-mean / std)), float(np.max((1 - mean) / std))
    train = self.dataset.splits[self.dataset.train_split]["image"]
    return float(np.min(train)), float(np.max(train))

  # ---- the network

  def logits(self, inputs) -> jax.Array:
    out = self.model.apply(self.variables, inputs, train=False)
    return out[0] if isinstance(out, (tuple, list)) else out

  def layer_shapes(self) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch axis) of every module whose output is
    an array, by path, in call order; traced abstractly (nothing is run)."""
    example = jnp.zeros((1, *self.input_shape), jnp.float32)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and context.module.path:
        name = "/".join(context.module.path)
        if isinstance(out, jax.Array) and name not in shapes:
          shapes[name] = tuple(out.shape[1:])
      return out

    with nn.intercept_methods(record):
      jax.eval_shape(lambda x: self.logits(x), example)
    return shapes

  def layer_names(self) -> list[str]:
    """Paths of every module whose output is an array, in call order."""
    return list(self.layer_shapes())

  def require_images(self, what: str) -> None:
    """One sentence unless the inputs are 2D images (H, W, C)."""
    if len(self.input_shape) != 3:
      raise CnnjaxError(f"{what} needs 2D images (H, W, C); this model's inputs "
                        f"have shape {self.input_shape}")

  def check_layer(self, layer: str) -> None:
    names = self.layer_names()
    if layer not in names:
      import difflib
      close = difflib.get_close_matches(layer, names, n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise CnnjaxError(f"model '{self.config.model.name}' has no layer '{layer}'"
                        f"{hint} (its layers: {', '.join(names)})")

  def activations(self, inputs, layers: Sequence[str]) -> dict[str, jax.Array]:
    """The outputs of the named modules for `inputs` (the first call of each)."""
    wanted = set(layers)
    found: dict[str, jax.Array] = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      name = "/".join(context.module.path)
      if context.method_name == "__call__" and name in wanted and name not in found:
        found[name] = out
      return out

    with nn.intercept_methods(record):
      self.logits(inputs)
    missing = [l for l in layers if l not in found]
    if missing:
      self.check_layer(missing[0])
    return {l: found[l] for l in layers}

  def apply_at(self, inputs, layer: str,
               edit: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Logits with `edit(output)` replacing the output of `layer` (first call).

    With `edit = lambda a: a + delta`, the gradient with respect to `delta`
    (zeros) is the gradient of the logits with respect to that feature map.
    """
    done = []

    def intercept(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (context.method_name == "__call__" and not done and
          "/".join(context.module.path) == layer):
        done.append(True)
        return edit(out)
      return out

    with nn.intercept_methods(intercept):
      logits = self.logits(inputs)
    if not done:
      self.check_layer(layer)
    return logits

  def with_variables(self, variables) -> "Run":
    return dataclasses.replace(self, variables=variables)


def load_run(workdir: str, *, which: str = "latest") -> Run:
  """Restores the latest (or 'best') checkpoint of the run in `workdir`."""
  from cnnjax.train import loop
  from cnnjax.train.checkpoint import Checkpointer

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CnnjaxError(f"'{workdir}' is not a cnnjax workdir (no config.json)")
  with open(path) as f:
    config = ml_collections.ConfigDict(loop._tuples(json.load(f)))
  with config.unlocked():  # One device: figures need no mesh.
    config.parallel.num_devices = 1
    config.parallel.distributed = False
  exp = loop.build_experiment(config)
  if not isinstance(exp.dataset, ArrayDataset) or exp.dataset.input_key != "image":
    raise CnnjaxError(
        f"visualization needs images held in memory; dataset "
        f"'{config.dataset.name}' is "
        + ("streamed" if not isinstance(exp.dataset, ArrayDataset) else "text"))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True,
                              best_metric=config.best_metric,
                              best_mode=config.best_mode)
  try:
    step = checkpointer.best_step() if which == "best" else checkpointer.latest_step()
    if step is None:
      raise CnnjaxError(f"no {which} checkpoint in '{workdir}/checkpoints'")
    state, _ = checkpointer.restore(step, exp.state)
  finally:
    checkpointer.close()
  model = exp.state.apply_fn.__self__
  stats = pipeline.channel_stats(exp.dataset, config.dataset)
  return Run(config=config, model=model, variables=jax.device_get(state.variables),
             dataset=exp.dataset, stats=stats, step=step, workdir=workdir)


def make_run(model: nn.Module, variables, dataset: ArrayDataset, *,
             config: ml_collections.ConfigDict | None = None,
             stats=None) -> Run:
  """A Run from parts (tests, notebooks): no workdir needed."""
  from cnnjax.config import base_config

  return Run(config=config or base_config(), model=model, variables=variables,
             dataset=dataset, stats=stats, step=0)
