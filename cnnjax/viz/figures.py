"""Matplotlib helpers shared by the methods: image grids and heat-map overlays.

Every function returns a `matplotlib.figure.Figure` (Agg backend, no window).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def pyplot():
  """matplotlib.pyplot on the Agg backend (no window)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def show_image(ax, image, cmap=None) -> None:
  """Draws (H, W, C) or (H, W) in [0, 1]; one channel as grey."""
  image = np.asarray(image, np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 3 and image.shape[-1] not in (3, 4):
    image = image.mean(-1)
  ax.imshow(np.clip(image, 0, 1), cmap=cmap or ("gray" if image.ndim == 2 else None),
            vmin=0, vmax=1, interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def rescale(x, axis=None) -> np.ndarray:
  """Linearly to [0, 1] (over `axis`, default the whole array)."""
  x = np.asarray(x, np.float32)
  lo = x.min(axis=axis, keepdims=axis is not None)
  hi = x.max(axis=axis, keepdims=axis is not None)
  return (x - lo) / np.maximum(hi - lo, 1e-8)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, *,
               columns: int | None = None, title: str = "", cmap=None,
               size: float = 1.6):
  """A grid of (H, W[, C]) images in [0, 1]."""
  plt = pyplot()
  n = len(images)
  columns = columns or min(n, 8)
  rows = max(1, math.ceil(n / columns))
  fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows + 0.4),
                           squeeze=False)
  for i, ax in enumerate(axes.flat):
    if i < n:
      show_image(ax, images[i], cmap=cmap)
      if titles is not None:
        ax.set_title(str(titles[i]), fontsize=7)
    else:
      ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


def heatmap_rows(images: Sequence, maps: Sequence[Sequence], row_titles: Sequence[str],
                 column_titles: Sequence[str], *, title: str = "", overlay: bool = True,
                 cmap: str = "jet"):
  """One row per example: the image, then each map (H, W) over it.

  `maps[i][j]` is map j of example i, any range (rescaled per map).
  """
  plt = pyplot()
  rows, columns = len(images), 1 + len(column_titles)
  fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.8 * rows + 0.4),
                           squeeze=False)
  for i in range(rows):
    show_image(axes[i, 0], images[i])
    axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
    for j in range(len(column_titles)):
      ax = axes[i, j + 1]
      heat = rescale(maps[i][j])
      if overlay:
        show_image(ax, np.asarray(images[i]).mean(-1) if np.ndim(images[i]) == 3 else images[i])
        ax.imshow(heat, cmap=cmap, alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
      else:
        show_image(ax, heat, cmap="gray")
      if i == 0:
        ax.set_title(column_titles[j], fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig
