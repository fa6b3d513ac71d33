"""`rf_cnn`: a small CNN whose parts are switches, for the claims experiments.

`rf_cnn` runs on signals (B, L, C) and images (B, H, W, C) alike (its kernels
have as many axes as the input has spatial axes) and exists so that two runs
can differ in exactly one design choice (experiments/claims/):

- `stage='3x3x3'` (three 3-wide convolutions C -> C, each followed by ReLU)
  against `stage='7x7'` (one 7-wide convolution C -> C, then ReLU): the same
  receptive field of 7 and the same channels, but 3 (9 C^2 + C) against
  49 C^2 + C parameters in 2D (3 (3 C^2 + C) against 7 C^2 + C in 1D);
- `pooling='max' | 'avg' | 'none'`: how each of the two downsamplings by 2
  is done. 'none' keeps every second position, which is the same as giving
  the convolution before it stride 2; no variant adds parameters.
- `head='gap' | 'flatten'`: global average pooling (nearly blind to where a
  feature is) or a dense layer on the flattened maps (position-dependent,
  as in LeNet-5), the latter for measuring what the pooling alone buys.

The network: stem conv 3 (1 -> C), the stage, downsample, conv 3 (C -> C),
downsample, head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

STAGES = ("3x3x3", "7x7")
POOLINGS = ("max", "avg", "none")
HEADS = ("gap", "flatten")


class RFCNN(nn.Module):
  """Stem, a 3x3x3 or 7x7 stage, two downsamplings, a GAP or flatten head."""
  num_classes: int = 10
  channels: int = 16
  stage: str = "3x3x3"
  pooling: str = "max"
  head: str = "gap"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    for field, value, allowed in (("stage", self.stage, STAGES),
                                  ("pooling", self.pooling, POOLINGS),
                                  ("head", self.head, HEADS)):
      if value not in allowed:
        raise CnnjaxError(f"model rf_cnn: {field} must be one of "
                          f"{', '.join(allowed)}, got '{value}'")
    if x.ndim == 2:  # (B, L): a single-channel signal.
      x = x[..., None]
    spatial = x.ndim - 2  # 1 for signals, 2 for images
    x = x.astype(self.dtype)

    def conv(size: int, name: str):
      return nn.Conv(self.channels, (size,) * spatial, padding="SAME",
                     dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def downsample(x):
      window = (2,) * spatial
      if self.pooling == "max":
        return nn.max_pool(x, window, strides=window, padding="SAME")
      if self.pooling == "avg":
        return nn.avg_pool(x, window, strides=window, padding="SAME")
      # Every second position: a stride-2 version of the conv before.
      return x[(slice(None),) + (slice(None, None, 2),) * spatial]

    x = nn.relu(conv(3, "stem")(x))  # (B, *S, C)
    if self.stage == "3x3x3":
      for i in range(3):
        x = nn.relu(conv(3, f"stage_conv{i + 1}")(x))
    else:
      x = nn.relu(conv(7, "stage_conv")(x))
    x = downsample(x)  # (B, *S / 2, C)
    x = nn.relu(conv(3, "conv")(x))
    x = downsample(x)  # (B, *S / 4, C)
    if self.head == "gap":
      x = jnp.mean(x, axis=tuple(range(1, 1 + spatial)))  # (B, C)
    else:
      x = x.reshape((x.shape[0], -1))  # (B, prod(S / 4) * C)
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model(
    "rf_cnn", input_shape=(40, 1),
    description="Claims CNN: stem, a 3x3x3 or 7x7 stage (same receptive "
    "field), max/avg/no pooling, GAP or flatten head; 1D or 2D")(RFCNN)
