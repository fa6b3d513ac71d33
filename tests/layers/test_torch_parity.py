"""cnnjax.layers against PyTorch on the same inputs and weights.

torch is channels-first, (B, C, *spatial) with (O, I / groups, *kernel)
kernels; cnnjax is channels-last, (B, *spatial, C) with (*kernel, I / groups,
O) kernels. Everything here runs in float32 on the CPU.
"""

import pytest

torch = pytest.importorskip("torch")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cnnjax import layers as L  # noqa: E402

torch.manual_seed(0)
RTOL, ATOL = 1e-4, 1e-5


def _to_torch(x):
  """Channels-last numpy (B, *S, C) -> channels-first torch (B, C, *S)."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))


def _from_torch(t):
  """Channels-first torch (B, C, *S) -> channels-last numpy (B, *S, C)."""
  return np.moveaxis(t.detach().numpy(), 1, -1)


def _kernel(weight):
  """torch (O, I, *k) -> flax (*k, I, O)."""
  w = weight.detach().numpy()
  return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def _input(shape, positive=False):
  """A channels-last float32 input; torch's generator keeps it reproducible."""
  x = torch.rand(shape) + 0.1 if positive else torch.randn(shape)
  return x.numpy()


def _close(ours, theirs, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=atol)


# -- convolution ---------------------------------------------------------------

TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}


