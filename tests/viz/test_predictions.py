"""`cnnjax visualize detections` and `masks`: drawn beside the ground truth,
and refused in one sentence for a run of another task."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.data import scenes
from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model
from cnnjax.viz import Options, make_trained, run_method
from cnnjax.ops import random as random_ops


def _dataset(task):
  s = scenes.make_scenes("shapes", 6, image_size=32, seed=0, max_objects=2, min_size=6,
                         max_size=12)
  split = ({"image": s["image"], "label": s["mask"]} if task == "segmentation" else
           {"image": s["image"], "label": s["classes"], "boxes": s["boxes"]})
  return ArrayDataset(f"shapes_{task}", {"train": split, "test": split}, num_classes=4,
                      task=task, metadata={"class_names": ("background",) +
                                           scenes.class_names("shapes")})


def _trained(task):
  dataset = _dataset(task)
  model = (create_model("fcn", num_classes=4, variant="32s") if task == "segmentation" else
           create_model("faster_rcnn", num_classes=4, anchor_sizes=(8.0, 16.0),
                        aspect_ratios=(1.0,), rpn_pre_nms=(64, 32), rpn_post_nms=(32, 16),
                        head_width=16, detections=5, score_threshold=0.0))
  variables = random_ops.init(model, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  return make_trained(model, variables, dataset, stats=((0.5,) * 3, (0.25,) * 3))


@pytest.mark.parametrize("task,method,stems", [("segmentation", "masks", ["masks"]),
                                               ("detection", "detections", ["detections"])])
def test_predictions_are_drawn_beside_the_truth(task, method, stems, tmp_path):
  trained = _trained(task)
  out = run_method(method, trained, Options(num_examples=3), str(tmp_path), strict=True)
  assert sorted(os.path.basename(f) for f in out["files"]) == sorted(
      [f"{method}.npz"] + [f"{s}.png" for s in stems])
  arrays = np.load(tmp_path / f"{method}.npz")
  assert list(arrays["indices"]) == [0, 1, 2]
  other = "detections" if method == "masks" else "masks"
  with pytest.raises(CnnjaxError, match=f"draws models of .* data; this run's data is a {task}"):
    run_method(other, trained, Options(), str(tmp_path / "other"))
  # Classification's methods too: saliency of a map or of boxes means nothing.
  with pytest.raises(CnnjaxError, match=f"this run's data is a {task} task"):
    run_method("saliency", trained, Options(), str(tmp_path / "other"))
