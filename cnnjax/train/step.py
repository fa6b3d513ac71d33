"""Pure train and eval steps. `make_*` bind the static parts; jit happens in the loop."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cnnjax.data.arrays import input_key
from cnnjax.train import metrics as metrics_lib
from cnnjax.train.state import TrainState


def l1_norm(params):
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def make_train_step(loss_fn: Callable, learning_rate: Callable, *, l1: float = 0.0):
  """Returns `train_step(state, batch, rng) -> (state, metrics)`.

  `metrics` are sums over the batch (see `metrics.classification_sums`) plus
  the learning rate used; the loop averages them when it logs.
  """

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    inputs, labels = batch[input_key(batch)], batch["label"]

    def objective(params):
      variables = dict(state.variables, params=params)
      logits, new_vars = state.apply_fn(
          variables, inputs, train=True, rngs={"dropout": rng},
          mutable=["batch_stats"])
      per_example = loss_fn(logits, labels)
      loss = jnp.mean(per_example)
      total = loss + l1 * l1_norm(params) if l1 else loss
      return total, (per_example, logits, new_vars.get("batch_stats", {}))

    grads, (per_example, logits, batch_stats) = jax.grad(
        objective, has_aux=True)(state.params)
    lr = learning_rate(state.step, state.opt_state)
    new_state = state.apply_gradients(grads, batch_stats=batch_stats,
                                      loss=jnp.mean(per_example))
    sums = metrics_lib.classification_sums(logits, labels, per_example)
    return new_state, dict(sums, learning_rate=lr)

  return train_step


def make_eval_step(loss_fn: Callable):
  """Returns `eval_step(state, batch) -> metric sums`; honours batch['mask']."""

  def eval_step(state: TrainState, batch):
    inputs, labels = batch[input_key(batch)], batch["label"]
    logits = state.apply_fn(state.variables, inputs, train=False)
    per_example = loss_fn(logits, labels)
    return metrics_lib.classification_sums(logits, labels, per_example,
                                           batch.get("mask"))

  return eval_step


def evaluate(eval_step, state: TrainState, stacked_batches):
  """Runs `eval_step` over (num_batches, B, ...) arrays with a scan: one call."""

  def body(total, batch):
    return metrics_lib.add_sums(total, eval_step(state, batch)), None

  first = jax.tree.map(lambda a: a[0], stacked_batches)
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      jax.eval_shape(eval_step, state, first))
  totals, _ = jax.lax.scan(body, init, stacked_batches)
  return totals