def _conv_pair(ndim, cin, cout, kernel, stride=1, padding=0, dilation=1,
               groups=1, bias=True):
  ref = TORCH_CONV[ndim](cin, cout, kernel, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
  ours = L.Conv(cout, kernel, ndim=ndim, strides=stride, padding=padding,
                kernel_dilation=dilation, feature_group_count=groups,
                use_bias=bias)
  params = {"kernel": _kernel(ref.weight)}
  if bias:
    params["bias"] = ref.bias.detach().numpy()
  return ref, ours, {"params": params}


@pytest.mark.parametrize("ndim, cin, cout, kernel, stride, padding, dilation, groups, bias", [
    (1, 4, 6, 5, 2, 2, 1, 1, True),
    (1, 4, 4, 3, 1, 1, 2, 4, False),  # depthwise, dilated
    (2, 3, 8, 3, 1, 1, 1, 1, True),
    (2, 3, 5, 4, 3, 2, 1, 1, True),  # even kernel
    (2, 4, 6, (3, 5), (2, 1), (1, 2), (2, 1), 2, True),
    (2, 6, 12, 3, 2, 0, 1, 6, False),  # depthwise, channel multiplier 2
    (2, 3, 16, 11, 4, 0, 1, 1, True),  # AlexNet's first layer, scaled down
    (3, 2, 4, 3, 2, 1, 1, 1, True),
    (3, 4, 4, (1, 3, 3), 1, (0, 1, 1), 1, 4, False),
    (3, 4, 6, 2, 1, 1, 2, 2, True),
])
def test_conv(ndim, cin, cout, kernel, stride, padding, dilation, groups, bias):
  ref, ours, variables = _conv_pair(ndim, cin, cout, kernel, stride, padding,
                                    dilation, groups, bias)
  spatial = {1: (23,), 2: (19, 17), 3: (9, 8, 7)}[ndim]
  x = _input((2,) + spatial + (cin,))
  with torch.no_grad():
    expected = _from_torch(ref(_to_torch(x)))
  _close(ours.apply(variables, x), expected)


@pytest.mark.parametrize("ndim, kernel, dilation", [
    (1, 5, 1), (1, 3, 3), (2, 3, 1), (2, (5, 3), (1, 2)), (3, 3, 1)])
def test_conv_same_padding(ndim, kernel, dilation):
  ref, _, variables = _conv_pair(ndim, 3, 4, kernel, padding="same",
                                 dilation=dilation)
  ours = L.Conv(4, kernel, ndim=ndim, padding="SAME", kernel_dilation=dilation)
  x = _input((2,) + (9,) * ndim + (3,))
  with torch.no_grad():
    expected = _from_torch(ref(_to_torch(x)))
  out = ours.apply(variables, x)
  assert out.shape == x.shape[:-1] + (4,)
  _close(out, expected)


def test_conv_asymmetric_padding_is_explicit_zero_padding():
  ref, _, variables = _conv_pair(2, 3, 4, 3)
  ours = L.Conv(4, 3, padding=((0, 2), (1, 0)))
  x = _input((2, 7, 6, 3))
  with torch.no_grad():
    expected = _from_torch(ref(F.pad(_to_torch(x), (1, 0, 0, 2))))
  _close(ours.apply(variables, x), expected)


# -- pooling -------------------------------------------------------------------

TORCH_MAX = {1: torch.nn.MaxPool1d, 2: torch.nn.MaxPool2d, 3: torch.nn.MaxPool3d}
TORCH_AVG = {1: torch.nn.AvgPool1d, 2: torch.nn.AvgPool2d, 3: torch.nn.AvgPool3d}
SPATIAL = {1: (15,), 2: (13, 11), 3: (7, 8, 6)}


@pytest.mark.parametrize("ndim, window, stride, padding", [
    (1, 3, 2, 1), (1, 2, None, 0),
    (2, 2, None, 0), (2, 3, 2, 0), (2, 3, 2, 1), (2, (3, 2), (2, 1), (1, 0)),
    (3, 2, None, 1), (3, 3, 2, 1),
])
def test_max_pool(ndim, window, stride, padding):
  x = _input((2,) + SPATIAL[ndim] + (3,))
  expected = _from_torch(TORCH_MAX[ndim](window, stride, padding)(_to_torch(x)))
  _close(L.max_pool(x, window, stride, padding), expected, 0, 0)
  _close(L.MaxPool(window, stride, padding).apply({}, x), expected, 0, 0)


def test_alexnet_overlapping_max_pool():
  x = _input((1, 55, 55, 4))
  expected = _from_torch(torch.nn.MaxPool2d(3, 2)(_to_torch(x)))
  assert expected.shape == (1, 27, 27, 4)
  _close(L.MaxPool(3, 2).apply({}, x), expected, 0, 0)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ndim, window, stride, padding", [
    (1, 3, 2, 1), (2, 2, None, 0), (2, 3, 2, 1), (2, (3, 2), (1, 2), (1, 1)),
    (3, 3, 2, 1),
])
def test_avg_pool(ndim, window, stride, padding, count_include_pad):
  x = _input((2,) + SPATIAL[ndim] + (3,))
  ref = TORCH_AVG[ndim](window, stride, padding,
                        count_include_pad=count_include_pad)
  expected = _from_torch(ref(_to_torch(x)))
  _close(L.avg_pool(x, window, stride, padding, count_include_pad), expected)
  module = L.AvgPool(window, stride, padding, count_include_pad)
  _close(module.apply({}, x), expected)


@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("ndim, window, stride", [
    (1, 3, None), (1, 4, 2), (2, 2, None), (2, 3, 2), (2, (2, 3), (1, 2))])
def test_lp_pool(ndim, window, stride, p):
  # Positive inputs: torch takes no absolute value, so x^3 of negatives
  # would make fractional roots of negative sums (NaN in both libraries).
  x = _input((2,) + SPATIAL[ndim] + (3,), positive=True)
  ref = {1: torch.nn.LPPool1d, 2: torch.nn.LPPool2d}[ndim](p, window, stride)
  expected = _from_torch(ref(_to_torch(x)))
  _close(L.lp_pool(x, p, window, stride), expected)
  _close(L.LPPool(p, window, stride).apply({}, x), expected)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_adaptive_pools_to_one_are_global_pools(ndim):
  x = _input((2,) + SPATIAL[ndim] + (5,))
  adaptive_avg = getattr(torch.nn, f"AdaptiveAvgPool{ndim}d")(1)(_to_torch(x))
  adaptive_max = getattr(torch.nn, f"AdaptiveMaxPool{ndim}d")(1)(_to_torch(x))
  _close(L.global_avg_pool(x, keepdims=True), _from_torch(adaptive_avg))
  _close(L.GlobalMaxPool().apply({}, x), adaptive_max.flatten(1).numpy(), 0, 0)


