"""Octave convolution (Chen et al. 2019, "Drop an Octave: Reducing Spatial
Redundancy in Convolutional Neural Networks with Octave Convolution").

A feature map is split along its channels into a high-frequency group at the
full resolution and a low-frequency group at half the resolution (one
octave lower): `alpha` is the low group's share of the channels,
c_low = int(alpha * c). An `OctConv` maps a (high, low) pair to a (high,
low) pair through four convolutions, each at the resolution it runs at:

  H->H   conv(high)                                  full resolution
  H->L   conv(avg_pool_2x2(high))                    half resolution
  L->H   upsample_nearest_2x(conv(low))              half, then copied up
  L->L   conv(low)                                   half resolution

  y_high = H->H + L->H,   y_low = H->L + L->L.

The weights of the four paths are the four blocks of one c_in x c_out kernel,
so an OctConv has exactly the parameters of the plain convolution it
replaces, whatever the alphas. For alpha_in = alpha_out = alpha its
multiply-adds are a fraction

  (1 - a)^2 + 2 a (1 - a) / 4 + a^2 / 4  =  1 - 3/4 a (2 - a)

of the plain one's (the paper's theoretical ratio: 0.44 at a = 0.5, 0.67 at
a = 0.25), since the three paths that touch the low group run on a quarter of
the positions.

`alpha_in = 0` is the first octave layer (no low input: `low` is None, only
H->H and H->L run); `alpha_out = 0` the last (no low output: `y_low` is
None). With both 0 an OctConv is its H->H convolution: a plain `Conv`.

Strides (1 or 2 per dim) follow the authors' code (facebookresearch/OctConv,
`utils/gluon/utils/octconv.py`): every input is average-pooled by the stride
first and the convolutions run at stride 1 (H->L pools by twice the stride;
L->H skips its upsampling at stride 2). A strided OctConv with alphas 0 is
therefore `Conv` on `avg_pool(x, 2)`, not a strided `Conv`. Odd sizes are
pooled with ceil rounding (the last window partial, averaged over its real
elements), so the low group of an n-wide map is ceil(n / 2) wide, and L->H
crops its upsampled output back to n.

The paths are `Conv` children named `h2h`, `h2l`, `l2h` and `l2l`: the
summary (cnnjax.analysis) counts each one's FLOPs at the resolution it
really runs at.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError
from cnnjax.layers.conv import Conv, spatial_tuple
from cnnjax.layers.pooling import avg_pool

Pair = tuple[Any, Any]


def check_alpha(alpha: Any, what: str = "alpha") -> float:
  """`alpha` as a float in [0, 1), the share of low-frequency channels."""
  if (not isinstance(alpha, numbers.Real) or isinstance(alpha, bool)
      or not 0 <= alpha < 1):
    raise CnnjaxError(f"{what} is the low-frequency share of the channels and "
                      f"must be a number in [0, 1), got {alpha!r}.")
  return float(alpha)


def octave_channels(channels: int, alpha: float, what: str = "alpha") -> tuple[int, int]:
  """(high, low) channels of `channels` split at `alpha`: low = int(alpha * c).

  An alpha above 0 that leaves the low group empty is refused: the caller
  asked for a low-frequency group and would silently get none.
  """
  alpha = check_alpha(alpha, what)
  low = int(alpha * channels)
  if alpha > 0 and low == 0:
    raise CnnjaxError(f"{what}={alpha} of {channels} channels leaves the "
                      f"low-frequency group empty (int({alpha} * {channels}) "
                      f"= 0); use more channels or {what}=0.")
  return channels - low, low


def _as_pair(x) -> Pair:
  if isinstance(x, (tuple, list)):
    if len(x) != 2:
      raise CnnjaxError(f"an octave feature map is a (high, low) pair, got "
                        f"{len(x)} arrays.")
    return x[0], x[1]
  return x, None


def _downsample(x, window: Sequence[int]):
  """Average pooling by `window` (at that stride), ceil-rounded on odd sizes."""
  if all(w == 1 for w in window):
    return x
  fits = all(s % w == 0 for s, w in zip(x.shape[1:-1], window))
  return avg_pool(x, tuple(window), tuple(window), count_include_pad=False,
                  ceil_mode=not fits)


def _upsample(x, factors: Sequence[int], spatial: Sequence[int]):
  """Nearest-neighbour upsampling by `factors`, cropped to `spatial`."""
  for axis, f in enumerate(factors, start=1):
    if f > 1:
      x = jnp.repeat(x, f, axis=axis)
  return x[(slice(None),) + tuple(slice(0, s) for s in spatial)]


class OctConv(nn.Module):
  """Octave convolution: (high, low) -> (high, low) (see the module docstring).

  Attributes:
    features: output channels, high and low together; the low group has
      int(alpha_out * features).
    kernel_size: as `Conv` (an int is square).
    alpha_in: the low share of the input's channels; 0: no low input.
    alpha_out: the low share of the output's; 0: no low output (None).
    strides: 1 or 2 (per dim): the inputs are average-pooled by it first.
    padding: as `Conv`; it must keep the size at stride 1 ('SAME', or
      (k - 1) / 2 for odd k), since the paths' outputs are summed.
    use_bias: None keeps the `conv` factory's choice (flax's Conv: a bias);
      the biases sit on H->H and H->L only, one per output channel, as in
      the authors' code.
    conv: the convolution factory (a `Conv` partial: dtypes, bias, init).
  """
  features: int
  kernel_size: Any
  alpha_in: float = 0.5
  alpha_out: float = 0.5
  strides: Any = 1
  padding: Any = "SAME"
  use_bias: bool | None = None
  conv: Callable[..., nn.Module] = Conv

  def _path(self, features: int, name: str, bias: bool):
    kwargs = {} if bias and self.use_bias is None else {
        "use_bias": bool(bias and self.use_bias)}
    return self.conv(features, self.kernel_size, strides=1,
                     padding=self.padding, name=name, **kwargs)

  def _check_input(self, high, low, n: int) -> None:
    if high is None:
      raise CnnjaxError("OctConv needs the high-frequency input; only the low "
                        "one may be None.")
    if high.ndim != n + 2 or not 1 <= n <= 3:
      raise CnnjaxError(f"OctConv needs inputs of shape (B, 1 to 3 spatial "
                        f"dims, C), got {high.shape}.")
    alpha_in = check_alpha(self.alpha_in, "alpha_in")
    if (alpha_in == 0) != (low is None):
      given = "none" if low is None else f"one of shape {low.shape}"
      raise CnnjaxError(f"an OctConv with alpha_in={alpha_in} takes "
                        f"{'no' if alpha_in == 0 else 'a'} low-frequency "
                        f"input, got {given}.")
    if low is None:
      return
    channels = high.shape[-1] + low.shape[-1]
    expected = (high.shape[0],) + tuple(-(-s // 2) for s in high.shape[1:-1])
    if (low.ndim != high.ndim or low.shape[:-1] != expected
        or low.shape[-1] != int(alpha_in * channels)):
      raise CnnjaxError(
          f"the low-frequency input of shape {low.shape} does not match the "
          f"high one {high.shape} at alpha_in={alpha_in}: it must be half as "
          f"large (rounded up) with int({alpha_in} * {channels}) = "
          f"{int(alpha_in * channels)} channels.")

  @nn.compact
  def __call__(self, x) -> Pair:
    """(high (B, *S, C_h), low (B, *ceil(S/2), C_l) or None) -> the same
    at the stride; the output low is None when alpha_out = 0."""
    high, low = _as_pair(x)
    n = getattr(high, "ndim", 0) - 2
    self._check_input(high, low, n)
    high_out, low_out = octave_channels(self.features, self.alpha_out,
                                        "alpha_out")
    strides = spatial_tuple(self.strides, n, "strides")
    if any(s > 2 for s in strides):
      raise CnnjaxError(f"OctConv supports strides 1 and 2 (it pools by the "
                        f"stride), got {strides}.")
    x_h = _downsample(high, strides)
    y_h = self._path(high_out, "h2h", True)(x_h)
    if y_h.shape[1:-1] != x_h.shape[1:-1]:
      raise CnnjaxError(f"OctConv sums paths at different resolutions, so its "
                        f"convolutions must keep the size ('SAME' padding, or "
                        f"(k - 1) / 2 for odd k); padding={self.padding!r} "
                        f"turns {x_h.shape[1:-1]} into {y_h.shape[1:-1]}.")
    y_l = None
    if low_out:
      y_l = self._path(low_out, "h2l", True)(
          _downsample(high, tuple(2 * s for s in strides)))
    if low is not None:
      l2h = self._path(high_out, "l2h", False)(low)
      y_h = y_h + _upsample(l2h, tuple(2 // s for s in strides),
                            y_h.shape[1:-1])
      if low_out:
        y_l = y_l + self._path(low_out, "l2l", False)(_downsample(low, strides))
    return y_h, y_l


class OctConvUnit(nn.Module):
  """OctConv -> norm of each group (`bn_h`, `bn_l`) -> act (None: none).

  The octave form of `ConvUnit`: the paper's Oct-ResNets replace every
  conv-BN(-ReLU) of a bottleneck by one. `norm` is a BatchNorm factory
  already bound to train/eval (None: no normalization); each frequency group
  has its own statistics, as in the authors' code.
  """
  features: int
  kernel_size: Any
  alpha_in: float = 0.5
  alpha_out: float = 0.5
  strides: Any = 1
  padding: Any = "SAME"
  conv: Callable[..., nn.Module] = Conv
  norm: Callable[..., nn.Module] | None = None
  act: Callable | None = nn.relu

  @nn.compact
  def __call__(self, x) -> Pair:
    y_h, y_l = OctConv(self.features, self.kernel_size, self.alpha_in,
                       self.alpha_out, self.strides, self.padding,
                       conv=self.conv, name="conv")(x)
    if self.norm is not None:
      y_h = self.norm(name="bn_h")(y_h)
      y_l = None if y_l is None else self.norm(name="bn_l")(y_l)
    if self.act is not None:
      y_h = self.act(y_h)
      y_l = None if y_l is None else self.act(y_l)
    return y_h, y_l


def octave_cost_ratio(alpha: float) -> float:
  """The paper's multiply-adds of an OctConv with alpha_in = alpha_out =
  alpha over those of the plain convolution, at stride 1."""
  alpha = check_alpha(alpha)
  return 1 - 0.75 * alpha * (2 - alpha)

