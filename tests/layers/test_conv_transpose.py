"""layers.ConvTranspose against torch.nn.ConvTranspose{1,2,3}d: values,
gradients, output sizes, argument errors, and the summary's view of it.

torch's weight is (in, out // groups, *kernel); ours (*kernel, out // groups,
in): the same permutation as a Conv kernel's, (O, I, *k) -> (*k, I, O).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers as L
from cnnjax.analysis.summary import summarize
from cnnjax.errors import CnnjaxError
from cnnjax.layers import transpose
from cnnjax.ops import backend, onednn
from cnnjax.ops import random as random_ops

torch = pytest.importorskip("torch")

TORCH = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
         3: torch.nn.ConvTranspose3d}

# (ndim, in, out, kernel, stride, padding, output_padding, groups, dilation,
#  spatial): odd sizes, output_padding up to its limit, padding beyond the
# kernel's reach (a crop of the dilated input), depthwise, mixed per-dim.
CASES = [
    (1, 3, 5, 3, 1, 0, 0, 1, 1, (7,)),
    (1, 4, 6, 5, 3, 2, 2, 2, 1, (9,)),
    (1, 2, 4, 3, 2, 5, 1, 2, 2, (11,)),  # padding 5 > dilation * (k - 1)
    (1, 6, 6, 4, 2, 1, 0, 6, 1, (5,)),  # depthwise upsampling
    (2, 3, 4, 4, 2, 1, 0, 1, 1, (5, 7)),  # the DCGAN/U-Net upsampling
    (2, 4, 6, (3, 2), (2, 3), (1, 0), (1, 2), 2, (1, 2), (7, 5)),
    (2, 6, 3, 3, 2, 1, 1, 3, 1, (4, 9)),
    (2, 2, 2, 1, 3, 0, 2, 1, 1, (3, 5)),  # 1x1 kernel, gaps between inputs
    (2, 4, 8, 3, 1, 2, 1, 4, 2, (6, 5)),  # output_padding < dilation only
    (3, 2, 4, 3, 2, 1, 1, 1, 1, (3, 4, 5)),
    (3, 4, 2, (2, 3, 1), (1, 2, 2), (0, 1, 0), (0, 1, 1), 2, (2, 1, 1),
     (3, 5, 4)),
]


def _random_cases(count=8, seed=0):
  """Random valid settings (seeded) beyond the hand-picked ones."""
  rng = np.random.default_rng(seed)
  cases = []
  while len(cases) < count:
    ndim = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k, s, d = (tuple(int(v) for v in rng.integers(1, hi, ndim))
               for hi in (5, 4, 3))
    p = tuple(int(rng.integers(0, 3)) for _ in range(ndim))
    op = tuple(int(rng.integers(0, max(a, b))) for a, b in zip(s, d))
    spatial = tuple(int(v) for v in rng.integers(2, {1: 9, 2: 7, 3: 5}[ndim],
                                                 ndim))
    if all(L.conv_transpose_output_size(*a) >= 1 for a in zip(
        spatial, k, s, p, op, d)):
      cases.append((ndim, cin, cout, k, s, p, op, groups, d, spatial))
  return cases


def _pair(ndim, cin, cout, kernel, stride, padding, output_padding, groups,
          dilation, bias=True):
  """torch's layer and ours with the same weights."""
  torch.manual_seed(cin * 7 + cout)
  ref = TORCH[ndim](cin, cout, kernel, stride=stride, padding=padding,
                    output_padding=output_padding, groups=groups, bias=bias,
                    dilation=dilation)
  ours = L.ConvTranspose(cout, kernel, strides=stride, padding=padding,
                         output_padding=output_padding, groups=groups,
                         dilation=dilation, use_bias=bias, ndim=ndim)
  w = ref.weight.detach().numpy()
  params = {"kernel": np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))}
  if bias:
    params["bias"] = ref.bias.detach().numpy()
  return ref, ours, params


def _to_torch(x):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _from_torch(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


@pytest.fixture(params=["xla", "onednn"])
def conv_backend(request):
  """Each convolution backend in turn (oneDNN skips where it cannot run)."""
  if request.param == "onednn":
    ok, why = onednn.available()
    if not ok:
      pytest.skip(f"oneDNN backend unavailable: {why}")
  saved = list(backend._resolved)
  backend._resolved[:] = [request.param]
  yield request.param
  backend._resolved[:] = saved


@pytest.mark.parametrize("case", CASES + _random_cases())
def test_forward_and_gradients_match_torch(case, conv_backend):
  *layer, spatial = case
  ref, ours, params = _pair(*layer)
  rng = np.random.default_rng(len(spatial) * 10 + layer[1])
  x = rng.standard_normal((2, *spatial, layer[1])).astype(np.float32)

  x_t = _to_torch(x).requires_grad_(True)
  y_t = ref(x_t)
  g = rng.standard_normal(_from_torch(y_t).shape).astype(np.float32)
  y_t.backward(_to_torch(g))

  y, vjp = jax.vjp(lambda p, a: ours.apply({"params": p}, a), params, x)
  d_params, d_x = vjp(jnp.asarray(g))
  assert y.shape == _from_torch(y_t).shape
  close = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y, _from_torch(y_t), **close)
  np.testing.assert_allclose(d_x, _from_torch(x_t.grad), **close)
  w_grad = ref.weight.grad.numpy()
  np.testing.assert_allclose(
      d_params["kernel"], np.transpose(w_grad, tuple(range(2, w_grad.ndim))
                                       + (1, 0)), **close)
  np.testing.assert_allclose(d_params["bias"], ref.bias.grad.numpy(), **close)


