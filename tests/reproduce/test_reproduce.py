"""`cnnjax reproduce`: discovery, pooled runs, result cards and RESULTS.md."""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import textwrap
import types

import pytest

from cnnjax import config as config_lib
from cnnjax import reproduce
from cnnjax.cli import main
from cnnjax.errors import CnnjaxError
from conftest import EXPERIMENTS

CNN = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")
# The tiny MNIST-1D run of conftest.tiny_mnist1d_config, as experiment-file lines.
TINY = """\
config.dataset.num_samples = 1000
config.batch_size = 50
config.num_steps = 30
config.log_every = 10
config.eval_every = 30
config.checkpoint_every = 30
config.progress_bar = False
config.reproduce.seeds = 1
"""


def write_experiment(root, rel, body="", *, doc="A tiny MNIST-1D run.",
                     tail=""):
  """An experiment file `<root>/experiments/<rel>`: the tiny CNN run + `body`."""
  path = root / "experiments" / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = TINY + textwrap.dedent(body)
  path.write_text(
      f'"""{doc}\n\n    cnnjax reproduce --filter x\n"""\n\n'
      "from cnnjax.config import load_config\n\n\n"
      "def get_config():\n"
      f"  config = load_config({CNN!r})\n"
      "  config.unlock()\n"
      + textwrap.indent(lines, "  ") + "  return config\n" + tail)
  return str(path)


def experiments_of(root):
  return reproduce.discover(str(root / "experiments"))


def read_json(path):
  with open(path) as f:
    return json.load(f)


def result_mtimes(workdir):
  return {os.path.join(d, "result.json"): os.stat(os.path.join(d, "result.json")).st_mtime_ns
          for d, _, files in os.walk(workdir) if "result.json" in files}


# --------------------------------------------------------------------------
# A fake trainer: result.json from a formula, in microseconds


def accuracy_formula(config):
  """The fake test accuracy: fold, seed and model change it in known ways."""
  return (0.5 + 0.1 * config.dataset.fold + 0.01 * config.seed
          + (0.2 if config.model.name == "mnist1d_mlp" else 0.0))


@pytest.fixture
def fake_training(monkeypatch):
  """Replaces train_and_evaluate; returns the list of configs it trained."""
  from cnnjax.train import loop

  trained = []

  def fake(config, workdir, *, config_path=""):
    config = config_lib.apply_smoke(copy.deepcopy(config))
    if config.model.name == "no_such_model":
      raise CnnjaxError("unknown model 'no_such_model'")
    trained.append(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(json.loads(config.to_json_best_effort()), f)
    accuracy = accuracy_formula(config)
    result = {"experiment": config_path, "num_steps": config.num_steps,
              "seed": config.seed,
              "final": {"test/accuracy": accuracy, "test/loss": 2.0 - accuracy,
                        "train/loss": 0.25 + config.seed},
              "wall_time_s": 10.0 + config.seed, "smoke": bool(config.smoke),
              "device": {"platform": "cpu", "kind": "cpu", "count": 1,
                         "host": "secret-host-name", "cpu_count": 2},
              "versions": {"jax": "0.10.2", "flax": "0.12.8"}}
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f)
    return result

  monkeypatch.setattr(loop, "train_and_evaluate", fake)
  return trained


# --------------------------------------------------------------------------
# Discovery and filters


