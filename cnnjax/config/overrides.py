"""Changing a config by name: `--config.a.b=value` overrides, dotted access,
and the differences between two configs."""

from __future__ import annotations

import ast
import difflib
from typing import Any, Mapping, Sequence

import ml_collections

from cnnjax.errors import CnnjaxError


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of a config, dotted: ['seed', 'model.name', ...]."""
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += flat_keys(v, prefix + k + ".")
    else:
      keys.append(prefix + k)
  return keys


def is_model_field(key: str) -> bool:
  """'model.FIELD': any field of the model may be set, not only known keys."""
  return key.startswith("model.") and key.count(".") == 1


def check_key(config: ml_collections.ConfigDict, key: str, where: str = "") -> None:
  """Raises CnnjaxError, with the closest known key, unless `key` exists
  (or is a model field, which `create_model` checks against the model)."""
  known = flat_keys(config)
  if key in known or is_model_field(key):
    return
  close = difflib.get_close_matches(key, known, n=1)
  hint = f"; did you mean '{close[0]}'?" if close else ""
  raise CnnjaxError(f"unknown config key '{key}'{' ' + where if where else ''}{hint}")


# Tuple keys of numbers whose base value is empty, so that their type cannot
# be read from it: 'int' or 'float' (a number) for each element.
_NUMBER_TUPLES = {"schedule.boundaries": "int", "schedule.boundary_epochs": "float",
                  "dataset.classes": "int", "dataset.mean": "float",
                  "dataset.std": "float", "augment.crop_scale": "float"}


def _is_number(value: Any, kind: str) -> bool:
  if isinstance(value, bool):
    return False
  return isinstance(value, int) if kind == "int" else isinstance(value, (int, float))


def _element_kind(key: str, current: tuple) -> str | None:
  """'int' or 'float' when every element of a tuple key must be a number
  (known, or read from its current value), else None."""
  if key in _NUMBER_TUPLES:
    return _NUMBER_TUPLES[key]
  if current and all(_is_number(v, "int") for v in current):
    return "int"
  if current and all(_is_number(v, "float") for v in current):
    return "float"
  return None


def _check_elements(items: tuple, current: tuple, key: str, text: str) -> tuple:
  """`items` with whole floats made ints where ints belong; one sentence
  naming the key for an element that is not a number of the right kind
  (otherwise a traceback in whatever first does arithmetic with it)."""
  kind = _element_kind(key, tuple(current))
  if kind is None:
    return items
  if kind == "int":
    items = tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in items)
  if not all(_is_number(v, kind) for v in items):
    what = "integers" if kind == "int" else "numbers"
    raise CnnjaxError(f"--config.{key} expects {what} such as "
                      f"{'(1, 2)' if kind == 'int' else '(0.5, 1.0)'}, got '{text}'")
  return items


def _parse_value(text: str, current: Any, key: str) -> Any:
  """Turns the text of an override into a value of the field's type."""
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise CnnjaxError(f"--config.{key} expects true or false, got '{text}'")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, int):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise CnnjaxError(f"--config.{key} expects an integer, got '{text}'")
  if isinstance(current, float):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise CnnjaxError(f"--config.{key} expects a number, got '{text}'")
  if isinstance(current, (tuple, list)):
    if not text.strip():
      return ()
    if isinstance(value, (tuple, list)):
      return _check_elements(tuple(value), current, key, text)
    # '1,2,3' parses as a tuple above; what is left is one item or bare
    # words, written bare ('a,b') or as Python writes a tuple ('(a, b)').
    inner = text.strip()
    if inner[:1] + inner[-1:] in ("()", "[]"):
      inner = inner[1:-1]
    return _check_elements(
        tuple(literal_or_text(t) for t in inner.split(",") if t.strip()),
        current, key, text)
  return value  # None or another type: take the literal as it is.


def literal_or_text(text: str) -> Any:
  """A Python literal if `text` is one ('3', '(1, 2)'), else the text."""
  try:
    return ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    return text.strip()


# How a shell user writes True, False and None for a model field, whose type
# the config does not know: 'true' must not become the (truthy) text 'true'.
_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _model_field_value(text: str) -> Any:
  """The value of a new 'model.FIELD' override: a literal, true/false/none
  in any case, or else the text (create_model checks it against the field)."""
  word = text.strip().lower()
  return _WORDS[word] if word in _WORDS else literal_or_text(text)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies 'a.b=value' (or '--config.a.b=value') strings to `config`."""
  for item in overrides:
    text = item[len("--config."):] if item.startswith("--config.") else item
    if "=" not in text:
      raise CnnjaxError(
          f"override '{item}' needs a value, as in --config.{text}=VALUE")
    key, raw = text.split("=", 1)
    check_key(config, key)
    if key not in flat_keys(config):  # A new model field.
      _set_model_field(config, key, _model_field_value(raw))
      continue
    set_value(config, key, _parse_value(raw, get_value(config, key), key))
  return config


def apply_changes(config: ml_collections.ConfigDict, changes: Mapping[str, Any],
                  where: str = "") -> ml_collections.ConfigDict:
  """Sets {dotted key: value} (values as Python objects, not text)."""
  for key, value in changes.items():
    check_key(config, key, where)
    if key not in flat_keys(config):
      _set_model_field(config, key, value)
    else:
      set_value(config, key, value)
  return config


def _set_model_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  with config.model.unlocked():
    config.model[key.split(".", 1)[1]] = value


def _parent(config: ml_collections.ConfigDict, key: str):
  *path, leaf = key.split(".")
  for part in path:
    config = config[part]
  return config, leaf


def get_value(config: ml_collections.ConfigDict, key: str) -> Any:
  """config['a.b.c'] for a dotted key (ml_collections has no dotted access)."""
  parent, leaf = _parent(config, key)
  return parent[leaf]


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets a dotted key; the value's type may differ (e.g. a tuple for a list)."""
  parent, leaf = _parent(config, key)
  with parent.ignore_type():
    parent[leaf] = value


_ABSENT = object()


def config_differences(old: dict, new: dict, prefix: str = "",
                       defaults: dict | None = None) -> list[str]:
  """Flat keys whose values differ between two config dicts (as JSON).

  defaults: the base config's defaults (as JSON). A key that `old` lacks and
  `new` holds at its default is no difference: it was added to cnnjax after
  `old` was written, and its default keeps the behaviour `old` had.
  """
  diffs = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, _ABSENT), new.get(key)
    default = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
    if a is _ABSENT and default is not _ABSENT:
      if isinstance(b, dict) and isinstance(default, dict):
        a = {}  # a section added later: compare its keys one by one
      elif _same(b, default):
        continue
    if a is _ABSENT:
      a = None
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += config_differences(a, b, prefix + key + ".",
                                  default if isinstance(default, dict) else None)
    elif not _same(a, b):
      diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return diffs


def _same(a, b) -> bool:
  return a == b or (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                    and list(a) == list(b))


def tuples(tree: Any) -> Any:
  """A JSON tree with its lists turned back into tuples (model fields and
  config values that were tuples before `json.dump`)."""
  if isinstance(tree, dict):
    return {k: tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(tuples(v) for v in tree)
  return tree
