"""Hand-crafted image features: Sobel, Robinson compass masks, HOG, pixels.

The material's "hand-crafted features" (Sobel operator, Robinson compass
masks, Dalal & Triggs' histograms of oriented gradients) computed on batches
of channels-last images (B, H, W, C), to set against the features a CNN
learns. Sobel and Robinson are 3x3 kernels applied with the project's own
convolution (`ops.conv_lax`, cross-correlation as everywhere in cnnjax) to
the grey image (the mean of the channels), its border repeated (edge
padding) so that the frame of the image is not an edge.

HOG follows scikit-image's `skimage.feature.hog` (its defaults are Dalal &
Triggs' choices: unsigned gradients, 9 orientation bins, L2-Hys block
normalization): central differences per channel, at every pixel the channel
with the strongest gradient, per cell the sum of the magnitudes whose
orientation falls in each bin (hard binning) over the cell's area, then
every block of cells normalized. It is batched NumPy in float64, and
tests/analysis/test_handcrafted.py checks it against scikit-image.

SIFT is left out: it describes keypoints found at several scales, and no
maintained library this project may use computes it on a dense grid
(scikit-image's `SIFT` detects keypoints; OpenCV is not a dependency).

`feature_vectors(images, kind)` turns a batch into one fixed-length vector
per image for kind 'pixels', 'sobel', 'robinson' or 'hog'.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.ops import conv_lax

# Cross-correlation kernels (row = y downwards, column = x rightwards).
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
SOBEL_Y = SOBEL_X.T.copy()

# The Robinson compass masks in the material's order (tutorialspoint's
# masks): each is the one before with its outer ring turned by 45 degrees.
ROBINSON_NAMES = ("N", "NW", "W", "SW", "S", "SE", "E", "NE")
_RING = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))  # clockwise


def _ring_mask(values) -> np.ndarray:
  mask = np.zeros((3, 3), np.float32)
  for (r, c), v in zip(_RING, values):
    mask[r, c] = v
  return mask


def robinson_masks() -> np.ndarray:
  """The 8 Robinson compass masks (8, 3, 3), N, NW, W, SW, S, SE, E, NE.

  North is the Sobel x kernel [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]; each
  following mask moves the ring of values one place (45 degrees)."""
  north = [SOBEL_X[r, c] for r, c in _RING]
  return np.stack([_ring_mask(np.roll(north, -k)) for k in range(8)])


FEATURE_KINDS = ("pixels", "sobel", "robinson", "hog")


def grey(images) -> np.ndarray:
  """(B, H, W) float32: the mean over the channels of (B, H, W[, C])."""
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    return images
  if images.ndim != 4:
    raise CnnjaxError(f"hand-crafted features need images (B, H, W, C); got "
                      f"shape {images.shape}")
  return images.mean(axis=-1)


def filter_bank(images, kernels: np.ndarray) -> np.ndarray:
  """The responses (B, H, W, K) of the grey images to the 3x3 `kernels`
  (K, 3, 3), through `ops.conv_lax`, the border repeated."""
  x = jnp.asarray(grey(images))[..., None]  # (B, H, W, 1)
  k = np.asarray(kernels, np.float32)
  pad = (k.shape[1] // 2, k.shape[2] // 2)
  x = jnp.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)), mode="edge")
  w = jnp.asarray(np.transpose(k, (1, 2, 0))[:, :, None, :])  # (kh, kw, 1, K)
  return np.asarray(conv_lax(x, w, padding="VALID"))


def sobel(images) -> dict[str, np.ndarray]:
  """{'x', 'y', 'magnitude'}: (B, H, W) Sobel gradients of the grey images."""
  out = filter_bank(images, np.stack([SOBEL_X, SOBEL_Y]))
  gx, gy = out[..., 0], out[..., 1]
  return {"x": gx, "y": gy, "magnitude": np.hypot(gx, gy)}


def robinson(images) -> dict[str, np.ndarray]:
  """{'responses': (B, H, W, 8) in ROBINSON_NAMES order, 'max': (B, H, W)
  the strongest response, 'direction': (B, H, W) its index}."""
  out = filter_bank(images, robinson_masks())
  return {"responses": out, "max": out.max(-1), "direction": out.argmax(-1)}


# ------------------------------------------------------------------- HOG


def _gradients(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Central differences (rows, columns) of (B, H, W, C), 0 on the frame,
  and at each pixel the channel whose gradient is the strongest."""
  g_row = np.zeros_like(images)
  g_col = np.zeros_like(images)
  g_row[:, 1:-1] = images[:, 2:] - images[:, :-2]
  g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
  pick = np.hypot(g_row, g_col).argmax(axis=-1)[..., None]
  return (np.take_along_axis(g_row, pick, -1)[..., 0],
          np.take_along_axis(g_col, pick, -1)[..., 0])


