"""Mixup and CutMix: exact mixing, exact lam, mode choice, and the mixed loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.train.mixing import cutmix, cutmix_box, mix_batch, mixed_loss, mixup
from cnnjax.errors import CnnjaxError
from cnnjax.train.losses import sigmoid_cross_entropy, softmax_cross_entropy


def _normal(shape, seed=0):
  """Distinct random values, so every pixel tells whether it came from x or its partner."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


# One batch shape for most tests: mix_batch compiles once per shape, and compiling the
# Beta sampler is what costs time here.
IMAGES = _normal((4, 8, 6, 2))
AREA = 8 * 6
MANY_KEYS = list(jax.random.split(jax.random.key(7), 400))


def _mix_many(**settings):
  """(mixed (N, *IMAGES.shape), lam (N,)) of mix_batch(IMAGES) for N = 400 fixed keys.

  A Python loop over the cached compiled program: vmap would compile the Beta
  sampler again, which costs more than the loop.
  """
  results = [mix_batch(IMAGES, key, **settings) for key in MANY_KEYS]
  return np.stack([r[0] for r in results]), np.array([float(r[2]) for r in results])


def _partner_mask(images, mixed):
  """(B, *spatial) bool: where `mixed` holds the partner's pixels; fails on any other value."""
  x = np.asarray(images)
  out = np.asarray(mixed)
  from_self = np.all(out == x, axis=-1)
  from_partner = np.all(out == x[::-1], axis=-1)
  assert np.all(from_self | from_partner), "a pixel came from neither x nor its partner"
  return from_partner


def _assert_box(mask):
  """The (spatial) bool mask is one axis-aligned box (possibly empty); returns its volume."""
  if not mask.any():
    return 0
  ranges = []
  for axis in range(mask.ndim):
    others = tuple(a for a in range(mask.ndim) if a != axis)
    hit = np.flatnonzero(mask.any(axis=others))
    assert np.array_equal(hit, np.arange(hit[0], hit[-1] + 1)), "box is not contiguous"
    ranges.append(slice(hit[0], hit[-1] + 1))
  box = np.zeros_like(mask)
  box[tuple(ranges)] = True
  np.testing.assert_array_equal(mask, box)
  return int(mask.sum())


def test_mixup_blends_each_example_with_the_reversed_batch():
  images = IMAGES
  mixed, partner, lam = mix_batch(images, jax.random.key(3), mixup_alpha=1.0)
  lam = float(lam)
  assert 0.0 < lam < 1.0
  np.testing.assert_array_equal(partner, [3, 2, 1, 0])
  x = np.asarray(images)
  np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[::-1], rtol=1e-6, atol=1e-6)
  # The deterministic twin gives the same thing.
  np.testing.assert_allclose(mixup(images, lam), mixed, rtol=1e-6, atol=1e-6)


def test_cutmix_pastes_one_box_and_lam_is_the_exact_share_kept():
  images = IMAGES
  clipped = 0
  for seed in range(12):
    mixed, _, lam = mix_batch(images, jax.random.key(seed), cutmix_alpha=1.0)
    mask = _partner_mask(images, mixed)  # (B, H, W)
    # One box for the whole batch, the same for every example and channel.
    assert all(np.array_equal(mask[0], m) for m in mask)
    volume = _assert_box(mask[0])
    assert float(lam) == pytest.approx(1.0 - volume / AREA, abs=1e-6)
    edges = (mask[0][0], mask[0][-1], mask[0][:, 0], mask[0][:, -1])
    clipped += 0 < volume < AREA and any(edge.any() for edge in edges)
  assert clipped > 0  # some boxes were clipped at the border, and lam still matched


def test_cutmix_box_has_the_requested_area_before_clipping():
  start, stop = cutmix_box(jax.random.key(0), (32, 32), 0.75)  # sides round(32 * 0.5) = 16
  sides = np.asarray(stop) - np.asarray(start)
  assert np.all(sides <= 16) and np.all(sides >= 8)  # a centre clips at most half a side
  boxes = [cutmix_box(key, (32, 32), 0.75) for key in MANY_KEYS[:200]]
  starts, stops = (np.array([np.asarray(box[i]) for box in boxes]) for i in (0, 1))
  sides = stops - starts  # (200, 2)
  inside = np.all((starts > 0) & (stops < 32), axis=1)
  assert inside.sum() > 20
  np.testing.assert_array_equal(sides[inside], 16)
  # lam 1 cuts nothing.
  _, lam = cutmix(IMAGES, *cutmix_box(jax.random.key(2), (8, 6), 1.0))
  assert float(lam) == 1.0


