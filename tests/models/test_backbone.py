"""Feature backbones (features_only): timm's stages, the classifier's maps
and variables, and one-sentence errors."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.models import (MODELS, backbone_variables, create_model,
                           has_backbone, list_models, model_input_shape)
from cnnjax.models.densenet import DenseNet
from cnnjax.models.features import feature_names, intermediate_features
from cnnjax.models.resnet import ResidualNetwork
from cnnjax.models.vgg import VGG
from conftest import fill_variables, import_torchvision

# cnnjax name -> timm name.
TWINS = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "resnext50_32x4d": "resnext50_32x4d",
    "wide_resnet50_2": "wide_resnet50_2",
    "se_resnet50": "seresnet50",
    "se_resnext50_32x4d": "seresnext50_32x4d",
    "vgg16": "vgg16",
    "vgg16_bn": "vgg16_bn",
    "densenet121": "densenet121",
}
FAMILIES = (ResidualNetwork, VGG, DenseNet)
# Layers only the classifier has, after the last stage of every family.
CLASSIFIER_ONLY = {"head", "fc6", "fc7"}


def _timm():
  import_torchvision()  # timm imports it; conftest's shim for 0.28.
  return pytest.importorskip("timm")


@functools.cache
def timm_info(name: str, out_indices=None) -> tuple[list, list]:
  """(channels, reductions) of timm's features_only twin, built on the meta
  device (no weights are drawn)."""
  timm = _timm()
  import torch
  kwargs = {} if out_indices is None else {"out_indices": out_indices}
  with torch.device("meta"):
    net = timm.create_model(name, features_only=True, pretrained=False,
                            **kwargs)
  return net.feature_info.channels(), net.feature_info.reduction()


def _abstract(model, x):
  """(outputs, variables) of `model` on `x`, shapes only."""
  return jax.eval_shape(
      lambda a: model.init_with_output(jax.random.key(0), a), x)


def _check_shapes(backbone, outputs, x):
  info = backbone.feature_info
  assert len(outputs) == len(info)
  spatial = x.shape[1:-1]
  for out, f in zip(outputs, info):
    assert out.shape == (x.shape[0], *(s // f["reduction"] for s in spatial),
                         f["num_chs"]), f


def test_stages_are_numbered_as_timms():
  for name, twin in TWINS.items():
    for out_indices in (None, (1, 3)) + ((2, (-1, 0)) if name == "resnet18"
                                         else ()):
      info = create_model(name, features_only=True,
                          out_indices=out_indices).feature_info
      channels, reductions = timm_info(twin, out_indices)
      assert [f["num_chs"] for f in info] == channels, (name, out_indices)
      assert [f["reduction"] for f in info] == reductions, (name, out_indices)


# The twins traced in the default suite (shapes only, under a second each);
# the others are slow (the DenseNet's variables are also checked below).
QUICK = {"resnet18", "vgg16_bn"}


@pytest.mark.parametrize("name", [
    n if n in QUICK else pytest.param(n, marks=pytest.mark.slow)
    for n in sorted(TWINS)])
def test_the_maps_have_their_shapes_and_the_classifiers_variables(name):
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  classifier = create_model(name)
  _, whole = _abstract(classifier, x)
  order = [n.split("/")[0] for n in feature_names(classifier, whole, x)]
  for out_indices in (None, (1, 3)):
    backbone = create_model(name, features_only=True,
                            out_indices=out_indices)
    outputs, variables = _abstract(backbone, x)
    _check_shapes(backbone, outputs, x)
    # All but the classifier's own layers; with (1, 3) only what runs up to
    # stage 3's module.
    last = order.index(backbone.feature_info[-1]["module"])
    expected = (set(whole["params"]) - CLASSIFIER_ONLY if out_indices is None
                else set(order[:last + 1]) & set(whole["params"]))
    assert set(variables["params"]) == expected
    for collection, tree in variables.items():
      assert jax.tree.map(lambda a: a.shape, tree) == jax.tree.map(
          lambda a: a.shape, {k: whole[collection][k] for k in tree})


def test_the_stage_modules_are_the_last_of_each_stage():
  modules = [f["module"] for f in
             create_model("resnet50", features_only=True).feature_info]
  assert modules == ["stem_bn", "stage1_block2", "stage2_block3",
                     "stage3_block5", "stage4_block2"]
  info = create_model("vgg11_lrn", features_only=True).feature_info
  assert [f["module"] for f in info] == [
      "lrn", "conv2_1", "conv3_2", "conv4_2", "conv5_2", "pool5"]
  info = create_model("densenet121", features_only=True,
                      out_indices=(0, 4)).feature_info
  assert [(f["module"], f["act"], f["index"]) for f in info] == [
      ("stem_bn", "relu", 0), ("final_bn", "relu", 4)]


def test_every_resnet_vgg_and_densenet_has_a_backbone():
  for name in list_models():
    factory = MODELS.get(name).factory
    family = getattr(factory, "func", factory)
    expected = isinstance(family, type) and issubclass(family, FAMILIES)
    assert has_backbone(factory) == expected, name
    if expected:
      info = create_model(name, features_only=True).feature_info
      reductions = [f["reduction"] for f in info]
      assert reductions == sorted(reductions) and len(info) >= 4, name


def _random(abstract, seed=0):
  """Random variables, running statistics included (the eval-mode
  BatchNorms then do more than scale)."""
  variables = fill_variables(abstract, seed)
  rng = np.random.default_rng(seed + 1)

  def stats(path, value):
    name = getattr(path[-1], "key", "")
    if name == "mean":
      return value + 0.1 * rng.standard_normal(value.shape)
    if name == "var":
      return value + 0.5 * rng.random(value.shape)
    return value
  return jax.tree_util.tree_map_with_path(stats, variables)


TINY = {
    "se_resnext50_32x4d": dict(width=16, stage_sizes=(1, 1, 1, 1), groups=4,
                               se_reduction=4),
    "preact_resnet18": dict(width=8, stage_sizes=(1, 1, 1, 1)),
    "resnet20": dict(depth=8),
    "vgg11_bn": dict(widths=(4, 8, 8, 16, 16), hidden=8),
    "vgg11_lrn": dict(widths=(4, 8, 8, 16, 16), hidden=8),
    "densenet121": dict(block_sizes=(1, 2, 1, 1), growth_rate=4,
                        init_features=8),
}


@pytest.mark.parametrize("name", [
    n if n in ("se_resnext50_32x4d", "vgg11_bn", "densenet121")
    else pytest.param(n, marks=pytest.mark.slow) for n in sorted(TINY)])
def test_the_maps_are_the_classifiers_with_its_variables(name):
  classifier = create_model(name, **TINY[name])
  backbone = create_model(name, features_only=True, **TINY[name])
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  variables = _random(jax.eval_shape(classifier.init, jax.random.key(0), x))
  weights = backbone_variables(variables, backbone, x)
  for collection, tree in variables.items():
    assert set(weights[collection]) == set(tree) - CLASSIFIER_ONLY
  info = backbone.feature_info
  modules = [f["module"] for f in info]
  rngs = {"dropout": jax.random.key(1)}  # VGG's FC6/FC7, in training.

  @jax.jit
  def run(variables, weights):
    taps = [intermediate_features(classifier, variables, x, modules,
                                  train=train, rngs=rngs)
            for train in (False, True)]
    maps = [backbone.apply(weights, x),
            backbone.apply(weights, x, train=True, mutable=["batch_stats"])]
    _, state = classifier.apply(variables, x, train=True, rngs=rngs,
                                mutable=["batch_stats"])
    return taps, maps, state

  taps, (maps, (train_maps, new)), state = run(variables, weights)
  for train, outputs, wanted in ((False, maps, taps[0]),
                                 (True, train_maps, taps[1])):
    _check_shapes(backbone, outputs, x)
    for f, got in zip(info, outputs):
      want = wanted[f["module"]]
      # timm's maps follow their activations: the classifier's ReLU after
      # a BatchNorm or VGG's convolution is part of them.
      if re.fullmatch(r"stem_bn|final_bn|conv\d_\d(_bn)?", f["module"]):
        want = jax.nn.relu(want)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{f['module']} train={train}")
  # Training updates the backbone's running statistics as the classifier's.
  assert set(new.get("batch_stats", {})) == set(
      weights.get("batch_stats", {}))
  for key, stats in new.get("batch_stats", {}).items():
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                   atol=1e-6), stats, state["batch_stats"][key])


def test_backbone_variables_refuse_another_models():
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  _, resnet18 = _abstract(create_model("resnet18", width=8), x)
  with pytest.raises(CnnjaxError, match="lack 'params/stage1_block2'"):
    backbone_variables(resnet18, create_model(
        "resnet34", features_only=True, width=8), x)
  with pytest.raises(CnnjaxError, match="has shape .* where the backbone"):
    backbone_variables(resnet18, create_model(
        "resnet18", features_only=True, width=16), x)


@pytest.mark.parametrize("out_indices", [(5,), (), (1, 1), (1, -4), 0, 6,
                                         True, (True,), "ab", (1.5,)])
def test_bad_out_indices_name_the_stages(out_indices):
  with pytest.raises(CnnjaxError, match=r"must be distinct stage numbers "
                     r"from 0 to 4 .*its stages are 0: stem_bn, 1: "):
    create_model("resnet18", features_only=True, out_indices=out_indices)


def test_models_without_stages_say_which_have_them():
  with pytest.raises(CnnjaxError, match="'lenet5_relu' has no feature "
                     "backbone .*ResNet.*VGG and DenseNet"):
    create_model("lenet5_relu", features_only=True)
  with pytest.raises(CnnjaxError, match="needs features_only=True"):
    create_model("resnet18", out_indices=(1, 2))


def _size(name: str) -> tuple[int, ...]:
  """An input every stage's stride divides: 64 for ImageNet nets (32 for
  the 3D ones, on one channel), the registered 32 for CIFAR ones."""
  shape = model_input_shape(name)
  if len(shape) == 4:
    return (32, 32, 32, shape[-1])
  return shape if shape[0] == 32 else (64, 64, shape[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models()
                                  if has_backbone(MODELS.get(n).factory)])
def test_every_backbone_has_its_shapes_and_classifier_variables(name):
  x = jax.ShapeDtypeStruct((1, *_size(name)), jnp.float32)
  backbone = create_model(name, features_only=True)
  outputs, variables = _abstract(backbone, x)
  _check_shapes(backbone, outputs, x)
  _, whole = _abstract(create_model(name), x)
  assert set(variables) == set(whole)
  for collection, tree in whole.items():
    expected = {k: v for k, v in tree.items() if k not in CLASSIFIER_ONLY}
    assert jax.tree.map(lambda a: a.shape, variables[collection]) == (
        jax.tree.map(lambda a: a.shape, expected))