def test_discovery_skips_bases_and_expands_variants(tmp_path):
  write_experiment(tmp_path, "mnist1d/cnn_tiny.py", doc="Tiny CNN: the first line,\n"
                   "continued here.")
  write_experiment(tmp_path, "mnist1d/base_shared.py")  # Reproducible, but a base.
  write_experiment(tmp_path, "mnist1d/_helpers.py")
  write_experiment(tmp_path, "mnist1d/no_target.py", "config.reference.metric = ''\n")
  write_experiment(tmp_path, "claims/compare_only.py", """\
      config.reference.metric = ''
      config.reproduce.compare = ('model.name=mnist1d_cnn,mnist1d_mlp',)
      """)
  write_experiment(tmp_path, "family/folds.py", tail=textwrap.dedent("""

      def get_variants():
        return {"second": {"dataset.fold": 2, "reference.value": 0.5},
                "first": {"dataset.fold": 1, "model.width": 7}}
      """))
  (tmp_path / "experiments" / "mnist1d" / "notes.txt").write_text("not python")

  found = experiments_of(tmp_path)
  assert [e.id for e in found] == ["claims/compare_only", "family/folds/first",
                                   "family/folds/second", "mnist1d/cnn_tiny"]
  first, second = found[1], found[2]
  assert first.variant == "first" and first.changes == {"dataset.fold": 1, "model.width": 7}
  assert first.path == second.path == str(tmp_path / "experiments" / "family" / "folds.py")
  config = second.load()
  assert config.dataset.fold == 2 and config.reference.value == 0.5
  assert config.num_steps == 30 and config.reference.metric == "test/accuracy"
  assert first.load().model.width == 7 and first.load().dataset.fold == 1
  with pytest.raises(AttributeError):  # Locked: a misspelt key cannot slip in.
    config.no_such_key = 1
  config.num_steps = 99  # A copy: the next load is untouched.
  assert second.load().num_steps == 30

  # A variant that names an unknown key is refused with the key's name.
  write_experiment(tmp_path, "family/bad.py", tail=textwrap.dedent("""

      def get_variants():
        return {"v": {"optimizer.learnig_rate": 0.1}}
      """))
  with pytest.raises(CnnjaxError, match="unknown config key 'optimizer.learnig_rate'; "
                     "did you mean 'optimizer.learning_rate'"):
    experiments_of(tmp_path)


def test_filters_are_case_insensitive_substrings(tmp_path):
  ids = ["cifar10/resnet20", "cifar10/resnet56", "mnist1d/cnn", "mr/kim_cnn_rand"]
  experiments = [reproduce.Experiment(i, f"experiments/{i}.py") for i in ids]
  assert [e.id for e in reproduce.select(experiments, ["CIFAR10"])] == ids[:2]
  assert [e.id for e in reproduce.select(experiments, ["resnet56", "cnn"])] == [
      "cifar10/resnet56", "mnist1d/cnn", "mr/kim_cnn_rand"]
  assert reproduce.select(experiments, []) == experiments
  with pytest.raises(CnnjaxError, match=r"no experiment id contains 'resnet2O' "
                     r"\(close ones: cifar10/resnet20"):
    reproduce.select(experiments, ["resnet2O"])
  # One filter that matches nothing is an error even when another matches.
  with pytest.raises(CnnjaxError, match="'mnsit1d'"):
    reproduce.select(experiments, ["mnist1d", "mnsit1d"])


# --------------------------------------------------------------------------
# Cards from (fake) runs


