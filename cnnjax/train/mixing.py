"""Mixup and CutMix, applied to a whole batch inside the jitted train step.

Mixup (Zhang et al. 2018) blends each example with a partner,
lam * x + (1 - lam) * x_partner; CutMix (Yun et al. 2019) pastes a box of the
partner into the example. Either way the loss becomes
lam * L(y) + (1 - lam) * L(y_partner) (`mixed_loss`).

As in timm, the partner of example i is example B - 1 - i (the batch reversed:
no random permutation to draw or gather; with an odd batch the middle example
is its own partner) and one lam is drawn per batch from Beta(alpha, alpha).
Everything is pure: randomness comes only from the key, so a run with the same
`fold_in(rng, step)` keys mixes identically and resumes exactly.

Shapes: images (B, H, W, C), signals (B, L, C) and volumes (B, D, H, W, C).
CutMix cuts a box over all spatial axes: an interval of L for signals, a
rectangle for images, a cuboid of (D, H, W) for volumes. The box keeps the
image's proportions (each side is the image side times (1 - lam) ** (1 / n)
for n spatial axes), so its area before clipping is about (1 - lam) of the
image.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError

# Signals (B, L, C), images (B, H, W, C) and volumes (B, D, H, W, C).
SUPPORTED_NDIMS = (3, 4, 5)


def _check_number(name: str, value, low: float, high: float | None = None) -> float:
  """`value` as a float, if it is a Python number in [low, high]."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise CnnjaxError(f"{name} must be a plain number, not {value!r}; set it in the config.")
  value = float(value)
  if value < low or (high is not None and value > high):
    bound = f"between {low} and {high}" if high is not None else f"at least {low}"
    raise CnnjaxError(f"{name} must be {bound}, but got {value}.")
  return value


def _check_images(images: jax.Array) -> None:
  if images.ndim not in SUPPORTED_NDIMS:
    raise CnnjaxError(f"mixup/cutmix need a batch of signals (B, L, C), images (B, H, W, C) "
                      f"or volumes (B, D, H, W, C), but got shape {tuple(images.shape)}; "
                      "turn mixing off for this dataset.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise CnnjaxError(f"mixup/cutmix need float images, not {images.dtype}; convert them with "
                      "cnnjax.data.augment.to_float before mixing.")


def partner_indices(batch_size: int) -> jax.Array:
  """(B,) int32 [B-1, ..., 0]: the partner of example i is example B-1-i."""
  return jnp.arange(batch_size - 1, -1, -1, dtype=jnp.int32)


# ---------------------------------------------------------------------------
# Deterministic twins: mix with a given lam or box.


@jax.jit
def mixup(images: jax.Array, lam) -> jax.Array:
  """lam * x + (1 - lam) * x_partner for every example, partner = reversed batch."""
  lam = jnp.asarray(lam, images.dtype)
  return lam * images + (1 - lam) * images[::-1]


@functools.partial(jax.jit, static_argnums=1)
def cutmix_box(key: jax.Array, spatial_shape: tuple[int, ...],
               lam) -> tuple[jax.Array, jax.Array]:
  """Draws the CutMix box for mixing weight `lam`.

  Each side is round(size * (1 - lam) ** (1 / n)) for n spatial axes, so the
  unclipped box covers about (1 - lam) of the image; its centre is a uniform
  random pixel, and the box is then clipped to the image.

  Args:
    key: PRNG key for the centre.
    spatial_shape: (L,), (H, W) or (D, H, W).
    lam: scalar in [0, 1], the share of the image that stays.

  Returns:
    (start, stop): (n,) int32 corners; the box is start <= index < stop per axis.
  """
  sizes = jnp.asarray(spatial_shape, jnp.int32)  # (n,)
  side_fraction = (1.0 - jnp.asarray(lam, jnp.float32)) ** (1.0 / len(spatial_shape))
  sides = jnp.round(sizes * side_fraction).astype(jnp.int32)
  centres = jax.random.randint(key, (len(spatial_shape),), 0, sizes)
  start = centres - sides // 2
  stop = start + sides
  return jnp.clip(start, 0, sizes), jnp.clip(stop, 0, sizes)


