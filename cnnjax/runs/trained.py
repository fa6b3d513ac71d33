"""A trained model, ready to be looked inside: model, weights, data, any layer.

`Run.trained(which)` (runs/run.py) restores a checkpoint's variables and gives
visualization and analyses one interface:

- `trained.examples(split, n)` -> `Examples`: model inputs (normalized, as the
  network sees them), the same images for display (floats in [0, 1]) and
  labels;
- `trained.logits(inputs)`, `trained.layer_names()`,
  `trained.activations(inputs, layers)` (any module's output, by path such as
  'c3' or 'stage2_block0/conv1', through `models.features`);
- `trained.apply_at(inputs, layer, edit)`: the logits with `edit` applied to
  one layer's output (for gradients with respect to a feature map: Grad-CAM,
  neuron maximization);
- `trained.to_display(inputs)`: model inputs back to displayable [0, 1] images;
- `trained.probabilities(raw)`: the run's own evaluation-time softmax over
  padded batches of a whole split.

Layers are found with Flax's method interception, so every registered model
works without changes. Everything here is pure JAX and can be jitted.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError
from cnnjax.models import features
from cnnjax.runs import inference


@dataclasses.dataclass
class Examples:
  inputs: np.ndarray  # (N, ...) as the model sees them (normalized)
  images: np.ndarray  # (N, H, W, C) floats in [0, 1], for display
  labels: np.ndarray  # (N,)
  indices: np.ndarray  # (N,) rows of the split they came from


@dataclasses.dataclass
class TrainedModel:
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
    shapes = features.layer_shapes(self.model, self.variables, example)
    return {name: tuple(shape[1:]) for name, shape in shapes.items()
            if shape is not None}

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
    return features.intermediate_features(self.model, self.variables, inputs,
                                          list(layers))

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

  def with_variables(self, variables) -> "TrainedModel":
    return dataclasses.replace(self, variables=variables)

  def probabilities(self, raw, *, batch_size: int | None = None) -> np.ndarray:
    """Softmax probabilities (N, K) of stored inputs (N, ...), as the run's
    evaluation computes them: the run's normalization and test-time views,
    padded batches of `batch_size` (default: the run's eval_batch_size)."""
    size = int(batch_size or self.config.get("eval_batch_size", 256))
    fn = self._probability_fn
    return inference.map_batches(lambda chunk: fn(self.variables, chunk),
                                 (np.asarray(raw),), size)

  @functools.cached_property
  def _probability_fn(self):
    """jit((variables, stored inputs (B, ...)) -> probabilities (B, K)), built
    once per TrainedModel so that repeated calls compile once."""
    views = pipeline.test_time_views(self.config.augment)

    def batch(variables, chunk):
      inputs = self.normalize(chunk)
      apply = self.with_variables(variables).logits
      logits = apply(inputs) if views is None else inference.average_views(
          apply, views(inputs), multilabel=False)
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return jax.jit(batch)

  # ---- making one

  @classmethod
  def from_run(cls, run, variables, step: int) -> "TrainedModel":
    """From a Run (runs/run.py) and the variables of one of its checkpoints."""
    dataset = run.dataset()
    return cls(config=run.config, model=run.model(), variables=variables,
               dataset=dataset, stats=pipeline.channel_stats(dataset, run.config.dataset),
               step=step, workdir=run.workdir)

  @classmethod
  def from_parts(cls, model: nn.Module, variables, dataset: ArrayDataset, *,
                 config: ml_collections.ConfigDict | None = None,
                 stats=None) -> "TrainedModel":
    """From parts (tests, notebooks): no workdir needed."""
    from cnnjax.config import base_config

    return cls(config=config or base_config(), model=model, variables=variables,
               dataset=dataset, stats=stats, step=0)
