"""Ceil-mode pooling against PyTorch's `ceil_mode=True`: sizes, values and
input gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.layers.pooling import ceil_mode_padding

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Compiling dominates on a CPU: every pooling below is traced into one
# program, compiled once without LLVM's expensive passes.
QUICK_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}

# (window, stride, padding): window > stride (overlapping: AlexNet, GoogLeNet),
# window == stride, window < stride (gaps: the last window may start past the
# input, which torch drops), with and without padding.
CASES = [(3, 2, 0), (3, 2, 1), (2, 2, 0), (2, 2, 1), (3, 3, 1), (5, 3, 0),
         (5, 3, 2), (4, 3, 2), (1, 3, 0), (2, 3, 0), (2, 3, 1), (1, 2, 0),
         (3, 1, 1)]
# Non-square windows, strides and paddings (2D average pooling): the divisor
# of a clipped last window is a product over the dims.
MIXED = [((3, 2), (2, 1), (1, 0)), ((2, 5), (3, 2), (0, 2))]
SIZES = {1: (4, 5, 7, 8, 11), 2: (5, 6, 9), 3: (5, 7)}


def _fits(shape, window, padding):
  window = (window,) * len(shape) if isinstance(window, int) else window
  padding = (padding,) * len(shape) if isinstance(padding, int) else padding
  return all(s + 2 * p >= w for s, w, p in zip(shape, window, padding))


def _inputs(ndim):
  rng = np.random.default_rng(ndim)
  return [rng.standard_normal((1, *(s,) * ndim, 2)).astype(np.float32)
          for s in SIZES[ndim]]


def _runs():
  """(pooling, ndim, count_include_pad, x, (window, stride, padding))."""
  runs = []
  for ndim in (1, 2, 3):
    runs += [("max", ndim, None, x, case) for x in _inputs(ndim)
             for case in CASES]
  for include in (True, False):
    runs += [("avg", 2, include, x, case) for x in _inputs(2)
             for case in CASES + MIXED]
  return [r for r in runs if _fits(r[3].shape[1:-1], *r[4][::2])]


def _gradient_loss(x):
  y = layers.max_pool(x, 3, 2, 1, ceil_mode=True)
  z = layers.avg_pool(x, 2, 2, 1, count_include_pad=False, ceil_mode=True)
  return jnp.sum(y ** 2) + jnp.sum(z ** 2)


@functools.lru_cache(maxsize=None)
def _ours():
  """(runs, our outputs, a gradient through both poolings): one program."""
  runs = _runs()

  @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
  def pool_all(xs, g):
    outs = []
    for (kind, _, include, _, (window, stride, padding)), x in zip(runs, xs):
      if kind == "max":
        outs.append(layers.max_pool(x, window, stride, padding,
                                    ceil_mode=True))
      else:
        outs.append(layers.AvgPool(window, stride, padding,
                                   count_include_pad=include,
                                   ceil_mode=True).apply({}, x))
    return outs, jax.grad(_gradient_loss)(g)

  g = np.random.default_rng(0).standard_normal((2, 7, 7, 3)).astype(np.float32)
  outs, grad = pool_all([r[3] for r in runs], g)
  return runs, [np.asarray(y) for y in outs], np.asarray(grad)


def _reference(kind, ndim, include, x, case):
  window, stride, padding = case
  x = torch.from_numpy(np.moveaxis(x, -1, 1).copy())  # channels first
  if kind == "max":
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[ndim - 1]
    y = pool(x, window, stride, padding, ceil_mode=True)
  else:
    y = F.avg_pool2d(x, window, stride, padding, ceil_mode=True,
                     count_include_pad=include)
  return np.moveaxis(y.numpy(), 1, -1)


# Gradients (and values) against torch in 1, 2 and 3 dims, average pooling
# with and without count_include_pad: torch's divisor of a window that ceil
# mode adds stops at the padded input, and the gradient is divided by it too.
GRAD_CASES = [(3, 2, 1), (2, 2, 0), (5, 3, 2), (2, 3, 1), (4, 3, 2)]
GRAD_SHAPES = {1: (11,), 2: (7, 9), 3: (5, 7, 6)}
KINDS = [("max", None), ("avg", True), ("avg", False)]


def _pool(kind, include, x, case):
  window, stride, padding = case
  if kind == "max":
    return layers.max_pool(x, window, stride, padding, ceil_mode=True)
  return layers.avg_pool(x, window, stride, padding, count_include_pad=include,
                         ceil_mode=True)


@functools.lru_cache(maxsize=None)
def _gradients():
  """(runs, torch's values and input gradients, ours): one program."""
  rng = np.random.default_rng(7)
  runs, theirs = [], []
  for ndim, shape in GRAD_SHAPES.items():
    x = rng.standard_normal((2, *shape, 3)).astype(np.float32)
    for kind, include in KINDS:
      for case in GRAD_CASES:
        x_t = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_()
        pool = getattr(F, f"{kind}_pool{ndim}d")
        extra = {} if kind == "max" else {"count_include_pad": include}
        y_t = pool(x_t, *case, ceil_mode=True, **extra)  # channels first
        g = rng.standard_normal(tuple(y_t.shape)).astype(np.float32)
        y_t.backward(torch.from_numpy(g))
        runs.append((kind, ndim, include, x, case))
        theirs.append((np.moveaxis(y_t.detach().numpy(), 1, -1),
                       np.moveaxis(g, 1, -1),
                       np.moveaxis(x_t.grad.numpy(), 1, -1)))

  @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
  def vjps(xs, gs):
    outs = []
    for (kind, _, include, _, case), x, g in zip(runs, xs, gs):
      y, vjp = jax.vjp(lambda a, k=kind, i=include, c=case: _pool(k, i, a, c),
                       x)
      outs.append((y, vjp(g)[0]))
    return outs

  ours = vjps([r[3] for r in runs], [t[1] for t in theirs])
  return runs, theirs, [(np.asarray(y), np.asarray(d)) for y, d in ours]


@pytest.mark.parametrize("window, stride, padding", CASES)
def test_ceil_mode_padding_gives_torch_output_sizes(window, stride, padding):
  for size in range(1, 16):
    if not _fits((size,), window, padding):
      continue
    lo, hi = ceil_mode_padding(size, window, stride, padding)
    ref = F.max_pool1d(torch.zeros(1, 1, size), window, stride, padding,
                       ceil_mode=True).shape[-1]
    assert lo == padding and hi >= padding
    assert (size + lo + hi - window) // stride + 1 == ref, (size, window,
                                                            stride, padding)


