"""Losses and metric sums, checked against numbers computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.config import base_config
from cnnjax.errors import CnnjaxError
from cnnjax.train import losses
from cnnjax.train import metrics

LOGITS = np.array([[2.0, 1.0, 0.1, -1.0],
                   [0.5, 2.5, -0.3, 1.2],
                   [-1.0, 0.0, 3.0, 0.2]], np.float32)
LABELS = np.array([0, 3, 2], np.int32)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  z = x - x.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _loss_config(name, **changes):
  c = base_config().loss
  c.name = name
  for k, v in changes.items():
    c[k] = v
  return c


# --------------------------------------------------------------------------
# Softmax cross-entropy


def test_softmax_cross_entropy_is_minus_log_softmax_at_the_label():
  expected = -_log_softmax(LOGITS)[np.arange(3), LABELS]
  got = losses.softmax_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS))
  assert got.shape == (3,)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # A fixed number too, so the check does not only agree with itself:
  # -log softmax([0, 0])[0] = log 2.
  two = losses.softmax_cross_entropy(jnp.zeros((1, 2)), jnp.array([0]))
  np.testing.assert_allclose(two, [np.log(2.0)], rtol=1e-6)


def test_label_smoothing_mixes_cross_entropy_with_the_uniform_term():
  eps = 0.2
  logp = _log_softmax(LOGITS)
  ce = -logp[np.arange(3), LABELS]
  uniform = -logp.mean(axis=-1)  # mean over k of -log p_k
  expected = (1 - eps) * ce + eps * uniform
  got = losses.softmax_cross_entropy(
      jnp.asarray(LOGITS), jnp.asarray(LABELS), label_smoothing=eps)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Smoothing must actually change the value (not silently ignored).
  assert not np.allclose(got, ce, rtol=1e-3)


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot():
  logits = jnp.asarray(LOGITS)
  labels = jnp.asarray(LABELS)
  grad = jax.grad(
      lambda l: jnp.mean(losses.softmax_cross_entropy(l, labels)))(logits)
  p = np.exp(_log_softmax(LOGITS))
  onehot = np.eye(4)[LABELS]
  np.testing.assert_allclose(grad, (p - onehot) / 3, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# Multi-class hinge (Weston-Watkins SVM)


def test_multiclass_hinge_cs231n_example():
  scores = jnp.array([[3.2, 5.1, -1.7],
                      [1.3, 4.9, 2.0],
                      [2.2, 2.5, -3.1]])
  labels = jnp.array([0, 1, 2])
  got = losses.multiclass_hinge(scores, labels)
  # max(0, 5.1-3.2+1) + max(0, -1.7-3.2+1) = 2.9 + 0;
  # everything is below the margin for the second row;
  # max(0, 2.2+3.1+1) + max(0, 2.5+3.1+1) = 6.3 + 6.6 = 12.9.
  np.testing.assert_allclose(got, [2.9, 0.0, 12.9], rtol=1e-5, atol=1e-6)


def _torch_multi_margin(x, y, margin=1.0):
  """PyTorch's MultiMarginLoss(p=1, reduction='none'), written out."""
  x = np.asarray(x, np.float64)
  n, c = x.shape
  out = np.zeros(n)
  for i in range(n):
    for j in range(c):
      if j != y[i]:
        out[i] += max(0.0, margin - x[i, y[i]] + x[i, j])
  return out / c


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_multiclass_hinge_is_num_classes_times_torch_multi_margin(margin):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 5)).astype(np.float32)
  y = rng.integers(0, 5, size=16)
  got = losses.multiclass_hinge(jnp.asarray(x), jnp.asarray(y), margin=margin)
  np.testing.assert_allclose(got, 5 * _torch_multi_margin(x, y, margin),
                             rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Mean squared error and sigmoid cross-entropy


def test_mean_squared_error_against_one_hot_targets():
  logits = jnp.array([[0.5, 0.2, -0.1], [1.0, 1.0, 1.0]])
  labels = jnp.array([1, 2])
  # (0.5)^2 + (0.2-1)^2 + (-0.1)^2 = 0.25 + 0.64 + 0.01 = 0.9; 1 + 1 + 0 = 2.
  np.testing.assert_allclose(
      losses.mean_squared_error(logits, labels), [0.9, 2.0], rtol=1e-6)
  # Dense targets of the same shape are used as they are.
  dense = jnp.array([[0.5, 0.2, -0.1], [0.5, 1.0, 0.0]])
  np.testing.assert_allclose(
      losses.mean_squared_error(logits, dense), [0.0, 1.25], atol=1e-6)


def _sigmoid_ce(x, t):
  x = np.asarray(x, np.float64)
  p = 1 / (1 + np.exp(-x))
  return -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=-1)


