"""The outcome of a sweep: statistics over the seeds of each setting and
seed-paired differences between settings, written as summary.csv,
differences.csv, summary.md, summary.json and summary.png (bars with their
95% t-intervals and the seeds as dots).

A few seeds are a small sample, so every mean comes with its t-interval
(cnnjax/sweep/stats.py) and the number of seeds behind it; settings are
compared seed by seed, because runs with the same seed share their
initialization and data order.
"""

from __future__ import annotations

import csv
import io
import dataclasses
import math
import os
from typing import Any, Sequence

from cnnjax.errors import CnnjaxError
from cnnjax.runs import files
from cnnjax.sweep import stats

# The columns of differences.csv after the slug and the grid keys.
DIFFERENCE_COLUMNS = ("reference", "metric", "num_paired_seeds", "seeds", "mean",
                      "std", "ci_low", "ci_high", "p_value")


def _is_accuracy(metric: str) -> bool:
  return "accuracy" in metric


@dataclasses.dataclass
class Summary:
  """The sweep's outcome: one row per setting, one entry per run.

  `rows[i]` holds 'slug', the grid keys with the setting's values,
  'num_seeds' (runs finished), '<metric>_mean', '_std' (sample std, ddof=1;
  0 for one seed), '_min', '_max', '_ci_low' and '_ci_high' (the 95%
  t-interval of the mean; NaN for fewer than 2 seeds) of every summarized
  metric over the seeds, and 'wall_time_s_mean'. `runs[j]` holds 'setting'
  ({key: value}), 'slug', 'seed', 'workdir', 'status' ('done': finished
  before, 'trained', 'failed'), 'error' (the failure's message or None)
  and 'result' (result.json or None). `differences` compares every setting
  with the first, seed by seed.
  """
  keys: list[str]
  metrics: list[str]
  seeds: list[int]
  rows: list[dict[str, Any]]
  runs: list[dict[str, Any]]
  files: dict[str, str] = dataclasses.field(default_factory=dict)
  confidence: float = stats.CONFIDENCE

  @property
  def failed(self) -> list[dict[str, Any]]:
    return [r for r in self.runs if r["status"] == "failed"]

  def count(self, status: str) -> int:
    """How many runs have `status` ('done', 'trained' or 'failed')."""
    return sum(r["status"] == status for r in self.runs)

  def seed_values(self, metric: str) -> list[list[float]]:
    """Per setting (row order), the metric's final value of each finished seed."""
    return [list(by_seed.values()) for by_seed in self.values_by_seed(metric)]

  def values_by_seed(self, metric: str) -> list[dict[int, float]]:
    """Per setting (row order), {seed: the metric's final value}."""
    by_slug: dict[str, dict[int, float]] = {row["slug"]: {} for row in self.rows}
    for r in self.runs:
      if r["result"] is not None and metric in r["result"]["final"]:
        by_slug[r["slug"]][r["seed"]] = float(r["result"]["final"][metric])
    return [by_slug[row["slug"]] for row in self.rows]

  @property
  def differences(self) -> list[dict[str, Any]]:
    """Every setting after the first minus the first, per metric, paired by seed.

    Each entry holds 'slug', the grid keys, 'reference' (the first slug),
    'metric', 'num_paired_seeds', 'seeds', 'mean', 'std' (of the
    differences), 'ci_low', 'ci_high' (the t-interval of the mean
    difference; NaN for fewer than 2 paired seeds) and 'p_value' (the
    paired t-test's, two-sided). Empty with fewer than 2 settings.
    """
    if len(self.rows) < 2:
      return []
    reference = self.rows[0]
    out = []
    for metric in self.metrics:
      by_seed = self.values_by_seed(metric)
      for row, values in zip(self.rows[1:], by_seed[1:]):
        diff = stats.paired_difference(values, by_seed[0], self.confidence)
        out.append({"slug": row["slug"], **{k: row[k] for k in self.keys},
                    "reference": reference["slug"], "metric": metric,
                    "num_paired_seeds": diff["n"], "seeds": diff["seeds"],
                    "mean": diff["mean"], "std": diff["std"],
                    "ci_low": diff["low"], "ci_high": diff["high"],
                    "p_value": diff["p_value"]})
    return out

  def to_markdown(self) -> str:
    """The settings table (each metric as mean ± the half-width of its
    t-interval), then the seed-paired differences to the first setting,
    each with a sentence on what it shows."""
    percent = round(100 * self.confidence)
    seeds = ", ".join(map(str, self.seeds))
    parts = [self.settings_table(), "",
             f"Mean ± half-width of the {percent}% t-interval over seeds {seeds} "
             "(n-1 degrees of freedom; 'seeds' is n; one seed has no interval); "
             "accuracies in percent; time: mean wall-clock seconds of a run."]
    if len(self.rows) > 1:
      first = self.rows[0]["slug"]
      parts += ["", f"Difference to {first}, paired by seed:", "",
                self.differences_table(), "",
                f"Each setting minus {first} over the seeds both finished ('paired "
                f"seeds'): the mean difference, its {percent}% t-interval and the "
                "two-sided paired t-test's p-value; accuracies in percentage points."]
    return "\n".join(parts)

  def settings_table(self) -> str:
    """A markdown table: the settings, the seeds, each metric with its interval."""
    header = list(self.keys) or ["setting"]
    header += ["seeds"] + [f"{m} (%)" if _is_accuracy(m) else m
                           for m in self.metrics] + ["time (s)"]
    lines = [_header_lines(header, max(len(self.keys), 1))]
    for row in self.rows:
      cells = [_cell(row[k]) for k in self.keys] or [row["slug"]]
      cells.append(str(row["num_seeds"]))
      for m in self.metrics:
        cells.append(_mean_cell(m, row, row["num_seeds"]))
      time_mean = row["wall_time_s_mean"]
      cells.append("n/a" if math.isnan(time_mean) else f"{time_mean:.1f}")
      lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

  def differences_table(self) -> str:
    """A markdown table: per setting and metric, the difference to the first
    setting over the paired seeds, its interval and p-value."""
    names = list(self.keys) or ["setting"]
    percent = round(100 * self.confidence)
    header = names + ["metric", "paired seeds", "difference",
                      f"{percent}% CI", "p"]
    lines = [_header_lines(header, len(names) + 1)]
    for d in self.differences:
      cells = [_cell(d[k]) for k in self.keys] or [d["slug"]]
      scale, digits = (100.0, 2) if _is_accuracy(d["metric"]) else (1.0, 4)
      n = d["num_paired_seeds"]
      mean = "n/a" if n == 0 else f"{scale * d['mean']:+.{digits}f}"
      if n < 2:
        ci = f"n={n}, no interval"
      else:
        ci = (f"[{scale * d['ci_low']:+.{digits}f}, "
              f"{scale * d['ci_high']:+.{digits}f}]")
      cells += [d["metric"], str(n), mean, ci, format_p(d["p_value"])]
      lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _header_lines(header: Sequence[str], left: int) -> str:
  """A table's header and alignment line: the first `left` columns left-aligned."""
  return "\n".join(["| " + " | ".join(header) + " |",
                    "|" + "|".join("---" if i < left else "---:"
                                   for i in range(len(header))) + "|"])


