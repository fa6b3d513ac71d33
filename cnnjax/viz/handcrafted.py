"""Hand-crafted features and kernel effects beside what a network learned.

- `handcrafted`: for a few examples of the run's split, the Sobel gradient
  magnitude, the strongest Robinson compass response and the HOG cells'
  orientation glyphs (analysis/handcrafted.py), beside the Sobel and
  Robinson kernels and the run's learned first-layer filters;
- `kernels`: the material's "examples of kernel effects" (identity, two edge
  detectors, box blur) with sharpen and Gaussian blur, applied with the
  project's convolution to a user's image (`--image PATH`, which needs no
  run) or to an example of the run's split.
"""

from __future__ import annotations

import os

import numpy as np

from cnnjax.analysis import handcrafted
from cnnjax.errors import CnnjaxError
from cnnjax.viz import figures, scan
from cnnjax.viz.inspection import conv_layers, kernel_tiles, layer_kernel
from cnnjax.viz.registry import Options, Output, register

MAX_IMAGE_SIDE = 512  # A larger user image is shrunk to this (display only).
_MAX_FILTERS = 16


def read_image(path: str) -> np.ndarray:
  """A user's image file as float32 (H, W, C) in [0, 1] (grey stays one
  channel, anything else becomes RGB), shrunk to MAX_IMAGE_SIDE; one
  sentence if it is missing or not an image."""
  from PIL import Image, UnidentifiedImageError

  if not os.path.isfile(path):
    raise CnnjaxError(f"--image '{path}' is not a file")
  try:
    with Image.open(path) as image:
      image = image.convert("L" if image.mode in ("L", "I", "I;16", "F", "1") else "RGB")
      image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
      pixels = np.asarray(image, np.float32) / 255.0
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise CnnjaxError(f"--image '{path}' is not an image file that PIL can read "
                      f"({type(e).__name__})") from None
  return pixels[..., None] if pixels.ndim == 2 else pixels


def hog_cell_size(height: int, width: int) -> int:
  """HOG cells of an eighth of the shorter side (2 pixels at least)."""
  return max(2, min(height, width) // 8)


def _tile(ax, image, title: str) -> None:
  figures.show_image(ax, image)
  ax.set_title(title, fontsize=7)


# ---------------------------------------------------------------- handcrafted


@register("handcrafted", "Sobel magnitude, Robinson max response and HOG "
          "glyphs of a few examples, beside the learned first-layer filters")
def handcrafted_features(trained, options: Options) -> Output:
  trained.require_images("handcrafted")
  examples = scan.query_examples(trained, options)
  images = np.asarray(examples.images, np.float32)  # (N, H, W, C) in [0, 1]
  n, h, w = images.shape[:3]
  cell = hog_cell_size(h, w)
  magnitude = handcrafted.sobel(images)["magnitude"]
  strongest = handcrafted.robinson(images)["max"]
  cells = handcrafted.hog_cells(images, pixels_per_cell=cell)
  glyphs = np.stack([handcrafted.hog_glyphs(c, cell) for c in cells])
  convs = conv_layers(trained)
  kernel = layer_kernel(trained, convs[0]) if convs else None
  learned = None
  if kernel is not None and kernel.ndim == 4:
    learned = kernel_tiles(kernel[..., :_MAX_FILTERS])[0]
    if learned.shape[0] > _MAX_FILTERS:  # One tile per (output, input) pair.
      learned = learned[:_MAX_FILTERS]

  plt = figures.pyplot()
  crafted = np.concatenate([np.stack([handcrafted.SOBEL_X, handcrafted.SOBEL_Y]),
                            handcrafted.robinson_masks()])
  crafted_titles = ["Sobel x", "Sobel y"] + [f"Rob. {d}" for d in handcrafted.ROBINSON_NAMES]
  columns = 5
  learned_rows = 0 if learned is None else -(-len(learned) // columns)
  rows = n + 2 + learned_rows
  fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.7 * rows + 0.4),
                           squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for i in range(n):
    label = f"#{int(examples.indices[i])} {scan.class_name(trained, examples.labels[i])}"
    for j, (image, title) in enumerate((
        (images[i], label), (figures.rescale(magnitude[i]), "Sobel |g|"),
        (figures.rescale(np.maximum(strongest[i], 0)), "Robinson max"),
        (figures.rescale(glyphs[i]), f"HOG ({cell}px cells)"))):
      axes[i, j].axis("on")
      _tile(axes[i, j], image, title)
  for k, (mask, title) in enumerate(zip(crafted, crafted_titles)):
    ax = axes[n + k // columns, k % columns]
    ax.axis("on")
    _tile(ax, mask / (2 * np.abs(mask).max()) + 0.5, title)
  if learned is not None:
    for k, tile in enumerate(learned):
      ax = axes[n + 2 + k // columns, k % columns]
      ax.axis("on")
      _tile(ax, tile, f"{convs[0]} {k}")
  fig.suptitle("Hand-crafted features (rows 1 to "
               f"{n}), hand-crafted kernels, then the learned "
               f"{convs[0] if convs else ''} filters; kernels: 0 = mid-grey",
               fontsize=9)
  fig.tight_layout()
  arrays = {"images": images, "sobel_magnitude": magnitude, "robinson_max": strongest,
            "hog_cells": cells, "hog_glyphs": glyphs}
  if kernel is not None:
    arrays["first_layer_kernel"] = kernel
  return Output(arrays=arrays, figures={"handcrafted": fig},
                caption="Sobel gradient magnitude, the strongest of the 8 Robinson "
                        "compass responses and HOG orientation glyphs of test "
                        "examples, beside the Sobel and Robinson kernels and the "
                        "network's learned first-layer filters.")


# ---------------------------------------------------------------- kernels


@register("kernels", "the material's kernel effects (identity, edges, blur, "
          "sharpen) on an --image file or a test example")
def kernels(trained, options: Options) -> Output:
  path = str(options.get("image", ""))
  if path:
    image, source = read_image(path), os.path.basename(path)
  elif trained is None:
    raise CnnjaxError("kernels needs --image PATH or a run (--workdir)")
  else:
    trained.require_images("kernels")
    examples = scan.query_examples(trained, options)
    image = np.asarray(examples.images[0], np.float32)
    source = (f"#{int(examples.indices[0])} "
              f"{scan.class_name(trained, examples.labels[0])}")
  outputs = {name: out[0] for name, out in handcrafted.kernel_effects(image[None]).items()}
  plt = figures.pyplot()
  fig, axes = plt.subplots(1, 1 + len(outputs), figsize=(2.0 * (1 + len(outputs)), 2.6),
                           squeeze=False)
  _tile(axes[0, 0], image, f"input: {source}"[:40])
  for ax, (name, out) in zip(axes[0, 1:], outputs.items()):
    shown = (figures.rescale(np.abs(out).mean(-1)) if name.startswith("edge")
             else np.clip(out, 0, 1))
    _tile(ax, shown, name.replace("_", " "))
  fig.suptitle("Kernel effects (3x3 kernels through cnnjax.ops.conv_lax; edges "
               "shown as |response|)", fontsize=9)
  fig.tight_layout()
  return Output(arrays={"input": image, **outputs,
                        **{f"kernel_{k}": v for k, v in handcrafted.KERNEL_EFFECTS.items()}},
                figures={"kernels": fig},
                caption="An image filtered by the identity, two edge detectors, a "
                        "box blur, sharpen and a Gaussian blur.")
