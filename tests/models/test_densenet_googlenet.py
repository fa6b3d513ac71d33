"""DenseNet and GoogLeNet: sizes, FLOPs, outputs, aux heads, gradients."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax.models.densenet  # noqa: F401  (registers the models)
import cnnjax.models.googlenet  # noqa: F401
from cnnjax import layers
from cnnjax.analysis import summarize
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, model_input_shape
from cnnjax.layers.pooling import ceil_mode_padding
from cnnjax.models.googlenet import (INCEPTION_TABLE, AuxClassifier,
                                     Inception, NaiveInception)
from cnnjax.train.losses import softmax_cross_entropy
from cnnjax.train.step import split_outputs
from conftest import DEEPER_SIBLINGS, random_variables

# (name, overrides) -> trainable parameters at the registered input shape,
# with each model's registered number of classes (1000 for ImageNet nets).
PARAMS = {
    # torchvision's densenet*.
    ("densenet121", ()): 7_978_856,
    ("densenet169", ()): 14_149_480,
    ("densenet201", ()): 20_013_928,
    ("densenet161", ()): 28_681_000,
    # CIFAR, 10 classes: the paper's 0.8M and 1.0M (Table 2).
    ("densenet_bc100_k12", ()): 769_162,
    ("densenet40_k12", ()): 1_019_722,
    # The paper's GoogLeNet: conv biases, 5x5 kernels. The aux heads add
    # (128 C + 128) + (2048 * 1024 + 1024) + (1024 * 1000 + 1000) each,
    # C = 512 after 4a and 528 after 4d.
    ("googlenet", (("aux_logits", False),)): 6_998_552,
    ("googlenet", ()): 13_378_280,
    # torchvision's googlenet; with aux heads its 13,004,888.
    ("googlenet_tv", ()): 6_624_904,
    ("googlenet_tv", (("aux_logits", True),)): 13_004_888,
    # Naive modules: channels grow to 4,944 before the classifier.
    ("googlenet_naive", ()): 97_526_008,
    ("googlenet_naive", (("aux_logits", True),)): 104_274_376,
}

# Small stand-ins for the whole-network gradient test: (input shape,
# overrides). Whole networks are compiled for the paper's GoogLeNet and two
# DenseNets (ImageNet stem with bottlenecks and dropout; CIFAR stem with
# plain layers); the other GoogLeNet paths (BatchNorm, naive modules, both
# aux poolings) are compiled as single blocks, which is much cheaper.
SMALL_DENSENET = dict(block_sizes=(2, 2), growth_rate=4, init_features=8)
SMALL = {
    "densenet121": ((32, 32, 3), dict(SMALL_DENSENET, drop_rate=0.2)),
    "densenet40_k12": ((16, 16, 3), SMALL_DENSENET),
    "googlenet": ((64, 64, 3), dict(width_multiplier=0.25)),
}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, shape):
  x = jnp.zeros((1, *shape))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


@functools.lru_cache(maxsize=None)
def _summary(name, **overrides):
  return summarize(name, xla_flops=False, **overrides)


@pytest.mark.parametrize("name, overrides", [
    pytest.param(*key, marks=pytest.mark.slow) if key[0] in DEEPER_SIBLINGS else key
    for key in PARAMS])
def test_parameter_count(name, overrides):
  variables = _abstract_init(create_model(name, **dict(overrides)),
                             model_input_shape(name))
  assert _count(variables["params"]) == PARAMS[name, overrides]


@pytest.mark.parametrize("name, gmacs, tolerance", [
    ("densenet121", 2.83, 0.02),  # torchvision: 2.83 GFLOPS (multiply-adds).
    pytest.param("densenet161", 7.73, 0.02, marks=pytest.mark.slow),  # torchvision: 7.73.
    ("googlenet_tv", 1.50, 0.02),  # torchvision: 1.50.
    # The paper's "1.5 billion multiply-adds"; its 5x5 branches (and the
    # aux heads, which also run in inference) make it 1.59.
    ("googlenet", 1.5, 0.07),
])
def test_flops_against_the_published_numbers(name, gmacs, tolerance):
  macs = _summary(name).flops_counted / 2
  assert macs == pytest.approx(gmacs * 1e9, rel=tolerance)


@pytest.mark.parametrize("name", ["googlenet", "googlenet_tv"])
def test_googlenet_spatial_sizes_are_the_papers(name):
  rows = {r.name: r for r in _summary(name).rows}
  sizes = [rows[n].output_shape[:2] for n in (
      "conv1/conv", "maxpool1", "maxpool2", "maxpool3", "maxpool4")]
  assert sizes == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
  assert rows["inception3a/pool_proj/conv"].output_shape == (28, 28, 32)
  assert rows["inception5b/pool_proj/conv"].output_shape == (7, 7, 128)
  # The paper's 5x5 branch; torchvision's is 3x3 (same channels).
  k = 5 if name == "googlenet" else 3
  assert rows["inception3a/b5x5/conv"].params == (
      k * k * 16 * 32 + (32 if name == "googlenet" else 0))
  if name == "googlenet":  # 5x5/3 average pooling of 14x14 gives 4x4.
    assert rows["aux1/pool"].kind == "AvgPool"
    assert rows["aux2/pool"].output_shape == (4, 4, 528)
    assert "lrn1" in rows and "lrn2" in rows


def test_ceil_mode_padding_matches_torch_max_pool():
  torch = pytest.importorskip("torch")
  for window, stride in ((3, 2), (2, 2), (3, 3), (5, 3)):
    for size in range(window, 40):
      lo, hi = ceil_mode_padding(size, window, stride)
      ref = torch.nn.functional.max_pool2d(
          torch.zeros(1, 1, size, 1), (window, 1), (stride, 1),
          ceil_mode=True).shape[2]
      assert (size + lo + hi - window) // stride + 1 == ref, (size, window)
  # Values too, where the padded (-inf) column takes part: 15 -> 7.
  x = np.random.default_rng(0).normal(size=(1, 15, 15, 2)).astype(np.float32)
  pads = (ceil_mode_padding(15, 3, 2),) * 2
  ours = layers.max_pool(jnp.asarray(x), 3, 2, pads)
  ref = torch.nn.functional.max_pool2d(
      torch.from_numpy(x).permute(0, 3, 1, 2), 3, 2, ceil_mode=True)
  np.testing.assert_array_equal(np.asarray(ours),
                                ref.permute(0, 2, 3, 1).numpy())


class _Block(nn.Module):
  """One Inception module with the paper's conv + bias + ReLU units."""
  block_cls: type
  features: tuple = INCEPTION_TABLE["3a"]

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    return self.block_cls(self.features, layers.Conv, None, nn.relu)(x)