@pytest.mark.parametrize("ndim, size_in, size_out", [
    (1, 10, 3), (2, (9, 5), (7, 7)), (2, (14, 14), (7, 7)), (2, (1, 1), (7, 7)),
    (3, (5, 4, 6), (2, 3, 4))])
def test_adaptive_avg_pool(ndim, size_in, size_out):
  # Uneven bins overlap (10 -> 3: [0,4), [3,7), [6,10)); a smaller input is
  # repeated (1x1 -> 7x7, what torchvision's VGG does with 32x32 images).
  size_in = (size_in,) if isinstance(size_in, int) else size_in
  x = _input((2,) + tuple(size_in) + (3,))
  ref = getattr(torch.nn, f"AdaptiveAvgPool{ndim}d")(size_out)
  expected = _from_torch(ref(_to_torch(x)))
  _close(L.adaptive_avg_pool(x, size_out), expected)
  _close(L.AdaptiveAvgPool(size_out).apply({}, x), expected)


# -- local response normalisation ---------------------------------------------


@pytest.mark.parametrize("size", [5, 4, 1])
@pytest.mark.parametrize("shape", [(2, 7, 9), (2, 4, 5, 9), (1, 3, 2, 4, 6)])
def test_local_response_norm(size, shape):
  x = _input(shape) * 3
  k, beta = 2.0, 0.75
  for alpha in (1e-4, 0.1):  # AlexNet's, and a large one that matters a lot
    torch_lrn = torch.nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)
    expected = _from_torch(torch_lrn(_to_torch(x)))
    # torch's convention through the flag, or by dividing alpha ourselves.
    _close(L.local_response_norm(x, size, k, alpha, beta, alpha_per_size=True),
           expected)
    _close(L.LocalResponseNorm(size, k, alpha / size, beta).apply({}, x), expected)
    # The paper's formula with alpha is torch's with alpha * size.
    paper = L.LocalResponseNorm(size, k, alpha, beta).apply({}, x)
    torch_lrn = torch.nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)
    _close(paper, _from_torch(torch_lrn(_to_torch(x))))
  if size > 1:  # the two conventions really differ
    assert not np.allclose(
        paper, L.local_response_norm(x, size, k, 0.1, beta, alpha_per_size=True),
        rtol=1e-3)


# -- activations ---------------------------------------------------------------


@pytest.mark.parametrize("ours, theirs", [
    (L.sigmoid, torch.sigmoid),
    (L.tanh, torch.tanh),
    (L.relu, torch.relu),
    (L.leaky_relu, lambda t: F.leaky_relu(t, 0.1)),
    (L.get_activation("leaky_relu", negative_slope=0.01), F.leaky_relu),
    (L.elu, F.elu),
    (lambda x: L.elu(x, 0.5), lambda t: F.elu(t, 0.5)),
    (L.silu, F.silu),
    (L.get_activation("swish"), F.silu),
    (L.gelu, lambda t: F.gelu(t, approximate="none")),
    (lambda x: L.gelu(x, "none"), F.gelu),
    (L.get_activation("gelu_tanh"), lambda t: F.gelu(t, approximate="tanh")),
    (L.softmax_probabilities, lambda t: torch.softmax(t, -1)),
])
def test_activations(ours, theirs):
  x = _input((4, 33)) * 4
  _close(ours(x), theirs(torch.from_numpy(x)).numpy(), 1e-5, 1e-6)


