"""The oneDNN convolution backend: forward and both gradients equal XLA's,
models compute the same logits and training step on either backend, and a
backend that cannot run is said in one sentence.

The parity tests need the `onednn` extra (and a C++ compiler); without them
they skip, saying why. The choice and refusal tests run everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from cnnjax import layers
from cnnjax.config import base_config
from cnnjax.config.validate import validate
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model
from cnnjax.ops import backend, onednn
from cnnjax.ops import random as random_ops


@pytest.fixture
def restore_backend():
  saved = list(backend._resolved)
  yield
  backend._resolved[:] = saved


def _require_onednn():
  ok, why = onednn.available()
  if not ok:
    pytest.skip(f"oneDNN backend unavailable: {why}")


@pytest.fixture
def use_onednn(restore_backend):
  _require_onednn()
  backend.set_conv_backend("onednn")


def _spec(n):
  space = "DHW"[3 - n:]
  return (f"N{space}C", f"{space}IO", f"N{space}C")


# (x shape, kernel window, in/out channels, groups, strides, padding, dilation)
CASES = [
    ((2, 9, 11), (3, 3), (6, 4), 1, (1, 1), "SAME", (1, 1)),
    ((3, 10, 7), (3, 2), (4, 6), 2, (2, 1), ((1, 0), (2, 1)), (2, 1)),
    ((2, 13), (5,), (3, 3), 1, (3,), "VALID", (2,)),
    ((2, 6, 7, 5), (3, 1, 2), (4, 8), 2, (1, 2, 1), "SAME", (1, 1, 2)),
    ((4, 8, 8), (1, 1), (8, 16), 1, (2, 2), "VALID", (1, 1)),
    ((2, 7, 7), (3, 3), (6, 6), 6, (1, 1), "SAME", (1, 1)),  # depthwise
    ((1, 17, 15), (7, 7), (3, 5), 1, (2, 2), ((3, 3), (3, 3)), (1, 1)),  # a stem
    ((2, 5, 5), (3, 3), (2, 4), 1, (2, 2), ((0, 2), (1, 0)), (1, 1)),  # rows left over
]


def _random_cases(count, seed=0):
  """Random geometries, each valid for lax: 1 to 3 spatial dims, odd sizes."""
  rng = np.random.default_rng(seed)
  cases = []
  while len(cases) < count:
    n = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    window = tuple(int(k) for k in rng.integers(1, 4, n))
    strides = tuple(int(s) for s in rng.integers(1, 3, n))
    dilation = tuple(int(d) for d in rng.integers(1, 3, n))
    padding = tuple((int(lo), int(hi)) for lo, hi in rng.integers(0, 3, (n, 2)))
    size = tuple(int(s) for s in rng.integers(3, 9, n))
    reach = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    if any(s + lo + hi < r for s, (lo, hi), r in zip(size, padding, reach)):
      continue
    cases.append(((int(rng.integers(1, 4)), *size), window, (cin, cout), groups, strides,
                  padding, dilation))
  return cases


def _conv(impl, strides, padding, dilation, groups, n):
  return lambda x, w: impl(x, w, strides, padding, rhs_dilation=dilation,
                           dimension_numbers=_spec(n), feature_group_count=groups)


@pytest.mark.parametrize("case", CASES + _random_cases(12),
                         ids=[f"case{i}" for i in range(len(CASES) + 12)])
def test_forward_and_both_gradients_equal_xla(case):
  _require_onednn()
  shape, window, (cin, cout), groups, strides, padding, dilation = case
  n = len(window)
  rng = np.random.default_rng(len(shape) * 7 + cin)
  x = jnp.asarray(rng.standard_normal((*shape, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*window, cin // groups, cout)), jnp.float32)
  ours = _conv(onednn.conv_general_dilated, strides, padding, dilation, groups, n)
  reference = _conv(lax.conv_general_dilated, strides, padding, dilation, groups, n)
  expected = reference(x, w)
  got = jax.jit(ours)(x, w)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
  grads = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * cotangent), (0, 1)))(x, w)
  wanted = jax.grad(lambda x, w: jnp.sum(reference(x, w) * cotangent), (0, 1))(x, w)
  for a, b in zip(grads, wanted):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_bfloat16_is_computed_in_bfloat16():
  """In bfloat16 by oneDNN where the CPU has it, by XLA (the fallback)
  where it has not: either way a bfloat16 result near float32's."""
  _require_onednn()
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 16)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((3, 3, 16, 8)) * 0.1, jnp.bfloat16)
  conv = _conv(onednn.conv_general_dilated, (1, 1), "SAME", (1, 1), 1, 2)
  got = jax.jit(conv)(x, w)
  assert got.dtype == jnp.bfloat16
  expected = _conv(lax.conv_general_dilated, (1, 1), "SAME", (1, 1), 1, 2)(
      x.astype(jnp.float32), w.astype(jnp.float32))
  np.testing.assert_allclose(got.astype(jnp.float32), expected, rtol=0.05, atol=0.05)


