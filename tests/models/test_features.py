"""Named intermediate features and head replacement on registered models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model
from cnnjax.models.features import (feature_names, intermediate_features,
                                    layer_shapes, replace_head)
from cnnjax.ops import random as random_ops


@pytest.fixture(scope="module")
def lenet():
  model = create_model("lenet5_relu")
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  return model, random_ops.init(model, jax.random.key(1), x), x


def test_feature_names_follow_the_call_order(lenet):
  model, variables, x = lenet
  assert feature_names(model, variables, x) == [
      "c1", "s2", "c3", "s4", "c5", "f6", "head"]


def test_intermediate_features_are_the_layer_outputs(lenet):
  model, variables, x = lenet
  feats = intermediate_features(model, variables, x, ["s4", "head", "c1"])
  assert list(feats) == ["s4", "head", "c1"]
  assert feats["s4"].shape == (2, 5, 5, 16)
  np.testing.assert_allclose(feats["head"], model.apply(variables, x),
                             rtol=1e-6)
  # c1 is the convolution before its ReLU.
  c1 = variables["params"]["c1"]
  expected = jax.lax.conv_general_dilated(
      x, c1["kernel"], (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + c1["bias"]
  np.testing.assert_allclose(feats["c1"], expected, rtol=1e-5, atol=1e-5)


def test_layer_shapes_need_no_variables(lenet):
  model, variables, x = lenet
  shapes = layer_shapes(model, None, x)
  assert list(shapes) == feature_names(model, variables, x)
  assert shapes["s4"] == (2, 5, 5, 16) and shapes["head"] == (2, 10)
  assert layer_shapes(model, variables, x) == shapes


def test_unknown_feature_names_suggest_close_ones(lenet):
  model, variables, x = lenet
  with pytest.raises(CnnjaxError, match="no layer 'c4'.*did you mean"):
    intermediate_features(model, variables, x, ["c4"])


def test_replace_head_keeps_the_body_and_changes_the_classes(lenet):
  model, variables, x = lenet
  new = replace_head(variables, 3, jax.random.key(5))
  assert new["params"]["head"]["kernel"].shape == (84, 3)
  assert np.all(new["params"]["head"]["bias"] == 0)
  for name in ("c1", "c3", "c5", "f6"):
    assert new["params"][name] is variables["params"][name]
  out = create_model("lenet5_relu", num_classes=3).apply(new, x)
  assert out.shape == (2, 3)
  with pytest.raises(CnnjaxError, match="no classifier layer 'fc'"):
    replace_head(variables, 3, jax.random.key(5), head="fc")


def test_num_classes_zero_returns_features_for_vgg():
  model = create_model("vgg11", num_classes=0, hidden=16)
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert "head" not in variables["params"]
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert out.shape == (1, 16)
