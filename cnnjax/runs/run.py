"""`Run`: one run directory and everything in it, typed.

    run = Run.open('runs/mnist1d/cnn')
    run.config                  # the ConfigDict it trained with
    run.result()                # result.json, or None while it trains
    run.metrics()               # every logged event, in order
    run.step('best')            # a checkpoint step: 'latest', 'best' or a number
    run.variables('best')       # {'params', 'batch_stats'} as NumPy, no model needed
    trained = run.trained()     # model + variables + data: logits, features, ...

A run directory holds:

  config.json       the config it trains with (written before the first step)
  claim.json        while a process trains in it: who (see claim.py)
  metrics.jsonl     one JSON object per log event; tensorboard/ mirrors it
  checkpoints/      Orbax: the last `keep_checkpoints` steps and the best one
  result.json       the final metrics, steps, wall time, device and versions
  curves.png        loss and accuracy against steps
  confusion_matrix/ with that evaluator: <split>.json and <split>.png

The training driver writes these files through a Run; evaluation, sweeps,
reproductions, visualization and transfer read them through a Run. Every
file but the metric log is written atomically (files.py).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from typing import Any

import jax.numpy as jnp
import ml_collections

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.runs import files
from cnnjax.runs.checkpoints import (VARIABLE_COLLECTIONS, Checkpointer,
                                     read_variables, stored_shapes)
from cnnjax.runs.claim import RunClaim

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
CHECKPOINTS = "checkpoints"


def model_for(config: ml_collections.ConfigDict, dataset):
  """The model a config trains on `dataset`: `config.model` with the data's
  class count, the precision's dtype and the fields the data decides (e.g. a
  text CNN's vocabulary size), unless the config sets them."""
  from cnnjax.models import create_model

  overrides = config_lib.model_fields(config.model)  # Not name, kernel_init.
  overrides.setdefault("num_classes", dataset.num_classes)
  if config.precision != "float32":
    overrides.setdefault("dtype", getattr(jnp, config.precision))
  for field, value in dataset.model_fields.items():
    overrides.setdefault(field, value)
  return create_model(config.model.name, **overrides)


def _steps(directory: str) -> list[int]:
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(d) for d in names
                if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state")))


