"""PyTorch twins in and out: logits and every stage output against
torchvision/timm, exact round trips, strict loading of exported state dicts,
and one-sentence refusals of weights that do not fit.

The default suite runs each family's mapping on a shallow variant (one block
per stage: the rules are patterns, so a deep model uses the very same
ones) and the wide/flatten-order cases at full size where they are cheap;
the full-size models are under `-m slow`.
"""

from __future__ import annotations

import functools

import flax
import jax
import numpy as np
import pytest

from cnnjax import weights
from conftest import import_torchvision

torch = pytest.importorskip("torch")
TOL = 1e-4


def _tv():
  return import_torchvision().models


def _timm():
  return pytest.importorskip("timm")


def _randomize_batch_norm(module, size: int, seed: int = 0) -> None:
  """BatchNorm's scale and shift away from 1/0, and running statistics
  measured on a random batch (so that deep random networks keep their
  activations in range, and a swapped mean/var or scale/bias cannot pass)."""
  g = torch.Generator().manual_seed(seed)
  norms = [m for m in module.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
  for m in norms:
    n = m.num_features
    m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
    m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    m.reset_running_stats()
    m.momentum = None  # A cumulative average: the statistics of this batch.
  if norms:
    module.train()
    with torch.no_grad():
      module(torch.randn(4, 3, size, size, generator=g))
  for m in norms:
    # Measured variances of 2x2 maps over 4 images can be tiny; dividing by
    # them makes a deep float32 network ill-conditioned (PyTorch's own
    # float32 logits then miss its float64 ones by 5e-4 in ResNet-101).
    m.running_var.add_(1.0)
  module.eval()


def _state(module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@functools.lru_cache(maxsize=None)
def _apply(model):
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


# (cnnjax model, cnnjax field overrides, PyTorch builder, input size,
#  [(cnnjax module, PyTorch module)] whose outputs are compared too)
def _resnet(block, layers, **kw):
  tv = import_torchvision()
  cls = getattr(tv.models.resnet, block)
  return tv.models.resnet.ResNet(cls, layers, **kw)


def _se_resnet(groups=1, base_width=64):
  from timm.models.resnet import Bottleneck, ResNet
  return ResNet(Bottleneck, [1, 1, 1, 1], cardinality=groups, base_width=base_width,
                block_args=dict(attn_layer="se"))


def _densenet():
  tv = import_torchvision()
  return tv.models.densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                                     num_init_features=16)


RESNET_STAGES = [("stem_bn", "bn1")] + [
    (f"stage{s}_block0", f"layer{s}.0") for s in range(1, 5)]
SMALL = {
    "resnet18": (dict(stage_sizes=(1, 1, 1, 1)),
                 lambda: _resnet("BasicBlock", [1, 1, 1, 1]), 64, RESNET_STAGES),
    "resnet50": (dict(stage_sizes=(1, 1, 1, 1)),
                 lambda: _resnet("Bottleneck", [1, 1, 1, 1]), 64, RESNET_STAGES),
    "resnext50_32x4d": (dict(stage_sizes=(1, 1, 1, 1)),
                        lambda: _resnet("Bottleneck", [1, 1, 1, 1], groups=32,
                                        width_per_group=4), 64, ()),
    "wide_resnet50_2": (dict(stage_sizes=(1, 1, 1, 1)),
                        lambda: _resnet("Bottleneck", [1, 1, 1, 1],
                                        width_per_group=128), 64, ()),
    "se_resnet50": (dict(stage_sizes=(1, 1, 1, 1)), _se_resnet, 64, RESNET_STAGES),
    "se_resnext50_32x4d": (dict(stage_sizes=(1, 1, 1, 1)),
                           lambda: _se_resnet(32, 4), 64, ()),
    "densenet121": (dict(block_sizes=(2, 2, 2, 2), growth_rate=8, init_features=16),
                    _densenet, 64,
                    [("stem_bn", "features.norm0")]
                    + [(f"transition{t}/conv", f"features.transition{t}.conv")
                       for t in (1, 2, 3)] + [("final_bn", "features.norm5")]),
    # 128 (AlexNet) and 64 (VGG) pixels leave 3x3 and 2x2 maps, which the
    # adaptive pools spread over 6x6 and 7x7 unevenly: the classifiers'
    # flatten order (C, H, W in PyTorch) is tested.
    "alexnet_tv": (dict(hidden=64, num_classes=10),
                   lambda: _small_classifier(_tv().alexnet(), 256 * 6 * 6), 128,
                   [(f"conv{i}", f"features.{j}")
                    for i, j in zip(range(1, 6), (0, 3, 6, 8, 10))]),
    "vgg11_bn": (dict(hidden=64, num_classes=10),
                 lambda: _small_classifier(_tv().vgg11_bn(), 512 * 7 * 7), 64,
                 [("conv1_1_bn", "features.1"), ("conv5_2_bn", "features.26")]),
    "googlenet_tv": ({}, lambda: _tv().googlenet(aux_logits=False, init_weights=True,
                                                 transform_input=True), 64,
                     [("conv1/bn", "conv1.bn"), ("inception3b", "inception3b"),
                      ("inception4e", "inception4e"), ("inception5b", "inception5b")]),
}


def _torch_outputs(module, x, names):
  captured = {}

  def keep(name):
    def hook(_module, _inputs, output):
      # A copy: an in-place ReLU follows; and None, since a value returned
      # by a forward hook would replace the module's output.
      captured.setdefault(name, output.clone())
    return hook

  handles = [module.get_submodule(n).register_forward_hook(keep(n)) for n in names]
  with torch.no_grad():
    logits = module(_nchw(x))
  for h in handles:
    h.remove()
  return logits.numpy(), captured


def _small_classifier(model, inputs: int, hidden: int = 64, classes: int = 10):
  """Replaces a torchvision VGG/AlexNet classifier by the same layers at the
  same indices, narrower (cnnjax: hidden=64, num_classes=10), so the test
  stays light."""
  nn = torch.nn
  layers = [type(m) for m in model.classifier]
  widths = iter([(inputs, hidden), (hidden, hidden), (hidden, classes)])
  model.classifier = nn.Sequential(
      *[nn.Linear(*next(widths)) if kind is nn.Linear else kind()
        for kind in layers])
  return model


@functools.lru_cache(maxsize=None)
def _forward(model, names: tuple[str, ...]):
  """Logits and the outputs of the modules `names`, in one jitted program."""
  def keep(module, method):
    return method == "__call__" and "/".join(module.path) in names

  def forward(variables, x):
    logits, state = model.apply(variables, x, train=False,
                                capture_intermediates=keep, mutable=["intermediates"])
    flat = flax.traverse_util.flatten_dict(state.get("intermediates", {}))
    return logits, {"/".join(k[:-1]): v[0] for k, v in flat.items()}

  return jax.jit(forward)


def _check_parity(name, fields, build, size, stages, batch=2):
  torch.manual_seed(0)
  twin = build().eval()
  _randomize_batch_norm(twin, size)
  state = _state(twin)
  loaded = weights.import_state_dict(name, state, input_shape=(size, size, 3),
                                     **fields)
  x = np.random.default_rng(1).normal(size=(batch, size, size, 3)).astype(np.float32)
  reference, captured = _torch_outputs(twin, x, [t for _, t in stages])
  logits, ours = _forward(loaded.model, tuple(j for j, _ in stages))(loaded.variables, x)
  assert np.abs(np.asarray(logits) - reference).max() <= TOL
  for j, t in stages:
    assert np.abs(np.asarray(ours[j]) - _nhwc(captured[t])).max() <= TOL, (j, t)
  # The round trip is exact, and the export loads into the twin strictly.
  back = weights.export_state_dict(name, loaded.variables)
  assert set(back) == set(state)
  for key, value in state.items():
    assert back[key].dtype == value.dtype or key.endswith("num_batches_tracked")
    if not key.endswith("num_batches_tracked"):
      assert np.array_equal(back[key], value), key
  again = weights.import_state_dict(name, back, input_shape=(size, size, 3), **fields)
  assert jax.tree.all(jax.tree.map(np.array_equal, again.variables, loaded.variables))
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
  return loaded


# One of each kind of block in the default suite (basic; bottleneck with
# groups and SE), the other ResNet variants use the same rules: slow tier.
# GoogLeNet's conversion (9 s on 2 cores, the most of any) also runs there;
# its import, every key placed, runs by default in the test below it.
_SAME_RULES = ("resnet50", "resnext50_32x4d", "wide_resnet50_2", "se_resnet50",
               "googlenet_tv")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in _SAME_RULES else n
    for n in sorted(SMALL)])
