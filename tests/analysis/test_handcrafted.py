"""Hand-crafted features: Sobel and Robinson on hand-computed examples, the
compass masks as rotations, HOG against scikit-image, the feature vectors,
and the 'handcrafted_features' analysis on a tiny trained run."""

import numpy as np
import pytest

from cnnjax.analysis import handcrafted
from cnnjax.errors import CnnjaxError


def _step_edge() -> np.ndarray:
  """(1, 5, 5, 1): 0 in columns 0-2, 1 in columns 3-4 (a vertical step)."""
  image = np.zeros((1, 5, 5, 1), np.float32)
  image[:, :, 3:] = 1.0
  return image


def test_sobel_of_a_vertical_step_edge():
  s = handcrafted.sobel(_step_edge())
  # Columns 2 and 3 see the step: (1 + 2 + 1) * (1 - 0) = 4; elsewhere 0. The
  # repeated border adds no edge at the frame, and y sees nothing.
  expected = np.zeros((5, 5), np.float32)
  expected[:, 2:4] = 4.0
  np.testing.assert_array_equal(s["x"][0], expected)
  np.testing.assert_array_equal(s["y"][0], np.zeros((5, 5)))
  np.testing.assert_array_equal(s["magnitude"][0], expected)
  # A horizontal step is seen by y only; a diagonal one by both, |g| = hypot.
  t = handcrafted.sobel(np.swapaxes(_step_edge(), 1, 2))
  np.testing.assert_array_equal(t["y"][0], expected.T)
  np.testing.assert_array_equal(t["x"][0], np.zeros((5, 5)))


def test_sobel_of_a_single_bright_pixel_is_the_flipped_kernel():
  image = np.zeros((1, 5, 5, 1), np.float32)
  image[0, 2, 2, 0] = 1.0
  s = handcrafted.sobel(image)
  # Cross-correlation with a point gives the kernel turned by 180 degrees.
  np.testing.assert_array_equal(s["x"][0, 1:4, 1:4], handcrafted.SOBEL_X[::-1, ::-1])
  np.testing.assert_array_equal(s["y"][0, 1:4, 1:4], handcrafted.SOBEL_Y[::-1, ::-1])


def test_the_robinson_masks_are_the_materials_and_rotations_of_each_other():
  masks = handcrafted.robinson_masks()
  assert masks.shape == (8, 3, 3)
  np.testing.assert_array_equal(masks[0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])  # N
  np.testing.assert_array_equal(masks[1], [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]])  # NW
  np.testing.assert_array_equal(masks[2], [[1, 2, 1], [0, 0, 0], [-1, -2, -1]])  # W
  np.testing.assert_array_equal(masks[7], [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]])  # NE
  for k in range(8):
    # Two 45-degree steps are one 90-degree rotation; four are a sign flip.
    np.testing.assert_array_equal(masks[(k + 2) % 8], np.rot90(masks[k]))
    np.testing.assert_array_equal(masks[(k + 4) % 8], -masks[k])
    assert masks[k][1, 1] == 0 and masks[k].sum() == 0


def test_robinson_of_a_step_edge():
  r = handcrafted.robinson(_step_edge())
  responses = r["responses"][0]  # (5, 5, 8)
  # On the step (columns 2, 3): N = 4, NW = NE = 3, W = E = 0, SW = SE = -3, S = -4.
  np.testing.assert_array_equal(responses[2, 2], [4, 3, 0, -3, -4, -3, 0, 3])
  np.testing.assert_array_equal(r["max"][0][:, 2:4], np.full((5, 2), 4.0))
  np.testing.assert_array_equal(r["max"][0][:, [0, 1, 4]], np.zeros((5, 3)))
  assert np.all(r["direction"][0][:, 2:4] == 0)  # North
  # Sobel x is the North mask: the same numbers.
  np.testing.assert_array_equal(responses[..., 0], handcrafted.sobel(_step_edge())["x"][0])


def test_grey_takes_the_mean_of_the_channels():
  rgb = np.concatenate([_step_edge(), 2 * _step_edge(), 3 * _step_edge()], axis=-1)
  np.testing.assert_allclose(handcrafted.sobel(rgb)["x"], 2 * handcrafted.sobel(_step_edge())["x"])


