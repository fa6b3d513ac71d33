"""On-device augmentation, applied inside the jitted train step.

Every random function takes a batch of images (B, H, W, C) (translate and flip
also signals (B, L, C)) and a key, draws a separate transformation per example,
and is pure: the key comes from `fold_in(rng, step)`, so augmentation is
reproducible and resumes exactly. Colour operations expect float images in
[0, 1] (see `to_float`); `normalize` comes last, after augmentation.

Each random op has a deterministic twin that takes the drawn parameters
(`resized_crop` with boxes, `rotate` with angles, `adjust_*` with factors), so
tests and visualizations can apply a known transformation.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError

PAD_MODES = ("edge", "constant", "reflect")
ROTATE_MODES = ("constant", "edge")
# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses them.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# Inception-style crops try this many boxes before falling back to the centre.
CROP_ATTEMPTS = 10


def _check_mode(mode: str, allowed: Sequence[str], what: str) -> None:
  if mode not in allowed:
    raise CnnjaxError(f"{what} mode {mode!r} is not supported; use one of "
                      f"{', '.join(repr(m) for m in allowed)}.")


def _check_images_2d(images: jax.Array, what: str) -> None:
  if images.ndim != 4:
    raise CnnjaxError(f"{what} needs 2D images of shape (B, H, W, C), but got shape "
                      f"{tuple(images.shape)}; turn it off for this dataset.")


# ---------------------------------------------------------------------------
# Dtype and normalization.


def to_float(images: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1] (x / 255); float images pass through unchanged."""
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images
  if images.dtype != jnp.uint8:
    raise CnnjaxError(f"to_float expects uint8 or float images, not {images.dtype}; "
                      "store images as uint8 in [0, 255] or float in [0, 1].")
  return images.astype(jnp.float32) / 255.0


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """(images - mean) / std per channel; `mean` and `std` are scalars or length C."""
  channels = images.shape[-1]
  mean = jnp.asarray(mean, images.dtype)
  std = jnp.asarray(std, images.dtype)
  for name, value in (("mean", mean), ("std", std)):
    if value.ndim > 1 or value.size not in (1, channels):
      raise CnnjaxError(f"normalize got a {name} of shape {tuple(value.shape)} for images "
                        f"with {channels} channels; give one value or one per channel.")
  return (images - mean) / std


# ---------------------------------------------------------------------------
# Translation and flips (any number of spatial axes).


@functools.partial(jax.jit, static_argnames=("max_shift", "mode"))
def random_translate(images: jax.Array, key: jax.Array, max_shift: int,
                     mode: str = "edge") -> jax.Array:
  """Shifts each example by up to `max_shift` pixels along every spatial axis.

  The border is padded by `max_shift` on each side, then an input-sized window
  is cut at a random offset, i.e. the 'pad and random crop' of the CIFAR
  recipes (`mode='constant'`, pad 4).

  Args:
    images: (B, *spatial, C), e.g. (B, H, W, C) or signals (B, L, C).
    key: PRNG key; offsets are `randint(key, (B, len(spatial)), 0, 2 * max_shift + 1)`.
    max_shift: largest shift in pixels; 0 returns the input.
    mode: border fill: 'edge' (repeat the border pixel; the background, for
      digits), 'constant' (zeros) or 'reflect' (mirror without repeating the
      edge, like np.pad's 'reflect').
  """
  _check_mode(mode, PAD_MODES, "random_translate")
  if max_shift <= 0:
    return images
  spatial = images.ndim - 2
  pad = [(0, 0)] + [(max_shift, max_shift)] * spatial + [(0, 0)]
  padded = jnp.pad(images, pad, mode=mode)
  offsets = jax.random.randint(key, (images.shape[0], spatial), 0, 2 * max_shift + 1)

  def crop(image, offset):  # image: (H + 2s, W + 2s, C)
    start = (*offset, jnp.zeros((), offset.dtype))
    return jax.lax.dynamic_slice(image, start, images.shape[1:])

  return jax.vmap(crop)(padded, offsets)


@jax.jit
def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2 (axis W of (B, H, W, C))."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  flip = flip.reshape((-1,) + (1,) * (images.ndim - 1))
  return jnp.where(flip, jnp.flip(images, axis=-2), images)


