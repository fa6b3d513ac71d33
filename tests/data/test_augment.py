"""On-device augmentation: shapes, exact shifts, reproducibility."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.data import augment as aug
from cnnjax.data.augment import augment_batch, random_flip, random_translate
from cnnjax.errors import CnnjaxError


def _normal(shape, seed=0):
  """Test inputs from numpy: a jax.random draw per shape would cost a compile."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def test_translate_is_an_exact_shift_with_edge_padding():
  images = _normal((64, 6, 7, 2))
  key = jax.random.key(1)
  out = np.asarray(random_translate(images, key, max_shift=2))
  assert out.shape == images.shape
  # Recover each example's offset the way the function draws it.
  offsets = np.asarray(jax.random.randint(key, (64, 2), 0, 5))
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  for i, (dy, dx) in enumerate(offsets):
    np.testing.assert_array_equal(out[i], padded[i, dy:dy + 6, dx:dx + 7])
  assert len({tuple(o) for o in offsets}) > 10  # examples move independently
  np.testing.assert_array_equal(random_translate(images, key, 0), images)


def test_translate_works_on_1d_signals():
  signals = jnp.arange(2 * 10 * 1, dtype=jnp.float32).reshape(2, 10, 1)
  out = random_translate(signals, jax.random.key(0), max_shift=3)
  assert out.shape == signals.shape


def test_flip_mirrors_about_half_the_batch():
  images = _normal((200, 4, 5, 1))
  out = np.asarray(random_flip(images, jax.random.key(2)))
  images = np.asarray(images)
  flipped = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)]
  kept = [np.array_equal(o, x) for o, x in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 70 < sum(flipped) < 130


def test_augment_batch_is_reproducible_and_leaves_labels_alone():
  cfg = ml_collections.ConfigDict({"translate": 2, "flip": True})
  batch = {"image": _normal((8, 8, 8, 1)),
           "label": jnp.arange(8)}
  a = augment_batch(batch, jax.random.key(5), cfg)
  b = augment_batch(batch, jax.random.key(5), cfg)
  c = augment_batch(batch, jax.random.key(6), cfg)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  np.testing.assert_array_equal(a["label"], batch["label"])



# The new tests share one batch shape and one set of static settings per op,
# so that each op compiles once for the whole file (jit caches by shape).
SHAPE = (16, 8, 8, 3)


def _images(shape=SHAPE, low=0.0, repeat_first=False):
  """Float images in [low, 1); with repeat_first, one image repeated B times."""
  images = np.random.default_rng(0).uniform(low, 1.0, shape).astype(np.float32)
  if repeat_first:
    images = np.repeat(images[:1], shape[0], axis=0)
  return jnp.asarray(images)


# ---------------------------------------------------------------------------
# Modes of random_translate.


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_translate_modes_equal_a_numpy_padded_crop(mode):
  images, key = _images(), jax.random.key(3)
  out = np.asarray(random_translate(images, key, 2, mode=mode))
  offsets = np.asarray(jax.random.randint(key, (16, 2), 0, 5))
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode=mode)
  for i, (dy, dx) in enumerate(offsets):
    np.testing.assert_array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])
  if mode == "constant":  # zero padding shows as exact zeros in every shifted example
    assert all((out[i] == 0).any() for i, o in enumerate(offsets) if tuple(o) != (2, 2))


def test_translate_rejects_an_unknown_mode():
  with pytest.raises(CnnjaxError, match="mode 'wrap'"):
    random_translate(jnp.zeros((1, 4, 4, 1)), jax.random.key(0), 1, mode="wrap")


# ---------------------------------------------------------------------------
# Random resized crop.


def _np_resize_bilinear(box, out_h, out_w):
  """torch's bilinear interpolate with align_corners=False, written in numpy."""
  def taps(out_size, in_size):
    src = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(int), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, src - low

  y0, y1, wy = taps(out_h, box.shape[0])
  x0, x1, wx = taps(out_w, box.shape[1])
  wy, wx = wy[:, None, None], wx[None, :, None]
  top = (1 - wx) * box[y0][:, x0] + wx * box[y0][:, x1]
  bottom = (1 - wx) * box[y1][:, x0] + wx * box[y1][:, x1]
  return (1 - wy) * top + wy * bottom


