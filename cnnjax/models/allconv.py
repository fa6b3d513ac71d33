"""All-CNN-C (Springenberg et al. 2015, "Striving for Simplicity: The All
Convolutional Net"), for CIFAR-10.

Model C of Table 1 with each 3x3/2 max pooling replaced by a 3x3
convolution at stride 2 (Table 2, All-CNN-C); every layer is followed by a
ReLU. Shapes for a 32x32x3 image:

  conv1  3x3 conv 96                     (B, 32, 32, 96)
  conv2  3x3 conv 96                     (B, 32, 32, 96)
  conv3  3x3 conv 96, stride 2           (B, 16, 16, 96)
  conv4  3x3 conv 192                    (B, 16, 16, 192)
  conv5  3x3 conv 192                    (B, 16, 16, 192)
  conv6  3x3 conv 192, stride 2          (B, 8, 8, 192)
  conv7  3x3 conv 192, no padding        (B, 6, 6, 192)
  conv8  1x1 conv 192                    (B, 6, 6, 192)
  head   1x1 conv num_classes            (B, 6, 6, num_classes)
  pool   global average over 6x6         (B, num_classes)

and the softmax belongs to the loss. Dropout (section 3.2): 20% on the
input, 50% after each layer that replaces pooling (conv3, conv6). Other
convolutions pad one pixel on each side (a stride-2 layer then maps 32 to
16 and 16 to 8, so that the unpadded conv7 leaves the paper's 6x6 maps).
Table 1 puts a ReLU on the class maps too (`head_relu=True`, the default);
`head_relu=False` gives the plain linear logits many reimplementations use.
`num_classes=0` returns the pooled 192 conv8 features.

1,369,738 parameters for 10 classes (Table 3: about 1.4M).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.models.registry import register_model


class AllConvNet(nn.Module):
  """All-CNN-C: convolutions only, strided ones instead of pooling."""
  num_classes: int = 10  # 0: no classifier, return the pooled features.
  widths: tuple[int, int] = (96, 192)
  input_dropout_rate: float = 0.2
  dropout_rate: float = 0.5
  head_relu: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    conv = functools.partial(layers.Conv, kernel_size=3, padding=1,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    dropout = functools.partial(nn.Dropout, deterministic=not train)
    act = nn.relu
    narrow, wide = self.widths
    x = x.astype(self.dtype)
    x = dropout(self.input_dropout_rate, name="input_dropout")(x)
    x = act(conv(narrow, name="conv1")(x))  # (B, 32, 32, 96)
    x = act(conv(narrow, name="conv2")(x))
    x = act(conv(narrow, strides=2, name="conv3")(x))  # (B, 16, 16, 96)
    x = dropout(self.dropout_rate, name="conv3_dropout")(x)
    x = act(conv(wide, name="conv4")(x))  # (B, 16, 16, 192)
    x = act(conv(wide, name="conv5")(x))
    x = act(conv(wide, strides=2, name="conv6")(x))  # (B, 8, 8, 192)
    x = dropout(self.dropout_rate, name="conv6_dropout")(x)
    x = act(conv(wide, padding="VALID", name="conv7")(x))  # (B, 6, 6, 192)
    x = act(conv(wide, kernel_size=1, padding=0, name="conv8")(x))
    if not self.num_classes:
      return layers.GlobalAvgPool(name="pool")(x)  # (B, 192)
    x = conv(self.num_classes, kernel_size=1, padding=0, name="head")(x)
    if self.head_relu:
      x = act(x)  # (B, 6, 6, num_classes)
    return layers.GlobalAvgPool(name="pool")(x)  # (B, num_classes)


register_model("allconv_c", input_shape=(32, 32, 3),
               description="All-CNN-C (Springenberg et al. 2015), CIFAR-10")(
                   AllConvNet)
