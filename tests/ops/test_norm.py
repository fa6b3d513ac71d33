"""Batch norm with the hand-derived gradient (cnnjax.ops.norm): the same
function, statistics and gradients as the definition and as flax's
BatchNorm, which TorchLikeBatchNorm used before it on the CPU."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers
from cnnjax.ops import norm


def _reference(x, scale, shift, eps):
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axes)
  var = ((x - mean) ** 2).mean(axes)
  return (x - mean) / jnp.sqrt(var + eps) * scale + shift, mean, var


@pytest.mark.parametrize("shape", [(16, 5), (4, 9, 3), (3, 7, 5, 6), (2, 3, 4, 5, 4)],
                         ids=["dense", "1d", "2d", "3d"])
def test_values_and_gradients_equal_the_definition(shape):
  """Outputs, biased statistics, and the gradients of x, scale and shift,
  including what flows back from a loss on the mean and the variance."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal(shape) * 3 + 1, jnp.float32)
  scale = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
  shift = jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)
  weights = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  ours = lambda x, s, b: norm.batch_norm_train(x, s, b, 1e-3)
  reference = lambda x, s, b: _reference(x, s, b, 1e-3)
  for got, expected in zip(jax.jit(ours)(x, scale, shift), reference(x, scale, shift)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

  def loss(fn, with_statistics):
    def value(x, s, b):
      y, mean, var = fn(x, s, b)
      extra = (0.3 * mean.sum() + (var ** 2).sum()) if with_statistics else 0.0
      return (y * weights).sum() + extra
    return value

  for with_statistics in (False, True):
    got = jax.jit(jax.grad(loss(ours, with_statistics), (0, 1, 2)))(x, scale, shift)
    expected = jax.grad(loss(reference, with_statistics), (0, 1, 2))(x, scale, shift)
    for a, b in zip(got, expected):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_gradient_of_an_offset_input_equals_the_centred_inputs():
  """Batch norm ignores a shift of x; the backward pass's reduction,
  sum(dy * x) - mean * sum(dy), must not lose that in float32 where the
  mean is ten standard deviations (activations after a ReLU often sit
  well off zero)."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal((64, 8, 8, 16))
  weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  grad = jax.jit(jax.grad(lambda x: (norm.batch_norm_train(
      x, jnp.ones(16), jnp.zeros(16), 1e-5)[0] * weights).sum()))
  centred = grad(jnp.asarray(x - x.mean((0, 1, 2)), jnp.float32))
  offset = grad(jnp.asarray(x + 10.0, jnp.float32))
  np.testing.assert_allclose(offset, centred, atol=1e-4 * float(jnp.abs(centred).max()))


def test_second_derivatives_through_the_custom_gradient():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 3)), jnp.float32)
  s, b = jnp.ones(3), jnp.zeros(3)
  f = lambda x: (norm.batch_norm_train(x, s, b, 1e-5)[0] ** 3).sum()
  g = lambda x: (_reference(x, s, b, 1e-5)[0] ** 3).sum()
  v = jnp.ones_like(x)
  np.testing.assert_allclose(jax.jvp(jax.grad(f), (x,), (v,))[1],
                             jax.jvp(jax.grad(g), (x,), (v,))[1], rtol=1e-3, atol=1e-3)


def test_gradients_inside_shard_map_match_the_definition():
  """Per-device batch norm (train.per_device_batch_norm) runs the layer in
  shard_map, where x varies over the mesh axis and the parameters do not:
  the custom gradient must come back with the parameters' types (CI caught
  a ValueError here) and equal autodiff of the definition."""
  from jax.sharding import Mesh
  from jax.sharding import PartitionSpec as P
  mesh = Mesh(jax.devices()[:1], ("data",))
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((4, 3, 3, 5)), jnp.float32)
  scale = jnp.asarray(rng.standard_normal(5), jnp.float32)
  weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

  def grads(fn):
    def per_device(scale, shift, x, weights):
      loss = lambda s, b: (fn(x, s, b, 1e-5)[0] * weights).sum()  # noqa: E731
      return jax.lax.pmean(jax.grad(loss, (0, 1))(scale, shift), "data")
    return jax.jit(jax.shard_map(per_device, mesh=mesh,
                                 in_specs=(P(), P(), P("data"), P("data")),
                                 out_specs=P()))(scale, jnp.zeros(5), x, weights)

  for a, b in zip(grads(norm.batch_norm_train), grads(_reference)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"use_scale": False, "use_bias": False}],
                         ids=["affine", "plain"])
def test_the_layer_trains_as_flax_batchnorm(kwargs):
  """TorchLikeBatchNorm in training on the CPU (the hand-derived gradient)
  against flax's nn.BatchNorm with the same constants: output, running
  statistics (flax's biased update) and gradients; vmapped too."""
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.standard_normal((6, 5, 5, 4)) * 2 + 0.5, jnp.float32)
  ours = layers.TorchLikeBatchNorm(use_running_average=False, unbiased_running_var=False,
                                   **kwargs)
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, **kwargs)
  variables = flax_bn.init(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(
      ours.init(jax.random.key(0), x))
  params = variables.get("params", {})
  weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape) / x.size

  def run(module):
    def loss(params, x):
      y, updated = module.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                x, mutable=["batch_stats"])
      return (y * weights).sum(), (y, updated)
    return loss

  results = []
  for module in (ours, flax_bn):
    grads, aux = jax.jit(jax.grad(run(module), has_aux=True))(params, x)
    batched = jax.jit(jax.vmap(lambda x: run(module)(params, x)[1][0]))(jnp.stack([x, 2 * x]))
    results.append((grads, aux, batched))
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  text = str(jax.make_jaxpr(lambda p: run(ours)(p, x))(params))
  assert "custom_vjp_call" in text


def test_masked_and_bfloat16_calls_keep_flaxs_path():
  x = jnp.ones((4, 3, 3, 2), jnp.bfloat16)
  bn = layers.TorchLikeBatchNorm(use_running_average=False)
  variables = bn.init(jax.random.key(0), x)
  text = str(jax.make_jaxpr(lambda v: bn.apply(v, x, mutable=["batch_stats"]))(variables))
  assert "custom_vjp_call" not in text
  x = x.astype(jnp.float32)
  mask = jnp.ones(x.shape, bool)
  text = str(jax.make_jaxpr(lambda v: bn.apply(v, x, mask=mask, mutable=["batch_stats"]))(
      variables))
  assert "custom_vjp_call" not in text
