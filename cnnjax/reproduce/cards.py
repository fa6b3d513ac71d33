"""Result cards: what one reproduction measured, as a JSON-able dict.

A card holds the published figure beside the measured one (mean and sample
std over seeds; with `reproduce.average_over`, each seed's figure is the mean
over those settings), one row per compared setting, the hardware, the
versions and the command that remakes it. It is written beside the runs
(`<workdir>/<id>/card.json`) and stored beside RESULTS.md
(`results/cards/<id with / -> __>.json`), from where rendering.py reads it.
"""

from __future__ import annotations

import ast
import datetime
import json
import os
import shlex
import statistics
from typing import Any, Mapping, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax import sweep
from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run, files
from cnnjax.sweep.summary import describe
from cnnjax.reproduce.planning import Plan, parse_others

CARD_FILE = "card.json"
# Metrics of the last training log line shown in a card, when a run has them.
_TRAIN_METRICS = ("train/loss", "train/accuracy")


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
  others = parse_others(config.reference.others, exp.id)
  average_keys, compare_keys = list(run_plan.average_over), list(run_plan.compare)

  # One row per compared setting, in the sweep's order.
  row_runs: dict[str, list[dict[str, Any]]] = {}
  row_settings: dict[str, dict[str, Any]] = {}
  for r in runs:
    setting = {k: r["setting"][k] for k in compare_keys}
    key = sweep.canonical(setting)
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
        "setting": sweep.jsonable(row_settings[key]),
        "slugs": slugs,
        "runs": len(done),
        "failed": len(mine) - len(done),
        "metric": pool(done, metric, average_keys),
        "others": row_others,
        "train": _train_figures(done),
        "analysis": _mean_figures([analysis[s] for s in slugs if s in analysis]),
        "wall_time_s": {"median": statistics.median(times) if times else None,
                        "total": wall_total(done)},
        "run_values": [{"slug": r["slug"], "seed": r["seed"],
                        "value": r["result"]["final"].get(metric)} for r in done],
    })

  together = any(r.get("trained_with_seeds") for r in results)
  base_setting = {k: config_lib.get_value(config, k) for k in compare_keys}
  primary = next((i for i, row in enumerate(rows)
                  if sweep.canonical(row["setting"]) == sweep.canonical(
                      sweep.jsonable(base_setting))), 0)
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
      "wall_time_s": wall_total(finished),
      "seeds_trained_together": together,
      "command": rerun_command(exp.id, seeds=seeds_given, smoke=bool(config.smoke),
                               overrides=overrides, vmap_seeds=together),
  }


# --------------------------------------------------------------------------
# Pooling the runs of a row


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
  pooled: dict[str, Any] = {"name": metric, **describe(values), "values": values,
                            "seeds": seeds}
  if average_over:
    fold_values = [statistics.fmean(v) for v in by_fold.values()]
    pooled["folds"] = {"labels": list(by_fold), "values": fold_values,
                       **describe(fold_values)}
  return pooled


def _setting_text(setting: Mapping[str, Any]) -> str:
  """'name=resnet20 depth=3': the keys by their last part."""
  return " ".join(f"{k.rsplit('.', 1)[-1]}={plain_text(v)}" for k, v in setting.items())


def plain_text(value: Any) -> str:
  """A setting's value as a card shows it: (2,2) for a tuple or a list."""
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(plain_text(v) for v in value) + ")"
  return str(value)


def _train_figures(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
  values: dict[str, list[float]] = {}
  for r in runs:
    final = r["result"]["final"]
    figures = {k: final[k] for k in _TRAIN_METRICS if k in final}
    if not figures:
      figures = Run(r["workdir"]).last_train_metrics(_TRAIN_METRICS)
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


def wall_total(runs: Sequence[dict[str, Any]]) -> float:
  """Seconds the finished runs took; seeds trained together (one vmapped
  program, `trained_with_seeds`) share one wall time, counted once."""
  groups: dict[tuple, float] = {}
  for r in runs:
    together = r["result"].get("trained_with_seeds")
    key = (r["slug"], tuple(together)) if together else (r["slug"], r["seed"], id(r))
    groups[key] = float(r["result"]["wall_time_s"])
  return sum(groups.values())


# --------------------------------------------------------------------------
# What the card says about the experiment and the machine


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


# --------------------------------------------------------------------------
# Storing cards


def card_file_name(experiment_id: str) -> str:
  """'cifar10/resnet20' -> 'cifar10__resnet20' (cards and notes files)."""
  return experiment_id.replace("/", "__")


def write_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (an interrupted write never leaves
  half a file)."""
  files.write_text(path, text)


def write_card(card: Mapping[str, Any], path: str) -> None:
  """Writes a card as JSON (atomically)."""
  write_atomically(path, json.dumps(card, indent=2, default=repr) + "\n")


def store_card(card: Mapping[str, Any], cards_dir: str) -> str:
  """Keeps a card beside RESULTS.md (one file per experiment); returns its path."""
  path = os.path.join(cards_dir, card_file_name(card["id"]) + ".json")
  write_card(card, path)
  return path


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
