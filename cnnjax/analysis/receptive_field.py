"""Receptive field, jump and centre of units through a chain of layers.

For a layer with kernel F, stride S, dilation D and low padding P applied to
units with receptive field r, jump j (distance in input pixels between
neighbouring units) and first centre c:

    r' = r + (D * (F - 1)) * j
    j' = j * S
    c' = c + ((D * (F - 1)) / 2 - P) * j

where c is an input pixel index: unit i of a layer sees the input pixels
c + i * j - (r - 1) / 2 through c + i * j + (r - 1) / 2.

(Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019.) Pointwise layers leave all three unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
  """The spatial footprint of one layer along one dimension."""
  kernel_size: int = 1
  stride: int = 1
  dilation: int = 1
  padding: int = 0  # Low-side padding; the high side does not move centres.


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
  size: float  # Input pixels one unit sees (can exceed the image).
  jump: float  # Input pixels between two neighbouring units.
  start: float = 0.0  # Centre of the first unit, as an input pixel index.

  def after(self, layer: LayerGeometry) -> "ReceptiveField":
    span = layer.dilation * (layer.kernel_size - 1)
    return ReceptiveField(
        size=self.size + span * self.jump,
        jump=self.jump * layer.stride,
        start=self.start + (span / 2 - layer.padding) * self.jump)


def receptive_fields(layers: Iterable[LayerGeometry | tuple],
                     ) -> list[ReceptiveField]:
  """The receptive field after each layer of a chain (one spatial dimension).

  `layers` are `LayerGeometry` or tuples (kernel_size, stride[, dilation[,
  padding]]). Example: three stacked 3x3 stride-1 convolutions see 3, 5, 7.
  """
  field = ReceptiveField(1, 1, 0.0)
  out = []
  for layer in layers:
    if not isinstance(layer, LayerGeometry):
      layer = LayerGeometry(*layer)
    field = field.after(layer)
    out.append(field)
  return out


def receptive_field_size(layers: Sequence[LayerGeometry | tuple]) -> float:
  """The receptive field of the last layer of a chain."""
  return receptive_fields(layers)[-1].size if layers else 1
