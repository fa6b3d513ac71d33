"""CIFAR ResNets, plain nets, pre-activation ResNets, Wide ResNets, the ECG
ResNet and All-CNN-C: pinned sizes, shapes, shortcuts, gradients, dropout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax.models.allconv  # noqa: F401  (registers the models)
import cnnjax.models.resnet  # noqa: F401
import cnnjax.models.ecg  # noqa: F401
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, list_models, model_input_shape
from cnnjax.layers import ZeroPadShortcut
from conftest import random_variables, slow_if_deeper

# Parameter counts for each model's registered input and classes (10; 12 for
# the ECG network). Paper numbers: He et al. 2015 Table 6 (0.27M, 0.46M,
# 0.66M, 0.85M, 1.7M, 19.4M; the counts of the usual PyTorch port), He et
# al. 2016 (1.7M each), WRN Table 4 (11.0M, 36.5M, 8.9M), All-CNN Table 3
# (about 1.4M).
PARAMS = {
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
    "resnet56": 853_018, "resnet110": 1_727_962, "resnet1202": 19_421_274,
    # Option-A shortcuts have no parameters, so plain nets count the same.
    "plain20": 269_722, "plain32": 464_154, "plain44": 658_586,
    "plain56": 853_018, "plain110": 1_727_962,
    "preact_resnet110": 1_727_962, "preact_resnet164": 1_703_258,
    "wrn16_8": 10_961_370, "wrn28_10": 36_479_194, "wrn40_4": 8_949_210,
    # 33 convolutions with biases (Keras's default in the authors' code).
    "ecg_resnet34": 10_468_204,
    "allconv_c": 1_369_738,
}
FAMILY_CLASSES = ("CifarResNet", "PreActResNet", "WideResNet", "ECGResNet",
                  "AllConvNet")

# One small stand-in per code path: (name, input shape, overrides). All but
# the last are the registry-wide gradient representatives of these families.
SMALL = [
    ("resnet20", (8, 8, 3), {"depth": 8}),  # post-activation, option A
    ("plain20", (8, 8, 3), {"depth": 8}),  # no shortcuts
    ("preact_resnet110", (8, 8, 3), {"depth": 8}),  # basic, option A
    ("preact_resnet164", (8, 8, 3), {"depth": 11}),  # bottleneck, option B
    ("wrn16_8", (8, 8, 3), {"depth": 10, "widen_factor": 2,
                            "dropout_rate": 0.3}),  # 1x1 projections, dropout
    # Four blocks, channels doubling after two: the first block, max-pool
    # and zero-padding shortcuts and dropout; one output per 4 samples.
    ("ecg_resnet34", (32, 1), {"num_blocks": 4, "blocks_per_stage": 2,
                               "base_width": 4}),
    ("allconv_c", (16, 16, 3), {"widths": (8, 16)}),
    ("resnet20", (8, 8, 3), {"depth": 8, "shortcut": "B"}),  # projections
]
_INDEX = {"resnet": 0, "plain": 1, "wrn": 4, "ecg": 5, "allconv": 6}
_DROPOUT = {4, 5, 6}


# Compiling dominates these tests on a CPU: XLA's RngBitGenerator keys
# compile far faster than threefry ones, and the few programs that run are
# compiled without LLVM's expensive optimisations (about half the time).
QUICK_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _shapes(model, shape, batch=2, **kwargs):
  """Abstract init + apply: (variables, output) shapes, nothing computed."""
  x = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
  variables = jax.eval_shape(lambda a: model.init(_key(0), a), x)
  out = jax.eval_shape(lambda v, a: model.apply(v, a, **kwargs), variables, x)
  return variables, out


def _intermediates(model, shape):
  """Abstract forward pass capturing every module's output shape."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda a: model.init(_key(0), a), x)
  return jax.eval_shape(lambda v, a: model.apply(
      v, a, capture_intermediates=True, mutable=["intermediates"]),
      variables, x)


def test_every_model_of_these_families_is_pinned():
  ours = [n for n in list_models()
          if type(create_model(n)).__name__ in FAMILY_CLASSES]
  assert sorted(ours) == sorted(PARAMS)


# The deeper siblings' counts (ResNet-1202's takes 6 s to trace) run in the
# slow tier; tests/models/test_models.py pins them too.
@pytest.mark.parametrize("name", slow_if_deeper(sorted(PARAMS)))
def test_parameter_count(name):
  model = create_model(name)
  x = jax.ShapeDtypeStruct((1, *model_input_shape(name)), jnp.float32)
  variables = jax.eval_shape(lambda a: model.init(_key(0), a), x)
  assert _count(variables["params"]) == PARAMS[name]