class Run:
  """A run directory (see the module docstring). Cheap to make: nothing is
  read until it is asked for."""

  def __init__(self, workdir: str):
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir).strip():
      raise CnnjaxError("the workdir is empty; give a directory, e.g. "
                        "--workdir runs/my_run")
    self.workdir = os.fspath(workdir)
    self._config: ml_collections.ConfigDict | None = None
    self._dataset = None

  @classmethod
  def open(cls, workdir: str) -> "Run":
    """The finished or running run in `workdir` (it must hold a config.json)."""
    run = cls(workdir)
    if os.path.isfile(run.workdir):
      raise CnnjaxError(f"'{workdir}' is a file, not a cnnjax workdir")
    if not os.path.exists(run.path(CONFIG_FILE)):
      raise CnnjaxError(f"'{workdir}' is not a cnnjax workdir (no config.json)")
    return run

  def __repr__(self) -> str:
    return f"Run({self.workdir!r})"

  def path(self, *names: str) -> str:
    return os.path.join(self.workdir, *names)

  # ---- the files

  def stored_config(self) -> dict | None:
    """config.json as a dict, or None when it is missing or damaged."""
    record = files.read_json(self.path(CONFIG_FILE))
    return record if isinstance(record, dict) else None

  @property
  def config(self) -> ml_collections.ConfigDict:
    """The run's config (JSON lists become tuples again, as configs hold them)."""
    if self._config is None:
      stored = self.stored_config()
      if stored is None:
        raise CnnjaxError(f"'{self.workdir}' has no readable config.json")
      self._config = ml_collections.ConfigDict(config_lib.tuples(stored))
    return self._config

  def result(self) -> dict | None:
    """result.json, or None (not finished, or written by an interrupted run)."""
    record = files.read_json(self.path(RESULT_FILE))
    return record if isinstance(record, dict) else None

  def metrics(self) -> list[dict]:
    """Every event of metrics.jsonl, in order."""
    return files.read_jsonl(self.path("metrics.jsonl"))

  def last_train_metrics(self, names=("train/loss", "train/accuracy")) -> dict[str, float]:
    """The last logged values of `names` (from the last event with train/loss)."""
    for event in reversed(self.metrics()):
      if "train/loss" in event:
        return {k: float(event[k]) for k in names if k in event}
    return {}

  # ---- writing, for the training driver

  def claim(self, **options) -> RunClaim:
    """The claim of this directory (a context manager); see claim.py."""
    return RunClaim(self.workdir, **options)

  def prepare(self, config: ml_collections.ConfigDict) -> None:
    """Checks that `config` may train here, then writes config.json."""
    self.check_config(config)
    self.write_config(config)

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    """Creates the directory and checks that `config` may train in it.

    A directory that holds a run with a different config is refused; only the
    keys that `config.is_resumable` names (durations, bookkeeping) may change.
    Nothing is written: the training driver writes config.json only once it
    knows that the run goes on (a refused rerun leaves the directory as it was).
    """
    files.ensure_directory(self.workdir)
    current = json.loads(config.to_json_best_effort())
    previous = self.stored_config()
    if previous is not None:
      diffs = [d for d in config_lib.config_differences(previous, current,
                                                        defaults=_base_defaults())
               if not config_lib.is_resumable(d.split(":")[0])]
      if diffs:
        raise CnnjaxError(
            f"workdir '{self.workdir}' holds a run with a different config "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); "
            "use another --workdir, or delete this one to start over")

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """Writes config.json (atomically)."""
    files.write_json(self.path(CONFIG_FILE), json.loads(config.to_json_best_effort()),
                     sort_keys=True)
    self._config = None

  def metric_log(self, *, enabled: bool = True) -> files.MetricLog:
    return files.MetricLog(self.workdir, enabled=enabled)

  def write_result(self, record: dict[str, Any]) -> None:
    """Writes result.json and redraws curves.png."""
    files.write_json(self.path(RESULT_FILE), record)
    files.plot_curves(self.metrics(), self.path("curves.png"),
                      title=os.path.basename(os.path.abspath(self.workdir)))

  def write_json(self, name: str, record: Any) -> str:
    """Writes `record` as `<workdir>/<name>` (atomically); returns the path."""
    path = self.path(name)
    files.write_json(path, record)
    return path

  def save_figure(self, name: str, figure) -> str:
    """Saves a matplotlib figure as `<workdir>/<name>` (atomically)."""
    return files.save_figure(figure, self.path(name), dpi=110, bbox_inches="tight")

  def finished_result(self, config: ml_collections.ConfigDict) -> dict | None:
    """result.json if this directory holds a finished run of `config`, else None.

    Finished: the result is newer than config.json (no later run of it
    started), which is `config` up to bookkeeping keys, with the same number
    of steps when `config` gives steps. Any other difference is left to the
    training driver to refuse.
    """
    result_path, config_path = self.path(RESULT_FILE), self.path(CONFIG_FILE)
    result, stored = self.result(), self.stored_config()
    if result is None or stored is None:
      return None
    try:
      if os.path.getmtime(result_path) < os.path.getmtime(config_path):
        return None
    except OSError:
      return None
    effective = config_lib.apply_smoke(copy.deepcopy(config))  # As the driver sees it.
    current = json.loads(effective.to_json_best_effort())

    def bookkeeping(key):
      return key not in ("num_steps", "num_epochs") and config_lib.is_resumable(key)

    if any(not bookkeeping(d.split(":")[0])
           for d in config_lib.config_differences(stored, current,
                                                  defaults=_base_defaults())):
      return None
    if effective.num_steps > 0 and result.get("num_steps") != effective.num_steps:
      return None
    return result

  # ---- checkpoints

  @property
  def checkpoints_dir(self) -> str:
    return self.path(CHECKPOINTS)

  def checkpointer(self, *, read_only: bool = False, **options) -> Checkpointer:
    """The run's Orbax checkpoints; the best one by the config's best_metric."""
    if read_only:
      config = self.config
      options.setdefault("best_metric", config.get("best_metric", ""))
      options.setdefault("best_mode", config.get("best_mode", "max"))
    return Checkpointer(self.checkpoints_dir, read_only=read_only, **options)

  def steps(self) -> list[int]:
    """The steps of the complete checkpoints, oldest first."""
    return _steps(self.checkpoints_dir)

  def step(self, which: str | int = "latest") -> int:
    """A checkpoint step: 'latest', 'best' (by the run's best_metric) or a number."""
    steps = self.steps()
    if not steps:
      raise CnnjaxError(f"no checkpoint found in '{self.checkpoints_dir}'")
    which = str(which).strip()
    if which == "latest":
      return steps[-1]
    if which == "best":
      metric = self.config.get("best_metric", "")
      if not metric:
        raise CnnjaxError(f"the run in '{self.workdir}' keeps no best checkpoint "
                          "(it trained with an empty config.best_metric); use the "
                          "latest, or train with --config.best_metric=test/accuracy "
                          "(any evaluated metric) to keep one")
      checkpointer = self.checkpointer(read_only=True)
      try:
        step = checkpointer.best_step()
      finally:
        checkpointer.close()
      if step is None:
        raise CnnjaxError(f"no checkpoint in '{self.checkpoints_dir}' was scored "
                          f"on {metric}; use the latest instead")
      return step
    if which.isdigit():
      if int(which) not in steps:
        raise CnnjaxError(f"'{self.checkpoints_dir}' has no checkpoint at step "
                          f"{which} (its steps: {', '.join(map(str, steps))})")
      return int(which)
    raise CnnjaxError(f"a checkpoint is 'latest', 'best' or a step number, not '{which}'")

  def step_dir(self, which: str | int = "latest") -> str:
    return os.path.join(self.checkpoints_dir, str(self.step(which)))

  def variables(self, which: str | int = "latest",
                collections=VARIABLE_COLLECTIONS) -> dict:
    """The model variables of a checkpoint as NumPy ({'params', 'batch_stats'}
    by default; ('ema',) for the weight average), read without the model."""
    return read_variables(self.step_dir(which), collections)

  # ---- model and data

  def dataset(self):
    """The run's data, as it trained on it (cached)."""
    if self._dataset is None:
      from cnnjax.data import get_dataset

      self._dataset = get_dataset(self.config.dataset, smoke=bool(self.config.smoke))
    return self._dataset

  def model(self):
    """The run's model (a Flax module, no variables)."""
    return model_for(self.config, self.dataset())

  def trained(self, which: str | int = "latest"):
    """The model with a checkpoint's variables and the data (see trained.py)."""
    from cnnjax.runs.trained import TrainedModel

    step = self.step(which)
    variables = read_variables(os.path.join(self.checkpoints_dir, str(step)))
    variables = {k: v for k, v in variables.items() if v}
    return TrainedModel.from_run(self, variables, step)


