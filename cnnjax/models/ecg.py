"""The 34-layer ECG rhythm network of Hannun et al. 2019 (Nature Medicine).

"Cardiologist-level arrhythmia detection and classification in ambulatory
electrocardiograms using a deep neural network" (Methods, Extended Data
Fig. 1), as built by the authors' code (github.com/awni/ecg,
`ecg/network.py` with `examples/irhythm/config.json`): 33 convolutions and
a linear layer on a single-lead signal (B, L, 1).

  stem      conv 16 (32 filters), BN, ReLU               (B, L, 32)
  16 residual blocks, two convolutions of length 16 each; block i has
            32 * 2**(i // 4) filters (32, 64, 128, 256: the paper's
            "32 x 2^k, k incremented every fourth block") and every
            alternate block (i odd) subsamples by 2: stride 2 in its first
            conv, max pooling (2) in its shortcut      (B, L / 256, 256)
  BN, ReLU, then `head`, a Dense applied at every position.

Blocks are pre-activation: BN-ReLU-conv, BN-ReLU-dropout(0.2)-conv, + the
shortcut. The first block is special: its first convolution reads the
stem's BN-ReLU output directly, and its shortcut carries that output.
Where the channels double (blocks 4, 8, 12) the shortcut appends zero
channels (as the authors' code; no 1x1 convolution). Convolutions keep
their biases (Keras's default there), and 'SAME' padding splits a kernel of
16 as 7 before and 8 after, as Keras does.

The network outputs one prediction every 2**8 = 256 samples (1.28 s at the
Zio monitor's 200 Hz) over 12 classes: ten arrhythmias (atrial fibrillation
and flutter, AV block, bigeminy, ectopic atrial rhythm, idioventricular
rhythm, junctional rhythm, supraventricular tachycardia, trigeminy,
ventricular tachycardia, Wenckebach), sinus rhythm and noise.
`pool='none'` returns those per-step logits, (B, L / 256, classes);
`pool='avg'` (the default, so the model fits the classification API)
averages the features over time first, (B, classes), which equals the mean
of the per-step logits since `head` is linear. The registered input is
(2560, 1): 12.8 s at 200 Hz, ten outputs (the paper's records are 30 s).

10,468,204 parameters for 12 classes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.errors import CnnjaxError
from cnnjax.models.registry import register_model

ModuleDef = Any

POOLS = ("avg", "none")


class ECGBlock(nn.Module):
  """[BN-ReLU-]conv(stride), BN-ReLU-dropout-conv, + maxpool/zero-pad shortcut.

  `first` (block 0) skips the first BN-ReLU: the stem ends with one.
  `zero_init` zeroes the last convolution's kernel (the BN before it feeds
  a ReLU, which has no gradient at an exact zero).
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  dropout: ModuleDef
  first: bool = False
  zero_init: bool = False

  @nn.compact
  def __call__(self, x):
    s = x
    if self.strides > 1:
      s = layers.MaxPool(self.strides, self.strides,
                         name="shortcut_pool")(s)  # (B, L / 2, C)
    if s.shape[-1] != self.features:
      s = layers.ZeroPadShortcut(self.features, name="shortcut_pad")(s)
    y = x if self.first else self.act(self.norm(name="bn1")(x))
    y = self.conv(self.features, strides=self.strides, name="conv1")(y)
    y = self.dropout(name="dropout")(self.act(self.norm(name="bn2")(y)))
    init = {"kernel_init": nn.initializers.zeros} if self.zero_init else {}
    y = self.conv(self.features, name="conv2", **init)(y)
    return y + s


class ECGResNet(nn.Module):
  """Hannun et al. 2019's residual network on (B, L, 1) signals.

  Attributes:
    num_blocks: residual blocks (16); blocks with an odd index subsample
      by 2, so L must be a multiple of 2**(num_blocks // 2).
    base_width: filters of the stem and the first four blocks (32);
      doubled every `blocks_per_stage` blocks.
    kernel_size: the length of every convolution (16).
    dropout_rate: between the two convolutions of each block (0.2).
    pool: 'avg' (B, classes) or 'none' (B, L / 256, classes).
    zero_init_residual: zero the last convolution of each block.
  """
  num_classes: int = 12  # 0: no classifier, return the (pooled) features.
  num_blocks: int = 16
  blocks_per_stage: int = 4
  base_width: int = 32
  kernel_size: int = 16
  dropout_rate: float = 0.2
  pool: str = "avg"
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.pool not in POOLS:
      raise CnnjaxError(f"pool must be 'avg' or 'none', got {self.pool!r}.")
    if x.ndim == 2:  # (B, L): a single-lead signal.
      x = x[..., None]
    if x.ndim != 3:
      raise CnnjaxError(f"the ECG network takes signals of shape (B, L, C), "
                        f"got {x.shape}.")
    step = 2 ** (self.num_blocks // 2)
    if x.shape[1] % step:
      raise CnnjaxError(f"the ECG network subsamples by {step}, so the signal "
                        f"length must be a multiple of {step}, got "
                        f"{x.shape[1]}.")
    conv = functools.partial(layers.Conv, kernel_size=self.kernel_size,
                             ndim=1, padding="SAME", dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(layers.TorchLikeBatchNorm,
                             use_running_average=not train, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    dropout = functools.partial(nn.Dropout, self.dropout_rate,
                                deterministic=not train)
    act = nn.relu
    x = x.astype(self.dtype)
    x = act(norm(name="stem_bn")(conv(self.base_width, name="stem_conv")(x)))
    for i in range(self.num_blocks):
      stage, b = divmod(i, self.blocks_per_stage)
      x = ECGBlock(self.base_width * 2 ** stage, 2 if i % 2 else 1,
                   conv=conv, norm=norm, act=act, dropout=dropout,
                   first=i == 0, zero_init=self.zero_init_residual,
                   name=f"stage{stage + 1}_block{b}")(x)
    x = act(norm(name="final_bn")(x))  # (B, L / 256, 256)
    if self.pool == "avg":
      x = layers.GlobalAvgPool(name="pool")(x)  # (B, 256)
    # A Dense at every position (Keras's TimeDistributed(Dense)).
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model(
    "ecg_resnet34", input_shape=(2560, 1),
    description="34-layer ECG rhythm ResNet (Hannun et al. 2019), 12 classes, "
    "one prediction per 256 samples")(ECGResNet)