# ---------------------------------------------------------------------------
# Bilinear resampling shared by crops and rotations.


def _bilinear_sample(image: jax.Array, ys: jax.Array, xs: jax.Array,
                     mode: str) -> jax.Array:
  """Samples image (H, W, C) at float pixel coordinates ys, xs (both (h, w)).

  Coordinates are pixel-centre indices (0 is the centre of the first pixel).
  Taps outside the image read 0 with mode 'constant' (so borders blend into
  zero, as torch's grid_sample with zero padding) or the nearest edge pixel
  with mode 'edge'. Returns (h, w, C).
  """
  height, width = image.shape[:2]
  y0 = jnp.floor(ys)
  x0 = jnp.floor(xs)
  wy = (ys - y0)[..., None]  # (h, w, 1)
  wx = (xs - x0)[..., None]
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)

  def tap(yi, xi):
    value = image[jnp.clip(yi, 0, height - 1), jnp.clip(xi, 0, width - 1)]
    if mode == "constant":
      inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
      value = jnp.where(inside[..., None], value, jnp.zeros((), image.dtype))
    return value

  top = (1 - wx) * tap(y0, x0) + wx * tap(y0, x0 + 1)
  bottom = (1 - wx) * tap(y0 + 1, x0) + wx * tap(y0 + 1, x0 + 1)
  return ((1 - wy) * top + wy * bottom).astype(image.dtype)


# ---------------------------------------------------------------------------
# Inception-style random resized crop.


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
  """torchvision's centre-crop fallback size: the whole image, ratio clamped."""
  in_ratio = width / height
  if in_ratio < min(ratio):
    box_w = width
    box_h = int(round(box_w / min(ratio)))
  elif in_ratio > max(ratio):
    box_h = height
    box_w = int(round(box_h * max(ratio)))
  else:
    box_h, box_w = height, width
  return box_h, box_w


def _check_pair(name: str, pair, upper: float | None = None) -> tuple[float, float]:
  try:
    low, high = (float(v) for v in pair)
  except (TypeError, ValueError):
    raise CnnjaxError(f"{name} must be a (min, max) pair of numbers, not {pair!r}.") from None
  if not 0 < low <= high or (upper is not None and high > upper):
    bound = f" <= {upper}" if upper is not None else ""
    raise CnnjaxError(f"{name} must satisfy 0 < min <= max{bound}, but got ({low}, {high}).")
  return low, high


