"""The outcome of a sweep: statistics over the seeds of each setting, written
as summary.csv, summary.md and summary.png (bars with the seeds as dots)."""

from __future__ import annotations

import csv
import io
import dataclasses
import math
import os
from typing import Any, Sequence

from cnnjax.errors import CnnjaxError
from cnnjax.runs import files


def _is_accuracy(metric: str) -> bool:
  return "accuracy" in metric


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
      stats = describe([float(r["final"][m]) for r in mine if m in r["final"]])
      row.update({f"{m}_{name}": v for name, v in stats.items()})
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
  """Writes summary.csv, summary.md and summary.png; returns their paths."""
  written = {}
  path = os.path.join(workdir, "summary.csv")
  table = io.StringIO(newline="")
  columns = list(summary.rows[0]) if summary.rows else ["slug"]
  writer = csv.DictWriter(table, fieldnames=columns)
  writer.writeheader()
  for row in summary.rows:
    writer.writerow({k: _csv_value(v) for k, v in row.items()})
  files.write_text(path, table.getvalue())
  written["csv"] = path

  path = os.path.join(workdir, "summary.md")
  seeds = ", ".join(map(str, summary.seeds))
  files.write_text(path, summary.to_markdown() + "\n\n"
                   f"Mean ± sample standard deviation over seeds {seeds}; "
                   "accuracies in percent; time: mean wall-clock seconds of a run.\n")
  written["md"] = path

  png = _plot(summary, os.path.join(workdir, "summary.png"))
  if png:
    written["png"] = png
  return written


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
  # bbox_inches='tight' keeps long labels whole.
  return files.save_figure(fig, path, dpi=100, bbox_inches="tight")
