"""The batch-chunked weight gradient equals XLA's, for every kind of convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.ops import backend, weight_grad


@pytest.mark.parametrize("batch, expected", [(8, 1), (16, 1), (32, 2), (100, 6),
                                             (128, 8), (4096, 8)])
def test_chunk_rule(batch, expected):
  assert weight_grad.weight_grad_chunks(batch, "cpu", 16 * 16) == expected
  assert weight_grad.weight_grad_chunks(batch, "cpu", 32 * 32) == expected
  assert weight_grad.weight_grad_chunks(batch, "cpu", 64 * 64) == min(expected, 2)
  assert weight_grad.weight_grad_chunks(batch, "gpu", 16 * 16) == 1


def test_uneven_chunks_cover_the_batch():
  bounds = weight_grad._bounds(100, 6)
  assert bounds[0][0] == 0 and bounds[-1][1] == 100
  assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
  assert {stop - start for start, stop in bounds} <= {16, 17}


CASES = [  # (x shape, kernel shape, kwargs)
    ((40, 9, 9, 3), (3, 3, 3, 8), dict(window_strides=(1, 1), padding=((1, 1), (1, 1)))),
    ((33, 12, 12, 4), (3, 3, 4, 6), dict(window_strides=(2, 2), padding="SAME")),
    ((48, 10, 10, 6), (3, 3, 2, 6), dict(window_strides=(1, 1), padding="VALID",
                                         rhs_dilation=(2, 2), feature_group_count=3)),
    ((32, 20, 5), (5, 5, 7), dict(window_strides=(1,), padding="SAME")),
    ((32, 6, 6, 6, 2), (3, 3, 3, 2, 4), dict(window_strides=(1, 1, 1), padding="SAME")),
]


def _numbers(ndim):
  spatial = "DHW"[-ndim:]
  return (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")


@pytest.fixture
def chunk_small_convolutions(monkeypatch):
  """The cases here are tiny; take the chunked path all the same."""
  monkeypatch.setattr(weight_grad, "MIN_FLOPS", 0)


def _chunked_calls(fn, *args):
  """How many weight-gradient convolutions the gradient of fn compiles to."""
  text = jax.jit(jax.grad(fn, 1)).lower(*args).as_text()
  return text.count("stablehlo.convolution")


def test_small_weight_gradients_are_not_split():
  x = jnp.ones((128, 8, 8, 4))
  w = jnp.ones((3, 3, 4, 4))
  loss = lambda x, w: jnp.sum(weight_grad.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  assert 2 * 128 * 64 * 4 * 36 < weight_grad.MIN_FLOPS
  assert _chunked_calls(loss, x, w) == 1  # (The forward pass is not needed.)
  big = jnp.ones((128, 32, 32, 16)), jnp.ones((3, 3, 16, 16))
  assert _chunked_calls(loss, *big) == 8


@pytest.mark.usefixtures("chunk_small_convolutions")
@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES)
def test_gradients_equal_xla(x_shape, w_shape, kwargs):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
  kwargs = dict(kwargs, dimension_numbers=_numbers(len(x_shape) - 2))
  assert weight_grad.weight_grad_chunks(x_shape[0], "cpu", w_shape[-2] * w_shape[-1]) >= 2

  def loss(conv):
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w, **kwargs)))

  ours = jax.jit(jax.value_and_grad(loss(weight_grad.conv_general_dilated), (0, 1)))(x, w)
  ref = jax.jit(jax.value_and_grad(loss(lax.conv_general_dilated), (0, 1)))(x, w)
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
  np.testing.assert_allclose(ours[1][0], ref[1][0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours[1][1], ref[1][1], rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("chunk_small_convolutions")
def test_layers_conv_uses_it_and_second_derivatives_work():
  conv = layers.Conv(4, 3)
  # The default backend, 'xla', runs the chunked weight gradient.
  assert conv.conv_general_dilated is backend.conv_general_dilated
  assert backend.active() == "xla"
  x = jnp.asarray(np.random.default_rng(1).standard_normal((32, 6, 6, 2)), jnp.float32)
  variables = conv.init(jax.random.key(0), x)
  reference = layers.Conv(4, 3, conv_general_dilated=lax.conv_general_dilated)

  def input_grad_norm(module, params):
    g = jax.grad(lambda x: jnp.sum(module.apply({"params": params}, x) ** 2))(x)
    return jnp.sum(g ** 2)

  ours = jax.grad(lambda p: input_grad_norm(conv, p))(variables["params"])
  ref = jax.grad(lambda p: input_grad_norm(reference, p))(variables["params"])
  np.testing.assert_allclose(ours["kernel"], ref["kernel"], rtol=1e-4, atol=1e-4)


def test_bfloat16_gradient_keeps_its_dtype():
  x = jnp.ones((128, 4, 4, 8), jnp.bfloat16)
  w = jnp.ones((1, 1, 8, 8), jnp.bfloat16)
  conv = lambda w: weight_grad.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  g = jax.grad(lambda w: jnp.sum(conv(w).astype(jnp.float32)))(w)
  assert g.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(g, np.float32), 128 * 16)


def test_chunks_override(monkeypatch):
  monkeypatch.setenv("CNNJAX_WEIGHT_GRAD_CHUNKS", "1")
  assert weight_grad.weight_grad_chunks(128, "cpu") == 1
  monkeypatch.setenv("CNNJAX_WEIGHT_GRAD_CHUNKS", "four")
  with pytest.raises(CnnjaxError, match="integer"):
    weight_grad.weight_grad_chunks(128, "cpu")


@pytest.mark.parametrize("window, padding, strides", [
    ((2, 2), ((1, 1), (1, 1)), (1, 1)),  # output 1 larger than the input
    ((3, 1), ((2, 1), (0, 3)), (1, 1)),  # beyond the kernel's reach
    ((3, 3), ((1, 1), (2, 2)), (2, 1)),  # one axis grows, the other not
    ((3, 3), "SAME", (1, 1)),  # does not grow: left as it is
])
def test_outgrowing_convolutions_pad_their_input_beforehand(window, padding, strides):
  """Same values and gradients as lax; where the output outgrows the input
  the traced convolution has no padding left (its input was padded)."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((3, 6, 5, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*window, 4, 5)), jnp.float32)
  spec = ("NHWC", "HWIO", "NHWC")
  ours = lambda x, w: weight_grad.conv_general_dilated(x, w, strides, padding,
                                                       dimension_numbers=spec)
  theirs = lambda x, w: lax.conv_general_dilated(x, w, strides, padding,
                                                 dimension_numbers=spec)
  np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-5, atol=1e-5)
  weights = jnp.asarray(rng.standard_normal(theirs(x, w).shape), jnp.float32)
  loss = lambda conv: lambda x, w: (conv(x, w) * weights).sum()
  for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(theirs), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  text = str(jax.make_jaxpr(ours)(x, w))
  grows = padding != "SAME"
  assert ("pad[" in text) == grows
  assert ("padding=((0, 0), (0, 0))" in text) == grows
