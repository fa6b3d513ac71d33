"""adaptive_max_pool / AdaptiveMaxPool against torch's adaptive_max_pool{1,2,3}d:
values and input gradients, for inputs larger, smaller, equal to and not
divisible by the output size."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers as L
from cnnjax.errors import CnnjaxError

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (input spatial shape, output size): overlapping uneven bins (10 -> 3:
# [0, 4), [3, 7), [6, 10)), repeats (a smaller input), the identity, and
# mixed per-dim cases.
CASES = [
    ((10,), 3), ((7,), 7), ((5,), 8), ((13,), 4), ((1,), 3), ((9,), 1),
    ((9, 5), (4, 7)), ((7, 11), 3), ((6, 6), (6, 3)), ((3, 5), (7, 2)),
    ((8, 8), (4, 4)),
    ((5, 4, 7), (2, 3, 4)), ((3, 5, 2), (4, 2, 3)), ((4, 6, 5), 1),
]


def _distinct(shape, seed):
  """Float32 values with no ties, so each bin has one argmax."""
  rng = np.random.default_rng(seed)
  return (rng.permutation(np.prod(shape)).reshape(shape) / 7.0 - 3.0).astype(
      np.float32)


def _torch_pool(x, output_size, g):
  """torch's values and input gradient for cotangent `g` (channels last)."""
  ndim = x.ndim - 2
  x_t = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_()
  y_t = getattr(F, f"adaptive_max_pool{ndim}d")(x_t, output_size)
  if g is not None:
    y_t.backward(torch.from_numpy(np.moveaxis(g, -1, 1).copy()))
  y = np.moveaxis(y_t.detach().numpy(), 1, -1)
  return y, (None if g is None else np.moveaxis(x_t.grad.numpy(), 1, -1))


def _check(xs, output_sizes, seed):
  """Our values and gradients equal torch's for every (x, size) pair."""
  rng = np.random.default_rng(seed)
  refs = [_torch_pool(x, size, None)[0] for x, size in zip(xs, output_sizes)]
  gs = [rng.standard_normal(y.shape).astype(np.float32) for y in refs]
  refs = [_torch_pool(x, size, g) for x, size, g in zip(xs, output_sizes, gs)]

  @jax.jit
  def ours(xs, gs):
    out = []
    for x, size, g in zip(xs, output_sizes, gs):
      y, vjp = jax.vjp(functools.partial(L.adaptive_max_pool,
                                         output_size=size), x)
      module = L.AdaptiveMaxPool(size).apply({}, x)
      out.append((y, vjp(g)[0], module))
    return out

  for (y, dx, module), (y_ref, dx_ref), size in zip(ours(xs, gs), refs,
                                                    output_sizes):
    np.testing.assert_array_equal(y, y_ref, err_msg=str(size))
    np.testing.assert_array_equal(module, y_ref, err_msg=str(size))
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6,
                               err_msg=str(size))


def test_values_and_gradients_match_torch():
  # A bin's gradient goes to its argmax; overlapping bins sum at a shared max.
  xs = [_distinct((2, *shape, 3), seed) for seed, (shape, _) in
        enumerate(CASES)]
  _check(xs, [size for _, size in CASES], seed=1)


def test_ties_go_to_the_first_element_in_row_major_order_as_in_torch():
  # Few distinct values: most bins hold several maxima.
  rng = np.random.default_rng(3)
  shapes = [(2, 9, 3), (2, 5, 7, 2), (1, 4, 5, 3, 2)]
  sizes = [4, (3, 2), (3, 2, 2)]
  xs = [rng.integers(0, 3, shape).astype(np.float32) for shape in shapes]
  _check(xs, sizes, seed=2)


def test_output_shape_and_bad_sizes():
  x = jnp.zeros((2, 9, 5, 3))
  assert L.adaptive_max_pool(x, (4, 7)).shape == (2, 4, 7, 3)
  assert L.AdaptiveMaxPool(1).apply({}, x).shape == (2, 1, 1, 3)
  with pytest.raises(CnnjaxError, match="output size must be a positive"):
    L.adaptive_max_pool(x, (0, 2))
  with pytest.raises(CnnjaxError, match="output size must be a positive"):
    L.adaptive_max_pool(x, (2, 2, 2))
  with pytest.raises(CnnjaxError, match="needs inputs of shape"):
    L.adaptive_max_pool(jnp.zeros((2, 3)), 2)
