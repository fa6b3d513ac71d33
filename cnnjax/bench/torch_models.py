"""PyTorch twins of cnnjax models, for side-by-side timing and parity tests.

Only `cnnjax benchmark --compare torch` and the tests import this module;
torch is in the `bench` extra and never needed to train. Each network has
the same layers, shapes and parameter count as its cnnjax model (the tests
check the counts, and that copied weights give the same outputs):

  resnet20 ...  CifarResNet (He et al. 2015, option-A shortcuts)
  resnet18/34/50/101/152  the torchvision v1.5 ResNets (cnnjax.models.resnet)
  lenet5, lenet5_relu     LeNet5 (tanh/avg and relu/max)

Layouts: torch is channels-first; `to_torch_input` moves the channels of a
cnnjax (B, H, W, C) batch, and `load_flax_variables` copies a cnnjax model's
variables into the twin.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnjax.errors import CnnjaxError

BN_EPS = 1e-5  # layers.TorchLikeBatchNorm's epsilon; torch's default.


class _ZeroPadShortcut(nn.Module):
  """Option A: keep every `stride`-th pixel, append zero channels."""

  def __init__(self, out_channels: int, stride: int):
    super().__init__()
    self.out_channels, self.stride = out_channels, stride

  def forward(self, x):
    x = x[:, :, ::self.stride, ::self.stride]
    extra = self.out_channels - x.shape[1]
    return nn.functional.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 images, as cnnjax.models.resnet.CifarResNet."""

  def __init__(self, depth: int = 20, num_classes: int = 10,
               widths=(16, 32, 64), in_channels: int = 3):
    super().__init__()
    n = (depth - 2) // 6
    self.stem_conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
    self.stem_bn = nn.BatchNorm2d(widths[0], eps=BN_EPS)
    blocks, cin = [], widths[0]
    for s, width in enumerate(widths):
      for b in range(n):
        blocks.append(BasicBlock(cin, width, 2 if s > 0 and b == 0 else 1,
                                 zero_pad=True))
        cin = width
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = torch.relu(self.stem_bn(self.stem_conv(x)))
    x = self.blocks(x)
    return self.head(x.mean((2, 3)))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions; where the shape changes, a projection shortcut
  (option B, the ImageNet nets) or, with `zero_pad`, option A (CIFAR)."""
  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int, zero_pad: bool = False):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
    self.projection = _projection(cin, planes, stride, zero_pad)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (self.projection(x) if self.projection else x))


class Bottleneck(nn.Module):
  """torchvision v1.5: the stride on the 3x3 convolution."""
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    cout = planes * 4
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
    self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
    self.projection = _projection(cin, cout, stride)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (self.projection(x) if self.projection else x))


def _projection(cin: int, cout: int, stride: int, zero_pad: bool = False):
  if cin == cout and stride == 1:
    return None
  if zero_pad:
    return _ZeroPadShortcut(cout, stride)
  return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                       nn.BatchNorm2d(cout, eps=BN_EPS))


IMAGENET_STAGES = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                   50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
                   152: (Bottleneck, (3, 8, 36, 3))}


class ResNet(nn.Module):
  """The ImageNet ResNets (7x7/2 stem, 3x3/2 max pool, four stages)."""

  def __init__(self, depth: int = 50, num_classes: int = 1000,
               in_channels: int = 3):
    super().__init__()
    block, stages = IMAGENET_STAGES[depth]
    self.stem_conv = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    self.stem_bn = nn.BatchNorm2d(64, eps=BN_EPS)
    self.stem_pool = nn.MaxPool2d(3, 2, 1)
    blocks, cin = [], 64
    for s, n in enumerate(stages):
      for b in range(n):
        blocks.append(block(cin, 64 * 2**s, 2 if s > 0 and b == 0 else 1))
        cin = 64 * 2**s * block.expansion
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.stem_pool(torch.relu(self.stem_bn(self.stem_conv(x))))
    x = self.blocks(x)
    return self.head(x.mean((2, 3)))


class LeNet5(nn.Module):
  """C1 6@5x5, S2, C3 16@5x5, S4, C5 120, F6 84, output (cnnjax.models.lenet)."""

  def __init__(self, num_classes: int = 10, in_channels: int = 1,
               activation: str = "tanh", pooling: str = "avg"):
    super().__init__()
    self.act = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    self.pool = {"avg": nn.functional.avg_pool2d,
                 "max": nn.functional.max_pool2d}[pooling]
    self.c1 = nn.Conv2d(in_channels, 6, 5)
    self.c3 = nn.Conv2d(6, 16, 5)
    self.c5 = nn.Linear(16 * 5 * 5, 120)
    self.f6 = nn.Linear(120, 84)
    self.head = nn.Linear(84, num_classes)

  def forward(self, x):
    x = self.pool(self.act(self.c1(x)), 2)
    x = self.pool(self.act(self.c3(x)), 2)
    # cnnjax flattens (H, W, C); match it so that copied weights agree.
    x = x.permute(0, 2, 3, 1).flatten(1)
    x = self.act(self.c5(x))
    x = self.act(self.f6(x))
    return self.head(x)


def _cifar(depth):
  return lambda num_classes, in_channels: CifarResNet(depth, num_classes,
                                                      in_channels=in_channels)


def _imagenet(depth):
  return lambda num_classes, in_channels: ResNet(depth, num_classes, in_channels)


TORCH_MODELS = {
    **{f"resnet{d}": _imagenet(d) for d in IMAGENET_STAGES},
    **{f"resnet{6 * n + 2}": _cifar(6 * n + 2) for n in (3, 5, 7, 9, 18)},
    "lenet5": lambda num_classes, in_channels: LeNet5(num_classes, in_channels),
    "lenet5_relu": lambda num_classes, in_channels: LeNet5(
        num_classes, in_channels, "relu", "max"),
}


def create_torch_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
  """The PyTorch twin of cnnjax model `name`."""
  if name not in TORCH_MODELS:
    raise CnnjaxError(f"no PyTorch twin of model '{name}' to compare with; "
                      f"--compare torch knows {', '.join(sorted(TORCH_MODELS))}")
  return TORCH_MODELS[name](num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def to_torch_input(x: np.ndarray) -> torch.Tensor:
  """(B, H, W, C) -> a contiguous (B, C, H, W) float tensor."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))