def test_pooled_folds_compare_rows_and_seeds(tmp_path, fake_training):
  write_experiment(tmp_path, "kim/folds.py", """\
      config.reference.value = 0.8
      config.reference.others = ('test/loss=1.25',)
      config.reproduce.average_over = ('dataset.fold=0,1',)
      config.reproduce.compare = ('model.name=mnist1d_cnn,mnist1d_mlp',)
      config.reproduce.note = 'Two folds instead of ten'
      """, doc="Kim-style folds, compared over two models.")
  experiment, = experiments_of(tmp_path)
  workdir = str(tmp_path / "runs")
  card = reproduce.reproduce_one(experiment, workdir=workdir, seeds=2)

  # 2 folds x 2 models x 2 seeds, each in <workdir>/<id>/<setting>/seed_<s>.
  assert len(fake_training) == 8
  assert sorted((c.dataset.fold, c.model.name, c.seed) for c in fake_training) == sorted(
      (f, m, s) for f in (0, 1) for m in ("mnist1d_cnn", "mnist1d_mlp") for s in (0, 1))
  assert card == read_json(os.path.join(workdir, "kim", "folds", "card.json"))
  assert card["seeds"] == [0, 1]
  assert card["grid"] == {"average_over": {"dataset.fold": ["0", "1"]},
                          "compare": {"model.name": ["mnist1d_cnn", "mnist1d_mlp"]}}
  assert [row["label"] for row in card["rows"]] == ["name=mnist1d_cnn", "name=mnist1d_mlp"]
  assert card["primary_row"] == 0  # The config's own model.name.

  for row, model in zip(card["rows"], ("mnist1d_cnn", "mnist1d_mlp")):
    # The numbers read back from every run's result.json.
    per_run = {}
    for fold in (0, 1):
      for seed in (0, 1):
        path = os.path.join(workdir, "kim", "folds", f"fold={fold}__name={model}",
                            f"seed_{seed}", "result.json")
        per_run[fold, seed] = read_json(path)["final"]["test/accuracy"]
    seed_means = [(per_run[0, s] + per_run[1, s]) / 2 for s in (0, 1)]
    metric = row["metric"]
    assert row["runs"] == 4 and row["failed"] == 0
    assert metric["values"] == pytest.approx(seed_means, abs=1e-12)
    assert metric["mean"] == pytest.approx(statistics.fmean(seed_means), abs=1e-12)
    assert metric["std"] == pytest.approx(statistics.stdev(seed_means), abs=1e-12)
    assert metric["std"] == pytest.approx(0.01 / 2 ** 0.5, abs=1e-12)
    # Two seeds: mean ± t_{0.975, 1} * std / sqrt(2), t from a t table.
    half = 12.706204736174707 * metric["std"] / 2 ** 0.5
    assert metric["ci_half_width"] == pytest.approx(half, rel=1e-9)
    assert (metric["ci_low"], metric["ci_high"]) == pytest.approx(
        (metric["mean"] - half, metric["mean"] + half), rel=1e-9)
    assert metric["confidence"] == 0.95
    fold_means = [(per_run[f, 0] + per_run[f, 1]) / 2 for f in (0, 1)]
    assert metric["folds"]["labels"] == ["fold=0", "fold=1"]
    assert metric["folds"]["values"] == pytest.approx(fold_means, abs=1e-12)
    assert metric["folds"]["std"] == pytest.approx(0.1 / 2 ** 0.5, abs=1e-12)
    assert (metric["folds"]["min"], metric["folds"]["max"]) == pytest.approx(
        (min(fold_means), max(fold_means)))
    assert row["others"]["test/loss"]["mean"] == pytest.approx(2.0 - metric["mean"])
    assert row["train"] == {"train/loss": pytest.approx(0.75)}
    assert row["wall_time_s"] == {"median": 10.5, "total": 42.0}
  assert card["rows"][1]["metric"]["mean"] == pytest.approx(
      card["rows"][0]["metric"]["mean"] + 0.2)
  # The MLP scores 0.2 above the CNN on every seed (the fake's formula).
  difference, = card["differences"]
  assert (difference["n"], difference["mean"]) == (2, pytest.approx(0.2))

  assert card["reference"] == {"metric": "test/accuracy", "value": 0.8,
                               "source": card["reference"]["source"],
                               "others": {"test/loss": 1.25}}
  assert card["title"] == "Kim-style folds, compared over two models."
  assert card["hardware"]["platform"] == "cpu" and card["hardware"]["cpu_count"] == 2
  assert "secret-host-name" not in json.dumps(card)
  assert card["versions"] == {"jax": "0.10.2", "flax": "0.12.8"}
  assert card["wall_time_s"] == 84.0 and card["failed"] == [] and not card["smoke"]
  assert card["command"] == "cnnjax reproduce --filter kim/folds --seeds 2"

  text = reproduce.render_card(card)
  assert text.startswith("### kim/folds: Kim-style folds, compared over two models.\n")
  mean = card["rows"][0]["metric"]["mean"]
  half = card["rows"][0]["metric"]["ci_half_width"]
  assert (f"| test/accuracy (%) | 80.0 | {100 * mean:.1f} ± {100 * half:.1f} (n=2) |"
          in text)
  assert "| test/loss | 1.250 |" in text
  assert ("Measured: mean ± half-width of the 95% t-interval over seeds 0, 1 "
          "(n-1 degrees of freedom; n: the seeds that finished); each seed's figure "
          "is the mean of its 2 runs over dataset.fold=0,1") in text
  assert "| model.name | runs | test/accuracy (%) |" in text
  assert "| mnist1d_mlp | 4 |" in text
  assert "| mnist1d_mlp | 2 | +20.0 | [+20.0, +20.0] | <0.001 |" in text
  assert "- Note: Two folds instead of ten." in text
  assert "`cnnjax reproduce --filter kim/folds --seeds 2`" in text


