"""Experiment files: a Python file whose `get_config()` returns the config."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

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
  if not isinstance(config, ml_collections.ConfigDict):
    raise CnnjaxError(
        f"get_config() in '{path}' must return an ml_collections.ConfigDict")
  config.lock()
  return config


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
