"""The catalogue: which files under `experiments/` are reproducible experiments.

An experiment is a file whose config names the figure it aims at
(`reference.metric`, `reference.value`, `reference.source`) or the settings
it compares (`reproduce.compare`); its id is the path below `experiments/`
without `.py` ('cifar10/resnet20'). A file that defines `get_variants()` is a
family of experiments instead, one per variant
('medmnist/resnet18_28/dermamnist'). Files named `base*` or `_*` are shared
bases.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from typing import Any, Mapping, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.registry import Registry

@dataclasses.dataclass
class Experiment:
  """One reproducible experiment: a config file, or one variant of it.

  Attributes:
    id: the path below the experiments folder without '.py', plus
      '/<variant>' for a variant ('medmnist/resnet18_28/dermamnist').
    path: the experiment file.
    variant: the variant's name, or None.
    changes: {dotted config key: value} the variant sets on get_config().
  """
  id: str
  path: str
  variant: str | None = None
  changes: dict[str, Any] = dataclasses.field(default_factory=dict)
  _config: ml_collections.ConfigDict | None = dataclasses.field(
      default=None, repr=False, compare=False)

  def load(self) -> ml_collections.ConfigDict:
    """A fresh, locked config: get_config() with the variant's changes."""
    if self._config is None:
      config = config_lib.load_config(self.path)
      _apply_changes(config, self.changes, f"variant '{self.variant}' of '{self.path}'")
      self._config = config
    config = copy.deepcopy(self._config)
    config.lock()
    return config

  @property
  def root(self) -> str:
    """The experiments folder this experiment was discovered in."""
    depth = self.id.count("/") + 1 - (self.variant is not None)
    root = self.path
    for _ in range(depth):
      root = os.path.dirname(root)
    return root or "."


# The experiments of the latest `discover`, by id (discovery refills it).
EXPERIMENTS: Registry[Experiment] = Registry(
    "experiment", listing="`cnnjax reproduce --list`")


def _apply_changes(config: ml_collections.ConfigDict, changes: Mapping[str, Any],
                   where: str) -> None:
  # Checked here rather than by apply_changes: the message names the variant.
  known = config_lib.flat_keys(config)
  for key in changes:
    if key not in known and not config_lib.is_model_field(key):
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ""
      raise CnnjaxError(f"{where} sets the unknown config key '{key}'{hint}")
  config_lib.apply_changes(config, changes)


def _variants(path: str) -> dict[str, dict[str, Any]] | None:
  """get_variants() of an experiment file, or None when it has none."""
  with open(path) as f:
    if "get_variants" not in f.read():  # Most files: no second import.
      return None
  module = config_lib.import_experiment_file(path)
  if not hasattr(module, "get_variants"):
    return None
  variants = module.get_variants()
  if not isinstance(variants, Mapping) or not all(
      isinstance(k, str) and k and isinstance(v, Mapping) for k, v in variants.items()):
    raise CnnjaxError(f"get_variants() in '{path}' must return {{variant name: "
                      "{dotted config key: value}}")
  return {k: dict(v) for k, v in variants.items()}


def _is_reproducible(config: ml_collections.ConfigDict) -> bool:
  return bool(config.reference.metric) or bool(tuple(config.reproduce.compare))


def discover(root: str = "experiments") -> list[Experiment]:
  """The reproducible experiments under `root`, sorted by id.

  Files whose name starts with 'base' or '_' are shared bases and skipped. A
  file with `get_variants()` gives one experiment per variant and none of its
  own. An experiment is reproducible when its config sets `reference.metric`
  or `reproduce.compare`. `EXPERIMENTS` then holds them.
  """
  if not os.path.isdir(root):
    raise CnnjaxError(f"the experiments folder '{root}' does not exist; run "
                      "cnnjax reproduce from the repository's root")
  experiments = []
  for folder, subfolders, files in os.walk(root):
    subfolders[:] = sorted(d for d in subfolders
                           if not d.startswith((".", "_")) and d != "__pycache__")
    for name in sorted(files):
      if not name.endswith(".py") or name.startswith(("base", "_")):
        continue
      path = os.path.join(folder, name)
      file_id = os.path.relpath(path, root)[:-len(".py")].replace(os.sep, "/")
      variants = _variants(path)
      if variants is None:
        candidates = [Experiment(file_id, path)]
      else:
        candidates = [Experiment(f"{file_id}/{v}", path, v, changes)
                      for v, changes in variants.items()]
      experiments += [e for e in candidates if _is_reproducible(e.load())]
  experiments.sort(key=lambda e: e.id)
  EXPERIMENTS.clear()
  for experiment in experiments:
    EXPERIMENTS.add(experiment.id, experiment)
  return experiments


def select(experiments: Sequence[Experiment],
           filters: Sequence[str] = ()) -> list[Experiment]:
  """The experiments whose id contains any of `filters` (case-insensitive).

  Raises CnnjaxError, naming close ids, when a filter matches none.
  """
  if not filters:
    return list(experiments)
  ids = [e.id for e in experiments]
  for text in filters:
    if not any(text.lower() in i.lower() for i in ids):
      close = difflib.get_close_matches(text, ids, n=3, cutoff=0.4) or [
          i for i in ids if any(part and part.lower() in i.lower()
                                for part in text.split("/"))][:3]
      if close:
        hint = f"close ones: {', '.join(close)}"
      else:
        hint = f"ids look like {', '.join(ids[:3]) or '(none found)'}"
      raise CnnjaxError(f"no experiment id contains '{text}' ({hint}); see "
                        "`cnnjax reproduce --list`")
  return [e for e in experiments
          if any(text.lower() in e.id.lower() for text in filters)]


def find(experiments: Sequence[Experiment], experiment_id: str) -> Experiment:
  """The experiment with exactly this id.

  It takes the list to search, not `EXPERIMENTS`, so that a caller's own
  catalogue (another experiments folder) wins over the latest discovery.
  """
  for e in experiments:
    if e.id == experiment_id:
      return e
  close = difflib.get_close_matches(experiment_id, [e.id for e in experiments], n=1)
  hint = f"; did you mean '{close[0]}'?" if close else ""
  raise CnnjaxError(f"'{experiment_id}' is not a reproducible experiment{hint}")