def test_hog_cells_of_a_step_edge():
  image = np.zeros((1, 8, 8, 1))
  image[:, :, 4:] = 1.0
  cells = handcrafted.hog_cells(image, orientations=9, pixels_per_cell=4)
  # Central differences: columns 3 and 4 have g_col = 1 (orientation 0, bin 0)
  # in every row; each 4x4 cell holds 4 of them: 4 / 16 = 0.25.
  expected = np.zeros((1, 2, 2, 9))
  expected[..., 0] = 0.25
  np.testing.assert_allclose(cells, expected)


def test_hog_descriptor_length_and_block_normalization():
  rng = np.random.default_rng(0)
  images = rng.random((3, 16, 16, 1))
  d = handcrafted.hog(images, pixels_per_cell=4, cells_per_block=2)
  assert d.shape == (3, 3 * 3 * 2 * 2 * 9)
  blocks = d.reshape(3, 9, -1)
  np.testing.assert_allclose(np.linalg.norm(blocks, axis=-1), 1.0, rtol=1e-6)
  with pytest.raises(CnnjaxError, match="do not fit"):
    handcrafted.hog(images, pixels_per_cell=8, cells_per_block=3)


@pytest.mark.parametrize("channels,cell,block", [(1, 4, 2), (3, 8, 3), (1, 6, 2)])
def test_hog_equals_scikit_image(channels, cell, block):
  feature = pytest.importorskip("skimage.feature")
  rng = np.random.default_rng(channels + cell)
  images = rng.random((3, 32, 29, channels))
  ours = handcrafted.hog(images, pixels_per_cell=cell, cells_per_block=block)
  for i in range(len(images)):
    reference = feature.hog(images[i], orientations=9, pixels_per_cell=(cell, cell),
                            cells_per_block=(block, block), block_norm="L2-Hys",
                            channel_axis=-1)
    np.testing.assert_allclose(ours[i], reference, rtol=1e-5, atol=1e-6)


def test_feature_vectors_have_a_fixed_length_per_kind():
  images = np.random.default_rng(1).random((5, 16, 16, 3)).astype(np.float32)
  lengths = {kind: handcrafted.feature_vectors(images, kind, batch_size=2).shape
             for kind in handcrafted.FEATURE_KINDS}
  assert lengths == {"pixels": (5, 768), "sobel": (5, 8 * 8 * 3),
                     "robinson": (5, 8 * 8 * 9), "hog": (5, 3 * 3 * 4 * 9)}
  whole = handcrafted.feature_vectors(images, "robinson")
  np.testing.assert_allclose(handcrafted.feature_vectors(images, "robinson", batch_size=2),
                             whole)
  with pytest.raises(CnnjaxError, match="unknown hand-crafted feature 'sift'"):
    handcrafted.feature_vectors(images, "sift")


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_the_analysis_scores_every_feature_set(tmp_path):
  pytest.importorskip("sklearn")
  from conftest import tiny_mnist1d_config
  from cnnjax.reproduce import analyses, analyses_features
  from cnnjax.train.loop import train_and_evaluate

  config = tiny_mnist1d_config(**{
      "dataset.name": "digits", "dataset.image_size": 8, "model.name": "rf_cnn",
      "model.channels": 4, "model.head": "flatten", "num_steps": 20,
      "eval_every": 20, "checkpoint_every": 20, "log_every": 10,
      "optimizer.name": "adam", "optimizer.learning_rate": 3e-3})
  workdir = str(tmp_path / "run")
  result = train_and_evaluate(config, workdir)
  runs = [{"slug": "base", "setting": {}, "seed": 0, "workdir": workdir, "result": result}]
  assert "handcrafted_features" in analyses.list_analyses()
  row = analyses_features.handcrafted_features(runs, max_train=400, max_test=200)["base"]
  for kind in ("pixels", "sobel", "robinson", "hog", "cnn_features"):
    for classifier in ("linear", "rbf_svm"):
      assert 0.1 < row[f"{kind}/{classifier}"] <= 1.0, (kind, classifier)
  assert 0.1 < row["cnn/end_to_end"] <= 1.0
  assert row["learned_minus_handcrafted/linear"] == pytest.approx(
      row["cnn_features/linear"] - row["handcrafted/best_linear"])
  # The penultimate features are what the classifier layer maps to the logits.
  from cnnjax.runs import Run
  trained = Run.open(workdir).trained()
  inputs = trained.examples(n=7).inputs
  features = analyses_features.penultimate(trained, inputs, batch_size=4)
  head = trained.variables["params"]["head"]
  assert features.shape == (7, 2 * 2 * 4)
  np.testing.assert_allclose(features @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
                             trained.logits(inputs), rtol=1e-4, atol=1e-5)
