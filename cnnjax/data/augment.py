"""On-device augmentation, applied inside the jitted train step.

Every function takes a batch of images (B, H, W, C) (or signals (B, L, C)) and
a key, draws a separate transformation per example, and is pure: the key comes
from `fold_in(rng, step)`, so augmentation is reproducible and resumes exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_translate(images: jax.Array, key: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each example by up to `max_shift` pixels along every spatial axis.

  The border is extended with edge values (the background, for digits), then
  an input-sized window is cut at a random offset: the 'pad and random crop'
  of the CIFAR recipes when the pad is `max_shift`.
  """
  if max_shift <= 0:
    return images
  spatial = images.ndim - 2
  pad = [(0, 0)] + [(max_shift, max_shift)] * spatial + [(0, 0)]
  padded = jnp.pad(images, pad, mode="edge")
  offsets = jax.random.randint(key, (images.shape[0], spatial), 0, 2 * max_shift + 1)

  def crop(image, offset):  # image: (H + 2s, W + 2s, C)
    start = (*offset, jnp.zeros((), offset.dtype))
    return jax.lax.dynamic_slice(image, start, images.shape[1:])

  return jax.vmap(crop)(padded, offsets)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2 (axis W of (B, H, W, C))."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  flip = flip.reshape((-1,) + (1,) * (images.ndim - 1))
  return jnp.where(flip, jnp.flip(images, axis=-2), images)


def augment_batch(batch: dict, key: jax.Array, augment_config) -> dict:
  """Applies the augmentations named in `config.augment` to batch['image']."""
  if "image" not in batch:
    return batch
  images = batch["image"]
  k_shift, k_flip = jax.random.split(key)
  if augment_config.translate:
    images = random_translate(images, k_shift, augment_config.translate)
  if augment_config.flip:
    images = random_flip(images, k_flip)
  return dict(batch, image=images)