def test_failed_runs_are_listed_and_the_card_still_renders(tmp_path, fake_training):
  write_experiment(tmp_path, "x/broken.py", """\
      config.reproduce.compare = ('model.name=mnist1d_cnn,no_such_model',)
      """)
  experiment, = experiments_of(tmp_path)
  card = reproduce.reproduce_one(experiment, workdir=str(tmp_path / "runs"))
  assert card["failed"] == [{"setting": "name=no_such_model", "seed": 0,
                             "error": "unknown model 'no_such_model'"}]
  assert [(r["runs"], r["failed"]) for r in card["rows"]] == [(1, 0), (0, 1)]
  assert card["rows"][1]["metric"] is None
  text = reproduce.render_card(card)
  assert "| no_such_model | 0 (1 failed) | — |" in text
  # One seed against none: no difference to compute.
  assert "| no_such_model | 0 | — | n=0, no interval | — |" in text
  assert "- Failed: name=no_such_model seed 0: unknown model 'no_such_model'" in text


def test_analysis_figures_join_their_rows(tmp_path, fake_training, monkeypatch):
  calls = []

  def run_analysis(name, runs):
    calls.append((name, runs))
    return {r["slug"]: {"params": 100 + len(r["slug"])} for r in runs}

  module = types.ModuleType("cnnjax.reproduce.analyses")
  module.run_analysis = run_analysis
  monkeypatch.setitem(sys.modules, "cnnjax.reproduce.analyses", module)
  write_experiment(tmp_path, "claims/count.py", """\
      config.reproduce.compare = ('model.name=mnist1d_cnn,mnist1d_mlp',)
      config.reproduce.analysis = 'params'
      """)
  experiment, = experiments_of(tmp_path)
  card = reproduce.reproduce_one(experiment, workdir=str(tmp_path / "runs"))
  (name, runs), = calls
  assert name == "params"
  assert [(r["slug"], r["seed"], r["setting"]) for r in runs] == [
      ("name=mnist1d_cnn", 0, {"model.name": "mnist1d_cnn"}),
      ("name=mnist1d_mlp", 0, {"model.name": "mnist1d_mlp"})]
  assert runs[1]["result"]["final"]["test/accuracy"] == pytest.approx(0.7)
  assert os.path.exists(os.path.join(runs[0]["workdir"], "result.json"))
  assert [row["analysis"] for row in card["rows"]] == [{"params": 116}, {"params": 116}]
  assert "| model.name | runs | test/accuracy (%) | final train/loss | params |" in (
      reproduce.render_card(card))


# --------------------------------------------------------------------------
# RESULTS.md


def make_card(experiment_id, accuracy, **changes):
  """A finished one-row card, as reproduce_one builds it."""
  card = {
      "id": experiment_id, "title": f"Title of {experiment_id}",
      "experiment": f"experiments/{experiment_id}.py", "variant": None,
      "reference": {"metric": "test/accuracy", "value": 0.9125, "source": "A paper",
                    "others": {}},
      "metric": "test/accuracy", "note": "", "smoke": False, "seeds": [0, 1],
      "grid": {"average_over": {}, "compare": {}}, "primary_row": 0,
      "rows": [{"label": "", "setting": {}, "slugs": ["base"], "runs": 2, "failed": 0,
                "metric": {"name": "test/accuracy", "mean": accuracy, "std": 0.004,
                           "min": accuracy - 0.003, "max": accuracy + 0.003,
                           "values": [accuracy - 0.003, accuracy + 0.003],
                           "seeds": [0, 1]},
                "others": {}, "train": {}, "analysis": {},
                "wall_time_s": {"median": 30.0, "total": 60.0}, "run_values": []}],
      "failed": [], "init_from": None, "analysis": "", "analysis_error": None,
      "hardware": {"platform": "gpu", "kind": "NVIDIA H100", "count": 1,
                   "cpu_count": 16, "cpu_model": "AMD EPYC"},
      "versions": {"jax": "0.10.2"}, "date": "2026-11-22", "wall_time_s": 60.0,
      "command": f"cnnjax reproduce --filter {experiment_id}"}
  card.update(changes)
  return card


