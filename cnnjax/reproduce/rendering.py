"""Cards as markdown: RESULTS.md's generated section and the terminal's tables.

`update_results` renders every stored card (results/cards/) into RESULTS.md
between two marker lines, one heading per dataset folder, with the
hand-written findings of results/notes/ under their card, and leaves the
rest of the file as it is. Measured figures are shown as the mean ± the
half-width of the 95% t-interval over seeds with the number of seeds, and
compared rows as seed-paired differences, computed from the stored
per-seed values, so a card written before intervals existed renders the
same way.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from typing import Any, Mapping, Sequence

from cnnjax.errors import CnnjaxError
from cnnjax.sweep import stats
from cnnjax.sweep.summary import format_p
from cnnjax.reproduce.cards import (card_file_name, load_cards, plain_text,
                                    row_differences, write_atomically)
from cnnjax.reproduce.planning import Plan

BEGIN_MARKER = "<!-- BEGIN cnnjax reproduce -->"
END_MARKER = "<!-- END cnnjax reproduce -->"
INTRO = ("The cards below are written by `cnnjax reproduce` from the stored "
         "cards in results/cards/ (hand-written findings: results/notes/); "
         "edit outside the markers only.")


# --------------------------------------------------------------------------
# Figures


def format_value(metric: str, value: float | None) -> str:
  """Accuracies in percent with one decimal, other figures with 3 decimals."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "—"
  if "accuracy" in metric:
    return f"{100 * value:.1f}"
  return f"{value:.3f}"


def metric_label(metric: str) -> str:
  return f"{metric} (%)" if "accuracy" in metric else metric


def format_measured(metric: str, pooled: Mapping[str, Any] | None, *,
                    unit: str = "") -> str:
  """'93.8 ± 2.8 (n=3)': the mean ± the half-width of its 95% t-interval
  over the n seeds; '93.8 (n=1)' for one seed, which has no interval.

  The interval is computed from the per-seed values, so cards stored before
  they held one render alike. `unit` follows the mean ('93.8% ± 2.8 (n=3)').
  """
  if not pooled or pooled.get("mean") is None:
    return "—"
  text = format_value(metric, pooled["mean"]) + unit
  values = pooled.get("values")
  if values is None:
    return text
  spread = stats.interval(values)
  if math.isfinite(spread["half_width"]):
    text += " ± " + format_value(metric, spread["half_width"])
  return text + f" (n={len(values)})"


def _signed(metric: str, value: float) -> str:
  """A difference with its sign: '+1.8', '-0.4' (points for accuracies)."""
  return ("-" if value < 0 else "+") + format_value(metric, abs(value))


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


def _primary_row(card: Mapping[str, Any]) -> Mapping[str, Any] | None:
  """The row of the experiment's own setting (None when no row finished)."""
  rows = card["rows"]
  return rows[card.get("primary_row", 0)] if rows else None


# --------------------------------------------------------------------------
# One card


def _measured_table(card: Mapping[str, Any]) -> list[str]:
  """Published vs measured: the headline metric and the other published ones."""
  rows = card["rows"]
  row = _primary_row(card)
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
    cells = [_cell(plain_text(row["setting"][k])) for k in keys]
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


def _differences_table(card: Mapping[str, Any]) -> list[str]:
  """Each compared row minus the first, in the headline metric, paired by seed."""
  rows, metric = card["rows"], card["metric"]
  keys = list(card["grid"]["compare"])
  unit = ", in percentage points" if "accuracy" in metric else ""
  lines = [f"Seed-paired differences to {rows[0]['label'] or 'the first row'} "
           f"({metric}{unit}; each row minus the first over the seeds both "
           "have, with the 95% t-interval and the paired t-test's p-value):", "",
           "| " + " | ".join([_cell(k) for k in keys] + ["paired seeds", "difference",
                                                        "95% CI", "p"]) + " |",
           "|" + "|".join("---" if i < len(keys) else "---:"
                          for i in range(len(keys) + 4)) + "|"]
  for row, diff in zip(rows[1:], row_differences(card)):
    n = diff["n"]
    cells = [_cell(plain_text(row["setting"][k])) for k in keys]
    cells.append(str(n))
    cells.append("—" if n == 0 else _signed(metric, diff["mean"]))
    cells.append(f"n={n}, no interval" if diff["ci_low"] is None else
                 f"[{_signed(metric, diff['ci_low'])}, {_signed(metric, diff['ci_high'])}]")
    cells.append(format_p(diff["p_value"]))
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _claim_lines(card: Mapping[str, Any]) -> list[str]:
  """One line per `reproduce.claim`: its verdict and the numbers behind it."""
  claims = card.get("claims") or []
  if not claims:
    return []
  metrics = list(dict.fromkeys(c["metric"] for c in claims))
  lines = [f"Claims, tested on {', '.join(metrics)} with the seed-paired "
           "difference of the two rows (left minus right) and its 95% t-interval:"]
  for claim in claims:
    # A paragraph each: a list here would merge with the facts' list below.
    lines += ["", f"Claim `{claim['statement']}`: {claim_text(claim)}."]
  return lines