def test_cutmix_with_a_given_box():
  x = np.asarray(IMAGES)
  mixed, lam = cutmix(IMAGES, jnp.array([2, 1]), jnp.array([5, 4]))  # rows 2-4, columns 1-3
  want = x.copy()
  want[:, 2:5, 1:4] = x[::-1, 2:5, 1:4]
  np.testing.assert_array_equal(mixed, want)
  assert float(lam) == pytest.approx(1 - 9 / 48)
  mixed, lam = cutmix(IMAGES, jnp.array([0, 0]), jnp.array([8, 6]))  # the whole image
  np.testing.assert_array_equal(mixed, x[::-1])
  assert float(lam) == 0.0


@pytest.mark.parametrize("switch_prob, want_cutmix", [(0.0, False), (1.0, True)])
def test_switch_prob_picks_the_method(switch_prob, want_cutmix):
  images = IMAGES
  for seed in range(4):
    mixed, _, lam = mix_batch(images, jax.random.key(seed), mixup_alpha=1.0, cutmix_alpha=1.0,
                              switch_prob=switch_prob)
    x = np.asarray(images)
    if want_cutmix:
      _assert_box(_partner_mask(images, mixed)[0])
    else:
      np.testing.assert_allclose(mixed, float(lam) * x + (1 - float(lam)) * x[::-1],
                                 rtol=1e-6, atol=1e-6)
      assert not np.any(np.all(np.asarray(mixed) == x, axis=-1))  # every pixel blended


def test_switch_prob_half_uses_both_methods():
  mixed = _mix_many(mixup_alpha=1.0, cutmix_alpha=1.0)[0]
  x = np.asarray(IMAGES)
  # CutMix leaves each pixel equal to x or its partner; mixup changes them all.
  cut = np.all((np.asarray(mixed) == x) | (np.asarray(mixed) == x[::-1]), axis=(1, 2, 3, 4))
  assert 160 < cut.sum() < 240


def test_lam_follows_beta():
  lams = _mix_many(mixup_alpha=1.0)[1]
  # Beta(1, 1) is uniform: mean 1/2, variance 1/12.
  assert lams.mean() == pytest.approx(0.5, abs=0.05)
  assert lams.var() == pytest.approx(1 / 12, abs=0.015)
  lams = _mix_many(mixup_alpha=0.2)[1]
  assert lams.mean() == pytest.approx(0.5, abs=0.06)
  assert np.mean((lams < 0.1) | (lams > 0.9)) > 0.5  # small alpha: mostly near 0 or 1


def test_prob_zero_and_no_alpha_are_the_identity():
  images = IMAGES
  for kwargs in (dict(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0), {}):
    mixed, partner, lam = mix_batch(images, jax.random.key(0), **kwargs)
    np.testing.assert_array_equal(mixed, images)
    assert float(lam) == 1.0
    np.testing.assert_array_equal(partner, [3, 2, 1, 0])


def test_prob_half_mixes_about_half_the_batches():
  mixed, lams = _mix_many(mixup_alpha=1.0, prob=0.5)
  kept = lams == 1.0
  assert 160 < kept.sum() < 240
  np.testing.assert_array_equal(np.asarray(mixed)[kept],
                                np.broadcast_to(IMAGES, (kept.sum(),) + IMAGES.shape))


def test_signals_and_volumes_mix_along_all_spatial_axes():
  signals = _normal((4, 50, 3))  # (B, L, C)
  mixed, _, lam = mix_batch(signals, jax.random.key(1), mixup_alpha=1.0)
  x = np.asarray(signals)
  np.testing.assert_allclose(mixed, float(lam) * x + (1 - float(lam)) * x[::-1], rtol=1e-6,
                             atol=1e-6)
  for shape in ((4, 50, 3), (2, 6, 7, 8, 1)):
    images = _normal(shape)
    volumes = []
    for seed in range(6):
      mixed, _, lam = mix_batch(images, jax.random.key(seed), cutmix_alpha=1.0)
      volume = _assert_box(_partner_mask(images, mixed)[0])  # an interval / a cuboid
      assert float(lam) == pytest.approx(1.0 - volume / np.prod(shape[1:-1]), abs=1e-6)
      volumes.append(volume)
    assert max(volumes) > 0


