"""cnnjax.layers.LocallyConnected: the material's parameter counts, equality
with a convolution and with a hand-written loop, untied gradients, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers as L
from cnnjax.errors import CnnjaxError

KEY = jax.random.key(0)


def _normal(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _variables(module, x, seed=0):
  """Variables of the module's structure drawn with numpy (no RNG compiles)."""
  shapes = jax.eval_shape(module.init, KEY, x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, s.dtype), shapes)


def _count(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables))


def _params(module, x):
  return jax.eval_shape(module.init, KEY, x)["params"]


# -- the course material's example ----------------------------------------------


def test_the_material_counts_21_9_and_3_weights():
  # The slides "CNN: Local Connectivity" and "CNN: Weight Sharing": 7 input
  # units, 3 hidden units; global connectivity 3 x 7 = 21 weights, local
  # connectivity (each hidden unit sees 3 inputs) 3 x 3 = 9, with weight
  # sharing 3 x 1 = 3. The slides count weights only (no biases). Three
  # hidden units with windows of 3 over 7 inputs are windows at stride 2.
  x = jnp.zeros((1, 7, 1))  # (B, 7 inputs, 1 channel)
  dense = nn.Dense(3, use_bias=False)
  local = L.LocallyConnected(1, (3,), strides=2, bias="none")
  conv = L.Conv(1, (3,), strides=2, padding="VALID", use_bias=False)
  assert _count(_params(dense, x.reshape(1, 7))) == 21
  assert _count(_params(local, x)) == 9
  assert _count(_params(conv, x)) == 3
  assert jax.eval_shape(local.init_with_output, KEY, x)[0].shape == (1, 3, 1)
  assert jax.eval_shape(conv.init_with_output, KEY, x)[0].shape == (1, 3, 1)


def test_the_material_example_with_biases():
  # Not on the slides: one bias per hidden unit adds 3 (dense, and locally
  # connected with a bias per position); a shared bias adds 1.
  x = jnp.zeros((1, 7, 1))
  assert _count(_params(nn.Dense(3), x.reshape(1, 7))) == 21 + 3
  assert _count(_params(L.LocallyConnected(1, (3,), strides=2), x)) == 9 + 3
  assert _count(_params(L.LocallyConnected(1, (3,), strides=2,
                                           bias="per_channel"), x)) == 9 + 1
  assert _count(_params(L.Conv(1, (3,), strides=2, padding="VALID"), x)) == 3 + 1


def test_hidden_units_see_only_their_window():
  # The material's picture: hidden unit i is connected to inputs 2i..2i+2.
  local = L.LocallyConnected(1, (3,), strides=2, bias="none")
  x = jnp.asarray(_normal((1, 7, 1)))
  variables = _variables(local, x)
  jac = jax.jacobian(lambda a: local.apply(variables, a))(x)[0, :, 0, 0, :, 0]
  connected = np.asarray(jac != 0)  # (3 hidden, 7 inputs)
  expected = np.zeros((3, 7), bool)
  for i in range(3):
    expected[i, 2 * i:2 * i + 3] = True
  np.testing.assert_array_equal(connected, expected)


# -- values ---------------------------------------------------------------------


@pytest.mark.parametrize("shape, kernel, strides, padding", [
    ((2, 11, 3), (4,), (3,), ((2, 1),)),
    ((2, 9, 7, 3), (3, 2), (2, 1), "SAME"),
    ((1, 8, 9, 2), (3, 3), (2, 3), 1),
])
def test_equals_a_convolution_when_every_position_has_the_same_kernel(
    shape, kernel, strides, padding):
  x = jnp.asarray(_normal(shape))
  conv = L.Conv(4, kernel, strides=strides, padding=padding)
  conv_vars = _variables(conv, x)
  expected = conv.apply(conv_vars, x)
  local = L.LocallyConnected(4, kernel, strides=strides, padding=padding,
                             bias="per_channel")
  params = _params(local, x)
  w = conv_vars["params"]["kernel"]  # (*kernel, C, F)
  tied = {"kernel": jnp.broadcast_to(w.reshape(-1, 4), params["kernel"].shape),
          "bias": conv_vars["params"]["bias"]}
  np.testing.assert_allclose(local.apply({"params": tied}, x), expected,
                             rtol=1e-5, atol=1e-5)


