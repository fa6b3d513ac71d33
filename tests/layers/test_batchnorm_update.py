"""TorchLikeBatchNorm's running-variance update against PyTorch.

torch folds the unbiased batch variance (times n / (n - 1), n the elements
per channel) into running_var; flax the biased one. The difference is what
makes a fine-tuned imported model drift from its torch twin, and it is
largest where n is small: tiny batches, or late small maps (resnet18's last
stage is 1x1 on a 32x32 input, n = the batch size there). These tests pin
the torch update for one layer (shapes, masks, several steps, synchronised
statistics over a named axis) and for one whole resnet18 training step, and
show that the old biased update (`unbiased_running_var=False`) fails there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import layers as L
from cnnjax.models.registry import create_model
from cnnjax.weights import export_state_dict, import_state_dict
from conftest import import_torchvision

torch = pytest.importorskip("torch")

RTOL = 1e-6  # float32 statistics against torch's (double-accumulated) ones.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rng(seed=0):
  return np.random.default_rng(seed)


def _to_torch(x):
  """Channels-last (B, *S, C) -> channels-first torch (B, C, *S)."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _torch_bn(channels, ndim, rng):
  cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d,
         4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[ndim]
  ref = cls(channels, momentum=0.1, eps=1e-5)
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, channels).astype(np.float32)))
    ref.bias.copy_(torch.from_numpy(rng.standard_normal(channels).astype(np.float32)))
  return ref.train()


def _variables(ref):
  return {"params": {"scale": ref.weight.detach().numpy().copy(),
                     "bias": ref.bias.detach().numpy().copy()},
          "batch_stats": {"mean": ref.running_mean.numpy().copy(),
                          "var": ref.running_var.numpy().copy()}}


def _torch_step(ref, x):
  """One torch training forward on channels-last x; channels-last output."""
  with torch.no_grad():
    return np.moveaxis(ref(_to_torch(x)).numpy(), 1, -1)


def _stats_close(stats, ref, rtol=RTOL):
  np.testing.assert_allclose(stats["mean"], ref.running_mean.numpy(),
                             rtol=rtol, atol=1e-7)
  np.testing.assert_allclose(stats["var"], ref.running_var.numpy(), rtol=rtol)


# -- one layer -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 5), (3, 1, 4), (2, 3, 3, 4), (16, 6),
                                   (4, 5, 6, 3), (2, 2, 2, 3, 3)])
@pytest.mark.parametrize("fast_variance", [True, False])
def test_training_steps_match_torch(shape, fast_variance):
  """Outputs, running means and running variances equal torch's for three
  consecutive steps; n from 2 (shape (2, 5), (3, 1, 4) has n = 3) up.

  The statistics agree to float32 rounding (< 5e-7 relative). The outputs
  too with the two-pass variance; flax's fast variance, E[x^2] - E[x]^2,
  cancels in float32 and is off by up to ~5e-6 at n = 2 (normalising, not
  the running update: the same in flax's own BatchNorm)."""
  out_atol = 1e-5 if fast_variance else 1e-6
  rng = _rng(len(shape))
  ref = _torch_bn(shape[-1], len(shape), rng)
  variables = _variables(ref)
  bn = L.TorchLikeBatchNorm(use_running_average=False,
                            use_fast_variance=fast_variance)
  apply = jax.jit(lambda v, x: bn.apply(v, x, mutable=["batch_stats"]))
  for step in range(3):
    x = (rng.standard_normal(shape) * (1 + step) + 0.5).astype(np.float32)
    expected = _torch_step(ref, x)
    out, updates = apply(variables, x)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=out_atol)
    _stats_close(updates["batch_stats"], ref)
    variables = {**variables, "batch_stats": updates["batch_stats"]}