def test_what_onednn_does_not_take_falls_back_to_xla():
  """Input dilation (a transposed convolution), batch groups and channels-first
  layouts are computed by the fallback, so their results still equal lax's."""
  x = jnp.ones((2, 5, 5, 4))
  w = jnp.ones((3, 3, 4, 4))
  assert not onednn.supported(x, w, (1, 1), "SAME", lhs_dilation=(2, 2),
                              dimension_numbers=_spec(2))
  assert not onednn.supported(x, w, (1, 1), "SAME", dimension_numbers=_spec(2),
                              batch_group_count=2)
  assert not onednn.supported(x, w, (1, 1), ((-1, 0), (0, 0)), dimension_numbers=_spec(2))
  assert not onednn.supported(jnp.ones((2, 4, 5, 5)), jnp.ones((4, 4, 3, 3)), (1, 1),
                              "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
  assert not onednn.supported(x.astype(jnp.float16), w.astype(jnp.float16), (1, 1),
                              "SAME", dimension_numbers=_spec(2))
  assert onednn.supported(x, w, (1, 1), "SAME", dimension_numbers=_spec(2))
  pads = ((1, 1), (1, 1))
  got = onednn.conv_general_dilated(x, w, (1, 1), pads, (2, 2), None, _spec(2))
  expected = lax.conv_general_dilated(x, w, (1, 1), pads, (2, 2), None, _spec(2))
  np.testing.assert_allclose(got, expected)


def test_vmapped_seeds_run_the_handler_per_example():
  _require_onednn()
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((3, 2, 6, 6, 2)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 3, 2, 4)), jnp.float32)
  ours = _conv(onednn.conv_general_dilated, (1, 1), "SAME", (1, 1), 1, 2)
  reference = _conv(lax.conv_general_dilated, (1, 1), "SAME", (1, 1), 1, 2)
  np.testing.assert_allclose(jax.jit(jax.vmap(ours))(x, w), jax.vmap(reference)(x, w),
                             rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Max pooling


# (x shape without channels, window, stride, padding, ceil_mode): the stems
# of ResNet and GoogLeNet, VGG's 2x2, 1D and 3D, torch's ceil mode, 'SAME'.
POOL_CASES = [
    ((2, 9, 9), 3, 2, 1, False),
    ((2, 8, 8), 2, 2, 0, False),
    ((3, 10, 10), 3, 2, 0, True),
    ((3, 11, 9), 3, 2, "SAME", False),
    ((2, 7), 3, 1, 1, False),
    ((2, 5, 6, 7), (2, 3, 2), (2, 1, 2), 0, False),
    ((1, 6, 5), (3, 2), (1, 2), ((1, 0), (0, 1)), False),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[f"pool{i}" for i in range(len(POOL_CASES))])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_max_pooling_and_its_gradient_equal_xlas(case, ties, restore_backend):
  """oneDNN's max pooling gives XLA's maxima, and its gradient goes where
  XLA's select-and-scatter sends it: to each window's first maximum (inputs
  drawn from {0, 1, 2} make most windows tie)."""
  _require_onednn()
  from cnnjax.layers import pooling
  from cnnjax.ops.onednn import pooling as dnnl_pooling
  shape, window, stride, padding, ceil_mode = case
  rng = np.random.default_rng(len(shape) + (7 if ties else 0))
  values = rng.integers(0, 3, (*shape, 3)) if ties else rng.standard_normal((*shape, 3))
  x = jnp.asarray(values, jnp.float32)
  pool = lambda x: pooling.max_pool(x, window, stride, padding, ceil_mode=ceil_mode)  # noqa: E731
  dims, strides, pads, _ = pooling._window_args(x, window, stride, padding, "max_pool",
                                                ceil_mode)
  assert dnnl_pooling.supported(x, dims, strides, pads)
  backend.set_conv_backend("xla")
  expected, vjp = jax.vjp(pool, x)
  cotangent = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)
  (wanted,) = vjp(cotangent)
  backend.set_conv_backend("onednn")
  text = jax.jit(pool).lower(x).as_text()
  assert "cnnjax_dnnl_max_pool_inference" in text and "reduce_window" not in text
  np.testing.assert_array_equal(jax.jit(pool)(x), expected)
  got = jax.jit(lambda x, g: jax.vjp(pool, x)[1](g)[0])(x, cotangent)
  # Equal but for the order in which overlapping windows' gradients add up.
  np.testing.assert_allclose(got, wanted, rtol=1e-6, atol=1e-6)
  if ties:  # Sending a tie's gradient to every maximum would change the sums.
    assert float(jnp.sum(got)) == pytest.approx(float(jnp.sum(cotangent)), abs=1e-4)


