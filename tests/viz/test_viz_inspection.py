"""Tests for cnnjax.viz.inspection: filters, activations, patches, neighbours,
embeddings, on the tiny random LeNet-5 of tests/viz_fixtures.py."""

from __future__ import annotations

import os
import types

import jax
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.viz import embedding, inspection, neighbours, registry, scan
from cnnjax.viz.registry import Options
from viz_fixtures import tiny_run

METHODS = ("filters", "activations", "patches", "neighbors", "embedding")


def _c3_row(run):
  from cnnjax.analysis.summary import summarize
  return next(r for r in summarize(run.model, run.input_shape).rows if r.name == "c3")


def test_receptive_box_of_lenet_c3():
  row = _c3_row(tiny_run())
  # conv5 -> pool2 -> conv5: size 5 + (2 - 1) * 1 + (5 - 1) * 2 = 14; jump 1 * 2 = 2;
  # first centre 2 (c1) -> 2.5 (s2) -> 2.5 + 2 * 2 = 6.5 (c3).
  assert tuple(row.receptive_field) == (14, 14)
  assert tuple(row.jump) == (2, 2)
  assert tuple(row.start) == (6.5, 6.5)
  assert inspection.receptive_box(row, 0, 0) == (0, 0, 14, 14)
  assert inspection.receptive_box(row, 3, 5) == (6, 10, 20, 24)
  assert inspection.receptive_box(row, 9, 9) == (18, 18, 32, 32)
  # A layer whose fields stick out of the image (SAME padding): clipped variant.
  same = types.SimpleNamespace(name="x", receptive_field=(7, 7), jump=(2, 2),
                               start=(0.0, 0.0))
  assert inspection.receptive_box(same, 0, 15) == (-3, 27, 4, 34)
  assert inspection.clipped_receptive_box(same, 0, 15, (32, 32, 3)) == (0, 27, 4, 32)
  image = np.arange(32 * 32, dtype=np.float32).reshape(32, 32, 1) / 1024
  crop = inspection.crop_box(image, (-3, 27, 4, 34))
  assert crop.shape == (7, 7, 1)
  np.testing.assert_array_equal(crop[:3], 0.5)  # Above the image: grey.
  np.testing.assert_array_equal(crop[:, 5:], 0.5)  # Right of it: grey.
  np.testing.assert_array_equal(crop[3:, :5], image[0:4, 27:32])


@pytest.mark.parametrize("distinct", [True, False])
def test_patches_are_the_true_top_units(tmp_path, distinct):
  run = tiny_run()
  options = Options(split="train", layer="c3", channel=2, top_k=5, batch_size=24,
                    extra={"distinct": distinct})  # 64 rows: 3 chunks, last padded.
  out = inspection.patches(run, options)
  examples = run.examples("train")
  maps = np.asarray(run.activations(examples.inputs, ["c3"])["c3"])[..., 2]
  if distinct:  # At most one unit per example: its maximum.
    expected = np.sort(maps.reshape(len(maps), -1).max(1))[::-1][:5]
    assert len(set(out.arrays["example_indices"][0].tolist())) == 5
  else:
    expected = np.sort(maps.reshape(-1))[::-1][:5]
  np.testing.assert_allclose(out.arrays["values"][0], expected, rtol=1e-5, atol=1e-5)
  for t in range(5):  # The recorded unit has the recorded value.
    n = out.arrays["example_indices"][0, t]
    i, j = out.arrays["positions"][0, t]
    assert maps[n, i, j] == pytest.approx(out.arrays["values"][0, t], abs=1e-5)
  boxes, clipped = out.arrays["boxes"], out.arrays["clipped_boxes"]
  np.testing.assert_array_equal(boxes[..., 2] - boxes[..., 0], 14)
  np.testing.assert_array_equal(boxes[..., 3] - boxes[..., 1], 14)
  assert clipped.min() >= 0 and clipped[..., 2:].max() <= 32
  assert out.arrays["patches"].shape == (1, 5, 14, 14, 3)
  n, (top, left, bottom, right) = out.arrays["example_indices"][0, 0], boxes[0, 0]
  np.testing.assert_allclose(out.arrays["patches"][0, 0],
                             examples.images[n, top:bottom, left:right], atol=1e-6)


def test_patches_default_layer_and_channels():
  out = inspection.patches(tiny_run(), Options(top_k=3))
  assert list(out.figures) == ["patches_c3"]  # The last conv with maps > 1x1.
  np.testing.assert_array_equal(out.arrays["channels"], np.arange(8))
  assert out.arrays["values"].shape == (8, 3)
  assert np.all(np.diff(out.arrays["values"], axis=1) <= 0)


def test_neighbors_of_training_images_are_themselves():
  run = tiny_run()
  out = neighbours.neighbors(run, Options(split="train", indices=(5, 17), top_k=4,
                                          batch_size=20))
  for key in ("", "pixel_"):
    indices, distances = out.arrays[f"{key}indices"], out.arrays[f"{key}distances"]
    assert indices.shape == distances.shape == (2, 4)
    np.testing.assert_array_equal(indices[:, 0], [5, 17])
    np.testing.assert_allclose(distances[:, 0], 0, atol=1e-5)
    assert np.all(np.diff(distances, axis=1) >= 0)
    assert np.all(distances[:, 1:] > 1e-3)
  # Feature distances are L2 distances of the penultimate features.
  train = run.examples("train")
  features = scan.penultimate_features(run, train.inputs)
  direct = np.linalg.norm(features[5] - features[out.arrays["indices"][0, 1]])
  assert out.arrays["distances"][0, 1] == pytest.approx(direct, rel=1e-4)