@pytest.mark.parametrize("num_parameters", [1, 6])
def test_prelu(num_parameters):
  ref = torch.nn.PReLU(num_parameters)
  assert ref.weight.detach().numpy()[0] == 0.25 == L.PReLU().negative_slope_init
  with torch.no_grad():
    ref.weight.copy_(torch.rand(num_parameters))
  x = _input((2, 5, 4, 6))
  variables = {"params": {"negative_slope": ref.weight.detach().numpy()}}
  expected = _from_torch(ref(_to_torch(x)))
  _close(L.PReLU(num_parameters).apply(variables, x), expected, 1e-6, 1e-7)


def test_dropout_zeroes_p_and_rescales_survivors_like_torch():
  p, n = 0.3, 100_000
  x = np.ones((1, n), np.float32)
  theirs = torch.nn.Dropout(p).train()(torch.from_numpy(x)).numpy()
  ours = np.asarray(nn.Dropout(p, deterministic=False).apply(
      {}, x, rngs={"dropout": jax.random.key(0)}))
  for out in (theirs, ours):
    assert abs((out == 0).mean() - p) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / (1 - p), rtol=1e-6)
  # Evaluation mode is the identity in both.
  np.testing.assert_array_equal(torch.nn.Dropout(p).eval()(torch.from_numpy(x)), x)
  np.testing.assert_array_equal(nn.Dropout(p, deterministic=True).apply({}, x), x)


# -- batch normalisation -------------------------------------------------------


@pytest.mark.parametrize("torch_cls, shape", [
    (torch.nn.BatchNorm1d, (16, 5)),
    (torch.nn.BatchNorm1d, (4, 9, 5)),
    (torch.nn.BatchNorm2d, (4, 6, 7, 5)),
    (torch.nn.BatchNorm3d, (2, 3, 4, 5, 5)),
])
def test_batch_norm(torch_cls, shape):
  channels = shape[-1]
  ref = torch_cls(channels)  # momentum 0.1, eps 1e-5
  with torch.no_grad():
    ref.weight.copy_(torch.rand(channels) + 0.5)
    ref.bias.copy_(torch.randn(channels))
  x = _input(shape) * 2 + 1
  x_torch = _to_torch(x) if len(shape) > 2 else torch.from_numpy(x)
  back = _from_torch if len(shape) > 2 else (lambda t: t.detach().numpy())
  params = {"scale": ref.weight.detach().numpy(), "bias": ref.bias.detach().numpy()}
  stats = {"mean": np.zeros(channels, np.float32), "var": np.ones(channels, np.float32)}

  # One training step: identical outputs (both normalise with the biased
  # batch variance) and identical running statistics (both fold the
  # unbiased batch variance into running_var).
  expected = back(ref.train()(x_torch))
  out, updates = L.batch_norm(train=True).apply(
      {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
  _close(out, expected)
  new = updates["batch_stats"]
  _close(new["mean"], ref.running_mean.numpy())
  _close(new["var"], ref.running_var.numpy())
  # flax's biased update, kept by unbiased_running_var=False, is torch's
  # without the n / (n - 1).
  n = x.size // channels
  _, biased = L.batch_norm(train=True, unbiased_running_var=False).apply(
      {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
  torch_batch_var = (ref.running_var.numpy() - 0.9) / 0.1
  _close(biased["batch_stats"]["var"], 0.9 + 0.1 * torch_batch_var * (n - 1) / n)
  _close(biased["batch_stats"]["var"], 0.9 + 0.1 * x.reshape(-1, channels).var(axis=0))
  assert not np.allclose(biased["batch_stats"]["var"], ref.running_var.numpy(),
                         rtol=1e-4)

  # Evaluation with torch's running statistics copied over: identical.
  variables = {"params": params,
               "batch_stats": {"mean": ref.running_mean.numpy(),
                               "var": ref.running_var.numpy()}}
  with torch.no_grad():
    expected = back(ref.eval()(x_torch))
  _close(L.batch_norm(train=False).apply(variables, x), expected)
  _close(L.TorchLikeBatchNorm(use_running_average=True).apply(variables, x),
         expected)
