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


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_every_model_has_a_pinned_count():
  assert sorted(PARAMS) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
  model = create_model(name, num_classes=10)
  x = jnp.zeros((1, *model_input_shape(name)))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert _count(variables["params"]) == PARAMS[name]


@pytest.mark.parametrize("name", list_models())
def test_forward_and_every_parameter_gets_a_gradient(name):
  model = create_model(name, num_classes=7)
  x = jax.random.normal(jax.random.key(1), (3, *model_input_shape(name)))
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
  assert shapes == {"c1": (2, 28, 28, 6), "c3": (2, 10, 10, 16), "c5": (2, 120),
                    "f6": (2, 84), "head": (2, 10)}


def test_mnist1d_cnn_lengths_match_the_reference():
  # 40 -> 19 -> 10 -> 5 positions, as (L - K + 2P) / S + 1 with floor.
  model = create_model("mnist1d_cnn")
  x = jnp.zeros((2, 40, 1))
  _, inter = model.apply(model.init(jax.random.key(0), x), x,
                         capture_intermediates=True, mutable=["intermediates"])
  lengths = [inter["intermediates"][f"conv{i}"]["__call__"][0].shape[1] for i in (1, 2, 3)]
  assert lengths == [19, 10, 5]
