"""Segmentation: FCN and U-Net heads on feature backbones, the per-pixel loss
with its ignore label, mean IoU, class maps moving with their images, and
the checks on masks and backbones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.data import augment
from cnnjax.data.arrays import IGNORE_LABEL, ArrayDataset
from cnnjax.errors import CnnjaxError
from cnnjax.evaluators import EvalContext, EvalInputs, batch_outputs, compute
from cnnjax.models import create_model
from cnnjax.models.segmentation import bilinear_kernel
from cnnjax.train import losses, metrics
from cnnjax.ops import random as random_ops


@pytest.mark.parametrize("name,fields", [
    ("fcn", {"variant": "32s"}), ("fcn", {"variant": "16s"}),
    ("fcn", {"variant": "8s", "head_width": 16}), ("unet", {}),
    ("unet", {"backbone": "vgg11"}), ("fcn", {"backbone": "densenet121"})])
@pytest.mark.parametrize("size", [64, 45])
def test_heads_give_logits_at_the_input_size(name, fields, size):
  model = create_model(name, num_classes=5, **fields)
  x = jnp.zeros((2, size, size + 6, 3))
  out, variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), x, train=False))
  assert out.shape == (2, size, size + 6, 5)
  assert "encoder" in variables["params"] or any(
      k.startswith("stage") or k.startswith("features") for k in variables["params"])


# 11 and 15 s on 2 cores: in the slow tier (the heads' shapes, skips and
# upsampling are checked by default above and below).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn", "unet"])
def test_every_parameter_gets_a_gradient(name):
  model = create_model(name, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = random_ops.init(model, jax.random.key(1), x)
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 32, 32)))

  def loss(params):
    out = model.apply(dict(variables, params=params), x, train=True,
                      rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])[0]
    return losses.softmax_cross_entropy(out, labels).mean()

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_fcn_reads_the_stages_its_variant_names_and_starts_its_skips_at_zero():
  x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
  fcn8 = create_model("fcn", num_classes=3, variant="8s")
  variables = random_ops.init(fcn8, jax.random.key(1), x, train=False)
  assert {"score", "score8", "score16", "up16", "up32", "up_final"} <= set(variables["params"])
  assert not jnp.any(variables["params"]["score8"]["kernel"])
  # Learned upsampling starts as bilinear interpolation (FCN's upsample_filt).
  np.testing.assert_allclose(bilinear_kernel(4, 1)[:, :, 0, 0],
                             np.outer([.25, .75, .75, .25], [.25, .75, .75, .25]))
  np.testing.assert_allclose(variables["params"]["up32"]["kernel"][:, :, 1, 1],
                             bilinear_kernel(4, 1)[:, :, 0, 0])
  assert not jnp.any(variables["params"]["up32"]["kernel"][:, :, 0, 1])


@pytest.mark.parametrize("backbone,message", [
    ("resnet1000", "resnet1000"), ("lenet5", "no feature backbone")])
def test_a_backbone_that_cannot_serve_is_one_sentence(backbone, message):
  with pytest.raises(CnnjaxError, match=message):
    model = create_model("fcn", backbone=backbone)
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


def test_pixel_loss_leaves_out_the_ignored_pixels():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
  labels = jnp.asarray(np.random.default_rng(0).integers(0, 5, (2, 3, 4)))
  labels = labels.at[0, 0].set(IGNORE_LABEL).at[1].set(IGNORE_LABEL)
  loss = losses.softmax_cross_entropy(logits, labels)
  logp = jax.nn.log_softmax(logits)
  by_hand = -jnp.take_along_axis(logp[0, 1:], labels[0, 1:, :, None], -1).mean()
  np.testing.assert_allclose(loss, [by_hand, 0.0], rtol=1e-6)
  sums = metrics.classification_sums(logits, labels, loss)
  hits = (jnp.argmax(logits[0, 1:], -1) == labels[0, 1:]).mean()
  np.testing.assert_allclose(sums["accuracy"], hits, rtol=1e-6)
  assert sums["count"] == 2


def test_mean_iou_by_hand():
  # Truth / prediction over 8 pixels of 3 classes (class 2 never occurs nor
  # is predicted in image 2; one pixel ignored).
  truth = np.array([[[0, 0, 1, 1]], [[0, 1, 1, IGNORE_LABEL]]])
  predicted = np.array([[[0, 1, 1, 1]], [[0, 0, 1, 2]]])
  logits = jax.nn.one_hot(predicted, 3) * 5.0
  inputs = EvalInputs(logits=logits, labels=jnp.asarray(truth),
                      loss=jnp.zeros(2), multilabel=False)
  outputs = jax.device_get(batch_outputs(("segmentation",), inputs))
  result = compute(("segmentation",), outputs,
                   EvalContext("segmentation", 3, ("bg", "a", "b")))
  # class 0: TP 2, FP 1, FN 1 -> 0.5; class 1: TP 3, FP 1, FN 1 -> 0.6; class 2 absent.
  assert result.metrics["mean_iou"] == pytest.approx((0.5 + 0.6) / 2)
  assert result.metrics["pixel_accuracy"] == pytest.approx(5 / 7)
  assert result.artifacts["iou_per_class"] == {"bg": 0.5, "a": pytest.approx(0.6), "b": None}


def test_class_maps_move_with_their_images():
  rng = np.random.default_rng(0)
  labels = jnp.asarray(rng.integers(0, 4, (6, 9, 11)), jnp.int32)
  images = jnp.stack([labels / 10, 1 - labels / 10], -1).astype(jnp.float32)
  config = ml_collections.ConfigDict({"translate": 3, "translate_mode": "constant",
                                      "flip": True})
  out = augment.augment_batch({"image": images, "label": labels}, jax.random.key(1), config)
  assert out["label"].dtype == jnp.int32
  np.testing.assert_allclose(out["image"][..., 0] * 10, out["label"], atol=1e-5)
  assert not np.array_equal(out["label"], labels)
  with pytest.raises(CnnjaxError, match="resample the class maps"):
    augment.augment_batch({"image": images, "label": labels}, jax.random.key(1),
                          ml_collections.ConfigDict({"rotate": 10.0}))


def test_masks_must_fit_their_images():
  images = np.zeros((4, 8, 8, 3), np.uint8)
  with pytest.raises(CnnjaxError, match="masks of shape"):
    ArrayDataset("bad", {"train": {"image": images, "label": np.zeros((4, 8, 7), np.int32)}},
                 num_classes=3, task="segmentation")
  with pytest.raises(CnnjaxError, match="mask values"):
    ArrayDataset("bad", {"train": {"image": images,
                                   "label": np.full((4, 8, 8), 7, np.int32)}},
                 num_classes=3, task="segmentation")
