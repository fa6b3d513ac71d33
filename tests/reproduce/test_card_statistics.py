"""Statistics on result cards: the claim grammar, the seed-paired differences
and claims of a card built from made-up runs, and stored cards refreshed
from their per-seed values. No training: these are pure Python."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import EXPERIMENTS, tiny_mnist1d_config

from cnnjax.errors import CnnjaxError


def _claims_config(*statements, compare=("model.name=mnist1d_cnn,mnist1d_mlp",
                                         "optimizer.learning_rate=0.01,0.1")):
  config = tiny_mnist1d_config()
  with config.unlocked():
    config.reproduce.compare = compare
    config.reproduce.claim = statements
    config.reference.others = ("test/loss=1.0",)
  return config


def test_claims_parse_with_short_or_full_keys_and_typed_values():
  from cnnjax.reproduce.planning import parse_claims

  claim, less, loss = parse_claims(_claims_config(
      "name=mnist1d_mlp learning_rate=0.1 > name=mnist1d_cnn learning_rate=0.1",
      "optimizer.learning_rate=1e-2 model.name=mnist1d_cnn<name=mnist1d_cnn "
      "learning_rate=0.10",
      " test/loss :  name=mnist1d_cnn learning_rate=0.01 < name=mnist1d_mlp "
      "learning_rate=0.01"), "x/y")
  assert claim.left == {"model.name": "mnist1d_mlp", "optimizer.learning_rate": 0.1}
  assert claim.right == {"model.name": "mnist1d_cnn", "optimizer.learning_rate": 0.1}
  assert (claim.direction, claim.metric) == ("greater", "")
  assert less.direction == "less" and less.left["optimizer.learning_rate"] == 0.01
  assert less.right["optimizer.learning_rate"] == 0.1  # '0.10' is the value 0.1
  assert loss.metric == "test/loss"


@pytest.mark.parametrize("statement, message", [
    ("name=mnist1d_cnn learning_rate=0.1", "is not one comparison"),
    ("name=mnist1d_cnn learning_rate=0.1 >> name=mnist1d_mlp learning_rate=0.1",
     "is not one comparison"),
    ("name=mnist1d_cnn learning_rate=0.1 > name=mnist1d_mlp learning_rate=0.1 > "
     "name=mnist1d_cnn learning_rate=0.01", "is not one comparison"),
    ("name=mnist1d_cnn > name=mnist1d_mlp", "does not say which "
     "'optimizer.learning_rate' its side 'name=mnist1d_cnn' means"),
    ("nam=mnist1d_cnn learning_rate=0.1 > name=mnist1d_mlp learning_rate=0.1",
     "names 'nam', which is not a reproduce.compare key"),
    ("name=lenet5 learning_rate=0.1 > name=mnist1d_mlp learning_rate=0.1",
     "gives name=lenet5, which is not among the reproduce.compare values of "
     "'model.name' (mnist1d_cnn, mnist1d_mlp)"),
    ("name=mnist1d_cnn learning_rate=fast > name=mnist1d_mlp learning_rate=0.1",
     "gives 'optimizer.learning_rate' the value 'fast'"),
    ("name=mnist1d_cnn learning_rate=0.1 > learning_rate=0.1 name=mnist1d_cnn",
     "compares a row with itself"),
    ("name=mnist1d_cnn name=mnist1d_cnn > name=mnist1d_mlp learning_rate=0.1",
     "names 'model.name' twice on one side"),
    ("name=mnist1d_cnn learning_rate=0.1 > mnist1d_mlp learning_rate=0.1",
     "holds 'mnist1d_mlp'"),
    ("test/auc: name=mnist1d_cnn learning_rate=0.1 > name=mnist1d_mlp "
     "learning_rate=0.1", "names the metric 'test/auc', which its card does not "
     "keep per seed (kept: test/accuracy, test/loss)"),
])
def test_a_claim_that_does_not_fit_is_one_sentence_naming_it(statement, message):
  from cnnjax.reproduce.planning import parse_claims

  with pytest.raises(CnnjaxError) as error:
    parse_claims(_claims_config(statement), "x/y")
  text = str(error.value)
  assert f"reproduce.claim '{statement}' of 'x/y'" in text and message in text
  assert "\n" not in text


def test_a_claim_needs_compare_rows():
  from cnnjax.reproduce.planning import parse_claims

  with pytest.raises(CnnjaxError, match="'a=1 > a=2', but the experiment has no "
                     "reproduce.compare rows"):
    parse_claims(_claims_config("a=1 > a=2", compare=()), "x/y")
  assert parse_claims(_claims_config(compare=()), "x/y") == []


def test_stored_cards_are_refreshed_from_their_values_without_training(tmp_path):
  """A card stored before intervals and claims existed gains them, and
  RESULTS.md shows the verdicts, from the per-seed values alone."""
  from cnnjax import reproduce
  from cnnjax.reproduce.cards import refresh_stored_cards

  experiments_dir = tmp_path / "experiments" / "claims"
  experiments_dir.mkdir(parents=True)
  (experiments_dir / "shifts.py").write_text(
      '"""Claim: shifts help."""\n\n'
      f"from cnnjax.config import load_config\n\n\n"
      "def get_config():\n"
      f"  config = load_config({os.path.join(EXPERIMENTS, 'claims', 'augmentation.py')!r})\n"
      "  config.reproduce.claim = ('translate=1 > translate=0', "
      "'translate=0 < translate=2', 'translate=2 > translate=1')\n"
      "  return config\n")
  with open(os.path.join(os.path.dirname(EXPERIMENTS), "results", "cards",
                         "claims__augmentation.json")) as f:
    card = json.load(f)
  card = {**card, "id": "claims/shifts"}
  for row in card["rows"]:  # As stored before: no interval, no claims.
    for key in ("ci_low", "ci_high", "ci_half_width", "confidence"):
      row["metric"].pop(key, None)
  card.pop("claims", None)
  card.pop("differences", None)
  cards_dir = tmp_path / "results" / "cards"
  reproduce.store_card(card, str(cards_dir))
  experiments = reproduce.discover(str(tmp_path / "experiments"))
  written = refresh_stored_cards(str(cards_dir), experiments)
  assert written == [str(cards_dir / "claims__shifts.json")]
  with open(written[0]) as f:
    refreshed = json.load(f)
  assert {k: v for k, v in refreshed.items() if k not in ("rows", "claims", "differences")} == {
      k: v for k, v in card.items() if k != "rows"}
  values = refreshed["rows"][0]["metric"]["values"]
  assert refreshed["rows"][0]["metric"]["ci_half_width"] == pytest.approx(
      4.302652729749464 * np.std(values, ddof=1) / np.sqrt(3))
  verdicts = [(c["statement"], c["n"], c["verdict"]) for c in refreshed["claims"]]
  assert verdicts == [("translate=1 > translate=0", 3, "holds"),
                      ("translate=0 < translate=2", 3, "unresolved"),
                      ("translate=2 > translate=1", 3, "unresolved")]
  assert [d["label"] for d in refreshed["differences"]] == ["translate=1", "translate=2"]

  results = tmp_path / "RESULTS.md"
  reproduce.update_results(str(results))
  text = results.read_text()
  assert ("Claim `translate=1 > translate=0`: holds at this budget (+1.3 points, 95% CI "
          "[+0.2, +2.4], paired over 3 seeds, p=0.034).") in text
  assert ("Claim `translate=0 < translate=2`: unresolved at this budget (-1.8 points, "
          "95% CI [-4.2, +0.7] contains 0, paired over 3 seeds, p=0.089).") in text
  assert "| 0 | 3 | 97.4 ± 0.8 (n=3) |" in text


def test_a_card_tests_its_claims_on_the_paired_seeds(tmp_path):
  """build_card from made-up runs: differences to the first row, and claims
  on the headline metric and on a reference.others metric."""
  from cnnjax import reproduce

  path = tmp_path / "experiments" / "claims" / "two.py"
  path.parent.mkdir(parents=True)
  path.write_text(
      '"""Claim: the MLP beats the CNN here."""\n\n'
      "from cnnjax.config import load_config\n\n\n"
      "def get_config():\n"
      f"  config = load_config({os.path.join(EXPERIMENTS, 'mnist1d', 'cnn.py')!r})\n"
      "  config.reference.others = ('test/loss=1.0',)\n"
      "  config.reproduce.compare = ('model.name=mnist1d_cnn,mnist1d_mlp',)\n"
      "  config.reproduce.claim = ('name=mnist1d_mlp > name=mnist1d_cnn',\n"
      "                            'test/loss: name=mnist1d_mlp > name=mnist1d_cnn')\n"
      "  return config\n")
  experiment, = reproduce.discover(str(tmp_path / "experiments"))
  run_plan = reproduce.plan(experiment, seeds=3)
  # The MLP is 0.05, 0.02 and 0.08 above the CNN on seeds 0, 1, 2; the CNN's
  # seed 2 failed, so only seeds 0 and 1 pair.
  cnn, mlp = {0: 0.90, 1: 0.91, 2: None}, {0: 0.95, 1: 0.93, 2: 0.99}
  runs = []
  for name, values in (("mnist1d_cnn", cnn), ("mnist1d_mlp", mlp)):
    for seed, value in values.items():
      result = None if value is None else {
          "final": {"test/accuracy": value, "test/loss": 1.0 - value, "train/loss": 0.1},
          "wall_time_s": 3.0, "device": {"platform": "cpu", "kind": "cpu", "count": 1}}
      runs.append({"slug": f"name={name}", "setting": {"model.name": name}, "seed": seed,
                   "workdir": str(tmp_path / name / str(seed)), "result": result,
                   "error": None if result else "diverged"})
  card = reproduce.build_card(run_plan, runs)

  difference, = card["differences"]
  assert difference["label"] == "name=mnist1d_mlp"
  assert difference["reference"] == "name=mnist1d_cnn"
  assert difference["n"] == 2 and difference["seeds"] == [0, 1]
  half = 12.706204736174707 * np.std([0.05, 0.02], ddof=1) / np.sqrt(2)
  assert difference["mean"] == pytest.approx(0.035)
  assert (difference["ci_low"], difference["ci_high"]) == pytest.approx(
      (0.035 - half, 0.035 + half))
  accuracy, loss = card["claims"]
  assert (accuracy["left"], accuracy["right"]) == ("name=mnist1d_mlp", "name=mnist1d_cnn")
  assert accuracy["metric"] == "test/accuracy" and accuracy["n"] == 2
  assert accuracy["verdict"] == "unresolved"  # ± 0.19 with two seeds
  assert loss["metric"] == "test/loss" and loss["mean"] == pytest.approx(-0.035)
  assert loss["direction"] == "greater" and loss["verdict"] == "unresolved"
  json.dumps(card, allow_nan=False)  # No NaN in the stored card.

  text = reproduce.render_card(card)
  assert ("| mnist1d_mlp | 2 | +3.5 | "
          f"[{100 * (0.035 - half):+.1f}, {100 * (0.035 + half):+.1f}] |") in text
  # scipy.stats.ttest_rel([0.95, 0.93], [0.90, 0.91]): p 0.258, CI [-0.156, 0.226].
  assert ("Claim `name=mnist1d_mlp > name=mnist1d_cnn`: unresolved at this budget "
          "(+3.5 points, 95% CI [-15.6, +22.6] contains 0, paired over 2 seeds, "
          "p=0.26).") in text
  assert ("Claim `test/loss: name=mnist1d_mlp > name=mnist1d_cnn`: unresolved at this "
          "budget (-0.035, 95% CI [-0.226, +0.156] contains 0") in text
  assert "| test/accuracy (%) | 94.0 | 90.5 ± 6.4 (n=2) |" in text

  # Only seed 0 of the CNN: one paired seed, no test.
  card = reproduce.build_card(run_plan, [r for r in runs if r["seed"] == 0
                                         or r["slug"] == "name=mnist1d_mlp"
                                         and r["seed"] == 2])
  assert [c["verdict"] for c in card["claims"]] == ["one seed", "one seed"]
  assert card["claims"][0]["n"] == 1
  text = reproduce.render_card(card)
  assert ("Claim `name=mnist1d_mlp > name=mnist1d_cnn`: cannot be tested with one "
          "seed (+5.0 points on seed 0 alone).") in text


def test_measured_cells_show_the_interval_and_the_seeds():
  from cnnjax import reproduce

  assert reproduce.format_measured("test/auc", {"mean": 0.9, "values": [0.9, 0.9]}) == (
      "0.900 ± 0.000 (n=2)")  # Two equal seeds: a zero-width interval.
  assert reproduce.format_measured("test/accuracy", {"mean": 2.0, "values": [1, 2, 3]}) == (
      "200.0 ± 248.4 (n=3)")  # t_{0.975, 2} / sqrt(3) = 2.4841
  assert reproduce.format_measured("test/accuracy", {"mean": 0.5, "values": [0.5]},
                                   unit="%") == "50.0% (n=1)"
  assert reproduce.format_measured("test/auc", None) == "—"
