"""Attribution methods: ReLU rules by hand, the maps on tiny runs, every method end to end."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.viz import attribution, registry
from cnnjax.viz.registry import Options
from cnnjax.viz.relu_rules import modified_relu_gradient
from cnnjax.ops import random as random_ops
from viz_fixtures import tiny_run

METHODS = ("saliency", "smoothgrad", "guided-backprop", "deconvnet", "gradcam",
           "occlusion", "integrated-gradients", "sanity-check")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
  """Every method run once through the registry on tiny_run: name -> (result, npz)."""
  out_dir = str(tmp_path_factory.mktemp("attribution"))
  results = {}
  for name in METHODS:
    result = registry.run_method(name, tiny_run(), Options(), out_dir)
    npz = dict(np.load(os.path.join(out_dir, f"{name}.npz")))
    results[name] = (result, npz)
  return results


# ---------------------------------------------------------------- ReLU rules by hand


def _hand_network():
  rng = np.random.default_rng(2)
  w1 = rng.normal(size=(5, 8)).astype(np.float32)
  b1 = rng.normal(size=8).astype(np.float32)
  w2 = rng.normal(size=(8, 6)).astype(np.float32)
  b2 = rng.normal(size=6).astype(np.float32)
  w3 = rng.normal(size=(6, 3)).astype(np.float32)
  x = rng.normal(size=(1, 5)).astype(np.float32)
  return x, (w1, b1, w2, b2, w3)


def _forward(x, params):
  w1, b1, w2, b2, w3 = params
  h = jax.nn.relu(x @ w1 + b1)
  h = jax.nn.relu(h @ w2 + b2)
  return h @ w3


def _hand_backward(x, params, rule, target=1):
  """The input gradient of output `target`, backward pass written out."""
  w1, b1, w2, b2, w3 = params
  z1 = x[0] @ w1 + b1
  z2 = np.maximum(z1, 0) @ w2 + b2
  passes = {"plain": lambda z, g: g * (z > 0),
            "guided": lambda z, g: g * (z > 0) * (g > 0),
            "deconvnet": lambda z, g: g * (g > 0)}[rule]
  g_z2 = passes(z2, w3[:, target])
  g_z1 = passes(z1, w2 @ g_z2)
  return (w1 @ g_z1)[None], (z1, z2, w3[:, target], w2 @ g_z2)


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_relu_rules_match_the_hand_computed_backward_pass(rule):
  x, params = _hand_network()
  modified = modified_relu_gradient(_forward, rule)
  np.testing.assert_allclose(modified(x, params), _forward(x, params), rtol=1e-6)
  got = jax.grad(lambda x: modified(x, params)[0, 1])(x)
  want, (z1, z2, g_h2, _) = _hand_backward(x, params, rule)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The case is informative: forward and gradient signs disagree somewhere,
  # so the rules differ from the plain gradient and from each other.
  assert np.any((z2 > 0) & (g_h2 < 0)) and np.any((z2 <= 0) & (g_h2 > 0))
  plain, _ = _hand_backward(x, params, "plain")
  other, _ = _hand_backward(x, params, "deconvnet" if rule == "guided" else "guided")
  np.testing.assert_allclose(jax.grad(lambda x: _forward(x, params)[0, 1])(x), plain,
                             rtol=1e-5, atol=1e-6)
  assert np.abs(want - plain).max() > 1e-3 and np.abs(want - other).max() > 1e-3


def test_relu_rules_on_a_flax_module_and_under_jit():
  x, params = _hand_network()
  w1, b1, w2, b2, w3 = params

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Dense(8, name="a")(x))
      x = nn.relu(nn.Dense(6, name="b")(x))
      return nn.Dense(3, use_bias=False, name="c")(x)

  variables = {"params": {"a": {"kernel": w1, "bias": b1}, "b": {"kernel": w2, "bias": b2},
                          "c": {"kernel": w3}}}
  apply = lambda v, x: Net().apply(v, x)
  guided = modified_relu_gradient(apply, "guided")
  got = jax.jit(jax.grad(lambda x: guided(variables, x)[0, 1]))(x)
  want, _ = _hand_backward(x, params, "guided")
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_relu_rules_on_a_resnet_keep_the_forward_value():
  from cnnjax.models import create_model

  model = create_model("resnet20", depth=8, widths=(4, 8, 8), num_classes=3)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)
  apply = lambda x: model.apply(variables, x, train=False)
  guided = modified_relu_gradient(apply, "guided")

  @jax.jit
  def compare(x):
    plain = jax.grad(lambda x: apply(x)[:, 0].sum())(x)
    changed = jax.grad(lambda x: guided(x)[:, 0].sum())(x)
    return guided(x) - apply(x), plain, changed

  forward_gap, plain, changed = compare(x)
  assert np.abs(np.asarray(forward_gap)).max() < 1e-5
  assert np.abs(np.asarray(plain - changed)).max() > 1e-4


def test_unknown_relu_rule_is_a_clear_error():
  with pytest.raises(CnnjaxError, match="guided, deconvnet"):
    modified_relu_gradient(_forward, "smooth")


# ---------------------------------------------------------------- gradient maps


def test_saliency_is_the_absolute_logit_gradient(outputs):
  run = tiny_run()
  _, npz = outputs["saliency"]
  examples = run.examples(run.eval_split, 4)
  for i in range(4):
    label = int(examples.labels[i])
    grad = jax.grad(lambda x: run.logits(x[None])[0, label])(jnp.asarray(examples.inputs[i]))
    np.testing.assert_allclose(npz["maps"][i], np.abs(np.asarray(grad)).max(-1),
                               rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(npz["targets"], examples.labels)


def test_smoothgrad_without_noise_is_the_gradient(outputs):
  _, saliency = outputs["saliency"]
  output = attribution.smoothgrad(tiny_run(), Options(extra={"noise": 0.0, "samples": 3}))
  np.testing.assert_allclose(output.arrays["gradients"], saliency["gradients"],
                             rtol=1e-4, atol=1e-7)
  # With noise the default map differs from the plain gradient.
  _, noisy = outputs["smoothgrad"]
  assert np.abs(noisy["gradients"] - saliency["gradients"]).max() > 1e-6


def test_target_class_and_predicted_options():
  output = attribution.saliency(tiny_run(), Options(target_class=2, num_examples=2))
  np.testing.assert_array_equal(output.arrays["targets"], [2, 2])
  output = attribution.saliency(tiny_run(), Options(num_examples=2,
                                                    extra={"use": "predicted"}))
  np.testing.assert_array_equal(output.arrays["targets"], output.arrays["predicted"])
  with pytest.raises(CnnjaxError, match="out of range"):
    attribution.saliency(tiny_run(), Options(target_class=9))


def test_integrated_gradients_are_complete(outputs):
  _, npz = outputs["integrated-gradients"]
  difference = np.abs(npz["score_difference"])
  assert np.all(difference > 1e-3)
  assert np.all(npz["completeness_gap"] < 0.02 * difference), (
      npz["completeness_gap"], difference)
  np.testing.assert_allclose(npz["attributions"].reshape(4, -1).sum(1),
                             npz["score_difference"], atol=0.02 * difference.max())


# ---------------------------------------------------------------- region model


class _Split(nn.Module):
  """(B, H, W, C) -> (B, H, W, 2): the grey image inside / outside the top-left quadrant."""

  @nn.compact
  def __call__(self, x):
    h, w = x.shape[1:3]
    inside = ((jnp.arange(h)[:, None] < h // 2) & (jnp.arange(w)[None, :] < w // 2))
    inside = inside[None, :, :, None].astype(x.dtype)
    grey = x.mean(-1, keepdims=True)
    return jnp.concatenate([grey * inside, grey * (1 - inside)], axis=-1)


class _RegionModel(nn.Module):
  """Class 0's score is the mean brightness of the top-left quadrant."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    features = _Split(name="features")(x)
    mean = features.mean(axis=(1, 2))  # (B, 2)
    return jnp.stack([4.0 * mean[:, 0], 4.0 / 3.0 * mean[:, 1]], axis=-1)