def test_the_stride_larger_than_window_case():
  # Length 5, window 1, stride 3: positions 0 and 3; a third window would
  # start at 6, past the input, so torch gives 2 outputs (not 3).
  assert ceil_mode_padding(5, 1, 3) == (0, 0)
  runs, outs, _ = _ours()
  ((x, y),) = [(x, y) for (kind, ndim, _, x, case), y in zip(runs, outs)
               if kind == "max" and ndim == 1 and x.shape[1] == 5 and
               case == (1, 3, 0)]
  np.testing.assert_array_equal(y, x[:, [0, 3]])


@pytest.mark.parametrize("kind, ndim, include", [
    ("max", 1, None), ("max", 2, None), ("max", 3, None),
    ("avg", 2, True), ("avg", 2, False)])
def test_values_match_torch(kind, ndim, include):
  runs, outs, _ = _ours()
  checked = 0
  for run, y in zip(runs, outs):
    if run[:3] != (kind, ndim, include):
      continue
    np.testing.assert_allclose(y, _reference(*run), rtol=1e-6, atol=1e-6,
                               err_msg=str((run[3].shape, run[4])))
    checked += 1
  assert checked >= 10


def test_floor_mode_is_unchanged_and_bad_paddings_are_reported():
  x = jnp.zeros((1, 7, 7, 2))
  shape = lambda module: jax.eval_shape(module.apply, {}, x).shape  # noqa: E731
  assert shape(layers.MaxPool(3, 2)) == (1, 3, 3, 2)
  assert shape(layers.MaxPool(3, 2, ceil_mode=True)) == (1, 3, 3, 2)
  assert shape(layers.MaxPool(2, 2, ceil_mode=True)) == (1, 4, 4, 2)
  assert shape(layers.AvgPool(2, 2)) == (1, 3, 3, 2)
  with pytest.raises(CnnjaxError, match="ceil_mode needs numeric"):
    shape(layers.MaxPool(2, 2, "SAME", ceil_mode=True))
  with pytest.raises(CnnjaxError, match="at most half the window"):
    shape(layers.AvgPool(2, 2, 2, ceil_mode=True))


def test_ceil_mode_pooling_has_gradients():
  grad = _ours()[2]
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("kind, include", KINDS)
def test_values_and_gradients_match_torch_in_1d_2d_and_3d(kind, include):
  runs, theirs, ours = _gradients()
  checked = 0
  for run, (y_ref, _, dx_ref), (y, dx) in zip(runs, theirs, ours):
    if run[0] != kind or run[2] != include:
      continue
    message = str((run[1], run[4]))
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6,
                               err_msg=message)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6,
                               err_msg=message)
    checked += 1
  assert checked == len(GRAD_SHAPES) * len(GRAD_CASES)
