"""layers.OctConv: the four paths against a PyTorch re-implementation of the
authors' forward pass, alpha = 0 as a plain Conv, shapes, parameters equal to
the plain convolution's, the paper's FLOP ratio through the summary,
gradients to every path, and the mistakes it refuses."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers as L
from cnnjax.analysis.summary import summarize
from cnnjax.errors import CnnjaxError
from cnnjax.layers.octconv import octave_channels, octave_cost_ratio

torch = pytest.importorskip("torch")
F = torch.nn.functional

PATHS = ("h2h", "h2l", "l2h", "l2l")


def _normal(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape),
                     jnp.float32)


def _pair(batch, spatial, channels, alpha, seed=0):
  """A (high, low) input: the low group at ceil(spatial / 2)."""
  high_c, low_c = octave_channels(channels, alpha)
  high = _normal((batch, *spatial, high_c), seed)
  if not low_c:
    return high, None
  return high, _normal((batch, *(-(-s // 2) for s in spatial), low_c), seed + 1)


def _init(module, x):
  return module.init(jax.random.key(0), x)


def _count(tree):
  return sum(a.size for a in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------
# Against PyTorch: the authors' forward pass (d-li14/octconv.pytorch's
# OctaveConv, with facebookresearch/OctConv's ceil-mode pooling for odd sizes).

def _t(x):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))


def _torch_octconv(params, high, low, stride, padding):
  """The reference: pool by the stride, four convolutions, nearest 2x up."""
  def conv(name, x):
    kernel = np.asarray(params[name]["kernel"])  # (k, k, in, out)
    w = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy())
    b = params[name].get("bias")
    b = None if b is None else torch.from_numpy(np.array(b))
    return F.conv2d(x, w, b, padding=padding)

  def pool(x, k):
    return x if k == 1 else F.avg_pool2d(x, k, k, ceil_mode=True,
                                         count_include_pad=False)

  h = _t(high)
  y_h = conv("h2h", pool(h, stride))
  y_l = conv("h2l", pool(h, 2 * stride)) if "h2l" in params else None
  if low is not None:
    l = _t(low)
    up = conv("l2h", l)
    if stride == 1:
      up = F.interpolate(up, scale_factor=2, mode="nearest")
    y_h = y_h + up[:, :, :y_h.shape[2], :y_h.shape[3]]
    if y_l is not None:
      y_l = y_l + conv("l2l", pool(l, stride))
  back = lambda t: None if t is None else np.moveaxis(t.numpy(), 1, -1)
  return back(y_h), back(y_l)


@pytest.mark.parametrize("alpha_in, alpha_out, spatial, stride", [
    (0.25, 0.25, (8, 8), 1), (0.5, 0.5, (8, 6), 2), (0.25, 0.25, (7, 5), 1),
    (0.25, 0.25, (7, 9), 2), (0.0, 0.25, (6, 6), 1), (0.5, 0.0, (6, 6), 2),
    (0.25, 0.5, (5, 5), 1)])
def test_matches_the_authors_forward_pass(alpha_in, alpha_out, spatial, stride):
  high, low = _pair(2, spatial, 8, alpha_in)
  module = L.OctConv(12, 3, alpha_in, alpha_out, strides=stride, padding=1)
  params = _init(module, (high, low))["params"]
  assert set(params) == {p for p in PATHS if
                         (p[0] == "h" or alpha_in) and (p[-1] == "h" or alpha_out)}
  y_h, y_l = module.apply({"params": params}, (high, low))
  with torch.no_grad():
    ref_h, ref_l = _torch_octconv(params, high, low, stride, 1)
  np.testing.assert_allclose(y_h, ref_h, rtol=1e-5, atol=1e-5)
  if alpha_out:
    np.testing.assert_allclose(y_l, ref_l, rtol=1e-5, atol=1e-5)
  else:
    assert y_l is None


def test_biases_sit_on_the_high_input_paths_only():
  params = _init(L.OctConv(8, 3), _pair(1, (4, 4), 8, 0.5))["params"]
  assert {k for k, v in params.items() if "bias" in v} == {"h2h", "h2l"}
  no_bias = L.OctConv(8, 3, use_bias=False)
  params = _init(no_bias, _pair(1, (4, 4), 8, 0.5))["params"]
  assert all(set(v) == {"kernel"} for v in params.values())


# ---------------------------------------------------------------------------
# alpha = 0 is a plain convolution.

@pytest.mark.parametrize("kernel, padding", [(3, "SAME"), (3, 1), (1, 0), (5, 2)])
def test_alpha_zero_is_a_plain_conv(kernel, padding):
  x = _normal((2, 9, 7, 5))
  octave = L.OctConv(6, kernel, 0.0, 0.0, padding=padding)
  variables = _init(octave, x)
  assert set(variables["params"]) == {"h2h"}
  y_h, y_l = octave.apply(variables, (x, None))
  plain = L.Conv(6, kernel, padding=padding)
  expected = plain.apply({"params": variables["params"]["h2h"]}, x)
  assert y_l is None
  np.testing.assert_array_equal(np.asarray(y_h), np.asarray(expected))


def test_alpha_zero_at_stride_2_pools_then_convolves():
  x = _normal((2, 8, 8, 4))
  octave = L.OctConv(6, 3, 0.0, 0.0, strides=2, padding=1)
  variables = _init(octave, x)
  y_h, _ = octave.apply(variables, x)
  expected = L.Conv(6, 3, padding=1).apply(
      {"params": variables["params"]["h2h"]}, L.avg_pool(x, 2))
  np.testing.assert_array_equal(np.asarray(y_h), np.asarray(expected))


# ---------------------------------------------------------------------------
# Shapes, parameters, FLOPs.

@pytest.mark.parametrize("spatial, stride, high, low", [
    ((8, 8), 1, (8, 8), (4, 4)), ((8, 8), 2, (4, 4), (2, 2)),
    ((7, 7), 1, (7, 7), (4, 4)), ((7, 5), 2, (4, 3), (2, 2))])
def test_shapes_of_both_branches(spatial, stride, high, low):
  x = _pair(3, spatial, 16, 0.25)
  y_h, y_l = jax.eval_shape(lambda a: L.OctConv(32, 3, 0.25, 0.5, strides=stride)
                            .init_with_output(jax.random.key(0), a)[0], x)
  assert y_h.shape == (3, *high, 16) and y_l.shape == (3, *low, 16)


def test_first_and_last_layers_and_other_dims():
  first = L.OctConv(8, 3, 0.0, 0.25)
  y = jax.eval_shape(lambda a: first.init_with_output(jax.random.key(0), a)[0],
                     _normal((2, 6, 6, 3)))
  assert y[0].shape == (2, 6, 6, 6) and y[1].shape == (2, 3, 3, 2)
  last = L.OctConv(8, 3, 0.25, 0.0)
  y = jax.eval_shape(lambda a: last.init_with_output(jax.random.key(0), a)[0],
                     _pair(2, (6, 6), 8, 0.25))
  assert y[0].shape == (2, 6, 6, 8) and y[1] is None
  one_d = L.OctConv(8, 3, 0.5, 0.5, strides=2)  # (B, W, C): 1D maps work too.
  y = jax.eval_shape(lambda a: one_d.init_with_output(jax.random.key(0), a)[0],
                     _pair(2, (10,), 8, 0.5))
  assert y[0].shape == (2, 5, 4) and y[1].shape == (2, 3, 4)


@pytest.mark.parametrize("alpha_in, alpha_out", [
    (0.0, 0.25), (0.25, 0.25), (0.5, 0.5), (0.25, 0.0), (0.125, 0.75), (0.0, 0.0)])
def test_parameters_equal_the_plain_convolutions(alpha_in, alpha_out):
  c_in, c_out, k = 16, 24, 3
  x = _pair(1, (8, 8), c_in, alpha_in)
  params = jax.eval_shape(lambda a: L.OctConv(c_out, k, alpha_in, alpha_out,
                                              use_bias=False).init(
      jax.random.key(0), a), x)["params"]
  assert _count(params) == c_in * c_out * k * k
  # The four blocks of one c_in x c_out kernel.
  in_h, in_l = octave_channels(c_in, alpha_in)
  out_h, out_l = octave_channels(c_out, alpha_out)
  blocks = {"h2h": (in_h, out_h), "h2l": (in_h, out_l), "l2h": (in_l, out_h),
            "l2l": (in_l, out_l)}
  for name, kernel in params.items():
    assert kernel["kernel"].shape == (k, k, *blocks[name])
  with_bias = jax.eval_shape(lambda a: L.OctConv(c_out, k, alpha_in, alpha_out).init(
      jax.random.key(0), a), x)["params"]
  assert _count(with_bias) == c_in * c_out * k * k + c_out


class _OnePair(nn.Module):
  """An OctConv on a (B, H, W, C) map split at `alpha` (for the summary)."""
  alpha: float
  strides: int = 1

  @nn.compact
  def __call__(self, x, *, train=False):
    low_c = octave_channels(x.shape[-1], self.alpha)[1]
    high, low = x[..., :x.shape[-1] - low_c], x[..., x.shape[-1] - low_c:]
    low = L.avg_pool(low, 2) if low_c else None
    return L.OctConv(x.shape[-1], 3, self.alpha, self.alpha,
                     strides=self.strides, name="oct")((high, low))


@pytest.mark.parametrize("alpha", [0.0, 0.125, 0.25, 0.5, 0.75])
def test_flops_follow_the_papers_ratio(alpha):
  """The summary counts every path at its own resolution: 1 - 3/4 a (2 - a)
  of the plain convolution's FLOPs (exact where alpha * C is whole)."""
  c, h, k = 64, 16, 3
  plain = 2 * h * h * k * k * c * c
  s = summarize(_OnePair(alpha), (h, h, c), xla_flops=False)
  assert {r.name.split("/")[-1] for r in s.rows} == (
      {"h2h"} if alpha == 0 else set(PATHS))
  assert s.flops_counted == plain * octave_cost_ratio(alpha)
  assert s.params == c * c * k * k + c
  # At stride 2 (pooling first) L->H runs at the output resolution instead
  # of a quarter of it: (1 - a)^2 + a (1 - a) / 4 + a (1 - a) + a^2 / 4.
  s2 = summarize(_OnePair(alpha, strides=2), (h, h, c), xla_flops=False)
  ratio = (1 - alpha) ** 2 + 1.25 * alpha * (1 - alpha) + alpha ** 2 / 4
  assert s2.flops_counted == pytest.approx(plain / 4 * ratio, rel=1e-12)


