"""Learning-rate schedules and optimizers built from the config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.config import base_config
from cnnjax.config import resolve_durations
from cnnjax.config import set_value
from cnnjax.errors import CnnjaxError
from cnnjax.train import optim

LR = 0.1


def _config(**changes):
  """A base config: 1,000 examples at batch 100 (10 steps an epoch), 100 steps."""
  c = base_config()
  c.batch_size = 100
  c.num_steps = 100
  c.optimizer.learning_rate = LR
  for key, value in changes.items():
    set_value(c, key, value)
  return c


def _schedule(num_train_examples=1000, **changes):
  c = _config(**changes)
  return optim.make_schedule(c, resolve_durations(c, num_train_examples))


def _values(schedule, steps):
  return np.array([float(schedule(s)) for s in steps])


# --------------------------------------------------------------------------
# Schedules


def test_constant_schedule():
  np.testing.assert_allclose(
      _values(_schedule(), [0, 1, 50, 100, 1000]), LR, rtol=1e-7)


def test_step_schedule():
  sched = _schedule(**{"schedule.name": "step", "schedule.step_size": 10,
                       "schedule.gamma": 0.5})
  np.testing.assert_allclose(_values(sched, [0, 9, 10, 19, 20, 25]),
                             [LR, LR, LR / 2, LR / 2, LR / 4, LR / 4], rtol=1e-6)


def test_step_size_epochs_become_steps():
  # 10 steps an epoch, so 1.5 epochs is 15 steps.
  sched = _schedule(**{"schedule.name": "step", "schedule.step_size_epochs": 1.5,
                       "schedule.gamma": 0.5})
  np.testing.assert_allclose(_values(sched, [0, 14, 15, 29, 30]),
                             [LR, LR, LR / 2, LR / 2, LR / 4], rtol=1e-6)


def test_multistep_schedule_drops_exactly_at_the_boundaries():
  sched = _schedule(**{"schedule.name": "multistep",
                       "schedule.boundaries": (30, 60), "schedule.gamma": 0.1})
  np.testing.assert_allclose(
      _values(sched, [0, 29, 30, 59, 60, 99]),
      [LR, LR, LR / 10, LR / 10, LR / 100, LR / 100], rtol=1e-6)


def test_multistep_boundary_epochs_become_steps():
  c = _config(**{"schedule.name": "multistep", "schedule.boundary_epochs": (3, 6),
                 "schedule.gamma": 0.1})
  durations = resolve_durations(c, 1000)
  assert durations.steps_per_epoch == 10
  assert durations.boundaries == (30, 60)
  sched = optim.make_schedule(c, durations)
  np.testing.assert_allclose(_values(sched, [29, 30, 59, 60]),
                             [LR, LR / 10, LR / 10, LR / 100], rtol=1e-6)


@pytest.mark.parametrize("end_factor", [0.0, 0.1])
def test_cosine_schedule(end_factor):
  sched = _schedule(**{"schedule.name": "cosine",
                       "schedule.end_factor": end_factor})
  np.testing.assert_allclose(
      _values(sched, [0, 50, 100, 200]),
      [LR, (1 + end_factor) / 2 * LR, end_factor * LR, end_factor * LR],
      rtol=1e-5, atol=1e-8)
  # Monotonically decreasing in between.
  assert np.all(np.diff(_values(sched, range(101))) <= 0)


def test_linear_schedule():
  sched = _schedule(**{"schedule.name": "linear", "schedule.end_factor": 0.2})
  np.testing.assert_allclose(_values(sched, [0, 25, 50, 100, 150]),
                             [LR, 0.8 * LR, 0.6 * LR, 0.2 * LR, 0.2 * LR],
                             rtol=1e-5)


def test_warmup_is_linear_then_the_main_schedule():
  sched = _schedule(**{"schedule.warmup_steps": 10})
  np.testing.assert_allclose(_values(sched, [0, 5, 10, 50]),
                             [0.0, LR / 2, LR, LR], rtol=1e-6, atol=1e-9)
  # warmup_epochs is in epochs: 1 epoch = 10 steps.
  sched = _schedule(**{"schedule.warmup_epochs": 1.0})
  np.testing.assert_allclose(_values(sched, [0, 5, 10]), [0.0, LR / 2, LR],
                             rtol=1e-6, atol=1e-9)


def test_cosine_after_warmup_decays_over_the_remaining_steps():
  sched = _schedule(**{"schedule.name": "cosine", "schedule.warmup_steps": 20,
                       "schedule.end_factor": 0.0})
  # Cosine runs over steps 20..100; its half-way point is step 60.
  np.testing.assert_allclose(_values(sched, [10, 20, 60, 100]),
                             [LR / 2, LR, LR / 2, 0.0], rtol=1e-5, atol=1e-8)


def test_multistep_boundaries_stay_absolute_after_warmup():
  sched = _schedule(**{"schedule.name": "multistep", "schedule.warmup_steps": 10,
                       "schedule.boundaries": (30, 60), "schedule.gamma": 0.1})
  np.testing.assert_allclose(
      _values(sched, [5, 10, 29, 30, 59, 60]),
      [LR / 2, LR, LR, LR / 10, LR / 10, LR / 100], rtol=1e-6)


def test_multistep_boundaries_inside_warmup_all_apply():
  sched = _schedule(**{"schedule.name": "multistep", "schedule.warmup_steps": 10,
                       "schedule.boundaries": (4, 8, 30), "schedule.gamma": 0.1})
  # Boundaries are absolute: by step 10 both 4 and 8 have passed.
  np.testing.assert_allclose(_values(sched, [10, 30]), [LR / 100, LR / 1000],
                             rtol=1e-6)


def test_plateau_schedule_is_constant():
  sched = _schedule(**{"schedule.name": "plateau"})
  np.testing.assert_allclose(_values(sched, [0, 50, 100, 1000]), LR, rtol=1e-7)


# --------------------------------------------------------------------------
# Config mistakes


def test_unknown_schedule_raises():
  with pytest.raises(CnnjaxError, match="unknown schedule 'exponential'"):
    _schedule(**{"schedule.name": "exponential"})


def test_unknown_optimizer_raises():
  c = _config(**{"optimizer.name": "lbfgs"})
  with pytest.raises(CnnjaxError, match="unknown optimizer 'lbfgs'"):
    optim.make_optimizer(c, resolve_durations(c, 1000), {"w": jnp.zeros(3)})


def test_step_without_step_size_raises():
  with pytest.raises(CnnjaxError, match="step_size"):
    _schedule(**{"schedule.name": "step"})


def test_multistep_without_boundaries_raises():
  with pytest.raises(CnnjaxError, match="boundaries"):
    _schedule(**{"schedule.name": "multistep"})


def test_bad_weight_decay_mask_raises():
  c = _config(**{"optimizer.weight_decay": 1e-4,
                 "optimizer.weight_decay_mask": "biases"})
  with pytest.raises(CnnjaxError, match="weight_decay_mask"):
    optim.make_optimizer(c, resolve_durations(c, 1000), {"w": jnp.zeros(3)})


# --------------------------------------------------------------------------
# Optimizers


# A well-conditioned square system, so that the minimum of f is 0.
_A = jnp.array([[2.0, 0.5, 0.0], [0.3, 1.0, 0.2], [0.0, -0.4, 1.5]])
_B = jnp.array([1.0, -2.0, 0.5])

# (learning rate, steps, other optimizer settings) that converge on the
# quadratic. Adadelta uses PyTorch's defaults (lr 1, eps 1e-6) and is slow.
_RECIPES = {
    "sgd": (0.2, 300, {}),
    "momentum": (0.05, 300, {}),
    "nesterov": (0.05, 300, {}),
    "rmsprop": (0.01, 300, {}),
    "adam": (0.05, 300, {}),
    "adamw": (0.05, 300, {}),
    "adadelta": (1.0, 2000, {"optimizer.eps": 1e-6}),
}


def _quadratic(params):
  r = _A @ params["w"] - _B
  return 0.5 * jnp.sum(r * r)


def test_every_optimizer_has_a_recipe():
  assert set(_RECIPES) == set(optim.OPTIMIZERS)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_optimizer_minimizes_a_quadratic(name):
  lr, steps, extra = _RECIPES[name]
  c = _config(**{"optimizer.name": name, "optimizer.learning_rate": lr,
                 "num_steps": steps}, **extra)
  params = {"w": jnp.zeros(3)}
  tx, _ = optim.make_optimizer(c, resolve_durations(c, 1000), params)

  def step(carry, _):
    p, s = carry
    g = jax.grad(_quadratic)(p)
    updates, s = tx.update(g, s, p)
    return (optax.apply_updates(p, updates), s), None

  (final, _), _ = jax.jit(
      lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps))(params)
  start, end = float(_quadratic(params)), float(_quadratic(final))
  assert end < start / 100, (name, start, end)


def _make(params, **changes):
  c = _config(**changes)
  tx, learning_rate = optim.make_optimizer(c, resolve_durations(c, 1000), params)
  return tx, tx.init(params), learning_rate


_G1 = {"w": jnp.array([0.5, -1.0, 2.0])}
_G2 = {"w": jnp.array([-0.25, 0.75, 1.0])}
_W = {"w": jnp.array([1.0, 2.0, -3.0])}


def test_sgd_first_update_is_minus_lr_grad():
  tx, state, _ = _make(_W)
  updates, _ = tx.update(_G1, state, _W)
  np.testing.assert_allclose(updates["w"], -LR * _G1["w"], rtol=1e-7)


def test_momentum_second_update():
  m = 0.9
  tx, state, _ = _make(_W, **{"optimizer.name": "momentum",
                              "optimizer.momentum": m})
  first, state = tx.update(_G1, state, _W)
  second, _ = tx.update(_G2, state, _W)
  np.testing.assert_allclose(first["w"], -LR * _G1["w"], rtol=1e-6)
  np.testing.assert_allclose(second["w"], -LR * (_G2["w"] + m * _G1["w"]),
                             rtol=1e-6)


def test_nesterov_first_update_looks_ahead():
  m = 0.9
  tx, state, _ = _make(_W, **{"optimizer.name": "nesterov",
                              "optimizer.momentum": m})
  first, _ = tx.update(_G1, state, _W)
  # As PyTorch: buffer b = g, update g + m * b.
  np.testing.assert_allclose(first["w"], -LR * (1 + m) * _G1["w"], rtol=1e-6)


def test_sgd_coupled_weight_decay():
  wd = 0.01
  tx, state, _ = _make(_W, **{"optimizer.weight_decay": wd})
  updates, _ = tx.update(_G1, state, _W)
  np.testing.assert_allclose(updates["w"], -LR * (_G1["w"] + wd * _W["w"]),
                             rtol=1e-6)


def _layer():
  params = {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]]),
            "bias": jnp.array([4.0, -1.0])}
  zeros = jax.tree.map(jnp.zeros_like, params)
  return params, zeros


@pytest.mark.parametrize("mode,bias_decayed", [("kernels", False), ("all", True)])
def test_weight_decay_mask(mode, bias_decayed):
  wd = 0.1
  params, zeros = _layer()
  tx, state, _ = _make(params, **{"optimizer.weight_decay": wd,
                                  "optimizer.weight_decay_mask": mode})
  # With zero gradients the update is the decay alone.
  updates, _ = tx.update(zeros, state, params)
  np.testing.assert_allclose(updates["kernel"], -LR * wd * params["kernel"],
                             rtol=1e-6)
  expected_bias = -LR * wd * params["bias"] if bias_decayed else 0.0
  np.testing.assert_allclose(updates["bias"], expected_bias * np.ones(2),
                             rtol=1e-6, atol=0)


def test_adamw_decay_is_decoupled_and_masked():
  wd, eps = 0.1, 1e-8
  params, _ = _layer()
  # Gradients small next to wd * params, so that adding the decay to the
  # gradient flips signs and a first Adam step (about sign(g)) tells the two
  # kinds of decay apart.
  grads = {"kernel": jnp.array([[-0.05, 0.1], [0.2, -0.01]]),
           "bias": jnp.array([-0.2, 0.05])}
  changes = {"optimizer.weight_decay": wd, "optimizer.weight_decay_mask":
             "kernels", "optimizer.eps": eps}
  tx, state, _ = _make(params, **changes, **{"optimizer.name": "adamw"})
  adamw, _ = tx.update(grads, state, params)
  tx, state, _ = _make(params, **changes, **{"optimizer.name": "adam"})
  adam, _ = tx.update(grads, state, params)

  # First Adam step, bias-corrected: m/sqrt(v) = g/|g|.
  def adam_step(g):
    return np.asarray(g) / (np.abs(np.asarray(g)) + eps)

  k, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
  gk, gb = grads["kernel"], grads["bias"]
  # adamw: decay added after the adaptive scaling; kernels only.
  np.testing.assert_allclose(adamw["kernel"], -LR * (adam_step(gk) + wd * k),
                             rtol=1e-5)
  np.testing.assert_allclose(adamw["bias"], -LR * adam_step(gb), rtol=1e-5)
  # adam + coupled decay: the decay goes through the adaptive scaling.
  np.testing.assert_allclose(adam["kernel"], -LR * adam_step(gk + wd * k),
                             rtol=1e-5)
  np.testing.assert_allclose(adam["bias"], -LR * adam_step(gb), rtol=1e-5)
  assert not np.allclose(adamw["kernel"], adam["kernel"], rtol=1e-3)


def test_adaptive_optimizers_read_their_config():
  # Settings far from the defaults, so that a dropped one shows.
  g, g2 = np.asarray(_G1["w"]), np.asarray(_G2["w"])
  b1, b2, eps = 0.5, 0.6, 1e-3
  tx, state, _ = _make(_W, **{"optimizer.name": "adam", "optimizer.b1": b1,
                              "optimizer.b2": b2, "optimizer.eps": eps})
  _, state = tx.update(_G1, state, _W)
  updates, _ = tx.update(_G2, state, _W)
  # The second step, by hand (a first step is about sign(g) whatever b1, b2).
  m = b1 * (1 - b1) * g + (1 - b1) * g2
  v = b2 * (1 - b2) * g**2 + (1 - b2) * g2**2
  m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
  np.testing.assert_allclose(updates["w"], -LR * m_hat / (np.sqrt(v_hat) + eps),
                             rtol=1e-5)
  tx, state, _ = _make(_W, **{"optimizer.name": "rmsprop",
                              "optimizer.decay": 0.5, "optimizer.eps": 1e-2})
  updates, _ = tx.update(_G1, state, _W)
  # optax puts eps inside the square root: g / sqrt(nu + eps).
  np.testing.assert_allclose(updates["w"], -LR * g / np.sqrt(0.5 * g**2 + 1e-2),
                             rtol=1e-5)
  tx, state, _ = _make(_W, **{"optimizer.name": "adadelta",
                              "optimizer.rho": 0.5, "optimizer.eps": 1e-2})
  updates, _ = tx.update(_G1, state, _W)
  # First step: sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g with E[dx^2] = 0.
  np.testing.assert_allclose(
      updates["w"], -LR * np.sqrt(1e-2) / np.sqrt(0.5 * g**2 + 1e-2) * g,
      rtol=1e-5)


# --------------------------------------------------------------------------
# learning_rate(step, opt_state)


def test_learning_rate_follows_the_schedule():
  params = {"w": jnp.zeros(3)}
  c = _config(**{"schedule.name": "cosine", "schedule.warmup_steps": 10,
                 "schedule.end_factor": 0.1})
  durations = resolve_durations(c, 1000)
  tx, learning_rate = optim.make_optimizer(c, durations, params)
  schedule = optim.make_schedule(c, durations)
  state = tx.init(params)
  fn = jax.jit(learning_rate)
  for step in (0, 5, 10, 55, 100):
    assert float(fn(step, state)) == pytest.approx(float(schedule(step)), rel=1e-6)
  assert float(fn(100, state)) == pytest.approx(0.1 * LR, rel=1e-5)


def _plateau(losses_fn, num_updates, **changes):
  """Drives a plateau optimizer; returns (learning rates, last update)."""
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  # 1,000 examples at batch 500: two steps an epoch, judged once an epoch.
  c = _config(**{"batch_size": 500, "schedule.name": "plateau",
                 "schedule.factor": 0.1, "schedule.patience": 2}, **changes)
  durations = resolve_durations(c, 1000)
  assert durations.steps_per_epoch == 2
  tx, learning_rate = optim.make_optimizer(c, durations, params)
  update = jax.jit(tx.update)
  state = tx.init(params)
  rates = []
  for i in range(num_updates):
    updates, state = update(grads, state, params, value=losses_fn(i))
    rates.append(float(learning_rate(i + 1, state)))
  return np.array(rates), updates, grads


def test_plateau_reduces_after_patience_epochs_without_improvement():
  rates, updates, grads = _plateau(lambda i: 1.0, 10)
  # Epoch 1 (updates 1-2) sets the best loss; epochs 2 and 3 do not improve
  # on it, so after epoch 3 (update 6) the scale drops by `factor`; two more
  # flat epochs (update 10) drop it again.
  expected = [LR] * 5 + [0.1 * LR] * 4 + [0.01 * LR]
  np.testing.assert_allclose(rates, expected, rtol=1e-5)
  # The updates themselves are scaled, not only the reported rate.
  np.testing.assert_allclose(updates["w"], -0.01 * LR * grads["w"], rtol=1e-5)


def test_plateau_keeps_the_rate_while_the_loss_improves():
  rates, updates, grads = _plateau(lambda i: 1.0 / (i + 1), 12)
  np.testing.assert_allclose(rates, LR, rtol=1e-6)
  np.testing.assert_allclose(updates["w"], -LR * grads["w"], rtol=1e-6)
