"""cnnjax.layers: shapes, parameter counts and hand-computed values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax import layers as L

KEY = jax.random.key(0)

LECTURE = np.array([[1, 3, 2, 1],
                    [2, 9, 1, 1],
                    [1, 3, 2, 3],
                    [5, 6, 1, 2]], np.float32)[None, :, :, None]  # (1, 4, 4, 1)


def _normal(shape, seed=0, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale,
                     jnp.float32)


def _init_apply(module, x, **kwargs):
  """Variables of the right structure (numpy draws) and the module's output.

  `eval_shape` plus numpy avoids compiling JAX's random number generator for
  every parameter shape, which dominates the run time of tiny tests on CPU.
  """
  shapes = jax.eval_shape(module.init, KEY, x, **kwargs)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes)
  return variables, module.apply(variables, x, **kwargs)


def _count(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables))


# -- convolution ---------------------------------------------------------------


@pytest.mark.parametrize("shape, kwargs, out_shape", [
    ((2, 20, 3), dict(kernel_size=5, ndim=1, padding="VALID"), (2, 16, 8)),
    ((2, 20, 3), dict(kernel_size=(5,), strides=2, padding=1), (2, 9, 8)),
    ((2, 20, 4), dict(kernel_size=3, ndim=1, kernel_dilation=3, padding=0,
                      feature_group_count=4), (2, 14, 8)),
    ((2, 32, 32, 3), dict(kernel_size=5, padding="VALID"), (2, 28, 28, 8)),
    ((2, 32, 32, 3), dict(kernel_size=3, padding="SAME", strides=2), (2, 16, 16, 8)),
    ((2, 32, 30, 3), dict(kernel_size=(3, 5), padding=(1, 2)), (2, 32, 30, 8)),
    ((2, 32, 32, 3), dict(kernel_size=3, padding=((0, 2), (1, 1)),
                          kernel_dilation=2), (2, 30, 30, 8)),
    ((1, 227, 227, 3), dict(kernel_size=11, strides=4, padding=0), (1, 55, 55, 8)),
    ((2, 8, 8, 8, 2), dict(kernel_size=3, ndim=3, padding=1, strides=2),
     (2, 4, 4, 4, 8)),
    ((2, 8, 8, 8, 4), dict(kernel_size=(3, 1, 3), feature_group_count=2,
                           padding="VALID"), (2, 6, 8, 6, 8)),
])
def test_conv_output_shapes(shape, kwargs, out_shape):
  _, y = _init_apply(L.Conv(8, **kwargs), jnp.ones(shape))
  assert y.shape == out_shape


def test_conv_normalises_its_attributes_for_analysis_code():
  conv = L.Conv(16, 3, strides=2, padding=1, kernel_dilation=(1, 2))
  assert conv.kernel_size == (3, 3) and conv.ndim == 2
  assert conv.strides == (2, 2) and conv.kernel_dilation == (1, 2)
  assert conv.padding == ((1, 1), (1, 1))
  assert L.Conv(4, (3, 3, 3), padding="same").padding == "SAME"
  assert L.conv1d(4, 7).kernel_size == (7,)
  assert L.conv3d(4, 2).kernel_size == (2, 2, 2)
  assert L.conv1x1(4).kernel_size == (1, 1)
  assert conv.clone().padding == conv.padding


def test_conv_parameter_counts():
  variables, _ = _init_apply(L.Conv(10, 5), jnp.ones((1, 32, 32, 3)))
  assert _count(variables) == 5 * 5 * 3 * 10 + 10 == 760
  assert variables["params"]["kernel"].shape == (5, 5, 3, 10)
  # Groups split the input channels: each filter sees 12 / 3 = 4 of them.
  variables, _ = _init_apply(L.Conv(6, 3, feature_group_count=3, use_bias=False),
                             jnp.ones((1, 8, 8, 12)))
  assert variables["params"]["kernel"].shape == (3, 3, 4, 6)
  assert _count(variables) == 3 * 3 * 12 * 6 // 3
  # Depthwise: one 3x3 filter per channel.
  variables, _ = _init_apply(L.Conv(5, 3, feature_group_count=5),
                             jnp.ones((1, 8, 8, 5)))
  assert _count(variables) == 5 * 9 + 5


def test_1x1_conv_is_a_per_pixel_dense_layer():
  x = _normal((2, 5, 6, 7))
  variables, y = _init_apply(L.conv1x1(3), x)
  params = variables["params"]
  expected = jnp.einsum("bhwc,cf->bhwf", x, params["kernel"][0, 0]) + params["bias"]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  _, y1 = _init_apply(L.conv1x1(3, ndim=1), x[:, 0])
  assert y1.shape == (2, 6, 3)


@pytest.mark.parametrize("module, shape", [
    (L.Conv(4, 5, padding="VALID"), (1, 4, 4, 3)),
    (L.Conv(4, 3, padding=0, kernel_dilation=3), (1, 6, 6, 3)),  # 7 > 6
    (L.Conv(4, (3, 9), padding=1), (1, 8, 6, 3)),  # 9 > 6 + 2
    (L.Conv(4, 3, ndim=1, feature_group_count=2), (1, 8, 3)),  # 2 !| 3
    (L.Conv(3, 3, ndim=1, feature_group_count=2), (1, 8, 4)),  # 2 !| 3 out
    (L.Conv(4, 3), (8, 3)),  # no spatial dims
])
def test_conv_errors_are_cnnjax_errors(module, shape):
  with pytest.raises(CnnjaxError):
    module.init(KEY, jnp.ones(shape))


def test_conv_rejects_bad_arguments():
  with pytest.raises(CnnjaxError):
    L.Conv(4, (3, 3), ndim=3)
  with pytest.raises(CnnjaxError):
    L.Conv(4, 3, padding="MIRROR")
  with pytest.raises(CnnjaxError):
    L.Conv(4, 3, padding=(1, 2, 3))
  with pytest.raises(CnnjaxError):
    L.Conv(4, 3, strides=0)
  with pytest.raises(CnnjaxError):
    L.Conv(4, 3, ndim=2, padding="CAUSAL")


# -- pooling -------------------------------------------------------------------


def test_lecture_max_and_average_pooling():
  np.testing.assert_array_equal(L.max_pool(LECTURE, 2)[0, ..., 0],
                                [[9, 2], [6, 3]])
  np.testing.assert_allclose(L.avg_pool(LECTURE, 2, 2)[0, ..., 0],
                             [[3.75, 1.25], [3.75, 2.0]])
  np.testing.assert_array_equal(L.MaxPool(2, 2).apply({}, LECTURE)[0, ..., 0],
                                [[9, 2], [6, 3]])
  np.testing.assert_allclose(L.AvgPool((2, 2)).apply({}, LECTURE)[0, ..., 0],
                             [[3.75, 1.25], [3.75, 2.0]])


def test_pool_padding_semantics():
  x = -jnp.ones((1, 2, 2, 1))
  # Max pooling pads with -inf: the padding never wins.
  np.testing.assert_array_equal(L.max_pool(x, 2, 1, padding=1), -jnp.ones((1, 3, 3, 1)))
  # Average pooling pads with zeros, counted or not.
  np.testing.assert_allclose(L.avg_pool(x, 2, 2, padding=1)[0, ..., 0],
                             -0.25 * np.ones((2, 2)))
  np.testing.assert_allclose(
      L.avg_pool(x, 2, 2, padding=1, count_include_pad=False)[0, ..., 0],
      -np.ones((2, 2)))


@pytest.mark.parametrize("size, out", [(55, 27), (27, 13), (13, 6), (224, 111)])
def test_overlapping_pooling_output_sizes(size, out):
  y = L.MaxPool(3, 2).apply({}, jnp.ones((1, size, size, 2)))
  assert y.shape == (1, out, out, 2)


def test_pooling_in_1d_and_3d():
  assert L.max_pool(jnp.ones((2, 10, 3)), 3, 2).shape == (2, 4, 3)
  assert L.avg_pool(jnp.ones((2, 10, 3)), 2, padding="SAME").shape == (2, 5, 3)
  assert L.max_pool(jnp.ones((2, 4, 6, 8, 3)), (2, 3, 2)).shape == (2, 2, 2, 4, 3)
  assert L.lp_pool(jnp.ones((2, 9, 9, 9, 1)), 2, 3).shape == (2, 3, 3, 3, 1)


def test_pool_window_must_fit():
  with pytest.raises(CnnjaxError):
    L.max_pool(jnp.ones((1, 2, 2, 1)), 3)
  with pytest.raises(CnnjaxError):
    L.avg_pool(jnp.ones((1, 2, 1)), 5, padding=1)
  with pytest.raises(CnnjaxError):
    L.MaxPool(3).apply({}, jnp.ones((1, 5, 2, 1)))
  with pytest.raises(CnnjaxError):
    L.max_pool(jnp.ones((4, 3)), 2)  # no spatial dims
  assert L.avg_pool(jnp.ones((1, 2, 1)), 4, padding=1).shape == (1, 1, 1)


def test_global_pools():
  x = _normal((2, 3, 4, 5))
  np.testing.assert_allclose(L.global_avg_pool(x), x.mean(axis=(1, 2)), rtol=1e-6)
  np.testing.assert_array_equal(L.global_max_pool(x), x.max(axis=(1, 2)))
  assert L.global_avg_pool(x, keepdims=True).shape == (2, 1, 1, 5)
  assert L.GlobalMaxPool(keepdims=True).apply({}, x[:, 0]).shape == (2, 1, 5)
  assert L.GlobalAvgPool().apply({}, x[:, None]).shape == (2, 5)


def test_channel_max_pool():
  x = jnp.array([[1., 5., 2., 0., 7., 3.]])[:, None, :]  # (1, 1, 6)
  np.testing.assert_array_equal(L.channel_max_pool(x, 2)[0, 0], [5, 2, 7])
  np.testing.assert_array_equal(L.ChannelMaxPool(3).apply({}, x)[0, 0], [5, 7])
  with pytest.raises(CnnjaxError):
    L.channel_max_pool(x, 4)


def test_lp_pool():
  x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (2, 6, 6, 3)), jnp.float32)
  blocks = x.reshape(2, 3, 2, 3, 2, 3)  # (B, H/2, 2, W/2, 2, C)
  np.testing.assert_allclose(L.lp_pool(x, 2, 2),
                             jnp.sqrt((blocks ** 2).sum(axis=(2, 4))), rtol=1e-5)
  np.testing.assert_allclose(L.lp_pool(x, 1, 2), blocks.sum(axis=(2, 4)), rtol=1e-5)
  np.testing.assert_allclose(L.LPPool(60.0, 2).apply({}, x), L.max_pool(x, 2),
                             rtol=0.03)
  with pytest.raises(CnnjaxError):
    L.lp_pool(x, 0, 2)


# -- activations ---------------------------------------------------------------


def test_activation_functions():
  x = jnp.array([-2.0, -0.5, 0.0, 1.5])
  np.testing.assert_allclose(L.relu(x), [0, 0, 0, 1.5])
  np.testing.assert_allclose(L.leaky_relu(x), [-0.2, -0.05, 0, 1.5], rtol=1e-6)
  np.testing.assert_allclose(L.leaky_relu(x, 0.01), [-0.02, -0.005, 0, 1.5], rtol=1e-6)
  np.testing.assert_allclose(L.elu(x, 2.0), [2 * np.expm1(-2), 2 * np.expm1(-0.5), 0, 1.5],
                             rtol=1e-6)
  np.testing.assert_allclose(L.swish(x), x * jax.nn.sigmoid(x), rtol=1e-6)
  np.testing.assert_allclose(L.swish(x, beta=2.0), x * jax.nn.sigmoid(2 * x), rtol=1e-6)
  assert L.silu is L.swish
  np.testing.assert_allclose(L.gelu(jnp.array([1.0])), [0.8413447], rtol=1e-5)
  np.testing.assert_allclose(L.gelu(x, "tanh"), L.gelu(x, True))
  np.testing.assert_allclose(L.gelu(x, "tanh"), L.gelu(x), atol=1e-3)
  with pytest.raises(CnnjaxError):
    L.gelu(x, "erf")


def test_activation_registry():
  x = jnp.linspace(-3, 3, 7)
  for name in ("relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "swish", "silu",
               "sigmoid", "tanh", "identity"):
    assert L.get_activation(name)(x).shape == x.shape
  np.testing.assert_allclose(L.get_activation("leaky_relu", negative_slope=0.01)(x),
                             L.leaky_relu(x, 0.01))
  np.testing.assert_allclose(L.get_activation("GELU_tanh")(x), L.gelu(x, "tanh"))
  assert L.get_activation("identity")(x) is x
  with pytest.raises(CnnjaxError, match="known: .*relu"):
    L.get_activation("rectifier")
  with pytest.raises(CnnjaxError):
    L.get_activation("relu", alpha=0.5)


def test_prelu_learns_its_slope():
  x = jnp.array([[-2.0, 1.0], [3.0, -1.0]])
  module = L.PReLU()
  variables = module.init(KEY, x)
  np.testing.assert_allclose(variables["params"]["negative_slope"], [0.25])
  np.testing.assert_allclose(module.apply(variables, x), [[-0.5, 1.0], [3.0, -0.25]])
  grad = jax.grad(lambda v: module.apply(v, x).sum())(variables)
  # d/da of sum(a * x for x < 0) = -2 - 1.
  np.testing.assert_allclose(grad["params"]["negative_slope"], [-3.0])
  per_channel = L.PReLU(num_parameters=2, negative_slope_init=0.1)
  variables = per_channel.init(KEY, x)
  grad = jax.grad(lambda v: per_channel.apply(v, x).sum())(variables)
  np.testing.assert_allclose(grad["params"]["negative_slope"], [-2.0, -1.0])
  with pytest.raises(CnnjaxError):
    L.PReLU(num_parameters=3).init(KEY, x)


def test_maxout_is_the_max_of_its_pieces():
  x = _normal((4, 5, 6))
  module = L.Maxout(features=3, pieces=4)
  variables, y = _init_apply(module, x)
  assert y.shape == (4, 5, 3)
  params = variables["params"]["dense"]
  assert params["kernel"].shape == (6, 12)
  z = x @ params["kernel"] + params["bias"]  # (4, 5, 12)
  pieces = [z[..., i * 4:(i + 1) * 4].max(axis=-1) for i in range(3)]
  np.testing.assert_allclose(y, jnp.stack(pieces, -1), rtol=1e-5, atol=1e-6)


# -- normalisation -------------------------------------------------------------


def test_local_response_norm_by_hand():
  x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
  # Windows of 3 channels: {0, 1}, {0, 1, 2}, {1, 2}: sums 5, 14, 13.
  out = L.local_response_norm(x, size=3, k=1.0, alpha=1.0, beta=1.0)
  np.testing.assert_allclose(out.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-6)
  # Even size 2 looks one channel back: {0}, {0, 1}, {1, 2}.
  out = L.LocalResponseNorm(size=2, k=1.0, alpha=1.0, beta=0.5).apply({}, x)
  np.testing.assert_allclose(out.ravel(), [1 / np.sqrt(2), 2 / np.sqrt(6),
                                           3 / np.sqrt(14)], rtol=1e-6)
  # torch's convention divides alpha by the size.
  out = L.local_response_norm(x, size=3, k=1.0, alpha=3.0, beta=1.0,
                              alpha_per_size=True)
  np.testing.assert_allclose(out.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-6)


def test_local_response_norm_defaults_and_shapes():
  x = _normal((2, 5, 7))
  module = L.LocalResponseNorm()
  assert (module.size, module.k, module.alpha, module.beta) == (5, 2.0, 1e-4, 0.75)
  for shape in [(2, 5, 7), (2, 3, 4, 7), (1, 2, 3, 4, 7)]:
    assert module.apply({}, jnp.ones(shape)).shape == shape
  squares = np.pad(np.asarray(x) ** 2, ((0, 0), (0, 0), (2, 2)))
  sums = sum(squares[..., i:i + 7] for i in range(5))
  np.testing.assert_allclose(module.apply({}, x), x / (2 + 1e-4 * sums) ** 0.75,
                             rtol=1e-6)
  with pytest.raises(CnnjaxError):
    L.local_response_norm(x, size=0)


def test_torch_like_batch_norm_constants():
  bn = L.TorchLikeBatchNorm()
  assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
  assert L.BatchNorm is nn.BatchNorm and issubclass(L.TorchLikeBatchNorm, nn.BatchNorm)
  x = _normal((8, 3, 3, 4), scale=2.0) + 1
  module = L.batch_norm(train=True)
  variables = module.init(KEY, x)
  y, updates = module.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["mean"],
                             0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)


# -- heads ---------------------------------------------------------------------


def test_classifier_head():
  x = _normal((4, 3, 3, 8))
  for pool, fan_in in [("avg", 8), ("max", 8), ("flatten", 72)]:
    head = L.ClassifierHead(5, pool=pool)
    variables, logits = _init_apply(head, x)
    assert logits.shape == (4, 5)
    assert variables["params"]["fc"]["kernel"].shape == (fan_in, 5)
  variables, logits = _init_apply(L.ClassifierHead(5), x[:, 0, 0])  # (B, F)
  assert logits.shape == (4, 5)
  probs = L.softmax_probabilities(logits)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  with pytest.raises(CnnjaxError):
    L.ClassifierHead(5, pool="median").init(KEY, x)


def test_classifier_head_dropout_only_in_training():
  x = _normal((16, 2, 2, 32))
  head = L.ClassifierHead(3, dropout_rate=0.5)
  variables, eval_a = _init_apply(head, x)
  np.testing.assert_array_equal(eval_a, head.apply(variables, x, train=False))
  no_drop = L.ClassifierHead(3).apply(variables, x)
  np.testing.assert_allclose(eval_a, no_drop)
  train_a = head.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  train_b = head.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(train_a, eval_a)
  assert not np.allclose(train_a, train_b)


@pytest.mark.parametrize("fn", [
    lambda x: L.max_pool(x, 3, 2, padding=1),
    lambda x: L.avg_pool(x, 2, padding=1, count_include_pad=False),
    lambda x: L.lp_pool(x * x + 1.0, 2, 2),
    lambda x: L.local_response_norm(x),
    lambda x: L.adaptive_avg_pool(x, 3),
])
def test_pooling_and_lrn_have_gradients_under_jit(fn):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 5))
  g = jax.jit(jax.grad(lambda x: jnp.sum(fn(x) ** 2)))(x)
  assert g.shape == x.shape and np.all(np.isfinite(g)) and np.any(g != 0)
