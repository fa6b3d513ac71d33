"""Planning a reproduction: its config, its grid and its seeds, checked before
any run trains.

The grid is `reproduce.average_over` (settings pooled into each seed's
figure, e.g. the ten folds of a cross-validation) and `reproduce.compare`
(settings shown side by side, one card row each). `reproduce.claim` states
what the compared rows should show; `parse_claims` checks each statement
against the compare grid before anything trains (its grammar is there).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Any, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax import sweep
from cnnjax.sweep import grid as grid_lib
from cnnjax.errors import CnnjaxError
from cnnjax.reproduce.catalogue import Experiment


@dataclasses.dataclass(frozen=True)
class Claim:
  """One `reproduce.claim` statement, parsed: `left` beats `right` in `metric`.

  `left` and `right` are compare settings ({full key: value as the config
  holds it}), each naming one card row; `direction` is 'greater' for '>'
  and 'less' for '<'; `metric` is '' for the card's headline metric.
  """
  statement: str
  metric: str
  left: dict[str, Any]
  right: dict[str, Any]
  direction: str


@dataclasses.dataclass
class Plan:
  """The runs of one experiment: its config, grid and seeds."""
  experiment: Experiment
  config: ml_collections.ConfigDict  # Overrides, smoke and progress_bar applied.
  average_over: dict[str, list[str]]
  compare: dict[str, list[str]]
  seeds: list[int]
  claims: list[Claim] = dataclasses.field(default_factory=list)

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
  claims = parse_claims(config, experiment.id, compare)
  return Plan(experiment, config, average_over, compare, list(range(count)), claims)


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


# --------------------------------------------------------------------------
# Claims


_OPERATORS = {">": "greater", "<": "less"}
_GRAMMAR = ("write '[METRIC: ]KEY=VALUE ... > KEY=VALUE ...' (or '<'), e.g. "
            "'translate=2 > translate=0'")


def parse_claims(config: ml_collections.ConfigDict, experiment_id: str,
                 compare: dict[str, list[str]] | None = None) -> list[Claim]:
  """The statements of `reproduce.claim`, checked against the compare grid.

  Grammar: `[METRIC:] SIDE OP SIDE`. OP is '>' (the left row scores higher)
  or '<' (lower). A SIDE names one row of the card: `KEY=VALUE` words
  separated by spaces, one for every `reproduce.compare` key, where KEY is
  the full config key or its last part (as the card's row labels write it,
  'translate=2') and VALUE one of the key's compare values ('0' and '0.0'
  are the same float). METRIC defaults to the card's headline metric
  (`reference.metric`); another must be one of `reference.others`, the only
  figures a card keeps per seed. E.g. 'translate=2 > translate=0',
  'test/loss: name=mnist1d_cnn < name=mnist1d_mlp'.

  Args:
    config: the experiment's config.
    experiment_id: for messages.
    compare: the parsed `reproduce.compare` ({key: value texts}); None
      parses it from the config.

  Returns:
    One Claim per statement, in order. A statement that does not fit is one
    CnnjaxError sentence naming it.
  """
  statements = config.reproduce.claim
  if isinstance(statements, str):
    statements = (statements,)
  if compare is None:
    compare = _parse_entries(config.reproduce.compare, "reproduce.compare",
                             experiment_id)
  if statements and not compare:
    raise CnnjaxError(f"reproduce.claim of '{experiment_id}' holds "
                      f"'{statements[0]}', but the experiment has no "
                      "reproduce.compare rows to compare")
  headline = config.reference.metric
  others = parse_others(config.reference.others, experiment_id)
  claims = []
  for statement in statements:
    where = f"reproduce.claim '{statement}' of '{experiment_id}'"
    metric, body = _split_metric(str(statement))
    if metric and metric != headline and metric not in others:
      kept = ", ".join([m for m in [headline, *others] if m]) or "none"
      raise CnnjaxError(f"{where} names the metric '{metric}', which its card "
                        f"does not keep per seed (kept: {kept})")
    parts = re.split(r"\s*([<>])\s*", body.strip())
    if len(parts) != 3 or not parts[0] or not parts[2]:
      raise CnnjaxError(f"{where} is not one comparison; {_GRAMMAR}")
    left = _parse_side(parts[0], config, compare, where)
    right = _parse_side(parts[2], config, compare, where)
    if sweep.canonical(left) == sweep.canonical(right):
      raise CnnjaxError(f"{where} compares a row with itself; name two "
                        "different settings")
    claims.append(Claim(str(statement), metric, left, right, _OPERATORS[parts[1]]))
  return claims


def _split_metric(statement: str) -> tuple[str, str]:
  """'test/loss: a=1 < a=2' -> ('test/loss', 'a=1 < a=2'); no metric: ''.

  The text before the first ':' is a metric only when it holds no '=' or
  comparison, so that a value with a ':' ('train[:90%]') stays a value.
  """
  head, sep, tail = statement.partition(":")
  if sep and not re.search(r"[=<>]", head):
    return head.strip(), tail
  return "", statement


def _parse_side(text: str, config: ml_collections.ConfigDict,
                compare: dict[str, list[str]], where: str) -> dict[str, Any]:
  """One side of a claim as {full compare key: value as the config holds it}."""
  short = [k.rsplit(".", 1)[-1] for k in compare]
  # A last part two compare keys share names neither: the full key is needed.
  names = {k: k for k in compare}
  names.update({s: k for s, k in zip(short, compare) if short.count(s) == 1})
  side: dict[str, Any] = {}
  for word in text.split():
    name, sep, value = word.partition("=")
    if not sep or not name or not value:
      raise CnnjaxError(f"{where} holds '{word}'; {_GRAMMAR}")
    if name not in names:
      raise CnnjaxError(f"{where} names '{name}', which is not a "
                        f"reproduce.compare key ({', '.join(compare)})")
    key = names[name]
    if key in side:
      raise CnnjaxError(f"{where} names '{key}' twice on one side")
    allowed = {sweep.canonical(sweep.jsonable(_typed(config, key, v))): v
               for v in compare[key]}
    typed = sweep.jsonable(_typed(config, key, value, where))
    if sweep.canonical(typed) not in allowed:
      raise CnnjaxError(f"{where} gives {name}={value}, which is not among the "
                        f"reproduce.compare values of '{key}' "
                        f"({', '.join(compare[key])})")
    side[key] = typed
  missing = [k for k in compare if k not in side]
  if missing:
    raise CnnjaxError(f"{where} does not say which '{missing[0]}' its side "
                      f"'{text.strip()}' means; name every reproduce.compare key "
                      "on each side")
  return side


def _typed(config: ml_collections.ConfigDict, key: str, value: str,
           where: str = "") -> Any:
  """A value text as the config holds it once applied ('0' -> 0.0 for a float)."""
  try:
    return grid_lib.apply_value(copy.deepcopy(config), key, value)
  except CnnjaxError:
    if not where:
      raise
    raise CnnjaxError(f"{where} gives '{key}' the value '{value}', which "
                      "that key cannot take") from None