def test_full_scale_square_crop_is_the_identity():
  images = _images()
  out = aug.random_resized_crop(images, jax.random.key(1), scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_allclose(out, images, atol=1e-6)


def test_resized_crop_is_bilinear_resampling_of_the_box():
  images = _images()
  boxes = np.array([[0, 0, 8, 8], [1, 2, 3, 5], [4, 0, 4, 8], [0, 3, 8, 2]] * 4)
  out = np.asarray(aug.resized_crop(images, jnp.asarray(boxes)))
  np.testing.assert_allclose(out[0], np.asarray(images)[0], atol=1e-6)
  for image, (top, left, h, w), got in zip(np.asarray(images), boxes, out):
    want = _np_resize_bilinear(image[top:top + h, left:left + w], 8, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_resized_crop_boxes_follow_the_scale_and_ratio_ranges():
  size = 64
  boxes = np.asarray(aug.resized_crop_boxes(jax.random.key(0), 4000, size, size,
                                            scale=(0.2, 0.8), ratio=(3 / 4, 4 / 3)))
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= size).all() and (left + w <= size).all()
  fraction = h * w / size**2
  # Rounding the sides to whole pixels moves the area by about one row or column.
  assert fraction.min() > 0.2 - 0.03 and fraction.max() < 0.8 + 0.03
  assert fraction.min() < 0.22 and fraction.max() > 0.78  # the range is filled
  assert abs(np.mean(fraction) - 0.5) < 0.02  # uniform in area
  aspect = w / h
  assert aspect.min() > 3 / 4 - 0.06 and aspect.max() < 4 / 3 + 0.06
  assert abs(np.mean(np.log(aspect))) < 0.02  # log-uniform, symmetric about 1
  assert len(set(map(tuple, boxes[:, :2]))) > 500  # positions vary per example


def test_resized_crop_falls_back_to_a_centred_box_when_nothing_fits():
  # Ratio 4 with the whole area never fits a 10 x 10 image, so the fallback is
  # the full width with height round(10 / 4) = 2, centred.
  boxes = aug.resized_crop_boxes(jax.random.key(0), 3, 10, 10, scale=(1.0, 1.0),
                                 ratio=(4.0, 4.0))
  np.testing.assert_array_equal(boxes, [[4, 0, 2, 10]] * 3)


def test_resized_crop_rejects_bad_ranges():
  with pytest.raises(CnnjaxError, match="crop scale"):
    aug.random_resized_crop(jnp.zeros((1, 4, 4, 1)), jax.random.key(0), scale=(0.5, 0.2))


# ---------------------------------------------------------------------------
# Rotation.


def test_rotate_by_90_degrees_is_np_rot90_counter_clockwise():
  images = _images()
  x = np.asarray(images)
  out = np.asarray(aug.rotate(images, jnp.full((16,), 90.0)))
  want = np.rot90(x, k=1, axes=(1, 2))
  np.testing.assert_allclose(out[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=1e-5)
  np.testing.assert_allclose(out, want, atol=1e-5)  # exact 90 degrees: the border too
  clockwise = np.asarray(aug.rotate(images, jnp.full((16,), -90.0), mode="edge"))
  np.testing.assert_allclose(clockwise, np.rot90(x, k=-1, axes=(1, 2)), atol=1e-5)


def test_zero_rotation_is_the_identity_and_45_degrees_fills_corners():
  images = _images(low=0.5)  # values in [0.5, 1): a zero can only be fill
  x = np.asarray(images)
  np.testing.assert_array_equal(aug.rotate(images, jnp.zeros(16)), images)
  np.testing.assert_array_equal(aug.random_rotate(images, jax.random.key(0), 0), images)
  turned = np.asarray(aug.rotate(images, jnp.full((16,), 45.0)))
  assert (turned[:, 0, 0] == 0).all()  # the corners come from outside the image
  assert (turned[:, 3:5, 3:5] > 0.5 - 1e-6).all()  # the centre stays image
  edged = np.asarray(aug.rotate(images, jnp.full((16,), 45.0), mode="edge"))
  assert (edged >= 0.5 - 1e-6).all()  # edge fill reuses image values only
  np.testing.assert_allclose(edged[:, 2:6, 2:6], turned[:, 2:6, 2:6], atol=1e-6)
  assert np.abs(x - turned).max() > 0.1


def test_random_rotate_draws_independent_angles_within_the_range():
  images = _images(repeat_first=True)
  key = jax.random.key(7)
  out = np.asarray(aug.random_rotate(images, key, 30.0))
  angles = jax.random.uniform(key, (16,), minval=-30.0, maxval=30.0)
  np.testing.assert_allclose(out, aug.rotate(images, angles), atol=1e-6)
  assert np.abs(np.asarray(angles)).max() <= 30.0
  assert len({o.tobytes() for o in out}) == 16


# ---------------------------------------------------------------------------
# Colour jitter, dtype and normalization.

JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4)


def _np_gray(x):
  if x.shape[-1] == 1:
    return x
  return 0.2989 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]