def test_mix_batch_is_deterministic_per_key():
  def step(key):
    return mix_batch(IMAGES, key, mixup_alpha=0.4, cutmix_alpha=1.0)

  first = step(jax.random.key(11))
  again = step(jax.random.key(11))
  other = step(jax.random.key(12))
  np.testing.assert_array_equal(first[0], again[0])
  assert float(first[2]) == float(again[2]) != float(other[2])


def test_mixed_softmax_ce_equals_ce_of_the_mixed_one_hot_target():
  logits = _normal((6, 5), seed=1)
  labels = jnp.array([0, 3, 1, 4, 2, 2])
  partner = jnp.arange(5, -1, -1)
  lam = 0.3
  got = mixed_loss(softmax_cross_entropy, logits, labels, partner, lam)
  one_hot = np.eye(5, dtype=np.float32)[np.asarray(labels)]
  targets = lam * one_hot + (1 - lam) * one_hot[::-1]
  want = optax.softmax_cross_entropy(logits, targets)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # lam 1 is the plain loss.
  np.testing.assert_allclose(mixed_loss(softmax_cross_entropy, logits, labels, partner, 1.0),
                             softmax_cross_entropy(logits, labels), rtol=1e-6)


def test_mixed_loss_handles_multilabel_targets():
  logits = _normal((4, 3), seed=2)
  targets = jnp.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], jnp.float32)
  partner = jnp.arange(3, -1, -1)
  got = mixed_loss(sigmoid_cross_entropy, logits, targets, partner, 0.8)
  soft = 0.8 * np.asarray(targets) + 0.2 * np.asarray(targets)[::-1]
  want = optax.sigmoid_binary_cross_entropy(logits, soft).sum(-1)  # linear in the target
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mix_batch_traces_under_jit():
  # Tracing with an abstract key is what jit needs; make_jaxpr checks it without
  # paying for another compile of the Beta sampler.
  def step(key):
    return mix_batch(IMAGES, key, mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.3,
                     prob=0.9)

  shapes = jax.eval_shape(step, jax.random.key(0))
  assert [s.shape for s in shapes] == [IMAGES.shape, (4,), ()]
  assert str(jax.make_jaxpr(step)(jax.random.key(0))).count("cond") >= 1


def test_grad_through_mixed_loss_under_jit():
  labels = jnp.array([0, 1, 2, 1])
  weights = _normal((96, 3), seed=3)
  mixed, partner, lam = mix_batch(IMAGES, jax.random.key(4), mixup_alpha=1.0)
  inputs = mixed.reshape(4, 96)

  @jax.jit
  def loss_and_grad(weights, inputs, partner, lam):
    def loss(w):
      return mixed_loss(softmax_cross_entropy, inputs @ w, labels, partner, lam).mean()

    return jax.value_and_grad(loss)(weights)

  value, grad = loss_and_grad(weights, inputs, partner, lam)
  # Softmax CE's gradient in the logits is softmax - target, with the mixed target.
  inputs = np.asarray(inputs)
  probs = np.asarray(jax.nn.softmax(inputs @ np.asarray(weights)))
  one_hot = np.eye(3)[np.asarray(labels)]
  targets = float(lam) * one_hot + (1 - float(lam)) * one_hot[::-1]
  np.testing.assert_allclose(grad, inputs.T @ (probs - targets) / 4, rtol=1e-4, atol=1e-5)
  want = optax.softmax_cross_entropy(inputs @ np.asarray(weights), targets).mean()
  assert float(value) == pytest.approx(float(want), rel=1e-5)


def test_bad_settings_are_user_errors():
  images = IMAGES
  key = jax.random.key(0)
  with pytest.raises(CnnjaxError, match="mixup_alpha"):
    mix_batch(images, key, mixup_alpha=-0.1)
  with pytest.raises(CnnjaxError, match="prob"):
    mix_batch(images, key, mixup_alpha=1.0, prob=1.5)
  with pytest.raises(CnnjaxError, match="shape"):
    mix_batch(images.reshape(4, 96), key, mixup_alpha=1.0)
  with pytest.raises(CnnjaxError, match="to_float"):
    mix_batch(images.astype(jnp.uint8), key, cutmix_alpha=1.0)
