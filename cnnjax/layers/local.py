"""Locally connected layers: a convolution's connectivity without its weight
sharing (the course material's "local connectivity" step between a fully
connected layer and a convolution).

A convolution looks at a window of `kernel_size` inputs around each output
position and uses the same kernel everywhere; `LocallyConnected` looks at the
same windows but learns a separate kernel for every output position. On the
material's example (7 inputs, 3 hidden units with receptive field 3, no
biases) that is 3 x 3 = 9 weights, against 3 x 7 = 21 fully connected and 3
shared in a convolution (tests/layers/test_local.py pins all three).

The windows are extracted once (`lax.conv_general_dilated_patches`) and every
position multiplies its own patch by its own kernel in one einsum, instead of
a Python loop over positions.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from cnnjax.errors import CnnjaxError
from cnnjax.layers.conv import (check_window_fits, kernel_ndim, normalize_padding,
                                spatial_tuple)

BIAS_MODES = ("per_position", "per_channel", "none")

# Patch extraction is a convolution with one-hot filters: at full precision it
# copies the inputs exactly, also where TF32/bf16 would be the default.
_PATCH_PRECISION = lax.Precision.HIGHEST

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
                      3: ("NDHWC", "DHWIO", "NDHWC")}


class LocallyConnected(nn.Module):
  """A convolution with untied weights: one kernel per output position.

  Inputs are channels-last, (B, W, C) or (B, H, W, C) (also (B, D, H, W, C)),
  with the spatial size fixed by the first call: the kernel holds one slice
  per output position, so the layer is built for one input size (like a
  `Dense` layer, unlike a convolution).

  Parameters:
    kernel: (*out_spatial, prod(kernel_size) * C, features); the patch axis
      is ordered (kernel offset, row-major, then input channel), so that
      `kernel[pos]` is a `Conv` kernel of shape (*kernel_size, C, features)
      flattened to (prod(kernel_size) * C, features).
    bias: (*out_spatial, features) for bias='per_position', (features,) for
      'per_channel' (shared over positions, as in a convolution), absent for
      'none'.

  Attributes:
    features: output channels per position.
    kernel_size: an int (the same in each of `ndim` spatial dims) or one int
      per spatial dim; stored as a tuple.
    strides: int or per-dim ints; stored as a tuple.
    padding: 'VALID' (the default: every window inside the input), 'SAME', an
      int (both sides of every dim), per-dim ints or per-dim (low, high)
      pairs; stored as the upper-case string or (low, high) pairs.
    bias: 'per_position', 'per_channel' or 'none'.
    ndim: spatial dims for an int `kernel_size` (None: 2, or the length of a
      tuple `kernel_size`), as in `layers.Conv`.
    kernel_init: called with the shape (positions, patch, features); the
      default scales by each position's fan-in (the patch), not by the number
      of positions.
  """
  # train/kernel_init.py: the positions are batch axes of the kernel's fans.
  kernel_layout: ClassVar[str] = "per_position"

  features: int
  kernel_size: Any
  strides: Any = 1
  padding: Any = "VALID"
  bias: str = "per_position"
  ndim: int | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal(batch_axis=(0,))
  bias_init: Callable = nn.initializers.zeros_init()

  def __post_init__(self):
    kernel = self.kernel_size
    ndim = kernel_ndim(kernel, self.ndim, "LocallyConnected")
    if not isinstance(self.features, int) or self.features < 1:
      raise CnnjaxError(f"features must be a positive int, got {self.features!r}.")
    if self.bias not in BIAS_MODES:
      raise CnnjaxError(f"bias must be one of {', '.join(BIAS_MODES)}, got "
                        f"{self.bias!r}.")
    padding = normalize_padding(self.padding, ndim)
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
      raise CnnjaxError(f"LocallyConnected takes padding 'SAME', 'VALID' or "
                        f"explicit sizes, got {self.padding!r}.")
    values = dict(ndim=ndim, padding=padding,
                  kernel_size=spatial_tuple(kernel, ndim, "kernel_size"),
                  strides=spatial_tuple(self.strides, ndim, "strides"))
    for key, value in values.items():
      object.__setattr__(self, key, value)
    super().__post_init__()

  @nn.nowrap
  def counted_flops(self, in_shape, out_shape) -> int:
    """2 per multiply-add (analysis/summary.py): every output position takes
    one patch through its own kernel."""
    patch = math.prod(self.kernel_size) * in_shape[-1]
    return 2 * math.prod(out_shape[:-1]) * patch * out_shape[-1]

  @nn.compact
  def __call__(self, inputs):
    """(B, *spatial, C) -> (B, *out_spatial, features)."""
    n = self.ndim
    if inputs.ndim != n + 2:
      raise CnnjaxError(
          f"a {n}D locally connected layer needs inputs of shape (B, {n} "
          f"spatial dims..., C), got {inputs.shape}; set ndim (or a "
          f"kernel_size tuple) to the input's spatial dims.")
    spatial, channels = inputs.shape[1:-1], inputs.shape[-1]
    check_window_fits(spatial, self.kernel_size, self.padding,
                      "locally connected kernel")
    taps = math.prod(self.kernel_size)
    # (B, *out, C * taps): lax orders each patch (channel, kernel offset).
    patches = lax.conv_general_dilated_patches(
        inputs, self.kernel_size, self.strides, self.padding,
        dimension_numbers=_DIMENSION_NUMBERS[n], precision=_PATCH_PRECISION)
    out_spatial = patches.shape[1:-1]
    positions = math.prod(out_spatial)
    kernel_shape = (*out_spatial, taps * channels, self.features)
    if self.has_variable("params", "kernel"):
      built = self.get_variable("params", "kernel").shape
      if tuple(built) != kernel_shape:
        raise CnnjaxError(
            f"this locally connected layer was built for inputs giving "
            f"{built[:-2]} output positions of {built[-2]} patch values, and "
            f"cannot take an input of shape {inputs.shape} (it has one kernel "
            f"per position, so its input size is fixed).")

    def init_kernel(key, shape, dtype):
      # Initialized as (positions, patch, features), fan-in = the patch.
      return self.kernel_init(key, (positions, *shape[-2:]), dtype).reshape(shape)

    kernel = self.param("kernel", init_kernel, kernel_shape, self.param_dtype)
    if self.bias == "per_position":
      bias = self.param("bias", self.bias_init, (*out_spatial, self.features),
                        self.param_dtype)
    elif self.bias == "per_channel":
      bias = self.param("bias", self.bias_init, (self.features,),
                        self.param_dtype)
    else:
      bias = None
    patches, kernel, bias = nn.dtypes.promote_dtype(patches, kernel, bias,
                                                    dtype=self.dtype)
    batch = inputs.shape[0]
    patches = patches.reshape(batch, positions, channels, taps)
    kernel = kernel.reshape(positions, taps, channels, self.features)
    y = jnp.einsum("bpct,ptcf->bpf", patches, kernel)  # (B, P, F)
    y = y.reshape(batch, *out_spatial, self.features)
    if bias is not None:
      y = y + bias
    return y