def claim_text(claim: Mapping[str, Any]) -> str:
  """'holds at this budget (+1.8 points, 95% CI [+0.9, +2.7], paired over 3
  seeds, p=0.01)', or why the claim cannot be told."""
  metric, n, verdict = claim["metric"], claim["n"], claim["verdict"]
  unit = " points" if "accuracy" in metric else ""
  if n == 0:
    return "cannot be tested: no seed finished both rows"
  mean = _signed(metric, claim["mean"]) + unit
  if verdict == "one seed":
    return f"cannot be tested with one seed ({mean} on seed {claim['seeds'][0]} alone)"
  p = format_p(claim["p_value"])
  p = p if p.startswith("<") else f"={p}"
  if claim["std"] == 0 and claim["mean"] == 0:
    return (f"unresolved at this budget (the rows score the same on each of the "
            f"{n} paired seeds, p{p})")
  if claim["ci_low"] is None:
    return f"unresolved at this budget ({mean}, no interval, paired over {n} seeds)"
  ci = (f"95% CI [{_signed(metric, claim['ci_low'])}, "
        f"{_signed(metric, claim['ci_high'])}]")
  if verdict == "unresolved":
    ci += " contains 0"
  return f"{verdict} at this budget ({mean}, {ci}, paired over {n} seeds, p{p})"


def _pooling_sentence(card: Mapping[str, Any]) -> str:
  seeds = card["seeds"]
  seed_text = (f"seed {seeds[0]} (one seed: no interval)" if len(seeds) == 1
               else "mean ± half-width of the 95% t-interval over seeds "
               f"{', '.join(map(str, seeds))} (n-1 degrees of freedom; n: the "
               "seeds that finished)")
  average = card["grid"]["average_over"]
  if not average:
    return f"Measured: {seed_text}."
  settings = " x ".join(f"{k}={','.join(map(str, v))}" for k, v in average.items())
  count = math.prod(len(v) for v in average.values())
  sentence = (f"Measured: {seed_text}; each seed's figure is the mean of its "
              f"{count} runs over {settings}")
  row = _primary_row(card)
  folds = (row or {}).get("metric") and row["metric"].get("folds")
  if folds and folds.get("mean") is not None:
    metric = card["metric"]
    sentence += (f" (spread between them: {format_value(metric, folds['min'])} to "
                 f"{format_value(metric, folds['max'])}, std "
                 f"{format_value(metric, folds['std'])})")
  return sentence + "."


def _facts(card: Mapping[str, Any]) -> list[str]:
  """The card's bullet list: notes, failures, hardware, software, time, command."""
  lines = []
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
  return lines


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
    lines += ["", *_compare_table(card), "", *_differences_table(card)]
  claims = _claim_lines(card)
  if claims:
    lines += ["", *claims]
  lines += ["", *_facts(card)]
  text = "\n".join(lines) + "\n"
  if notes_dir:
    path = os.path.join(notes_dir, card_file_name(card["id"]) + ".md")
    if os.path.exists(path):
      with open(path) as f:
        text += "\n" + f.read().strip("\n") + "\n"
  return text


# --------------------------------------------------------------------------
# RESULTS.md


def render_results(cards: Sequence[Mapping[str, Any]], *,
                   notes_dir: str | None = None) -> str:
  """The generated part of RESULTS.md: the cards under one heading per dataset folder."""
  parts = [INTRO, ""]
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
  write_atomically(results_path, text)
  return text


# --------------------------------------------------------------------------
# The command line's tables


def summary_line(card: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
  """(id, published, measured, runs, wall time) of a card."""
  metric = card["metric"]
  rows = card["rows"]
  row = _primary_row(card)
  measured = format_measured(metric, row and row["metric"],
                             unit="%" if "accuracy" in metric else "")
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
