"""Sweeps: a grid of settings times seeds, resumable, summarized over seeds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from cnnjax import sweep
from cnnjax.cli import main
from cnnjax.errors import CnnjaxError
from conftest import CLI, EXPERIMENTS, REPO, tiny_mnist1d_config

CNN = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")
GRID = {"optimizer.learning_rate": [0.01, "0.003"]}  # Text parses as an override.
SEEDS = (0, 1)
SLUGS = ["learning_rate=0.01", "learning_rate=0.003"]


def _config(**changes):
  return tiny_mnist1d_config(num_steps=20, eval_every=20, checkpoint_every=20,
                             log_every=20, **changes)


def _quiet(line):
  del line


def _run_dirs(root):
  return [os.path.join(root, slug, f"seed_{s}") for slug in SLUGS for s in SEEDS]


def _snapshot(root):
  """metrics.jsonl of every run: (mtime in ns, content)."""
  snapshot = {}
  for d in _run_dirs(root):
    path = os.path.join(d, "metrics.jsonl")
    with open(path) as f:
      snapshot[d] = (os.stat(path).st_mtime_ns, f.read())
  return snapshot


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """A 2 settings x 2 seeds sweep, trained once for the module."""
  root = str(tmp_path_factory.mktemp("sweep"))
  summary = sweep.run(_config(), GRID, SEEDS, workdir=root, progress=_quiet,
                      config_path=CNN)
  return root, summary


def test_sweep_trains_each_setting_and_seed_and_summarizes(swept):
  root, summary = swept
  assert [r["status"] for r in summary.runs] == ["trained"] * 4
  assert [(r["slug"], r["seed"]) for r in summary.runs] == [
      (slug, s) for slug in SLUGS for s in SEEDS]
  results = {}
  for d in _run_dirs(root):
    with open(os.path.join(d, "result.json")) as f:
      results[d] = json.load(f)
    with open(os.path.join(d, "config.json")) as f:
      config = json.load(f)
    assert config["seed"] == results[d]["seed"] == int(d[-1])
    assert results[d]["num_steps"] == 20
    assert f"learning_rate={config['optimizer']['learning_rate']}" in d

  assert [r["optimizer.learning_rate"] for r in summary.rows] == [0.01, 0.003]
  assert summary.metrics == list(results[_run_dirs(root)[0]]["final"])
  assert "test/accuracy" in summary.metrics and "test/loss" in summary.metrics
  for row, slug in zip(summary.rows, SLUGS):
    assert row["slug"] == slug and row["num_seeds"] == 2
    mine = [results[os.path.join(root, slug, f"seed_{s}")] for s in SEEDS]
    for metric in summary.metrics:
      values = np.array([r["final"][metric] for r in mine])
      assert row[f"{metric}_mean"] == pytest.approx(values.mean(), rel=1e-12)
      assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
      assert row[f"{metric}_min"] == values.min()
      assert row[f"{metric}_max"] == values.max()
      # Two seeds: mean ± t_{0.975, 1} * std / sqrt(2), t from a t table.
      half = 12.706204736174707 * values.std(ddof=1) / np.sqrt(2)
      assert (row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]) == pytest.approx(
          (values.mean() - half, values.mean() + half), rel=1e-9, abs=1e-12)
    assert row["wall_time_s_mean"] == pytest.approx(
        np.mean([r["wall_time_s"] for r in mine]))
  # The seeds and the settings really differ.
  losses = [r["final"]["test/loss"] for r in results.values()]
  assert len(set(losses)) == 4

  for name in ("sweep.json", "summary.csv", "differences.csv", "summary.md",
               "summary.json", "summary.png"):
    assert os.path.getsize(os.path.join(root, name)) > 0
  with open(os.path.join(root, "summary.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [float(r["test/loss_mean"]) for r in rows] == [
      r["test/loss_mean"] for r in summary.rows]
  table = open(os.path.join(root, "summary.md")).read()
  first = summary.rows[0]

  def half(metric):
    return (first[f"{metric}_ci_high"] - first[f"{metric}_ci_low"]) / 2

  assert (f"| 0.01 | 2 | {100 * first['test/accuracy_mean']:.2f} ± "
          f"{100 * half('test/accuracy'):.2f} | "
          f"{first['test/loss_mean']:.4f} ± {half('test/loss'):.4f} |") in table
  assert "Difference to learning_rate=0.01, paired by seed:" in table
  assert "| 0.003 | test/loss | 2 |" in table
  with open(os.path.join(root, "sweep.json")) as f:
    record = json.load(f)
  assert record["grid"] == {"optimizer.learning_rate": [0.01, 0.003]}
  assert record["seeds"] == [0, 1] and record["config"] == CNN


def test_rerun_trains_nothing_and_a_missing_result_resumes(swept, tmp_path):
  original_root, original = swept
  root = str(tmp_path / "copy")
  shutil.copytree(original_root, root)  # Keeps mtimes: result after config.
  before = _snapshot(root)

  again = sweep.run(_config(), GRID, SEEDS, workdir=root, progress=_quiet,
                    config_path=CNN)
  assert [r["status"] for r in again.runs] == ["done"] * 4
  assert _snapshot(root) == before
  assert again.rows == [{**r} for r in original.rows]

  # A run checkpointed at its last step but without result.json (killed while
  # writing it) resumes: it trains nothing and reports the same numbers.
  resumed_dir = os.path.join(root, SLUGS[1], "seed_0")
  with open(os.path.join(resumed_dir, "result.json")) as f:
    expected = json.load(f)["final"]
  os.remove(os.path.join(resumed_dir, "result.json"))
  lines = []
  third = sweep.run(_config(), GRID, SEEDS, workdir=root, progress=lines.append,
                    config_path=CNN)
  statuses = {r["workdir"]: r["status"] for r in third.runs}
  assert statuses == {d: "trained" if d == resumed_dir else "done"
                      for d in _run_dirs(root)}
  with open(os.path.join(resumed_dir, "result.json")) as f:
    assert json.load(f)["final"] == expected
  after = _snapshot(root)
  assert {d: v for d, v in after.items() if d != resumed_dir} == {
      d: v for d, v in before.items() if d != resumed_dir}
  assert f"[2/2] {SLUGS[1]}: training seed 0 (seed 1 already done)" in lines


def test_grid_mistakes_are_refused_before_anything_runs(tmp_path):
  workdir = str(tmp_path / "w")
  cases = [
      ({"optimizer.learnig_rate": [0.1]}, "unknown config key "
       "'optimizer.learnig_rate' in the sweep grid; "
       "did you mean 'optimizer.learning_rate'?"),
      ({"seed": [1, 2]}, "'seed' cannot be a grid key"),
      ({"batch_size": []}, "'batch_size' lists no values"),
      ({"batch_size": 50}, "must be a list"),
      ({"batch_size": [50, "50.0"]}, "lists the value 50 of 'batch_size' twice"),
      ({"batch_size": ["big"]}, "expects an integer"),
  ]
  for grid, message in cases:
    with pytest.raises(CnnjaxError) as error:
      sweep.run(_config(), grid, workdir=workdir, progress=_quiet)
    assert message in str(error.value)
  with pytest.raises(CnnjaxError, match="repeat a seed"):
    sweep.run(_config(), {}, seeds=(1, 1), workdir=workdir, progress=_quiet)
  assert not os.path.exists(workdir)


def test_a_different_sweep_in_the_same_workdir_is_refused(swept):
  root, _ = swept
  with open(os.path.join(root, "sweep.json")) as f:
    record = f.read()
  with pytest.raises(CnnjaxError, match="holds a different sweep .its grid is "
                     "optimizer.learning_rate=0.01,0.003, not "
                     "optimizer.learning_rate=0.1."):
    sweep.run(_config(), {"optimizer.learning_rate": [0.1]}, SEEDS,
              workdir=root, progress=_quiet)
  with pytest.raises(CnnjaxError, match="its overrides are"):
    sweep.run(_config(), GRID, SEEDS, workdir=root, progress=_quiet,
              overrides=["optimizer.momentum=0.5"])
  with open(os.path.join(root, "sweep.json")) as f:
    assert f.read() == record


def test_slugs_are_readable_and_distinct():
  assert sweep.setting_slugs(["optimizer.learning_rate", "model.name"],
                             [(0.1, "cnn"), (1e-05, "mlp")]) == [
      "learning_rate=0.1__name=cnn", "learning_rate=1e-05__name=mlp"]
  # Keys with the same last part are named in full.
  assert sweep.setting_slugs(["optimizer.name", "model.name"], [("adam", "cnn")]) == [
      "optimizer.name=adam__model.name=cnn"]
  assert sweep.setting_slugs(["model.stage_sizes"], [((1, 1),), ((),)]) == [
      "stage_sizes=1-1", "stage_sizes=empty"]
  assert sweep.setting_slugs([], [()]) == ["base"]
  # Values that only differ in characters a file name cannot hold, or in
  # case, get a short hash each.
  slugs = sweep.setting_slugs(["dataset.train_split"],
                              [("train[:50%]",), ("train[:50]",), ("Train",), ("train",)])
  assert len(set(s.lower() for s in slugs)) == 4
  assert all(s.startswith("train_split=") and "/" not in s for s in slugs)
  assert slugs[0][:-10] == slugs[1][:-10] == "train_split=train_50"
  long = sweep.setting_slugs(["model.name"], [("x" * 300,)])[0]
  assert len(long) < 140


def test_grid_flags_split_values():
  assert sweep.parse_grid_flag("optimizer.learning_rate=0.1,0.01") == (
      "optimizer.learning_rate", ["0.1", "0.01"])
  assert sweep.parse_grid_flag("model.stage_sizes=(1,1),(2, 2)") == (
      "model.stage_sizes", ["(1,1)", "(2, 2)"])
  assert sweep.parse_grid_flag("dataset.eval_splits=test,validation;test") == (
      "dataset.eval_splits", ["test,validation", "test"])
  assert sweep.parse_grid_flag("model.stage_sizes=1,2;") == (
      "model.stage_sizes", ["1,2"])
  for bad in ("optimizer.learning_rate", "=0.1", "model.name="):
    with pytest.raises(CnnjaxError):
      sweep.parse_grid_flag(bad)


def test_failed_run_is_recorded_and_the_cli_exits_non_zero(tmp_path, capsys):
  workdir = str(tmp_path / "w")
  code = main(["sweep", "--config", CNN, "--grid", "model.name=no_such_model,mnist1d_cnn",
               "--workdir", workdir, "--metric", "test/accuracy",
               "--config.dataset.num_samples=1000", "--config.batch_size=50",
               "--config.num_steps=5", "--config.eval_every=5",
               "--config.checkpoint_every=5", "--config.progress_bar=false"])
  out = capsys.readouterr()
  assert code == 1
  assert "cnnjax: name=no_such_model seed 0 failed:" in out.err
  assert "unknown model" in out.err
  assert "| no_such_model | 0 | n/a | n/a |" in out.out
  assert "| mnist1d_cnn | 1 |" in out.out
  assert "1 run trained, 0 already done, 1 failed." in out.out
  assert os.path.exists(os.path.join(workdir, "name=mnist1d_cnn", "seed_0", "result.json"))
  with open(os.path.join(workdir, "summary.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["num_seeds"] for r in rows] == ["0", "1"]
  assert list(rows[0]) == ["slug", "model.name", "num_seeds", "test/accuracy_mean",
                           "test/accuracy_std", "test/accuracy_min",
                           "test/accuracy_max", "test/accuracy_ci_low",
                           "test/accuracy_ci_high", "wall_time_s_mean"]
  # The first setting failed: nothing to pair its successor with.
  assert "| mnist1d_cnn | test/accuracy | 0 | n/a | n=0, no interval | — |" in out.out


def _metric_logs(workdir):
  return sorted(os.path.join(root, "metrics.jsonl") for root, _, files
                in os.walk(workdir) if "metrics.jsonl" in files)


# About 15-20 s (a CLI sweep of 2 settings x 2 seeds); the sweeps above run in-process: -m slow.
@pytest.mark.slow
def test_cli_sweep_end_to_end(tmp_path, cli_env):
  workdir = str(tmp_path / "cli")
  # 2 settings x 2 seeds; the seeds of a setting train together (vmap).
  args = ["sweep", "--config", CNN, "--grid", "optimizer.learning_rate=0.01,0.003",
          "--seeds", "2", "--vmap-seeds", "--workdir", workdir, "--config.seed=3",
          "--config.dataset.num_samples=1000", "--config.num_steps=10",
          "--config.batch_size=50", "--config.eval_every=10",
          "--config.checkpoint_every=10", "--config.log_every=10",
          "--config.progress_bar=false"]

  def cli(extra):
    return subprocess.run(CLI + extra, env=cli_env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)

  out = cli(args)
  assert out.returncode == 0, out.stderr
  for rate in ("0.01", "0.003"):
    for seed in (3, 4):  # --seeds counts up from config.seed.
      assert os.path.exists(os.path.join(workdir, f"learning_rate={rate}",
                                         f"seed_{seed}", "result.json"))
  assert "| optimizer.learning_rate | seeds | test/accuracy (%) |" in out.stdout
  assert "| 0.01 | 2 |" in out.stdout and "| 0.003 | 2 |" in out.stdout
  assert "4 runs trained, 0 already done, 0 failed." in out.stdout
  assert "one at a time" not in out.stdout
  logs = {p: open(p).read() for p in _metric_logs(workdir)}
  assert len(logs) == 4

  out = cli(args)
  assert out.returncode == 0, out.stderr
  assert "Nothing new was trained: all 4 runs were already done." in out.stdout
  assert {p: open(p).read() for p in _metric_logs(workdir)} == logs

  out = cli(["sweep", "--config", CNN, "--grid", "optimizer.learnig_rate=0.1,0.01",
             "--workdir", str(tmp_path / "bad")])
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "cnnjax: error: unknown config key 'optimizer.learnig_rate' in the sweep grid; "
      "did you mean 'optimizer.learning_rate'?"]


# --------------------------------------------------------------------------
# Intervals and paired differences, from fake runs (no training)


def _fake_runs(tmp_path):
  """3 settings x 3 seeds of made-up results; the last setting has one seed."""
  accuracy = {"lr=0.1": [0.80, 0.82, 0.84], "lr=0.01": [0.85, 0.86, 0.90],
              "lr=0.001": [None, 0.90, None]}
  runs = []
  for (slug, values), rate in zip(accuracy.items(), (0.1, 0.01, 0.001)):
    for seed, value in enumerate(values):
      result = None if value is None else {
          "final": {"test/accuracy": value, "test/loss": 2.0 - value - 0.01 * seed},
          "wall_time_s": 5.0}
      runs.append({"setting": {"optimizer.learning_rate": rate}, "slug": slug,
                   "seed": seed, "workdir": str(tmp_path / slug / f"seed_{seed}"),
                   "status": "failed" if result is None else "trained",
                   "error": "diverged" if result is None else None, "result": result})
  settings = [{"optimizer.learning_rate": r} for r in (0.1, 0.01, 0.001)]
  return sweep.summarize_settings(["optimizer.learning_rate"], settings,
                                  list(accuracy), runs, seeds=[0, 1, 2])


def _strict_json(path):
  def refuse(constant):
    raise ValueError(f"{constant} in {path}")

  with open(path) as f:
    return json.load(f, parse_constant=refuse)


def test_summary_intervals_and_differences_paired_by_seed(tmp_path):
  from scipy import stats as scipy_stats

  summary = _fake_runs(tmp_path)
  first, second, single = summary.rows
  low, high = scipy_stats.t.interval(0.95, 2, loc=0.82, scale=0.02 / np.sqrt(3))
  assert (first["test/accuracy_ci_low"], first["test/accuracy_ci_high"]) == (
      pytest.approx((low, high), rel=1e-12))
  assert single["num_seeds"] == 1 and single["test/accuracy_std"] == 0.0
  assert np.isnan(single["test/accuracy_ci_low"]) and np.isnan(single["test/accuracy_ci_high"])

  by_metric = {(d["slug"], d["metric"]): d for d in summary.differences}
  assert len(by_metric) == 4  # 2 settings after the first x 2 metrics
  d = by_metric["lr=0.01", "test/accuracy"]
  expected = scipy_stats.ttest_rel([0.85, 0.86, 0.90], [0.80, 0.82, 0.84])
  ci = expected.confidence_interval(0.95)
  assert d["reference"] == "lr=0.1" and d["optimizer.learning_rate"] == 0.01
  assert d["num_paired_seeds"] == 3 and d["seeds"] == [0, 1, 2]
  assert d["mean"] == pytest.approx(0.05)
  assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
  assert d["p_value"] == pytest.approx(expected.pvalue, rel=1e-10)
  lone = by_metric["lr=0.001", "test/accuracy"]
  assert lone["num_paired_seeds"] == 1 and lone["seeds"] == [1]
  assert lone["mean"] == pytest.approx(0.08) and np.isnan(lone["ci_low"])

  summary.files = sweep.write_summary(summary, str(tmp_path))
  assert sorted(summary.files) == ["csv", "differences", "json", "md", "png"]
  table = open(summary.files["md"]).read()
  half = 100 * (first["test/accuracy_ci_high"] - first["test/accuracy_ci_low"]) / 2
  assert f"| 0.1 | 3 | 82.00 ± {half:.2f} |" in table
  assert "| 0.001 | 1 | 90.00 (n=1, no interval) |" in table
  assert "±0" not in table and "± 0.00 " not in table
  assert "Difference to lr=0.1, paired by seed:" in table
  assert (f"| 0.01 | test/accuracy | 3 | +5.00 | [{100 * ci.low:+.2f}, "
          f"{100 * ci.high:+.2f}] | {expected.pvalue:.2g} |") in table
  assert "| 0.001 | test/accuracy | 1 | +8.00 | n=1, no interval | — |" in table

  with open(summary.files["differences"]) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["slug", "optimizer.learning_rate", "reference", "metric",
                           "num_paired_seeds", "seeds", "mean", "std", "ci_low",
                           "ci_high", "p_value"]
  assert [(r["slug"], r["metric"], r["num_paired_seeds"], r["seeds"]) for r in rows] == [
      ("lr=0.01", "test/accuracy", "3", "0 1 2"), ("lr=0.001", "test/accuracy", "1", "1"),
      ("lr=0.01", "test/loss", "3", "0 1 2"), ("lr=0.001", "test/loss", "1", "1")]
  assert float(rows[0]["p_value"]) == pytest.approx(expected.pvalue, rel=1e-10)
  with open(summary.files["csv"]) as f:
    assert "test/accuracy_ci_low" in next(csv.reader(f))

  record = _strict_json(summary.files["json"])  # NaN written as null
  assert record["confidence"] == 0.95 and record["seeds"] == [0, 1, 2]
  assert record["rows"][2]["test/accuracy_ci_low"] is None
  assert record["differences"][0]["p_value"] == pytest.approx(expected.pvalue)
  assert len(record["runs"]) == 9
  assert record["runs"][3] == {"slug": "lr=0.01", "setting": {"optimizer.learning_rate": 0.01},
                               "seed": 0, "status": "trained",
                               "workdir": str(tmp_path / "lr=0.01" / "seed_0"),
                               "error": None, "final": {"test/accuracy": 0.85,
                                                        "test/loss": 1.15},
                               "wall_time_s": 5.0}
  assert record["runs"][6]["final"] is None and record["runs"][6]["error"] == "diverged"


def test_one_setting_has_no_differences(tmp_path):
  summary = _fake_runs(tmp_path)
  alone = sweep.Summary(keys=summary.keys, metrics=summary.metrics, seeds=summary.seeds,
                        rows=summary.rows[:1], runs=summary.runs[:3])
  assert alone.differences == []
  assert "paired by seed" not in alone.to_markdown()
  written = sweep.write_summary(alone, str(tmp_path))
  with open(written["differences"]) as f:
    assert len(list(csv.reader(f))) == 1  # The header only.


def test_the_plot_shows_the_first_splits_accuracy():
  assert sweep.plot_metric(["validation/loss", "validation/top5_accuracy",
                            "validation/accuracy", "test/accuracy"]) == "validation/accuracy"
  assert sweep.plot_metric(["test/loss", "test/top5_accuracy"]) == "test/top5_accuracy"
  assert sweep.plot_metric(["test/loss", "validation/accuracy"]) == "test/loss"
  assert sweep.plot_metric([]) is None


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_seeds_trained_together_match_seeds_trained_alone(tmp_path):
  """--vmap-seeds: one vmapped step for both seeds, the same numbers."""
  from cnnjax.train import loop

  base = tiny_mnist1d_config(num_steps=20, eval_every=20, checkpoint_every=10)
  summary = sweep.run(base, {}, seeds=[0, 1], workdir=str(tmp_path / "sweep"),
                      vmap_seeds=True, progress=None)
  assert [r["status"] for r in summary.runs] == ["trained", "trained"]
  for run in summary.runs:
    assert run["result"]["trained_with_seeds"] == [0, 1]
    alone = loop.train_and_evaluate(
        tiny_mnist1d_config(num_steps=20, eval_every=20, checkpoint_every=10,
                            seed=run["seed"]),
        str(tmp_path / f"alone{run['seed']}"))
    for k, v in alone["final"].items():
      assert run["result"]["final"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    # Each seed's workdir is a normal run: `cnnjax train` resumes it alone
    # and finds it finished.
    again = loop.train_and_evaluate(
        tiny_mnist1d_config(num_steps=20, eval_every=20, checkpoint_every=10,
                            seed=run["seed"]), run["workdir"])
    # Its evaluation runs again, unvmapped: equal up to float rounding (on
    # an AMD EPYC the vmapped and the plain loss differ in the 9th digit).
    assert again["final"] == pytest.approx(run["result"]["final"], rel=1e-6)
  assert (summary.rows[0]["test/accuracy_mean"] ==
          pytest.approx(np.mean([r["result"]["final"]["test/accuracy"]
                                 for r in summary.runs])))