def test_sigmoid_cross_entropy_multi_label():
  targets = np.array([[1, 0, 0, 1],
                      [0, 0, 0, 0],
                      [1, 1, 1, 0]], np.float32)
  got = losses.sigmoid_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(targets))
  np.testing.assert_allclose(got, _sigmoid_ce(LOGITS, targets), rtol=1e-5)
  # Integer 0/1 targets mean the same thing as float ones.
  got_int = losses.sigmoid_cross_entropy(
      jnp.asarray(LOGITS), jnp.asarray(targets.astype(np.int32)))
  np.testing.assert_allclose(got_int, got, rtol=1e-6)


def test_sigmoid_cross_entropy_integer_labels_are_one_hot():
  got = losses.sigmoid_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS))
  np.testing.assert_allclose(
      got, _sigmoid_ce(LOGITS, np.eye(4)[LABELS]), rtol=1e-5)


def test_sigmoid_cross_entropy_label_smoothing_moves_targets_to_half():
  eps = 0.1
  targets = np.eye(4)[LABELS]
  got = losses.sigmoid_cross_entropy(
      jnp.asarray(LOGITS), jnp.asarray(LABELS), label_smoothing=eps)
  smoothed = targets * (1 - eps) + 0.5 * eps  # 1 -> 0.95, 0 -> 0.05
  np.testing.assert_allclose(got, _sigmoid_ce(LOGITS, smoothed), rtol=1e-5)


# --------------------------------------------------------------------------
# get_loss


def test_get_loss_dispatches_by_name_with_options():
  logits, labels = jnp.asarray(LOGITS), jnp.asarray(LABELS)
  for name, fn in losses.LOSSES.items():
    got = losses.get_loss(_loss_config(name))(logits, labels)
    np.testing.assert_allclose(got, fn(logits, labels), rtol=1e-6)
  for name in ("softmax_cross_entropy", "sigmoid_cross_entropy"):
    smoothed = losses.get_loss(
        _loss_config(name, label_smoothing=0.3))(logits, labels)
    np.testing.assert_allclose(
        smoothed, losses.LOSSES[name](logits, labels, label_smoothing=0.3),
        rtol=1e-6)
    assert not np.allclose(smoothed, losses.LOSSES[name](logits, labels))
  hinge = losses.get_loss(_loss_config("multiclass_hinge", margin=2.0))
  np.testing.assert_allclose(
      hinge(logits, labels), losses.multiclass_hinge(logits, labels, margin=2.0),
      rtol=1e-6)
  # The margin is really passed on: by hand, margin 1 gives [0, 2.6, 0] and
  # margin 2 gives [1.1, 5.1, 0].
  np.testing.assert_allclose(hinge(logits, labels), [1.1, 5.1, 0.0], rtol=1e-5)


def test_unknown_loss_name_raises():
  with pytest.raises(CnnjaxError, match="unknown loss 'hinge'"):
    losses.get_loss(_loss_config("hinge"))


# --------------------------------------------------------------------------
# Metric sums


