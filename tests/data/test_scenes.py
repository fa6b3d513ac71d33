"""Procedural detection/segmentation scenes: reproducible from the seed, boxes
tight around their objects' pixels, classes matching the pixel map, and
empty images among them."""

from __future__ import annotations

import numpy as np
import pytest

from cnnjax.data import scenes
from cnnjax.errors import CnnjaxError


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_scenes_are_consistent_and_reproducible(kind):
  s = scenes.make_scenes(kind, 24, image_size=48, seed=3, max_objects=3)
  again = scenes.make_scenes(kind, 24, image_size=48, seed=3, max_objects=3)
  for key in s:
    np.testing.assert_array_equal(s[key], again[key])
  other = scenes.make_scenes(kind, 24, image_size=48, seed=4, max_objects=3)
  assert not np.array_equal(s["image"], other["image"])
  assert s["image"].shape == (24, 48, 48, 3) and s["image"].dtype == np.uint8
  assert s["boxes"].shape == (24, 3, 4) and s["mask"].shape == (24, 48, 48)
  num_classes = len(scenes.class_names(kind))
  counts = s["box_mask"].sum(1)
  assert (counts == 0).any() and (counts > 0).any()
  for n in range(24):
    labels = set(np.unique(s["mask"][n])) - {0}
    assert labels == set(s["classes"][n][s["box_mask"][n]])
    assert all(1 <= c <= num_classes for c in labels)
    taken = np.zeros((48, 48), int)
    for box, cls in zip(s["boxes"][n][s["box_mask"][n]], s["classes"][n][s["box_mask"][n]]):
      x1, y1, x2, y2 = box.astype(int)
      assert (box == [x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1
      inside = s["mask"][n, y1:y2, x1:x2] == cls
      # Tight: the object's pixels touch all four sides of its box.
      assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
      taken[y1:y2, x1:x2] += 1
    assert taken.max() <= 1  # no two boxes overlap
    outside = s["mask"][n][taken == 0]
    assert (outside == 0).all()  # every object pixel lies in its box
  assert not s["box_mask"][:, :][~s["box_mask"]].any()
  assert (s["classes"][~s["box_mask"]] == 0).all() and (s["boxes"][~s["box_mask"]] == 0).all()


def test_shapes_are_what_their_class_says():
  s = scenes.make_scenes("shapes", 40, image_size=64, seed=0, min_objects=1,
                         min_size=12, max_size=20)
  fill = {1: [], 2: [], 3: []}
  for n in range(40):
    for box, cls in zip(s["boxes"][n][s["box_mask"][n]], s["classes"][n][s["box_mask"][n]]):
      x1, y1, x2, y2 = box.astype(int)
      fill[int(cls)].append((s["mask"][n, y1:y2, x1:x2] == cls).mean())
  # A square fills its box, a circle about pi/4 of it, a triangle about half.
  assert min(fill[1]) == 1.0
  assert 0.72 < np.mean(fill[2]) < 0.85
  assert 0.42 < np.mean(fill[3]) < 0.6


def test_bad_sizes_are_refused():
  with pytest.raises(CnnjaxError, match="do not fit"):
    scenes.make_scenes("shapes", 2, image_size=16, min_size=10, max_size=20)
  with pytest.raises(CnnjaxError, match="unknown scene kind"):
    scenes.make_scenes("cars", 2)