def _same_pads(size, kernel, stride):
  """lax's 'SAME': ceil(size / stride) outputs, the extra pad on the high side."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _loop_reference(x, kernel, bias, kernel_size, strides, pads):
  """The definition, one output position at a time, in numpy."""
  x = np.pad(x, ((0, 0), *pads, (0, 0)))
  out_spatial = kernel.shape[:-2]
  y = np.zeros((x.shape[0], *out_spatial, kernel.shape[-1]), np.float64)
  for pos in np.ndindex(*out_spatial):
    window = tuple(slice(p * s, p * s + k)
                   for p, s, k in zip(pos, strides, kernel_size))
    patch = x[(slice(None), *window)].reshape(x.shape[0], -1)  # (B, K * C)
    y[(slice(None), *pos)] = patch @ kernel[pos] + bias[pos]
  return y


@pytest.mark.parametrize("shape, kernel_size, strides, padding", [
    ((2, 13, 3), (4,), (3,), ((2, 1),)),
    ((2, 13, 2), (5,), (2,), "SAME"),
    ((2, 9, 7, 3), (3, 2), (2, 1), "SAME"),
    ((3, 7, 5, 2), (3, 3), (2, 2), ((1, 2), (0, 1))),
    ((1, 5, 9, 1), (2, 4), (1, 3), "VALID"),
])
def test_equals_a_hand_written_loop(shape, kernel_size, strides, padding):
  x = _normal(shape, seed=1)
  local = L.LocallyConnected(5, kernel_size, strides=strides, padding=padding)
  variables = _variables(local, jnp.asarray(x), seed=2)
  ours = local.apply(variables, jnp.asarray(x))
  if padding == "SAME":
    pads = [_same_pads(n, k, s) for n, k, s in zip(shape[1:-1], kernel_size, strides)]
  elif padding == "VALID":
    pads = [(0, 0)] * len(kernel_size)
  else:
    pads = list(padding)
  params = jax.tree.map(np.asarray, variables["params"])
  expected = _loop_reference(x, params["kernel"], params["bias"], kernel_size,
                             strides, pads)
  assert ours.shape == expected.shape
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_matches_torch_unfold_and_einsum():
  torch = pytest.importorskip("torch")
  x = _normal((2, 9, 8, 3), seed=3)
  local = L.LocallyConnected(4, (3, 2), strides=(2, 1), padding=(1, 0),
                             bias="none")
  variables = _variables(local, jnp.asarray(x), seed=4)
  ours = np.asarray(local.apply(variables, jnp.asarray(x)))
  kernel = np.asarray(variables["params"]["kernel"])  # (5, 7, 6 * 3, 4)
  positions = kernel.shape[0] * kernel.shape[1]
  # torch.nn.functional.unfold orders a patch (channel, kernel offset); ours
  # is (kernel offset, channel).
  theirs_kernel = kernel.reshape(positions, 6, 3, 4).transpose(0, 2, 1, 3)
  cols = torch.nn.functional.unfold(
      torch.from_numpy(np.moveaxis(x, -1, 1).copy()), kernel_size=(3, 2),
      stride=(2, 1), padding=(1, 0))  # (B, C * K, positions)
  theirs = torch.einsum("bqp,pqf->bpf", cols,
                        torch.from_numpy(theirs_kernel.reshape(positions, 18, 4)))
  np.testing.assert_allclose(ours.reshape(2, positions, 4), theirs.numpy(),
                             rtol=1e-5, atol=1e-5)


# -- gradients ------------------------------------------------------------------


def test_every_position_gets_its_own_gradient():
  x = jnp.asarray(_normal((2, 7, 6, 2)))
  local = L.LocallyConnected(3, 3, strides=(2, 1), padding="SAME")
  variables = _variables(local, x)
  grads = jax.grad(lambda p: jnp.sum(local.apply({"params": p}, x) ** 2))(
      variables["params"])
  kernel = np.asarray(grads["kernel"])  # (4, 6, 18, 3)
  assert kernel.shape == (4, 6, 18, 3)
  assert np.all(np.any(kernel.reshape(24, -1) != 0, axis=1))
  assert np.all(np.asarray(grads["bias"]) != 0)
  # Untied: the output at one position depends on that position's kernel only.
  def one_output(k):
    params = dict(variables["params"], kernel=k)
    return local.apply({"params": params}, x)[0, 1, 2, 0]
  g = np.asarray(jax.grad(one_output)(variables["params"]["kernel"]))
  nonzero = np.argwhere(np.any(g != 0, axis=(2, 3)))
  np.testing.assert_array_equal(nonzero, [[1, 2]])


# -- shapes, attributes, initialization ------------------------------------------


@pytest.mark.parametrize("shape, kwargs, out_shape, kernel_shape", [
    ((2, 40, 1), dict(kernel_size=(5,), strides=2, padding=1), (2, 19, 8), (19, 5, 8)),
    ((2, 40, 3), dict(kernel_size=3, ndim=1, padding="SAME"), (2, 40, 8), (40, 9, 8)),
    ((2, 16, 16, 1), dict(kernel_size=3, strides=2, padding=1), (2, 8, 8, 8),
     (8, 8, 9, 8)),
    ((2, 9, 7, 2), dict(kernel_size=(4, 3)), (2, 6, 5, 8), (6, 5, 24, 8)),
    ((1, 6, 6, 6, 2), dict(kernel_size=3, ndim=3, strides=2, padding="SAME"),
     (1, 3, 3, 3, 8), (3, 3, 3, 54, 8)),
])
def test_output_and_kernel_shapes(shape, kwargs, out_shape, kernel_shape):
  local = L.LocallyConnected(8, **kwargs)
  out, variables = jax.eval_shape(local.init_with_output, KEY, jnp.zeros(shape))
  assert out.shape == out_shape
  assert variables["params"]["kernel"].shape == kernel_shape
  assert variables["params"]["bias"].shape == (*out_shape[1:-1], 8)


def test_attributes_are_normalised_like_conv():
  local = L.LocallyConnected(4, 3, strides=2, padding=1)
  assert local.kernel_size == (3, 3) and local.ndim == 2
  assert local.strides == (2, 2) and local.padding == ((1, 1), (1, 1))
  assert L.LocallyConnected(4, (5,), padding="same").padding == "SAME"
  assert local.clone().padding == local.padding


def test_initial_kernel_scale_is_set_by_the_patch_not_the_positions():
  # LeCun normal over each position's fan-in (5 x 4 = 20 patch values).
  local = L.LocallyConnected(16, (5,), bias="per_channel")
  variables = local.init(KEY, jnp.zeros((1, 60, 4)))
  kernel = np.asarray(variables["params"]["kernel"])  # (56, 20, 16)
  assert kernel.shape == (56, 20, 16)
  assert abs(kernel.std() * np.sqrt(20) - 1) < 0.05
  assert np.all(np.asarray(variables["params"]["bias"]) == 0)


# -- errors ---------------------------------------------------------------------


def _one_sentence(error):
  text = str(error.value)
  assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text


@pytest.mark.parametrize("module, shape, match", [
    (L.LocallyConnected(4, (9,)), (1, 7, 1), "does not fit"),
    (L.LocallyConnected(4, (3, 9), padding=1), (1, 8, 6, 3), "does not fit"),
    (L.LocallyConnected(4, 3), (1, 8, 3), "needs inputs of shape"),
])
def test_inputs_that_do_not_fit_are_one_sentence(module, shape, match):
  with pytest.raises(CnnjaxError, match=match) as error:
    module.init(KEY, jnp.ones(shape))
  _one_sentence(error)


@pytest.mark.parametrize("kwargs, match", [
    (dict(bias="shared"), "bias must be one of per_position, per_channel, none"),
    (dict(padding="CIRCULAR"), "padding 'SAME', 'VALID' or explicit sizes"),
    (dict(kernel_size=(3, 3), ndim=1), "has 2 spatial dims but ndim=1"),
    (dict(strides=0), "strides must be"),
    (dict(features=0), "features must be a positive int"),
])
def test_bad_arguments_are_one_sentence(kwargs, match):
  arguments = {"features": 4, "kernel_size": 3, **kwargs}
  with pytest.raises(CnnjaxError, match=match) as error:
    L.LocallyConnected(**arguments)
  _one_sentence(error)


def test_an_input_of_another_size_than_the_built_one_is_refused():
  local = L.LocallyConnected(2, (3,))
  variables = _variables(local, jnp.zeros((1, 10, 1)))
  with pytest.raises(CnnjaxError, match="input size is fixed") as error:
    local.apply(variables, jnp.zeros((1, 12, 1)))
  _one_sentence(error)


class _Pair(nn.Module):
  """The same geometry twice: a locally connected layer and a convolution."""
  ndim: int

  @nn.compact
  def __call__(self, x, *, train=False):
    local = L.LocallyConnected(4, 3, strides=2, ndim=self.ndim, name="local")(x)
    conv = nn.Conv(4, (3,) * self.ndim, strides=2, padding="VALID", name="conv")(x)
    return local + conv


@pytest.mark.parametrize("shape", [(11, 3), (9, 7, 2)])
def test_summary_counts_a_locally_connected_layer_like_its_convolution(shape):
  """Untying the weights changes the parameters, not the arithmetic: each
  output position still takes one patch through one kernel."""
  from cnnjax.analysis import summarize

  rows = {r.name: r for r in summarize(_Pair(len(shape) - 1), shape, xla_flops=False).rows}
  assert rows["local"].flops == rows["conv"].flops > 0
  positions = int(np.prod(rows["conv"].output_shape[:-1]))
  assert rows["local"].params == positions * (rows["conv"].params - 4) + positions * 4
