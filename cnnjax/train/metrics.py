"""Metrics as sums over a batch, so that batches and devices add up exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnjax.data.arrays import IGNORE_LABEL


def classification_sums(logits, labels, per_example_loss, mask=None):
  """Sums of loss, top-1 and top-5 hits and the example count.

  For multi-label targets (B, C), 'correct' counts labels predicted right at
  threshold 0 on the logits (sigmoid 0.5), averaged over the C labels; for
  class maps (B, H, W), each image's pixel accuracy (ignored pixels left out).
  """
  if mask is None:
    mask = jnp.ones(per_example_loss.shape, jnp.float32)
  sums = {"loss": jnp.sum(per_example_loss * mask), "count": jnp.sum(mask)}
  logits = logits.astype(jnp.float32)
  if labels.ndim == logits.ndim:  # multi-label
    hits = jnp.mean((logits > 0) == (labels > 0.5), axis=-1)
    sums["accuracy"] = jnp.sum(hits * mask)
    return sums
  if labels.ndim >= 2:  # class maps: each image's pixel accuracy
    valid = labels != IGNORE_LABEL
    axes = tuple(range(1, labels.ndim))
    hits = jnp.sum((jnp.argmax(logits, axis=-1) == labels) & valid, axis=axes)
    sums["accuracy"] = jnp.sum(hits / jnp.maximum(jnp.sum(valid, axis=axes), 1) * mask)
    return sums
  top1 = jnp.argmax(logits, axis=-1) == labels
  sums["accuracy"] = jnp.sum(top1 * mask)
  if logits.shape[-1] > 5:
    _, top5 = jax.lax.top_k(logits, 5)
    hit5 = jnp.any(top5 == labels[:, None], axis=-1)
    sums["top5_accuracy"] = jnp.sum(hit5 * mask)
  return sums


def add_sums(a, b):
  return jax.tree.map(jnp.add, a, b)


def sums_to_means(sums) -> dict[str, float]:
  """{'loss': total, 'count': n, ...} -> {'loss': mean, ...} on the host."""
  sums = jax.device_get(sums)
  count = float(sums["count"])
  return {k: float(v) / count for k, v in sums.items() if k != "count"}
