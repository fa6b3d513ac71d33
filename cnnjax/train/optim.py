"""Optax optimizers and learning-rate schedules from the config."""

from __future__ import annotations

import collections
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from cnnjax.config import Durations
from cnnjax.errors import CnnjaxError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "step", "multistep", "cosine", "linear", "plateau")


def make_schedule(config, durations: Durations) -> optax.Schedule:
  """The learning rate as a function of the step, warmup included.

  'plateau' is constant here; its reductions live in the optimizer state
  (see `make_optimizer`).
  """
  s = config.schedule
  lr = config.optimizer.learning_rate
  warmup = durations.warmup_steps
  decay_steps = max(1, durations.num_steps - warmup)
  if s.name not in SCHEDULES:
    raise CnnjaxError(f"unknown schedule '{s.name}' (known: {', '.join(SCHEDULES)})")
  if s.name in ("constant", "plateau"):
    main = optax.constant_schedule(lr)
  elif s.name == "step":  # step_size counts from the end of the warmup
    if durations.step_size <= 0:
      raise CnnjaxError("schedule 'step' needs config.schedule.step_size "
                        "(or step_size_epochs) > 0")
    main = optax.exponential_decay(lr, transition_steps=durations.step_size,
                                   decay_rate=s.gamma, staircase=True)
  elif s.name == "multistep":
    if not durations.boundaries:
      raise CnnjaxError("schedule 'multistep' needs config.schedule.boundaries "
                        "(or boundary_epochs)")
    # Boundaries are absolute steps; after a warmup the schedule restarts at 0,
    # so boundaries inside the warmup all land on 0 and their factors multiply
    # (as do repeated boundaries, like PyTorch's MultiStepLR).
    shifted = collections.Counter(max(0, b - warmup) for b in durations.boundaries)
    main = optax.piecewise_constant_schedule(
        lr, {b: s.gamma ** n for b, n in shifted.items()})
  elif s.name == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=s.end_factor)
  else:  # linear
    main = optax.linear_schedule(lr, lr * s.end_factor, decay_steps)
  if warmup <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _decay_mask(params, mode: str):
  if mode == "all":
    return None
  if mode == "kernels":
    return jax.tree.map(lambda p: p.ndim > 1, params)
  raise CnnjaxError(f"config.optimizer.weight_decay_mask must be 'all' or "
                    f"'kernels', got '{mode}'")


def make_optimizer(config, durations: Durations, params
                   ) -> tuple[optax.GradientTransformationExtraArgs, Callable]:
  """Returns the optax transformation and `learning_rate(step, opt_state)`.

  L2 weight decay is coupled (wd * w added to the gradient, as PyTorch's
  `weight_decay`) for every optimizer but adamw, where it is decoupled. The
  plateau schedule scales updates by optax's reduce_on_plateau, fed the
  training loss through `update(..., value=loss)` and judged once an epoch.
  """
  o = config.optimizer
  if o.name not in OPTIMIZERS:
    raise CnnjaxError(f"unknown optimizer '{o.name}' (known: {', '.join(OPTIMIZERS)})")
  schedule = make_schedule(config, durations)
  mask = _decay_mask(params, o.weight_decay_mask)
  if o.name == "sgd":
    base = optax.sgd(schedule)
  elif o.name in ("momentum", "nesterov"):
    base = optax.sgd(schedule, momentum=o.momentum, nesterov=o.name == "nesterov")
  elif o.name == "rmsprop":
    base = optax.rmsprop(schedule, decay=o.decay, eps=o.eps)
  elif o.name == "adam":
    base = optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.name == "adamw":
    base = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                       weight_decay=o.weight_decay, mask=mask)
  else:  # adadelta
    base = optax.adadelta(schedule, rho=o.rho, eps=o.eps)
  parts = []
  if o.weight_decay and o.name != "adamw":
    parts.append(optax.add_decayed_weights(o.weight_decay, mask))
  parts.append(base)
  if config.schedule.name == "plateau":
    parts.append(optax.contrib.reduce_on_plateau(
        factor=config.schedule.factor, patience=config.schedule.patience,
        cooldown=config.schedule.cooldown,
        accumulation_size=durations.steps_per_epoch))
  tx = optax.chain(*parts)

  def learning_rate(step, opt_state):
    lr = schedule(step)
    if config.schedule.name == "plateau":
      lr = lr * optax.tree_utils.tree_get(opt_state, "scale")
    return jnp.asarray(lr, jnp.float32)

  return tx, learning_rate