def hog_cells(images, *, orientations: int = 9, pixels_per_cell: int = 8
              ) -> np.ndarray:
  """Per-cell orientation histograms (B, cells_y, cells_x, orientations).

  Unsigned orientations in [0, 180) split into equal bins; a pixel adds its
  gradient magnitude to its bin; each sum is divided by the cell's area.
  The pixels past the last whole cell are left out, as in scikit-image."""
  images = np.asarray(images, np.float64)
  if images.ndim == 3:
    images = images[..., None]
  b, h, w, _ = images.shape
  cell = int(pixels_per_cell)
  ny, nx = h // cell, w // cell
  if ny < 1 or nx < 1:
    raise CnnjaxError(f"HOG cells of {cell}x{cell} pixels do not fit images of "
                      f"{h}x{w}")
  g_row, g_col = _gradients(images)
  magnitude = np.hypot(g_col, g_row)
  orientation = np.arctan2(g_row, g_col) * (180 / np.pi) % 180
  # The bin edges as scikit-image compares them (single-precision floats).
  edges = np.float32(180.0 / orientations) * np.arange(1, orientations, dtype=np.float32)
  bins = np.sum(orientation[..., None] >= edges.astype(np.float64), axis=-1)
  one_hot = (bins[..., None] == np.arange(orientations)) * magnitude[..., None]
  one_hot = one_hot[:, :ny * cell, :nx * cell]
  cells = one_hot.reshape(b, ny, cell, nx, cell, orientations).sum(axis=(2, 4))
  return cells / (cell * cell)


def hog(images, *, orientations: int = 9, pixels_per_cell: int = 8,
        cells_per_block: int = 3, eps: float = 1e-5) -> np.ndarray:
  """HOG descriptors (B, D) of (B, H, W[, C]) images, L2-Hys blocks.

  Equal to `skimage.feature.hog(image, orientations, (p, p), (c, c),
  block_norm='L2-Hys', channel_axis=-1)` for each image (float64 inputs)."""
  cells = hog_cells(images, orientations=orientations,
                    pixels_per_cell=pixels_per_cell)
  b, ny, nx, _ = cells.shape
  k = int(cells_per_block)
  by, bx = ny - k + 1, nx - k + 1
  if by < 1 or bx < 1:
    raise CnnjaxError(f"HOG blocks of {k}x{k} cells do not fit {ny}x{nx} cells "
                      f"(images of {np.shape(images)[1]}x{np.shape(images)[2]} "
                      f"pixels, {pixels_per_cell}-pixel cells)")
  blocks = np.stack([np.stack([cells[:, r:r + k, c:c + k] for c in range(bx)], 1)
                     for r in range(by)], 1)  # (B, by, bx, k, k, bins)
  axes = (3, 4, 5)
  out = blocks / np.sqrt(np.sum(blocks ** 2, axis=axes, keepdims=True) + eps ** 2)
  out = np.minimum(out, 0.2)
  out = out / np.sqrt(np.sum(out ** 2, axis=axes, keepdims=True) + eps ** 2)
  return out.reshape(b, -1)