def _region_run():
  from cnnjax.data.arrays import ArrayDataset
  from cnnjax.viz import make_trained as make_run

  images = np.full((4, 32, 32, 3), 200, np.uint8)
  labels = np.array([0, 1, 0, 1])
  dataset = ArrayDataset(name="flat", num_classes=2,
                         splits={"train": {"image": images, "label": labels},
                                 "test": {"image": images, "label": labels}})
  model = _RegionModel()
  variables = random_ops.init(model, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  return make_run(model, variables, dataset, stats=((0.3,) * 3, (0.3,) * 3))


def test_gradcam_matches_the_hand_computed_map():
  run = _region_run()
  output = attribution.gradcam(run, Options(num_examples=2, target_class=0))
  assert output.arrays["layer"] == "features"  # the default: last spatial layer
  maps = output.arrays["maps"]
  assert maps.shape == (2, 32, 32) and maps.min() >= 0
  # d score_0 / d A = 4 / (H W) on channel 0, 0 on channel 1, so the map is
  # ReLU(4 / (H W) * A_0): the input value inside the quadrant, 0 outside.
  value = (200 / 255 - 0.3) / 0.3
  want = np.zeros((32, 32), np.float32)
  want[:16, :16] = 4.0 / (32 * 32) * value
  np.testing.assert_allclose(maps[0], want, rtol=1e-4, atol=1e-7)
  assert output.arrays["guided_gradcam"].shape == (2, 32, 32, 3)


def test_gradcam_on_tiny_run_is_non_negative_and_image_sized(outputs):
  _, npz = outputs["gradcam"]
  assert npz["maps"].shape == (4, 32, 32) and npz["maps"].min() >= 0
  assert str(npz["layer"]) == "s4"
  with pytest.raises(CnnjaxError, match="no layer 'nope'"):
    attribution.gradcam(tiny_run(), Options(layer="nope"))


def test_occlusion_finds_the_region_that_drives_the_score():
  run = _region_run()
  output = attribution.occlusion(run, Options(num_examples=1, target_class=0))
  drops, starts = output.arrays["drops"][0], output.arrays["window_starts"]
  assert int(output.arrays["size"]) == 8 and int(output.arrays["stride"]) == 4
  best = starts[np.argmax(drops)]
  assert best[0] + 8 <= 16 and best[1] + 8 <= 16  # a window inside the quadrant
  inside = (starts[:, 0] + 8 <= 16) & (starts[:, 1] + 8 <= 16)
  assert drops[inside].min() > 0 > drops[(starts[:, 0] >= 16) | (starts[:, 1] >= 16)].max()
  maps = output.arrays["maps"][0]
  assert maps.shape == (32, 32) and maps[:16, :16].mean() > 0 > maps[16:, 16:].mean()


# ---------------------------------------------------------------- sanity check


def test_sanity_check_reports_lower_rank_correlation(outputs):
  _, npz = outputs["sanity-check"]
  assert list(npz["methods"]) == ["saliency", "guided backprop", "Grad-CAM"]
  stages = list(npz["stages"])
  assert stages[0] == "head" and stages[-1].split(",") == ["c1", "c3", "c5", "f6", "head"]
  assert npz["spearman"].shape == (len(stages), 3)
  assert npz["spearman_per_example"].shape == (len(stages), 3, 4)
  assert npz["spearman"][-1, 0] < 0.8  # saliency with every layer re-initialised
  assert attribution.spearman(npz["trained_maps"][0, 0], npz["trained_maps"][0, 0]) == \
      pytest.approx(1.0)
  assert attribution.spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", METHODS)
def test_every_method_writes_a_figure_and_arrays(outputs, name):
  assert name in registry.method_names()
  result, npz = outputs[name]
  pngs = [f for f in result["files"] if f.endswith(".png")]
  assert pngs and all(os.path.getsize(f) > 1000 for f in pngs)
  assert any(f.endswith(f"{name}.npz") for f in result["files"])
  assert np.all(np.isfinite(npz["images"])) and len(npz["labels"]) == 4
  assert result["caption"]


def test_a_network_without_relus_is_said_to_get_the_plain_gradient():
  from cnnjax.models import create_model
  from cnnjax.viz.relu_rules import has_relu

  x = np.zeros((1, 32, 32, 1), np.float32)
  classic = create_model("lenet5", num_classes=4)  # tanh and average pooling
  variables = random_ops.init(classic, jax.random.key(0), x)
  apply = lambda a: classic.apply(variables, a)  # noqa: E731
  assert not has_relu(apply, x)
  assert has_relu(tiny_run().logits, tiny_run().examples(n=1).inputs)
  fn = modified_relu_gradient(lambda a: apply(a)[0, 1], "guided")
  np.testing.assert_allclose(jax.grad(fn)(x), jax.grad(lambda a: apply(a)[0, 1])(x),
                             rtol=1e-6, atol=1e-8)