@jax.jit
def cutmix(images: jax.Array, start: jax.Array,
           stop: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pastes box [start, stop) of each example's partner into the example.

  Args:
    images: (B, *spatial, C) float.
    start, stop: (n,) box corners for the n spatial axes (see `cutmix_box`).

  Returns:
    (mixed images, lam): lam = 1 - box volume / image volume, the exact share
    of each example that is its own (float32 scalar).
  """
  spatial_shape = images.shape[1:-1]
  start = jnp.asarray(start, jnp.int32)
  stop = jnp.asarray(stop, jnp.int32)
  inside = jnp.ones((), bool)
  for axis, size in enumerate(spatial_shape):
    index = jnp.arange(size)
    in_axis = (index >= start[axis]) & (index < stop[axis])  # (size,)
    shape = [1] * len(spatial_shape)
    shape[axis] = size
    inside = inside & in_axis.reshape(shape)
  inside = inside[None, ..., None]  # (1, *spatial, 1)
  mixed = jnp.where(inside, images[::-1], images)
  image_volume = math.prod(spatial_shape)
  # Count the kept pixels in integers, so an empty or full box gives lam exactly 1 or 0.
  kept_volume = image_volume - jnp.prod(stop - start)
  return mixed, kept_volume.astype(jnp.float32) / image_volume


# ---------------------------------------------------------------------------
# The random batch op.


def mix_batch(images: jax.Array, key: jax.Array, *, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, switch_prob: float = 0.5,
              prob: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mixes a batch with mixup or CutMix, as configured.

  With probability `prob` the batch is mixed, otherwise it is returned as is
  with lam = 1. A mixed batch uses CutMix with probability `switch_prob` when
  both alphas are positive, else whichever alpha is positive. lam is drawn
  from Beta(alpha, alpha) of the chosen method; for CutMix it is then
  corrected to the exact share of pixels outside the clipped box. The choice
  is a `lax.switch` on a traced index and the settings are traced values, so
  one compiled program per image shape serves every mode and setting.

  Args:
    images: (B, L, C), (B, H, W, C) or (B, D, H, W, C) float.
    key: PRNG key, e.g. `fold_in(rng, step)`.
    mixup_alpha: Beta parameter of mixup; 0 turns mixup off.
    cutmix_alpha: Beta parameter of CutMix; 0 turns CutMix off.
    switch_prob: chance of CutMix rather than mixup when both are on.
    prob: chance that a batch is mixed at all.
    (The four settings are Python numbers, as read from the config.)

  Returns:
    (mixed images, partner index (B,) int32, lam float32 scalar). Feed the
    last two to `mixed_loss`. Both alphas 0 returns the images unchanged.
  """
  mixup_alpha = _check_number("mixup_alpha", mixup_alpha, 0.0)
  cutmix_alpha = _check_number("cutmix_alpha", cutmix_alpha, 0.0)
  switch_prob = _check_number("mixing switch_prob", switch_prob, 0.0, 1.0)
  prob = _check_number("mixing prob", prob, 0.0, 1.0)
  partner_index = partner_indices(images.shape[0])
  if mixup_alpha == 0 and cutmix_alpha == 0:
    return images, partner_index, jnp.ones((), jnp.float32)
  _check_images(images)
  # With one method off, the switch always picks the other one.
  if mixup_alpha == 0:
    switch_prob = 1.0
  elif cutmix_alpha == 0:
    switch_prob = 0.0
  # The settings are traced, not static, so one compiled program serves them all.
  settings = jnp.asarray([mixup_alpha, cutmix_alpha, switch_prob, prob], jnp.float32)
  method, lam, key_box = _draw_mixing(key, settings)
  mixed, lam = _apply_mixing(images, method, lam, key_box)
  return mixed, partner_index, lam


# Two jitted halves: inside the train step they are traced together; called
# eagerly (tests, visualization), the costly Beta sampler compiles once for all
# image shapes and only the cheap mixing half compiles per shape.


@jax.jit
def _draw_mixing(key: jax.Array,
                 settings: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(method: 0 keep / 1 mixup / 2 cutmix, lam before any cutmix correction, box key)."""
  mixup_alpha, cutmix_alpha, switch_prob, prob = settings
  key_apply, key_switch, key_lam, key_box = jax.random.split(key, 4)
  use_cutmix = jax.random.uniform(key_switch) < switch_prob  # uniform is in [0, 1)
  # One Beta draw, with the alpha of the method chosen.
  alpha = jnp.where(use_cutmix, cutmix_alpha, mixup_alpha)
  lam = jax.random.beta(key_lam, alpha, alpha).astype(jnp.float32)
  apply = jax.random.uniform(key_apply) < prob
  method = jnp.where(apply, jnp.where(use_cutmix, 2, 1), 0)
  return method, lam, key_box


@jax.jit
def _apply_mixing(images: jax.Array, method: jax.Array, lam: jax.Array,
                  key_box: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Runs the method drawn by `_draw_mixing`; returns (mixed images, final lam)."""

  def keep():
    return images, jnp.ones((), jnp.float32)

  def mix_up():
    return mixup(images, lam), lam

  def cut_mix():
    start, stop = cutmix_box(key_box, images.shape[1:-1], lam)
    return cutmix(images, start, stop)

  return jax.lax.switch(method, (keep, mix_up, cut_mix))


# ---------------------------------------------------------------------------
# The loss of a mixed batch.


def mixed_loss(loss_fn: Callable[[jax.Array, jax.Array], jax.Array], logits: jax.Array,
               labels: jax.Array, partner_index: jax.Array, lam) -> jax.Array:
  """lam * L(logits, y) + (1 - lam) * L(logits, y_partner), per example.

  Works for any per-example loss `loss_fn(logits, labels) -> (B,)` and any
  labels whose first axis is the batch: int (B,) classes or 0/1 (B, K)
  multi-label targets. For losses linear in the target (softmax and sigmoid
  cross-entropy) this equals the loss of the mixed soft target.
  """
  partner_labels = jnp.take(labels, partner_index, axis=0)
  own = loss_fn(logits, labels)
  other = loss_fn(logits, partner_labels)
  lam = jnp.asarray(lam, own.dtype)
  return lam * own + (1 - lam) * other
