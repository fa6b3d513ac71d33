"""TFDS's voc and coco as detection data, under tfds.testing.mock_data with
records in the datasets' own layout (images of other sizes, normalised
[ymin, xmin, ymax, xmax] boxes, COCO's crowd flags, an image without objects)."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from cnnjax.data import get_dataset

tfds = pytest.importorskip("tensorflow_datasets")

# Per record: image (height, width), [(ymin, xmin, ymax, xmax, label, crowd)].
RECORDS = [((60, 80), [(0.1, 0.2, 0.5, 0.6, 3, False), (0.0, 0.0, 1.0, 1.0, 0, True)]),
           ((40, 40), []),
           ((90, 30), [(0.25, 0.5, 0.75, 1.0, 7, False)])]


def _records(name):
  import tensorflow as tf

  def generate():
    for (h, w), objects in RECORDS:
      rows = [o for o in objects if name == "coco" or not o[5]]
      bbox = np.asarray([o[:4] for o in rows], np.float32).reshape(-1, 4)
      out = {"image": np.full((h, w, 3), 100, np.uint8),
             "objects": {"bbox": bbox, "label": np.asarray([o[4] for o in rows], np.int64)}}
      if name == "coco":
        out["objects"]["is_crowd"] = np.asarray([o[5] for o in rows], bool)
      yield out

  objects = {"bbox": tf.TensorSpec((None, 4), tf.float32),
             "label": tf.TensorSpec((None,), tf.int64)}
  if name == "coco":
    objects["is_crowd"] = tf.TensorSpec((None,), tf.bool)
  spec = {"image": tf.TensorSpec((None, None, 3), tf.uint8), "objects": objects}
  return lambda *args, **kwargs: tf.data.Dataset.from_generator(generate,
                                                                output_signature=spec)


@pytest.mark.parametrize("name", ["voc", "coco"])
def test_detection_sets_load_resized_with_pixel_boxes(name):
  config = ml_collections.ConfigDict({"name": name, "image_size": 48, "data_dir": "",
                                      "download": True, "train_split": "",
                                      "eval_splits": (), "smoke_data": "real"})
  with tfds.testing.mock_data(as_dataset_fn=_records(name)):
    dataset = get_dataset(config)
  assert dataset.task == "detection" and dataset.eval_splits == ["validation"]
  assert dataset.metadata["class_names"][0] == "background"
  arrays = dataset.splits["train"]
  assert arrays["image"].shape == (3, 48, 48, 3) and arrays["image"].dtype == np.uint8
  # Pixels of the 48x48 image, [x1, y1, x2, y2]; labels + 1; COCO's crowd
  # region dropped (VOC's records have none); padding rows class 0.
  np.testing.assert_allclose(arrays["boxes"][0, 0], [9.6, 4.8, 28.8, 24.0], rtol=1e-5)
  np.testing.assert_allclose(arrays["boxes"][2, 0], [24.0, 12.0, 48.0, 36.0], rtol=1e-5)
  np.testing.assert_array_equal(arrays["label"], [[4], [0], [8]])
