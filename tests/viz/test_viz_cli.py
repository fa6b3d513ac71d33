"""`cnnjax visualize`: the run loader, every method from the command line, the gallery."""

import html.parser
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.cli import main
from cnnjax.viz import registry
from cnnjax.viz import load_trained as load_run
from viz_fixtures import tiny_run, train_tiny_workdir

ALL_METHODS = ["filters", "activations", "neighbors", "embedding", "patches",
               "saliency", "smoothgrad", "guided-backprop", "deconvnet", "gradcam",
               "occlusion", "integrated-gradients", "class-model", "neuron",
               "deepdream", "style-transfer", "sanity-check", "handcrafted", "kernels",
               "detections", "masks"]
# What a classifier's gallery shows: every method but the detector's and the segmenter's.
CLASSIFIER_METHODS = [m for m in ALL_METHODS if m not in ("detections", "masks")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return train_tiny_workdir(str(tmp_path_factory.mktemp("digits_lenet")))


def test_every_method_of_the_issue_is_registered():
  assert sorted(registry.method_names()) == sorted(ALL_METHODS)


def test_a_run_reaches_any_layer_and_its_gradient():
  run = tiny_run()
  assert run.layer_names() == ["c1", "s2", "c3", "s4", "c5", "f6", "head"]
  x = run.examples(n=2).inputs
  acts = run.activations(x, ["c3", "f6"])
  assert acts["c3"].shape == (2, 10, 10, 16) and acts["f6"].shape == (2, 84)
  # apply_at with the identity edit changes nothing; the gradient with
  # respect to a feature map matches a finite difference.
  np.testing.assert_allclose(run.apply_at(x, "c3", lambda a: a), run.logits(x), rtol=1e-6)
  delta = jnp.zeros_like(acts["c3"])
  score = lambda d: run.apply_at(x, "c3", lambda a: a + d)[0, 1]  # noqa: E731
  grad = jax.grad(score)(delta)
  bump = delta.at[0, 4, 5, 3].set(1e-2)
  assert float((score(bump) - score(delta)) / 1e-2) == pytest.approx(
      float(grad[0, 4, 5, 3]), rel=2e-2, abs=1e-4)


def test_load_run_restores_the_trained_weights(workdir):
  run = load_run(workdir)
  examples = run.examples(n=64)
  assert examples.images.min() >= 0 and examples.images.max() <= 1
  accuracy = np.mean(np.argmax(run.logits(examples.inputs), -1) == examples.labels)
  assert accuracy > 0.5  # 30 Adam steps on the digits: far above chance (0.1)


class _Images(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.sources, self.sections = [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "img":
      self.sources.append(attrs["src"])
    if tag == "section":
      self.sections.append(attrs["id"])


# About 30 s on 2 cores; each method has its own default test: -m slow.
@pytest.mark.slow
def test_the_gallery_shows_every_method_of_a_trained_run(workdir, tmp_path, capsys):
  out = str(tmp_path / "gallery")
  assert main(["visualize", "gallery", "--workdir", workdir, "--out", out,
               "--num-examples", "2", "--steps", "20"]) == 0
  assert "Gallery of 19 methods" in capsys.readouterr().out
  page = _Images()
  with open(os.path.join(out, "index.html")) as f:
    text = f.read()
  page.feed(text)
  assert page.sections == [m for m in registry.method_names() if m in CLASSIFIER_METHODS]
  assert 'class="error"' not in text
  assert len(page.sources) >= len(CLASSIFIER_METHODS)
  for src in page.sources:
    path = os.path.join(out, src)
    assert os.path.getsize(path) > 2000, src  # a real PNG, not an empty figure
  for name in CLASSIFIER_METHODS:
    with np.load(os.path.join(out, f"{name}.npz")) as arrays:
      assert arrays.files, name


@pytest.mark.parametrize("args, message", [
    (["visualize", "salency"], "unknown visualization method 'salency'; did you mean 'saliency'"),
    (["visualize", "gradcam", "--layer", "c9"], "has no layer 'c9'"),
    (["visualize", "saliency", "--split", "validation"], "--split 'validation' is not a split"),
    (["visualize", "saliency", "--indices", "0,x"], "--indices takes integers"),
])
def test_user_errors_are_one_sentence(workdir, capsys, args, message):
  assert main(args + ["--workdir", workdir, "--out", workdir + "/viz_err"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("cnnjax: error:") and message in err[0], err


def test_a_missing_workdir_is_one_sentence(tmp_path, capsys):
  assert main(["visualize", "filters", "--workdir", str(tmp_path / "none")]) == 2
  assert "is not a cnnjax workdir" in capsys.readouterr().err
