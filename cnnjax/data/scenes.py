"""Procedural scenes for detection and segmentation, generated from a seed.

Two sets, each image with its objects' boxes, classes and a per-pixel class
map, so that detection and segmentation train on the same pictures:

- 'shapes': squares, circles and triangles (classes 1, 2, 3) of random
  size and colour (one that stands out from what is behind it) on textured
  backgrounds (smooth noise, stripes or a
  checkerboard in random colours);
- 'digits': scikit-learn's 8x8 handwritten digits (classes 1..10 for the
  digits 0..9), scaled up and scattered on a canvas in random colours over
  the same kinds of backgrounds.

    scenes = make_scenes("shapes", 256, image_size=64, seed=0)
    scenes["image"]     # (N, S, S, 3) uint8
    scenes["boxes"]     # (N, max_objects, 4) float32 [x1, y1, x2, y2], pixels
    scenes["classes"]   # (N, max_objects) int32, 1.. (0 where there is no object)
    scenes["box_mask"]  # (N, max_objects) bool: which rows are objects
    scenes["mask"]      # (N, S, S) int32: each pixel's class, 0 = background

Objects do not overlap (their boxes, grown by one pixel, are disjoint), so
every box is the tight box of its object's pixels in `mask` and nothing is
hidden. Each image has min_objects..max_objects objects; with
min_objects=0 (the default) some images are empty, a valid example for
both tasks. The same (kind, seed, sizes) gives the same arrays on every
machine: everything is drawn from one NumPy generator in a fixed order.
"""

from __future__ import annotations

import functools

import numpy as np

from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError

KINDS = ("shapes", "digits")
SHAPE_NAMES = ("square", "circle", "triangle")
# An object's colour differs from its background's mean by at least this
# much (summed over RGB in [0, 1]), after up to 10 draws.
MIN_CONTRAST = 0.6


def class_names(kind: str) -> tuple[str, ...]:
  """The object classes 1.. of a kind (class 0 is the background)."""
  if kind == "shapes":
    return SHAPE_NAMES
  if kind == "digits":
    return tuple(str(d) for d in range(10))
  raise CnnjaxError(f"unknown scene kind '{kind}' (known: {', '.join(KINDS)})")


@functools.cache
def _digit_glyphs() -> tuple[np.ndarray, np.ndarray]:
  import sklearn.datasets
  digits = sklearn.datasets.load_digits()
  return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int32)


