"""The lecture material's worked examples, computed by cnnjax.

The material's numbers came through OCR; where one of them is wrong the test
holds the true value and says so next to it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers
from cnnjax.analysis import conv_output_size, summarize
from cnnjax.errors import CnnjaxError
from cnnjax.ops import CONV_IMPLEMENTATIONS


def _apply_conv(kernel, bias, x, **conv_args):
  """Runs `layers.Conv` with the given weights on one example."""
  conv = layers.Conv(features=kernel.shape[-1], kernel_size=kernel.shape[:-2],
                     **conv_args)
  variables = {"params": {"kernel": jnp.asarray(kernel, jnp.float32),
                          "bias": jnp.asarray(bias, jnp.float32)}}
  return np.asarray(conv.apply(variables, jnp.asarray(x, jnp.float32)[None]))[0]


# The 5x5x3 input volume of the convolution demo, shown with its zero padding
# of 1 as x[:, :, c]; here without the padding, which the layer adds.
DEMO_X = np.stack([
    [[0, 0, 2, 0, 2], [1, 2, 2, 2, 0], [0, 2, 1, 0, 0], [0, 2, 0, 2, 1],
     [1, 0, 2, 2, 0]],
    [[1, 0, 0, 2, 0], [1, 0, 1, 0, 1], [0, 0, 2, 1, 2], [1, 2, 1, 0, 0],
     [1, 2, 2, 0, 2]],
    [[0, 2, 2, 1, 0], [0, 2, 0, 0, 1], [1, 1, 1, 2, 1], [2, 0, 1, 2, 2],
     [2, 1, 1, 0, 0]],
], axis=-1)
DEMO_W0 = np.stack([
    [[-1, 0, -1], [1, -1, 1], [-1, 0, -1]],
    [[0, -1, 1], [1, 1, 1], [-1, 1, -1]],
    [[0, 0, 0], [-1, 1, -1], [1, 1, -1]],
], axis=-1)
DEMO_W1 = np.stack([
    [[0, 1, 1], [-1, -1, -1], [1, -1, 1]],
    [[-1, 0, -1], [1, 1, 1], [-1, 1, -1]],
    [[0, 1, 0], [0, 0, -1], [1, -1, 0]],
], axis=-1)
DEMO_OUT = np.stack([
    [[-3, -1, 0], [-1, -8, 2], [3, 0, 3]],
    [[1, 4, 2], [-1, 4, 5], [3, 1, 3]],
], axis=-1)


def test_the_convolution_demo_volume():
  # Two 3x3x3 filters with biases 1 and 0, stride 2, padding 1: 3x3x2.
  kernel = np.stack([DEMO_W0, DEMO_W1], axis=-1)  # (3, 3, 3, 2)
  out = _apply_conv(kernel, [1, 0], DEMO_X, strides=2, padding=1)
  np.testing.assert_array_equal(out, DEMO_OUT)
  for name, conv in CONV_IMPLEMENTATIONS.items():
    out = conv(jnp.asarray(DEMO_X, jnp.float32)[None],
               jnp.asarray(kernel, jnp.float32), stride=2, padding=1)[0]
    np.testing.assert_allclose(out + np.array([1, 0]), DEMO_OUT, atol=1e-4,
                               err_msg=name)


def test_the_7x7_input_with_a_3x3_kernel_at_stride_2():
  x = np.array([[2, 3, 7, 4, 6, 2, 9],
                [6, 6, 9, 8, 7, 4, 3],
                [3, 4, 8, 3, 8, 9, 7],
                [7, 8, 3, 6, 6, 3, 4],
                [4, 2, 1, 8, 3, 4, 6],
                [3, 2, 4, 1, 9, 8, 3],
                [0, 1, 3, 9, 2, 1, 4]], np.float32)[..., None]
  w = np.array([[3, 4, 4], [1, 0, 2], [-1, 0, 3]], np.float32)[..., None, None]
  out = _apply_conv(w, [0], x, strides=2, padding="VALID")[..., 0]
  assert out.shape == (3, 3) == (conv_output_size(7, 3, 2),) * 2
  # The material shows the first row and the start of the second as
  # 91, 100, 83 and 69. The third is wrong for the input as printed: the
  # window [[6,2,9],[7,4,3],[8,9,7]] gives 18+8+36 + 7+0+6 - 8+0+21 = 88.
  np.testing.assert_array_equal(out[0], [91, 100, 88])
  assert out[1, 0] == 69


def test_a_3x3_filter_at_stride_3_on_7x7_is_refused():
  with pytest.raises(CnnjaxError, match="does not fit"):
    conv_output_size(7, 3, 3)


def test_2x2_max_pooling_of_the_4x4_example():
  x = jnp.array([[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]],
                jnp.float32)[None, :, :, None]
  out = layers.MaxPool(window_shape=2, strides=2).apply({}, x)
  np.testing.assert_array_equal(out[0, :, :, 0], [[9, 2], [6, 3]])


def test_ten_5x5_filters_with_pad_2_on_32x32x3():
  conv = layers.Conv(features=10, kernel_size=5, padding=2)
  variables = jax.eval_shape(conv.init, jax.random.key(0),
                             jnp.zeros((1, 32, 32, 3)))
  out = jax.eval_shape(conv.apply, variables, jnp.zeros((1, 32, 32, 3)))
  assert out.shape == (1, 32, 32, 10)
  n = sum(v.size for v in jax.tree.leaves(variables))
  assert n == 760  # (5*5*3 + 1) * 10.


# The X/O example: a 9x9 image of an X (1) on a background of -1, and three
# 3x3 features (the two diagonals and the centre cross of the X).
X_IMAGE = -np.ones((9, 9), np.float32)
for _i in range(1, 8):
  X_IMAGE[_i, _i] = X_IMAGE[_i, 8 - _i] = 1
X_FEATURES = np.stack([
    [[1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
    [[1, -1, 1], [-1, 1, -1], [1, -1, 1]],
    [[-1, -1, 1], [-1, 1, -1], [1, -1, -1]],
], axis=-1).astype(np.float32)
# The filtered images as printed (two decimals, cut rather than rounded:
# 5/9 shows as 0.55, 7/9 as 0.77). One copy of the first map in the material
# has 0.11 for -0.11 at row 0, column 5, and one copy of the second map has
# 0.55 for -0.55 at row 5, column 6; the other copies agree with the values
# below, which are the true ones.
X_MAPS = np.stack([
    [[0.77, -0.11, 0.11, 0.33, 0.55, -0.11, 0.33],
     [-0.11, 1.00, -0.11, 0.33, -0.11, 0.11, -0.11],
     [0.11, -0.11, 1.00, -0.33, 0.11, -0.11, 0.55],
     [0.33, 0.33, -0.33, 0.55, -0.33, 0.33, 0.33],
     [0.55, -0.11, 0.11, -0.33, 1.00, -0.11, 0.11],
     [-0.11, 0.11, -0.11, 0.33, -0.11, 1.00, -0.11],
     [0.33, -0.11, 0.55, 0.33, 0.11, -0.11, 0.77]],
    [[0.33, -0.55, 0.11, -0.11, 0.11, -0.55, 0.33],
     [-0.55, 0.55, -0.55, 0.33, -0.55, 0.55, -0.55],
     [0.11, -0.55, 0.55, -0.77, 0.55, -0.55, 0.11],
     [-0.11, 0.33, -0.77, 1.00, -0.77, 0.33, -0.11],
     [0.11, -0.55, 0.55, -0.77, 0.55, -0.55, 0.11],
     [-0.55, 0.55, -0.55, 0.33, -0.55, 0.55, -0.55],
     [0.33, -0.55, 0.11, -0.11, 0.11, -0.55, 0.33]],
    [[0.33, -0.11, 0.55, 0.33, 0.11, -0.11, 0.77],
     [-0.11, 0.11, -0.11, 0.33, -0.11, 1.00, -0.11],
     [0.55, -0.11, 0.11, -0.33, 1.00, -0.11, 0.11],
     [0.33, 0.33, -0.33, 0.55, -0.33, 0.33, 0.33],
     [0.11, -0.11, 1.00, -0.33, 0.11, -0.11, 0.55],
     [-0.11, 1.00, -0.11, 0.33, -0.11, 0.11, -0.11],
     [0.77, -0.11, 0.11, 0.33, 0.55, -0.11, 0.33]],
], axis=-1)
# 2x2 max pooling at stride 2 of the 7x7 maps: the material lets the last
# window hang over the edge (ceil mode, 'SAME' padding), giving 4x4.
X_POOLED = np.stack([
    [[1.00, 0.33, 0.55, 0.33], [0.33, 1.00, 0.33, 0.55],
     [0.55, 0.33, 1.00, 0.11], [0.33, 0.55, 0.11, 0.77]],
    [[0.55, 0.33, 0.55, 0.33], [0.33, 1.00, 0.55, 0.11],
     [0.55, 0.55, 0.55, 0.11], [0.33, 0.11, 0.11, 0.33]],
    [[0.33, 0.55, 1.00, 0.77], [0.55, 0.55, 1.00, 0.33],
     [1.00, 1.00, 0.11, 0.55], [0.77, 0.33, 0.55, 0.33]],
], axis=-1)
# "Deep stacking": pooling once more gives 2x2 maps.
X_POOLED_TWICE = np.stack([
    [[1.00, 0.55], [0.55, 1.00]],
    [[1.00, 0.55], [0.55, 0.55]],
    [[0.55, 1.00], [1.00, 0.55]],
], axis=-1)


def _as_printed(x):
  return np.trunc(np.round(np.asarray(x) * 100, 3)) / 100


def test_the_x_and_o_network():
  # Filtering is the average of the products: the correlation divided by 9.
  kernel = X_FEATURES[:, :, None, :] / 9
  maps = _apply_conv(kernel, np.zeros(3), X_IMAGE[..., None], padding="VALID")
  np.testing.assert_allclose(_as_printed(maps), X_MAPS, atol=1e-6)
  np.testing.assert_allclose(maps[0, 0, 0], 7 / 9, rtol=1e-6)  # Shown 0.77.
  pool = layers.MaxPool(window_shape=2, strides=2, padding="SAME")
  pooled = np.asarray(pool.apply({}, jnp.asarray(maps)[None]))[0]
  np.testing.assert_allclose(_as_printed(pooled), X_POOLED, atol=1e-6)
  # ReLU: "change everything negative to zero"; the pooled maps have no
  # negative values left, so ReLU before or after pooling is the same here.
  relu_maps = np.asarray(layers.relu(maps))
  np.testing.assert_allclose(_as_printed(relu_maps),
                             np.maximum(X_MAPS, 0), atol=1e-6)
  pooled_relu = np.asarray(pool.apply({}, jnp.asarray(relu_maps)[None]))[0]
  np.testing.assert_allclose(pooled_relu, pooled, atol=1e-6)
  twice = np.asarray(pool.apply({}, jnp.asarray(pooled)[None]))[0]
  np.testing.assert_allclose(_as_printed(twice), X_POOLED_TWICE, atol=1e-6)


def test_the_lenet5_layer_table():
  # Activation shape, size and parameters per layer, for the LeNet-5 of the
  # table (32x32x1 input, ten classes).
  s = summarize("lenet5_relu", xla_flops=False)
  table = [(r.output_shape, r.activations, r.params) for r in s.rows]
  assert table == [
      ((28, 28, 6), 4_704, 156),
      ((14, 14, 6), 1_176, 0),
      # The material prints 416: the OCR dropped the 2 of
      # (5*5*6 + 1) * 16 = 2,416.
      ((10, 10, 16), 1_600, 2_416),
      ((5, 5, 16), 400, 0),
      # The material prints 48,001, 10,081 and 841 for the three dense layers,
      # one bias too few each: (400 + 1) * 120, (120 + 1) * 84, (84 + 1) * 10.
      ((120,), 120, 48_120),
      ((84,), 84, 10_164),
      ((10,), 10, 850),
  ]
  assert s.params == 61_706


def test_the_vgg16_memory_and_parameter_table():
  # Output shape, activations ("memory") and weights per layer as in the
  # material, which leaves out the biases (one per output channel or unit).
  expected = [
      ((224, 224, 64), 3_211_264, 1_728),
      ((224, 224, 64), 3_211_264, 36_864),
      ((112, 112, 64), 802_816, 0),
      ((112, 112, 128), 1_605_632, 73_728),
      ((112, 112, 128), 1_605_632, 147_456),
      ((56, 56, 128), 401_408, 0),
      ((56, 56, 256), 802_816, 294_912),
      ((56, 56, 256), 802_816, 589_824),
      ((56, 56, 256), 802_816, 589_824),
      ((28, 28, 256), 200_704, 0),
      ((28, 28, 512), 401_408, 1_179_648),
      ((28, 28, 512), 401_408, 2_359_296),
      ((28, 28, 512), 401_408, 2_359_296),
      ((14, 14, 512), 100_352, 0),
      ((14, 14, 512), 100_352, 2_359_296),
      ((14, 14, 512), 100_352, 2_359_296),
      ((14, 14, 512), 100_352, 2_359_296),
      ((7, 7, 512), 25_088, 0),
      ((4096,), 4_096, 102_760_448),
      ((4096,), 4_096, 16_777_216),
      ((1000,), 1_000, 4_096_000),
  ]
  s = summarize("vgg16", xla_flops=False)
  rows = [r for r in s.rows if r.kind != "Dropout"]
  got = [(r.output_shape, r.activations,
          r.params - (r.output_shape[-1] if r.params else 0)) for r in rows]
  assert got == expected
  assert s.params == 138_357_544  # "TOTAL params: 138M parameters".
  # The material's total, "24M * 4 bytes ~= 96MB / image", is not the sum of
  # its own rows: with the 150,528 input values they add up to 15.2M values,
  # 61 MB in float32.
  total = 224 * 224 * 3 + sum(e[1] for e in expected)
  assert total == 15_237_608
  dropout = sum(r.activation_bytes for r in s.rows if r.kind == "Dropout")
  assert s.forward_activation_bytes - dropout == 4 * total
