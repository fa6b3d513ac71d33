"""Multi-scale feature backbones (timm's `features_only`) from the classifiers.

    import jax, jax.numpy as jnp
    from cnnjax.models import backbone_variables, create_model

    x = jnp.zeros((2, 224, 224, 3))
    classifier = create_model('resnet50')
    variables = classifier.init(jax.random.key(0), x)  # or converted weights
    net = create_model('resnet50', features_only=True, out_indices=(1, 2, 3, 4))
    weights = backbone_variables(variables, net)  # all of them but the head
    maps = net.apply(weights, x)  # [(2, 56, 56, 256), ..., (2, 7, 7, 2048)]
    [f['num_chs'] for f in net.feature_info]    # [256, 512, 1024, 2048]
    [f['reduction'] for f in net.feature_info]  # [4, 8, 16, 32]
    maps, state = net.apply(weights, x, train=True, mutable=['batch_stats'])

Detection and segmentation heads read a classifier's maps at several
strides. Rather than a second copy of every network, a `Backbone` runs the
classifier itself and keeps the outputs of its stage modules, so the two
cannot drift apart and a classifier's weights load unchanged: the
backbone's variables are the classifier's, keyed the same way (the wrapper
shares the classifier's scope and adds no level), up to its last selected
stage. It stops there, before anything later runs: the `head` is never
computed, nor VGG's FC6/FC7, nor the stages after the last one asked for.
`backbone_variables` picks those variables out of a classifier's.

A family opts in with one method, `feature_stages()`, listing its stage
outputs as `FeatureStage`s in timm's order, so that `out_indices` numbers
them as timm does: ResNets the stem's ReLU (stride 2) and the four stages;
VGG the five stages' last ReLU (before each pooling, strides 1 to 16) and
the last pooling (32); DenseNets the stem's ReLU, the first three dense
blocks and the final BN-ReLU. Where the classifier applies a ReLU right
after the module (a BatchNorm, a convolution), the backbone applies it too
(`act`), as timm's taps sit after their activations.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError

ACTIVATIONS = {None: lambda y: y, "relu": nn.relu}
FAMILIES = ("ResNet, ResNeXt, Wide ResNet, SE-ResNet(X), VGG and DenseNet "
            "models (e.g. resnet50, vgg16_bn, densenet121)")


@dataclasses.dataclass(frozen=True)
class FeatureStage:
  """One stage output: the path of the module giving it, its channels, its
  stride relative to the input, and the activation the classifier applies
  right after that module (None or 'relu')."""
  module: str
  num_chs: int
  reduction: int
  act: str | None = None


class _Stop(Exception):
  """Raised inside the classifier once the last selected stage is out."""


def has_backbone(model) -> bool:
  """Whether a model (a Module, its class or a partial of it) has stages."""
  target = getattr(model, "func", model)
  return callable(getattr(target, "feature_stages", None))


def stage_indices(out_indices, stages: Sequence[FeatureStage],
                  what: str = "the model") -> tuple[int, ...]:
  """`out_indices` as stage numbers, timm's way: None for every stage, an
  int n for the last n, or a sequence of numbers (negative ones from the
  end), kept in the order given."""
  count = len(stages)
  listing = ", ".join(f"{i}: {s.module}" for i, s in enumerate(stages))
  bad = CnnjaxError(
      f"out_indices for {what} must be distinct stage numbers from 0 to "
      f"{count - 1} (or -{count} to -1), or a count from 1 to {count} of the "
      f"last stages, got {out_indices!r} (its stages are {listing}).")
  if out_indices is None:
    return tuple(range(count))
  if isinstance(out_indices, bool):
    raise bad
  if isinstance(out_indices, int):
    if not 1 <= out_indices <= count:
      raise bad
    return tuple(range(count - out_indices, count))
  try:
    items = list(out_indices)
    numbers = [operator.index(i) for i in items]
  except TypeError:
    raise bad from None
  if (not numbers or any(isinstance(i, bool) for i in items)
      or any(not -count <= i < count for i in numbers)):
    raise bad
  chosen = tuple(i % count for i in numbers)
  if len(set(chosen)) != len(chosen):
    raise bad
  return chosen


class Backbone(nn.Module):
  """The classifier `net`'s stage outputs `out_indices` (None: all), as a
  list in that order; `feature_info` describes them. Build it with
  `create_model(name, features_only=True)` or `feature_backbone`.

  `input_shape` (one example, no batch axis) is what `backbone_variables`
  traces by default; `create_model` sets it to the registered one.
  """
  net: nn.Module
  out_indices: tuple[int, ...] | None = None
  input_shape: tuple[int, ...] | None = None

  def setup(self):
    # The classifier's modules sit where they sit in the classifier: no
    # 'net' level in the variables or the module paths.
    nn.share_scope(self, self.net)

  def selected(self) -> list[tuple[int, FeatureStage]]:
    """(stage number, stage) of every output, in output order."""
    every = tuple(self.net.feature_stages())
    return [(i, every[i]) for i in stage_indices(self.out_indices, every)]

  @property
  def feature_info(self) -> list[dict[str, Any]]:
    """timm's feature_info: per output its `module` path, `num_chs`,
    `reduction`, `act` (applied after the module) and stage `index`."""
    return [dict(dataclasses.asdict(s), index=i) for i, s in self.selected()]

  def __call__(self, x, *, train: bool = False) -> list[Any]:
    selected = self.selected()
    stages = [s for _, s in selected]
    wanted = {s.module: s for s in stages}
    last = max(selected, key=lambda pair: pair[0])[1]  # The end of the run.
    found: dict[str, Any] = {}
    # Paths relative to this backbone, which may sit inside a head's model.
    depth = len(self.path)

    def tap(next_fun, args, kwargs, context):
      if last.module in found:
        raise _Stop  # Anything after the last selected stage.
      y = next_fun(*args, **kwargs)
      path = "/".join(context.module.path[depth:])
      if context.method_name == "__call__" and path in wanted:
        found.setdefault(path, ACTIVATIONS[wanted[path].act](y))
      return y

    with nn.intercept_methods(tap):
      try:
        self.net(x, train=train)
      except _Stop:
        pass
    missing = [s.module for s in stages if s.module not in found]
    if missing:
      raise CnnjaxError(f"the model never called its stage module "
                        f"'{missing[0]}', so it has no such feature map.")
    return [found[s.module] for s in stages]


def feature_backbone(model: nn.Module, out_indices=None, *,
                     name: str | None = None,
                     input_shape: Sequence[int] | None = None) -> Backbone:
  """A `Backbone` of the classifier `model` (`name`: its registered name,
  for messages); raises `CnnjaxError` if its family has no stages or
  `out_indices` does not fit them."""
  what = f"model '{name}'" if name else type(model).__name__
  if not has_backbone(model):
    raise CnnjaxError(f"{what} has no feature backbone (features_only=True); "
                      f"the {FAMILIES} have one.")
  indices = stage_indices(out_indices, tuple(model.feature_stages()), what)
  return Backbone(model, indices,
                  None if input_shape is None else tuple(input_shape))


def _leaves(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(v.shape)
          for path, v in flat}


def backbone_variables(variables, backbone: Backbone, x=None):
  """The part of a classifier's `variables` that `backbone` uses: every
  collection's entries for the modules up to its last stage, unchanged
  (for all stages, all but the `head`, and VGG's fc6 and fc7).

  `x` is an example input, traced abstractly (nothing runs); None: zeros
  of `backbone.input_shape`. Raises `CnnjaxError` if the variables lack
  one the backbone needs or have it in another shape (another model's).
  """
  if x is None:
    if backbone.input_shape is None:
      raise CnnjaxError("backbone_variables needs an example input x for a "
                        "backbone without an input_shape.")
    x = jnp.zeros((1, *backbone.input_shape), jnp.float32)
  needed = jax.eval_shape(backbone.init, jax.random.key(0), x)
  picked = {}
  for collection in sorted(needed, key=lambda c: c != "params"):
    tree = needed[collection]
    have = variables.get(collection, {})
    absent = [k for k in tree if k not in have]
    if absent:
      raise CnnjaxError(f"the variables lack '{collection}/{absent[0]}', "
                        f"which the backbone needs: are they its "
                        f"classifier's?")
    picked[collection] = {k: have[k] for k in tree}
  want, got = _leaves(needed), _leaves(picked)
  for path in sorted(set(want) | set(got)):
    if got.get(path) != want.get(path):
      raise CnnjaxError(
          f"the variables' '{path}' has shape {got.get(path)} where the "
          f"backbone, on inputs of shape {tuple(x.shape)}, has "
          f"{want.get(path)}: are they its classifier's, for such inputs?")
  return picked