def test_results_md_section_is_regenerated_and_the_rest_kept(tmp_path):
  results = tmp_path / "RESULTS.md"
  before = "# Results\r\n\r\nHand-written text  \n\n"
  after = "\n## Older results\n\ntrailing text without a final newline"
  results.write_bytes((before + reproduce.BEGIN_MARKER + "\nstale generated text\n"
                       + reproduce.END_MARKER + after).encode())
  cards_dir, notes_dir = reproduce.results_dirs(str(results))
  assert cards_dir == str(tmp_path / "results" / "cards")
  assert notes_dir == str(tmp_path / "results" / "notes")

  reproduce.store_card(make_card("mnist1d/cnn", 0.938), cards_dir)
  os.makedirs(notes_dir)
  with open(os.path.join(notes_dir, "mnist1d__cnn.md"), "w") as f:
    f.write("Findings: seed 2 settles at 90.6%.\n")
  reproduce.update_results(str(results))
  text = results.read_bytes().decode()
  assert text.startswith(before + reproduce.BEGIN_MARKER + "\n")
  assert text.endswith("\n" + reproduce.END_MARKER + after)
  assert "stale generated text" not in text
  assert "## mnist1d\n\n### mnist1d/cnn: Title of mnist1d/cnn\n" in text
  # Seeds at 93.5% and 94.1%: std 0.42 points, so the 95% interval is
  # ± 12.706 * 0.3 = ± 3.8 points with 2 seeds.
  assert "| test/accuracy (%) | 91.2 | 93.8 ± 3.8 (n=2) |" in text
  assert ("Measured: mean ± half-width of the 95% t-interval over seeds 0, 1 (n-1 "
          "degrees of freedom; n: the seeds that finished). Published: A paper.") in text
  assert "- Hardware: 1 x NVIDIA H100 (gpu), 16 CPU cores (AMD EPYC)." in text
  assert "- Date: 2026-11-22 (UTC); wall time 60 s for 2 runs, 30 s per run (median)." in text
  assert "- Command: `cnnjax reproduce --filter mnist1d/cnn`\n\nFindings: seed 2" in text

  # A second card, from another run of the command: both are shown, sorted
  # by id and grouped by dataset folder; the first card's text is unchanged.
  first_card_text = reproduce.render_card(make_card("mnist1d/cnn", 0.938),
                                          notes_dir=notes_dir)
  reproduce.store_card(make_card("cifar10/resnet20", 0.912, title=""), cards_dir)
  reproduce.update_results(str(results))
  text = results.read_bytes().decode()
  assert text.startswith(before + reproduce.BEGIN_MARKER + "\n")
  assert text.endswith("\n" + reproduce.END_MARKER + after)
  assert first_card_text in text
  assert text.index("## cifar10\n\n### cifar10/resnet20\n") < text.index("## mnist1d")
  assert len(os.listdir(cards_dir)) == 2

  # No markers: the section is appended at the end, the file kept before it.
  plain = tmp_path / "plain" / "RESULTS.md"
  plain.parent.mkdir()
  plain.write_text("# Results\n\nOnly prose.")
  reproduce.store_card(make_card("mr/kim", 0.76), str(tmp_path / "plain" / "results" / "cards"))
  reproduce.update_results(str(plain))
  text = plain.read_text()
  assert text.startswith("# Results\n\nOnly prose.\n\n" + reproduce.BEGIN_MARKER + "\n"
                         + reproduce.INTRO + "\n\n## mr\n")
  assert text.endswith(reproduce.END_MARKER + "\n")