def test_one_by_one_bottlenecks_cut_the_cost_of_inception_3a():
  # Inception 3a on the 28x28x192 maps of a 224x224 image (Table 1).
  naive = summarize(_Block(NaiveInception), (28, 28, 192), xla_flops=False)
  reduced = summarize(_Block(Inception), (28, 28, 192), xla_flops=False)
  # Naive: 1x1x192x64 + 3x3x192x128 + 5x5x192x32 weights (+ biases), all
  # on the full 192 channels; the pooling branch passes 192 maps through.
  assert naive.params == 12_352 + 221_312 + 153_632 == 387_296
  assert naive.flops_counted // 2 == 28 * 28 * (
      192 * 64 + 9 * 192 * 128 + 25 * 192 * 32) == 303_464_448
  assert naive.rows[-1].output_shape == (28, 28, 192)
  # With 1x1 reductions: 96 and 16 channels feed the 3x3 and 5x5 filters.
  assert reduced.params == 163_696
  assert reduced.flops_counted // 2 == 28 * 28 * (
      192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32
      + 192 * 32) == 128_049_152
  assert naive.flops_counted / reduced.flops_counted > 2.3
  # Outputs: 64 + 128 + 32 + 192 = 416 channels, against 256; depth only
  # grows along a naive network.
  x = jnp.zeros((1, 28, 28, 192))
  for block, channels in ((_Block(NaiveInception), 416),
                          (_Block(Inception), 256)):
    y = jax.eval_shape(lambda: block.apply(block.init(jax.random.key(0), x),
                                           x))
    assert y.shape == (1, 28, 28, channels)
  rows = {r.name: r for r in _summary("googlenet_naive").rows}
  assert rows["avgpool"].output_shape == (4944,)


