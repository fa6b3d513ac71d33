"""Which PyTorch model each cnnjax model is the twin of, and how their
modules correspond: one declarative table per family.

A `Rule` pairs a cnnjax module path with a PyTorch module name, both as
templates whose `{placeholders}` match one name part and carry over:

    Rule("stage{s}_block{b}/conv{i}", "layer{s}.{b}.conv{i}")

maps cnnjax's 'stage2_block0/conv1' to torchvision's 'layer2.0.conv1'. Rules
name modules, not tensors: what a module holds (a convolution's kernel, a
dense layer's, BatchNorm's scale and running statistics) follows from the
cnnjax variables (convert.py), so a table never lists 'weight' or 'bias'.
Every cnnjax module must match a rule, and every tensor of the file must be
used or knowingly ignored, so a family whose layout changes fails loudly
instead of loading half its weights.

A rule may say `chw=(H, W)`: the dense layer reads a flattened (H, W, C)
map, which PyTorch flattens as (C, H, W) (VGG's and AlexNet's FC6,
GoogLeNet's auxiliary FC1); and `conv1x1=True`: cnnjax's dense layer is a 1x1
convolution in PyTorch (timm's squeeze-excitation).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from cnnjax.errors import CnnjaxError
from cnnjax.registry import Registry

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

@dataclasses.dataclass(frozen=True)
class Rule:
  jax: str      # cnnjax module path template, '/'-separated.
  torch: str    # PyTorch module name template, '.'-separated.
  chw: tuple[int, int] | None = None
  conv1x1: bool = False

  def match(self, path: str) -> str | None:
    """The PyTorch module name for cnnjax's `path`, or None."""
    pattern, names = "", []
    position = 0
    for m in _PLACEHOLDER.finditer(self.jax):
      pattern += re.escape(self.jax[position:m.start()])
      name = m.group(1)
      pattern += (f"(?P=p_{name})" if name in names
                  else f"(?P<p_{name}>[0-9a-z]+)")
      names.append(name)
      position = m.end()
    pattern += re.escape(self.jax[position:])
    found = re.fullmatch(pattern, path)
    if found is None:
      return None
    return self.torch.format(**{n: found.group(f"p_{n}") for n in names})

@dataclasses.dataclass(frozen=True)
class Twin:
  """The PyTorch twin of a cnnjax model.

  Attributes:
    model: the cnnjax model name.
    library: 'torchvision' or 'timm'.
    name: the twin's name in that library (its builder function).
    rules: module correspondences, checked in order.
    ignored: regexes of file keys that are never imported (torchvision's
      auxiliary GoogLeNet heads when the cnnjax model has none).
    legacy: (regex, replacement) rewrites of old key spellings, applied to
      a file's keys before matching (DenseNet's 'norm.1' is now 'norm1').
    import_fields: cnnjax model fields that imported weights need (GoogLeNet's
      `transform_input`, which torchvision turns on for its weights).
    torch_kwargs: the keyword arguments that build the twin for an exported
      state dict (`aux_logits=False` for GoogLeNet).
    weights: where the official weights live, for the docs and messages.
  """
  model: str
  library: str
  name: str
  rules: tuple[Rule, ...]
  ignored: tuple[str, ...] = ()
  legacy: tuple[tuple[str, str], ...] = ()
  import_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
  torch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  weights: str = ""

  def torch_module(self, path: str) -> tuple[str, Rule]:
    """(PyTorch module name, rule) of a cnnjax module path."""
    for rule in self.rules:
      name = rule.match(path)
      if name is not None:
        return name, rule
    raise CnnjaxError(f"cnnjax's {self.model} has a layer '{path}' that its "
                      f"{self.library} twin {self.name} does not map")

  def rename(self, key: str) -> str:
    for pattern, replacement in self.legacy:
      key = re.sub(pattern, replacement, key)
    return key

  def is_ignored(self, key: str) -> bool:
    return key.endswith(".num_batches_tracked") or any(
        re.fullmatch(p, key) for p in self.ignored)

  def builder(self, kwargs: dict[str, Any] | None = None) -> str:
    """The Python call that builds the twin (with `kwargs`, default
    `torch_kwargs`), for messages, docs and export sidecars."""
    kwargs = self.torch_kwargs if kwargs is None else kwargs
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    if self.library == "timm":
      return f"timm.create_model({self.name!r}{', ' + args if args else ''})"
    return f"torchvision.models.{self.name}({args})"

