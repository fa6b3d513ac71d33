"""Octave ResNets: ResNet's parameters, fewer FLOPs (the d-li14 count at
alpha 0.5), where alpha is 0, gradients to every parameter, mistakes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.analysis import summarize
from cnnjax.errors import CnnjaxError
from cnnjax.models import create_model, model_input_shape
from cnnjax.models.octresnet import OctResNet
from conftest import random_variables

RESNET50_PARAMS = 25_557_032  # torchvision's ResNet-50
RESNET20_PARAMS = 269_722
RESNET50_FLOPS = 8_178_368_512  # Counted at 224x224 by `cnnjax summary`.


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=None)
def _params(name: str, alpha: float | None = None):
  overrides = {} if alpha is None else {"alpha": alpha}
  model = create_model(name, **overrides)
  x = jax.ShapeDtypeStruct((1, *model_input_shape(name)), jnp.float32)
  return jax.eval_shape(lambda a: model.init(jax.random.key(0), a), x)["params"]


@pytest.mark.parametrize("alpha", [None, 0.0])
def test_oct_resnet50_has_resnet50s_parameters(alpha):
  assert _count(_params("oct_resnet50", alpha)) == RESNET50_PARAMS


def test_oct_resnet20_adds_only_the_merging_projection():
  # A 1x1 OctConv 32 -> 64 and its BN where the last stage merges the groups.
  assert _count(_params("oct_resnet20")) == RESNET20_PARAMS + 32 * 64 + 2 * 64
  assert _count(_params("oct_resnet20", 0.0)) == RESNET20_PARAMS


def test_alpha_is_zero_where_the_authors_code_has_it():
  params = _params("oct_resnet50")
  paths = lambda unit: set(unit["conv"])
  first = params["stage1_block0"]
  assert paths(first["conv1"]) == paths(first["shortcut"]) == {"h2h", "h2l"}
  assert paths(first["conv2"]) == {"h2h", "h2l", "l2h", "l2l"}
  assert paths(params["stage3_block5"]["conv3"]) == {"h2h", "h2l", "l2h", "l2l"}
  merge = params["stage4_block0"]
  assert paths(merge["conv1"]) == paths(merge["shortcut"]) == {"h2h", "l2h"}
  assert paths(merge["conv2"]) == paths(params["stage4_block2"]["conv1"]) == {"h2h"}
  assert "stem_conv" in params and "bn_l" not in merge["conv3"]
  # The groups at alpha 0.25: 64 planes -> 48 + 16; 256 outputs -> 192 + 64.
  assert first["conv2"]["conv"]["l2l"]["kernel"].shape == (3, 3, 16, 16)
  assert first["conv3"]["conv"]["h2h"]["kernel"].shape == (1, 1, 48, 192)
  # The CIFAR form converts in its stem; its last stage is plain.
  cifar = _params("oct_resnet20")
  assert set(cifar["stem"]["conv"]) == {"h2h", "h2l"}
  assert set(cifar["stage3_block0"]["conv1"]["conv"]) == {"h2h", "l2h"}
  assert "shortcut" in cifar["stage3_block0"] and "shortcut" not in cifar["stage2_block0"]


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_flops_fall_with_alpha_at_equal_parameters():
  """Counted FLOPs (2 per multiply-add) at 224x224, every octave path at its
  own resolution, against ResNet-50's (4.089 G multiply-adds, torchvision's
  figure, pinned in test_resnet.py): alpha 0.5 is d-li14/octconv.pytorch's
  2.367 G for its Oct-ResNet-50."""
  counts = {a: summarize("oct_resnet50", xla_flops=False, alpha=a)
            for a in (0.25, 0.5)}
  assert counts[0.5].flops_counted / 2e9 == pytest.approx(2.367, abs=5e-4)
  assert counts[0.25].flops_counted / 2e9 == pytest.approx(3.1035, abs=5e-4)
  assert all(s.params == RESNET50_PARAMS for s in counts.values())
  # Above the single-layer ratio 1 - 3/4 a (2 - a) = 0.67 of stages 1-3: the
  # stem, the plain last stage and the head keep their cost.
  assert 0.671875 < counts[0.25].flops_counted / RESNET50_FLOPS < 0.8


def test_cifar_flops():
  plain = summarize("resnet20", xla_flops=False).flops_counted
  assert summarize("oct_resnet20", xla_flops=False, alpha=0.0).flops_counted == plain
  octave = summarize("oct_resnet20", xla_flops=False).flops_counted
  assert octave == 63_724_800 and octave / plain == pytest.approx(0.7857, abs=1e-4)


# Small stand-ins: every code path (the ImageNet stem and bottlenecks with
# projections that convert and merge; the CIFAR stem and basic blocks with
# identity and zero-padding shortcuts on octave pairs, the last stage merging
# through a projection; option C).
SMALL = {
    "bottleneck": ((32, 32, 3), dict(stage_sizes=(1, 1), widths=(8, 16))),
    "basic_a": ((8, 8, 3), dict(stage_sizes=(1, 1, 1), widths=(8, 16, 32),
                                  bottleneck=False, stem="small", shortcut="A")),
    "basic_c": ((16, 16, 3), dict(stage_sizes=(1, 1), widths=(8, 16),
                                  bottleneck=False, stem="small", shortcut="C")),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_parameter_gets_a_gradient(name):
  shape, fields = SMALL[name]
  model = OctResNet(num_classes=5, **fields)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *shape)), jnp.float32)
  variables = random_variables(model, x)

  def loss(params):
    logits, _ = model.apply(dict(variables, params=params), x, train=True,
                            mutable=["batch_stats"])
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), logits

  grads, logits = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  assert logits.shape == (2, 5) and np.all(np.isfinite(logits))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("overrides, message", [
    ({"alpha": 1.0}, "alpha is the low-frequency share"),
    ({"alpha": 0.05}, "OctResNet's alpha=0.05 of 16 channels leaves the low"),
    ({"stem": "deep"}, "stem must be one of"),
    ({"shortcut": "D"}, "shortcut must be one of"),
    ({"stage_sizes": (3, 3)}, "must give each stage"),
])
def test_mistakes_are_reported(overrides, message):
  model = create_model("oct_resnet20", **overrides)
  with pytest.raises(CnnjaxError, match=message):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
