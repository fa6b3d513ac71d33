"""cnnjax.ops.pool_grad: lax's max pool with a window-offset gradient that
sends every window's gradient where XLA's select-and-scatter does (the
first maximum in row-major window order)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnjax.ops import backend
from cnnjax.ops import pool_grad

# (x shape, window, strides, padding): full rank, as lax takes them.
CASES = [
    ((2, 9, 9, 3), (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))),  # ResNet's stem
    ((2, 8, 8, 3), (1, 2, 2, 1), (1, 2, 2, 1), "VALID"),  # VGG
    ((2, 7, 5), (1, 3, 1), (1, 1, 1), ((0, 0), (1, 1), (0, 0))),  # 1D, overlapping
    ((2, 5, 6, 7, 2), (1, 2, 3, 2, 1), (1, 2, 1, 2, 1), "VALID"),  # 3D
    ((3, 11, 9, 2), (1, 3, 3, 1), (1, 2, 2, 1), "SAME"),
    ((1, 10, 10, 2), (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (0, 1), (0, 1), (0, 0))),  # ceil mode
    ((2, 6, 6, 4), (1, 2, 2, 2), (1, 2, 2, 2), "VALID"),  # over channels too
]


def _reference(x, window, strides, padding):
  return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_values_and_gradients_equal_select_and_scatters(case, ties):
  shape, window, strides, padding = case
  rng = np.random.default_rng(len(shape) + 3 * ties)
  values = rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)
  x = jnp.asarray(values, jnp.float32)
  expected, vjp = jax.vjp(lambda x: _reference(x, window, strides, padding), x)
  cotangent = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
  (wanted,) = vjp(cotangent)
  ours = jax.jit(lambda x: pool_grad.max_pool(x, window, strides, padding))
  np.testing.assert_array_equal(ours(x), expected)
  got = jax.jit(lambda x, g: jax.vjp(lambda x: pool_grad.max_pool(x, window, strides, padding),
                                     x)[1](g)[0])(x, cotangent)
  # Equal but for the order in which overlapping windows' gradients add up.
  np.testing.assert_allclose(got, wanted, rtol=1e-6, atol=1e-6)
  text = jax.jit(jax.grad(lambda x: pool_grad.max_pool(x, window, strides, padding).sum())
                 ).lower(x).as_text()
  assert "select_and_scatter" not in text


def test_large_windows_and_integers_keep_laxs_gradient():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 12, 12, 3)), jnp.float32)
  window = (1, 6, 6, 1)  # 36 elements > MAX_WINDOW
  text = jax.jit(jax.grad(lambda x: pool_grad.max_pool(x, window, window, "VALID").sum())
                 ).lower(x).as_text()
  assert "select_and_scatter" in text
  ints = jnp.arange(32, dtype=jnp.int32).reshape(1, 4, 4, 2)
  np.testing.assert_array_equal(
      pool_grad.max_pool(ints, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"),
      lax.reduce_window(ints, jnp.iinfo(jnp.int32).min, lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                        "VALID"))


def test_the_xla_backend_pools_with_it_on_the_cpu(monkeypatch):
  from cnnjax.layers import pooling
  saved = list(backend._resolved)
  try:
    backend._resolved[:] = ["xla"]
    x = jnp.ones((1, 8, 8, 2))
    text = jax.jit(jax.grad(lambda x: pooling.max_pool(x, 3, 2, 1).sum())).lower(x).as_text()
    assert "select_and_scatter" not in text
  finally:
    backend._resolved[:] = saved