def test_the_cpu_takes_the_cheaper_forms_where_they_apply(conv_backend):
  """Kernels no wider than their stride: one matrix product ('blocks');
  wider ones: the phases' convolution; groups and dilation: the dilated
  input. (The torch parity test above checks each form's numbers on both
  backends.)"""
  wide = "phases"
  assert transpose._route((2, 2), (2, 2), (1, 1), 1) == "blocks"
  assert transpose._route((1, 3), (3, 3), (1, 1), 1) == "blocks"
  assert transpose._route((4, 4), (2, 2), (1, 1), 1) == wide
  assert transpose._route((3,), (1,), (1,), 1) == wide
  assert transpose._route((2, 2), (2, 2), (1, 1), 2) == "dilated"
  assert transpose._route((2, 2), (2, 2), (2, 1), 1) == "dilated"


def test_parameters_have_the_documented_shapes_and_no_bias_when_asked():
  x = jnp.zeros((1, 5, 6, 4))
  module = L.ConvTranspose(6, (3, 2), strides=2, groups=2)
  shapes = jax.tree_util.tree_map(
      lambda a: a.shape, jax.eval_shape(module.init, jax.random.key(0), x))
  assert shapes == {"params": {"kernel": (3, 2, 3, 4), "bias": (6,)}}
  assert (module.kernel_size, module.strides, module.padding) == (
      (3, 2), (2, 2), (0, 0))
  ref, ours, params = _pair(1, 2, 3, 3, 2, 1, 1, 1, 1, bias=False)
  assert set(params) == {"kernel"}
  x = np.random.default_rng(1).standard_normal((1, 6, 2)).astype(np.float32)
  with torch.no_grad():
    expected = _from_torch(ref(_to_torch(x)))
  np.testing.assert_allclose(ours.apply({"params": params}, x), expected,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 1, 0, 1), (4, 2, 1, 1), (3, 3, 2, 2), (5, 2, 0, 3), (1, 4, 0, 1)])
def test_output_size_formula_matches_torch(kernel, stride, padding, dilation):
  for size in (1, 2, 5, 8):
    for output_padding in range(max(stride, dilation)):
      expected = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) \
          + output_padding + 1
      if expected < 1:
        continue
      ref = torch.nn.ConvTranspose1d(1, 1, kernel, stride, padding,
                                     output_padding, dilation=dilation)
      got = L.conv_transpose_output_size(size, kernel, stride, padding,
                                         output_padding, dilation)
      assert got == expected == ref(torch.zeros(1, 1, size)).shape[-1]
      module = L.ConvTranspose(1, kernel, stride, padding, output_padding,
                               dilation=dilation, ndim=1)
      out = jax.eval_shape(module.init_with_output, jax.random.key(0),
                           jnp.zeros((1, size, 1)))[0]
      assert out.shape == (1, expected, 1)


@pytest.mark.parametrize("ndim, groups, stride, padding, dilation", [
    (1, 1, 2, 1, 1), (2, 2, 3, 1, 2), (3, 1, 2, 0, 1)])
def test_it_is_the_input_gradient_of_the_convolution_it_transposes(
    ndim, groups, stride, padding, dilation):
  # Conv(in=4, out=6) maps (B, *S, 4) to (B, *S', 6); its input gradient maps
  # (B, *S', 6) back to (B, *S, 4) with the same kernel (*k, 4 // g, 6).
  size, k = 9, 3
  conv = L.Conv(6, k, ndim=ndim, strides=stride, padding=padding,
                kernel_dilation=dilation, feature_group_count=groups)
  rng = np.random.default_rng(ndim)
  x = rng.standard_normal((2,) + (size,) * ndim + (4,)).astype(np.float32)
  kernel = rng.standard_normal((k,) * ndim + (4 // groups, 6)).astype(
      np.float32)
  y, vjp = jax.vjp(lambda a: conv.apply({"params": {
      "kernel": kernel, "bias": np.zeros(6, np.float32)}}, a), x)
  g = rng.standard_normal(y.shape).astype(np.float32)
  # The sizes a strided convolution maps to y's are told apart by this.
  output_padding = (size + 2 * padding - dilation * (k - 1) - 1) % stride
  ours = L.conv_transpose(g, kernel, stride, padding, output_padding,
                          dilation, groups)
  np.testing.assert_allclose(ours, vjp(g)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, shape, message", [
    (dict(strides=2, output_padding=2), (1, 5, 2), "smaller than the stride"),
    (dict(strides=1, dilation=1, output_padding=1), (1, 5, 2),
     "smaller than the stride"),
    (dict(groups=2), (1, 5, 3), "must divide both"),
    (dict(features=3, groups=2), (1, 5, 4), "must divide both"),
    (dict(groups=0), (1, 5, 2), "groups must be a positive int"),
    (dict(padding=-1), (1, 5, 2), "padding must be a non-negative"),
    (dict(padding=(1, 1)), (1, 5, 2), "padding must be a non-negative"),
    (dict(output_padding="same"), (1, 5, 2), "output_padding must be"),
    (dict(kernel_size=0), (1, 5, 2), "kernel_size must be a positive"),
    (dict(strides=0), (1, 5, 2), "strides must be a positive"),
    (dict(kernel_size=(3, 3)), (1, 5, 2), "ndim=1"),
    (dict(features=0), (1, 5, 2), "features must be a positive int"),
    (dict(ndim=4), (1, 5, 5, 5, 5, 2), "1, 2 or 3 spatial dims"),
    (dict(), (1, 5, 5, 2), "a 1D ConvTranspose needs inputs"),
    (dict(kernel_size=1, padding=3), (1, 5, 2), "empty output"),
])
def test_bad_arguments_are_one_sentence_errors(kwargs, shape, message):
  args = {"features": 4, "kernel_size": 3, "ndim": 1, **kwargs}
  with pytest.raises(CnnjaxError, match=message):
    module = L.ConvTranspose(**args)
    jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))


