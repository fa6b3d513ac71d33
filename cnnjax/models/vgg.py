"""VGG (Simonyan & Zisserman, 2015): configurations A, A-LRN, B, C, D and E.

Each configuration is a list of stages; a stage is a list of convolution
kernel sizes (all stride 1, 'same' padding, ReLU) followed by 2x2/2 max
pooling. Table 1 of the paper:

  A (VGG-11)  64 | 128 | 256 256 | 512 512 | 512 512
  B (VGG-13)  two convolutions in each of the first two stages
  C (VGG-16)  B plus a third, 1x1, convolution in stages 3-5
  D (VGG-16)  B plus a third 3x3 convolution in stages 3-5
  E (VGG-19)  four 3x3 convolutions in stages 3-5

then FC-4096, FC-4096 (ReLU, dropout 0.5) and FC-classes. A-LRN adds Local
Response Normalization after the first convolution. `batch_norm=True` puts
BatchNorm after every convolution (the torchvision `_bn` variants).

The CIFAR variants (`vgg16_bn_cifar`, ...: the common 32x32 adaptation, as
in kuangliu/pytorch-cifar) keep the convolutions with BatchNorm and drop
FC6/FC7 (`hidden=0`): the five poolings leave a 1x1x512 map, read by one
512 -> classes layer.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax import layers
from cnnjax.models.backbone import FeatureStage
from cnnjax.models.registry import register_model

_WIDTHS = (64, 128, 256, 512, 512)

# Kernel sizes of the convolutions in each of the five stages.
VGG_STAGES = {
    "A": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "B": ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)),
    "C": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    "D": ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    "E": ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)),
}


class VGG(nn.Module):
  """A VGG network; the classifier takes the flattened 7x7x512 maps of a
  224x224 image, and other sizes are average-pooled to 7x7 first."""
  stages: Sequence[Sequence[int]] = VGG_STAGES["D"]
  widths: Sequence[int] = _WIDTHS
  num_classes: int = 1000  # 0: no classifier, return the FC7 features.
  lrn: bool = False  # A-LRN: LRN (AlexNet's constants) after the first conv.
  batch_norm: bool = False
  # Width of FC6 and FC7; 0 drops them and the 7x7 pooling, so the head reads
  # the flattened final maps (the CIFAR variants).
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def feature_stages(self) -> tuple[FeatureStage, ...]:
    """The maps of a features_only backbone (models/backbone.py), numbered
    as timm's: every stage's last ReLU (before its pooling; A-LRN's first
    stage: the LRN), then the last pooling's output."""
    stages = []
    for s, (kernels, width) in enumerate(zip(self.stages, self.widths)):
      if self.lrn and s == 0 and len(kernels) == 1:
        stages.append(FeatureStage("lrn", width, 1))
      else:
        bn = "_bn" if self.batch_norm else ""
        stages.append(FeatureStage(f"conv{s + 1}_{len(kernels)}{bn}", width,
                                   2**s, "relu"))
    return (*stages, FeatureStage(f"pool{len(stages)}", stages[-1].num_chs,
                                  2**len(stages)))

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    # Convolutions keep their biases under BatchNorm too, as torchvision's
    # vgg*_bn do, so that parameter counts match theirs.
    conv = functools.partial(layers.Conv, padding="SAME", dtype=self.dtype,
                             param_dtype=self.param_dtype)
    norm = functools.partial(layers.TorchLikeBatchNorm,
                             use_running_average=not train, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    for s, (kernels, width) in enumerate(zip(self.stages, self.widths)):
      for c, k in enumerate(kernels):
        name = f"conv{s + 1}_{c + 1}"
        x = conv(width, kernel_size=k, name=name)(x)
        if self.batch_norm:
          x = norm(name=f"{name}_bn")(x)
        x = nn.relu(x)
        if self.lrn and s == 0 and c == 0:
          x = layers.LocalResponseNorm(name="lrn")(x)
      x = layers.MaxPool(2, 2, name=f"pool{s + 1}")(x)
    if self.hidden:
      # As torchvision: other input sizes are pooled (or repeated) to 7x7, so
      # the classifier keeps its 7*7*512 inputs; at 224x224 this does nothing.
      x = layers.adaptive_avg_pool(x, 7).reshape(x.shape[0], -1)
      for i in (6, 7):
        x = nn.relu(dense(self.hidden, name=f"fc{i}")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    else:  # CIFAR: (B, 1, 1, 512) at 32x32 -> (B, 512) -> head.
      x = x.reshape(x.shape[0], -1)
    # The paper's FC8; num_classes=0: the FC7 (or flattened) features.
    return layers.classify(x, self.num_classes, dtype=self.dtype,
                           param_dtype=self.param_dtype)


def _register(name, config, description, input_shape=(224, 224, 3), **fields):
  register_model(name, input_shape=input_shape, description=description)(
      functools.partial(VGG, stages=VGG_STAGES[config], **fields))


for _bn in (False, True):
  _suffix = "_bn" if _bn else ""
  _with = " with BatchNorm" if _bn else ""
  _register(f"vgg11{_suffix}", "A", f"VGG-11 (config A){_with}",
            batch_norm=_bn)
  _register(f"vgg11_lrn{_suffix}", "A",
            f"VGG-11 with LRN (config A-LRN){_with}", lrn=True, batch_norm=_bn)
  _register(f"vgg13{_suffix}", "B", f"VGG-13 (config B){_with}",
            batch_norm=_bn)
  _register(f"vgg16_1x1{_suffix}", "C",
            f"VGG-16 with 1x1 convolutions (config C){_with}", batch_norm=_bn)
  _register(f"vgg16{_suffix}", "D", f"VGG-16 (config D){_with}",
            batch_norm=_bn)
  _register(f"vgg19{_suffix}", "E", f"VGG-19 (config E){_with}",
            batch_norm=_bn)

for _depth, _config in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
  _register(f"vgg{_depth}_bn_cifar", _config,
            f"VGG-{_depth} with BatchNorm for CIFAR: no FC6/FC7, one 512 -> classes layer",
            input_shape=(32, 32, 3), batch_norm=True, hidden=0, num_classes=10)