def _background(rng, size: int) -> np.ndarray:
  """(size, size, 3) float in [0, 1]: a random texture."""
  low, high = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
  kind = rng.integers(3)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  if kind == 0:  # smooth noise: a coarse grid upsampled
    cells = rng.uniform(0, 1, (size // 8 + 2, size // 8 + 2))
    t = np.kron(cells, np.ones((8, 8)))[:size, :size]
    t = (t + np.roll(t, 4, 0) + np.roll(t, 4, 1) + np.roll(t, (4, 4), (0, 1))) / 4
  elif kind == 1:  # stripes at a random angle
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
  else:  # checkerboard
    cell = int(rng.integers(3, 9))
    t = ((yy // cell + xx // cell) % 2).astype(np.float32)
  t = t[..., None]
  return (low * (1 - t) + high * t) * rng.uniform(0.6, 1.0)


def _shape_mask(shape: int, size: int) -> np.ndarray:
  """(size, size) bool of a square, circle or upward triangle filling it."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  if shape == 0:
    return np.ones((size, size), bool)
  if shape == 1:
    r = size / 2
    return (yy - r) ** 2 + (xx - r) ** 2 <= r * r
  # Apex at the top centre, base along the bottom row.
  return (yy >= size * np.abs(2 * xx / size - 1)) & (yy <= size)


def _digit_mask(glyph: np.ndarray, size: int) -> np.ndarray:
  """The 8x8 glyph scaled to (size, size) (linear interpolation), as intensities."""
  import scipy.ndimage
  return scipy.ndimage.zoom(glyph, size / glyph.shape[0], order=1,
                            grid_mode=True, mode="nearest")[:size, :size]


def make_scenes(kind: str, num: int, *, image_size: int = 64, seed: int = 0,
                min_objects: int = 0, max_objects: int = 4,
                min_size: int | None = None, max_size: int | None = None) -> dict:
  """`num` scenes of `kind` (module docstring). Object sides are drawn from
  min_size..max_size pixels (default image_size/8 .. image_size/2.5)."""
  names = class_names(kind)
  min_size = int(min_size or max(4, image_size // 8))
  max_size = int(max_size or max(min_size, int(image_size / 2.5)))
  if not 0 <= min_objects <= max_objects or max_objects < 1:
    raise CnnjaxError(f"scenes need 0 <= min_objects <= max_objects and max_objects >= 1, "
                      f"got {min_objects} and {max_objects}")
  if not 4 <= min_size <= max_size <= image_size - 2:
    raise CnnjaxError(f"object sizes {min_size}..{max_size} do not fit {image_size}-pixel "
                      f"images (need 4 <= min <= max <= image_size - 2)")
  rng = np.random.default_rng(seed)
  glyphs, glyph_labels = _digit_glyphs() if kind == "digits" else (None, None)
  images = np.zeros((num, image_size, image_size, 3), np.uint8)
  boxes = np.zeros((num, max_objects, 4), np.float32)
  classes = np.zeros((num, max_objects), np.int32)
  masks = np.zeros((num, image_size, image_size), np.int32)
  for n in range(num):
    canvas = _background(rng, image_size)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    taken = np.zeros((image_size, image_size), bool)
    placed = 0
    for _ in range(wanted * 20):  # rejection sampling of free places
      if placed == wanted:
        break
      side = int(rng.integers(min_size, max_size + 1))
      y0, x0 = (int(v) for v in rng.integers(0, image_size - side + 1, 2))
      if taken[max(0, y0 - 1):y0 + side + 1, max(0, x0 - 1):x0 + side + 1].any():
        continue
      if kind == "shapes":
        label = int(rng.integers(len(names)))
        shape = _shape_mask(label, side)
        alpha = shape.astype(np.float32)
      else:
        pick = int(rng.integers(len(glyphs)))
        label = int(glyph_labels[pick])
        alpha = np.clip(_digit_mask(glyphs[pick], side) * 1.5, 0, 1)
        shape = alpha > 0.5
      if not shape.any():
        continue
      region = canvas[y0:y0 + side, x0:x0 + side]
      behind = region.reshape(-1, 3).mean(0)
      for _ in range(10):  # a colour that stands out from what is behind it
        colour = rng.uniform(0, 1, 3)
        if np.abs(colour - behind).sum() > MIN_CONTRAST:
          break
      region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
      masks[n, y0:y0 + side, x0:x0 + side][shape] = label + 1
      ys, xs = np.nonzero(shape)
      boxes[n, placed] = [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1]
      classes[n, placed] = label + 1
      taken[y0:y0 + side, x0:x0 + side] = True
      placed += 1
    images[n] = np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)
  return {"image": images, "boxes": boxes, "classes": classes, "box_mask": classes > 0,
          "mask": masks}


# Scenes per split of a full run and of a smoke run.
SPLIT_SIZES = {"train": 4000, "test": 1000}
SMOKE_SPLIT_SIZES = {"train": 256, "test": 64}
DEFAULT_IMAGE_SIZE = 64


def _load(kind: str, task: str, dataset_config, smoke: bool) -> ArrayDataset:
  size = int(dataset_config.get("image_size") or DEFAULT_IMAGE_SIZE)
  seed = int(dataset_config.get("split_seed", 0))
  counts = SMOKE_SPLIT_SIZES if smoke else SPLIT_SIZES
  splits = {}
  for offset, (split, count) in enumerate(counts.items()):
    s = make_scenes(kind, count, image_size=size, seed=2 * seed + offset)
    splits[split] = ({"image": s["image"], "label": s["mask"]} if task == "segmentation" else
                     {"image": s["image"], "label": s["classes"], "boxes": s["boxes"]})
  names = ("background",) + class_names(kind)
  return ArrayDataset(name=f"{kind}_{task}", splits=splits, num_classes=len(names), task=task,
                      metadata={"class_names": names, "source": f"cnnjax.data.scenes ({kind})"})


def load_segmentation(kind: str, dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """The `kind` scenes as a segmentation set: uint8 images and class maps
  (0 background, 1.. the objects' classes); train and test from different
  seeds (config.dataset.split_seed and split_seed + 1), image_size from the
  config (default 64)."""
  return _load(kind, "segmentation", dataset_config, smoke)


def load_detection(kind: str, dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """The same scenes as a detection set: per image up to 4 objects' classes
  ('label', 0 = no object) and 'boxes'."""
  return _load(kind, "detection", dataset_config, smoke)
