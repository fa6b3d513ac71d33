"""config.model.kernel_init: the re-drawn kernels have each scheme's scale,
everything else keeps the model's init, every model family takes it, and a
wrong name is one sentence before any work."""

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import config as config_lib
from cnnjax.cli import main
from cnnjax.errors import CnnjaxError
from cnnjax.models import (create_model, list_models, model_input_dtype,
                           model_input_shape)
from cnnjax.runs import model_for
from cnnjax.train import kernel_init
from cnnjax.ops import random as random_ops
from conftest import EXPERIMENTS

# (variance scale, fan, distribution) of each scheme; fan None: fixed std.
EXPECTED = {"lecun_normal": (1.0, "in", "normal"), "lecun_uniform": (1.0, "in", "uniform"),
            "glorot_normal": (1.0, "avg", "normal"),
            "glorot_uniform": (1.0, "avg", "uniform"),
            "he_normal": (2.0, "in", "normal"), "he_uniform": (2.0, "in", "uniform"),
            "he_normal_fan_out": (2.0, "out", "normal"),
            "he_uniform_fan_out": (2.0, "out", "uniform"),
            "normal_0.01": (None, None, "normal")}


class Layers(nn.Module):
  """A Dense, a conv and a grouped conv (4 groups) on (B, 8, 8, 64)."""

  @nn.compact
  def __call__(self, x, train=False):
    a = nn.Dense(512, name="dense")(x)
    b = nn.Conv(128, (3, 3), name="conv")(x)
    c = nn.Conv(128, (3, 3), feature_group_count=4, name="grouped")(x)
    return a.sum() + b.sum() + c.sum()


# kernel shape, (fan_in, fan_out) as torch counts them.
FANS = {"dense": ((64, 512), (64, 512)),
        "conv": ((3, 3, 64, 128), (9 * 64, 9 * 128)),
        "grouped": ((3, 3, 16, 128), (9 * 16, 9 * 128))}


def _variables():
  x = jnp.ones((1, 8, 8, 64))
  return Layers().init(jax.random.key(0), x), x


def _config(name, seed=0):
  config = config_lib.base_config()
  config.seed = seed
  with config.model.unlocked():
    config.model.kernel_init = name
  return config


def test_the_schemes_are_the_names_config_validation_knows():
  assert tuple(kernel_init.SCHEMES) == config_lib.base.KERNEL_INITS == tuple(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_scheme_draws_kernels_of_its_scale_and_leaves_biases(name):
  variables, x = _variables()
  drawn = kernel_init.from_config(_config(name), variables, model=Layers(), example=x)
  scale, fan, distribution = EXPECTED[name]
  for layer, (shape, (fan_in, fan_out)) in FANS.items():
    kernel = np.asarray(drawn["params"][layer]["kernel"])
    assert kernel.shape == shape
    if scale is None:
      std = 0.01
    else:
      n = {"in": fan_in, "out": fan_out, "avg": (fan_in + fan_out) / 2}[fan]
      std = math.sqrt(scale / n)
    # 18,432 draws or more: the sample std is within 2% (4 sigma) of the true one.
    assert np.std(kernel) == pytest.approx(std, rel=0.02), layer
    assert abs(np.mean(kernel)) < 0.04 * std
    if distribution == "uniform":  # U(-b, b), b = sqrt(3) std: reaches near b.
      bound = math.sqrt(3) * std
      assert np.max(np.abs(kernel)) <= bound
      assert np.max(np.abs(kernel)) > 0.99 * bound
    elif scale is not None:  # jax's truncated normal: cut at 2 sigma, rescaled to std.
      assert 2.2 < np.max(np.abs(kernel)) / std <= 2 / 0.87962566 + 1e-4
    else:  # A plain normal.
      assert np.max(np.abs(kernel)) / std > 3.5
    np.testing.assert_array_equal(drawn["params"][layer]["bias"],
                                  variables["params"][layer]["bias"])


def test_the_same_seed_draws_the_same_kernels_and_another_seed_others():
  variables, x = _variables()
  one = kernel_init.from_config(_config("he_normal", 3), variables, model=Layers(), example=x)
  again = kernel_init.from_config(_config("he_normal", 3), variables, model=Layers(),
                                  example=x)
  other = kernel_init.from_config(_config("he_normal", 4), variables, model=Layers(),
                                  example=x)
  for layer in FANS:
    np.testing.assert_array_equal(one["params"][layer]["kernel"],
                                  again["params"][layer]["kernel"])
    assert not np.allclose(one["params"][layer]["kernel"], other["params"][layer]["kernel"])
  # Each layer has its own key: two kernels of one shape differ.
  assert not np.allclose(one["params"]["conv"]["kernel"][..., :16, :],
                         one["params"]["grouped"]["kernel"])


def test_no_scheme_leaves_the_models_init_bit_identical():
  variables, x = _variables()
  for name in ("", None):
    config = _config(name)
    kept = kernel_init.from_config(config, variables, model=Layers(), example=x)
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(variables)):
      assert a is b
  # A config without the key (every config by default) is the same.
  config = config_lib.base_config()
  assert "kernel_init" not in config.model
  kept = kernel_init.from_config(config, variables, model=Layers(), example=x)
  assert all(a is b for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(variables)))


