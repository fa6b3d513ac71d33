"""Batched inference over a split: the one place that pads, batches and unpads.

Every pass of a network over many examples (evaluation during training,
`cnnjax eval`, predictions of a finished run, visualization scans, the
claims analyses) goes through these functions:

- `map_batches(fn, arrays, batch_size)`: the host cuts the rows into chunks
  of one size (the last one padded by repeating its last row, so `fn`
  compiles once), calls `fn(*chunk)` and concatenates the outputs without the
  padding rows. `iter_batches` yields the chunks' outputs one by one, for
  scans that keep a running result (top-k).
- `map_stacked(fn, stacked)`: for data already on the device as
  (num_batches, B, ...) arrays with a 'mask' (`data.arrays.stack_eval_batches`):
  one traced `lax.map`, so a whole split is one call; `unpad` then drops the
  padding rows on the host.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np


def _rows(arrays: Sequence[Any]) -> int:
  sizes = {len(a) for a in arrays}
  if len(sizes) != 1:
    raise ValueError(f"the arrays of one batch have different lengths: {sorted(sizes)}")
  return sizes.pop()


def iter_batches(fn: Callable[..., Any], arrays: Sequence[Any], batch_size: int,
                 ) -> Iterator[tuple[slice, Any]]:
  """Yields (rows, fn(*chunk) without its padding rows) over `arrays`' rows.

  `arrays` are equal-length arrays (NumPy or anything indexable by a slice);
  every chunk has min(batch_size, rows) rows, the last one padded by
  repeating its last row. `fn`'s outputs (a pytree of arrays whose leading
  axis is the chunk's rows) come back to the host as NumPy.
  """
  total = _rows(arrays)
  size = max(1, min(int(batch_size), total))
  for start in range(0, total, size):
    parts = [np.asarray(a[start:start + size]) for a in arrays]
    count = len(parts[0])
    if count < size:
      parts = [np.concatenate([p, np.repeat(p[-1:], size - count, axis=0)])
               for p in parts]
    out = jax.device_get(fn(*parts))
    yield slice(start, start + count), jax.tree.map(lambda x: np.asarray(x)[:count], out)


def map_batches(fn: Callable[..., Any], arrays: Sequence[Any], batch_size: int) -> Any:
  """fn over the rows of `arrays` in equal chunks; the outputs concatenated
  along their leading axis (see `iter_batches`)."""
  outputs = [out for _, out in iter_batches(fn, arrays, batch_size)]
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


def map_stacked(fn: Callable[[Any], Any], stacked: Any) -> Any:
  """fn over (num_batches, B, ...) batches in one traced loop: outputs stacked
  (num_batches, B, ...). Use inside jit; `fn` takes one batch."""
  return jax.lax.map(fn, stacked)


def unpad(outputs: Any, mask: Any) -> Any:
  """Per-example outputs of padded batches, (num_batches, B, ...) or (B, ...)
  with `mask` of the same leading shape, as NumPy (N, ...) without the
  padding rows (mask 0)."""
  mask = np.asarray(jax.device_get(mask))
  keep = mask.reshape(-1) > 0
  lead = mask.ndim  # The batch axes that the mask spans.

  def rows(x):
    x = np.asarray(x)
    return x.reshape(-1, *x.shape[lead:])[keep]

  return jax.tree.map(rows, jax.device_get(outputs))


def average_views(apply: Callable, views, multilabel: bool):
  """Logits whose softmax (sigmoid) is the mean over the views' softmax
  (sigmoid): test-time augmentation. `views` is (V, B, ...) (see
  `data.pipeline.test_time_views`); traceable."""
  import jax.numpy as jnp

  def one(view):
    logits = apply(view).astype(jnp.float32)
    return jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits)

  probs = jnp.mean(jax.lax.map(one, views), axis=0)
  probs = jnp.clip(probs, 1e-7, 1 - 1e-7) if multilabel else jnp.maximum(probs, 1e-30)
  return jnp.log(probs) - jnp.log1p(-probs) if multilabel else jnp.log(probs)


def concat(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Per-example dicts of several batches joined along the rows."""
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
