"""LeNet-5: the paper's network (LeCun et al. 1998) and its modern simplification.

`lenet5_1998` is the network of LeCun, Bottou, Bengio and Haffner (1998),
"Gradient-Based Learning Applied to Document Recognition", Section II.B:
trainable subsampling, C3's sparse connection table (Table I), the scaled
tanh and fixed Euclidean RBF outputs; 60,000 trainable parameters.
`lenet5` and `lenet5_relu` are the simplification most courses teach:
pooling without parameters, a fully connected C3 and a dense output layer.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu, "sigmoid": nn.sigmoid}


class LeNet5(nn.Module):
  """LeNet-5's layout on 32x32 inputs, simplified as courses teach it.

  C1 6@5x5, S2, C3 16@5x5, S4, C5 120, F6 84 and a dense output. Unlike the
  paper (`LeNet5Paper`): the pooling has no parameters (average or max),
  C3 is fully connected to S2, the squashing is plain tanh (or ReLU) and the
  output is a dense softmax layer; C5 is a dense layer on the 5x5x16 maps,
  the same as a 5x5 convolution there. 61,706 parameters for 10 classes and
  one input channel.
  """
  num_classes: int = 10
  activation: str = "tanh"
  pooling: str = "avg"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    act = _ACTIVATIONS[self.activation]
    pool = {"avg": layers.AvgPool, "max": layers.MaxPool}[self.pooling]
    conv = functools.partial(layers.Conv, kernel_size=5, padding="VALID",
                             dtype=self.dtype, param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    x = act(conv(6, name="c1")(x))  # (B, 28, 28, 6)
    x = pool(2, 2, name="s2")(x)  # (B, 14, 14, 6)
    x = act(conv(16, name="c3")(x))  # (B, 10, 10, 16)
    x = pool(2, 2, name="s4")(x)  # (B, 5, 5, 16)
    x = x.reshape((x.shape[0], -1))
    x = act(dense(120, name="c5")(x))
    x = act(dense(84, name="f6")(x))
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


# The paper's squashing function f(a) = A tanh(S a) (Section II.B and
# Appendix A): f(1) = 1 and f(-1) = -1, and its second derivative is largest
# at +-1, the values of the RBF prototypes.
SQUASH_AMPLITUDE = 1.7159  # A
SQUASH_SLOPE = 2 / 3  # S


def scaled_tanh(a):
  """LeNet-5's squashing function A tanh(S a), A = 1.7159, S = 2/3."""
  return SQUASH_AMPLITUDE * jnp.tanh(SQUASH_SLOPE * a)


# Table I: the S2 maps (rows 0-5) each C3 map (columns 0-15) is connected
# to. Maps 0-5 take 3 contiguous S2 maps, 6-11 take 4 contiguous, 12-14 take
# 4 discontinuous ones and 15 takes all 6: 60 connections.
_TABLE_I = ("X...XXX..XXXX.XX",
            "XX...XXX..XXXX.X",
            "XXX...XXX..X.XXX",
            ".XXX..XXXX..X.XX",
            "..XXX..XXXX.XX.X",
            "...XXX..XXXX.XXX")
C3_TABLE: tuple[tuple[int, ...], ...] = tuple(
    tuple(row for row in range(6) if _TABLE_I[row][col] == "X")
    for col in range(16))