def _mean_cell(metric: str, row: dict[str, Any], n: int) -> str:
  mean, low, high = (row[f"{metric}_{s}"] for s in ("mean", "ci_low", "ci_high"))
  if math.isnan(mean):
    return "n/a"
  scale, digits = (100.0, 2) if _is_accuracy(metric) else (1.0, 4)
  if math.isnan(low) or math.isnan(high):
    return f"{scale * mean:.{digits}f} (n={n}, no interval)"
  return f"{scale * mean:.{digits}f} ± {scale * (high - low) / 2:.{digits}f}"


def format_p(p: float) -> str:
  """A p-value for a table: '0.012', '<0.001', or '—' when undefined."""
  if p is None or not math.isfinite(p):
    return "—"
  if p < 0.001:
    return "<0.001"
  return f"{p:.2g}"


def _cell(value: Any) -> str:
  return str(value).replace("|", "\\|")


def describe(values: Sequence[float]) -> dict[str, float]:
  """Mean, sample std (ddof=1; 0 for one value), min and max of `values`
  (NaN for none): what a sweep row and a result card show of a metric."""
  import numpy as np

  if not values:
    return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
  array = np.asarray(values, dtype=np.float64)
  return {"mean": float(array.mean()),
          "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
          "min": float(array.min()), "max": float(array.max())}