def test_biased_update_is_flaxs():
  """`unbiased_running_var=False` is the old update: flax's BatchNorm
  with torch's constants, var <- 0.9 var + 0.1 * biased batch variance."""
  x = (_rng(1).standard_normal((3, 2, 2, 4)) * 2 + 1).astype(np.float32)
  stats = {"mean": np.full(4, 0.3, np.float32), "var": np.full(4, 2.0, np.float32)}
  params = {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}
  variables = {"params": params, "batch_stats": stats}
  ours = L.TorchLikeBatchNorm(use_running_average=False, unbiased_running_var=False)
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  out, new = ours.apply(variables, x, mutable=["batch_stats"])
  out_flax, new_flax = flax_bn.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_array_equal(out, out_flax)
  jax.tree.map(np.testing.assert_array_equal, new, new_flax)
  biased = x.reshape(-1, 4).var(axis=0)
  np.testing.assert_allclose(new["batch_stats"]["var"], 0.9 * 2 + 0.1 * biased,
                             rtol=1e-6)
  # The default differs from it by exactly the Bessel factor, n = 12.
  _, unbiased = L.TorchLikeBatchNorm(use_running_average=False).apply(
      variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(unbiased["batch_stats"]["var"],
                             0.9 * 2 + 0.1 * biased * 12 / 11, rtol=1e-6)
  np.testing.assert_array_equal(unbiased["batch_stats"]["mean"],
                                new["batch_stats"]["mean"])


@pytest.mark.parametrize("dtype, param_dtype, float32_reductions", [
    (jnp.bfloat16, jnp.float32, True), (jnp.float16, jnp.float16, True),
    (jnp.bfloat16, jnp.bfloat16, False)])
def test_dtypes_follow_flax(dtype, param_dtype, float32_reductions):
  """Output dtype, parameters and statistics as flax's BatchNorm makes
  them; only the running variance carries the factor n / (n - 1)."""
  x = jnp.asarray(_rng(2).standard_normal((4, 3, 3)), dtype)
  kwargs = dict(dtype=dtype, param_dtype=param_dtype,
                force_float32_reductions=float32_reductions)
  ours = L.TorchLikeBatchNorm(use_running_average=False, **kwargs)
  theirs = nn.BatchNorm(use_running_average=False, momentum=0.9, **kwargs)
  variables = theirs.init(jax.random.key(0), x)
  ours_init = ours.init(jax.random.key(0), x)
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), ours_init) ==
          jax.tree.map(lambda a: (a.shape, a.dtype), variables))
  y, new = ours.apply(variables, x, mutable=["batch_stats"])
  y_flax, new_flax = theirs.apply(variables, x, mutable=["batch_stats"])
  assert y.dtype == y_flax.dtype == dtype
  np.testing.assert_array_equal(y, y_flax)
  np.testing.assert_array_equal(new["batch_stats"]["mean"],
                                new_flax["batch_stats"]["mean"])
  ours_var, flax_var = (np.asarray(s["batch_stats"]["var"], np.float32)
                        for s in (new, new_flax))
  assert new["batch_stats"]["var"].dtype == new_flax["batch_stats"]["var"].dtype
  tol = 1e-6 if float32_reductions else 2e-2  # bfloat16 has 8 bits.
  np.testing.assert_allclose(ours_var - 0.9, (flax_var - 0.9) * 12 / 11,
                             rtol=tol)


def test_mask_counts_the_unmasked_elements():
  """With a mask, n is the number of unmasked elements of each channel:
  masked rows match torch on the kept rows; a per-element mask the numpy
  unbiased variance of each channel's kept values."""
  rng = _rng(3)
  x = (rng.standard_normal((6, 3, 2, 4)) * 2 + 1).astype(np.float32)
  keep = np.array([1, 0, 1, 1, 0, 0], bool)
  ref = _torch_bn(4, 4, rng)
  variables = _variables(ref)
  bn = L.TorchLikeBatchNorm(use_running_average=False)
  _, new = bn.apply(variables, x, mask=keep[:, None, None, None],
                    mutable=["batch_stats"])
  _torch_step(ref, x[keep])
  _stats_close(new["batch_stats"], ref)

  mask = rng.random(x.shape) < 0.5
  mask[..., 3] = False
  mask[0, 0, 0, 3] = True  # Channel 3: n = 1.
  _, new = bn.apply(variables, x, mask=mask, mutable=["batch_stats"])
  flat_x, flat_m = x.reshape(-1, 4), mask.reshape(-1, 4)
  for c in range(3):
    kept = flat_x[flat_m[:, c], c].astype(np.float64)
    np.testing.assert_allclose(new["batch_stats"]["var"][c],
                               0.9 + 0.1 * kept.var(ddof=1), rtol=RTOL)
  np.testing.assert_allclose(new["batch_stats"]["var"][3], 0.9, rtol=RTOL)


