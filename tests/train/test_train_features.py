"""Mixed precision, loss scaling, EMA, gradient accumulation and mixing in
the train step and the loop (one device; tests/train/test_parallel.py has eight)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.train import loop, setup
from cnnjax.train.precision import LossScale
from conftest import tiny_mnist1d_config


def _experiment(**changes):
  config = tiny_mnist1d_config(**changes)
  config_lib.validate(config)
  return setup.build(config)


def _train(exp, steps):
  feed = loop.SeedGroup(exp)
  # A copy: the compiled step donates (frees) the state it is given.
  data, state = feed.train_inputs(0), jax.tree.map(jnp.array, exp.state)
  for _ in range(steps):
    state, metrics = feed.train_fn(state, next(data), jax.random.key(0))
  return state, metrics


def test_bfloat16_computes_in_bf16_and_keeps_float32_parameters(tmp_path):
  exp = _experiment(precision="bfloat16")
  x = jnp.zeros((2, *exp.dataset.input_shape))
  assert exp.state.apply_fn(exp.state.variables, x).dtype == jnp.bfloat16
  state, metrics = _train(exp, 3)
  assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32
  low = loop.train_and_evaluate(tiny_mnist1d_config(precision="bfloat16"),
                                str(tmp_path / "bf16"))
  full = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "fp32"))
  # The same run up to rounding: bf16 keeps ~3 significant digits.
  assert low["final"]["test/loss"] == pytest.approx(full["final"]["test/loss"], rel=0.05)
  assert low["final"]["test/accuracy"] == pytest.approx(
      full["final"]["test/accuracy"], abs=0.05)


def test_loss_scale_grows_after_finite_steps_and_backs_off_on_overflow():
  scale = LossScale.create(8.0, growth_interval=2, backoff=0.5)
  finite, overflow = jnp.asarray(True), jnp.asarray(False)
  scale = scale.adjust(finite)
  assert float(scale.scale) == 8.0 and int(scale.finite_steps) == 1
  scale = scale.adjust(finite)
  assert float(scale.scale) == 16.0 and int(scale.finite_steps) == 0
  scale = scale.adjust(overflow)
  assert float(scale.scale) == 8.0 and int(scale.finite_steps) == 0
  grads = {"w": jnp.asarray([8.0, 16.0])}
  np.testing.assert_array_equal(scale.unscale(grads)["w"], [1.0, 2.0])


def test_float16_skips_an_overflowing_step_and_lowers_the_scale():
  # A scale of 2^40 overflows float16 activations' gradients at once.
  exp = _experiment(precision="float16", **{"loss_scale.initial": 2.0 ** 40})
  assert exp.state.loss_scale is not None
  state, metrics = _train(exp, 1)
  assert int(state.step) == 1
  assert float(state.loss_scale.scale) == 2.0 ** 39
  assert float(metrics["loss_scale"]) == 2.0 ** 40
  for before, after in zip(jax.tree.leaves(exp.state.params),
                           jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(before, after)


def test_float16_with_loss_scaling_trains(tmp_path):
  result = loop.train_and_evaluate(tiny_mnist1d_config(precision="float16"),
                                   str(tmp_path))
  full = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "fp32"))
  assert result["final"]["test/accuracy"] == pytest.approx(
      full["final"]["test/accuracy"], abs=0.05)


def test_ema_follows_its_recursion_with_warmup():
  exp = _experiment(**{"ema.decay": 0.9})
  state, _ = _train(exp, 1)
  # After update 1: d = min(0.9, 2 / 11); ema = d * init + (1 - d) * params.
  d = 2.0 / 11.0
  for init, now, avg in zip(jax.tree.leaves(exp.state.params),
                            jax.tree.leaves(state.params),
                            jax.tree.leaves(state.ema["params"])):
    np.testing.assert_allclose(avg, d * np.asarray(init) + (1 - d) * np.asarray(now),
                               rtol=1e-6, atol=1e-7)


def test_ema_is_evaluated_beside_the_raw_weights(tmp_path):
  # A negligible decay makes the average the weights themselves.
  result = loop.train_and_evaluate(
      tiny_mnist1d_config(**{"ema.decay": 1e-12, "ema.warmup": False}), str(tmp_path))
  final = result["final"]
  assert final["test_ema/accuracy"] == final["test/accuracy"]
  assert final["test_ema/loss"] == pytest.approx(final["test/loss"], rel=1e-6)
  slow = loop.train_and_evaluate(
      tiny_mnist1d_config(**{"ema.decay": 0.99}), str(tmp_path / "slow"))
  assert slow["final"]["test_ema/loss"] != slow["final"]["test/loss"]


def test_gradient_accumulation_gives_the_big_batch_update():
  plain, _ = _train(_experiment(), 4)
  accumulated, metrics = _train(_experiment(grad_accum_steps=5), 4)
  assert float(metrics["count"]) == 50  # every micro-batch is counted
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(accumulated.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_mixup_and_cutmix_change_the_training_batches(tmp_path):
  plain, plain_metrics = _train(_experiment(), 3)
  mixed, mixed_metrics = _train(_experiment(**{"mix.mixup_alpha": 0.4,
                                               "mix.cutmix_alpha": 1.0}), 3)
  assert np.isfinite(float(mixed_metrics["loss"]))
  assert float(mixed_metrics["loss"]) != float(plain_metrics["loss"])
  result = loop.train_and_evaluate(
      tiny_mnist1d_config(**{"mix.mixup_alpha": 0.4}), str(tmp_path))
  assert result["final"]["test/accuracy"] > 0.2  # still learns (10 classes)


def test_every_feature_together_compiles_the_train_step_once():
  exp = _experiment(precision="bfloat16", grad_accum_steps=2,
                    **{"ema.decay": 0.9, "mix.mixup_alpha": 0.2,
                       "optimizer.clip_norm": 1.0})
  traces = []
  original = exp.train_step

  def counting(*args):
    traces.append(1)
    return original(*args)

  exp.train_step = counting
  _train(exp, 4)
  assert len(traces) == 1


@pytest.mark.parametrize("changes, message", [
    ({"precision": "float8"}, "config.precision must be one of"),
    ({"grad_accum_steps": 3}, "grad_accum_steps .3. must be a positive divisor"),
    ({"ema.decay": 1.0}, r"ema.decay must be in \[0, 1\)"),
    ({"parallel.batch_norm": "sync"}, "parallel.batch_norm must be"),
    ({"mix.prob": 2.0}, "must be in"),
])
def test_bad_values_are_refused_before_training(changes, message):
  with pytest.raises(CnnjaxError, match=message):
    config_lib.validate(tiny_mnist1d_config(**changes))


def test_more_devices_than_exist_is_one_sentence():
  n = len(jax.devices()) + 1
  with pytest.raises(CnnjaxError, match=f"num_devices is {n} but only"):
    _experiment(**{"parallel.num_devices": n})


def test_lookahead_moves_the_slow_copy_and_resets_the_weights_to_it():
  """TrainState.sync_lookahead against airbench94's definition, written out:
  every 2 updates slow <- d slow + (1 - d) w, d = 0.5 (t / 5) ** 1.5, w <- slow;
  after the last update (t = 5) w <- slow unchanged."""
  import optax
  from cnnjax.train.state import TrainState
  rng = np.random.default_rng(0)
  start = {"params": {"w": rng.standard_normal(3).astype(np.float32)},
           "batch_stats": {"mean": rng.standard_normal(2).astype(np.float32)}}
  state = TrainState.create(apply_fn=None, variables=start, tx=optax.sgd(1.0),
                            lookahead=True)
  slow = {k: {n: v.copy() for n, v in d.items()} for k, d in start.items()}
  for t in range(1, 6):
    raw = {k: {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in d.items()}
           for k, d in start.items()}  # what the update left
    state = state.replace(step=jnp.asarray(t, jnp.int32), params=raw["params"],
                          batch_stats=raw["batch_stats"])
    state = state.sync_lookahead(2, 0.5, 1.5, 5)
    want = raw
    if t == 5:
      want = slow
    elif t % 2 == 0:
      d = 0.5 * (t / 5) ** 1.5
      slow = {k: {n: d * slow[k][n] + (1 - d) * raw[k][n] for n in raw[k]} for k in raw}
      want = slow
    for key in ("params", "batch_stats"):
      for name in want[key]:
        np.testing.assert_allclose(getattr(state, key)[name], want[key][name], rtol=1e-6)
        np.testing.assert_allclose(state.slow[key][name], slow[key][name], rtol=1e-6)


def test_lookahead_in_the_train_step_leaves_the_weights_at_the_slow_copy():
  exp = _experiment(**{"lookahead.every": 2, "lookahead.decay": 0.9})
  state, _ = _train(exp, 4)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.slow["params"])):
    np.testing.assert_array_equal(a, b)
  plain, _ = _train(_experiment(), 4)
  assert not np.allclose(jax.tree.leaves(plain.params)[0], jax.tree.leaves(state.params)[0])
  with pytest.raises(CnnjaxError, match="lookahead.decay"):
    config_lib.validate(tiny_mnist1d_config(**{"lookahead.every": 5, "lookahead.decay": 1.0}))