@functools.partial(jax.jit, static_argnums=0)
def _eval_train_and_grads(model, variables, x, labels, rng):
  """Inference outputs, training outputs, gradients of the (auxiliary)
  cross-entropy and the updated state, in one compilation."""
  eval_out = model.apply(variables, x)

  def loss(params):
    out, state = model.apply(dict(variables, params=params), x, train=True,
                             rngs={"dropout": rng}, mutable=["batch_stats"])
    logits, auxiliary = split_outputs(out)  # The train step's own split.
    total = jnp.mean(softmax_cross_entropy(logits, labels))
    for aux in auxiliary:
      total = total + 0.3 * jnp.mean(softmax_cross_entropy(aux, labels))
    return total, (out, state)

  grads, (train_out, state) = jax.grad(loss, has_aux=True)(
      variables["params"])
  return eval_out, train_out, grads, state


def _assert_every_parameter_has_a_gradient(grads):
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), (
        f"no gradient reaches {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("name", [
    # GoogLeNet's 8 s; its inception paths get gradients in a default test below.
    pytest.param(n, marks=pytest.mark.slow) if n == "googlenet" else n for n in SMALL])
def test_small_stand_in_outputs_and_every_parameter_gets_a_gradient(name):
  shape, overrides = SMALL[name]
  model = create_model(name, num_classes=5, **overrides)
  x = jax.random.normal(jax.random.key(1), (2, *shape))
  labels = jnp.array([1, 3])
  variables = random_variables(model, x)
  logits, out, grads, state = _eval_train_and_grads(
      model, variables, x, labels, jax.random.key(2))
  assert logits.shape == (2, 5) and np.all(np.isfinite(logits))
  if getattr(model, "aux_logits", False):  # (logits, aux1, aux2) in training.
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (2, 5) for o in out)
    assert "aux1" in grads and "aux2" in grads
    # Dropout: another key, other training outputs.
    _, again, _, _ = _eval_train_and_grads(model, variables, x, labels,
                                           jax.random.key(3))
    assert not np.allclose(again[0], out[0])
    out = out[0]
  else:
    assert out.shape == (2, 5)
  # Training differs from inference: dropout and/or batch statistics.
  assert not np.allclose(out, logits, atol=1e-6)
  if "batch_stats" in variables:
    assert not jax.tree.all(jax.tree.map(
        lambda a, b: np.allclose(a, b), variables["batch_stats"],
        state["batch_stats"]))
  _assert_every_parameter_has_a_gradient(grads)


class _InceptionBlocks(nn.Module):
  """The GoogLeNet blocks of the other code paths, on 14x14 maps: a naive
  module (conv + bias), a BatchNorm module with torchvision's 3x3 "5x5"
  branch, and both kinds of auxiliary head (5x5/3 and adaptive pooling)."""
  num_classes: int = 5

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    norm = functools.partial(layers.TorchLikeBatchNorm, epsilon=1e-3,
                             use_running_average=not train)
    bn_conv = functools.partial(layers.Conv, use_bias=False)
    dropout = functools.partial(nn.Dropout, deterministic=not train)
    row = (4, 3, 6, 2, 4, 3)
    x = NaiveInception(row, layers.Conv, None, nn.relu)(x)  # 4+6+4+C_in
    x = Inception(row, bn_conv, norm, nn.relu, large_kernel=3)(x)  # 4+6+4+3
    paper = AuxClassifier(self.num_classes, bn_conv, norm, nn.relu, nn.Dense,
                          dropout, features=4, hidden=8, name="paper")(x)
    adaptive = AuxClassifier(self.num_classes, layers.Conv, None, nn.relu,
                             nn.Dense, dropout, features=4, hidden=8,
                             adaptive_pool=True, name="adaptive")(x)
    return (paper, adaptive) if train else paper


def test_inception_block_paths_get_gradients():
  model = _InceptionBlocks()
  x = jax.random.normal(jax.random.key(1), (2, 14, 14, 3))
  # Deterministic draw; the aux head's 4-channel 1x1 conv + ReLU sees little
  # spatial variety here, and some draws (seed 2) leave all 4 units dead.
  variables = random_variables(model, x, seed=1)
  logits, out, grads, state = _eval_train_and_grads(
      model, variables, x, jnp.array([0, 4]), jax.random.key(2))
  assert logits.shape == (2, 5) and len(out) == 2
  _, tree = jax.eval_shape(lambda v: model.apply(
      v, x, capture_intermediates=True, mutable=["intermediates"]), variables)
  inter = tree["intermediates"]
  assert inter["NaiveInception_0"]["__call__"][0].shape == (2, 14, 14, 17)
  assert inter["Inception_0"]["__call__"][0].shape == (2, 14, 14, 17)
  assert inter["paper"]["pool"]["__call__"][0].shape == (2, 4, 4, 17)
  assert variables["params"]["Inception_0"]["b5x5"]["conv"]["kernel"].shape[
      :2] == (3, 3)
  assert not np.allclose(out[0], logits)  # BatchNorm and dropout.
  assert not np.allclose(state["batch_stats"]["Inception_0"]["b1x1"]["bn"][
      "mean"], 0.0)
  _assert_every_parameter_has_a_gradient(grads)


