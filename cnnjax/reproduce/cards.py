"""Result cards: what one reproduction measured, as a JSON-able dict.

A card holds the published figure beside the measured one (mean, sample
std and 95% t-interval over seeds; with `reproduce.average_over`, each
seed's figure is the mean over those settings), one row per compared
setting, the seed-paired differences of the rows to the first, the verdict
on each `reproduce.claim`, the hardware, the versions and the command that
remakes it. It is written beside the runs (`<workdir>/<id>/card.json`) and
stored beside RESULTS.md (`results/cards/<id with / -> __>.json`), from
where rendering.py reads it. The statistics are a function of the stored
per-seed values (`add_statistics`), so `refresh_stored_cards` recomputes
them for stored cards without training anything.
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
from cnnjax.bench.compat import cpu_model
from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run, files
from cnnjax.sweep import stats
from cnnjax.sweep.summary import describe
from cnnjax.reproduce.catalogue import Experiment, find
from cnnjax.reproduce.planning import Claim, Plan, parse_claims, parse_others

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
  card = {
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
  return add_statistics(card, run_plan.claims)


# --------------------------------------------------------------------------
# Pooling the runs of a row


def pool(runs: Sequence[dict[str, Any]], metric: str,
         average_over: Sequence[str] = ()) -> dict[str, Any] | None:
  """A metric over the finished runs of one row, pooled as the card shows it.

  Each seed's figure is its value, or with `average_over` keys the mean over
  its runs of those settings (e.g. its 10 folds). Returns None when no run
  has the metric, else {'mean', 'std' (sample, over seeds), 'min', 'max',
  'values' (per seed), 'seeds', 'ci_low', 'ci_high', 'ci_half_width',
  'confidence' (the t-interval of the mean over seeds; None for one seed)}
  and with `average_over` also 'folds': per setting of those keys, the mean
  over seeds ('values', 'labels') and their 'mean', 'std', 'min', 'max'
  (the spread between folds).
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
                            "seeds": seeds, **_interval_fields(values)}
  if average_over:
    fold_values = [statistics.fmean(v) for v in by_fold.values()]
    pooled["folds"] = {"labels": list(by_fold), "values": fold_values,
                       **describe(fold_values)}
  return pooled


def _interval_fields(values: Sequence[float]) -> dict[str, Any]:
  """The t-interval of a pooled figure's mean over seeds, as a card stores it."""
  spread = stats.interval(values)
  return {"ci_low": stats.finite_or_none(spread["low"]),
          "ci_high": stats.finite_or_none(spread["high"]),
          "ci_half_width": stats.finite_or_none(spread["half_width"]),
          "confidence": spread["confidence"]}


# --------------------------------------------------------------------------
# Statistics between rows: paired differences and claims


def add_statistics(card: dict[str, Any], claims: Sequence[Claim] = ()) -> dict[str, Any]:
  """The card with its statistics (re)computed from its per-seed values.

  Every pooled figure gains its t-interval; 'differences' holds each row
  after the first minus the first, in the headline metric, paired by seed
  (empty with one row); 'claims' the verdict on each claim. Returns the
  same dict, changed in place.
  """
  for row in card["rows"]:
    for pooled in [row["metric"], *row["others"].values()]:
      if pooled and pooled.get("values") is not None:
        pooled.update(_interval_fields(pooled["values"]))
  card["differences"] = row_differences(card)
  card["claims"] = [evaluate_claim(card, claim) for claim in claims]
  return card


def row_differences(card: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Each row after the first minus the first, in the headline metric, paired
  by seed: {'label', 'reference', 'metric', 'n', 'seeds', 'mean', 'std',
  'ci_low', 'ci_high', 'confidence', 'p_value'} (None where undefined)."""
  rows, metric = card["rows"], card["metric"]
  return [{"label": row["label"], "reference": rows[0]["label"], "metric": metric,
           **_difference_fields(stats.paired_difference(
               _by_seed(row["metric"]), _by_seed(rows[0]["metric"])))}
          for row in rows[1:]]


def _by_seed(pooled: Mapping[str, Any] | None) -> dict[int, float]:
  if not pooled or pooled.get("values") is None:
    return {}
  return dict(zip(pooled["seeds"], pooled["values"]))


def _difference_fields(diff: Mapping[str, Any]) -> dict[str, Any]:
  """A paired difference as a card stores it (None where it is undefined)."""
  fields = {"n": diff["n"], "seeds": diff["seeds"], "mean": diff["mean"],
            "std": diff["std"], "ci_low": diff["low"], "ci_high": diff["high"],
            "confidence": diff["confidence"], "p_value": diff["p_value"]}
  return {k: stats.finite_or_none(v) for k, v in fields.items()}


def evaluate_claim(card: Mapping[str, Any], claim: Claim) -> dict[str, Any]:
  """A claim tested on a card: the paired difference left - right and its verdict.

  Returns {'statement', 'metric', 'left', 'right' (the rows' labels),
  'direction', 'n', 'seeds', 'mean', 'std', 'ci_low', 'ci_high',
  'confidence', 'p_value', 'verdict' (see sweep.stats.verdict)}.
  """
  metric = claim.metric or card["metric"]
  left, right = (_claim_row(card, side, claim) for side in (claim.left, claim.right))

  def figure(row):
    return row["metric"] if metric == card["metric"] else row["others"].get(metric)

  diff = stats.paired_difference(_by_seed(figure(left)), _by_seed(figure(right)))
  return {"statement": claim.statement, "metric": metric, "left": left["label"],
          "right": right["label"], "direction": claim.direction,
          **_difference_fields(diff),
          "verdict": stats.verdict(diff, direction=claim.direction)}


def _claim_row(card: Mapping[str, Any], side: Mapping[str, Any],
               claim: Claim) -> Mapping[str, Any]:
  for row in card["rows"]:
    if all(k in row["setting"] and sweep.canonical(row["setting"][k]) ==
           sweep.canonical(v) for k, v in side.items()):
      return row
  wanted = _setting_text(side)
  raise CnnjaxError(f"the card of '{card['id']}' has no row {wanted} for its claim "
                    f"'{claim.statement}'; reproduce the experiment again")


def refresh_stored_cards(cards_dir: str, experiments: Sequence[Experiment]) -> list[str]:
  """Recomputes the statistics of every stored card from its per-seed values.

  Each card's claims are its experiment's current `reproduce.claim`, checked
  against the card's own compare grid; a card whose experiment is no longer
  in `experiments` keeps the claims it has. Nothing trains. Returns the
  paths of the cards written.
  """
  written = []
  ids = {e.id for e in experiments}
  for card in load_cards(cards_dir):
    if card["id"] in ids:
      config = find(experiments, card["id"]).load()
      claims = parse_claims(config, card["id"], dict(card["grid"]["compare"]))
      add_statistics(card, claims)
    else:
      kept = card.get("claims", [])
      add_statistics(card)
      card["claims"] = kept
    written.append(store_card(card, cards_dir))
  return written


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


def _hardware(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Where the runs trained, from their results (never the host name)."""
  device = next((r["device"] for r in results if r.get("device")), None)
  if device is None:
    import jax  # No finished run: describe this machine.

    devices = jax.devices()
    device = {"platform": devices[0].platform, "kind": devices[0].device_kind,
              "count": len(devices), "cpu_count": os.cpu_count()}
  hardware = {k: device.get(k) for k in ("platform", "kind", "count", "cpu_count")}
  hardware["cpu_model"] = cpu_model()
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