def test_one_value_per_channel_falls_back_to_the_biased_variance():
  """n = 1: torch raises in training (its kernel would store nan); we
  update with the biased variance, 0, so running_var decays and stays
  finite, and the output is the bias, as in torch's kernel."""
  with pytest.raises(ValueError, match="more than 1 value"):
    torch.nn.BatchNorm1d(3).train()(torch.ones(1, 3))
  x = np.array([[1.0, -2.0, 3.0]], np.float32)
  bn = L.TorchLikeBatchNorm(use_running_average=False)
  variables = bn.init(jax.random.key(0), x)
  y, new = bn.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(new["batch_stats"]["var"], 0.9)
  np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * x[0], rtol=1e-6)
  np.testing.assert_allclose(y, 0, atol=1e-6)


def test_running_average_leaves_the_statistics_alone():
  x = _rng(4).standard_normal((2, 3, 4)).astype(np.float32)
  stats = {"mean": np.full(4, 0.5, np.float32), "var": np.full(4, 3.0, np.float32)}
  params = {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}
  y, new = L.TorchLikeBatchNorm(use_running_average=True).apply(
      {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, new["batch_stats"], stats)
  np.testing.assert_allclose(y, (x - 0.5) / np.sqrt(3 + 1e-5), rtol=1e-6)


# -- synchronised statistics ------------------------------------------------------


def test_synchronised_statistics_count_every_member():
  """Under `vmap(axis_name='batch')`, n is the global count: four members
  of two 2x2 examples each match torch on the eight examples together (a
  member's own n / (n - 1) would be 8 / 7 here, the global one 32 / 31)."""
  rng = _rng(5)
  x = (rng.standard_normal((4, 2, 2, 2, 3)) * 2 + 1).astype(np.float32)
  ref = _torch_bn(3, 4, rng)
  variables = _variables(ref)
  bn = L.TorchLikeBatchNorm(use_running_average=False, axis_name="batch")
  out, new = jax.vmap(
      lambda x: bn.apply(variables, x, mutable=["batch_stats"]),
      axis_name="batch")(x)
  expected = _torch_step(ref, x.reshape(8, 2, 2, 3))
  np.testing.assert_allclose(out.reshape(expected.shape), expected,
                             rtol=RTOL, atol=2e-6)
  for member in range(4):
    _stats_close(jax.tree.map(lambda a: a[member], new["batch_stats"]), ref)


_GROUPS_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from cnnjax import layers as L
    x = (np.random.default_rng(0).standard_normal((4, 3, 2, 5)) * 2 + 1).astype(np.float32)
    bn = L.TorchLikeBatchNorm(use_running_average=False, axis_name="d",
                              axis_index_groups=[[0, 1], [2, 3]])
    v = bn.init(jax.random.key(0), x[0])
    _, new = jax.pmap(lambda x: bn.apply(v, x, mutable=["batch_stats"]),
                      axis_name="d")(x)
    for g in ([0, 1], [2, 3]):
      want = 0.9 + 0.1 * x[g].reshape(-1, 5).astype(np.float64).var(0, ddof=1)
      for d in g:
        np.testing.assert_allclose(new["batch_stats"]["var"][d], want, rtol=1e-6)
    print("ok")
""")


@pytest.mark.slow  # A subprocess with 4 devices.
def test_axis_index_groups_count_the_group():
  """`axis_index_groups` (pmap only: vmap refuses groups): n is the group's
  count, 2 devices x 6 elements. Four CPU devices need a fresh process."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=4").strip()
  out = subprocess.run([sys.executable, "-c", _GROUPS_SCRIPT], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- one resnet18 training step ---------------------------------------------------


def _torchvision_resnet18():
  tv = import_torchvision()
  torch.manual_seed(6)
  twin = tv.models.resnet18(num_classes=10)
  g = torch.Generator().manual_seed(7)
  for m in twin.modules():  # Non-trivial starting statistics.
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
      m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
  return twin


def _torch_resnet18_step(twin, x, labels):
  """torch.optim.SGD(lr 0.1, momentum 0.9, weight_decay 1e-4), one step."""
  twin.train()
  opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9,
                        weight_decay=1e-4)
  loss = torch.nn.functional.cross_entropy(
      twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())),
      torch.from_numpy(labels.astype(np.int64)))
  opt.zero_grad()
  loss.backward()
  opt.step()
  return loss.item(), twin