def resized_crop_boxes(key: jax.Array, batch_size: int, height: int, width: int,
                       scale: tuple[float, float] = (0.08, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
  """Draws one crop box per example with torchvision's RandomResizedCrop rule.

  For each example, 10 candidate boxes are drawn at once: area fraction
  uniform in `scale`, aspect ratio w/h log-uniform in `ratio`, sides rounded to
  whole pixels. The first candidate that fits inside the image is kept, at a
  uniform random position; if none fits, the centred fallback box of
  torchvision is used (the whole image with its aspect ratio clamped to
  `ratio`).

  Returns:
    (B, 4) int32 boxes (top, left, box_height, box_width).
  """
  scale = _check_pair("crop scale", scale, upper=1.0)
  ratio = _check_pair("crop ratio", ratio)
  return _resized_crop_boxes(key, int(batch_size), int(height), int(width), scale, ratio)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _resized_crop_boxes(key: jax.Array, batch_size: int, height: int, width: int,
                        scale: tuple[float, float], ratio: tuple[float, float]) -> jax.Array:
  # One draw for everything (a single random-bits kernel compiles faster):
  # per example, attempts area fractions, attempts log ratios, 2 positions.
  u = jax.random.uniform(key, (batch_size, 2 * CROP_ATTEMPTS + 2))
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :CROP_ATTEMPTS])
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_low + (log_high - log_low) * u[:, CROP_ATTEMPTS:2 * CROP_ATTEMPTS])
  box_w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)  # (B, attempts)
  box_h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
  first = jnp.argmax(fits, axis=1)  # index of the first fitting candidate
  found = jnp.any(fits, axis=1)
  pick = lambda values: jnp.take_along_axis(values, first[:, None], axis=1)[:, 0]
  fallback_h, fallback_w = _fallback_box(height, width, ratio)
  box_h = jnp.where(found, pick(box_h), fallback_h)
  box_w = jnp.where(found, pick(box_w), fallback_w)
  # A random position for a found box, randint(0, H - h + 1) as the floor of
  # a uniform so that one draw serves every box size; the fallback is centred.
  top = jnp.floor(u[:, -2] * (height - box_h + 1)).astype(jnp.int32)
  left = jnp.floor(u[:, -1] * (width - box_w + 1)).astype(jnp.int32)
  top = jnp.where(found, jnp.minimum(top, height - box_h), (height - box_h) // 2)
  left = jnp.where(found, jnp.minimum(left, width - box_w), (width - box_w) // 2)
  return jnp.stack([top, left, box_h, box_w], axis=1)


@jax.jit
def resized_crop(images: jax.Array, boxes: jax.Array) -> jax.Array:
  """Cuts box i out of image i and resizes it bilinearly to the input's (H, W).

  Sampling follows torch's bilinear interpolate with align_corners=False on
  the cropped box: output pixel r reads box row (r + 0.5) * h / H - 0.5,
  clamped to the box, so no pixel outside the box leaks in.

  Args:
    images: (B, H, W, C) floats.
    boxes: (B, 4) integer (top, left, box_height, box_width), inside the image.
  """
  _check_images_2d(images, "resized_crop")
  height, width = images.shape[1:3]
  rows = jnp.arange(height, dtype=jnp.float32)
  cols = jnp.arange(width, dtype=jnp.float32)

  def crop_one(image, box):
    top, left, box_h, box_w = (box[i].astype(jnp.float32) for i in range(4))
    ys = top + jnp.clip((rows + 0.5) * (box_h / height) - 0.5, 0.0, box_h - 1)  # (H,)
    xs = left + jnp.clip((cols + 0.5) * (box_w / width) - 0.5, 0.0, box_w - 1)  # (W,)
    ys, xs = jnp.broadcast_to(ys[:, None], (height, width)), jnp.broadcast_to(xs, (height, width))
    return _bilinear_sample(image, ys, xs, mode="edge")

  return jax.vmap(crop_one)(images, boxes)


def random_resized_crop(images: jax.Array, key: jax.Array,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
  """Inception / torchvision RandomResizedCrop, one box per example, same output size.

  See `resized_crop_boxes` for the box rule and `resized_crop` for the
  resampling. With scale=(1, 1) and ratio=(1, 1) a square image comes back
  unchanged (a non-square one gets torchvision's centred square fallback).
  """
  _check_images_2d(images, "random_resized_crop")
  scale = _check_pair("crop scale", scale, upper=1.0)
  ratio = _check_pair("crop ratio", ratio)
  return _random_resized_crop(images, key, scale, ratio)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _random_resized_crop(images: jax.Array, key: jax.Array, scale: tuple[float, float],
                         ratio: tuple[float, float]) -> jax.Array:
  batch_size, height, width = images.shape[:3]
  boxes = _resized_crop_boxes(key, batch_size, height, width, scale, ratio)
  return resized_crop(images, boxes)


# ---------------------------------------------------------------------------
# Rotation.


@functools.partial(jax.jit, static_argnames=("mode",))
def rotate(images: jax.Array, degrees: jax.Array, mode: str = "constant") -> jax.Array:
  """Rotates image i by degrees[i] about its centre, bilinearly.

  Positive angles turn the picture counter-clockwise as displayed (row 0 at
  the top), like torchvision's rotate; +90 on a square image equals
  np.rot90(image). The centre is the middle of the pixel grid, ((H - 1) / 2,
  (W - 1) / 2). Output pixels whose source lies outside the image read 0
  (mode 'constant') or the nearest edge pixel (mode 'edge').

  Args:
    images: (B, H, W, C) floats.
    degrees: (B,) angles in degrees.
    mode: 'constant' or 'edge'.
  """
  _check_mode(mode, ROTATE_MODES, "rotate")
  _check_images_2d(images, "rotate")
  height, width = images.shape[1:3]
  center_y, center_x = (height - 1) / 2, (width - 1) / 2
  dy = jnp.arange(height, dtype=jnp.float32)[:, None] - center_y  # (H, 1), down
  dx = jnp.arange(width, dtype=jnp.float32)[None, :] - center_x  # (1, W), right

  def rotate_one(image, angle):
    theta = jnp.deg2rad(angle.astype(jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # Inverse map: the source of an output pixel is the pixel turned back by
    # theta. With y pointing down, a counter-clockwise turn by -theta is
    # (dx, dy) -> (cos dx + sin dy, -sin dx + cos dy) in (x, y) terms.
    xs = center_x + cos * dx - sin * dy
    ys = center_y + sin * dx + cos * dy
    return _bilinear_sample(image, ys, xs, mode=mode)

  return jax.vmap(rotate_one)(images, jnp.asarray(degrees))


@functools.partial(jax.jit, static_argnames=("max_degrees", "mode"))
def random_rotate(images: jax.Array, key: jax.Array, max_degrees: float,
                  mode: str = "constant") -> jax.Array:
  """Rotates each example by an angle uniform in [-max_degrees, max_degrees].

  Positive angles are counter-clockwise (see `rotate`); 0 returns the input.
  """
  _check_mode(mode, ROTATE_MODES, "random_rotate")
  if max_degrees <= 0:
    return images
  degrees = jax.random.uniform(key, (images.shape[0],), minval=-max_degrees,
                               maxval=max_degrees)
  return rotate(images, degrees, mode)


# ---------------------------------------------------------------------------
# Colour jitter (torchvision ColorJitter without the hue term).


def _per_example(factors: jax.Array, images: jax.Array) -> jax.Array:
  """(B,) factors -> (B, 1, ..., 1) to broadcast against images."""
  return jnp.asarray(factors, images.dtype).reshape((-1,) + (1,) * (images.ndim - 1))


def grayscale(images: jax.Array) -> jax.Array:
  """Luma of (B, ..., C) images as (B, ..., 1); a one-channel image is its own gray."""
  channels = images.shape[-1]
  if channels == 1:
    return images
  if channels != 3:
    raise CnnjaxError(f"contrast and saturation jitter need 1 or 3 channels, not {channels}; "
                      "turn them off for this dataset.")
  weights = jnp.asarray(GRAY_WEIGHTS, images.dtype)
  return jnp.sum(images * weights, axis=-1, keepdims=True)


def adjust_brightness(images: jax.Array, factors: jax.Array) -> jax.Array:
  """clip(f * x, 0, 1) with one factor per example."""
  return jnp.clip(_per_example(factors, images) * images, 0.0, 1.0)


def adjust_contrast(images: jax.Array, factors: jax.Array) -> jax.Array:
  """clip(f * x + (1 - f) * mean(gray(x)), 0, 1), the mean over each whole image."""
  spatial_axes = tuple(range(1, images.ndim))
  mean = jnp.mean(grayscale(images), axis=spatial_axes, keepdims=True)  # (B, 1, ..., 1)
  f = _per_example(factors, images)
  return jnp.clip(f * images + (1 - f) * mean, 0.0, 1.0)


def adjust_saturation(images: jax.Array, factors: jax.Array) -> jax.Array:
  """clip(f * x + (1 - f) * gray(x), 0, 1); a no-op for one-channel images."""
  if images.shape[-1] == 1:
    return images
  f = _per_example(factors, images)
  return jnp.clip(f * images + (1 - f) * grayscale(images), 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("batch_size", "brightness", "contrast",
                                            "saturation"))
def color_jitter_factors(key: jax.Array, batch_size: int, brightness: float = 0.0,
                         contrast: float = 0.0, saturation: float = 0.0) -> dict:
  """Draws per-example factors uniform in [max(0, 1 - v), 1 + v] for each v > 0.

  Each property has its own fixed row of one draw, so turning one on or off
  does not change the others' factors.

  Returns:
    {'brightness' | 'contrast' | 'saturation': (B,) factors}, only for v > 0.
  """
  # Row i of one (3, B) draw belongs to property i whether or not the others are on.
  u = jax.random.uniform(key, (3, batch_size))
  factors = {}
  for name, value, row in zip(("brightness", "contrast", "saturation"),
                              (brightness, contrast, saturation), u):
    if value < 0:
      raise CnnjaxError(f"{name} jitter must be >= 0, but got {value}.")
    if value > 0:
      low, high = max(0.0, 1.0 - value), 1.0 + value
      factors[name] = low + (high - low) * row
  return factors


@functools.partial(jax.jit, static_argnames=("brightness", "contrast", "saturation"))
def color_jitter(images: jax.Array, key: jax.Array, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0) -> jax.Array:
  """Random brightness, contrast and saturation with torchvision ColorJitter factors.

  Images are floats in [0, 1], (B, H, W, C) with C = 1 or 3 (brightness works
  for any C). The ops run in the fixed order brightness, contrast, saturation;
  torchvision shuffles the order per call, we do not (it keeps the op pure and
  cheap). A zero value skips its op.
  """
  if images.ndim < 4:
    raise CnnjaxError(f"color_jitter needs images of shape (B, H, W, C), but got shape "
                      f"{tuple(images.shape)}; turn it off for this dataset.")
  factors = color_jitter_factors(key, images.shape[0], brightness, contrast, saturation)
  if "brightness" in factors:
    images = adjust_brightness(images, factors["brightness"])
  if "contrast" in factors:
    images = adjust_contrast(images, factors["contrast"])
  if "saturation" in factors:
    images = adjust_saturation(images, factors["saturation"])
  return images


# ---------------------------------------------------------------------------
# The pipeline the train loop calls.


def _crop_scale(augment_config):
  """The configured crop scale pair, or None when the crop is off."""
  scale = augment_config.get("crop_scale", None)
  if scale is None or (not np.isscalar(scale) and len(scale) == 0):
    return None
  return _check_pair("augment.crop_scale", scale, upper=1.0)


def augmentation_enabled(augment_config) -> bool:
  """True when `config.augment` turns on at least one augmentation."""
  get = augment_config.get
  return bool(_crop_scale(augment_config) is not None or get("rotate", 0) > 0
              or get("translate", 0) > 0 or get("flip", False)
              or get("brightness", 0.0) > 0 or get("contrast", 0.0) > 0
              or get("saturation", 0.0) > 0)


def augment_batch(batch: dict, key: jax.Array, augment_config) -> dict:
  """Applies the augmentations enabled in `config.augment` to batch['image'].

  Order: random_resized_crop (`crop_scale`, `crop_ratio`), random_rotate
  (`rotate` degrees), random_translate (`translate` pixels, `translate_mode`),
  random_flip (`flip`), color_jitter (`brightness`, `contrast`, `saturation`).
  Missing keys mean 'off', so old configs with only translate/flip work.
  Each op has a fixed key (translate and flip keep the halves of
  `split(key)`, the others `fold_in(key, n)`), so enabling one op never
  changes another's draw. Batches without 'image' (e.g. 'tokens') pass
  through; 1D signals (B, L, C) support only translate and flip.

  A batch whose 'label' is a class map per image (segmentation: (B, H, W)
  for (B, H, W, C) images) has it translated and flipped with its image
  (the same draws; its border filled as the image's, so 'constant' pads
  with class 0); the resampling augmentations (crop_scale, rotate) are
  refused for it in one sentence, the colour ones touch the image only.
  A batch with 'boxes' (detection: (B, G, 4) [x1, y1, x2, y2]) has them
  mirrored with their flipped images; the other geometric augmentations
  are refused for it.
  """
  if "image" not in batch:
    return batch
  images = batch["image"]
  get = augment_config.get
  labels = batch.get("label")
  boxes = batch.get("boxes")
  maps = (boxes is None and labels is not None and labels.ndim >= 2
          and labels.ndim == images.ndim - 1)
  if boxes is not None:
    moving = [name for name, on in (("crop_scale", _crop_scale(augment_config) is not None),
                                    ("rotate", get("rotate", 0) > 0),
                                    ("translate", get("translate", 0) > 0)) if on]
    if moving:
      raise CnnjaxError(f"augment.{', augment.'.join(moving)} would move a detection "
                        "task's objects away from their boxes; use flip")
  if maps:
    resampling = [name for name, on in (("crop_scale", _crop_scale(augment_config) is not None),
                                        ("rotate", get("rotate", 0) > 0)) if on]
    if resampling:
      raise CnnjaxError(f"augment.{', augment.'.join(resampling)} would resample the "
                        "class maps of a segmentation task; use translate and flip")
    # The map rides along as one more channel through translate and flip.
    channels = images.shape[-1]
    images = jnp.concatenate([images, labels[..., None].astype(images.dtype)], axis=-1)
  k_translate, k_flip = jax.random.split(key)
  k_crop, k_rotate, k_color = (jax.random.fold_in(key, n) for n in (10, 11, 12))

  crop_scale = _crop_scale(augment_config)
  rotate_degrees = get("rotate", 0)
  jitter = {name: get(name, 0.0) for name in ("brightness", "contrast", "saturation")}
  if images.ndim != 4:
    two_d_only = [name for name, on in (("crop_scale", crop_scale is not None),
                                        ("rotate", rotate_degrees > 0),
                                        *((n, v > 0) for n, v in jitter.items())) if on]
    if two_d_only:
      raise CnnjaxError(f"augment.{', augment.'.join(two_d_only)} need images of shape "
                        f"(B, H, W, C), but this batch has shape {tuple(images.shape)}; "
                        "turn them off or use only translate and flip.")

  if crop_scale is not None:
    images = random_resized_crop(images, k_crop, crop_scale,
                                 tuple(get("crop_ratio", (3 / 4, 4 / 3))))
  if rotate_degrees > 0:
    images = random_rotate(images, k_rotate, rotate_degrees)
  if get("translate", 0) > 0:
    images = random_translate(images, k_translate, get("translate", 0),
                              mode=get("translate_mode", "edge"))
  if get("flip", False):
    images = random_flip(images, k_flip)
    if boxes is not None:  # random_flip's draw, applied to the boxes
      flipped = jax.random.bernoulli(k_flip, 0.5, (images.shape[0],))[:, None, None]
      width = images.shape[-2]
      mirrored = jnp.stack([width - boxes[..., 2], boxes[..., 1],
                            width - boxes[..., 0], boxes[..., 3]], axis=-1)
      boxes = jnp.where(flipped, mirrored, boxes)
  if maps:
    labels = jnp.round(images[..., channels]).astype(labels.dtype)
    images = images[..., :channels]
  if any(v > 0 for v in jitter.values()):
    images = color_jitter(images, k_color, **jitter)
  if maps:
    return dict(batch, image=images, label=labels)
  if boxes is not None:
    return dict(batch, image=images, boxes=boxes)
  return dict(batch, image=images)


# ---------------------------------------------------------------------------
# Test-time augmentation.


@functools.partial(jax.jit, static_argnames=("flip", "shift", "mode"))
def tta_views(images: jax.Array, *, flip: bool = False, shift: int = 0,
              mode: str = "constant") -> jax.Array:
  """Deterministic test-time views of a batch, stacked as (V, B, ...).

  View order: view 0 is the input itself. With shift > 0 the next views are
  the input-sized windows at the corners of the image padded by `shift` on
  every side (with `mode`), i.e. the input shifted by +-shift pixels on every
  spatial axis, corners in row-major order: for 2D images top-left window
  (content moved down and right), top-right, bottom-left, bottom-right. With
  flip, the mirrored copy (axis W) of every view follows, in the same order.
  So 2D images give 1, 2, 5 or 10 views; 1D signals 1, 2, 3 or 6.

  Args:
    images: (B, *spatial, C).
    flip: add left-right mirrored views.
    shift: corner shift in pixels; 0 adds no shifted views.
    mode: padding of the shifted views: 'constant' (zeros), 'edge' or 'reflect'.
  """
  _check_mode(mode, PAD_MODES, "tta_views")
  views = [images]
  if shift > 0:
    spatial = images.ndim - 2
    pad = [(0, 0)] + [(shift, shift)] * spatial + [(0, 0)]
    padded = jnp.pad(images, pad, mode=mode)
    sizes = images.shape[1:-1]
    for corner in np.ndindex(*(2,) * spatial):  # 0: window at the start of the axis
      index = tuple(slice(2 * shift * c, 2 * shift * c + n) for c, n in zip(corner, sizes))
      views.append(padded[(slice(None), *index)])
  if flip:
    views += [jnp.flip(view, axis=-2) for view in views]
  return jnp.stack(views)