def checkpoint_directory(path: str, which: str | int = "latest") -> str:
  """The step directory that `path` and `which` name.

  `path` is a run directory, its `checkpoints/` directory, or one step's
  directory (then `which` is ignored); `which` is 'latest', 'best' (the run's
  own best_metric) or a step number.
  """
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise CnnjaxError(f"'{path}' does not exist; point at the workdir of a "
                      "finished cnnjax run")
  if os.path.isdir(os.path.join(path, "state")):
    return path  # Already one step's directory.
  if os.path.basename(path) == CHECKPOINTS and not os.path.exists(
      os.path.join(path, CONFIG_FILE)):
    run = Run(os.path.dirname(path))
  else:
    run = Run(path)
  if not run.steps():
    raise CnnjaxError(f"'{path}' holds no cnnjax checkpoint; point at a workdir "
                      "whose run saved one")
  if str(which).strip() == "best" and run.stored_config() is None:
    raise CnnjaxError(f"the best checkpoint needs the run's config.json "
                      f"({run.path(CONFIG_FILE)}), which cannot be read; use "
                      "'latest' or a step")
  return run.step_dir(which)


def checkpoint_shapes(path: str, which: str | int = "latest"):
  """{'params/c1/kernel': ShapeDtypeStruct} of a checkpoint (metadata only)."""
  return stored_shapes(checkpoint_directory(path, which))


def load_variables(path: str, which: str | int = "latest") -> dict:
  """{'params', 'batch_stats'} of a checkpoint as NumPy, without its model."""
  return read_variables(checkpoint_directory(path, which))


@functools.lru_cache(maxsize=1)
def _base_defaults() -> dict:
  """The base config as JSON: what a key added after a run was stored reads as."""
  return json.loads(config_lib.base_config().to_json_best_effort())