def test_option_b_and_depth_overrides():
  # Option B adds a 1x1 conv + BN at the two stage transitions:
  # (16*32 + 64) + (32*64 + 128) = 2,752.
  variables, _ = _shapes(create_model("resnet20", shortcut="B"), (32, 32, 3))
  assert _count(variables["params"]) == 272_474
  assert "shortcut_conv" in variables["params"]["stage2_block0"]
  assert "shortcut_conv" not in variables["params"]["stage2_block1"]
  # Parameters grow linearly with n: ResNet-1202 (n = 200) from ResNet-20
  # (n = 3) and ResNet-32 (n = 5).
  per_n = (PARAMS["resnet32"] - PARAMS["resnet20"]) // 2
  assert PARAMS["resnet1202"] == PARAMS["resnet20"] + (200 - 3) * per_n


def test_option_a_shortcut_subsamples_and_pads_zeros():
  x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
  shortcut = ZeroPadShortcut(8, strides=2)
  assert shortcut.init(_key(1), x) == {}  # No parameters.
  y = shortcut.apply({}, x)
  assert y.shape == (2, 4, 3, 8)  # ceil(7 / 2), ceil(6 / 2), as a padded conv.
  np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2])
  np.testing.assert_array_equal(y[..., 3:], 0.0)
  # In the network: no shortcut parameters anywhere.
  variables, _ = _shapes(create_model("resnet20"), (32, 32, 3))
  assert not any("shortcut" in jax.tree_util.keystr(p) for p, _ in
                 jax.tree_util.tree_leaves_with_path(variables["params"]))
  with pytest.raises(CnnjaxError, match="cannot reduce"):
    ZeroPadShortcut(2).apply({}, x)


def test_output_shapes_and_features():
  # Registered inputs; the shallowest depths (widths do not depend on it).
  for name, overrides, classes, features in (
      ("resnet20", {}, 10, 64), ("preact_resnet164", {"depth": 11}, 10, 256),
      ("wrn28_10", {"depth": 10}, 10, 640), ("allconv_c", {}, 10, 192),
      ("ecg_resnet34", {}, 12, 256)):
    shape = model_input_shape(name)
    _, out = _shapes(create_model(name, **overrides), shape)
    assert out.shape == (2, classes), name
    _, out = _shapes(create_model(name, num_classes=0, **overrides), shape)
    assert out.shape == (2, features), name
  # The ECG network's per-step predictions: one every 256 samples.
  _, out = _shapes(create_model("ecg_resnet34", pool="none"), (2560, 1))
  assert out.shape == (2, 10, 12)
  _, out = _shapes(create_model("ecg_resnet34", pool="none", num_classes=0),
                   (2560, 1))
  assert out.shape == (2, 10, 256)
  # Mixed precision: compute in bfloat16, parameters in float32.
  variables, out = _shapes(create_model("resnet20", dtype=jnp.bfloat16),
                           (32, 32, 3))
  assert out.dtype == jnp.bfloat16
  assert {l.dtype for l in jax.tree.leaves(variables["params"])} == {
      jnp.dtype(jnp.float32)}


def test_allconv_layer_shapes():
  model = create_model("allconv_c")
  _, inter = _intermediates(model, (2, 32, 32, 3))
  shapes = {k: v["__call__"][0].shape[1:]
            for k, v in inter["intermediates"].items() if k.startswith(
                ("conv", "head"))}
  assert shapes == {
      "conv1": (32, 32, 96), "conv2": (32, 32, 96), "conv3": (16, 16, 96),
      "conv3_dropout": (16, 16, 96), "conv4": (16, 16, 192),
      "conv5": (16, 16, 192), "conv6": (8, 8, 192),
      "conv6_dropout": (8, 8, 192), "conv7": (6, 6, 192),
      "conv8": (6, 6, 192), "head": (6, 6, 10)}