def test_functional_form_checks_the_kernel_against_the_input():
  with pytest.raises(CnnjaxError, match="takes 3 input channels"):
    L.conv_transpose(jnp.zeros((1, 5, 2)), jnp.zeros((3, 4, 3)))
  with pytest.raises(CnnjaxError, match="needs inputs of shape"):
    L.conv_transpose(jnp.zeros((1, 5, 5, 3)), jnp.zeros((3, 4, 3)))
  with pytest.raises(CnnjaxError, match="must divide both"):
    L.conv_transpose(jnp.zeros((1, 5, 3)), jnp.zeros((3, 4, 3)), groups=2)


# -- the summary ---------------------------------------------------------------


class _Decoder(nn.Module):
  """A strided Conv down, a grouped ConvTranspose back up (2D)."""

  @nn.compact
  def __call__(self, x, *, train=False):
    x = L.Conv(4, 3, strides=2, padding=1, name="down")(x)
    return L.ConvTranspose(6, 4, strides=2, padding=1, groups=2,
                           name="up")(x)


def test_summary_counts_parameters_and_scattered_flops():
  s = summarize(_Decoder(), (9, 11, 3), xla_flops=False)
  down, up = s.rows
  assert (up.kind, up.output_shape) == ("ConvTranspose", (10, 12, 6))
  assert up.params == 4 * 4 * (6 // 2) * 4 + 6
  # Each of the 5x6 inputs multiplies its 4 channels into a 4x4 patch of
  # 6 // 2 outputs of its group: 2 FLOPs per multiply-add.
  assert up.flops == 2 * (5 * 6) * 4 * (4 * 4) * (6 // 2)
  assert s.flops_counted == down.flops + up.flops
  # Back to the input's resolution: jump 1 again.
  assert down.jump == (2, 2) and up.jump == (1, 1)


class _Up(nn.Module):
  """One 1D ConvTranspose with an all-ones kernel, named 'up'."""
  kernel: int
  stride: int
  dilation: int
  padding: int

  @nn.compact
  def __call__(self, x, *, train=False):
    return L.ConvTranspose(1, self.kernel, self.stride, self.padding,
                           dilation=self.dilation, ndim=1,
                           kernel_init=nn.initializers.ones, name="up")(x)


@pytest.mark.parametrize("kernel, stride, dilation, padding", [
    (4, 2, 1, 1), (3, 2, 1, 0), (2, 2, 1, 0), (3, 3, 2, 1), (5, 2, 2, 2),
    (1, 3, 1, 0), (3, 1, 2, 1)])
def test_summary_receptive_field_is_the_widest_gradient_support(
    kernel, stride, dilation, padding):
  model, size = _Up(kernel, stride, dilation, padding), 16
  (row,) = summarize(model, (size, 1), xla_flops=False).rows
  x = jnp.zeros((1, size, 1))
  variables = random_ops.init(model, jax.random.key(0), x)
  jacobian = jax.jacfwd(lambda a: model.apply(variables, a)[0, :, 0])(x)
  jacobian = np.asarray(jacobian)[:, 0, :, 0]  # (out, in): 1 where read.
  # Outputs all of whose taps fall inside the input, a few whole periods.
  first = dilation * (kernel - 1) - padding
  extents, offsets = [], []
  for o in range(max(first, 0), max(first, 0) + 4 * stride):
    hit = np.flatnonzero(jacobian[o])
    if len(hit):  # With gaps (kernel < stride) some outputs read nothing.
      extents.append(hit[-1] - hit[0] + 1)
      offsets.append((hit[0] + hit[-1]) / 2 - (row.start[0] + o * row.jump[0]))
  assert row.jump == (1 / stride,)
  assert row.receptive_field == (max(extents),)
  # The true centres step; the line through them is right on average.
  assert abs(np.mean(offsets)) < 1e-9
