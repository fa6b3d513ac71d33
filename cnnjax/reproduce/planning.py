"""Planning a reproduction: its config, its grid and its seeds, checked before
any run trains.

The grid is `reproduce.average_over` (settings pooled into each seed's
figure, e.g. the ten folds of a cross-validation) and `reproduce.compare`
(settings shown side by side, one card row each).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax import sweep
from cnnjax.errors import CnnjaxError
from cnnjax.reproduce.catalogue import Experiment


@dataclasses.dataclass
class Plan:
  """The runs of one experiment: its config, grid and seeds."""
  experiment: Experiment
  config: ml_collections.ConfigDict  # Overrides, smoke and progress_bar applied.
  average_over: dict[str, list[str]]
  compare: dict[str, list[str]]
  seeds: list[int]

  @property
  def grid(self) -> dict[str, list[str]]:
    return {**self.average_over, **self.compare}

  @property
  def num_settings(self) -> int:
    return math.prod(len(v) for v in self.grid.values())

  @property
  def num_runs(self) -> int:
    return self.num_settings * len(self.seeds)


def plan(experiment: Experiment, *, seeds: int | None = None, smoke: bool = False,
         overrides: Sequence[str] = ()) -> Plan:
  """The config, grid and seeds of a reproduction, checked before any run."""
  config = experiment.load()
  config_lib.apply_overrides(config, overrides)
  with config.unlocked():
    if smoke:
      config.smoke = True
    config.progress_bar = False
  r = config.reproduce
  average_over = _parse_entries(r.average_over, "reproduce.average_over", experiment.id)
  compare = _parse_entries(r.compare, "reproduce.compare", experiment.id)
  both = [k for k in average_over if k in compare]
  if both:
    raise CnnjaxError(f"'{both[0]}' is in both reproduce.average_over and "
                      f"reproduce.compare of '{experiment.id}'; keep it in one")
  count = r.seeds if seeds is None else seeds
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    source = "--seeds" if seeds is not None else "reproduce.seeds"
    raise CnnjaxError(f"{source} must be a positive integer, got {count!r}")
  parse_others(config.reference.others, experiment.id)  # Checked now, not after hours.
  return Plan(experiment, config, average_over, compare, list(range(count)))


def _parse_entries(entries: Sequence[str], key_name: str,
                   experiment_id: str) -> dict[str, list[str]]:
  if isinstance(entries, str):
    entries = (entries,)
  parsed: dict[str, list[str]] = {}
  for text in entries:
    try:
      key, values = sweep.parse_grid_flag(text)
    except CnnjaxError:
      raise CnnjaxError(f"{key_name} of '{experiment_id}' holds '{text}'; write "
                        "'KEY=VALUE1,VALUE2,...'") from None
    if key in parsed:
      raise CnnjaxError(f"{key_name} of '{experiment_id}' names '{key}' twice; "
                        "give all its values in one entry")
    parsed[key] = values
  return parsed


def parse_others(others: Sequence[str], experiment_id: str) -> dict[str, float]:
  """`reference.others` ('METRIC=VALUE' entries) as {metric: published value}."""
  parsed = {}
  for text in ([others] if isinstance(others, str) else others):
    metric, sep, value = str(text).partition("=")
    try:
      parsed[metric.strip()] = float(value)
    except ValueError:
      sep = ""
    if not sep or not metric.strip():
      raise CnnjaxError(f"reference.others of '{experiment_id}' holds '{text}'; "
                        "write 'METRIC=VALUE', e.g. 'test/accuracy=0.907'")
  return parsed