def test_stage_shapes_and_ecg_subsampling():
  _, inter = _intermediates(create_model("wrn28_10"), (1, 32, 32, 3))
  got = {k: v["__call__"][0].shape[1:] for k, v in
         inter["intermediates"].items() if k.endswith("block3")}
  assert got == {"stage1_block3": (32, 32, 160),
                 "stage2_block3": (16, 16, 320), "stage3_block3": (8, 8, 640)}
  _, inter = _intermediates(create_model("ecg_resnet34"), (1, 2560, 1))
  got = [inter["intermediates"][f"stage{i // 4 + 1}_block{i % 4}"][
      "__call__"][0].shape[1:] for i in range(16)]
  # Odd blocks halve the length; channels double at blocks 4, 8 and 12.
  assert got == [(2560 // 2 ** ((i + 1) // 2), 32 * 2 ** (i // 4))
                 for i in range(16)]


def test_bad_options_are_reported():
  for name, overrides, match in (
      ("resnet20", {"depth": 21}, "depth = 6n \\+ 2"),
      ("resnet20", {"shortcut": "D"}, "shortcut must be"),
      ("plain20", {"zero_init_residual": True}, "needs shortcuts"),
      ("preact_resnet164", {"depth": 100}, "depth = 9n \\+ 2"),
      ("wrn28_10", {"depth": 26}, "depth = 6n \\+ 4")):
    with pytest.raises(CnnjaxError, match=match):
      _shapes(create_model(name, **overrides), (32, 32, 3))
  with pytest.raises(CnnjaxError, match="multiple of 256"):
    _shapes(create_model("ecg_resnet34"), (1000, 1))
  with pytest.raises(CnnjaxError, match="pool must be"):
    _shapes(create_model("ecg_resnet34", pool="max"), (512, 1))


def test_zero_init_residual():
  # Post-activation: the last BN's scale; pre-activation: the last conv's
  # kernel (zeroing the BN before it would leave ReLU at an exact zero, with
  # no gradient). Tiny widths: these initialise for real.
  def init(name, shape, **overrides):
    model = create_model(name, zero_init_residual=True, **overrides)
    return jax.jit(model.init, compiler_options=QUICK_COMPILE)(
        _key(0), jnp.zeros(shape))["params"]

  params = init("resnet20", (1, 4, 4, 3), depth=8, widths=(2, 2, 2))
  assert all(np.all(params[f"stage{s}_block0"]["bn2"]["scale"] == 0)
             for s in (1, 2, 3))
  assert np.all(params["stem_bn"]["scale"] == 1)
  params = init("preact_resnet164", (1, 4, 4, 3), depth=11, widths=(1, 1, 1))
  assert all(np.all(params[f"stage{s}_block0"]["conv3"]["kernel"] == 0)
             for s in (1, 2, 3))
  assert not np.all(params["stage1_block0"]["conv2"]["kernel"] == 0)
  params = init("ecg_resnet34", (1, 2, 1), num_blocks=2, base_width=1)
  assert np.all(params["stage1_block1"]["conv2"]["kernel"] == 0)


@functools.lru_cache(maxsize=None)
def _run(index):
  """SMALL[index] run in one compiled program: (model, dict of variables,
  eval logits, gradients of a training loss, training logits with two
  dropout seeds, batch-norm updates)."""
  name, shape, overrides = SMALL[index]
  model = create_model(name, num_classes=7, **overrides)
  x = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
  variables = random_variables(model, jax.ShapeDtypeStruct(x.shape, jnp.float32))

  @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
  def run(variables, x):
    state = {k: v for k, v in variables.items() if k != "params"}

    def train(params, seed):
      return model.apply({"params": params, **state}, x, train=True,
                         rngs={"dropout": _key(seed)},
                         mutable=["batch_stats"])

    def loss(params):
      logits, updates = train(params, 2)
      return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), (logits, updates)

    grads, (logits, updates) = jax.grad(loss, has_aux=True)(
        variables["params"])
    out = dict(eval=model.apply(variables, x), grads=grads, train=logits,
               updates=updates)
    if index in _DROPOUT:
      out["train_other_seed"] = train(variables["params"], 3)[0]
    return out

  return model, x, variables, run(variables, x)


@pytest.mark.parametrize("index", range(len(SMALL)),
                         ids=[f"{n}-{o}" for n, _, o in SMALL])
def test_forward_and_every_parameter_gets_a_gradient(index):
  *_, out = _run(index)
  assert out["eval"].shape == (3, 7)
  assert np.all(np.isfinite(out["eval"]))
  for path, g in jax.tree_util.tree_leaves_with_path(out["grads"]):
    assert np.any(np.asarray(g) != 0), (
        f"no gradient reaches {jax.tree_util.keystr(path)}")


def test_plain_and_residual_nets_differ_with_the_same_weights():
  # Option-A shortcuts have no parameters: both nets have the same variables
  # (the same host-made values), and only the shortcuts tell them apart.
  *_, residual_vars, residual = _run(_INDEX["resnet"])
  *_, plain_vars, plain = _run(_INDEX["plain"])
  jax.tree.map(np.testing.assert_array_equal, residual_vars, plain_vars)
  assert not np.allclose(residual["eval"], plain["eval"])


def test_batch_norm_train_and_eval_differ():
  *_, variables, out = _run(_INDEX["resnet"])
  assert not np.allclose(out["train"], out["eval"])  # Batch statistics.
  old = variables["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(out["updates"]["batch_stats"]["stem_bn"]["mean"],
                         old)


@pytest.mark.parametrize("family", ["wrn", "ecg", "allconv"])
def test_dropout_only_in_training(family):
  model, x, variables, out = _run(_INDEX[family])
  assert not np.allclose(out["train"], out["train_other_seed"])
  if "batch_stats" not in variables:  # All-CNN: no BatchNorm.
    assert not np.allclose(out["train"], out["eval"])
    # Without dropout, training and evaluation are the same function.
    no_dropout = model.clone(input_dropout_rate=0.0, dropout_rate=0.0)
    np.testing.assert_allclose(
        jax.jit(functools.partial(no_dropout.apply, train=True),
                compiler_options=QUICK_COMPILE)(variables, x),
        out["eval"], rtol=1e-5, atol=1e-6)
