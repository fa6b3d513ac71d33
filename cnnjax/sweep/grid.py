"""The grid of a sweep: parsing it, checking it, and naming its settings.

A grid is {dotted config key: values}; its settings are the cross product of
the values. Values are parsed as command-line overrides are, so '0.1' and
0.1 are the same value of a float field, and each setting gets a readable
directory name (its slug, 'learning_rate=0.1__name=cnn').
"""

from __future__ import annotations

import copy
import hashlib
import json
import numbers
import re
from typing import Any, Mapping, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError

# Slugs longer than this are cut and given a hash, to stay far below the
# 255-byte limit of a file name.
_MAX_SLUG = 120


def parse_grid_flag(text: str) -> tuple[str, list[str]]:
  """'key=v1,v2' (or 'key=v1;v2' when a value holds a comma) -> (key, values).

  Values stay text here; `run` parses them with the field's type, as it parses
  overrides. Without ';' the values are split at commas outside brackets and
  quotes, so '(1,1),(2,2)' is two tuples; with ';' only at ';', so
  'dataset.eval_splits=test,validation;test' is two values, and a single
  value holding a comma can be written with a trailing ';'.
  """
  key, sep, values_text = text.partition("=")
  key = key.strip()
  if key.startswith("--config."):
    key = key[len("--config."):]
  if not sep or not key:
    raise CnnjaxError(f"--grid takes KEY=VALUE1,VALUE2,..., not '{text}'")
  if ";" in values_text:
    values = values_text.split(";")
  else:
    values = _split_top_level_commas(values_text)
  values = [v.strip() for v in values if v.strip()]
  if not values:
    raise CnnjaxError(f"--grid '{text}' lists no values; write {key}=VALUE1,VALUE2")
  return key, values


def _split_top_level_commas(text: str) -> list[str]:
  parts, depth, quote, start = [], 0, "", 0
  for i, char in enumerate(text):
    if quote:
      quote = "" if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in "([{":
      depth += 1
    elif char in ")]}":
      depth -= 1
    elif char == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return parts


def _as_override_text(value: Any) -> str:
  """A grid value as the text of an override, which `apply_overrides` parses."""
  if isinstance(value, str):
    return value
  if hasattr(value, "item") and hasattr(value, "dtype"):  # A NumPy scalar.
    value = value.item()
  return repr(value)


def apply_value(config: ml_collections.ConfigDict, key: str, value: Any) -> Any:
  """Sets `key` as an override would (same parsing and type checks); returns
  the value the config now holds."""
  config_lib.apply_overrides(config, [f"{key}={_as_override_text(value)}"])
  return config_lib.get_value(config, key)


def check_grid(config: ml_collections.ConfigDict,
               grid: Mapping[str, Any]) -> dict[str, list[Any]]:
  """The grid with its values as lists, once its keys are known config keys."""
  checked = {}
  for key, values in grid.items():
    if key == "seed":
      raise CnnjaxError("'seed' cannot be a grid key; give the seeds with "
                        "seeds= (on the command line --seeds or --seed-list)")
    config_lib.check_key(config, key, "in the sweep grid")
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
      raise CnnjaxError(f"the grid values of '{key}' must be a list, e.g. "
                        f"{{'{key}': [{values!r}]}}, not {values!r}")
    checked[key] = list(values)
    if not checked[key]:
      raise CnnjaxError(f"the grid key '{key}' lists no values")
  return checked


def parse_grid(config: ml_collections.ConfigDict,
               grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
  """Each grid value as the config holds it once applied (0.1 for '0.1')."""
  parsed = {}
  for key, values in grid.items():
    parsed[key] = [apply_value(copy.deepcopy(config), key, v) for v in values]
    seen = [canonical(v) for v in parsed[key]]
    for i, text in enumerate(seen):
      if text in seen[:i]:
        raise CnnjaxError(f"the grid lists the value {parsed[key][i]!r} of "
                          f"'{key}' twice; drop one")
  return parsed


def check_seeds(seeds: int | Sequence[int]) -> list[int]:
  """The seeds as a list of distinct ints (one int is one seed)."""
  if isinstance(seeds, int):
    seeds = [seeds]
  checked = []
  for seed in seeds:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
      raise CnnjaxError(f"seeds must be integers, got {seed!r}")
    checked.append(int(seed))
  if not checked:
    raise CnnjaxError("a sweep needs at least one seed")
  if len(set(checked)) != len(checked):
    raise CnnjaxError(f"the seeds {checked} repeat a seed; list each once")
  return checked


def grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
  """'lr=0.1,0.01 name=cnn' (or 'empty'), for messages."""
  if not grid:
    return "empty"
  return " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items())


def canonical(value: Any) -> str:
  """One text per value, for telling values (and settings) apart."""
  return json.dumps(value, sort_keys=True, default=repr)


def jsonable(value: Any) -> Any:
  """As it reads back from JSON (tuples become lists), for comparisons."""
  return json.loads(json.dumps(value, default=repr))


def _value_text(value: Any) -> str:
  """A value as a file-name-safe word: 0.1 -> '0.1', (2, 2) -> '2-2'."""
  if isinstance(value, (tuple, list)):
    text = "-".join(_value_text(v) for v in value)
  else:
    text = str(value)
  return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "empty"


def setting_slugs(keys: Sequence[str],
                  settings: Sequence[Sequence[Any]]) -> list[str]:
  """Distinct, readable directory names, e.g. 'learning_rate=0.1__name=cnn'.

  A key is named by its last part unless two keys share it (then the full
  key); slugs that would still clash (also case-insensitively, for macOS
  and Windows file systems) or are too long get a short hash of the setting.
  """
  if not keys:
    return ["base"] * len(settings)
  short = [k.rsplit(".", 1)[-1] for k in keys]
  names = [s if short.count(s) == 1 else k for s, k in zip(short, keys)]
  slugs = ["__".join(f"{n}={_value_text(v)}" for n, v in zip(names, values))
           for values in settings]
  counts: dict[str, int] = {}
  for slug in slugs:
    counts[slug.lower()] = counts.get(slug.lower(), 0) + 1
  unique = []
  for slug, values in zip(slugs, settings):
    if counts[slug.lower()] > 1 or len(slug) > _MAX_SLUG:
      digest = hashlib.sha1(canonical([list(keys), list(values)]).encode())
      slug = f"{slug[:_MAX_SLUG]}__{digest.hexdigest()[:8]}"
    unique.append(slug)
  return unique
