"""On-device augmentation: shapes, exact shifts, reproducibility."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data.augment import augment_batch, random_flip, random_translate


def test_translate_is_an_exact_shift_with_edge_padding():
  images = jax.random.normal(jax.random.key(0), (64, 6, 7, 2))
  key = jax.random.key(1)
  out = np.asarray(random_translate(images, key, max_shift=2))
  assert out.shape == images.shape
  # Recover each example's offset the way the function draws it.
  offsets = np.asarray(jax.random.randint(key, (64, 2), 0, 5))
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  for i, (dy, dx) in enumerate(offsets):
    np.testing.assert_array_equal(out[i], padded[i, dy:dy + 6, dx:dx + 7])
  assert len({tuple(o) for o in offsets}) > 10  # examples move independently
  np.testing.assert_array_equal(random_translate(images, key, 0), images)


def test_translate_works_on_1d_signals():
  signals = jnp.arange(2 * 10 * 1, dtype=jnp.float32).reshape(2, 10, 1)
  out = random_translate(signals, jax.random.key(0), max_shift=3)
  assert out.shape == signals.shape


def test_flip_mirrors_about_half_the_batch():
  images = jax.random.normal(jax.random.key(0), (200, 4, 5, 1))
  out = np.asarray(random_flip(images, jax.random.key(2)))
  flipped = [np.array_equal(o, np.asarray(x)[:, ::-1]) for o, x in zip(out, images)]
  kept = [np.array_equal(o, np.asarray(x)) for o, x in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 70 < sum(flipped) < 130


def test_augment_batch_is_reproducible_and_leaves_labels_alone():
  cfg = ml_collections.ConfigDict({"translate": 2, "flip": True})
  batch = {"image": jax.random.normal(jax.random.key(0), (8, 8, 8, 1)),
           "label": jnp.arange(8)}
  a = augment_batch(batch, jax.random.key(5), cfg)
  b = augment_batch(batch, jax.random.key(5), cfg)
  c = augment_batch(batch, jax.random.key(6), cfg)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  np.testing.assert_array_equal(a["label"], batch["label"])