def test_what_onednn_pooling_does_not_take_is_xlas():
  """Windows over the channels, padding as wide as the window and integer
  inputs stay with lax.reduce_window; bfloat16 too where this CPU lacks it."""
  _require_onednn()
  from cnnjax.ops.onednn import pooling as dnnl_pooling
  x = jnp.ones((2, 6, 6, 4), jnp.float32)
  assert dnnl_pooling.supported(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  assert not dnnl_pooling.supported(x, (1, 2, 2, 2), (1, 2, 2, 2), "VALID")
  assert not dnnl_pooling.supported(x, (1, 2, 2, 1), (1, 1, 1, 1),
                                    ((0, 0), (2, 2), (0, 0), (0, 0)))
  assert not dnnl_pooling.supported(x.astype(jnp.int32), (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  bf16 = dnnl_pooling.supported(x.astype(jnp.bfloat16), (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  assert bf16 == onednn.has_bfloat16()
  for args in [((1, 2, 2, 2), (1, 2, 2, 2), "VALID"),
               ((1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (3, 3), (3, 3), (0, 0)))]:
    expected = lax.reduce_window(x, -jnp.inf, lax.max, *args)
    np.testing.assert_array_equal(dnnl_pooling.max_pool(x, *args), expected)


# --------------------------------------------------------------------------
# Models on both backends

MODELS = [  # name, input shape, overrides: every kind of convolution cnnjax has
    ("lenet5", (32, 32, 1), {}),  # 2D, VALID
    ("resnet20", (32, 32, 3), {"depth": 8}),  # strided, batch norm
    ("resnext50_32x4d", (32, 32, 3),  # groups, the 7x7 stem, max pooling
     {"stage_sizes": (1, 1, 1, 1), "width": 16, "groups": 4, "width_per_group": 4}),
    ("mnist1d_cnn", (40, 1), {}),  # 1D
    ("resnet18_3d", (8, 16, 16, 1), {"stage_sizes": (1, 1, 1, 1), "width": 8}),  # 3D
]


# 11 s and 7 s: their grouped and 3D convolutions are compared op by op above.
SLOW_MODELS = ("resnext50_32x4d", "resnet18_3d")


def _present(models):
  from cnnjax.models import list_models
  names = set(list_models())
  return [pytest.param(*m, id=m[0], marks=[pytest.mark.slow] if m[0] in SLOW_MODELS else [])
          if m[0] in names else
          pytest.param(*m, id=m[0], marks=pytest.mark.skip(reason="not registered"))
          for m in models]


def _logits_and_step(name, shape, overrides):
  model = create_model(name, num_classes=10, **overrides)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, *shape)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, 4))
  variables = random_ops.init(model, jax.random.key(0), x, train=False)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  tx = optax.sgd(0.1, momentum=0.9)

  def loss(params, rest):
    out, _ = model.apply({"params": params, **rest}, x, train=True,
                         mutable=list(rest), rngs={"dropout": jax.random.key(1)})
    return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

  @jax.jit
  def step(params, rest):
    value, grads = jax.value_and_grad(loss)(params, rest)
    updates, _ = tx.update(grads, tx.init(params), params)
    return value, grads, optax.apply_updates(params, updates)

  rest = {k: v for k, v in variables.items() if k != "params"}
  return (logits, *step(variables["params"], rest))


@pytest.mark.parametrize("name, shape, overrides", _present(MODELS))
def test_models_compute_the_same_logits_and_step_on_both_backends(
    name, shape, overrides, restore_backend):
  _require_onednn()
  backend.set_conv_backend("xla")
  expected = _logits_and_step(name, shape, overrides)
  backend.set_conv_backend("onednn")
  got = _logits_and_step(name, shape, overrides)
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-5)
  # Gradients: float32 sums in another order, so each parameter's gradient
  # is compared as a whole, against its norm or a thousandth of the whole
  # gradient's (a scale of 4e-5 in ResNeXt's first block is cancellation);
  # batch norm over 4 examples amplifies rounding (3D ResNet: up to 1.5e-4 of
  # a norm), while a wrong border or stride would be off by percents.
  whole = float(optax.tree.norm(expected[2]))
  for a, b in zip(jax.tree.leaves(got[2]), jax.tree.leaves(expected[2])):
    scale = max(float(jnp.linalg.norm(b)), 1e-3 * whole)
    assert float(jnp.linalg.norm(a - b)) < 1e-3 * scale
  for a, b in zip(jax.tree.leaves(got[3]), jax.tree.leaves(expected[3])):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_layers_route_through_the_chosen_backend(monkeypatch, restore_backend):
  """layers.Conv and ConvTranspose call the backend's convolution when traced."""
  calls = []
  real = onednn.conv_general_dilated

  def spy(*args):
    calls.append(args[0].shape)
    return real(*args)

  monkeypatch.setattr(onednn, "conv_general_dilated", spy)
  backend._resolved[:] = ["onednn"]  # As set_conv_backend would on success.
  x = jnp.ones((1, 6, 6, 2))
  conv = layers.Conv(3, 3)
  jax.eval_shape(lambda: conv.init(jax.random.key(0), x))
  up = layers.ConvTranspose(2, 3, 2)
  jax.eval_shape(lambda: up.init(jax.random.key(0), x))
  assert len(calls) == 2
  backend._resolved[:] = ["xla"]
  jax.eval_shape(lambda: conv.init(jax.random.key(0), x))
  assert len(calls) == 2


# --------------------------------------------------------------------------
# Choosing, and refusing


def test_the_default_is_xla_and_the_environment_chooses(monkeypatch, restore_backend):
  monkeypatch.delenv(backend.ENV, raising=False)
  assert backend.set_conv_backend("") == "xla" and backend.active() == "xla"
  monkeypatch.setenv(backend.ENV, "XLA")
  assert backend.requested() == "xla"
  monkeypatch.setenv(backend.ENV, "cudnn")
  with pytest.raises(CnnjaxError, match="CNNJAX_CONV_BACKEND must be one of"):
    backend.set_conv_backend("")
  with pytest.raises(CnnjaxError, match="config.conv_backend must be one of"):
    backend.set_conv_backend("fast")


def test_an_unavailable_onednn_is_refused_or_said_once(monkeypatch, tmp_path, capsys,
                                                       restore_backend):
  """'onednn' that cannot run is refused in one sentence that names the
  extra; 'auto' falls back to XLA and says why in one line."""
  monkeypatch.setattr(onednn, "_state", {})
  monkeypatch.setattr(backend, "_said", set())
  monkeypatch.setenv("CNNJAX_ONEDNN_PREFIX", str(tmp_path))
  with pytest.raises(CnnjaxError) as refused:
    backend.set_conv_backend("onednn")
  message = str(refused.value)
  assert "pip install -e '.[onednn]'" in message and "\n" not in message
  assert backend.set_conv_backend("auto") == "xla"
  assert backend.set_conv_backend("auto") == "xla"  # A second run of a sweep: silent.
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "convolutions run on XLA, not oneDNN" in err


def test_config_conv_backend_is_validated():
  config = base_config()
  config.model.name, config.dataset.name = "lenet5", "digits"
  config.num_steps = 1
  validate(config)
  config.conv_backend = "mkl"
  with pytest.raises(CnnjaxError, match="config.conv_backend must be"):
    validate(config)


@pytest.mark.slow  # A second compile of the library (4 s).
def test_the_build_is_cached_by_source_and_versions(tmp_path, monkeypatch):
  """A second library_path() finds the first build: one compile per source,
  oneDNN and jaxlib version."""
  _require_onednn()
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  first = onednn.library_path()
  assert first.startswith(str(tmp_path)) and first.endswith(".so")
  stamp = (tmp_path / first).stat().st_mtime_ns
  assert onednn.library_path() == first
  assert (tmp_path / first).stat().st_mtime_ns == stamp
  assert onednn.version().count(".") == 2


def test_a_run_trains_on_onednn_to_xlas_result_and_says_so(tmp_path, restore_backend):
  """config.conv_backend='onednn': the MNIST-1D CNN's 40 steps end where
  XLA's end (to rounding), and result.json names the backend."""
  _require_onednn()
  from conftest import tiny_mnist1d_config

  from cnnjax.train import loop

  results = {}
  for name in ("xla", "onednn"):
    config = tiny_mnist1d_config(conv_backend=name, num_steps=20, eval_every=20,
                                 checkpoint_every=20)
    results[name] = loop.train_and_evaluate(config, str(tmp_path / name))
  assert results["onednn"]["device"]["conv_backend"] == "onednn"
  assert results["xla"]["device"]["conv_backend"] == "xla"
  final = {k: results[k]["final"] for k in results}
  assert final["onednn"]["test/loss"] == pytest.approx(final["xla"]["test/loss"], rel=1e-4)
  assert abs(final["onednn"]["test/accuracy"] - final["xla"]["test/accuracy"]) <= 0.002


def test_an_export_holds_xlas_convolutions_whatever_the_backend(restore_backend):
  """A StableHLO export traced while oneDNN is chosen calls no FFI handler of
  this process: it runs anywhere."""
  from cnnjax.export.common import inference_function

  model = create_model("lenet5", num_classes=10)
  x = jnp.zeros((1, 32, 32, 1))
  fn = inference_function(model, random_ops.init(model, jax.random.key(0), x, train=False))
  backend._resolved[:] = ["onednn"]
  text = jax.jit(fn).lower(x).as_text()
  assert "cnnjax_dnnl" not in text and "convolution" in text
  assert backend.active() == "onednn"  # Only the export's trace was forced.


def test_gradients_inside_shard_map_equal_xlas():
  """Per-device batch norm runs the model in shard_map, where the batch
  varies over the mesh axis and the weights do not: the custom gradient must
  come back with the weights' type and the kernel's results with the batch's
  (both raised a ValueError before), and the values equal XLA's."""
  _require_onednn()
  from jax.sharding import Mesh
  from jax.sharding import PartitionSpec as P
  mesh = Mesh(jax.devices()[:1], ("data",))
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((2, 9, 7, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)

  def grads(conv):
    def per_device(w, x):
      loss = lambda w, x: (conv(x, w, (2, 1), ((1, 1), (0, 2)),  # noqa: E731
                                dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2).sum()
      dw, dx = jax.grad(loss, (0, 1))(w, x)
      return jax.lax.pmean(dw, "data"), dx
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")),
                                 out_specs=(P(), P("data"))))(w, x)

  for got, want in zip(grads(onednn.conv_general_dilated), grads(lax.conv_general_dilated)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
