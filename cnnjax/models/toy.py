"""Teaching models: the X/O toy ConvNet and MLP baselines for images.

The X/O network is the lecture material's worked example (after Brandon
Rohrer's "How convolutional neural networks work"): a 9x9 picture of an X or
an O, +1 on the strokes and -1 elsewhere, filtered by three 3x3 features
(the two diagonals and the centre of the X), rectified, max-pooled, the
conv-ReLU-pool stage repeated ("deep stacking"), and a fully connected layer
voting for X or O.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cnnjax import layers
from cnnjax.models.registry import register_model

XO_CLASSES = ("X", "O")


def xo_images() -> tuple[np.ndarray, np.ndarray]:
  """The material's 9x9 X and O as float32 (2, 9, 9, 1) images and labels.

  +1 on the strokes, -1 on the background. The X is both diagonals of the
  inner 7x7 square; the O a ring inside it. Labels: 0 = X, 1 = O.
  """
  x = -np.ones((9, 9), np.float32)
  for i in range(1, 8):
    x[i, i] = x[i, 8 - i] = 1.0
  o = -np.ones((9, 9), np.float32)
  for r, c in [(1, 3), (1, 4), (1, 5), (2, 2), (2, 6), (3, 1), (3, 7),
               (4, 1), (4, 7), (5, 1), (5, 7), (6, 2), (6, 6), (7, 3),
               (7, 4), (7, 5)]:
    o[r, c] = 1.0
  images = np.stack([x, o])[..., None]  # (2, 9, 9, 1)
  return images, np.array([0, 1], np.int32)


def xo_features() -> np.ndarray:
  """The material's three 3x3 features as a (3, 3, 1, 3) conv kernel.

  Diagonal, X-centre and anti-diagonal (+1/-1), divided by 9 so that the
  filter output is the average agreement of patch and feature: 1 where they
  match exactly, -1 where they are opposite. Use with a zero bias.
  """
  diagonal = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)
  centre = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 1]], np.float32)
  anti = diagonal[:, ::-1]
  return np.stack([diagonal, centre, anti], axis=-1)[:, :, None, :] / 9.0


class XOConvNet(nn.Module):
  """The X/O toy network: two conv-ReLU-pool stages and a voting layer.

  9x9x1 -conv1 3x3 VALID-> 7x7x3 -pool 2x2/2 SAME-> 4x4x3 -conv2 3x3 SAME->
  4x4x3 -pool-> 2x2x3 -> flatten (12) -> head (2 votes). 140 parameters:
  30 + 84 + 26.
  """
  num_classes: int = 2
  features: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    conv = functools.partial(layers.Conv, self.features, kernel_size=3,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    act = nn.relu
    x = x.astype(self.dtype)
    # The material slides each feature over every full 3x3 patch: 9 -> 7.
    x = act(conv(padding="VALID", name="conv1")(x))  # (B, 7, 7, 3)
    # 'SAME' pooling keeps the edge column: 7 -> 4 (ceil(7 / 2)).
    x = layers.MaxPool(2, 2, padding="SAME", name="pool1")(x)  # (B, 4, 4, 3)
    x = act(conv(padding="SAME", name="conv2")(x))  # (B, 4, 4, 3)
    x = layers.MaxPool(2, 2, padding="SAME", name="pool2")(x)  # (B, 2, 2, 3)
    x = x.reshape((x.shape[0], -1))  # (B, 12): the values that vote.
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


class ImageMLP(nn.Module):
  """An MLP baseline for images: flatten, ReLU hidden layers with dropout.

  The defaults are the classic Keras MNIST MLP (512-512, dropout 0.2):
  669,706 parameters on 28x28x1, 1,841,162 on 32x32x3, for 10 classes.
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (512, 512)
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    x = x.astype(self.dtype).reshape((x.shape[0], -1))  # (B, H * W * C)
    for i, width in enumerate(self.hidden_sizes, start=1):
      x = nn.relu(dense(width, name=f"dense{i}")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train,
                     name=f"dropout{i}")(x)
    # num_classes=0: the last hidden layer's features.
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


register_model(
    "xo_convnet", input_shape=(9, 9, 1),
    description="The material's X/O toy ConvNet: 3 filters, 2 stages, "
    "140 params")(XOConvNet)
register_model(
    "mlp_cifar", input_shape=(32, 32, 3),
    description="MLP baseline for CIFAR: 512-512 ReLU, dropout 0.2")(ImageMLP)
register_model(
    "mlp_mnist", input_shape=(28, 28, 1),
    description="MLP baseline for MNIST: 512-512 ReLU, dropout 0.2")(ImageMLP)