def summarize_settings(keys: Sequence[str], settings: Sequence[dict[str, Any]],
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
      values = [float(r["final"][m]) for r in mine if m in r["final"]]
      spread = stats.interval(values)
      row.update({f"{m}_{name}": v for name, v in describe(values).items()})
      row.update({f"{m}_ci_low": spread["low"], f"{m}_ci_high": spread["high"]})
    row["wall_time_s_mean"] = describe([float(r["wall_time_s"]) for r in mine])["mean"]
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
  """Writes summary.csv (a row per setting), differences.csv (the paired
  differences), summary.md, summary.json (rows, differences and every
  run's final metrics) and summary.png; returns their paths by kind."""
  written = {}
  path = os.path.join(workdir, "summary.csv")
  columns = list(summary.rows[0]) if summary.rows else ["slug"]
  files.write_text(path, _csv_text(columns, summary.rows))
  written["csv"] = path

  path = os.path.join(workdir, "differences.csv")
  columns = ["slug", *summary.keys, *DIFFERENCE_COLUMNS]
  differences = [{**d, "seeds": " ".join(map(str, d["seeds"]))}
                 for d in summary.differences]
  files.write_text(path, _csv_text(columns, differences))
  written["differences"] = path

  path = os.path.join(workdir, "summary.md")
  files.write_text(path, summary.to_markdown() + "\n")
  written["md"] = path

  path = os.path.join(workdir, "summary.json")
  files.write_json(path, _jsonable(summary_record(summary)))
  written["json"] = path

  png = _plot(summary, os.path.join(workdir, "summary.png"))
  if png:
    written["png"] = png
  return written


def summary_record(summary: Summary) -> dict[str, Any]:
  """What summary.json holds: the rows, the differences and every run's
  final metrics (None where a run has none), so that any other statistic
  can be computed from the file alone."""
  runs = [{"slug": r["slug"], "setting": r["setting"], "seed": r["seed"],
           "status": r["status"], "workdir": r.get("workdir"), "error": r.get("error"),
           "final": r["result"]["final"] if r["result"] is not None else None,
           "wall_time_s": r["result"]["wall_time_s"] if r["result"] is not None else None}
          for r in summary.runs]
  return {"keys": summary.keys, "metrics": summary.metrics, "seeds": summary.seeds,
          "confidence": summary.confidence, "rows": summary.rows,
          "differences": summary.differences, "runs": runs}


def _jsonable(value: Any) -> Any:
  """NaN (no interval, no seed) as null, so that the file is strict JSON."""
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return stats.finite_or_none(value)


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
  table = io.StringIO(newline="")
  writer = csv.DictWriter(table, fieldnames=list(columns))
  writer.writeheader()
  for row in rows:
    writer.writerow({k: _csv_value(row[k]) for k in columns})
  return table.getvalue()


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
  rows = summary.rows
  means = np.array([r[f"{metric}_mean"] for r in rows]) * scale
  halves = np.array([(r[f"{metric}_ci_high"] - r[f"{metric}_ci_low"]) / 2
                     for r in rows]) * scale
  positions = np.arange(len(rows))
  fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * len(positions)), 4.5))
  ax.bar(positions, np.nan_to_num(means), color="tab:blue", alpha=0.6, zorder=2)
  # Error bars only where there is an interval: one seed gets none, not ±0.
  shown = np.isfinite(halves)
  if shown.any():
    ax.errorbar(positions[shown], means[shown], yerr=halves[shown], fmt="none",
                ecolor="black", capsize=4, zorder=4)
  for x, values in zip(positions, summary.seed_values(metric)):
    if not values:
      continue
    # The seeds side by side, so that equal values stay visible.
    offsets = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else [0.0]
    ax.scatter(x + np.asarray(offsets), np.asarray(values) * scale, color="black",
               s=14, zorder=3)
  ax.set_xticks(positions)
  ax.set_xticklabels([f"{r['slug']} (n={r['num_seeds']})" for r in rows],
                     rotation=30, ha="right", fontsize=8)
  ax.set_ylabel(f"{metric} (%)" if scale == 100.0 else metric)
  counts = sorted({r["num_seeds"] for r in rows})
  n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
  lone = "; n=1: no interval" if 1 in counts else ""
  ax.set_title(f"mean and {round(100 * summary.confidence)}% t-interval over seeds "
               f"(n={n}; dots: the seeds{lone})", fontsize=10)
  ax.grid(axis="y", alpha=0.3, zorder=0)
  fig.tight_layout()
  # bbox_inches='tight' keeps long labels whole.
  return files.save_figure(fig, path, dpi=100, bbox_inches="tight")