TWINS: Registry[Twin] = Registry("model with a PyTorch twin",
                                 listing="`cnnjax convert --list`")

def twin_of(model: str) -> Twin:
  """The twin of cnnjax model `model`; one sentence when it has none."""
  if model not in TWINS:
    raise CnnjaxError(
        f"cnnjax model '{model}' has no torchvision or timm twin to exchange "
        f"weights with; these do: {', '.join(TWINS.names())}")
  return TWINS.get(model)

def _add(model: str, library: str, name: str, rules: Sequence[Rule],
         weights: str = "", **details) -> None:
  TWINS.add(model, Twin(model, library, name, tuple(rules), weights=weights,
                        **details))

# ---- ResNet, ResNeXt, Wide ResNet (torchvision) and SE variants (timm)

RESNET_RULES = (
    Rule("stem_conv", "conv1"),
    Rule("stem_bn", "bn1"),
    Rule("stage{s}_block{b}/conv{i}", "layer{s}.{b}.conv{i}"),
    Rule("stage{s}_block{b}/bn{i}", "layer{s}.{b}.bn{i}"),
    Rule("stage{s}_block{b}/shortcut_conv", "layer{s}.{b}.downsample.0"),
    Rule("stage{s}_block{b}/shortcut_bn", "layer{s}.{b}.downsample.1"),
    Rule("stage{s}_block{b}/se/fc{i}", "layer{s}.{b}.se.fc{i}", conv1x1=True),
    Rule("head", "fc"),
)

_TV = "https://download.pytorch.org/models/"
_TORCHVISION_RESNETS = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
    "resnext50_32x4d": "resnext50_32x4d-7cdf4587.pth",
    "resnext101_32x8d": "resnext101_32x8d-8ba56ff5.pth",
    "wide_resnet50_2": "wide_resnet50_2-95faca4d.pth",
    "wide_resnet101_2": "wide_resnet101_2-32ee1156.pth",
}
for _name, _file in _TORCHVISION_RESNETS.items():
  _add(_name, "torchvision", _name, RESNET_RULES, weights=_TV + _file)
for _name, _timm in (("se_resnet50", "seresnet50"),
                     ("se_resnext50_32x4d", "seresnext50_32x4d")):
  _add(_name, "timm", _timm, RESNET_RULES,
       weights=f"https://huggingface.co/timm/{_timm} (timm.create_model("
       f"'{_timm}', pretrained=True) caches it under ~/.cache/huggingface)")

# ---- VGG: torchvision's `features` is one positional Sequential

def _vgg_rules(stages: Sequence[Sequence[int]], batch_norm: bool) -> list[Rule]:
  rules, index = [], 0
  for s, kernels in enumerate(stages, start=1):
    for c in range(1, len(kernels) + 1):
      rules.append(Rule(f"conv{s}_{c}", f"features.{index}"))
      if batch_norm:
        rules.append(Rule(f"conv{s}_{c}_bn", f"features.{index + 1}"))
      index += 3 if batch_norm else 2  # conv, [bn], relu
    index += 1  # the stage's max pool
  return rules + [Rule("fc6", "classifier.0", chw=(7, 7)),
                  Rule("fc7", "classifier.3"),
                  Rule("head", "classifier.6")]