def _np_color_jitter(x, factors):
  """The brightness, contrast, saturation formulas in numpy, float64."""
  x = np.asarray(x, np.float64)
  f = lambda name: np.asarray(factors[name], np.float64)[:, None, None, None]
  x = np.clip(f("brightness") * x, 0, 1)
  mean = _np_gray(x).mean(axis=(1, 2, 3), keepdims=True)
  x = np.clip(f("contrast") * x + (1 - f("contrast")) * mean, 0, 1)
  if x.shape[-1] == 3:
    x = np.clip(f("saturation") * x + (1 - f("saturation")) * _np_gray(x), 0, 1)
  return x


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_the_numpy_formulas(channels):
  images = _images(SHAPE[:-1] + (channels,))
  key = jax.random.key(9)
  out = np.asarray(aug.color_jitter(images, key, **JITTER))
  factors = aug.color_jitter_factors(key, 16, **JITTER)
  for f in factors.values():
    f = np.asarray(f)
    assert f.min() >= 0.6 and f.max() <= 1.4
    assert f.std() > 0.1  # one factor per example
  np.testing.assert_allclose(out, _np_color_jitter(images, factors), atol=1e-6)
  assert np.abs(out - np.asarray(images)).max() > 0.05


def test_each_color_adjustment_matches_its_formula():
  images = _images()
  x = np.asarray(images, np.float64)
  f = np.linspace(0.2, 1.8, 16)
  f4 = f[:, None, None, None]
  np.testing.assert_allclose(aug.adjust_brightness(images, f), np.clip(f4 * x, 0, 1), atol=1e-6)
  mean = _np_gray(x).mean(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(aug.adjust_contrast(images, f),
                             np.clip(f4 * x + (1 - f4) * mean, 0, 1), atol=1e-6)
  np.testing.assert_allclose(aug.adjust_saturation(images, f),
                             np.clip(f4 * x + (1 - f4) * _np_gray(x), 0, 1), atol=1e-6)
  gray = images[..., :1]
  np.testing.assert_array_equal(aug.adjust_saturation(gray, f), gray)  # no-op for C == 1


def test_color_jitter_factors_do_not_depend_on_the_other_settings():
  key = jax.random.key(9)
  alone = aug.color_jitter_factors(key, 16, contrast=0.4)
  together = aug.color_jitter_factors(key, 16, **JITTER)
  assert set(alone) == {"contrast"}
  np.testing.assert_array_equal(alone["contrast"], together["contrast"])
  images = _images()
  np.testing.assert_array_equal(aug.color_jitter(images, key), images)  # all zero: skipped


def test_to_float_and_normalize():
  raw = jnp.array([[[[0, 51, 255]]]], dtype=jnp.uint8)
  as_float = aug.to_float(raw)
  assert as_float.dtype == jnp.float32
  np.testing.assert_allclose(as_float, [[[[0.0, 0.2, 1.0]]]], atol=1e-7)
  floats = jnp.full((1, 2, 2, 3), 0.5)
  assert aug.to_float(floats) is floats
  out = aug.normalize(as_float, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
  np.testing.assert_allclose(out, [[[[-0.2, 0.0, 0.35]]]], atol=1e-6)
  with pytest.raises(CnnjaxError, match="3 channels"):
    aug.normalize(as_float, mean=(0.1, 0.2), std=1.0)
  with pytest.raises(CnnjaxError, match="uint8 or float"):
    aug.to_float(jnp.zeros((1, 2, 2, 1), jnp.int32))


# ---------------------------------------------------------------------------
# Properties shared by all random ops: reproducible and drawn per example.

CROP_SCALE = (0.3, 1.0)
RANDOM_OPS = {
    "translate": lambda x, k: random_translate(x, k, 2, mode="reflect"),
    "flip": random_flip,
    "resized_crop": lambda x, k: aug.random_resized_crop(x, k, scale=CROP_SCALE),
    "rotate": lambda x, k: aug.random_rotate(x, k, 30.0),
    "color_jitter": lambda x, k: aug.color_jitter(x, k, **JITTER),
}


@pytest.mark.parametrize("name", list(RANDOM_OPS))
def test_random_ops_are_reproducible_and_drawn_per_example(name):
  op = RANDOM_OPS[name]
  images = _images(repeat_first=True)  # identical inputs expose per-example draws
  a = np.asarray(op(images, jax.random.key(1)))
  assert a.shape == images.shape and a.dtype == np.float32
  np.testing.assert_array_equal(a, op(images, jax.random.key(1)))
  assert not np.array_equal(a, op(images, jax.random.key(2)))
  assert len({o.tobytes() for o in a}) > 1


# ---------------------------------------------------------------------------
# augment_batch as the train loop calls it.

ALL_OPS = dict(crop_scale=CROP_SCALE, rotate=30.0, translate=2, translate_mode="reflect",
               flip=True, **JITTER)


def _config(**fields):
  return ml_collections.ConfigDict(fields)


def test_augment_batch_under_jit_applies_every_op_in_order_with_fixed_keys():
  cfg = _config(**ALL_OPS)
  images, key = _images(), jax.random.key(3)
  out = jax.jit(lambda b, k: augment_batch(b, k, cfg))({"image": images}, key)["image"]
  k_translate, k_flip = jax.random.split(key)
  want = aug.random_resized_crop(images, jax.random.fold_in(key, 10), CROP_SCALE)
  want = aug.random_rotate(want, jax.random.fold_in(key, 11), 30.0)
  want = random_translate(want, k_translate, 2, mode="reflect")
  want = random_flip(want, k_flip)
  want = aug.color_jitter(want, jax.random.fold_in(key, 12), **JITTER)
  np.testing.assert_allclose(out, want, atol=1e-5)


def test_enabling_other_ops_keeps_each_ops_draw():
  images, key = _images(), jax.random.key(4)
  k_translate, k_flip = jax.random.split(key)
  translated = augment_batch({"image": images}, key, _config(translate=2))["image"]
  np.testing.assert_array_equal(translated, random_translate(images, k_translate, 2))
  # Adding the flip mirrors the same translated images; it does not move them.
  both = augment_batch({"image": images}, key, _config(translate=2, flip=True))["image"]
  np.testing.assert_array_equal(both, random_flip(translated, k_flip))
  # A crop before the translation keeps the offsets too: on a constant image
  # they show through the zero padding of 'constant' mode.
  ones = {"image": jnp.ones(SHAPE)}
  cfg = dict(translate=2, translate_mode="constant")
  alone = np.asarray(augment_batch(ones, key, _config(**cfg))["image"])
  more = np.asarray(augment_batch(ones, key, _config(**cfg, crop_scale=CROP_SCALE))["image"])
  np.testing.assert_array_equal(more, alone)
  assert len({a.tobytes() for a in alone}) > 5  # the offsets differ per example


def test_augmentation_enabled_reads_old_and_new_configs():
  assert aug.augmentation_enabled(_config(**ALL_OPS))
  assert not aug.augmentation_enabled(_config(translate=0, flip=False))
  assert not aug.augmentation_enabled(_config(crop_scale=(), rotate=0))
  assert aug.augmentation_enabled(_config(translate=1))
  assert aug.augmentation_enabled(_config(contrast=0.1))
  assert aug.augmentation_enabled(_config(crop_scale=(0.5, 1.0)))
  with pytest.raises(CnnjaxError, match="crop_scale"):
    aug.augmentation_enabled(_config(crop_scale=(0.0, 1.0)))


def test_augment_batch_passes_tokens_and_guards_signals():
  tokens = {"tokens": jnp.arange(12).reshape(2, 6), "label": jnp.arange(2)}
  assert augment_batch(tokens, jax.random.key(0), _config(**ALL_OPS)) is tokens
  signals = {"image": jnp.ones((2, 10, 1))}
  with pytest.raises(CnnjaxError, match="augment.rotate"):
    augment_batch(signals, jax.random.key(0), _config(translate=3, rotate=15.0))
  ok = augment_batch(signals, jax.random.key(0), _config(translate=3, flip=True))
  np.testing.assert_array_equal(ok["image"], signals["image"])  # edge padding of ones


# ---------------------------------------------------------------------------
# Test-time views.


def test_tta_views_count_order_and_flips():
  images = _images()
  x = np.asarray(images)
  for flip, shift, count in [(False, 0, 1), (True, 0, 2), (False, 2, 5), (True, 2, 10)]:
    views = np.asarray(aug.tta_views(images, flip=flip, shift=shift))
    assert views.shape == (count,) + SHAPE
    np.testing.assert_array_equal(views[0], x)
    if flip:
      half = count // 2
      np.testing.assert_array_equal(views[half:], views[:half, :, :, ::-1])
    if shift:  # the corners of the zero-padded image, in row-major order
      padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
      for view, (dy, dx) in zip(views[1:5], [(0, 0), (0, 4), (4, 0), (4, 4)]):
        np.testing.assert_array_equal(view, padded[:, dy:dy + 8, dx:dx + 8])
  assert aug.tta_views(jnp.ones((2, 10, 1)), flip=True, shift=1).shape == (6, 2, 10, 1)