def test_logits_and_stage_outputs_match_the_twin(name):
  fields, build, size, stages = SMALL[name]
  _check_parity(name, fields, build, size, stages)


def test_googlenet_import_turns_on_the_input_transform():
  fields, build, size, _ = SMALL["googlenet_tv"]
  loaded = weights.import_state_dict("googlenet_tv", _state(build().eval()),
                                     input_shape=(size, size, 3))
  assert loaded.model.transform_input and loaded.fields["transform_input"] is True
  assert loaded.report.ignored == []  # The twin has no aux heads here.


FULL = {
    **{n: (lambda n=n: getattr(_tv(), n)()) for n in (
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2",
        "wide_resnet101_2", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn",
        "vgg13_bn", "vgg16_bn", "vgg19_bn", "densenet121", "densenet161",
        "densenet169", "densenet201")},
    "alexnet_tv": lambda: _tv().alexnet(),
    "googlenet_tv": lambda: _tv().googlenet(aux_logits=False, init_weights=True,
                                            transform_input=True),
    "se_resnet50": lambda: _timm().create_model("seresnet50"),
    "se_resnext50_32x4d": lambda: _timm().create_model("seresnext50_32x4d"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FULL))
def test_every_twin_at_full_size(name):
  size = 224 if name.startswith(("vgg", "alexnet")) else 64
  _check_parity(name, {}, FULL[name], size, (), batch=1)


