"""Durations: smoke runs, and the one place where epochs become steps."""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from cnnjax.errors import CnnjaxError


def apply_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """With config.smoke set, shrinks the run to a few steps; otherwise a no-op.

  The dataset loaders also read `smoke` and generate or load less data.
  """
  if not config.smoke:
    return config
  with config.unlocked():
    steps = config.smoke_steps
    config.num_steps = steps
    config.num_epochs = 0.0
    config.log_every = max(1, min(config.log_every, steps // 3))
    config.eval_every = max(1, steps // 2)
    config.checkpoint_every = max(1, steps // 2)
    config.eval_batch_size = min(config.eval_batch_size, 256)
    config.batch_size = min(config.batch_size, 32)
    config.schedule.warmup_steps = min(config.schedule.warmup_steps, steps // 4)
    config.schedule.warmup_epochs = 0.0
    if config.dataset.image_size > config.smoke_image_size > 0:
      config.dataset.image_size = config.smoke_image_size
  return config


@dataclasses.dataclass(frozen=True)
class Durations:
  """Every step count the loop and the schedules need, in steps."""
  num_steps: int
  steps_per_epoch: int
  warmup_steps: int
  step_size: int
  boundaries: tuple[int, ...]


def resolve_durations(config: ml_collections.ConfigDict,
                      num_train_examples: int) -> Durations:
  """The one place where epochs become steps."""
  if num_train_examples < config.batch_size:
    raise CnnjaxError(
        f"the training split has {num_train_examples} examples, fewer than "
        f"one batch of {config.batch_size}; lower config.batch_size")
  steps_per_epoch = num_train_examples // config.batch_size

  def to_steps(steps: int, epochs: float) -> int:
    return int(steps) if steps else int(math.ceil(epochs * steps_per_epoch))

  num_steps = to_steps(config.num_steps, config.num_epochs)
  s = config.schedule
  boundaries = tuple(int(b) for b in s.boundaries) or tuple(
      int(math.ceil(e * steps_per_epoch)) for e in s.boundary_epochs)
  return Durations(
      num_steps=num_steps,
      steps_per_epoch=steps_per_epoch,
      warmup_steps=to_steps(s.warmup_steps, s.warmup_epochs),
      step_size=to_steps(s.step_size, s.step_size_epochs),
      boundaries=boundaries)
