"""Classification losses, each `loss(logits, labels) -> per-example loss`.

Integer labels have shape (B,); multi-label targets are 0/1 arrays of shape
(B, num_classes) (sigmoid cross-entropy only). For segmentation, logits
(B, H, W, K) and class maps (B, H, W): softmax cross-entropy averages each
image's pixels, those labelled IGNORE_LABEL (255) left out.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from cnnjax.data.arrays import IGNORE_LABEL
from cnnjax.errors import CnnjaxError


def _one_hot(labels, num_classes, dtype=jnp.float32):
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def softmax_cross_entropy(logits, labels, *, label_smoothing: float = 0.0):
  """Cross-entropy of softmax(logits); label smoothing spreads eps uniformly.
  With a class map per example (segmentation), the mean over its pixels
  whose label is not IGNORE_LABEL (0 for an image without any)."""
  pixels = labels.ndim >= 2 and labels.ndim == logits.ndim - 1
  valid = labels != IGNORE_LABEL if pixels else None
  if pixels:
    labels = jnp.where(valid, labels, 0)
  targets = _one_hot(labels, logits.shape[-1], logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  loss = optax.softmax_cross_entropy(logits, targets)
  if not pixels:
    return loss
  axes = tuple(range(1, loss.ndim))
  return jnp.sum(loss * valid, axis=axes) / jnp.maximum(jnp.sum(valid, axis=axes), 1)


def multiclass_hinge(logits, labels, *, margin: float = 1.0):
  """The multi-class SVM loss: sum over wrong classes j of max(0, s_j - s_y + margin).

  This is the Weston-Watkins form taught with the linear classifier; PyTorch's
  MultiMarginLoss is the same divided by the number of classes.
  """
  correct = jnp.take_along_axis(logits, labels[:, None], axis=-1)  # (B, 1)
  margins = jnp.maximum(0.0, logits - correct + margin)
  wrong = 1.0 - _one_hot(labels, logits.shape[-1], logits.dtype)
  return jnp.sum(margins * wrong, axis=-1)


def mean_squared_error(logits, labels):
  """Squared distance between the outputs and the one-hot target, per example."""
  targets = labels if labels.ndim == logits.ndim else _one_hot(
      labels, logits.shape[-1], logits.dtype)
  return jnp.sum(jnp.square(logits - targets), axis=-1)


def sigmoid_cross_entropy(logits, labels, *, label_smoothing: float = 0.0):
  """Independent sigmoid per class (multi-label), summed over the classes."""
  targets = labels if labels.ndim == logits.ndim else _one_hot(
      labels, logits.shape[-1], logits.dtype)
  targets = targets.astype(logits.dtype)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)


LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "multiclass_hinge": multiclass_hinge,
    "mean_squared_error": mean_squared_error,
    "sigmoid_cross_entropy": sigmoid_cross_entropy,
}


def get_loss(loss_config):
  """The per-example loss function named by `loss_config.name`."""
  name = loss_config.name
  if name not in LOSSES:
    raise CnnjaxError(f"unknown loss '{name}' (known: {', '.join(sorted(LOSSES))})")
  if name in ("softmax_cross_entropy", "sigmoid_cross_entropy"):
    return functools.partial(LOSSES[name], label_smoothing=loss_config.label_smoothing)
  if name == "multiclass_hinge":
    return functools.partial(multiclass_hinge, margin=loss_config.margin)
  return LOSSES[name]