def hog_glyphs(cells: np.ndarray, pixels_per_cell: int) -> np.ndarray:
  """An image (cells_y * s, cells_x * s), s = max(pixels_per_cell, 8) (small
  cells drawn larger, so that their lines show), of one image's cell
  histograms (cells_y, cells_x, bins): in each cell a line per bin through
  its centre, across the bin's gradient direction (along the edge), as bright
  as the bin's value (scikit-image's `visualize=True` picture)."""
  ny, nx, bins = cells.shape
  p = max(int(pixels_per_cell), 8)
  out = np.zeros((ny * p, nx * p), np.float64)
  radius = p // 2 - 1
  steps = np.linspace(-1.0, 1.0, 4 * p)
  for o in range(bins):
    angle = np.pi * (o + 0.5) / bins
    # A gradient at `angle` from the x axis; its edge is perpendicular
    # (a repeated pixel of the sampled line is added once).
    dr, dc = radius * np.cos(angle), radius * np.sin(angle)
    for r in range(ny):
      for c in range(nx):
        cr, cc = r * p + p // 2, c * p + p // 2
        rows = np.clip(np.round(cr - steps * dr).astype(int), 0, ny * p - 1)
        cols = np.clip(np.round(cc + steps * dc).astype(int), 0, nx * p - 1)
        out[rows, cols] += cells[r, c, o]
  return out


# ------------------------------------------------------- feature vectors


def _pool(maps: np.ndarray, cell: int) -> np.ndarray:
  """Means over non-overlapping cell x cell windows of (B, H, W, K)."""
  if cell <= 1:
    return maps
  b, h, w, k = maps.shape
  hh, ww = h // cell, w // cell
  if hh < 1 or ww < 1:
    raise CnnjaxError(f"pooling cells of {cell} pixels do not fit {h}x{w} maps")
  return maps[:, :hh * cell, :ww * cell].reshape(b, hh, cell, ww, cell, k).mean((2, 4))


def feature_vectors(images, kind: str, *, cell: int = 2, hog_cell: int = 4,
                    hog_block: int = 2, batch_size: int = 1024) -> np.ndarray:
  """One fixed-length float32 vector per image of (B, H, W, C):

  - 'pixels': the image itself, flattened;
  - 'sobel': the x, y and magnitude maps, averaged over cell x cell windows;
  - 'robinson': the 8 compass responses and their maximum, likewise;
  - 'hog': HOG with `hog_cell`-pixel cells and `hog_block`-cell blocks.

  Computed `batch_size` images at a time (memory)."""
  if kind not in FEATURE_KINDS:
    raise CnnjaxError(f"unknown hand-crafted feature '{kind}'; the kinds are "
                      f"{', '.join(FEATURE_KINDS)}")
  images = np.asarray(images)
  parts = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size].astype(np.float32)
    if kind == "pixels":
      out = chunk.reshape(len(chunk), -1)
    elif kind == "sobel":
      s = sobel(chunk)
      maps = np.stack([s["x"], s["y"], s["magnitude"]], axis=-1)
      out = _pool(maps, cell).reshape(len(chunk), -1)
    elif kind == "robinson":
      r = robinson(chunk)
      maps = np.concatenate([r["responses"], r["max"][..., None]], axis=-1)
      out = _pool(maps, cell).reshape(len(chunk), -1)
    else:
      out = hog(chunk.astype(np.float64), pixels_per_cell=hog_cell,
                cells_per_block=hog_block)
    parts.append(np.asarray(out, np.float32))
  if not parts:
    raise CnnjaxError("hand-crafted features need at least one image")
  return np.concatenate(parts)


# ------------------------------------------------------ kernel effects

# The material's "examples of kernel effects", with the usual sharpen and
# 3x3 Gaussian blur (the binomial kernel, sigma about 0.85).
KERNEL_EFFECTS = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32),
    "edge_detection_1": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
    "edge_detection_2": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
    "box_blur": np.ones((3, 3), np.float32) / 9.0,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
    "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16.0,
}


def kernel_effects(images) -> dict[str, np.ndarray]:
  """{kernel name: (B, H, W, C)}: each of KERNEL_EFFECTS applied to every
  channel of (B, H, W, C) on its own (a grouped `ops.conv_lax`), the border
  repeated."""
  x = np.asarray(images, np.float32)
  if x.ndim != 4:
    raise CnnjaxError(f"kernel effects need images (B, H, W, C); got shape {x.shape}")
  channels = x.shape[-1]
  padded = jnp.pad(jnp.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  out = {}
  for name, kernel in KERNEL_EFFECTS.items():
    w = jnp.asarray(np.repeat(kernel[:, :, None, None], channels, axis=3))  # (3, 3, 1, C)
    out[name] = np.asarray(conv_lax(padded, w, padding="VALID", groups=channels))
  return out
