"""Pure train and eval steps. `make_*` bind the static parts; jit happens in the loop."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from cnnjax.data.arrays import input_key
from cnnjax.data.pipeline import average_views
from cnnjax.train import metrics as metrics_lib
from cnnjax.train.state import TrainState


def l1_norm(params):
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def max_norm(params, value: float, layers: Sequence[str]):
  """Rescales each unit's incoming weights in `layers` to L2 norm <= value.

  For a Dense kernel (in, out) or a conv kernel (*window, in, out) the vector
  of unit j is kernel[..., j]; longer ones are scaled down to `value`, shorter
  ones are left alone (Hinton et al. 2012; Kim 2014 uses 3 on the output
  layer). Biases are not constrained.
  """
  def constrain(kernel):
    axes = tuple(range(kernel.ndim - 1))
    norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=axes, keepdims=True))
    scale = jnp.minimum(1.0, value / jnp.maximum(norms, 1e-12))
    return (kernel * scale).astype(kernel.dtype)

  params = dict(params)
  for name in layers:
    layer = dict(params[name])
    layer["kernel"] = constrain(layer["kernel"])
    params[name] = layer
  return params


def split_outputs(outputs):
  """(main logits, [auxiliary logits]) of a model's training output."""
  if isinstance(outputs, (tuple, list)):
    return outputs[0], list(outputs[1:])
  return outputs, []


def make_train_step(loss_fn: Callable, learning_rate: Callable, *,
                    l1: float = 0.0, aux_weight: float = 0.3,
                    max_norm_value: float = 0.0,
                    max_norm_layers: Sequence[str] = ()):
  """Returns `train_step(state, batch, rng) -> (state, metrics)`.

  `metrics` are sums over the batch (see `metrics.classification_sums`) plus
  the learning rate used; the loop averages them when it logs. A model that
  returns (logits, aux1, ...) in training (GoogLeNet) adds `aux_weight` times
  each auxiliary loss to the objective; the metrics are the main logits'.
  With `max_norm_value` > 0 the named layers are constrained after the update.
  """

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    inputs, labels = batch[input_key(batch)], batch["label"]

    def objective(params):
      variables = dict(state.variables, params=params)
      outputs, new_vars = state.apply_fn(
          variables, inputs, train=True, rngs={"dropout": rng},
          mutable=["batch_stats"])
      logits, auxiliary = split_outputs(outputs)
      per_example = loss_fn(logits, labels)
      loss = jnp.mean(per_example)
      total = loss + l1 * l1_norm(params) if l1 else loss
      for aux in auxiliary:
        total = total + aux_weight * jnp.mean(loss_fn(aux, labels))
      return total, (per_example, logits, new_vars.get("batch_stats", {}))

    grads, (per_example, logits, batch_stats) = jax.grad(
        objective, has_aux=True)(state.params)
    lr = learning_rate(state.step, state.opt_state)
    new_state = state.apply_gradients(grads, batch_stats=batch_stats,
                                      loss=jnp.mean(per_example))
    if max_norm_value:
      new_state = new_state.replace(params=max_norm(
          new_state.params, max_norm_value, max_norm_layers))
    sums = metrics_lib.classification_sums(logits, labels, per_example)
    return new_state, dict(sums, learning_rate=lr)

  return train_step


def make_eval_step(loss_fn: Callable, *, views: Callable | None = None,
                   multilabel: bool = False, with_scores: bool = False):
  """Returns `eval_step(state, batch) -> (metric sums, outputs)`.

  Honours batch['mask'] (padding rows count for nothing). With `views`
  (images -> (V, B, ...), test-time augmentation) the prediction is the mean
  of the views' softmax (sigmoid for multi-label). With `with_scores` the
  outputs hold the per-example class probabilities, labels and mask, for
  metrics that need the whole split (AUC); otherwise they are empty.
  """
  def eval_step(state: TrainState, batch):
    inputs, labels = batch[input_key(batch)], batch["label"]

    def apply(x):
      return state.apply_fn(state.variables, x, train=False)

    logits = average_views(apply, views(inputs), multilabel) if views else apply(inputs)
    per_example = loss_fn(logits, labels)
    mask = batch.get("mask")
    sums = metrics_lib.classification_sums(logits, labels, per_example, mask)
    if not with_scores:
      return sums, {}
    logits = logits.astype(jnp.float32)
    scores = jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits)
    if mask is None:
      mask = jnp.ones(labels.shape[0], jnp.float32)
    return sums, {"scores": scores, "label": labels, "mask": mask}

  return eval_step


def evaluate(eval_step, state: TrainState, stacked_batches):
  """Runs `eval_step` over (num_batches, B, ...) arrays with a scan: one call.

  Returns (metric sums, outputs stacked (num_batches, B, ...)).
  """

  def body(total, batch):
    sums, outputs = eval_step(state, batch)
    return metrics_lib.add_sums(total, sums), outputs

  first = jax.tree.map(lambda a: a[0], stacked_batches)
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      jax.eval_shape(eval_step, state, first)[0])
  return jax.lax.scan(body, init, stacked_batches)