def test_every_twin_is_tested_and_registered():
  assert set(FULL) == set(weights.TWINS.names())
  assert set(SMALL) <= set(FULL)


# ---- refusals

@pytest.fixture(scope="module")
def resnet18_state():
  torch.manual_seed(0)
  return _state(_resnet("BasicBlock", [1, 1, 1, 1]))


def _import18(state, **kw):
  return weights.import_state_dict("resnet18", state, input_shape=(32, 32, 3),
                                   stage_sizes=(1, 1, 1, 1), **kw)


def test_wrong_model_names_the_key_and_both_shapes(resnet18_state):
  with pytest.raises(weights.WeightsMismatchError,
                     match=r"'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\) "
                     r"in the state dict but resnet50 needs \(64, 64, 1, 1\)"):
    weights.import_state_dict("resnet50", resnet18_state, input_shape=(32, 32, 3),
                              stage_sizes=(1, 1, 1, 1))


def test_missing_and_unexpected_keys(resnet18_state):
  state = dict(resnet18_state)
  del state["layer2.0.bn1.running_var"]
  with pytest.raises(weights.WeightsMismatchError,
                     match=r"lacks 'layer2.0.bn1.running_var', which resnet18 "
                     r"needs with shape \(128,\)"):
    _import18(state)
  state = dict(resnet18_state, **{"layer5.0.conv1.weight": np.zeros((3, 3), np.float32)})
  with pytest.raises(weights.WeightsMismatchError,
                     match=r"tensor 'layer5.0.conv1.weight' \(3, 3\) that "
                     r"torchvision's resnet18"):
    _import18(state)


def test_another_class_count_reinitializes_only_the_head(resnet18_state):
  same = _import18(resnet18_state)
  assert same.report.num_classes == 1000 and not same.report.head_reinitialized
  ten = _import18(resnet18_state, num_classes=10)
  assert ten.variables["params"]["head"]["kernel"].shape == (512, 10)
  assert ten.report.head_reinitialized and ten.report.file_classes == 1000
  assert "has 10 classes where the file's has 1000" in ten.report.summary()
  flat_same = jax.tree_util.tree_flatten_with_path(same.variables)[0]
  flat_ten = dict(jax.tree_util.tree_flatten_with_path(ten.variables)[0])
  for path, value in flat_same:
    if "head" not in jax.tree_util.keystr(path):
      assert np.array_equal(flat_ten[path], value)


def test_legacy_densenet_keys_load():
  torch.manual_seed(0)
  state = _state(_densenet())
  legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
            for k, v in state.items()}
  assert legacy != state
  fields = SMALL["densenet121"][0]
  a = weights.import_state_dict("densenet121", state, input_shape=(32, 32, 3), **fields)
  b = weights.import_state_dict("densenet121", legacy, input_shape=(32, 32, 3), **fields)
  assert jax.tree.all(jax.tree.map(np.array_equal, a.variables, b.variables))


def test_a_model_without_twin_is_one_sentence():
  with pytest.raises(weights.CnnjaxError if hasattr(weights, "CnnjaxError")
                     else Exception, match="has no torchvision or timm twin"):
    weights.twin_of("lenet5")


def test_create_model_with_pretrained_file(tmp_path, resnet18_state):
  path = str(tmp_path / "resnet18-0000.safetensors")
  weights.write_state_dict(resnet18_state, path)
  model, variables = weights.create_model(
      "resnet18", pretrained=str(tmp_path), num_classes=3, input_shape=(32, 32, 3),
      stage_sizes=(1, 1, 1, 1))
  assert model.num_classes == 3
  direct = _import18(resnet18_state)
  assert np.array_equal(variables["params"]["stem_conv"]["kernel"],
                        direct.variables["params"]["stem_conv"]["kernel"])


def test_a_pretrained_backbone_gives_the_twins_stage_maps(tmp_path):
  """create_model(pretrained=..., features_only=True): the maps of stages
  1-4 equal the PyTorch twin's layer1..layer4 outputs."""
  torch.manual_seed(0)
  twin = _resnet("Bottleneck", [1, 1, 1, 1])
  _randomize_batch_norm(twin, 64)
  path = str(tmp_path / "resnet50-test.pth")
  torch.save(twin.state_dict(), path)
  backbone, variables = weights.create_model(
      "resnet50", pretrained=path, features_only=True, out_indices=(1, 2, 3, 4),
      input_shape=(64, 64, 3), stage_sizes=(1, 1, 1, 1))
  assert "head" not in variables["params"]
  assert [f["num_chs"] for f in backbone.feature_info] == [256, 512, 1024, 2048]
  x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
  maps = jax.jit(lambda v, x: backbone.apply(v, x, train=False))(variables, x)
  _, captured = _torch_outputs(twin, x, [f"layer{i}" for i in range(1, 5)])
  for i, ours in enumerate(maps, start=1):
    assert np.abs(np.asarray(ours) - _nhwc(captured[f"layer{i}"])).max() <= TOL