def test_an_unknown_scheme_is_one_sentence_naming_the_known_ones():
  config = _config("nope")
  with config.unlocked():
    config.model.name, config.dataset.name = "mlp", "mnist1d"
  with pytest.raises(CnnjaxError, match="kernel_init must be one of lecun_normal.*"
                                        "got 'nope'"):
    config_lib.validate(config)
  with pytest.raises(CnnjaxError, match="unknown kernel initializer 'xavier'"):
    kernel_init.scheme("xavier")


def test_the_cli_refuses_an_unknown_scheme_with_exit_2(tmp_path, capsys):
  code = main(["train", "--config", f"{EXPERIMENTS}/mnist1d/mlp.py",
               "--workdir", str(tmp_path / "w"), "--config.model.kernel_init=nope"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert len(err) == 1 and "kernel_init" in err[0] and "'nope'" in err[0], err
  assert "he_normal_fan_out" in err[0]
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_the_setting_is_not_passed_to_the_model():
  config = _config("glorot_uniform")
  with config.model.unlocked():
    config.model.name = "mlp"
    config.model.hidden_sizes = (7,)
  dataset = types.SimpleNamespace(num_classes=3, model_fields={})
  model = model_for(config, dataset)
  assert model.hidden_sizes == (7,) and model.num_classes == 3
  assert config_lib.model_fields(config.model) == {"hidden_sizes": (7,)}


# One model per family: dense, 1D conv, recurrent, residual with BatchNorm,
# LeNet-5's sparse C3, locally connected, a text CNN on token ids.
FAMILIES = ("mlp", "mnist1d_cnn", "mnist1d_gru", "resnet20", "lenet5_1998",
            "sharing_mnist1d", "kim_cnn_rand")


def _needs(*names):
  missing = sorted(set(names) - set(list_models()))
  if missing:
    pytest.skip(f"no model {', '.join(missing)} in this checkout")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_model_family_takes_a_kernel_init(name):
  _needs(name)
  fields = {"connectivity": "local"} if name == "sharing_mnist1d" else {}
  model = create_model(name, **fields)
  x = jnp.zeros((2, *model_input_shape(name)), model_input_dtype(name))

  def initialize():
    variables = random_ops.init(model, jax.random.key(0), x, train=False)
    return variables, kernel_init.from_config(_config("he_uniform"), variables,
                                              model=model, example=x)

  before, after = jax.eval_shape(initialize)
  assert jax.tree.structure(before) == jax.tree.structure(after)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_layers_of_other_layouts_keep_their_fans():
  """A locally connected kernel's fan-in is its patch, not patch x positions;
  LeNet-5's sparse C3 keeps its own init."""
  _needs("sharing_mnist1d", "lenet5_1998")
  model = create_model("sharing_mnist1d", connectivity="local")
  x = jnp.zeros((1, 40, 1))
  variables = random_ops.init(model, jax.random.key(0), x, train=False)
  drawn = kernel_init.from_config(_config("he_normal"), variables, model=model, example=x)
  kernel = np.asarray(drawn["params"]["layer2"]["kernel"])  # (positions, 3 x 25, 25)
  assert kernel.ndim == 3
  assert np.std(kernel) == pytest.approx(math.sqrt(2 / kernel.shape[-2]), rel=0.05)

  lenet = create_model("lenet5_1998")
  x = jnp.zeros((1, *model_input_shape("lenet5_1998")))
  variables = lenet.init(jax.random.key(0), x, train=False)
  layout = kernel_init.layouts(lenet, x)
  assert kernel_init.OWN in layout.values()
  drawn = kernel_init.from_config(_config("he_normal"), variables, model=lenet, example=x)
  flat = dict(jax.tree_util.tree_flatten_with_path(variables["params"])[0])
  again = dict(jax.tree_util.tree_flatten_with_path(drawn["params"])[0])
  kept = [path for path in flat if np.array_equal(flat[path], again[path])]
  own = {path for path in kept if path[-1].key == "kernel"}
  assert own and all(tuple(p.key for p in path[:-1]) in layout for path in own)
  assert any(not np.array_equal(flat[p], again[p]) for p in flat if p[-1].key == "kernel")


def test_training_starts_from_the_drawn_kernels_before_a_transfer(monkeypatch):
  """initial_variables draws the kernels, then hands them to the transfer."""
  from cnnjax.data import get_dataset
  from cnnjax.train import setup

  config = config_lib.load_config(f"{EXPERIMENTS}/mnist1d/mlp.py")
  with config.unlocked():
    config.dataset.num_samples = 200
    config.dataset.smoke_data = "synthetic"
    config.smoke = True
  dataset = get_dataset(config.dataset, smoke=True)
  model = model_for(config, dataset)
  own = setup.initial_variables(config, model, dataset)
  seen = []
  monkeypatch.setattr(setup.transfer, "initialize_from",
                      lambda c, v: seen.append(v) or v)
  with config.model.unlocked():
    config.model.kernel_init = "normal_0.01"
  drawn = setup.initial_variables(config, model, dataset)
  assert seen and seen[0] is drawn
  assert np.std(drawn["params"]["dense1"]["kernel"]) == pytest.approx(0.01, rel=0.1)
  assert not np.allclose(drawn["params"]["dense1"]["kernel"], own["params"]["dense1"]["kernel"])
  np.testing.assert_array_equal(drawn["params"]["dense1"]["bias"], own["params"]["dense1"]["bias"])
  with config.model.unlocked():
    config.model.kernel_init = ""
  again = setup.initial_variables(config, model, dataset)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(own)):
    np.testing.assert_array_equal(a, b)
