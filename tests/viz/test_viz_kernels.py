"""The kernel effects (identity, edges, blurs, sharpen) on hand-computed
images, and the 'kernels' and 'handcrafted' methods, from Python and the CLI."""

import os

import numpy as np
import pytest

from cnnjax.analysis import handcrafted
from cnnjax.cli import main
from cnnjax.viz import registry
from viz_fixtures import tiny_run


def _impulse(row: int, col: int) -> np.ndarray:
  image = np.zeros((1, 5, 5, 1), np.float32)
  image[0, row, col, 0] = 1.0
  return image


def test_kernel_effects_of_a_bright_centre_pixel():
  out = {k: v[0, :, :, 0] for k, v in handcrafted.kernel_effects(_impulse(2, 2)).items()}
  assert list(out) == ["identity", "edge_detection_1", "edge_detection_2", "box_blur",
                       "sharpen", "gaussian_blur"]
  around = {  # The 3x3 around the pixel (the kernels are symmetric).
      "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
      "edge_detection_1": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
      "edge_detection_2": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
      "box_blur": np.full((3, 3), 1 / 9),
      "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
      "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16,
  }
  for name, values in around.items():
    expected = np.zeros((5, 5), np.float32)
    expected[1:4, 1:4] = values
    np.testing.assert_allclose(out[name], expected, atol=1e-7, err_msg=name)


def test_kernel_effects_repeat_the_border():
  out = {k: v[0, :, :, 0] for k, v in handcrafted.kernel_effects(_impulse(0, 0)).items()}
  # The corner pixel is repeated into 3 padded places: 4 of the 9 taps at
  # (0, 0) see it, 2 at (0, 1) and (1, 0), 1 at (1, 1).
  np.testing.assert_allclose(out["box_blur"][:2, :2], [[4 / 9, 2 / 9], [2 / 9, 1 / 9]],
                             atol=1e-7)
  np.testing.assert_allclose(out["gaussian_blur"][:2, :2],
                             [[9 / 16, 3 / 16], [3 / 16, 1 / 16]], atol=1e-7)
  np.testing.assert_allclose(out["edge_detection_1"][:2, :2], [[8 - 3, -2], [-2, -1]])
  np.testing.assert_allclose(out["edge_detection_2"][:2, :2], [[-4 + 2, 1], [1, 0]])
  np.testing.assert_allclose(out["sharpen"][:2, :2], [[5 - 2, -1], [-1, 0]])
  # A constant image is kept by the blurs, sharpen and identity; the edge
  # detectors see nothing in it. Channels are filtered each on its own.
  flat = np.concatenate([np.full((1, 5, 5, 1), 0.5), np.full((1, 5, 5, 1), 2.0)], -1)
  for name, value in handcrafted.kernel_effects(flat).items():
    want = 0.0 if name.startswith("edge") else flat
    np.testing.assert_allclose(value, np.broadcast_to(want, flat.shape), atol=1e-6)


@pytest.mark.parametrize("method,stem", [("kernels", "kernels"),
                                         ("handcrafted", "handcrafted")])
def test_the_methods_write_their_figure(method, stem, tmp_path):
  run = tiny_run()
  result = registry.run_method(method, run, registry.Options(num_examples=2),
                               str(tmp_path), strict=True)
  png = os.path.join(str(tmp_path), f"{stem}.png")
  assert png in result["files"] and os.path.getsize(png) > 2000
  with np.load(os.path.join(str(tmp_path), f"{method}.npz")) as arrays:
    if method == "kernels":
      np.testing.assert_allclose(arrays["identity"], arrays["input"], atol=1e-6)
      assert arrays["sharpen"].shape == (32, 32, 3)
    else:
      assert arrays["hog_glyphs"].shape == (2, 64, 64)  # 4-pixel cells drawn at 8
      assert arrays["first_layer_kernel"].shape == (5, 5, 3, 6)  # LeNet-5's c1


def test_kernels_of_a_users_image_need_no_run(tmp_path, capsys):
  from PIL import Image

  pixels = np.zeros((20, 30, 3), np.uint8)
  pixels[:, 15:] = 255
  path = str(tmp_path / "step.png")
  Image.fromarray(pixels).save(path)
  out = str(tmp_path / "out")
  assert main(["visualize", "kernels", "--image", path, "--out", out]) == 0
  assert os.path.getsize(os.path.join(out, "kernels.png")) > 2000
  with np.load(os.path.join(out, "kernels.npz")) as arrays:
    assert arrays["input"].shape == (20, 30, 3)
    edges = arrays["edge_detection_2"][..., 0]
    # The step from 0 to 1 between columns 14 and 15: +1 and -1 beside it.
    np.testing.assert_allclose(edges[5, 13:17], [0, 1, -1, 0], atol=1e-6)
  assert "kernels.png" in capsys.readouterr().out


def test_a_file_that_is_not_an_image_is_one_sentence(tmp_path, capsys):
  path = tmp_path / "notes.txt"
  path.write_text("not pixels\n")
  assert main(["visualize", "kernels", "--image", str(path),
               "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("cnnjax: error:") and "is not an image file" in err
  assert len(err.splitlines()) == 1
  assert not os.path.exists(tmp_path / "out" / "kernels.png")
  # --image belongs to kernels; other methods, and no image, need a run.
  assert main(["visualize", "filters", "--image", str(path)]) == 2
  assert "kernels method only" in capsys.readouterr().err
  assert main(["visualize", "kernels"]) == 2
  assert "needs --workdir" in capsys.readouterr().err