def test_classification_sums_top1_top5_and_mask():
  # Seven classes, so that top-5 is reported.
  logits = np.array([
      [7, 6, 5, 4, 3, 2, 1],  # top-1 = 0, top-5 = {0..4}
      [7, 6, 5, 4, 3, 2, 1],
      [1, 2, 3, 4, 5, 6, 7],  # top-1 = 6, top-5 = {2..6}
      [7, 6, 5, 4, 3, 2, 1],  # padding row: a top-1 hit that must not count
  ], np.float32)
  labels = np.array([0, 4, 1, 0])
  loss = np.array([1.0, 2.0, 3.0, 100.0], np.float32)
  mask = np.array([1, 1, 1, 0], np.float32)
  sums = jax.device_get(metrics.classification_sums(
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(loss),
      jnp.asarray(mask)))
  assert float(sums["count"]) == 3
  assert float(sums["loss"]) == 6.0
  assert float(sums["accuracy"]) == 1  # row 0 only
  assert float(sums["top5_accuracy"]) == 2  # rows 0 and 1
  means = metrics.sums_to_means(sums)
  assert set(means) == {"loss", "accuracy", "top5_accuracy"}
  assert means["loss"] == pytest.approx(2.0)
  assert means["accuracy"] == pytest.approx(1 / 3)
  assert means["top5_accuracy"] == pytest.approx(2 / 3)

  # No mask: every row counts, the padding row's hit included.
  sums = metrics.classification_sums(
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(loss))
  assert float(sums["count"]) == 4 and float(sums["accuracy"]) == 2
  assert float(sums["top5_accuracy"]) == 3


def test_classification_sums_no_top5_with_few_classes():
  sums = metrics.classification_sums(
      jnp.asarray(LOGITS), jnp.asarray(LABELS), jnp.zeros(3))
  assert "top5_accuracy" not in sums
  # argmax rows: 0, 1, 2 against labels 0, 3, 2.
  assert float(sums["accuracy"]) == 2


def test_classification_sums_multi_label():
  logits = np.array([[2.0, -1.0, 0.5, -0.2],   # predicts 1 0 1 0
                     [-3.0, 1.0, 1.0, 1.0],    # predicts 0 1 1 1
                     [1.0, 1.0, 1.0, 1.0]], np.float32)
  targets = np.array([[1, 0, 0, 0],   # 3 of 4 right
                      [0, 1, 1, 1],   # 4 of 4
                      [1, 1, 1, 1]],  # 4 of 4, but masked out
                     np.float32)
  mask = np.array([1, 1, 0], np.float32)
  sums = metrics.classification_sums(
      jnp.asarray(logits), jnp.asarray(targets), jnp.ones(3), jnp.asarray(mask))
  assert float(sums["accuracy"]) == pytest.approx(0.75 + 1.0)
  assert float(sums["count"]) == 2
  assert "top5_accuracy" not in sums
  assert metrics.sums_to_means(sums)["accuracy"] == pytest.approx(0.875)


def test_add_sums_then_means_equals_means_over_the_union():
  logits = jnp.asarray(LOGITS)
  labels = jnp.asarray(LABELS)
  loss = jnp.array([1.0, 2.0, 3.0])
  a = metrics.classification_sums(logits[:1], labels[:1], loss[:1])
  b = metrics.classification_sums(logits[1:], labels[1:], loss[1:])
  whole = metrics.sums_to_means(metrics.classification_sums(logits, labels, loss))
  assert metrics.sums_to_means(metrics.add_sums(a, b)) == pytest.approx(whole)
  assert whole == pytest.approx({"loss": 2.0, "accuracy": 2 / 3})


# --------------------------------------------------------------------------
# Each loss trains a linear classifier on a tiny separable problem


def _tiny_problem():
  """Three well-separated 2-D clusters, 20 points each."""
  rng = np.random.default_rng(0)
  centres = np.array([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
  labels = np.repeat(np.arange(3), 20)
  x = centres[labels] + 0.3 * rng.normal(size=(60, 2))
  return jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_each_loss_trains_a_linear_model(name):
  x, y = _tiny_problem()
  loss_fn = losses.get_loss(_loss_config(name))
  params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  tx = optax.sgd(0.05)

  def objective(p):
    return jnp.mean(loss_fn(x @ p["w"] + p["b"], y))

  def step(carry, _):
    p, s = carry
    value, g = jax.value_and_grad(objective)(p)
    updates, s = tx.update(g, s, p)
    return (optax.apply_updates(p, updates), s), value

  (params, _), history = jax.jit(
      lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=200))(params)
  history = np.asarray(history)
  final = float(objective(params))
  assert np.all(np.isfinite(history))
  assert final < 0.5 * history[0], (history[0], final)
  accuracy = float(jnp.mean(jnp.argmax(x @ params["w"] + params["b"], -1) == y))
  assert accuracy == 1.0
