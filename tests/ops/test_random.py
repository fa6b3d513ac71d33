"""Batched random draws (cnnjax.ops.random): the same values to the bit as
the draws made one by one, from a program with a handful of hashes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import create_model, model_input_shape
from cnnjax.ops import random as random_ops


def _assert_bitwise_equal(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    assert x.shape == y.shape and x.dtype == y.dtype
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _Mixed(nn.Module):
  """Initializers of every kind, parameter shapes odd and even, a vmapped
  submodule, dropout's key and draws of 8 and 16 bits."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(5, (3, 3), kernel_init=nn.initializers.he_uniform())(x)
    x = nn.Conv(6, (1, 1), kernel_init=nn.initializers.orthogonal(),
                bias_init=nn.initializers.normal(0.1))(x)
    x = nn.Dense(7, kernel_init=nn.initializers.truncated_normal(0.02))(x)
    x = nn.Embed(11, 3)(jnp.zeros(x.shape[:1], jnp.int32)).sum() + x
    bytes_ = self.param("bytes", lambda k, s: jax.random.bits(k, s, jnp.uint8), (13,))
    halves = self.param("halves", lambda k, s: jax.random.bits(k, s, jnp.uint16), (3, 5))
    many = self.param("many", lambda k: jax.random.split(k, 7))
    x = nn.Dropout(0.5, deterministic=False)(x)
    return x.sum() + bytes_.sum() + halves.sum() + jax.random.key_data(many).sum()


@pytest.mark.parametrize("impl", [None, "rbg"])
def test_mixed_initializers_equal_draws_one_by_one(impl):
  module = _Mixed()
  x = jnp.ones((2, 9, 9, 3))
  rngs = {"params": jax.random.key(3, impl=impl),
          "dropout": jax.random.key(4, impl=impl)}
  _assert_bitwise_equal(random_ops.init(module, rngs, x),
                        jax.jit(module.init)(rngs, x))


@pytest.mark.parametrize("name", ["lenet5", "mnist1d_cnn", "kim_cnn_static"])
def test_models_initialize_to_the_same_bits(name):
  shape = model_input_shape(name)
  model = create_model(name)
  x = jnp.zeros((1, *shape),
                jnp.int32 if name.startswith("kim") else jnp.float32)
  key = jax.random.key(7)
  _assert_bitwise_equal(random_ops.init(model, key, x, train=False),
                        jax.jit(lambda k: model.init(k, x, train=False))(key))


def _count(closed, name):
  def walk(jaxpr):
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == name
      for p in eqn.params.values():
        if hasattr(p, "jaxpr") and hasattr(p, "consts"):
          n += walk(p.jaxpr)
    return n
  return walk(closed.jaxpr)


def test_a_wave_of_draws_is_one_call():
  """A stand-in for a model's init: 12 layer keys folded from names, one
  kernel each of another shape. One-by-one that is 24 hashes; batched, one
  vmapped fold_in and one threefry hash for the bits."""
  shapes = [(3, 3, c, c + 1) for c in range(1, 13)]

  def init(key):
    return [jax.random.normal(jax.random.fold_in(key, i), s)
            for i, s in enumerate(shapes)]

  key = jax.random.key(0)
  plain = jax.make_jaxpr(init)(key)
  batched = jax.make_jaxpr(random_ops.batch_draws(init))(key)
  assert _count(plain, "random_bits") == 12 and _count(plain, "random_fold_in") == 12
  assert _count(batched, "random_bits") == 0
  assert _count(batched, "random_fold_in") == 1
  assert _count(batched, "threefry2x32") == 1
  _assert_bitwise_equal(jax.jit(random_ops.batch_draws(init))(key), jax.jit(init)(key))


def test_dependent_draws_keep_their_order():
  """A draw whose key comes from an earlier draw waits for it."""
  def chain(key):
    out = []
    for i in range(4):
      key, sub = jax.random.split(key)
      out.append(jax.random.uniform(sub, (i + 2,)))
    return out, jax.random.bits(key, (5,))

  key = jax.random.key(11)
  _assert_bitwise_equal(jax.jit(random_ops.batch_draws(chain))(key), jax.jit(chain)(key))


def test_ordered_effects_are_left_alone():
  seen = []

  def noisy(key):
    a = jax.random.normal(jax.random.fold_in(key, 1), (3,))
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), a, ordered=True)
    return a + jax.random.normal(jax.random.fold_in(key, 2), (3,))

  key = jax.random.key(5)
  out = jax.jit(random_ops.batch_draws(noisy))(key)
  np.testing.assert_array_equal(out, jax.jit(noisy)(key))
  assert len(seen) == 2