@pytest.mark.parametrize("name, features", [
    pytest.param("densenet_bc100_k12", 342, marks=pytest.mark.slow),
    ("densenet40_k12", 448), ("googlenet", 1024)])
def test_num_classes_zero_returns_pooled_features(name, features):
  model = create_model(name, num_classes=0)
  x = jnp.zeros((2, *model_input_shape(name)))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert "head" not in variables["params"]
  assert "aux1" not in variables["params"]  # No classifier, no aux heads.
  y = jax.eval_shape(lambda v: model.apply(
      v, x, train=True, rngs={"dropout": jax.random.key(0)},
      mutable=["batch_stats"])[0], variables)
  assert y.shape == (2, features)


def test_aux_heads_exist_only_with_aux_logits_and_eval_returns_logits():
  x = jnp.zeros((2, 224, 224, 3))
  for aux in (True, False):
    model = create_model("googlenet", aux_logits=aux)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    assert ("aux1" in variables["params"]) is aux
    out = jax.eval_shape(lambda v: model.apply(v, x), variables)
    assert out.shape == (2, 1000)
    out = jax.eval_shape(lambda v: model.apply(
        v, x, train=True, rngs={"dropout": jax.random.key(0)}), variables)
    shapes = [o.shape for o in out] if aux else out.shape
    assert shapes == ([(2, 1000)] * 3 if aux else (2, 1000))


def test_densenet_memory_efficient_gives_the_same_numbers():
  # The stand-in of the gradient test (compiled there) against its remat.
  shape, overrides = SMALL["densenet40_k12"]
  plain = create_model("densenet40_k12", num_classes=5, **overrides)
  remat = create_model("densenet40_k12", num_classes=5, memory_efficient=True,
                       **overrides)
  x = jax.random.normal(jax.random.key(1), (2, *shape))
  variables = random_variables(plain, x)
  args = (variables, x, jnp.array([1, 3]), jax.random.key(2))
  jax.tree.map(
      lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6),
      _eval_train_and_grads(plain, *args), _eval_train_and_grads(remat, *args))


def test_densenet_bc_shapes_follow_the_paper():
  # L = 100: 24 + 16 * 12 = 216 -> 108 maps; 108 + 192 = 300 -> 150;
  # 150 + 192 = 342 at 8x8.
  rows = {r.name: r for r in _summary("densenet_bc100_k12").rows}
  assert rows["transition1/pool"].output_shape == (16, 16, 108)
  assert rows["transition2/pool"].output_shape == (8, 8, 150)
  assert rows["final_bn"].output_shape == (8, 8, 342)
  assert rows["denseblock3/layer16/conv1"].output_shape == (8, 8, 48)  # 4k


def test_mixed_precision_keeps_float32_params():
  for name, shape, overrides in (
      ("densenet121", (32, 32, 3), SMALL_DENSENET),
      ("googlenet_tv", (64, 64, 3), {})):
    model = create_model(name, dtype=jnp.bfloat16, num_classes=3, **overrides)
    x = jnp.zeros((1, *shape))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    assert {a.dtype for a in jax.tree.leaves(variables)} == {
        jnp.dtype(jnp.float32)}
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).dtype == (
        jnp.bfloat16)


@pytest.mark.parametrize("name, overrides, message", [
    ("densenet121", {"stem": "tiny"}, "stem must be"),
    ("densenet121", {"compression": 0.0}, "compression must be"),
    ("googlenet", {"width_multiplier": 0.0}, "width_multiplier must be"),
])
def test_bad_options_are_one_sentence(name, overrides, message):
  model = create_model(name, **overrides)
  with pytest.raises(CnnjaxError, match=message):
    _abstract_init(model, model_input_shape(name))
