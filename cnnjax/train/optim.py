"""Optax optimizers and learning-rate schedules from the config."""

from __future__ import annotations

import collections
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from cnnjax.config import Durations, parse_multipliers
from cnnjax.errors import CnnjaxError
from cnnjax.train import transfer
from cnnjax.trees import flat_paths, path_string

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
  start = lr * float(s.get("warmup_from", 0.0))  # older configs lack the key
  return optax.join_schedules(
      [optax.linear_schedule(start, lr, warmup), main], [warmup])


def _decay_mask(mode: str):
  """None (decay everything) or a function of the params tree; a function,
  not a tree, so that it also fits the partial trees of `multi_transform`."""
  if mode == "all":
    return None
  if mode == "kernels":
    return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  raise CnnjaxError(f"config.optimizer.weight_decay_mask must be 'all' or "
                    f"'kernels', got '{mode}'")


def lr_factors(params, rules: Sequence[str]):
  """The learning-rate factor of every parameter, as a tree like `params`.

  A parameter's path is its '/'-joined key path ('Conv_0/kernel',
  'stage3/block0/conv1/kernel'); the first rule whose regex `re.search`es
  it gives the factor, and unmatched parameters get 1.
  """
  parsed = parse_multipliers(rules)

  def factor(key_path, _):
    path = path_string(key_path)
    return next((f for pattern, f in parsed if pattern.search(path)), 1.0)

  return jax.tree_util.tree_map_with_path(factor, params)


def _group_label(factor: float) -> str:
  return "frozen" if factor == 0 else f"lr*{factor!r}"


def multiplier_rules(config, params) -> tuple[str, ...]:
  """Every learning-rate factor rule of a run: the config's, then transfer's."""
  # Older configs (a workdir's config.json) may lack the newer keys. The
  # explicit rules come first: the first match wins over the transfer's.
  return (tuple(config.optimizer.get("lr_multipliers", ())) +
          transfer.multiplier_rules(config, params))


def frozen_batch_stats(config, variables):
  """A tree like variables['batch_stats']: True for the statistics of the
  layers whose parameters all have factor 0 (frozen), None if there are none.

  A frozen BatchNorm layer keeps its running averages too, so a fixed
  feature extractor stays fixed (it still normalises with the statistics of
  the batch in training, as in PyTorch when only requires_grad is off).
  """
  batch_stats = variables.get("batch_stats") or {}
  rules = multiplier_rules(config, variables["params"])
  if not batch_stats or not rules:
    return None
  factors = flat_paths(lr_factors(variables["params"], rules))
  modules: dict[str, list[float]] = {}
  for path, f in factors.items():
    modules.setdefault(path.rsplit("/", 1)[0], []).append(f)
  frozen = {m for m, fs in modules.items() if not any(fs)}
  mask = jax.tree_util.tree_map_with_path(
      lambda kp, _: path_string(kp).rsplit("/", 1)[0] in frozen,
      batch_stats)
  return mask if any(jax.tree.leaves(mask)) else None


def make_optimizer(config, durations: Durations, params
                   ) -> tuple[optax.GradientTransformationExtraArgs, Callable]:
  """Returns the optax transformation and `learning_rate(step, opt_state)`.

  L2 weight decay is coupled (wd * w added to the gradient, as PyTorch's
  `weight_decay`) for every optimizer but adamw, where it is decoupled. The
  plateau schedule scales updates by optax's reduce_on_plateau, fed the
  training loss through `update(..., value=loss)` and judged once an epoch.

  The chain: clip the global gradient norm (`clip_norm`), then weight decay
  and the optimizer, then the plateau scale. With per-parameter learning-rate
  factors (`lr_multipliers`, and the rules `transfer.multiplier_rules` adds
  for a transfer run) the middle part is split by `optax.multi_transform`:
  each factor f > 0 gets its own copy followed by a scale of f, and factor 0
  gets `set_to_zero` (frozen: no update, no optimizer state, no weight decay;
  the global norm is then taken over the trainable gradients only).
  `learning_rate` reports the base rate, the one of factor 1.
  """
  o = config.optimizer
  if o.name not in OPTIMIZERS:
    raise CnnjaxError(f"unknown optimizer '{o.name}' (known: {', '.join(OPTIMIZERS)})")
  schedule = make_schedule(config, durations)
  mask = _decay_mask(o.weight_decay_mask)
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
  descent = []  # Weight decay and the optimizer: one copy per group.
  if o.weight_decay and o.name != "adamw":
    descent.append(optax.add_decayed_weights(o.weight_decay, mask))
  descent.append(base)

  rules = multiplier_rules(config, params)
  factors = jax.tree.leaves(lr_factors(params, rules)) if rules else []
  parts = []
  if any(f != 1.0 for f in factors):
    if not any(factors):
      raise CnnjaxError(
          "every parameter has learning-rate factor 0 (config.optimizer."
          "lr_multipliers or transfer.freeze='backbone'), so nothing would "
          "train; give a new layer factor > 0 or list it in transfer.reinit")

    def labels(tree):  # A function, as multi_transform also labels updates.
      return jax.tree.map(_group_label, lr_factors(tree, rules))

    groups = {_group_label(f): (optax.set_to_zero() if f == 0 else
                                optax.chain(*descent, optax.scale(f)))
              for f in set(factors)}
    parts.append(optax.multi_transform(groups, labels))
    trainable = (None if all(factors) else lambda tree: jax.tree.map(
        lambda f: f != 0, lr_factors(tree, rules)))
  else:
    parts.extend(descent)
    trainable = None
  clip_norm = float(o.get("clip_norm", 0.0))
  if clip_norm:
    clip = optax.clip_by_global_norm(clip_norm)
    parts.insert(0, clip if trainable is None else optax.masked(clip, trainable))
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
