"""`sharing_*`: one network, three connectivities, for the weight-sharing claims.

The course material builds a CNN from a fully connected layer in two steps:
local connectivity (each unit sees a window of the layer below) and weight
sharing (every window uses the same weights). `SharingNet` is a stack of
layers with fixed output shapes whose `connectivity` picks the step:

- 'conv': convolutions (local windows, shared weights, a bias per channel);
- 'local': `layers.LocallyConnected` on the same windows with a kernel and a
  bias per output position (local, not shared);
- 'dense': each layer a fully connected layer from the whole layer below to
  the same number of outputs, reshaped to the same (*positions, channels).

The depth, the widths, the output shapes of every layer and the classifier (a
dense layer on the flattened last maps) are the same in all three, so two
runs differ only in connectivity. Signals (B, L, C) get 1D windows, images
(B, H, W, C) 2D ones.

Entries:
- `sharing_mnist1d` (40 x 1 signals): the MNIST-1D reference CNN's geometry
  (three layers of 25 channels, kernels 5/3/3, stride 2, padding 1: 19, 10
  and 5 positions); 'conv' is `mnist1d_cnn` itself, 5,210 parameters;
  'local' 32,610; 'dense' 171,110.
- `sharing_digits` (16 x 16 x 1 digits): three layers of 16 channels, 3x3
  windows, strides 2/2/1, padding 1 (8x8, 4x4, 4x4 positions; a receptive
  field of 15 pixels); 'conv' 7,370 parameters, 'local' 87,050, 'dense'
  593,930.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

CONNECTIVITIES = ("dense", "local", "conv")


class SharingNet(nn.Module):
  """Strided layers with ReLU, dense, locally connected or convolutional,
  then a linear classifier on the flattened maps."""
  num_classes: int = 10
  connectivity: str = "conv"
  features: Sequence[int] = (25, 25, 25)
  kernel_sizes: Sequence[int] = (5, 3, 3)
  strides: Sequence[int] = (2, 2, 2)
  padding: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    if self.connectivity not in CONNECTIVITIES:
      raise CnnjaxError(f"model sharing: connectivity must be one of "
                        f"{', '.join(CONNECTIVITIES)}, got '{self.connectivity}'")
    if not len(self.features) == len(self.kernel_sizes) == len(self.strides):
      raise CnnjaxError(
          f"model sharing: features, kernel_sizes and strides need one entry "
          f"per layer, got {len(self.features)}, {len(self.kernel_sizes)} and "
          f"{len(self.strides)}")
    if x.ndim == 2:  # (B, L): a single-channel signal.
      x = x[..., None]
    spatial = x.ndim - 2  # 1 for signals, 2 for images
    x = x.astype(self.dtype)
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i, (f, k, s) in enumerate(zip(self.features, self.kernel_sizes,
                                      self.strides)):
      window = dict(kernel_size=(k,) * spatial, strides=(s,) * spatial,
                    padding=((self.padding, self.padding),) * spatial)
      name = f"layer{i + 1}"
      if self.connectivity == "conv":
        x = layers.Conv(f, **window, **common, name=name)(x)
      elif self.connectivity == "local":
        x = layers.LocallyConnected(f, **window, bias="per_position",
                                    **common, name=name)(x)
      else:
        out_spatial = _out_spatial(x.shape[1:-1], k, s, self.padding)
        y = nn.Dense(math.prod(out_spatial) * f, **common, name=name)(
            x.reshape((x.shape[0], -1)))
        x = y.reshape((x.shape[0], *out_spatial, f))
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    return layers.classify(x, self.num_classes, **common)


def _out_spatial(spatial: Sequence[int], kernel: int, stride: int,
                 padding: int) -> tuple[int, ...]:
  """The output positions of a convolution's windows, per spatial dim."""
  out = tuple((n + 2 * padding - kernel) // stride + 1 for n in spatial)
  if min(out) < 1:
    raise CnnjaxError(f"model sharing: a window of {kernel} does not fit in "
                      f"an input of spatial shape {tuple(spatial)} with "
                      f"padding {padding}")
  return out


register_model(
    "sharing_mnist1d", input_shape=(40, 1),
    description="Weight-sharing claims net on MNIST-1D: the reference CNN's "
    "geometry, connectivity dense, local or conv")(SharingNet)
register_model(
    "sharing_digits", input_shape=(16, 16, 1),
    description="Weight-sharing claims net on 16x16 digits: three 3x3 layers "
    "of 16 channels, connectivity dense, local or conv")(
        functools.partial(SharingNet, features=(16, 16, 16),
                          kernel_sizes=(3, 3, 3), strides=(2, 2, 1)))
