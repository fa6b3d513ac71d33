"""The train step, the loop's outputs, checkpoints and exact resumption."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.train import loop, setup
from cnnjax.runs.checkpoints import Checkpointer
from conftest import tiny_mnist1d_config


def _experiment(**changes):
  config = tiny_mnist1d_config(**changes)
  config_lib.validate(config)
  return setup.build(config)


def test_train_step_lowers_the_loss_on_a_fixed_batch():
  exp = _experiment()
  split = exp.dataset.splits["train"]
  batch = {k: jnp.asarray(v[:50]) for k, v in split.items()}
  step = jax.jit(exp.train_step)
  state, rng = exp.state, jax.random.key(0)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics["loss"] / metrics["count"]))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 30


def test_train_step_is_pure_and_uses_fold_in_of_the_step():
  exp = _experiment()
  batch = {k: jnp.asarray(v[:50]) for k, v in exp.dataset.splits["train"].items()}
  step = jax.jit(exp.train_step)
  a, _ = step(exp.state, batch, jax.random.key(0))
  b, _ = step(exp.state, batch, jax.random.key(0))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)


def test_batches_are_a_per_epoch_permutation():
  from cnnjax.data.arrays import train_batch

  data = {"image": jnp.arange(10, dtype=jnp.float32)[:, None], "label": jnp.arange(10)}
  key = jax.random.key(3)
  get = jax.jit(lambda s: train_batch(data, s, batch_size=3, data_key=key))
  epoch0 = np.concatenate([np.asarray(get(s)["label"]) for s in range(3)])
  epoch1 = np.concatenate([np.asarray(get(s)["label"]) for s in range(3, 6)])
  assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9  # no repeats in an epoch
  assert not np.array_equal(epoch0, epoch1)  # a new order each epoch
  np.testing.assert_array_equal(get(4)["label"], get(4)["label"])  # pure in step


def test_workdir_outputs(tmp_path):
  config = tiny_mnist1d_config()
  result = loop.train_and_evaluate(config, str(tmp_path))
  for name in ("config.json", "metrics.jsonl", "curves.png", "result.json"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(tmp_path / "tensorboard"))
  events = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [e["step"] for e in events if "train/loss" in e] == [10, 20, 30, 40]
  assert [e["step"] for e in events if "test/accuracy" in e] == [20, 40]
  on_disk = json.load(open(tmp_path / "result.json"))
  assert on_disk == json.loads(json.dumps(result))
  assert result["num_steps"] == 40
  assert set(result["final"]) == {"test/loss", "test/accuracy", "test/top5_accuracy"}
  assert result["reference"]["metric"] == "test/accuracy"
  assert result["reference"]["value"] == 0.94
  assert result["reference"]["measured"] == result["final"]["test/accuracy"]
  assert result["device"]["platform"] == "cpu"
  assert result["versions"]["jax"] == jax.__version__
  assert result["final"]["test/accuracy"] > 0.2  # 40 steps: above chance (0.1)


def _params(workdir, step):
  exp = setup.build(tiny_mnist1d_config())
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  state, _ = ckpt.restore(step, exp.state)
  ckpt.close()
  return state


def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
  full = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "full"))
  # Stop after the first checkpoint, then run the same command again.
  loop.train_and_evaluate(tiny_mnist1d_config(num_steps=20), str(tmp_path / "split"))
  resumed = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "split"))
  assert resumed["final"] == full["final"]
  a, b = _params(tmp_path / "full", 40), _params(tmp_path / "split", 40)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The resumed log holds each step once, with the same numbers.
  log = lambda d: [json.loads(l) for l in open(tmp_path / d / "metrics.jsonl")]
  strip = lambda es: [{k: v for k, v in e.items()
                       if k not in ("time", "train/steps_per_s")} for e in es]
  assert strip(log("split")) == strip(log("full"))


def test_rerunning_a_finished_run_trains_nothing(tmp_path):
  first = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path))
  again = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path))
  assert again["final"] == first["final"]


def test_a_different_config_in_the_same_workdir_is_refused(tmp_path):
  loop.train_and_evaluate(tiny_mnist1d_config(num_steps=20), str(tmp_path))
  with pytest.raises(CnnjaxError, match="different config .*learning_rate"):
    loop.train_and_evaluate(
        tiny_mnist1d_config(**{"optimizer.learning_rate": 0.5}), str(tmp_path))


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_a_run_stored_before_a_key_existed_is_still_the_same_run(tmp_path):
  """A key added to cnnjax after a run was stored (absent from its
  config.json) reads as the base default: at that default the run is still
  finished and resumable; at another value it is a different config."""
  first = loop.train_and_evaluate(tiny_mnist1d_config(num_steps=20), str(tmp_path))
  path = tmp_path / "config.json"
  stored = json.loads(path.read_text())
  del stored["transfer"]["into"], stored["schedule"]["warmup_from"]
  stamp = os.path.getmtime(path)
  path.write_text(json.dumps(stored))
  os.utime(path, (stamp, stamp))  # as old as it was: the result stays newer
  from cnnjax.runs import Run
  assert Run(str(tmp_path)).finished_result(tiny_mnist1d_config(num_steps=20)) is not None
  again = loop.train_and_evaluate(tiny_mnist1d_config(num_steps=20), str(tmp_path))
  assert again["final"] == first["final"]
  with pytest.raises(CnnjaxError, match=r"different config \(schedule.warmup_from"):
    loop.train_and_evaluate(tiny_mnist1d_config(
        num_steps=20, **{"schedule.warmup_from": 0.5}), str(tmp_path))


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_keeps_the_last_k_and_the_best_checkpoint(tmp_path):
  # best_mode='min' on accuracy makes the (worst) first evaluation the "best".
  config = tiny_mnist1d_config(num_steps=60, eval_every=10, checkpoint_every=10,
                               keep_checkpoints=2, best_mode="min")
  loop.train_and_evaluate(config, str(tmp_path))
  events = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  accs = {e["step"]: e["test/accuracy"] for e in events if "test/accuracy" in e}
  worst = min(accs, key=lambda s: (accs[s], s))
  kept = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert kept == sorted({worst, 50, 60})
  result = loop.evaluate_workdir(str(tmp_path), which="best")
  assert result["step"] == worst
  assert result["test/accuracy"] == pytest.approx(accs[worst], abs=1e-6)


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_mnist1d_config(**{"optimizer.name": "sgd",
                                  "optimizer.learning_rate": 1e30})
  with pytest.raises(CnnjaxError, match=r"training diverged: the loss is nan at step \d+;"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints" / "10")


def test_jit_compiles_the_train_step_once(tmp_path):
  traces = []
  exp = _experiment()
  original = exp.train_step

  def counting(*args):
    traces.append(1)
    return original(*args)

  exp.train_step = counting
  train_fn = loop.SeedGroup(exp).train_fn
  data = jax.device_put(exp.dataset.splits["train"])
  state = exp.state
  for _ in range(5):
    state, _ = train_fn(state, data, jax.random.key(0))
  assert len(traces) == 1


def test_max_norm_caps_each_units_incoming_weights():
  from cnnjax.train.step import max_norm

  kernel = jnp.array([[3.0, 0.1], [4.0, 0.2]])  # Column norms 5 and ~0.22.
  params = {"head": {"kernel": kernel, "bias": jnp.array([9.0, 9.0])},
            "body": {"kernel": kernel}}
  out = max_norm(params, 3.0, ["head"])
  np.testing.assert_allclose(out["head"]["kernel"][:, 0], [1.8, 2.4], rtol=1e-6)
  np.testing.assert_array_equal(out["head"]["kernel"][:, 1], kernel[:, 1])
  np.testing.assert_array_equal(out["head"]["bias"], [9.0, 9.0])
  assert out["body"]["kernel"] is kernel


def test_max_norm_in_training_and_a_missing_layer():
  exp = _experiment(**{"optimizer.max_norm": 0.05,
                       "optimizer.learning_rate": 1.0})
  batch = {k: jnp.asarray(v[:50]) for k, v in exp.dataset.splits["train"].items()}
  state, _ = jax.jit(exp.train_step)(exp.state, batch, jax.random.key(0))
  norms = jnp.linalg.norm(state.params["head"]["kernel"], axis=0)
  assert float(norms.max()) <= 0.05 + 1e-6
  with pytest.raises(CnnjaxError, match="max_norm_layers names fc"):
    _experiment(**{"optimizer.max_norm": 3.0,
                   "optimizer.max_norm_layers": "fc"})


def test_auxiliary_outputs_add_weighted_losses():
  import flax.linen as nn
  import optax

  from cnnjax.train.state import TrainState
  from cnnjax.train.step import make_train_step

  class TwoHeads(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
      main = nn.Dense(3, name="head")(x)
      if train:
        return main, nn.Dense(3, name="aux")(x)
      return main

  model = TwoHeads()
  x = jax.random.normal(jax.random.key(0), (4, 5))
  batch = {"image": x, "label": jnp.array([0, 1, 2, 0])}
  variables = model.init(jax.random.key(1), x, train=True)
  state = TrainState.create(apply_fn=model.apply, variables=variables,
                            tx=optax.sgd(1.0))
  ce = lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(
      logits, y)
  lr = lambda step, opt_state: 1.0
  new, metrics = make_train_step(ce, lr, aux_weight=0.3)(
      state, batch, jax.random.key(2))
  # SGD with lr 1: the aux head moves by 0.3 times its loss gradient; the
  # metrics are the main head's.
  aux_grad = jax.grad(lambda p: jnp.mean(ce(x @ p["kernel"] + p["bias"],
                                            batch["label"])))(
                                                variables["params"]["aux"])
  np.testing.assert_allclose(
      new.params["aux"]["kernel"],
      variables["params"]["aux"]["kernel"] - 0.3 * aux_grad["kernel"],
      rtol=1e-5, atol=1e-6)
  main = model.apply(variables, x)
  np.testing.assert_allclose(metrics["loss"], jnp.sum(ce(main, batch["label"])),
                             rtol=1e-5)


def test_sigterm_saves_a_checkpoint_and_the_rerun_ends_like_an_uninterrupted_run(
    tmp_path, monkeypatch):
  import signal
  import threading

  from cnnjax.runs.files import MetricLog

  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signals reach only the main thread")
  full = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "full"))
  original, sent = MetricLog.write, []

  def write(self, step, metrics):  # SIGTERM right after the step-10 train log.
    original(self, step, metrics)
    if step == 10 and "train/loss" in metrics and not sent:
      sent.append(step)
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(MetricLog, "write", write)
  with pytest.raises(loop.TrainingInterrupted, match="stopped by signal 15 at step 10") as info:
    loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "split"))
  assert info.value.exit_code == 128 + signal.SIGTERM
  # Not a periodic checkpoint (every 20 steps): the one saved on the way out.
  assert sorted(os.listdir(tmp_path / "split" / "checkpoints")) == ["10"]
  assert not os.path.exists(tmp_path / "split" / "claim.json")  # Released.
  monkeypatch.undo()
  resumed = loop.train_and_evaluate(tiny_mnist1d_config(), str(tmp_path / "split"))
  assert resumed["final"] == full["final"]