# -- copying cnnjax variables into the twin -------------------------------------

def _flax_modules(variables) -> dict[str, dict[str, np.ndarray]]:
  """{module path: {'kernel'|'bias'|'scale'|'mean'|'var': array}}."""
  from cnnjax.train.transfer import flat_paths
  modules: dict[str, dict[str, np.ndarray]] = {}
  for collection in ("params", "batch_stats"):
    for path, value in flat_paths(variables.get(collection, {})).items():
      module, _, name = path.rpartition("/")
      modules.setdefault(module, {})[name] = np.array(value, np.float32)
  return modules


def _block_index(name: str, counts: list[int]) -> int:
  stage, block = map(int, re.match(r"stage(\d+)_block(\d+)", name).groups())
  return sum(counts[:stage - 1]) + block


def _torch_path(flax_path: str, counts: list[int]) -> str:
  """'stage2_block1/conv1' -> 'blocks.4.conv1' (and shortcut names)."""
  parts = flax_path.split("/")
  if parts[0].startswith("stage"):
    parts[0] = f"blocks.{_block_index(parts[0], counts)}"
  path = ".".join(parts)
  return (path.replace("shortcut_conv", "projection.0")
          .replace("shortcut_bn", "projection.1"))


def load_flax_variables(torch_model: nn.Module, variables, *,
                        stage_sizes: list[int] | None = None) -> None:
  """Copies a cnnjax model's params and BN statistics into `torch_model`.

  `stage_sizes`: blocks per stage (to number torch's flat block list).
  """
  counts = list(stage_sizes or [])
  named = dict(torch_model.named_modules())
  for flax_path, values in _flax_modules(variables).items():
    module = named.get(_torch_path(flax_path, counts))
    if module is None:
      raise KeyError(f"no torch module for cnnjax layer {flax_path}")
    with torch.no_grad():
      if "kernel" in values:
        k = values["kernel"]
        w = (np.transpose(k, (3, 2, 0, 1)) if k.ndim == 4 else k.T)
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
      if "bias" in values:
        module.bias.copy_(torch.from_numpy(values["bias"]))
      if "scale" in values:
        module.weight.copy_(torch.from_numpy(values["scale"]))
      if "mean" in values:
        module.running_mean.copy_(torch.from_numpy(values["mean"]))
        module.running_var.copy_(torch.from_numpy(values["var"]))


def param_count(variables: Any) -> int:
  """Parameters of cnnjax variables (arrays or jax.eval_shape structs)."""
  import jax
  return int(sum(np.prod(leaf.shape, dtype=np.int64)
                 for leaf in jax.tree.leaves(variables["params"])))
