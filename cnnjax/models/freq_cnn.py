"""Convolution and max pooling along frequency bands (Abdel-Hamid, Mohamed,
Jiang, Deng, Penn and Yu 2014, "Convolutional Neural Networks for Speech
Recognition"), for log-mel inputs stored as (bands, frames).

The filters span `kernel_size` neighbouring bands and every frame (the
frames are the input's channels), so they slide along frequency only; max
pooling takes the largest of `pool_size` neighbouring band positions, which
makes the output tolerate small shifts in frequency (a speaker's pitch, a
formant's position). Then two fully connected layers.

`weight_sharing`:
  'full'     one set of filters for every band position (an ordinary
             convolution along frequency);
  'limited'  the paper's limited weight sharing: the band positions are cut
             into sections of `pool_size`, each pooled into one output, and
             each section has filters of its own, shared only within it (the
             paper's argument: spectra differ between low and high bands).

For the 40-band, 51-frame inputs of the tones task (data/tones.py), with 64
filters of 8 bands and pools of 3: 'full' has 26,176 convolution weights,
'limited' 11 sections of them, 287,936.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

SHARING = ("full", "limited")


class LimitedSharingConv(nn.Module):
  """Per-section filters along axis 1 of (B, L, C), then max over each
  section's positions: (B, L, C) -> (B, sections, features)."""
  features: int
  kernel_size: int
  pool_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    length, channels = x.shape[1], x.shape[2]
    positions = length - self.kernel_size + 1
    sections = positions // self.pool_size
    if sections < 1:
      raise CnnjaxError(f"{length} bands leave no pooling section of {self.pool_size} "
                        f"positions for filters of {self.kernel_size} bands")
    # (B, positions, kernel * C): each position's window of bands.
    windows = jnp.concatenate([x[:, i:i + positions] for i in range(self.kernel_size)],
                              axis=-1)
    windows = windows[:, :sections * self.pool_size].reshape(
        x.shape[0], sections, self.pool_size, self.kernel_size * channels)
    kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                        (sections, self.kernel_size * channels, self.features))
    bias = self.param("bias", nn.initializers.zeros, (sections, self.features))
    y = jnp.einsum("bspk,skf->bspf", windows.astype(self.dtype), kernel.astype(self.dtype))
    y = nn.relu(y + bias[:, None, :].astype(self.dtype))
    return jnp.max(y, axis=2)


class FrequencyCNN(nn.Module):
  """Filters and pooling along frequency (module docstring)."""
  num_classes: int = 6
  weight_sharing: str = "full"
  features: int = 64
  kernel_size: int = 8
  pool_size: int = 3
  hidden: int = 256
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.weight_sharing not in SHARING:
      raise CnnjaxError(f"weight_sharing must be one of {', '.join(SHARING)}, got "
                        f"{self.weight_sharing!r}")
    if x.ndim != 3:
      raise CnnjaxError(f"FrequencyCNN takes (batch, bands, frames) inputs, got {x.shape}")
    x = x.astype(self.dtype)
    if self.weight_sharing == "full":
      y = nn.Conv(self.features, (self.kernel_size,), padding="VALID", dtype=self.dtype,
                  name="conv")(x)
      sections = y.shape[1] // self.pool_size
      y = nn.relu(y[:, :sections * self.pool_size])
      y = nn.max_pool(y, (self.pool_size,), (self.pool_size,))
    else:
      y = LimitedSharingConv(self.features, self.kernel_size, self.pool_size,
                             dtype=self.dtype, name="conv")(x)
    y = y.reshape(y.shape[0], -1)
    y = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc")(y))
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    if not self.num_classes:
      return y
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(y)


register_model("freq_cnn", input_shape=(40, 51),
               description="convolution and pooling along frequency bands, full or "
                           "limited weight sharing (Abdel-Hamid et al. 2014)")(FrequencyCNN)