def _jax_resnet18_step(model, variables, x, labels):
  # First step of SGD with momentum: trace = g + wd * w, w -= lr * trace;
  # torch's SGD with weight_decay does the same (buffer = d_p on step 1).
  tx = optax.chain(optax.add_decayed_weights(1e-4),
                   optax.sgd(0.1, momentum=0.9))

  def loss_fn(params):
    logits, updates = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x,
        train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.mean(), updates["batch_stats"]

  @jax.jit
  def step(params):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return loss, optax.apply_updates(params, updates), stats

  return step(variables["params"])


def _as_torch(params, stats):
  """cnnjax variables as the twin's state dict (cnnjax.weights' export)."""
  state = export_state_dict("resnet18", {"params": params, "batch_stats": stats})
  return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _tensors(twin):
  return {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()
          if not k.endswith("num_batches_tracked")}


def _check_state(ours, theirs, names):
  for name in names:
    np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-5,
                               err_msg=name)


@pytest.mark.slow  # 8 s: a whole ResNet-18 step; the module-level parity above stays.
def test_resnet18_training_step_matches_torch(monkeypatch):
  """One SGD step of a resnet18 imported from torchvision (random weights,
  non-trivial running statistics) on a (4, 32, 32, 3) batch, in train mode:
  loss, every parameter and every running statistic as torch's. The last
  stage is 1x1 there (n = 4), where the biased update is 4/3 too small in
  its batch term: with `unbiased_running_var=False` the statistics differ.

  Parameters: lr 0.1 moves them by up to ~0.6 in this step, and each
  framework's float32 logits are ~1e-5 (relative) from a float64 torch run
  (BN over 4 values amplifies rounding), so the two updates agree to ~1e-4
  of the step, not to 1e-5 absolute; we ask for 5e-4 of each tensor's
  largest update (seen: <= 1.5e-4). The running statistics agree to 1e-5.
  """
  twin = _torchvision_resnet18()
  imported = import_state_dict("resnet18", _tensors(twin), input_shape=(32, 32, 3))
  model, variables = imported.model, jax.tree.map(np.asarray, imported.variables)
  x = _rng(6).standard_normal((4, 32, 32, 3)).astype(np.float32)
  labels = np.array([0, 3, 7, 9], np.int32)
  before = _as_torch(variables["params"], variables["batch_stats"])
  assert all(np.array_equal(before[k], v) for k, v in _tensors(twin).items())

  torch_loss, twin = _torch_resnet18_step(twin, x, labels)
  theirs = _tensors(twin)
  loss, params, stats = _jax_resnet18_step(model, variables, x, labels)
  ours = _as_torch(params, stats)
  assert set(ours) == set(theirs)
  running = sorted(k for k in theirs if ".running_" in k)
  weights = sorted(set(theirs) - set(running))
  assert len(running) == 40 and len(weights) == 62

  assert abs(float(loss) - torch_loss) <= 1e-5 * abs(torch_loss)
  for name in weights:  # Every parameter, updated.
    step = np.abs(theirs[name] - before[name]).max()
    assert step > 1e-3, name  # It moved.
    np.testing.assert_allclose(ours[name], theirs[name], rtol=0,
                               atol=5e-4 * step, err_msg=name)
  _check_state(ours, theirs, running)

  # The old, biased update: the same batch misses torch's running variances.
  class BiasedBatchNorm(L.TorchLikeBatchNorm):
    unbiased_running_var: bool = False

  monkeypatch.setattr(L, "TorchLikeBatchNorm", BiasedBatchNorm)
  biased = create_model("resnet18", num_classes=10)
  _, updates = jax.jit(lambda v: biased.apply(
      v, x, train=True, mutable=["batch_stats"]))(variables)
  old = _as_torch(params, updates["batch_stats"])
  last = "layer4.1.bn2.running_var"  # stage4_block1/bn2: 1x1 map, n = 4.
  gap = np.abs(old[last] - theirs[last]).max()
  assert gap > 1e-3, gap
  _check_state(old, theirs, [k for k in running if k.endswith("_mean")])
  with pytest.raises(AssertionError):
    _check_state(old, theirs, running)
