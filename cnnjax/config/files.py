"""Experiment files: a Python file whose `get_config()` returns the config."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from cnnjax.config.base import base_config
from cnnjax.config.overrides import flat_keys
from cnnjax.errors import CnnjaxError


def _import_file(path: str, prefix: str = "cnnjax_experiment_"):
  """Imports a Python file as a module; its own mistakes become one sentence."""
  name = prefix + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise CnnjaxError(f"config file '{path}' cannot be imported; an "
                      "experiment is a .py file with a get_config() function")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except CnnjaxError:
    raise
  except Exception as e:  # A syntax or import error in the user's file.
    raise CnnjaxError(
        f"config file '{path}' failed to load: {type(e).__name__}: {e}") from e
  return module


def load_config(path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """Imports the experiment file at `path` and returns its locked config."""
  path = os.fspath(path)
  if not path.strip():
    raise CnnjaxError("the config file is empty; give an experiment, e.g. "
                      "--config experiments/mnist1d/cnn.py")
  if os.path.isdir(path):
    raise CnnjaxError(f"config file '{path}' is a directory; an experiment is "
                      "a .py file in it with a get_config() function")
  if not os.path.isfile(path):
    raise CnnjaxError(f"config file '{path}' does not exist")
  if not path.endswith(".py"):
    raise CnnjaxError(f"config file '{path}' is not a .py file; an experiment "
                      "is a Python file with a get_config() function")
  module = _import_file(path)
  if not hasattr(module, "get_config"):
    raise CnnjaxError(f"config file '{path}' has no get_config() function")
  try:
    config = module.get_config()
  except CnnjaxError:
    raise
  except Exception as e:  # A mistake inside the user's get_config().
    raise CnnjaxError(f"get_config() in '{path}' failed: "
                      f"{type(e).__name__}: {e}") from e
  _check_returned(config, path)
  config.lock()
  return config


def _check_returned(config, path: str) -> None:
  """Refuses what get_config() returned unless it is a config the driver can
  read: a (mutable) ConfigDict with every key of `base_config()`. Without
  this, a missing key is an AttributeError deep inside training."""
  if isinstance(config, ml_collections.FrozenConfigDict):
    raise CnnjaxError(f"get_config() in '{path}' returns a FrozenConfigDict; "
                      "return the ConfigDict itself (overrides change it)")
  if not isinstance(config, ml_collections.ConfigDict):
    raise CnnjaxError(
        f"get_config() in '{path}' must return an ml_collections.ConfigDict, "
        f"not {type(config).__name__}")
  have = set(flat_keys(config))
  missing = [k for k in flat_keys(base_config()) if k not in have]
  if missing:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                      if len(missing) > 5 else "")
    raise CnnjaxError(
        f"get_config() in '{path}' returns a config without the keys {shown}; "
        "build it from cnnjax.config.base_config() (or another experiment)")


def module_from(this_file: str, sibling: str):
  """Imports a sibling Python file of an experiment (shared tables, helpers)."""
  return _import_file(os.path.join(os.path.dirname(this_file), sibling))


def config_from(this_file: str, sibling: str) -> ml_collections.ConfigDict:
  """Loads a sibling experiment, for configs derived from another one."""
  config = load_config(os.path.join(os.path.dirname(this_file), sibling))
  config.unlock()
  return config


def import_experiment_file(path: str, prefix: str = "cnnjax_variants_"):
  """The module of an experiment file (e.g. for its `get_variants()`)."""
  return _import_file(path, prefix)


def default_workdir(config_path: str) -> str:
  """runs/<experiment path below experiments/, without .py>."""
  path = os.path.normpath(os.path.abspath(config_path))
  parts = path.split(os.sep)
  if "experiments" in parts:
    idx = len(parts) - 1 - parts[::-1].index("experiments")
    rel = os.path.join(*parts[idx + 1:])
  else:
    rel = os.path.basename(path)
  return os.path.join("runs", os.path.splitext(rel)[0])
