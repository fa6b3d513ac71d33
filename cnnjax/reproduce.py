"""Reproducing published results: every experiment, its runs, its result card.

    cnnjax reproduce --list
    cnnjax reproduce --filter mnist1d [--seeds 3] [--smoke]

An experiment is a file under `experiments/` whose config names the figure it
aims at (`reference.metric`, `reference.value`, `reference.source`) or the
settings it compares (`reproduce.compare`); its id is the path below
`experiments/` without `.py` ('cifar10/resnet20'). A file that defines
`get_variants()` is a family of experiments instead, one per variant
('medmnist/resnet18_28/dermamnist'). Files named `base*` or `_*` are shared
bases.

Reproducing an experiment is a sweep (cnnjax/sweep.py) over its
`reproduce.average_over` and `reproduce.compare` settings and its seeds, in
`<workdir>/<id>/`; finished runs are never trained again, so an interrupted
reproduction resumes. The outcome is a card (`card.json`): the published
figure beside the measured one (mean and sample std over seeds; with
`average_over`, each seed's figure is the mean over those settings, e.g. the
ten folds of a cross-validation), one row per compared setting, the hardware,
the versions and the command that remakes it. `update_results` renders every
stored card into RESULTS.md between two marker lines and leaves the rest of
the file as it is.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import datetime
import difflib
import itertools
import json
import math
import os
import shlex
import statistics
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax import sweep
from cnnjax.errors import CnnjaxError

CARD_FILE = "card.json"
BEGIN_MARKER = "<!-- BEGIN cnnjax reproduce -->"
END_MARKER = "<!-- END cnnjax reproduce -->"
_INTRO = ("The cards below are written by `cnnjax reproduce` from the stored "
          "cards in results/cards/ (hand-written findings: results/notes/); "
          "edit outside the markers only.")
# Metrics of the last training log line shown in a card, when a run has them.
_TRAIN_METRICS = ("train/loss", "train/accuracy")


# --------------------------------------------------------------------------
# Discovery


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


def _apply_changes(config: ml_collections.ConfigDict, changes: Mapping[str, Any],
                   where: str) -> None:
  known = set(config_lib._flat_keys(config))  # pylint: disable=protected-access
  for key, value in changes.items():
    if key.startswith("model.") and key.count(".") == 1 and key not in known:
      with config.model.unlocked():  # A new model field, as overrides allow.
        config.model[key.split(".")[1]] = value
      continue
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ""
      raise CnnjaxError(f"{where} sets the unknown config key '{key}'{hint}")
    config_lib.set_value(config, key, value)


def _variants(path: str) -> dict[str, dict[str, Any]] | None:
  """get_variants() of an experiment file, or None when it has none."""
  with open(path) as f:
    if "get_variants" not in f.read():  # Most files: no second import.
      return None
  import importlib.util

  name = "cnnjax_variants_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except CnnjaxError:
    raise
  except Exception as e:  # A mistake in the user's file.
    raise CnnjaxError(f"config file '{path}' failed to load: "
                      f"{type(e).__name__}: {e}") from e
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
  or `reproduce.compare`.
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
  return sorted(experiments, key=lambda e: e.id)


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
  """The experiment with exactly this id."""
  for e in experiments:
    if e.id == experiment_id:
      return e
  close = difflib.get_close_matches(experiment_id, [e.id for e in experiments], n=1)
  hint = f"; did you mean '{close[0]}'?" if close else ""
  raise CnnjaxError(f"'{experiment_id}' is not a reproducible experiment{hint}")


# --------------------------------------------------------------------------
# Planning: what a reproduction will run


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
  _parse_others(config.reference.others, experiment.id)  # Checked now, not after hours.
  return Plan(experiment, config, average_over, compare, list(range(count)))


def _parse_others(others: Sequence[str], experiment_id: str) -> dict[str, float]:
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
# Running


def reproduce_one(experiment: Experiment, *, workdir: str, seeds: int | None = None,
                  smoke: bool = False, overrides: Sequence[str] = (),
                  vmap_seeds: bool = False,
                  experiments: Sequence[Experiment] | None = None,
                  progress: Callable[[str], Any] | None = None) -> dict[str, Any]:
  """Trains (or finds) every run of `experiment` and returns its card.

  Args:
    experiment: from `discover`.
    workdir: the root of all reproductions; this one's runs train in
      `<workdir>/<id>/<setting>/seed_<s>` and its card is written to
      `<workdir>/<id>/card.json`.
    seeds: the number of seeds (0 .. seeds-1); None: `reproduce.seeds`.
    smoke: shrink every run to a few steps (`config.apply_smoke`).
    overrides: the user's 'KEY=VALUE' config overrides, for every run.
    vmap_seeds: train the seeds of a setting together (see sweep.run).
    experiments: where `reproduce.init_from_experiment` is looked up
      (default: `discover()` of the experiment's root).
    progress: called with the sweep's progress lines; None for silence.

  Returns:
    The card, a JSON-able dict (see `build_card`).
  """
  run_plan = plan(experiment, seeds=seeds, smoke=smoke, overrides=overrides)
  config = run_plan.config
  init_from = None
  source_id = config.reproduce.init_from_experiment
  if source_id:
    init_from = _reproduce_source(experiment, source_id, workdir=workdir,
                                  smoke=smoke, experiments=experiments,
                                  progress=progress, chain=(experiment.id,))
    with config.unlocked():
      config.transfer.init_from = init_from
  summary = sweep.run(config, run_plan.grid, run_plan.seeds,
                      workdir=os.path.join(workdir, experiment.id),
                      overrides=overrides, config_path=experiment.path,
                      vmap_seeds=vmap_seeds, progress=progress)
  finished = [r for r in summary.runs if r["result"] is not None]
  analysis, analysis_error = {}, None
  if config.reproduce.analysis and finished:
    analysis, analysis_error = _run_analysis(config.reproduce.analysis, finished)
  card = build_card(run_plan, summary.runs, analysis=analysis,
                    analysis_error=analysis_error, init_from=init_from,
                    seeds_given=seeds, overrides=overrides)
  write_card(card, os.path.join(workdir, experiment.id, CARD_FILE))
  return card


def _reproduce_source(target: Experiment, source_id: str, *, workdir: str,
                      smoke: bool, experiments: Sequence[Experiment] | None,
                      progress: Callable[[str], Any] | None,
                      chain: tuple[str, ...]) -> str:
  """Reproduces the seed 0 of a transfer source; returns that run's workdir."""
  if source_id in chain:
    raise CnnjaxError("reproduce.init_from_experiment makes a loop: "
                      + " -> ".join(chain + (source_id,)))
  if experiments is None:
    experiments = discover(_experiments_root(target))
  source = find(experiments, source_id)
  source_plan = plan(source, seeds=1, smoke=smoke)
  config = source_plan.config
  upstream = config.reproduce.init_from_experiment
  if upstream:
    with config.unlocked():
      config.transfer.init_from = _reproduce_source(
          source, upstream, workdir=workdir, smoke=smoke, experiments=experiments,
          progress=progress, chain=chain + (source_id,))
  if progress:
    progress(f"  first the source of its transfer, {source_id} (seed 0)")
  summary = sweep.run(config, source_plan.grid, [0],
                      workdir=os.path.join(workdir, source.id),
                      config_path=source.path, progress=progress)
  first = summary.runs[0]  # The first setting's seed 0.
  if first["status"] == "failed":
    raise CnnjaxError(f"the source run of '{target.id}' ({source_id}, "
                      f"{first['slug']} seed 0) failed: {first['error']}")
  return first["workdir"]


def _experiments_root(experiment: Experiment) -> str:
  """The experiments folder an experiment was discovered in."""
  depth = experiment.id.count("/") + 1 - (experiment.variant is not None)
  root = experiment.path
  for _ in range(depth):
    root = os.path.dirname(root)
  return root or "."


def _run_analysis(name: str, runs: Sequence[dict[str, Any]]
                  ) -> tuple[dict[str, dict[str, float]], str | None]:
  """{slug: {figure: value}} of the named analysis, or ({}, its error)."""
  try:
    from cnnjax.analysis.claims import run_analysis
  except ImportError as e:
    return {}, f"the analysis module cannot be imported: {e}"
  records = [{"slug": r["slug"], "setting": r["setting"], "seed": r["seed"],
              "workdir": r["workdir"], "result": r["result"]} for r in runs]
  try:
    figures = run_analysis(name, records)
  except CnnjaxError as e:
    return {}, str(e)
  return {slug: {k: _json_number(v) for k, v in values.items()}
          for slug, values in (figures or {}).items()}, None


# --------------------------------------------------------------------------
# The card


def _json_number(value: Any) -> Any:
  """Floats as JSON can hold them (NaN and inf become None)."""
  if hasattr(value, "item") and hasattr(value, "dtype"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _stats(values: Sequence[float]) -> dict[str, float | None]:
  if not values:
    return {"mean": None, "std": None, "min": None, "max": None}
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0,
          "min": min(values), "max": max(values)}


def _canonical(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=repr)


def _setting_text(setting: Mapping[str, Any]) -> str:
  """'name=resnet20 depth=3': the keys by their last part."""
  return " ".join(f"{k.rsplit('.', 1)[-1]}={_plain(v)}" for k, v in setting.items())


def _plain(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(_plain(v) for v in value) + ")"
  return str(value)


def pool(runs: Sequence[dict[str, Any]], metric: str,
         average_over: Sequence[str] = ()) -> dict[str, Any] | None:
  """A metric over the finished runs of one row, pooled as the card shows it.

  Each seed's figure is its value, or with `average_over` keys the mean over
  its runs of those settings (e.g. its 10 folds). Returns None when no run
  has the metric, else {'mean', 'std' (sample, over seeds), 'min', 'max',
  'values' (per seed), 'seeds'} and with `average_over` also 'folds': per
  setting of those keys, the mean over seeds ('values', 'labels') and their
  'mean', 'std', 'min', 'max' (the spread between folds).
  """
  by_seed: dict[int, list[float]] = {}
  by_fold: dict[str, list[float]] = {}
  for r in runs:
    final = (r.get("result") or {}).get("final", {})
    if metric not in final or final[metric] is None:
      continue
    value = float(final[metric])
    by_seed.setdefault(r["seed"], []).append(value)
    fold = _setting_text({k: r["setting"][k] for k in average_over})
    by_fold.setdefault(fold, []).append(value)
  if not by_seed:
    return None
  seeds = sorted(by_seed)
  values = [statistics.fmean(by_seed[s]) for s in seeds]
  pooled: dict[str, Any] = {"name": metric, **_stats(values), "values": values,
                            "seeds": seeds}
  if average_over:
    fold_values = [statistics.fmean(v) for v in by_fold.values()]
    pooled["folds"] = {"labels": list(by_fold), "values": fold_values,
                       **_stats(fold_values)}
  return pooled


def _last_train_metrics(workdir: str) -> dict[str, float]:
  """The last logged train/loss and train/accuracy of a run, if any."""
  found: dict[str, float] = {}
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      lines = f.readlines()
  except OSError:
    return found
  for line in reversed(lines):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if "train/loss" in record:
      return {k: float(record[k]) for k in _TRAIN_METRICS if k in record}
  return found


def _train_figures(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
  values: dict[str, list[float]] = {}
  for r in runs:
    final = r["result"]["final"]
    figures = {k: final[k] for k in _TRAIN_METRICS if k in final}
    if not figures:
      figures = _last_train_metrics(r["workdir"])
    for k, v in figures.items():
      values.setdefault(k, []).append(float(v))
  return {k: statistics.fmean(v) for k, v in values.items()}


def _mean_figures(figures: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Per key, the mean of the numbers (or the one value) over settings."""
  merged: dict[str, list[Any]] = {}
  for f in figures:
    for k, v in f.items():
      merged.setdefault(k, []).append(v)
  out = {}
  for k, vs in merged.items():
    numbers = [float(v) for v in vs if isinstance(v, (int, float))
               and not isinstance(v, bool)]
    out[k] = statistics.fmean(numbers) if len(numbers) == len(vs) and len(vs) > 1 else vs[0]
  return out


def _headline_metric(config: ml_collections.ConfigDict,
                     runs: Sequence[dict[str, Any]]) -> str:
  """The reference metric; without one, the best-checkpoint metric or the first."""
  if config.reference.metric:
    return config.reference.metric
  finals = [r["result"]["final"] for r in runs if r["result"] is not None]
  if config.best_metric and any(config.best_metric in f for f in finals):
    return config.best_metric
  return next(iter(finals[0]), "") if finals else ""


def _one_line(text: str) -> str:
  lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
  return lines[0] if lines else ""


def _title(path: str) -> str:
  """The docstring's first line, joined with the lines that continue it."""
  try:
    with open(path) as f:
      docstring = ast.get_docstring(ast.parse(f.read()))
  except (OSError, SyntaxError):
    return ""
  paragraph = (docstring or "").strip().split("\n\n")[0]
  return " ".join(line.strip() for line in paragraph.splitlines() if line.strip())


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


def _hardware(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Where the runs trained, from their results (never the host name)."""
  device = next((r["device"] for r in results if r.get("device")), None)
  if device is None:
    import jax  # No finished run: describe this machine.

    devices = jax.devices()
    device = {"platform": devices[0].platform, "kind": devices[0].device_kind,
              "count": len(devices), "cpu_count": os.cpu_count()}
  hardware = {k: device.get(k) for k in ("platform", "kind", "count", "cpu_count")}
  hardware["cpu_model"] = _cpu_model()
  return hardware


def _versions(results: Sequence[dict[str, Any]]) -> dict[str, str]:
  """Each package's version over the runs ('0.4 / 0.5' when they differ)."""
  seen: dict[str, list[str]] = {}
  for r in results:
    for package, version in (r.get("versions") or {}).items():
      if str(version) not in seen.setdefault(package, []):
        seen[package].append(str(version))
  return {k: " / ".join(v) for k, v in seen.items()}


def rerun_command(experiment_id: str, *, seeds: int | None = None,
                  smoke: bool = False, overrides: Sequence[str] = (),
                  vmap_seeds: bool = False) -> str:
  """The command line that remakes a card."""
  words = ["cnnjax", "reproduce", "--filter", experiment_id]
  if seeds is not None:
    words += ["--seeds", str(seeds)]
  if smoke:
    words.append("--smoke")
  if vmap_seeds:
    words.append("--vmap-seeds")
  words += [o if o.startswith("--config.") else f"--config.{o}" for o in overrides]
  return " ".join(shlex.quote(w) for w in words)


def _wall_total(runs: Sequence[dict[str, Any]]) -> float:
  """Seconds the finished runs took; seeds trained together (one vmapped
  program, `trained_with_seeds`) share one wall time, counted once."""
  groups: dict[tuple, float] = {}
  for r in runs:
    together = r["result"].get("trained_with_seeds")
    key = (r["slug"], tuple(together)) if together else (r["slug"], r["seed"], id(r))
    groups[key] = float(r["result"]["wall_time_s"])
  return sum(groups.values())


def build_card(run_plan: Plan, runs: Sequence[dict[str, Any]], *,
               analysis: Mapping[str, Mapping[str, Any]] | None = None,
               analysis_error: str | None = None, init_from: str | None = None,
               seeds_given: int | None = None,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
  """The result card of an experiment from its sweep's runs (see sweep.Summary.runs)."""
  exp, config = run_plan.experiment, run_plan.config
  analysis = analysis or {}
  finished = [r for r in runs if r["result"] is not None]
  results = [r["result"] for r in finished]
  metric = _headline_metric(config, runs)
  others = _parse_others(config.reference.others, exp.id)
  average_keys, compare_keys = list(run_plan.average_over), list(run_plan.compare)

  # One row per compared setting, in the sweep's order.
  row_runs: dict[str, list[dict[str, Any]]] = {}
  row_settings: dict[str, dict[str, Any]] = {}
  for r in runs:
    setting = {k: r["setting"][k] for k in compare_keys}
    key = _canonical(setting)
    row_runs.setdefault(key, []).append(r)
    row_settings.setdefault(key, setting)
  rows = []
  for key, mine in row_runs.items():
    done = [r for r in mine if r["result"] is not None]
    slugs = list(dict.fromkeys(r["slug"] for r in mine))
    times = [float(r["result"]["wall_time_s"]) for r in done]
    row_others = {name: pool(done, name, average_keys) for name in others}
    rows.append({
        "label": _setting_text(row_settings[key]),
        "setting": sweep._jsonable(row_settings[key]),  # pylint: disable=protected-access
        "slugs": slugs,
        "runs": len(done),
        "failed": len(mine) - len(done),
        "metric": pool(done, metric, average_keys),
        "others": row_others,
        "train": _train_figures(done),
        "analysis": _mean_figures([analysis[s] for s in slugs if s in analysis]),
        "wall_time_s": {"median": statistics.median(times) if times else None,
                        "total": _wall_total(done)},
        "run_values": [{"slug": r["slug"], "seed": r["seed"],
                        "value": r["result"]["final"].get(metric)} for r in done],
    })

  together = any(r.get("trained_with_seeds") for r in results)
  base_setting = {k: config_lib.get_value(config, k) for k in compare_keys}
  primary = next((i for i, row in enumerate(rows)
                  if _canonical(row["setting"]) == _canonical(
                      sweep._jsonable(base_setting))), 0)  # pylint: disable=protected-access
  reference = config.reference
  return {
      "id": exp.id,
      "title": _title(exp.path),
      "experiment": exp.path,
      "variant": exp.variant,
      "reference": {"metric": reference.metric, "value": float(reference.value),
                    "source": reference.source, "others": others},
      "metric": metric,
      "note": config.reproduce.note,
      "smoke": bool(config.smoke),
      "seeds": list(run_plan.seeds),
      "grid": {"average_over": run_plan.average_over, "compare": run_plan.compare},
      "primary_row": primary,
      "rows": rows,
      "failed": [{"setting": r["slug"], "seed": r["seed"],
                  "error": _one_line(r["error"] or "failed")}
                 for r in runs if r["result"] is None],
      "init_from": init_from,
      "analysis": config.reproduce.analysis,
      "analysis_error": analysis_error,
      "hardware": _hardware(results),
      "versions": _versions(results),
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
      "wall_time_s": _wall_total(finished),
      "seeds_trained_together": together,
      "command": rerun_command(exp.id, seeds=seeds_given, smoke=bool(config.smoke),
                               overrides=overrides, vmap_seeds=together),
  }


def card_file_name(experiment_id: str) -> str:
  """'cifar10/resnet20' -> 'cifar10__resnet20' (cards and notes files)."""
  return experiment_id.replace("/", "__")


def _write_atomically(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w", newline="") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def write_card(card: Mapping[str, Any], path: str) -> None:
  """Writes a card as JSON (atomically)."""
  _write_atomically(path, json.dumps(card, indent=2, default=repr) + "\n")


def store_card(card: Mapping[str, Any], cards_dir: str) -> str:
  """Keeps a card beside RESULTS.md (one file per experiment); returns its path."""
  path = os.path.join(cards_dir, card_file_name(card["id"]) + ".json")
  write_card(card, path)
  return path


# --------------------------------------------------------------------------
# Rendering


def format_value(metric: str, value: float | None) -> str:
  """Accuracies in percent with one decimal, other figures with 3 decimals."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "—"
  if "accuracy" in metric:
    return f"{100 * value:.1f}"
  return f"{value:.3f}"


def metric_label(metric: str) -> str:
  return f"{metric} (%)" if "accuracy" in metric else metric


def format_measured(metric: str, pooled: Mapping[str, Any] | None) -> str:
  """'93.8 ± 2.8' (± the sample std over seeds when there are several)."""
  if not pooled or pooled.get("mean") is None:
    return "—"
  text = format_value(metric, pooled["mean"])
  if len(pooled.get("values", ())) > 1:
    text += " ± " + format_value(metric, pooled["std"])
  return text


def format_published(card: Mapping[str, Any], metric: str | None = None) -> str:
  ref = card["reference"]
  metric = metric or ref["metric"]
  value = ref["value"] if metric == ref["metric"] else ref["others"].get(metric)
  return format_value(metric, value) if value else "—"


def format_duration(seconds: float | None) -> str:
  if seconds is None:
    return "—"
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def _cell(value: Any) -> str:
  return str(value).replace("|", "\\|")


def _figure(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.3g}" if abs(value) >= 1000 or abs(value) < 0.001 else f"{value:.3f}"
  return _cell(value)


def _measured_table(card: Mapping[str, Any]) -> list[str]:
  """Published vs measured: the headline metric and the other published ones."""
  rows = card["rows"]
  row = rows[card.get("primary_row", 0)] if rows else None
  column = "measured"
  if row is not None and len(rows) > 1:
    column = f"measured ({row['label']})"
  lines = [f"| | published | {_cell(column)} |", "|---|---:|---:|"]
  metric = card["metric"]
  if metric:
    lines.append(f"| {metric_label(metric)} | {format_published(card, metric)} | "
                 f"{format_measured(metric, row and row['metric'])} |")
  for other in card["reference"]["others"]:
    pooled = (row or {}).get("others", {}).get(other)
    lines.append(f"| {metric_label(other)} | {format_published(card, other)} | "
                 f"{format_measured(other, pooled)} |")
  if row is not None and len(rows) == 1:
    for name, value in row["train"].items():
      lines.append(f"| final {metric_label(name)} | — | {format_value(name, value)} |")
    for name, value in row["analysis"].items():
      lines.append(f"| {_cell(name)} | — | {_figure(value)} |")
  return lines


def _compare_table(card: Mapping[str, Any]) -> list[str]:
  """One line per compared setting."""
  rows, metric = card["rows"], card["metric"]
  keys = list(card["grid"]["compare"])
  others = list(card["reference"]["others"])
  train = list(dict.fromkeys(k for row in rows for k in row["train"]))
  analysis = list(dict.fromkeys(k for row in rows for k in row["analysis"]))
  header = (keys + ["runs", metric_label(metric)] + [metric_label(o) for o in others]
            + [f"final {metric_label(t)}" for t in train] + analysis
            + ["time per run (median)"])
  lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
           "|" + "|".join("---" if i < len(keys) else "---:"
                          for i in range(len(header))) + "|"]
  for row in rows:
    cells = [_cell(_plain(row["setting"][k])) for k in keys]
    cells.append(str(row["runs"]) + (f" ({row['failed']} failed)" if row["failed"] else ""))
    cells.append(format_measured(metric, row["metric"]))
    for o in others:
      cells.append(format_measured(o, row["others"].get(o)))
    cells += [format_value(t, row["train"].get(t)) for t in train]
    cells += [_figure(row["analysis"][a]) if a in row["analysis"] else "—"
              for a in analysis]
    cells.append(format_duration(row["wall_time_s"]["median"]))
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _pooling_sentence(card: Mapping[str, Any]) -> str:
  seeds = card["seeds"]
  seed_text = (f"seed {seeds[0]}" if len(seeds) == 1
               else f"mean ± sample std over seeds {', '.join(map(str, seeds))}")
  average = card["grid"]["average_over"]
  if not average:
    return f"Measured: {seed_text}."
  settings = " x ".join(f"{k}={','.join(map(str, v))}" for k, v in average.items())
  count = math.prod(len(v) for v in average.values())
  sentence = (f"Measured: {seed_text}; each seed's figure is the mean of its "
              f"{count} runs over {settings}")
  rows = card["rows"]
  row = rows[card.get("primary_row", 0)] if rows else None
  folds = (row or {}).get("metric") and row["metric"].get("folds")
  if folds and folds.get("mean") is not None:
    metric = card["metric"]
    sentence += (f" (spread between them: {format_value(metric, folds['min'])} to "
                 f"{format_value(metric, folds['max'])}, std "
                 f"{format_value(metric, folds['std'])})")
  return sentence + "."


def render_card(card: Mapping[str, Any], *, notes_dir: str | None = None) -> str:
  """A card as markdown; `notes_dir/<id with / -> __>.md` is appended if present."""
  title = f"### {card['id']}: {card['title']}" if card["title"] else f"### {card['id']}"
  lines = [title, ""]
  if card["smoke"]:
    lines += ["**Smoke run**: a few steps of a shrunk configuration, possibly on "
              "generated stand-in data; the numbers only show that it runs.", ""]
  lines += _measured_table(card) + [""]
  source = card["reference"]["source"]
  lines.append(_pooling_sentence(card) + (f" Published: {source}." if source else ""))
  if len(card["rows"]) > 1:
    lines += ["", *_compare_table(card)]
  lines.append("")
  if card["note"]:
    note = card["note"].strip()
    lines.append(f"- Note: {note}" + ("" if note.endswith((".", "!", "?")) else "."))
  if card.get("init_from"):
    lines.append(f"- Starts from the run in `{card['init_from']}` "
                 "(reproduce.init_from_experiment).")
  if card.get("analysis_error"):
    lines.append(f"- Analysis '{card['analysis']}' failed: {card['analysis_error']}")
  for failure in card["failed"]:
    lines.append(f"- Failed: {failure['setting']} seed {failure['seed']}: "
                 f"{failure['error']}")
  hw = card["hardware"]
  device = f"{hw.get('count')} x {hw.get('kind')} ({hw.get('platform')})"
  cpus = f"{hw['cpu_count']} CPU cores" if hw.get("cpu_count") else ""
  if hw.get("cpu_model"):
    cpus += f" ({hw['cpu_model']})" if cpus else hw["cpu_model"]
  lines.append("- Hardware: " + ", ".join(p for p in (device, cpus) if p) + ".")
  if card["versions"]:
    lines.append("- Software: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items())
                 + ".")
  medians = [row["wall_time_s"]["median"] for row in card["rows"]
             if row["wall_time_s"]["median"] is not None]
  per_run = (f", {format_duration(statistics.median(medians))} per run (median)"
             if medians else "")
  runs = sum(row["runs"] for row in card["rows"])
  together = (" (the seeds of a setting trained together, in one vmapped program: each "
              "run's time is its group's)" if card.get("seeds_trained_together") else "")
  lines.append(f"- Date: {card['date']} (UTC); wall time {format_duration(card['wall_time_s'])}"
               f" for {runs} run{'s' if runs != 1 else ''}{per_run}{together}.")
  lines.append(f"- Command: `{card['command']}`")
  text = "\n".join(lines) + "\n"
  if notes_dir:
    path = os.path.join(notes_dir, card_file_name(card["id"]) + ".md")
    if os.path.exists(path):
      with open(path) as f:
        text += "\n" + f.read().strip("\n") + "\n"
  return text


def load_cards(cards_dir: str) -> list[dict[str, Any]]:
  """Every stored card, sorted by id."""
  cards = []
  if os.path.isdir(cards_dir):
    for name in sorted(os.listdir(cards_dir)):
      if name.endswith(".json"):
        path = os.path.join(cards_dir, name)
        try:
          with open(path) as f:
            cards.append(json.load(f))
        except json.JSONDecodeError as e:
          raise CnnjaxError(f"the stored card '{path}' is not valid JSON ({e}); "
                            "delete it and reproduce that experiment again") from e
  return sorted(cards, key=lambda c: c["id"])


def render_results(cards: Sequence[Mapping[str, Any]], *,
                   notes_dir: str | None = None) -> str:
  """The generated part of RESULTS.md: the cards under one heading per dataset folder."""
  parts = [_INTRO, ""]
  for folder, group in itertools.groupby(
      cards, key=lambda c: c["id"].split("/")[0] if "/" in c["id"] else "experiments"):
    parts += [f"## {folder}", ""]
    for card in group:
      parts.append(render_card(card, notes_dir=notes_dir))
  return "\n".join(parts).rstrip("\n") + "\n"


def results_dirs(results_path: str) -> tuple[str, str]:
  """(cards, notes) folders of a results file: <its dir>/results/{cards,notes}."""
  base = os.path.join(os.path.dirname(os.path.abspath(results_path)), "results")
  return os.path.join(base, "cards"), os.path.join(base, "notes")


def update_results(results_path: str, cards_dir: str | None = None) -> str:
  """Regenerates the marked section of `results_path` from every stored card.

  Text outside the BEGIN/END marker lines is kept byte for byte; without
  markers the section is appended at the end. Returns the new file's text.
  """
  default_cards, notes_dir = results_dirs(results_path)
  cards_dir = cards_dir or default_cards
  block = render_results(load_cards(cards_dir), notes_dir=notes_dir)
  try:
    with open(results_path, newline="") as f:
      text = f.read()
  except FileNotFoundError:
    text = "# Results\n"
  begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
  if begin < 0 and end < 0:
    text = text + ("" if text.endswith("\n") else "\n") + "\n" + \
        f"{BEGIN_MARKER}\n{block}{END_MARKER}\n"
  elif begin < 0 or end < begin:
    raise CnnjaxError(f"'{results_path}' has a damaged cnnjax reproduce section "
                      f"(it needs the line {BEGIN_MARKER} before the line "
                      f"{END_MARKER}); restore the two marker lines")
  else:
    head = text[:begin + len(BEGIN_MARKER)]
    # A file with Windows line ends keeps them in the generated part too.
    newline = "\r\n" if text[len(head):].startswith("\r\n") else "\n"
    text = head + newline + block.replace("\n", newline) + text[end:]
  _write_atomically(results_path, text)
  return text


# --------------------------------------------------------------------------
# Summaries for the command line


def summary_line(card: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
  """(id, published, measured, runs, wall time) of a card."""
  metric = card["metric"]
  rows = card["rows"]
  row = rows[card.get("primary_row", 0)] if rows else None
  measured = format_measured(metric, row and row["metric"])
  if measured != "—" and "accuracy" in metric:
    measured += "%"
  published = format_published(card, metric)
  if published != "—" and "accuracy" in metric:
    published += "%"
  total = sum(r["runs"] + r["failed"] for r in rows)
  done = sum(r["runs"] for r in rows)
  runs = f"{done}/{total}" if done != total else str(total)
  return (card["id"], published, measured, runs, format_duration(card["wall_time_s"]))


def plan_line(run_plan: Plan) -> tuple[str, str, str, str, str]:
  """(id, metric, published, runs, source) of a plan, for --list."""
  ref = run_plan.config.reference
  published = format_value(ref.metric, ref.value) if ref.value else "—"
  if published != "—" and "accuracy" in ref.metric:
    published += "%"
  settings, seeds = run_plan.num_settings, len(run_plan.seeds)
  runs = (f"{run_plan.num_runs} = {settings} setting{'s' if settings != 1 else ''}"
          f" x {seeds} seed{'s' if seeds != 1 else ''}")
  return (run_plan.experiment.id, ref.metric or "(compare)", published, runs,
          ref.source)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
  """Plain aligned columns for the terminal."""
  widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
  return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                   for r in [header, *rows])
