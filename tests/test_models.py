"""Every registered model: shapes, finite outputs, gradients, pinned sizes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, list_models, model_input_shape, register_model

# Pinned parameter counts for 10 classes and each model's default input.
PARAMS = {
    "logistic_regression": 410,  # 40 * 10 + 10
    "mlp": 15_210,
    "mnist1d_mlp": 15_210,  # MNIST-1D paper, Table 1
    "mnist1d_cnn": 5_210,  # MNIST-1D paper: 150 + 1,900 + 1,900 + 1,260
    # PyTorch's GRU (the paper's 5,134) has two more bias vectors per direction.
    "mnist1d_gru": 5_110,
    # 156 + 2,416 + 48,120 + 10,164 + 850 (C3 fully connected).
    "lenet5": 61_706,
    "lenet5_relu": 61_706,
}
# ImageNet models, pinned for 1000 classes and 224x224x3 (torchvision's counts;
# vgg*_bn keep their conv biases as torchvision does; LRN has no parameters).
PARAMS_1000 = {
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
    "vgg11_lrn": 132_863_336, "vgg11_lrn_bn": 132_868_840,
    "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    # Config C: the third convolution of stages 3-5 is 1x1.
    "vgg16_1x1": 133_638_952, "vgg16_1x1_bn": 133_647_400,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
}
# Smaller stand-ins for the gradient test, so that it stays fast on a CPU:
# (input shape, overrides). Parameter counts above use the real sizes.
SMALL = {name: ((32, 32, 3), {"hidden": 32}) for name in PARAMS_1000}
# Compiling a deep network's init and gradient costs seconds on a CPU, so the
# gradient test runs one member per code path of a family: the others differ
# only in stage lists, which the parameter counts and `summarize` (every
# model, test_analysis.py) check.
GRADIENT_REPRESENTATIVES = [
    n for n in list_models()
    if not n.startswith("vgg") or n in ("vgg11_lrn_bn", "vgg16_1x1")]


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_every_model_has_a_pinned_count():
  assert sorted({**PARAMS, **PARAMS_1000}) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
  classes = 1000 if name in PARAMS_1000 else 10
  model = create_model(name, num_classes=classes)
  x = jnp.zeros((1, *model_input_shape(name)))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert _count(variables["params"]) == {**PARAMS, **PARAMS_1000}[name]


@pytest.mark.parametrize("name", GRADIENT_REPRESENTATIVES)
def test_forward_and_every_parameter_gets_a_gradient(name):
  shape, overrides = SMALL.get(name, (model_input_shape(name), {}))
  model = create_model(name, num_classes=7, **overrides)
  x = jax.random.normal(jax.random.key(1), (3, *shape))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  logits = jax.jit(model.apply)(variables, x)
  assert logits.shape == (3, 7)
  assert np.all(np.isfinite(logits))

  def loss(params):
    out = model.apply(dict(variables, params=params), x, train=True,
                      rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])[0]
    return jnp.sum(jax.nn.log_softmax(out)[:, 0])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_overrides_win_and_unknown_options_are_reported():
  wide = create_model("mnist1d_cnn", features=(8, 8, 8))
  x = jnp.zeros((1, 40, 1))
  params = jax.eval_shape(lambda: wide.init(jax.random.key(0), x))["params"]
  assert params["conv1"]["kernel"].shape == (5, 1, 8)
  with pytest.raises(CnnjaxError, match="has no option 'widht'"):
    create_model("mnist1d_cnn", widht=3)
  with pytest.raises(CnnjaxError, match="unknown model 'lenet'; did you mean"):
    create_model("lenet")


def test_register_model_decorator_and_duplicates():
  from cnnjax.models import registry

  @register_model("_test_tiny", input_shape=(4,))
  class Tiny(nn.Module):
    num_classes: int = 2

    @nn.compact
    def __call__(self, x, *, train=False):
      return nn.Dense(self.num_classes)(x)

  try:
    assert "_test_tiny" in list_models("_test*")
    assert isinstance(create_model("_test_tiny", num_classes=3), Tiny)
    with pytest.raises(ValueError, match="registered twice"):
      register_model("_test_tiny", input_shape=(4,))(Tiny)
  finally:
    registry._REGISTRY.pop("_test_tiny")


def test_lenet5_layer_shapes():
  model = create_model("lenet5")
  x = jnp.zeros((2, 32, 32, 1))
  _, inter = model.apply(model.init(jax.random.key(0), x), x,
                         capture_intermediates=True, mutable=["intermediates"])
  shapes = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items()
            if k != "__call__"}
  assert shapes == {"c1": (2, 28, 28, 6), "s2": (2, 14, 14, 6),
                    "c3": (2, 10, 10, 16), "s4": (2, 5, 5, 16), "c5": (2, 120),
                    "f6": (2, 84), "head": (2, 10)}


def test_mnist1d_cnn_lengths_match_the_reference():
  # 40 -> 19 -> 10 -> 5 positions, as (L - K + 2P) / S + 1 with floor.
  model = create_model("mnist1d_cnn")
  x = jnp.zeros((2, 40, 1))
  _, inter = model.apply(model.init(jax.random.key(0), x), x,
                         capture_intermediates=True, mutable=["intermediates"])
  lengths = [inter["intermediates"][f"conv{i}"]["__call__"][0].shape[1] for i in (1, 2, 3)]
  assert lengths == [19, 10, 5]