def test_formatting_of_published_and_measured_figures():
  assert reproduce.format_value("test/accuracy", 0.9125) == "91.2"
  assert reproduce.format_value("test/auc", 0.98349) == "0.983"
  assert reproduce.format_value("test/auc", None) == "—"
  assert reproduce.format_measured("test/auc", {"mean": 0.9, "std": 0.0, "values": [0.9]}) == (
      "0.900 (n=1)")  # One seed: no interval, never ± 0.
  card = make_card("m/x", 0.5)
  card["reference"]["value"] = 0.0  # No published figure: a dash.
  assert reproduce.format_published(card) == "—"
  assert reproduce.summary_line(card) == ("m/x", "—", "50.0% ± 3.8 (n=2)", "2", "60 s")


# --------------------------------------------------------------------------
# Real runs: pooled settings, a rerun, and a transfer chain


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 2-setting pooled experiment, then a transfer from its first run."""
  root = tmp_path_factory.mktemp("repro")
  write_experiment(root, "mnist1d/pooled.py", """\
      config.reproduce.average_over = ('optimizer.learning_rate=0.01,0.003',)
      """)
  write_experiment(root, "mnist1d/transfer.py", """\
      config.reproduce.init_from_experiment = 'mnist1d/pooled'
      # So small a step that the network stays the source's: the same accuracy.
      config.optimizer.learning_rate = 1e-9
      """)
  experiments = experiments_of(root)
  workdir = str(root / "runs")
  pooled = reproduce.reproduce_one(experiments[0], workdir=workdir,
                                   experiments=experiments)
  source_mtimes = result_mtimes(os.path.join(workdir, "mnist1d", "pooled"))
  transfer = reproduce.reproduce_one(experiments[1], workdir=workdir,
                                     experiments=experiments)
  return root, workdir, experiments, pooled, transfer, source_mtimes


def test_real_runs_pool_over_settings(trained):
  _, workdir, _, pooled, _, _ = trained
  runs = os.path.join(workdir, "mnist1d", "pooled")
  values = [read_json(os.path.join(runs, f"learning_rate={lr}", "seed_0", "result.json"))
            ["final"]["test/accuracy"] for lr in ("0.01", "0.003")]
  assert len(set(values)) == 2  # The two settings really differ.
  row, = pooled["rows"]
  assert row["runs"] == 2 and row["slugs"] == ["learning_rate=0.01", "learning_rate=0.003"]
  assert row["metric"]["mean"] == pytest.approx(sum(values) / 2, abs=1e-12)
  assert row["metric"]["folds"]["values"] == pytest.approx(values, abs=1e-12)
  assert row["metric"]["std"] == 0.0  # One seed.
  assert 0 < row["train"]["train/loss"] < 3  # From metrics.jsonl's last log.
  assert pooled["versions"]["jax"] and pooled["hardware"]["cpu_count"] == os.cpu_count()
  assert "host" not in pooled["hardware"]


def test_rerun_trains_nothing(trained):
  _, workdir, experiments, pooled, transfer, _ = trained
  before = result_mtimes(workdir)
  assert len(before) == 3
  again = reproduce.reproduce_one(experiments[0], workdir=workdir, experiments=experiments)
  again_transfer = reproduce.reproduce_one(experiments[1], workdir=workdir,
                                           experiments=experiments)
  assert result_mtimes(workdir) == before
  assert again["rows"] == pooled["rows"] and again_transfer["rows"] == transfer["rows"]


def test_init_from_experiment_trains_from_the_sources_first_run(trained):
  _, workdir, _, pooled, transfer, source_mtimes = trained
  source_dir = os.path.join(workdir, "mnist1d", "pooled", "learning_rate=0.01", "seed_0")
  assert transfer["init_from"] == source_dir
  # The source was already reproduced: nothing of it trained again.
  assert result_mtimes(os.path.join(workdir, "mnist1d", "pooled")) == source_mtimes
  target_dir = os.path.join(workdir, "mnist1d", "transfer", "base", "seed_0")
  assert read_json(os.path.join(target_dir, "config.json"))["transfer"]["init_from"] == source_dir
  source_accuracy = read_json(os.path.join(source_dir, "result.json"))["final"]["test/accuracy"]
  # Far above an untrained network (about 10%): the weights came from the source.
  assert source_accuracy > 0.2
  assert transfer["rows"][0]["metric"]["mean"] == pytest.approx(source_accuracy, abs=0.006)
  assert "Starts from the run in" in reproduce.render_card(transfer)


def test_a_transfer_sources_runs_take_the_users_overrides(tmp_path, fake_training):
  # The user's overrides (a data directory, say) are for every run, the
  # transfer's source included: reproducing the source alone and then its
  # target with the same command line shares the source's run.
  write_experiment(tmp_path, "mnist1d/source.py")
  write_experiment(tmp_path, "mnist1d/target.py", """\
      config.reproduce.init_from_experiment = 'mnist1d/source'
      """)
  experiments = experiments_of(tmp_path)
  source, target = (reproduce.find(experiments, i)
                    for i in ("mnist1d/source", "mnist1d/target"))
  workdir = str(tmp_path / "runs")
  overrides = ["dataset.num_samples=900"]
  reproduce.reproduce_one(source, workdir=workdir, overrides=overrides,
                          experiments=experiments)
  card = reproduce.reproduce_one(target, workdir=workdir, overrides=overrides,
                                 experiments=experiments)
  assert len(fake_training) == 2  # The source once, then the target.
  assert [c.dataset.num_samples for c in fake_training] == [900, 900]
  assert card["init_from"] == os.path.join(workdir, "mnist1d", "source", "base", "seed_0")
  # Straight to the target in a fresh workdir: its source trains with them too.
  fresh = str(tmp_path / "fresh")
  reproduce.reproduce_one(target, workdir=fresh, overrides=overrides,
                          experiments=experiments)
  assert [c.dataset.num_samples for c in fake_training[2:]] == [900, 900]


# --------------------------------------------------------------------------
# The command line


def test_smoke_cards_never_touch_the_repository_results(tmp_path, fake_training,
                                                         monkeypatch, capsys):
  write_experiment(tmp_path, "mnist1d/tiny.py")
  write_experiment(tmp_path, "mnist1d/other.py")
  results = tmp_path / "RESULTS.md"
  results.write_text("# Results\n\nPublished numbers only.\n")
  monkeypatch.chdir(tmp_path)

  assert main(["reproduce", "--smoke", "--filter", "tiny"]) == 0
  assert results.read_text() == "# Results\n\nPublished numbers only.\n"
  assert not (tmp_path / "results").exists()
  smoke_results = tmp_path / "runs" / "reproduce_smoke" / "RESULTS.md"
  assert "**Smoke run**" in smoke_results.read_text()
  card = read_json(tmp_path / "runs" / "reproduce_smoke" / "results" / "cards"
                   / "mnist1d__tiny.json")
  assert card["smoke"] and card["command"] == "cnnjax reproduce --filter mnist1d/tiny --smoke"
  config, = fake_training
  assert config.smoke and config.num_steps == config.smoke_steps
  assert not config.progress_bar
  out = capsys.readouterr().out
  assert out.startswith("[1/1] mnist1d/tiny: 1 run\n")
  assert "mnist1d/tiny  94.0%      50.0% (n=1)  1     10 s" in out

  # Without --smoke, the given results file gets the card.
  assert main(["reproduce", "--filter", "other", "--config.seed=3"]) == 0
  text = results.read_text()
  assert text.startswith("# Results\n\nPublished numbers only.\n\n" + reproduce.BEGIN_MARKER)
  assert "### mnist1d/other" in text and "mnist1d/tiny" not in text
  assert "`cnnjax reproduce --filter mnist1d/other --config.seed=3`" in text


def test_an_interrupted_reproduction_keeps_finished_cards(tmp_path, monkeypatch,
                                                          fake_training, capsys):
  from cnnjax.train import loop

  write_experiment(tmp_path, "a/first.py")
  write_experiment(tmp_path, "b/second.py")
  monkeypatch.chdir(tmp_path)
  fake = loop.train_and_evaluate

  def interrupted(config, workdir, *, config_path=""):
    if "second" in workdir:
      raise loop.TrainingInterrupted("interrupted at step 12 (checkpoint saved)", 2)
    return fake(config, workdir, config_path=config_path)

  monkeypatch.setattr(loop, "train_and_evaluate", interrupted)
  assert main(["reproduce", "--results", "out.md"]) == 130
  err = capsys.readouterr().err
  assert "cnnjax: interrupted at step 12 (checkpoint saved); rerun the same command" in err
  assert os.listdir(tmp_path / "results" / "cards") == ["a__first.json"]
  assert "### a/first" in (tmp_path / "out.md").read_text()


def test_cli_list_and_unknown_filter(tmp_path, capsys, monkeypatch):
  write_experiment(tmp_path, "mnist1d/pooled.py", """\
      config.reproduce.average_over = ('optimizer.learning_rate=0.01,0.003',)
      config.reproduce.seeds = 3
      """)
  write_experiment(tmp_path, "mnist1d/base_recipe.py")
  monkeypatch.chdir(tmp_path)  # `experiments/` is found from the working directory.

  def cli(*args):
    code = main(["reproduce", *args])
    return types.SimpleNamespace(returncode=code, **capsys.readouterr()._asdict())

  out = cli("--list")
  assert out.returncode == 0, out.err
  lines = out.out.splitlines()
  assert lines[0].split() == ["id", "metric", "published", "runs", "source"]
  assert lines[1].startswith("mnist1d/pooled  test/accuracy  94.0%      "
                             "6 = 2 settings x 3 seeds  Greydanus & Kobak 2024")
  assert len(lines) == 2 and not os.path.exists(tmp_path / "runs")

  out = cli("--filter", "pooledd")
  assert out.returncode == 2
  assert out.err.strip().splitlines() == [
      "cnnjax: error: no experiment id contains 'pooledd' (close ones: mnist1d/pooled); "
      "see `cnnjax reproduce --list`"]


def test_seeds_trained_together_count_their_wall_time_once():
  def run(slug, seed, wall, together=None):
    result = {"wall_time_s": wall}
    if together:
      result["trained_with_seeds"] = together
    return {"slug": slug, "seed": seed, "result": result}

  vmapped = [run("a", s, 90.0, [0, 1, 2]) for s in (0, 1, 2)]
  alone = [run("b", 0, 30.0), run("b", 1, 40.0)]
  assert reproduce.wall_total(vmapped) == 90.0
  assert reproduce.wall_total(vmapped + alone) == 160.0
  assert "--vmap-seeds" in reproduce.rerun_command("x/y", vmap_seeds=True)


def test_render_only_recomputes_stored_cards_without_training(tmp_path, monkeypatch,
                                                              capsys, fake_training):
  # A stored card of the repository, stripped of its statistics: --render-only
  # puts the intervals and the claims' verdicts back from its per-seed values.
  import shutil

  from conftest import REPO
  cards = tmp_path / "results" / "cards"
  cards.mkdir(parents=True)
  card = read_json(os.path.join(REPO, "results", "cards", "claims__mlp_vs_cnn.json"))
  for key in ("differences", "claims"):
    card.pop(key, None)
  with open(cards / "claims__mlp_vs_cnn.json", "w") as f:
    json.dump(card, f)
  shutil.copytree(os.path.join(REPO, "experiments"), tmp_path / "experiments")
  monkeypatch.chdir(tmp_path)
  assert main(["reproduce", "--render-only"]) == 0
  assert "nothing trained" in capsys.readouterr().out
  assert not fake_training
  text = (tmp_path / "RESULTS.md").read_text()
  assert "95% t-interval" in text and "holds at this budget" in text
  assert read_json(str(cards / "claims__mlp_vs_cnn.json"))["claims"][0]["verdict"] == "holds"
