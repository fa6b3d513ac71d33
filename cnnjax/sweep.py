"""Ablations: one experiment trained over a grid of config values and seeds.

    from cnnjax import config as config_lib, sweep
    summary = sweep.run(config_lib.load_config('experiments/mnist1d/cnn.py'),
                        {'optimizer.learning_rate': [0.01, 0.003],
                         'model.name': ['mnist1d_cnn', 'mnist1d_mlp']},
                        seeds=(0, 1, 2), workdir='runs/sweeps/lr_model')
    print(summary.to_markdown())

or `cnnjax sweep --config FILE --grid KEY=V1,V2 --seeds 3`. Every (setting,
seed) pair is an ordinary run in its own workdir,
`<workdir>/<setting slug>/seed_<s>`, so a sweep stopped part-way resumes where
it stopped, finished runs are not trained again, and each run can be inspected
with the usual tools (`cnnjax eval`, its curves.png). The sweep writes
`sweep.json` (what it is) and `summary.csv`, `summary.md`, `summary.png`
(mean, sample std, min and max of every final metric over the seeds).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import numbers
import os
import re
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError

SWEEP_FILE = "sweep.json"
# Slugs longer than this are cut and given a hash, to stay far below the
# 255-byte limit of a file name.
_MAX_SLUG = 120


# --------------------------------------------------------------------------
# The grid


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


def _with_value(config: ml_collections.ConfigDict, key: str, value: Any) -> Any:
  """Sets `key` as an override would (same parsing and type checks)."""
  config_lib.apply_overrides(config, [f"{key}={_as_override_text(value)}"])
  return config_lib.get_value(config, key)


def _check_grid(config: ml_collections.ConfigDict,
                grid: Mapping[str, Any]) -> dict[str, list[Any]]:
  """The grid with its values as lists, once its keys are known config keys."""
  checked = {}
  known = config_lib._flat_keys(config)  # pylint: disable=protected-access
  for key, values in grid.items():
    if key == "seed":
      raise CnnjaxError("'seed' cannot be a grid key; give the seeds with "
                        "seeds= (on the command line --seeds or --seed-list)")
    model_field = key.startswith("model.") and key.count(".") == 1
    if key not in known and not model_field:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ""
      raise CnnjaxError(f"unknown config key '{key}' in the sweep grid{hint}")
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
      raise CnnjaxError(f"the grid values of '{key}' must be a list, e.g. "
                        f"{{'{key}': [{values!r}]}}, not {values!r}")
    checked[key] = list(values)
    if not checked[key]:
      raise CnnjaxError(f"the grid key '{key}' lists no values")
  return checked


def _parse_grid(config: ml_collections.ConfigDict,
                grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
  """Each grid value as the config holds it once applied (0.1 for '0.1')."""
  parsed = {}
  for key, values in grid.items():
    parsed[key] = [_with_value(copy.deepcopy(config), key, v) for v in values]
    seen = [_canonical(v) for v in parsed[key]]
    for i, text in enumerate(seen):
      if text in seen[:i]:
        raise CnnjaxError(f"the grid lists the value {parsed[key][i]!r} of "
                          f"'{key}' twice; drop one")
  return parsed


def _canonical(value: Any) -> str:
  return json.dumps(value, sort_keys=True, default=repr)


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
      digest = hashlib.sha1(_canonical([list(keys), list(values)]).encode())
      slug = f"{slug[:_MAX_SLUG]}__{digest.hexdigest()[:8]}"
    unique.append(slug)
  return unique


# --------------------------------------------------------------------------
# The sweep's identity


def _check_sweep_file(workdir: str, record: dict[str, Any]) -> None:
  """Refuses to mix two different sweeps in one workdir, then writes sweep.json."""
  path = os.path.join(workdir, SWEEP_FILE)
  if os.path.exists(path):
    try:
      with open(path) as f:
        previous = json.load(f)
    except json.JSONDecodeError:
      previous = None
    if previous is not None:
      differences = []
      if list(previous.get("grid", {}).items()) != list(record["grid"].items()):
        differences.append(f"its grid is {_grid_text(previous.get('grid', {}))}, "
                           f"not {_grid_text(record['grid'])}")
      if previous.get("overrides", {}) != record["overrides"]:
        differences.append(f"its overrides are {previous.get('overrides')}, "
                           f"not {record['overrides']}")
      if differences:
        raise CnnjaxError(
            f"workdir '{workdir}' holds a different sweep ({'; '.join(differences)}); "
            "use another --workdir, or delete this one to start over")
  os.makedirs(workdir, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)


def _grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
  if not grid:
    return "empty"
  return " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items())


def _jsonable(value: Any) -> Any:
  """As it reads back from JSON (tuples become lists), for comparisons."""
  return json.loads(json.dumps(value, default=repr))


# --------------------------------------------------------------------------
# Running


def _finished_result(config: ml_collections.ConfigDict,
                     workdir: str) -> dict[str, Any] | None:
  """result.json of a finished run of `config` in `workdir`, else None.

  Finished: the result is newer than the workdir's config.json (no later run
  of it started), which is `config` up to bookkeeping keys, with the same
  duration. Any other difference is left to `train_and_evaluate` to refuse.
  """
  result_path = os.path.join(workdir, "result.json")
  config_path = os.path.join(workdir, "config.json")
  try:
    with open(result_path) as f:
      result = json.load(f)
    with open(config_path) as f:
      stored = json.load(f)
    if os.path.getmtime(result_path) < os.path.getmtime(config_path):
      return None
  except (OSError, json.JSONDecodeError):
    return None
  effective = config_lib.apply_smoke(copy.deepcopy(config))  # As the loop sees it.
  current = json.loads(effective.to_json_best_effort())
  def bookkeeping(key):
    return key not in ("num_steps", "num_epochs") and config_lib.is_resumable(key)

  if any(not bookkeeping(d.split(":")[0])
         for d in config_lib.config_differences(stored, current)):
    return None
  if effective.num_steps > 0 and result.get("num_steps") != effective.num_steps:
    return None
  return result


def _train_group(configs: Sequence[ml_collections.ConfigDict],
                 workdirs: Sequence[str], *, config_path: str = "",
                 together: bool = False,
                 say: Callable[[str], Any] = lambda line: None
                 ) -> list[dict[str, Any] | CnnjaxError]:
  """Trains the seeds of one setting; per run, its result or its error.

  With `together`, seeds that can share one vmapped step (same config but
  the seed, data on one device; see cnnjax/train/multiseed.py) train as one
  program. If they cannot, or a seed diverges, each seed trains alone (from
  the group's checkpoints), which also gives each seed its own outcome.
  """
  from cnnjax.train.loop import TrainingInterrupted, train_and_evaluate
  from cnnjax.train import multiseed

  if together:
    reason = multiseed.can_train_together(configs)
    if not reason:
      try:
        return multiseed.train_seeds_together(configs, workdirs,
                                              config_path=config_path)
      except TrainingInterrupted:
        raise
      except CnnjaxError as e:
        reason = str(e)
    if len(configs) > 1:
      say(f"    seeds train one at a time: {reason}")
  outcomes: list[dict[str, Any] | CnnjaxError] = []
  for config, workdir in zip(configs, workdirs):
    try:
      outcomes.append(train_and_evaluate(config, workdir, config_path=config_path))
    except TrainingInterrupted:
      raise  # Stop the whole sweep; rerunning it resumes this run.
    except CnnjaxError as e:
      outcomes.append(e)
  return outcomes


def run(base_config: ml_collections.ConfigDict,
        grid: Mapping[str, Sequence[Any]],
        seeds: Sequence[int] = (0,), *,
        workdir: str,
        overrides: Sequence[str] = (),
        metrics: Sequence[str] | None = None,
        config_path: str = "",
        vmap_seeds: bool = False,
        progress: Callable[[str], Any] | None = print) -> Summary:
  """Trains every setting of `grid` (their cross product) with every seed.

  Args:
    base_config: the experiment's config; it is not modified.
    grid: {dotted config key: values}; the settings are the cross product,
      the last key varying fastest. Values are parsed as command-line
      overrides are ('0.1' and 0.1 are the same for a float field);
      `model.<field>` keys may name new model fields. {} is one setting.
    seeds: `config.seed` of each run of a setting.
    workdir: the sweep's directory; run s of a setting trains in
      `<workdir>/<setting slug>/seed_<s>`.
    overrides: 'a.b=value' strings applied to every run before the grid.
    metrics: the final metrics to summarize (default: all, in the order of
      the first result).
    config_path: the experiment file, recorded in sweep.json and the results.
    vmap_seeds: train the seeds of a setting together, in one vmapped step
      (small models; falls back to one at a time where it cannot).
    progress: called with one line per setting and run; None for silence.

  Returns:
    The Summary, also written as summary.csv, summary.md and summary.png.
  """
  say = progress or (lambda line: None)
  base = copy.deepcopy(base_config)
  overrides = [o[len("--config."):] if o.startswith("--config.") else o
               for o in overrides]
  config_lib.apply_overrides(base, overrides)
  grid = _check_grid(base, grid or {})
  parsed = _parse_grid(base, grid)
  seeds = _check_seeds(seeds)
  keys = list(parsed)
  settings = list(itertools.product(*parsed.values()))
  slugs = setting_slugs(keys, settings)

  # Every config is built before anything trains, so a bad value stops the
  # sweep at once rather than after hours.
  groups = []
  for values, slug in zip(settings, slugs):
    configs, workdirs = [], []
    for seed in seeds:
      config = copy.deepcopy(base)
      for key, value in zip(keys, values):
        _with_value(config, key, value)
      config_lib.set_value(config, "seed", seed)
      configs.append(config)
      workdirs.append(os.path.join(workdir, slug, f"seed_{seed}"))
    groups.append((dict(zip(keys, values)), slug, configs, workdirs))

  override_keys = [o.split("=", 1)[0] for o in overrides]
  _check_sweep_file(workdir, {
      "grid": _jsonable(parsed),
      "seeds": seeds,
      "config": config_path,
      "overrides": _jsonable({k: config_lib.get_value(base, k) for k in override_keys}),
  })

  runs = []
  for index, (setting, slug, configs, workdirs) in enumerate(groups):
    finished = [_finished_result(c, w) for c, w in zip(configs, workdirs)]
    todo = [i for i, r in enumerate(finished) if r is None]
    done_seeds = [seeds[i] for i in range(len(seeds)) if i not in todo]
    head = f"[{index + 1}/{len(groups)}] {slug}:"
    if not todo:
      say(f"{head} {_seeds_text(done_seeds)} already done")
    else:
      also = f" ({_seeds_text(done_seeds)} already done)" if done_seeds else ""
      say(f"{head} training {_seeds_text([seeds[i] for i in todo])}{also}")
      outcomes = _train_group([configs[i] for i in todo],
                              [workdirs[i] for i in todo],
                              config_path=config_path, together=vmap_seeds,
                              say=say)
      for i, outcome in zip(todo, outcomes):
        finished[i] = outcome
    for i, seed in enumerate(seeds):
      outcome = finished[i]
      failed = isinstance(outcome, CnnjaxError)
      status = "failed" if failed else ("trained" if i in todo else "done")
      runs.append({"setting": setting, "slug": slug, "seed": seed,
                   "workdir": workdirs[i], "status": status,
                   "error": str(outcome) if failed else None,
                   "result": None if failed else outcome})
      if i in todo:
        say(f"    seed {seed}: " + (f"failed: {outcome}" if failed
                                      else _final_text(outcome)))

  summary = summarize(keys, [g[0] for g in groups], slugs, runs, metrics=metrics,
                      seeds=seeds)
  summary.files = write_summary(summary, workdir)
  return summary


def _check_seeds(seeds: Sequence[int]) -> list[int]:
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


def _seeds_text(seeds: Sequence[int]) -> str:
  return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _final_text(result: dict[str, Any]) -> str:
  parts = [f"{k}={_format_value(k, v)}" for k, v in result["final"].items()]
  return " ".join(parts + [f"({result['wall_time_s']:.1f} s)"])


# --------------------------------------------------------------------------
# The summary


def _is_accuracy(metric: str) -> bool:
  return "accuracy" in metric


def _format_value(metric: str, value: float) -> str:
  return f"{100 * value:.2f}%" if _is_accuracy(metric) else f"{value:.4f}"


@dataclasses.dataclass
class Summary:
  """The sweep's outcome: one row per setting, one entry per run.

  `rows[i]` holds 'slug', the grid keys with the setting's values,
  'num_seeds' (runs finished), '<metric>_mean', '_std' (sample std, ddof=1;
  0 for one seed), '_min', '_max' of every summarized metric over the seeds,
  and 'wall_time_s_mean'. `runs[j]` holds 'setting' ({key: value}), 'slug',
  'seed', 'workdir', 'status' ('done': finished before, 'trained', 'failed'),
  'error' (the failure's message or None) and 'result' (result.json or None).
  """
  keys: list[str]
  metrics: list[str]
  seeds: list[int]
  rows: list[dict[str, Any]]
  runs: list[dict[str, Any]]
  files: dict[str, str] = dataclasses.field(default_factory=dict)

  @property
  def failed(self) -> list[dict[str, Any]]:
    return [r for r in self.runs if r["status"] == "failed"]

  def count(self, status: str) -> int:
    """How many runs have `status` ('done', 'trained' or 'failed')."""
    return sum(r["status"] == status for r in self.runs)

  def seed_values(self, metric: str) -> list[list[float]]:
    """Per setting (row order), the metric's final value of each finished seed."""
    by_slug: dict[str, list[float]] = {row["slug"]: [] for row in self.rows}
    for r in self.runs:
      if r["result"] is not None and metric in r["result"]["final"]:
        by_slug[r["slug"]].append(float(r["result"]["final"][metric]))
    return [by_slug[row["slug"]] for row in self.rows]

  def to_markdown(self) -> str:
    """A markdown table: the settings, then each metric as mean ± std."""
    header = list(self.keys) or ["setting"]
    header += ["seeds"] + [f"{m} (%)" if _is_accuracy(m) else m
                           for m in self.metrics] + ["time (s)"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < max(len(self.keys), 1) else "---:"
                            for i in range(len(header))) + "|"]
    for row in self.rows:
      cells = [_cell(row[k]) for k in self.keys] or [row["slug"]]
      cells.append(str(row["num_seeds"]))
      for m in self.metrics:
        mean, std = row[f"{m}_mean"], row[f"{m}_std"]
        if math.isnan(mean):
          cells.append("n/a")
        elif _is_accuracy(m):
          cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
        else:
          cells.append(f"{mean:.4f} ± {std:.4f}")
      time_mean = row["wall_time_s_mean"]
      cells.append("n/a" if math.isnan(time_mean) else f"{time_mean:.1f}")
      lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
  return str(value).replace("|", "\\|")


def _stats(values: Sequence[float]) -> dict[str, float]:
  import numpy as np

  if not values:
    return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
  array = np.asarray(values, dtype=np.float64)
  return {"mean": float(array.mean()),
          "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
          "min": float(array.min()), "max": float(array.max())}


def summarize(keys: Sequence[str], settings: Sequence[dict[str, Any]],
              slugs: Sequence[str], runs: Sequence[dict[str, Any]], *,
              metrics: Sequence[str] | None = None,
              seeds: Sequence[int] = ()) -> Summary:
  """Statistics over the seeds of each setting, from the runs' results."""
  results = [r["result"] for r in runs if r["result"] is not None]
  available: list[str] = []
  for result in results:
    available += [k for k in result["final"] if k not in available]
  if metrics is None:
    chosen = available
  else:
    chosen = list(dict.fromkeys(metrics))
    missing = [m for m in chosen if m not in available]
    if results and missing:
      raise CnnjaxError(f"metric '{missing[0]}' is in no run's final metrics; "
                        f"choose from {', '.join(available)}")
  rows = []
  for setting, slug in zip(settings, slugs):
    mine = [r["result"] for r in runs if r["slug"] == slug and r["result"] is not None]
    row: dict[str, Any] = {"slug": slug, **setting, "num_seeds": len(mine)}
    for m in chosen:
      stats = _stats([float(r["final"][m]) for r in mine if m in r["final"]])
      row.update({f"{m}_{name}": v for name, v in stats.items()})
    row["wall_time_s_mean"] = _stats([float(r["wall_time_s"]) for r in mine])["mean"]
    rows.append(row)
  return Summary(keys=list(keys), metrics=chosen, seeds=list(seeds), rows=rows,
                 runs=list(runs))


def plot_metric(metrics: Sequence[str]) -> str | None:
  """The metric to plot: the first split's accuracy if it has one."""
  if not metrics:
    return None
  split = metrics[0].split("/")[0]
  same_split = [m for m in metrics if m.split("/")[0] == split]
  for m in same_split:
    if m == f"{split}/accuracy":
      return m
  for m in same_split:
    if m.endswith("accuracy"):
      return m
  return metrics[0]


def write_summary(summary: Summary, workdir: str) -> dict[str, str]:
  """Writes summary.csv, summary.md and summary.png; returns their paths."""
  files = {}
  path = os.path.join(workdir, "summary.csv")
  with open(path, "w", newline="") as f:
    columns = list(summary.rows[0]) if summary.rows else ["slug"]
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in summary.rows:
      writer.writerow({k: _csv_value(v) for k, v in row.items()})
  files["csv"] = path

  path = os.path.join(workdir, "summary.md")
  seeds = ", ".join(map(str, summary.seeds))
  with open(path, "w") as f:
    f.write(summary.to_markdown() + "\n\n"
            f"Mean ± sample standard deviation over seeds {seeds}; accuracies "
            "in percent; time: mean wall-clock seconds of a run.\n")
  files["md"] = path

  png = _plot(summary, os.path.join(workdir, "summary.png"))
  if png:
    files["png"] = png
  return files


def _csv_value(value: Any) -> Any:
  if isinstance(value, float):
    return repr(value)
  return value


def _plot(summary: Summary, path: str) -> str | None:
  metric = plot_metric(summary.metrics)
  if metric is None or not any(r["num_seeds"] for r in summary.rows):
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  scale = 100.0 if _is_accuracy(metric) else 1.0
  means = np.array([r[f"{metric}_mean"] for r in summary.rows]) * scale
  stds = np.array([r[f"{metric}_std"] for r in summary.rows]) * scale
  positions = np.arange(len(summary.rows))
  fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * len(positions)), 4.5))
  ax.bar(positions, np.nan_to_num(means), yerr=np.nan_to_num(stds), capsize=4,
         color="tab:blue", alpha=0.6, zorder=2)
  for x, values in zip(positions, summary.seed_values(metric)):
    if not values:
      continue
    # The seeds side by side, so that equal values stay visible.
    offsets = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else [0.0]
    ax.scatter(x + np.asarray(offsets), np.asarray(values) * scale, color="black",
               s=14, zorder=3)
  ax.set_xticks(positions)
  ax.set_xticklabels([r["slug"] for r in summary.rows], rotation=30, ha="right",
                     fontsize=8)
  ax.set_ylabel(f"{metric} (%)" if scale == 100.0 else metric)
  ax.set_title(f"mean ± std over {len(summary.seeds)} seed(s)", fontsize=10)
  ax.grid(axis="y", alpha=0.3, zorder=0)
  fig.tight_layout()
  fig.savefig(path, dpi=100, bbox_inches="tight")  # Keeps long labels whole.
  plt.close(fig)
  return path
