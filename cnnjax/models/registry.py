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
import numbers
import re
from typing import Any, Callable

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


def _field_defaults(factory) -> dict[str, tuple[str, Any]]:
  """{field: (its annotation as text, its default)} of a Module factory, a
  partial's keywords counting as defaults; {} when they cannot be known."""
  target = getattr(factory, "func", factory)
  if not (inspect.isclass(target) and dataclasses.is_dataclass(target)):
    return {}
  keywords = getattr(factory, "keywords", None) or {}
  found = {}
  for f in dataclasses.fields(target):
    annotation = f.type if isinstance(f.type, str) else getattr(
        f.type, "__name__", str(f.type))
    found[f.name] = (annotation.replace("typing.", ""),
                     keywords.get(f.name, f.default))
  return found


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _split_top(text: str, sep: str) -> list[str]:
  """'Sequence[int] | None' split on '|' outside brackets (or on ',')."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += (ch == "[") - (ch == "]")
    if ch == sep and depth == 0:
      parts.append(text[start:i].strip())
      start = i + 1
  parts.append(text[start:].strip())
  return parts


_SEQUENCE = re.compile(r"(?:Sequence|tuple|Tuple|list|List)\[(.*)\]")


def _fits(value, annotation: str) -> bool | None:
  """Whether `value` has the type the annotation text names: True, False,
  or None for a type this check does not know (anything goes)."""
  answers = []
  for kind in _split_top(annotation, "|"):
    optional = re.fullmatch(r"Optional\[(.*)\]", kind)
    sequence = _SEQUENCE.fullmatch(kind)
    if optional:
      answers.append(_fits(value, optional.group(1) + " | None"))
    elif kind == "None":
      answers.append(value is None)
    elif kind == "int":
      answers.append(_is_int(value))
    elif kind == "float":
      answers.append(isinstance(value, numbers.Real) and not isinstance(value, bool))
    elif kind == "bool":
      answers.append(isinstance(value, bool))
    elif kind == "str":
      answers.append(isinstance(value, str))
    elif not sequence:
      answers.append(None)  # Any, a callable, a class: not checked here.
    elif not isinstance(value, (tuple, list)):
      answers.append(False)
    else:
      items = _split_top(sequence.group(1), ",")
      if len(items) == 1 or items[-1] == "...":  # Sequence[int], tuple[int, ...]
        found = [_fits(v, items[0]) for v in value]
      elif len(value) == len(items):  # tuple[int, int]: a type per position.
        found = [_fits(v, t) for v, t in zip(value, items)]
      else:
        found = [False]
      answers.append(None if None in found else all(found))
  if True in answers:
    return True
  return None if None in answers else False


def _ints(value) -> list:
  """Every int inside `value` (a number, or nested sequences of them)."""
  if isinstance(value, (tuple, list)):
    return [i for v in value for i in _ints(v)]
  return [value] if _is_int(value) else []


# How a type reads in a sentence: (one, several).
_DESCRIPTIONS = {"int": ("an integer", "integers"), "float": ("a number", "numbers"),
                 "bool": ("true or false", "booleans"), "str": ("a string", "strings"),
                 "None": ("None", "None")}


def _describe(annotation: str, plural: bool = False) -> str:
  """'Sequence[int] | None' -> 'a sequence of integers or None'."""
  kinds = []
  for kind in _split_top(annotation, "|"):
    sequence = _SEQUENCE.fullmatch(kind)
    if kind in _DESCRIPTIONS:
      kinds.append(_DESCRIPTIONS[kind][plural])
    elif sequence:
      inner = _describe(_split_top(sequence.group(1), ",")[0], plural=True)
      kinds.append(f"{'sequences' if plural else 'a sequence'} of {inner}")
    else:
      kinds.append(kind)
  return " or ".join(kinds)


# Integer fields where 0 is a value, not a mistake, even though their default
# is positive: paddings, and num_classes=0 (the features, without a head).
_ZERO_ALLOWED = re.compile(r"padding|^num_classes$")


def _check_dtype(name: str, field: str, value: str) -> None:
  """A dtype given by name ('bfloat16') must be one JAX knows."""
  import jax.numpy as jnp
  try:
    jnp.dtype(value)
  except TypeError:
    raise CnnjaxError(f"model '{name}': {field}={value!r} is not a dtype such "
                      "as 'float32' or 'bfloat16'") from None


def check_field_values(name: str, overrides: dict) -> None:
  """Refuses, in one sentence naming the field and its value, a model field
  of the wrong type (a text where a tuple of ints belongs) or a negative
  count, before the model is built: otherwise the mistake surfaces as a shape
  error at initialization, blamed on the input. A zero is refused where the
  field's default is positive (zero channels, a zero stride), except in the
  fields `_ZERO_ALLOWED` names."""
  fields = _field_defaults(_spec(name).factory)
  for field, value in overrides.items():
    if field not in fields:
      continue
    annotation, default = fields[field]
    if field.endswith("dtype") and isinstance(value, str):
      _check_dtype(name, field, value)
      continue
    fits = _fits(value, annotation)
    if fits is False:
      shown = "" if default is dataclasses.MISSING else f" (default {default!r})"
      raise CnnjaxError(f"model '{name}': {field}={value!r} is not "
                        f"{_describe(annotation)}{shown}")
    if fits is None:
      continue
    numbers_in = _ints(value)
    if any(i < 0 for i in numbers_in):
      raise CnnjaxError(f"model '{name}': {field}={value!r} cannot be negative")
    defaults = _ints(default) if default is not dataclasses.MISSING else []
    if (0 in numbers_in and defaults and min(defaults) > 0
        and not _ZERO_ALLOWED.search(field)):
      raise CnnjaxError(f"model '{name}': {field}={value!r} must be positive "
                        f"(default {default!r})")


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
  check_field_values(name, overrides)
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