def test_penultimate_features_are_the_head_input():
  run = tiny_run()
  inputs = run.examples("test", 3).inputs
  features = scan.penultimate_features(run, inputs)
  f6 = np.asarray(run.activations(inputs, ["f6"])["f6"])
  np.testing.assert_allclose(features, np.maximum(f6, 0), atol=1e-6)  # ReLU(f6)
  c3 = scan.penultimate_features(run, inputs, layer="c3")
  assert c3.shape == (3, 10 * 10 * 16)


def test_filters_tiles_and_mid_grey():
  run = tiny_run()
  out = inspection.filters(run, Options())
  kernel = np.asarray(run.variables["params"]["c1"]["kernel"])
  assert out.arrays["tiles"].shape == (kernel.shape[-1], 5, 5, 3)  # One RGB tile each.
  known = np.zeros((2, 2, 1, 2), np.float32)
  known[0, 0, 0, 0], known[1, 1, 0, 0] = -2.0, 1.0
  known[0, 1, 0, 1] = 0.5
  tiles, layout = inspection.kernel_tiles(known)
  assert layout == "grey" and tiles.shape == (2, 2, 2, 1)
  assert tiles[0, 0, 0, 0] == 0.0 and tiles[0, 1, 1, 0] == 0.75
  assert tiles[0, 0, 1, 0] == 0.5 and tiles[1, 0, 0, 0] == 0.5  # 0 -> mid-grey
  assert tiles[1, 0, 1, 0] == 1.0
  # The method reads the kernel from the run's variables.
  params = jax.tree.map(np.asarray, run.variables["params"])
  params["c1"]["kernel"] = np.zeros_like(params["c1"]["kernel"])
  params["c1"]["kernel"][2, 2, :, 0] = 1.0
  zeroed = inspection.filters(run.with_variables({"params": params}), Options())
  np.testing.assert_array_equal(zeroed.arrays["tiles"][1:], 0.5)
  assert zeroed.arrays["tiles"][0, 2, 2].tolist() == [1.0, 1.0, 1.0]
  deeper = inspection.filters(run, Options(layer="c3"))
  assert deeper.arrays["tiles"].shape == (16 * 6, 5, 5, 1)  # (out, in) pairs
  with pytest.raises(CnnjaxError, match="2-D"):
    inspection.kernel_tiles(np.zeros((3, 4, 8), np.float32))
  with pytest.raises(CnnjaxError, match="no convolution kernel"):
    inspection.filters(run, Options(layer="f6"))


def test_activations_are_the_layer_outputs():
  run = tiny_run()
  out = inspection.activations(run, Options(num_examples=2, extra={"layers": "c1,s4"}))
  inputs = run.examples("test", 2).inputs
  direct = run.activations(inputs, ["c1", "s4"])
  np.testing.assert_allclose(out.arrays["c1"], direct["c1"], atol=1e-5)
  assert out.arrays["s4"].shape == (2, 5, 5, 16)
  assert sorted(out.figures) == ["activations_c1", "activations_s4"]
  default = inspection.activations(run, Options(num_examples=1))
  assert sorted(default.figures) == ["activations_c1", "activations_c3"]


def test_pca_matches_numpy_projection_and_tsne_runs():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(60, 12)) * np.linspace(3, 0.1, 12)
  coords = embedding.pca_2d(features)
  centred = features - features.mean(0)
  values, vectors = np.linalg.eigh(np.cov(centred.T))
  top = vectors[:, np.argsort(values)[::-1][:2]]
  expected = centred @ top
  for k in range(2):  # Up to the sign of each axis.
    sign = np.sign(coords[:, k] @ expected[:, k])
    np.testing.assert_allclose(sign * coords[:, k], expected[:, k], atol=1e-4)
  tsne = embedding.tsne_2d(features.astype(np.float32), seed=0)
  assert tsne.shape == (60, 2) and np.all(np.isfinite(tsne))


def test_embedding_uses_penultimate_features():
  run = tiny_run()
  out = embedding.embedding(run, Options(extra={"tsne": False, "max_points": 10}))
  rows = out.arrays["indices"]
  assert len(rows) == 10 and "tsne" not in out.arrays
  features = scan.penultimate_features(run, run.examples("test", indices=rows).inputs)
  np.testing.assert_allclose(np.abs(out.arrays["pca"]),
                             np.abs(embedding.pca_2d(features)), atol=1e-4)
  np.testing.assert_array_equal(out.arrays["labels"],
                                run.dataset.splits["test"]["label"][rows])


@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_through_the_registry(tmp_path, name):
  assert name in registry.method_names()
  result = registry.run_method(name, tiny_run(), Options(), str(tmp_path))
  pngs = [f for f in result["files"] if f.endswith(".png")]
  assert pngs and all(os.path.getsize(f) > 1000 for f in pngs)
  npz = os.path.join(tmp_path, f"{name}.npz")
  assert npz in result["files"]
  with np.load(npz) as arrays:
    assert len(arrays.files) >= 2
  assert result["caption"]