def _register_vggs() -> None:
  from cnnjax.models.vgg import VGG_STAGES

  files = {"vgg11": "vgg11-8a719046.pth", "vgg13": "vgg13-19584684.pth",
           "vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth",
           "vgg11_bn": "vgg11_bn-6002323d.pth", "vgg13_bn": "vgg13_bn-abd245e5.pth",
           "vgg16_bn": "vgg16_bn-6c64b313.pth", "vgg19_bn": "vgg19_bn-c79401a0.pth"}
  for depth, config in (("11", "A"), ("13", "B"), ("16", "D"), ("19", "E")):
    for bn in (False, True):
      name = f"vgg{depth}{'_bn' if bn else ''}"
      _add(name, "torchvision", name, _vgg_rules(VGG_STAGES[config], bn),
           weights=_TV + files[name])

_register_vggs()

_add("alexnet_tv", "torchvision", "alexnet",
     [Rule(f"conv{i}", f"features.{j}")
      for i, j in zip(range(1, 6), (0, 3, 6, 8, 10))]
     + [Rule("fc6", "classifier.1", chw=(6, 6)), Rule("fc7", "classifier.4"),
        Rule("head", "classifier.6")],
     weights=_TV + "alexnet-owt-7be5be79.pth")

# ---- DenseNet

DENSENET_RULES = (
    Rule("stem_conv", "features.conv0"),
    Rule("stem_bn", "features.norm0"),
    Rule("denseblock{b}/layer{l}/bn{i}", "features.denseblock{b}.denselayer{l}.norm{i}"),
    Rule("denseblock{b}/layer{l}/conv{i}", "features.denseblock{b}.denselayer{l}.conv{i}"),
    Rule("transition{t}/bn", "features.transition{t}.norm"),
    Rule("transition{t}/conv", "features.transition{t}.conv"),
    Rule("final_bn", "features.norm5"),
    Rule("head", "classifier"),
)
# torchvision's published DenseNet files predate its current key names:
# 'denselayer1.norm.1.weight' is now 'denselayer1.norm1.weight'.
_DENSENET_LEGACY = ((r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2."),)
for _name, _file in (("densenet121", "densenet121-a639ec97.pth"),
                     ("densenet161", "densenet161-8d451a50.pth"),
                     ("densenet169", "densenet169-b2777c0a.pth"),
                     ("densenet201", "densenet201-c1103571.pth")):
  _add(_name, "torchvision", _name, DENSENET_RULES, legacy=_DENSENET_LEGACY,
       weights=_TV + _file)

# ---- GoogLeNet (torchvision's BatchNorm variant)

_INCEPTION_BRANCHES = (("b1x1", "branch1"), ("b3x3_reduce", "branch2.0"),
                       ("b3x3", "branch2.1"), ("b5x5_reduce", "branch3.0"),
                       ("b5x5", "branch3.1"), ("pool_proj", "branch4.1"))
GOOGLENET_RULES = tuple(
    [Rule(f"conv{{i}}/{part}", f"conv{{i}}.{part}") for part in ("conv", "bn")]
    + [Rule(f"inception{{x}}/{ours}/{part}", f"inception{{x}}.{theirs}.{part}")
       for ours, theirs in _INCEPTION_BRANCHES for part in ("conv", "bn")]
    + [Rule(f"aux{{a}}/conv/{part}", f"aux{{a}}.conv.{part}")
       for part in ("conv", "bn")]
    + [Rule("aux{a}/fc1", "aux{a}.fc1", chw=(4, 4)),
       Rule("aux{a}/fc2", "aux{a}.fc2"),
       Rule("head", "fc")])
_add("googlenet_tv", "torchvision", "googlenet", GOOGLENET_RULES,
     # cnnjax's googlenet_tv has no auxiliary heads (they only train).
     ignored=(r"aux[12]\..*",),
     import_fields={"transform_input": True},
     torch_kwargs={"aux_logits": False, "init_weights": False},
     weights=_TV + "googlenet-1378be20.pth")

def twin_table() -> list[dict[str, str]]:
  """One row per twin: cnnjax model, library, twin, builder, weights."""
  return [{"model": t.model, "library": t.library, "twin": t.name,
           "builder": t.builder(), "weights": t.weights}
          for _, t in TWINS.items()]
