"""Reading a split for the inspection methods: which examples, chunked scans.

Shared by `inspection`, `neighbours` and `embedding`:

- `split_name` and `query_examples`: the split and the examples a method
  reads (from `Options`);
- `batches`: a jitted function over a whole split (or some of its rows) in
  chunks of `options.batch_size`, through `runs.inference.iter_batches` (the
  last chunk is padded, so nothing recompiles);
- `features_fn` and `penultimate_features`: the features that neighbours and
  embeddings compare (by default the input of the head);
- `class_name`: a label as the figures title it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.runs import inference
from cnnjax.viz.registry import Options


def split_name(trained, options: Options, default: str | None = None) -> str:
  """`options.split`, else `default`, else the evaluation split; checked."""
  split = options.split or default or trained.eval_split
  if split not in trained.dataset.splits:
    raise CnnjaxError(f"dataset '{trained.dataset.name}' has no split '{split}' "
                      f"(its splits: {', '.join(trained.dataset.splits)})")
  return split


def query_examples(trained, options: Options):
  """The examples a method explains: `options.indices`, else the first
  `options.num_examples` of the split."""
  split = split_name(trained, options)
  if options.indices:
    return trained.examples(split, indices=list(options.indices))
  return trained.examples(split, max(1, options.num_examples))


def class_name(trained, label) -> str:
  """The name of a class index; for a multilabel row, its first positives."""
  label = np.asarray(label)
  if label.ndim:
    positive = np.flatnonzero(label)
    return ",".join(trained.class_names[int(p)] for p in positive[:2]) or "-"
  names = trained.class_names
  return names[int(label)] if 0 <= int(label) < len(names) else str(int(label))


def batches(trained, split: str, batch_size: int, fn: Callable,
            indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, Any]]:
  """Yields (rows, fn(variables, inputs)) over the rows of `split` (all, or
  `indices`) in equal chunks; `fn` is jitted once.

  `fn`'s outputs must have the chunk's examples on their leading axis: the
  padding rows of the last chunk are cut from it.
  """
  images = trained.dataset.splits[split]["image"]
  rows = np.arange(len(images)) if indices is None else np.asarray(indices)
  jitted = jax.jit(lambda variables, raw: fn(variables, trained.normalize(raw)))

  def chunk(where):  # Only a chunk's images are read (the split may be large).
    return jitted(trained.variables, np.asarray(images[where]))

  for where, out in inference.iter_batches(chunk, (rows,), batch_size):
    yield rows[where], out


def features_fn(trained, layer: str | None) -> Callable:
  """fn(variables, inputs) -> (B, D) features: the input of the last layer
  (the head) when `layer` is None, else `layer`'s output, flattened."""
  if layer is not None:
    trained.check_layer(layer)
    head = None
  else:
    head = trained.layer_names()[-1]

  def features(variables, inputs):
    bound = trained.with_variables(variables)
    if layer is not None:
      out = bound.activations(inputs, [layer])[layer]
    else:
      import flax.linen as nn
      found = []

      def record(next_fun, args, kwargs, context):
        if (context.method_name == "__call__" and not found
            and "/".join(context.module.path) == head):
          found.append(args[0])
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(record):
        bound.logits(inputs)
      out = found[0]
    return jnp.reshape(out, (out.shape[0], -1)).astype(jnp.float32)

  return features


def penultimate_features(trained, inputs, layer: str | None = None) -> np.ndarray:
  """(N, D) features of model inputs: by default the input of the last layer
  (the head; e.g. LeNet's ReLU(f6), a ResNet's pooled features), else the
  output of `layer`, flattened."""
  fn = jax.jit(features_fn(trained, layer))
  return np.asarray(fn(trained.variables, jnp.asarray(inputs)))