def test_the_cost_ratio_formula():
  assert octave_cost_ratio(0.0) == 1.0
  assert octave_cost_ratio(0.5) == pytest.approx(0.4375)
  assert octave_cost_ratio(0.25) == pytest.approx(0.671875)


# ---------------------------------------------------------------------------
# Gradients, the unit, mistakes.

def test_gradients_reach_all_four_paths():
  module = L.OctConv(8, 3, 0.5, 0.5)
  x = _pair(2, (6, 6), 8, 0.5)
  params = _init(module, x)["params"]

  def loss(p, x):
    y_h, y_l = module.apply({"params": p}, x)
    return jnp.sum(y_h ** 2) + jnp.sum(jnp.sin(y_l))

  grads, input_grads = jax.grad(loss, argnums=(0, 1))(params, x)
  assert set(grads) == set(PATHS)
  for name, g in grads.items():
    for leaf in jax.tree.leaves(g):
      assert np.all(np.isfinite(leaf)) and np.any(np.asarray(leaf) != 0), name
  assert all(np.any(np.asarray(g) != 0) for g in input_grads)


def test_unit_normalizes_each_group():
  def norm(name):
    return L.TorchLikeBatchNorm(use_running_average=False, name=name)

  x = _pair(4, (6, 6), 8, 0.25)
  linear = L.OctConvUnit(8, 3, 0.25, 0.5, norm=norm, act=None)
  variables = _init(linear, x)
  assert set(variables["params"]) == {"conv", "bn_h", "bn_l"}
  assert variables["batch_stats"]["bn_l"]["mean"].shape == (4,)
  (y_h, y_l), _ = linear.apply(variables, x, mutable=["batch_stats"])
  for y in (y_h, y_l):  # Training mode: each group's own batch statistics.
    np.testing.assert_allclose(np.mean(y, axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(np.std(y, axis=(0, 1, 2)), 1, atol=1e-2)
  relu = L.OctConvUnit(8, 3, 0.25, 0.5, norm=norm)
  (r_h, r_l), _ = relu.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(r_h, np.maximum(y_h, 0), atol=1e-6)
  np.testing.assert_allclose(r_l, np.maximum(y_l, 0), atol=1e-6)
  last = L.OctConvUnit(8, 3, 0.25, 0.0, act=None)
  assert last.apply(_init(last, x), x)[1] is None


@pytest.mark.parametrize("kwargs, x, message", [
    (dict(alpha_out=1.0), ((1, 4, 4, 4), None), "must be a number in \\[0, 1\\)"),
    (dict(alpha_out=-0.1), ((1, 4, 4, 4), None), "alpha_out is the low"),
    (dict(alpha_in=1.5), ((1, 4, 4, 4), None), "alpha_in is the low"),
    (dict(alpha_out="half"), ((1, 4, 4, 4), None), "got 'half'"),
    (dict(features=2, alpha_out=0.25), ((1, 4, 4, 4), None),
     "leaves the low-frequency group empty"),
    (dict(alpha_in=0.25), ((1, 4, 4, 4), None), "takes a low-frequency input, got none"),
    (dict(alpha_in=0.0), ((1, 4, 4, 4), (1, 2, 2, 2)), "takes no low-frequency input"),
    (dict(alpha_in=0.25), ((1, 4, 4, 6), (1, 2, 2, 3)), "int\\(0.25 \\* 9\\) = 2"),
    (dict(alpha_in=0.5), ((1, 4, 4, 4), (1, 4, 4, 4)), "half as large"),
    (dict(alpha_in=0.0, strides=3), ((1, 6, 6, 4), None), "strides 1 and 2"),
    (dict(alpha_in=0.0, padding="VALID"), ((1, 6, 6, 4), None), "must keep the size"),
])
def test_mistakes_are_one_sentence(kwargs, x, message):
  fields = dict(features=8, kernel_size=3, alpha_in=0.0, alpha_out=0.5)
  fields.update(kwargs)
  high, low = (None if s is None else jnp.zeros(s) for s in x)
  with pytest.raises(CnnjaxError, match=message):
    jax.eval_shape(lambda: L.OctConv(**fields).init(jax.random.key(0), (high, low)))


def test_the_high_input_is_required():
  with pytest.raises(CnnjaxError, match="needs the high-frequency input"):
    L.OctConv(8, 3, 0.5).init(jax.random.key(0), (None, jnp.zeros((1, 2, 2, 4))))
