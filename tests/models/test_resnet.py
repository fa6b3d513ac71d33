"""The ResNet family: pinned sizes, FLOPs, shortcuts, zero-init, gradients."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnnjax.models.resnet as resnet  # Registers the family.
from cnnjax.analysis import summarize
from cnnjax.errors import CnnjaxError
from cnnjax.layers.residual import PreActBlock, ResidualBlock
from cnnjax.models import create_model, list_models, model_input_shape
from conftest import fill_variables, slow_if_deeper

# Parameters for each registered model's default input and classes (224x224x3
# and 1000 classes; 28^3x1 and 11 classes for the 3D ones). The ResNets,
# ResNeXts and Wide ResNets are torchvision's counts.
PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    # Plain nets: the ResNet minus its projection shortcuts (1x1 conv + BN
    # where a stage changes shape): 173,824 parameters for the basic-block
    # nets (64->128, 128->256, 256->512), 2,776,576 for the bottleneck nets
    # (64->256, 256->512, 512->1024, 1024->2048).
    "plain18": 11_515_688,
    "plain34": 21_623_848,
    "plain50": 22_780_456,
    "plain101": 41_772_584,
    "plain152": 57_416_232,
    # Pre-activation (fb.resnet.torch's preresnet layout): the same convs;
    # BNs move to block inputs (the first block of stages 2-4 normalises its
    # narrower input), stage 1's first block skips its BN (the stem has one),
    # projections lose their BN, and a final BN is added: 896 fewer BN
    # channels for 18/34 (-1,792 parameters), 3,840 fewer for 50/101/152
    # (-7,680; as timm's resnetv2_50: 25,549,352).
    "preact_resnet18": 11_687_720,
    "preact_resnet34": 21_795_880,
    "preact_resnet50": 25_549_352,
    "preact_resnet101": 44_541_480,
    "preact_resnet152": 60_185_128,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    # SE adds 2 C^2 / 16 + C / 16 + C per block (C = block output channels):
    # 2,530,992 over ResNet-50's 16 blocks, as in the SENet paper's
    # SE-ResNet-50 (28.09M) and timm's legacy seresnet50.
    "se_resnet50": 28_088_024,
    "se_resnext50_32x4d": 27_559_896,
    # 3D: every k x k kernel becomes k x k x k; 1 input channel, 11 classes.
    "resnet18_3d": 33_165_643,
    "resnet50_3d": 46_177_611,
}

# Torchvision's published GFLOPS (multiply-adds) at 224x224.
GMACS = {"resnet18": 1.814, "resnet50": 4.089}

# Small stand-ins, one per code path, for the gradient test (and the
# registry-wide one): (input shape, overrides). XLA's compile time on a CPU
# grows with depth, so they are as shallow as their path allows: two stages
# reach every kind of shortcut (identity or projection, stride 1 or 2; for
# pre-activation all three placements of the input BN-ReLU); one stage is
# enough for the paths that only change the branch (groups, SE, no
# shortcut).
SMALL = {
    "resnet18": ((32, 32, 3), {"width": 8, "stage_sizes": (1, 1)}),
    "resnet50": ((32, 32, 3), {"width": 8, "stage_sizes": (1, 1)}),
    "preact_resnet50": ((32, 32, 3), {"width": 8, "stage_sizes": (2, 1)}),
    # int(16 * 4 / 64) * 32 = 32 channels in 32 groups: ResNeXt's 2x planes.
    "resnext50_32x4d": ((32, 32, 3), {"width": 16, "stage_sizes": (1,)}),
    "se_resnet50": ((32, 32, 3), {"width": 8, "stage_sizes": (1,)}),
    "plain18": ((32, 32, 3), {"width": 8, "stage_sizes": (1,)}),
    "resnet18_3d": ((16, 16, 16, 1), {"width": 8, "stage_sizes": (1, 1)}),
}


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _normal(shape, seed: int = 1):
  # numpy, not jax.random: each new shape would compile a generator.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape),
                     jnp.float32)


@functools.lru_cache(maxsize=None)
def _abstract_variables(name: str, overrides: tuple = ()):
  """Variable shapes at the default input; overrides as (key, value) pairs."""
  model = create_model(name, **dict(overrides))
  x = jnp.zeros((1, *model_input_shape(name)))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _resnet_names():
  return [n for n in list_models()
          if isinstance(create_model(n), resnet.ResNet)]


def test_every_registered_resnet_has_a_pinned_count():
  assert sorted(_resnet_names()) == sorted(PARAMS)


@pytest.mark.parametrize("name", slow_if_deeper(sorted(PARAMS)))
def test_parameter_count(name):
  assert _count(_abstract_variables(name)["params"]) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(GMACS))
def test_flops_match_torchvision(name):
  macs = summarize(name, xla_flops=False).flops_counted / 2
  assert macs / 1e9 == pytest.approx(GMACS[name], rel=0.02)


def _shortcut_params(params) -> int:
  return sum(_count(v) for block in params.values() if isinstance(block, dict)
             for k, v in block.items() if k.startswith("shortcut"))


@pytest.mark.parametrize("depth", [18, 50])
def test_plain_nets_are_resnets_without_projections(depth):
  res = _abstract_variables(f"resnet{depth}")["params"]
  plain = _abstract_variables(f"plain{depth}")["params"]
  assert _shortcut_params(plain) == 0
  assert _count(res) - _count(plain) == _shortcut_params(res) > 0


def test_shortcut_options():
  # Option A adds no parameters (the paper's Table 2 ResNets against plain
  # nets); option C projects in every block.
  a = _abstract_variables("resnet18", (("shortcut", "zero_pad"),))["params"]
  c = _abstract_variables("resnet18", (("shortcut", "projection_all"),))
  assert _count(a) == PARAMS["plain18"] and _shortcut_params(a) == 0
  # Option C adds 1x1 conv + BN to the 5 identity blocks of ResNet-18.
  extra = sum(w * w + 2 * w for w in (64, 64, 128, 256, 512))
  assert _count(c["params"]) == PARAMS["resnet18"] + extra


def test_block_names_and_the_3d_small_stem():
  model = create_model("resnet18", block_cls="bottleneck")
  x = jnp.zeros((1, 64, 64, 3))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
  assert params["stage1_block0"]["conv3"]["kernel"].shape == (1, 1, 64, 256)
  # The MedMNIST3D baseline's stem: 3x3x3/1, no pooling.
  small = _abstract_variables("resnet18_3d", (("stem", "small"),))["params"]
  assert small["stem_conv"]["kernel"].shape == (3, 3, 3, 1, 64)
  assert _count(small) == PARAMS["resnet18_3d"] - (7**3 - 3**3) * 64


def test_output_shapes_and_features():
  for name, shape, features in (("resnet50", (224, 224, 3), 2048),
                                ("preact_resnet18", (64, 64, 3), 512),
                                ("resnet50_3d", (28, 28, 28, 1), 2048)):
    for classes in (0, 7):
      model = create_model(name, num_classes=classes)
      x = jnp.zeros((2, *shape))
      out = jax.eval_shape(lambda m=model, a=x: m.init_with_output(
          jax.random.key(0), a)[0])
      assert out.shape == (2, classes or features), (name, classes)


@pytest.mark.parametrize("overrides, message", [
    ({"residual": False, "zero_init_residual": True}, "zero_init_residual"),
    ({"shortcut": "D"}, "shortcut must be one of"),
    ({"groups": 32, "width_per_group": 4}, "basic blocks support only"),
    ({"block_cls": "bottle"}, "unknown block"),
    ({"ndim": 3}, "needs inputs of shape"),
])
def test_mistakes_are_reported(overrides, message):
  model = create_model("resnet18", **overrides)
  with pytest.raises(CnnjaxError, match=message):
    jax.eval_shape(lambda: model.init(jax.random.key(0),
                                      jnp.zeros((1, 32, 32, 3))))


def _record_blocks(model, variables, x):
  """Each block's input and output, and its shortcut's output if projected."""

  def forward(variables, x):
    seen = {}

    def interceptor(next_fun, args, kwargs, context):
      y = next_fun(*args, **kwargs)
      module = context.module
      if context.method_name == "__call__":
        path = "/".join(module.path)
        if isinstance(module, ResidualBlock):
          seen.setdefault(path, {}).update(x=args[0], y=y)
        elif module.name in ("shortcut_bn", "shortcut_conv"):
          # Post-activation blocks: the BN's output; pre-activation: conv's.
          seen.setdefault(path.rsplit("/", 1)[0], {})[module.name] = y
      return y

    with nn.intercept_methods(interceptor):
      model.apply(variables, x)
    return seen

  return jax.jit(forward)(variables, x)


@pytest.mark.parametrize("name, overrides", [
    ("resnet50", {"se": True}),  # Bottleneck, SE, projection and identity.
    ("resnet18", {"shortcut": "zero_pad"}),  # Basic, identity and option A.
    ("preact_resnet50", {}),  # Pre-activation: 'none', 'branch', 'both'.
])
def test_zero_init_residual_makes_every_block_an_identity_map(name, overrides):
  model = create_model(name, width=8, stage_sizes=(2, 1),
                       zero_init_residual=True, **overrides)
  x = _normal((2, 32, 32, 3))
  # The real initialisers (that is what is tested); the 'rbg' generator
  # compiles several times faster than threefry on a CPU.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  blocks = _record_blocks(model, variables, x)
  assert len(blocks) == 3
  preact = issubclass(model.block_cls, PreActBlock)
  for path, rec in blocks.items():
    inp, out = np.asarray(rec["x"]), np.asarray(rec["y"])
    if "shortcut_bn" in rec or "shortcut_conv" in rec:
      shortcut = np.asarray(rec.get("shortcut_bn", rec.get("shortcut_conv")))
    else:  # Identity, or option A: subsample, then zero channels.
      stride = inp.shape[1] // out.shape[1]
      shortcut = inp[:, ::stride, ::stride]
      shortcut = np.pad(shortcut, ((0, 0),) * 3 + (
          (0, out.shape[-1] - inp.shape[-1]),))
      assert stride == 1 or overrides.get("shortcut") == "zero_pad", path
    # Post-activation: relu(0 + shortcut); pre-activation: 0 + shortcut.
    expected = shortcut if preact else np.maximum(shortcut, 0)
    np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=path)
    assert np.abs(out).max() > 0, path


def _small(name, batch, **changes):
  """A stand-in model, generic variables and an input for it."""
  shape, overrides = SMALL[name]
  model = create_model(name, **{**overrides, **changes})
  x = _normal((batch, *shape))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  return model, fill_variables(abstract), x


def test_batch_norm_train_differs_from_eval_and_updates_statistics():
  model, variables, x = _small("resnet18", 4, num_classes=5)
  x = x * 3 + 1  # Far from the running statistics (0 and 1).
  evaluated = jax.jit(model.apply)(variables, x)
  trained, updates = jax.jit(functools.partial(
      model.apply, train=True, mutable=["batch_stats"]))(variables, x)
  assert not np.allclose(evaluated, trained, atol=1e-3)
  before = variables["batch_stats"]["stem_bn"]["mean"]
  after = updates["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(before, after)


def test_bfloat16_forward_keeps_float32_parameters():
  model, variables, x = _small("se_resnet50", 2, num_classes=5,
                               dtype=jnp.bfloat16)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert {a.dtype for a in jax.tree.leaves(abstract)} == {np.dtype("float32")}
  logits = jax.jit(model.apply)(variables, x)
  assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 5)
  assert np.all(np.isfinite(np.asarray(logits, np.float32)))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_parameter_gets_a_gradient(name):
  model, variables, x = _small(name, 2, num_classes=7)

  def loss(params):
    logits, _ = model.apply(dict(variables, params=params), x, train=True,
                            mutable=["batch_stats"])
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), logits

  grads, logits = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  assert logits.shape == (2, 7) and np.all(np.isfinite(logits))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), (
        f"no gradient reaches {jax.tree_util.keystr(path)}")
