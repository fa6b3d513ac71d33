"""Model registry: every architecture behind one factory.

    model = create_model('mnist1d_cnn', num_classes=10)
    variables = model.init(rng, jnp.zeros((1, *model_input_shape('mnist1d_cnn'))))

A registered entry is any callable returning a `flax.linen.Module` (a Module
class, or a `functools.partial` of one); `create_model` passes the caller's
keyword overrides to it, so overrides always win over the registered defaults.
The entries are `ModelSpec`s in `MODELS`, a `cnnjax.registry.Registry`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import flax.linen as nn

from cnnjax.errors import CnnjaxError
from cnnjax.models.backbone import feature_backbone
from cnnjax.registry import Registry


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  factory: Callable[..., nn.Module]
  input_shape: tuple[int, ...]  # One example, without the batch axis.
  description: str
  input_dtype: str = "float32"  # 'int32' for token ids (text models).


def _make_spec(name: str, factory, *, input_shape: tuple[int, ...],
               description: str = "", input_dtype: str = "float32"
               ) -> ModelSpec:
  doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
  return ModelSpec(name, factory, tuple(input_shape), doc, input_dtype)


# Filled by the family modules, which the package (models/__init__.py) imports.
MODELS: Registry[ModelSpec] = Registry("model", make_entry=_make_spec,
                                       listing="`cnnjax models`")


def register_model(name: str, *, input_shape: tuple[int, ...],
                   description: str = "", input_dtype: str = "float32"):
  """Decorator registering a Module class or factory under `name`.

  `input_shape` is one example without the batch axis; `input_dtype` is
  'float32' for images and signals, 'int32' for token ids.
  """
  return MODELS.register(name, input_shape=input_shape,
                         description=description, input_dtype=input_dtype)


def _spec(name: str) -> ModelSpec:
  return MODELS.get(name)


def _module_fields(factory) -> set[str] | None:
  """The keyword arguments a Module factory accepts, if they can be known."""
  target = getattr(factory, "func", factory)  # functools.partial
  if inspect.isclass(target) and dataclasses.is_dataclass(target):
    return {f.name for f in dataclasses.fields(target) if f.init} - {
        "parent", "name"}
  return None


def create_model(name: str, *, features_only: bool = False, out_indices=None,
                 **overrides) -> nn.Module:
  """Builds the registered model `name`, with `overrides` for its fields.

  `features_only=True` gives its multi-scale feature backbone instead
  (models/backbone.py, timm's meaning): a module returning the list of the
  maps of stages `out_indices` (None: all), described by `feature_info`.
  """
  spec = _spec(name)
  if out_indices is not None and not features_only:
    raise CnnjaxError("out_indices picks the stages of a feature backbone; "
                      "it needs features_only=True.")
  fields = _module_fields(spec.factory)
  if fields is not None:
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise CnnjaxError(
          f"model '{name}' has no option {', '.join(repr(u) for u in unknown)}; "
          f"its options are: {', '.join(sorted(fields))}")
  try:
    model = spec.factory(**overrides)
  except TypeError as e:
    raise CnnjaxError(f"bad options for model '{name}': {e}") from e
  if features_only:
    return feature_backbone(model, out_indices, name=name,
                            input_shape=spec.input_shape)
  return model


def list_models(pattern: str = "*") -> list[str]:
  """Registered model names matching a glob pattern, sorted."""
  return sorted(MODELS.names(pattern))


def model_input_shape(name: str) -> tuple[int, ...]:
  """The default input shape of one example (no batch axis)."""
  return _spec(name).input_shape


def model_input_dtype(name: str) -> str:
  """'float32' for images and signals, 'int32' for token ids."""
  return _spec(name).input_dtype


def model_description(name: str) -> str:
  return _spec(name).description
