"""Reference convolution maths: every implementation and backward rule vs lax."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnjax.errors import CnnjaxError
from cnnjax.ops import (CONV_IMPLEMENTATIONS, conv_input_grad, conv_lax,
                        conv_weight_grad, im2col_patches, max_pool, max_pool_grad,
                        next_fast_len, normalize_conv_args)
from cnnjax.ops import benchmark

# Tolerance relative to the largest reference magnitude. Measured errors are
# ~2e-7 (direct, im2col) and ~3e-7 (fft, also at 64x64 with a 31x31 kernel).
TOL = {"lax": 1e-6, "direct": 1e-4, "im2col": 1e-4, "fft": 1e-4}

# (input spatial, kernel spatial, stride, padding, dilation, groups, C_in, C_out)
CASES = {
    "1d-s2-same-g2": ((11,), (4,), 2, "SAME", 1, 2, 4, 6),
    "1d-depthwise-s3-pairs-d2": ((12,), (3,), 3, ((2, 1),), 2, 4, 4, 8),
    "2d-pad1": ((7, 8), (3, 3), 1, 1, 1, 1, 3, 4),
    "2d-valid-s21-d12": ((9, 7), (3, 2), (2, 1), "valid", (1, 2), 1, 2, 5),
    "2d-depthwise-s2-same": ((8, 8), (3, 3), 2, "SAME", 1, 3, 3, 6),
    # (8 + 0 - 3) % 2 = 1: the last input row is never used (zero gradient);
    # padded W = 11 is not a fast FFT length, so conv_fft transforms at 12.
    "2d-s2-nondividing-perdim-g2": ((8, 9), (3, 3), 2, (0, 1), 1, 2, 4, 2),
    "3d-mixed-g2": ((6, 5, 6), (2, 3, 2), (2, 1, 2), "SAME", (1, 2, 1), 2, 4, 4),
    "3d-pairs": ((4, 5, 4), (2, 2, 2), 1, ((1, 0), (0, 1), (1, 1)), 1, 1, 2, 3),
}


def _normal(rng, shape):
  # numpy, not jax.random: eager jax.random compiles anew for every shape (slow).
  return jnp.asarray(rng.standard_normal(shape).astype(np.float32))


def _case(name, batch=2):
  """x, w, conv kwargs and a numpy rng (for dy) for one of CASES."""
  spatial, kernel, stride, padding, dilation, groups, c_in, c_out = CASES[name]
  rng = np.random.default_rng(list(CASES).index(name))
  x = _normal(rng, (batch, *spatial, c_in))
  w = _normal(rng, (*kernel, c_in // groups, c_out))
  kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
  return x, w, kwargs, rng


def assert_close(actual, expected, tol=1e-4):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
  err = float(np.max(np.abs(actual - expected), initial=0.0))
  assert err <= tol * scale, f"max abs error {err:.3g} > {tol} * {scale:.3g}"


def _fast_jit(fn):
  """`jax.jit` for tiny test programs, with XLA's backend optimizations off.

  Run eagerly, a test compiles dozens of single ops (~30 ms each on CPU); one
  unoptimized compile of the whole test program is several times faster.
  """
  return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


def _lax_itself(x, w, *, stride, padding, dilation, groups):
  """lax.conv_general_dilated called directly; 'SAME'/'VALID' passed as strings."""
  args = normalize_conv_args(x.shape, w.shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups)
  spatial = "DHW"[-args.ndim:]
  return lax.conv_general_dilated(
      x, w, args.stride, padding.upper() if isinstance(padding, str) else args.padding,
      rhs_dilation=args.dilation,
      dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
      feature_group_count=args.groups, precision=lax.Precision.HIGHEST)


def _output_and_grads(conv, kwargs):
  """(y, dE/dx, dE/dw) of y = conv(x, w) for an upstream gradient dy, jitted."""
  def fn(x, w, dy):
    y, vjp = jax.vjp(lambda x, w: conv(x, w, **kwargs), x, w)
    return (y, *vjp(dy))
  return _fast_jit(fn)


# --- forward and its gradients ------------------------------------------------

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", ["lax", "direct", "im2col", "fft"])
def test_forward_and_gradients_match_lax(impl, case):
  x, w, kwargs, rng = _case(case)
  out_spatial = normalize_conv_args(x.shape, w.shape, **kwargs).out_spatial
  dy = _normal(rng, (x.shape[0], *out_spatial, w.shape[-1]))
  want = _output_and_grads(_lax_itself, kwargs)(x, w, dy)
  got = _output_and_grads(CONV_IMPLEMENTATIONS[impl], kwargs)(x, w, dy)
  for g, e in zip(got, want):  # y, dx, dw
    assert_close(g, e, TOL[impl])


def test_implementations_run_eagerly():
  x, w, kwargs, _ = _case("1d-s2-same-g2")
  expected = _lax_itself(x, w, **kwargs)
  for impl, fn in CONV_IMPLEMENTATIONS.items():
    assert_close(fn(x, w, **kwargs), expected, TOL[impl])


def test_padding_spellings_agree():
  x, w, _, _ = _case("2d-pad1")
  spellings = [1, (1, 1), [(1, 1), (1, 1)], ((1, 1), 1), "same", "SAME"]
  outs = [conv_lax(x, w, padding=p) for p in spellings]
  for out in outs[1:]:
    np.testing.assert_array_equal(out, outs[0])
  assert normalize_conv_args(x.shape, w.shape, padding="valid").padding == ((0, 0), (0, 0))
  # 'SAME' with stride 2 pads like lax: output ceil(W / S), extra on the high side.
  args = normalize_conv_args((1, 7, 8, 3), (4, 3, 3, 4), stride=2, padding="SAME")
  assert args.padding == ((1, 2), (0, 1)) and args.out_spatial == (4, 4)


def test_next_fast_len():
  assert [next_fast_len(n) for n in (1, 7, 11, 13, 94, 157)] == [1, 7, 12, 14, 96, 160]


def test_im2col_patches_match_lax_patches():
  x = _normal(np.random.default_rng(0), (2, 9, 8, 3))
  kwargs = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
  ours = im2col_patches(x, (3, 2), **kwargs)                       # (B, *out, K*C)
  theirs = lax.conv_general_dilated_patches(
      x, (3, 2), kwargs["stride"], kwargs["padding"], rhs_dilation=kwargs["dilation"],
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST)
  # lax orders the features (channel, kernel offset); ours (kernel offset, channel).
  theirs = theirs.reshape(*theirs.shape[:-1], 3, 6).swapaxes(-1, -2).reshape(theirs.shape)
  np.testing.assert_allclose(ours, theirs, atol=1e-6)


# --- backward rules -----------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_backward_rules_match_vjp(case):
  x, w, kwargs, rng = _case(case)
  out_spatial = normalize_conv_args(x.shape, w.shape, **kwargs).out_spatial
  dy = _normal(rng, (x.shape[0], *out_spatial, w.shape[-1]))
  _, dx, dw = _output_and_grads(_lax_itself, kwargs)(x, w, dy)
  rules = _fast_jit(lambda x, w, dy: (conv_input_grad(dy, w, x.shape, **kwargs),
                                      conv_weight_grad(x, dy, w.shape, **kwargs)))
  got_dx, got_dw = rules(x, w, dy)
  assert_close(got_dx, dx)
  assert_close(got_dw, dw)


def test_input_grad_is_zero_where_stride_skips_the_input():
  # H: 8 = 3 + 2 * 2 + 1, so the last row never meets the kernel.
  x, w, kwargs, rng = _case("2d-s2-nondividing-perdim-g2")
  dy = _normal(rng, (2, 3, 5, 2))
  dx = np.asarray(conv_input_grad(dy, w, x.shape, **kwargs))
  assert dx.shape == x.shape
  assert np.all(dx[:, -1] == 0) and np.any(dx[:, -2] != 0)
  assert np.any(dx[:, :, -1] != 0)  # (9 + 2 - 3) % 2 = 0 along W: all used


def test_backward_rules_run_eagerly():
  x, w, kwargs, rng = _case("1d-depthwise-s3-pairs-d2")
  y, vjp = jax.vjp(lambda x, w: conv_lax(x, w, **kwargs), x, w)
  dy = _normal(rng, y.shape)
  dx, dw = vjp(dy)
  assert_close(conv_input_grad(dy, w, x.shape, **kwargs), dx)
  assert_close(conv_weight_grad(x, dy, w.shape, **kwargs), dw)


# --- max pooling ----------------------------------------------------------------

LECTURE = jnp.array([[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]],
                    jnp.float32)[None, :, :, None]


def test_max_pool_lecture_example():
  np.testing.assert_array_equal(max_pool(LECTURE, 2)[0, :, :, 0], [[9, 2], [6, 3]])
  grad = max_pool_grad(LECTURE, jnp.ones((1, 2, 2, 1)), 2)[0, :, :, 0]
  expected = np.zeros((4, 4))
  expected[1, 1] = expected[0, 2] = expected[3, 1] = expected[2, 3] = 1
  np.testing.assert_array_equal(grad, expected)
  np.testing.assert_array_equal(
      jax.grad(lambda x: nn.max_pool(x, (2, 2), (2, 2)).sum())(LECTURE)[0, :, :, 0], expected)


POOLS = [  # (input spatial, window, stride, padding)
    ((9,), 3, 2, "VALID"),
    ((8, 8), (3, 3), (2, 2), "VALID"),      # overlapping windows accumulate
    ((6, 7), (2, 3), (1, 2), ((1, 0), (1, 1))),
    ((5, 6, 5), (2, 2, 2), None, "VALID"),
    ((5, 5, 6), (3, 2, 3), (2, 1, 2), "SAME"),
]


@pytest.mark.parametrize("spatial,window,stride,padding", POOLS)
def test_max_pool_and_grad_match_jax_with_ties(spatial, window, stride, padding):
  # Small integers: many ties inside windows, which exercise the tie rule.
  rng = np.random.default_rng(len(spatial))
  x = jnp.asarray(rng.integers(0, 4, (2, *spatial, 3)), jnp.float32)
  n = len(spatial)
  win = window if isinstance(window, tuple) else (window,) * n
  # Our stride defaults to the window (as in the lecture); flax's defaults to 1.
  strides = win if stride is None else stride if isinstance(stride, tuple) else (stride,) * n
  pads = padding if isinstance(padding, str) else tuple(padding)
  dy = _normal(rng, jax.eval_shape(lambda x: max_pool(x, window, stride, padding), x).shape)

  def ours_and_flax(x, dy):
    y, vjp = jax.vjp(lambda x: nn.max_pool(x, win, strides, pads), x)
    return (max_pool(x, window, stride, padding), max_pool_grad(x, dy, window, stride, padding),
            y, vjp(dy)[0])

  y, dx, want_y, want_dx = _fast_jit(ours_and_flax)(x, dy)
  np.testing.assert_array_equal(y, want_y)
  assert_close(dx, want_dx, 1e-6)


def test_max_pool_ties_go_to_first_position_in_row_major_order():
  x = jnp.zeros((1, 2, 2, 2, 1)).at[0, 1, 0, 0].set(5).at[0, 0, 1, 0].set(5)
  x = x.at[0, 0, 0, 1].set(5)
  want = np.zeros((2, 2, 2))
  want[0, 0, 1] = 1
  np.testing.assert_array_equal(max_pool_grad(x, jnp.ones((1, 1, 1, 1, 1)), 2)[0, ..., 0], want)
  np.testing.assert_array_equal(
      jax.grad(lambda x: nn.max_pool(x, (2, 2, 2)).sum())(x)[0, ..., 0], want)


# --- errors ---------------------------------------------------------------------

@pytest.mark.parametrize("x_shape,w_shape,kwargs,match", [
    ((1, 4, 4, 2), (5, 5, 2, 3), {}, "bigger than the padded input"),
    ((1, 4, 4, 2), (3, 3, 2, 3), dict(dilation=2), "bigger than the padded input"),
    ((1, 8, 8, 3), (3, 3, 1, 4), dict(groups=2), "not divisible by groups"),
    ((1, 8, 8, 4), (3, 3, 2, 3), dict(groups=2), "output channels 3"),
    ((1, 8, 8, 4), (3, 3, 4, 4), dict(groups=2), "input-channel dim is 4"),
    ((1, 8, 8, 4), (3, 3, 4, 4), dict(stride=0), "stride must be at least 1"),
    ((1, 8, 8, 4), (3, 3, 4, 4), dict(dilation=(1, 0)), "dilation must be at least 1"),
    ((1, 8, 8, 4), (3, 3, 4, 4), dict(padding="full"), "padding must be"),
    ((1, 8, 8, 4), (3, 3, 4, 4), dict(padding=(1, 1, 1)), "one entry per spatial dim"),
    ((1, 8, 4), (3, 3, 4, 4), {}, "needs an input of rank 4"),
])
def test_user_errors(x_shape, w_shape, kwargs, match):
  x, w = jnp.zeros(x_shape), jnp.zeros(w_shape)
  for fn in CONV_IMPLEMENTATIONS.values():
    with pytest.raises(CnnjaxError, match=match):
      fn(x, w, **kwargs)


def test_pool_and_backward_errors():
  with pytest.raises(CnnjaxError, match="pooling window"):
    max_pool(jnp.zeros((1, 2, 2, 1)), 3)
  with pytest.raises(CnnjaxError, match="upstream gradient"):
    conv_input_grad(jnp.zeros((1, 3, 3, 2)), jnp.zeros((3, 3, 1, 2)), (1, 4, 4, 1))


# --- benchmark ------------------------------------------------------------------

def test_conv_crossover_tiny():
  rows = benchmark.conv_crossover(image_size=8, kernel_sizes=(3, 5), batch=2, repeats=1)
  assert {(r["kernel_size"], r["implementation"]) for r in rows} == {
      (k, i) for k in (3, 5) for i in ("lax", "fft", "direct", "im2col")}
  assert all(r["median_ms"] > 0 and r["max_abs_diff"] < 1e-3 for r in rows)
  crossovers = benchmark.find_crossovers(rows)
  assert set(crossovers) == {"lax", "direct", "im2col"}
  assert all(c in (None, 3, 5) for c in crossovers.values())
  table = benchmark.format_table(rows)
  assert table.count("\n") == 3 and "fft speedup vs lax" in table


def test_find_crossovers_needs_fft_to_stay_faster():
  ms = {"lax": [1, 2, 3, 9], "fft": [2, 1, 4, 4], "direct": [9, 9, 9, 9], "im2col": [1, 1, 1, 1]}
  rows = [dict(kernel_size=k, implementation=name, median_ms=t)
          for name, times in ms.items() for k, t in zip((3, 5, 7, 9), times)]
  assert benchmark.find_crossovers(rows) == {"lax": 9, "direct": 3, "im2col": None}


def test_benchmark_main_writes_json(tmp_path, capsys):
  path = str(tmp_path / "bench.json")
  assert benchmark.main(["--image-size", "8", "--kernel-sizes", "3,5", "--repeats", "1",
                         "--batch", "2", "--json", path]) == 0
  result = json.load(open(path))
  assert len(result["rows"]) == 8 and set(result["crossovers"]) == {"lax", "direct", "im2col"}
  assert result["jax_version"] == jax.__version__
  out = capsys.readouterr().out
  assert "| 5x5 |" in out and "fft is faster than" in out


@pytest.mark.parametrize("argv,match", [
    (["--implementations", "lax,winograd"], "unknown convolution implementation"),
    (["--image-size", "8", "--kernel-sizes", "3,9"], "bigger than the image"),
    (["--kernel-sizes", "3,x"], "comma-separated integers"),
])
def test_benchmark_main_bad_arguments(argv, match):
  with pytest.raises(CnnjaxError, match=match):
    benchmark.main(argv)