# The RBF prototypes: the paper's are stylized 7x12 bitmaps of the digits
# (Figure 3) that cannot be downloaded; these are drawn here in the same
# spirit, '#' = +1 and '.' = -1, 12 rows of 7 pixels each.
_BITMAPS = {
    0: ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    1: ("...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...",
        "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."),
    2: (".#####.", "#.....#", "......#", "......#", ".....#.", "....#..",
        "...#...", "..#....", ".#.....", "#......", "#......", "#######"),
    3: (".#####.", "#.....#", "......#", "......#", ".....#.", "..###..",
        ".....#.", "......#", "......#", "......#", "#.....#", ".#####."),
    4: ("....#..", "...##..", "..#.#..", ".#..#..", "#...#..", "#...#..",
        "#######", "....#..", "....#..", "....#..", "....#..", "....#.."),
    5: ("#######", "#......", "#......", "#......", "######.", "......#",
        "......#", "......#", "......#", "......#", "#.....#", ".#####."),
    6: ("..####.", ".#.....", "#......", "#......", "#.####.", "##....#",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    7: ("#######", "......#", ".....#.", ".....#.", "....#..", "....#..",
        "...#...", "...#...", "..#....", "..#....", "..#....", "..#...."),
    8: ("..###..", ".#...#.", "#.....#", "#.....#", ".#...#.", "..###..",
        ".#...#.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    9: ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", ".#...##",
        "..###.#", "......#", "......#", "......#", ".....#.", ".####.."),
}
# (10, 84) in {-1, +1}: digit d's bitmap, row by row.
DIGIT_PROTOTYPES = np.array(
    [[1.0 if ch == "#" else -1.0 for row in _BITMAPS[d] for ch in row]
     for d in range(10)], np.float32)


def _fan_in_uniform(fan_in):
  """Appendix A's initialization: uniform in +-2.4 / F, F the unit's fan-in
  (a number, or one per entry of the last axis)."""
  def init(key, shape, dtype=jnp.float32):
    bound = 2.4 / jnp.asarray(fan_in, dtype)
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * bound
  return init


class Subsampling(nn.Module):
  """LeNet-5's S layers: each map's non-overlapping window sums, times a
  trainable coefficient, plus a trainable bias (2 parameters a map); the
  squashing is applied by the caller."""
  window_shape: tuple[int, int] = (2, 2)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # (B, H, W, C) -> (B, H / 2, W / 2, C)
    channels = x.shape[-1]
    coefficient = self.param("coefficient", _fan_in_uniform(
        np.prod(self.window_shape)), (channels,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (channels,),
                      self.param_dtype)
    x, coefficient, bias = nn.dtypes.promote_dtype(x, coefficient, bias,
                                                   dtype=self.dtype)
    area = int(np.prod(self.window_shape))
    sums = layers.avg_pool(x, self.window_shape) * area
    return sums * coefficient + bias


class SparseConv(nn.Module):
  """A 'VALID' convolution in which output map o sees only the input maps
  `table[o]` (LeNet-5's C3).

  Only the connected kernels are parameters: `kernel` is (*kernel_size,
  connections), scattered into a dense (*kernel_size, in, out) kernel whose
  other entries are constant zeros, so they neither train nor count.
  """
  # train/kernel_init.py: a fan-in per output map; keep LeCun 1998's init.
  kernel_layout: ClassVar[str] = "own"

  table: tuple[tuple[int, ...], ...]
  kernel_size: tuple[int, int] = (5, 5)
  padding: str = "VALID"  # Read by the summary's receptive fields.
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.nowrap
  def counted_flops(self, in_shape, out_shape) -> int:
    """2 per multiply-add: each output position sums a 5x5 window of every
    connected input map (analysis/summary.py)."""
    connections = sum(len(maps) for maps in self.table)
    positions = int(np.prod(out_shape[:-1]))
    return 2 * positions * int(np.prod(self.kernel_size)) * connections

  @nn.compact
  def __call__(self, x):  # (B, H, W, C_in) -> (B, H - 4, W - 4, len(table))
    inputs = [i for maps in self.table for i in maps]
    outputs = [o for o, maps in enumerate(self.table) for _ in maps]
    if max(inputs) >= x.shape[-1]:
      raise CnnjaxError(f"the connection table reads input map {max(inputs)} "
                        f"of an input with {x.shape[-1]} maps")
    taps = int(np.prod(self.kernel_size))
    fan_in = [taps * len(self.table[o]) for o in outputs]
    kernel = self.param("kernel", _fan_in_uniform(np.array(fan_in)),
                        (*self.kernel_size, len(inputs)), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (len(self.table),),
                      self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    dense = jnp.zeros((*self.kernel_size, x.shape[-1], len(self.table)),
                      kernel.dtype).at[:, :, inputs, outputs].set(kernel)
    y = lax.conv_general_dilated(x, dense, (1, 1), self.padding,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


class EuclideanRBF(nn.Module):
  """LeNet-5's output layer: y_i = sum_j (x_j - w_ij)^2 for fixed prototypes
  w_i (constants, not variables); returns the logits -y."""
  prototypes: Any  # (classes, features)
  dtype: Any = jnp.float32

  @nn.nowrap
  def counted_flops(self, in_shape, out_shape) -> int:
    """Per class, one subtraction and one multiply-add per feature, counted
    as one multiply-add (2 FLOPs) like a dense layer's (analysis/summary.py)."""
    return 2 * in_shape[-1] * out_shape[-1]

  @nn.compact
  def __call__(self, x):  # (B, features) -> (B, classes)
    w = jnp.asarray(self.prototypes, self.dtype)
    x = jnp.asarray(x, self.dtype)
    return -jnp.sum(jnp.square(x[:, None, :] - w[None]), axis=-1)


class LeNet5Paper(nn.Module):
  """LeNet-5 as published (LeCun et al. 1998, Section II.B), 32x32 inputs.

  Every layer up to F6 squashes with A tanh(S a). S2 and S4 sum 2x2 windows
  with a trainable coefficient and bias per map; C3 uses Table I's sparse
  connections; C5 is a 5x5 convolution; the output is 10 Euclidean RBF units
  with fixed +-1 prototypes, 7x12 bitmaps of the digits drawn in this file
  (the paper's own bitmaps are not available). Weights start uniform in
  +-2.4 / fan-in (Appendix A), biases at zero.

  The logits are -y, the negated RBF distances, so the project's softmax
  cross-entropy trains it. The paper's MAP loss (Section II.C) is
  y_target + log(exp(-j) + sum_i exp(-y_i)): the same cross-entropy with one
  more, constant 'rubbish' class of logit -j, which this model leaves out;
  it was trained with a diagonal Levenberg-Marquardt rule, not the project's
  optimizers. `num_classes` up to 10 takes the first prototypes (digits
  0..num_classes-1); 0 returns F6's 84 features.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    if self.num_classes > len(DIGIT_PROTOTYPES):
      raise CnnjaxError(f"lenet5_1998 has RBF prototypes for "
                        f"{len(DIGIT_PROTOTYPES)} digits; num_classes must be "
                        f"at most that, got {self.num_classes}")
    types = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    conv = functools.partial(layers.Conv, kernel_size=5, padding="VALID",
                             **types)
    # Parameters, derived: weights + biases per layer.
    # C1: 6 maps x (5*5*1 weights + 1 bias) = 156.
    x = scaled_tanh(conv(6, kernel_init=_fan_in_uniform(25),
                         name="c1")(x))  # (B, 28, 28, 6)
    # S2: 6 maps x (1 coefficient + 1 bias) = 12.
    x = scaled_tanh(Subsampling(name="s2", **types)(x))  # (B, 14, 14, 6)
    # C3: 60 connections (6x3 + 6x4 + 3x4 + 1x6) x 25 weights + 16 biases
    # = 1,500 + 16 = 1,516.
    x = scaled_tanh(SparseConv(C3_TABLE, name="c3", **types)(x))  # (B, 10, 10, 16)
    # S4: 16 maps x (1 coefficient + 1 bias) = 32.
    x = scaled_tanh(Subsampling(name="s4", **types)(x))  # (B, 5, 5, 16)
    # C5: 120 maps x (5*5*16 weights + 1 bias) = 48,120.
    x = scaled_tanh(conv(120, kernel_init=_fan_in_uniform(400),
                         name="c5")(x))  # (B, 1, 1, 120)
    x = x.reshape((x.shape[0], -1))
    # F6: 84 units x (120 weights + 1 bias) = 10,164.
    x = scaled_tanh(nn.Dense(84, kernel_init=_fan_in_uniform(120), name="f6",
                             **types)(x))
    if not self.num_classes:
      return x
    # Output: fixed prototypes, 0 parameters. Total: 156 + 12 + 1,516 + 32
    # + 48,120 + 10,164 = 60,000, the paper's "60,000 trainable parameters".
    return EuclideanRBF(DIGIT_PROTOTYPES[:self.num_classes], dtype=self.dtype,
                        name="head")(x)


register_model("lenet5", input_shape=(32, 32, 1),
               description="LeNet-5, modern simplification: tanh, average "
               "pooling without parameters, full C3, dense output")(LeNet5)
register_model("lenet5_relu", input_shape=(32, 32, 1),
               description="LeNet-5, modern simplification with ReLU and max "
               "pooling")(functools.partial(LeNet5, activation="relu",
                                            pooling="max"))
register_model("lenet5_1998", input_shape=(32, 32, 1),
               description="LeNet-5 as published (LeCun et al. 1998): trainable "
               "subsampling, sparse C3, scaled tanh, RBF outputs")(LeNet5Paper)
