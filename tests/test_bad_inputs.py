"""Wrong commands, as a new user types them: each is one sentence and exit 2.

Every case goes through the real entry point, `cnnjax.cli.main`, in this
process, and must end with exit status 2, no traceback, exactly one line on
stderr ("cnnjax: error: ...") that names what was wrong (the key, the path
or the value), and, where a run existed before the command, every file of
that run byte-identical afterwards. One tiny run is trained for the whole
module (LeNet-5 on the digits, two steps); the training commands all fail
before their first step.

Cases that need the run machinery itself (eval --best of a run without a
best checkpoint, a rerun with fewer steps, divergence, a full disk) are
tested with that machinery (tests/train/, tests/runs/).
"""

import hashlib
import os
import shutil

import pytest

from cnnjax.cli import main
from conftest import EXPERIMENTS, REPO, tiny_mnist1d_config
from viz_fixtures import train_tiny_workdir

CNN = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")

# Bad experiment files: each a different way get_config() goes wrong.
CONFIG_FILES = {
    "raises.py": "def get_config():\n  raise ValueError('boom in the body')\n",
    "returns_dict.py": "def get_config():\n  return {'model': {'name': 'lenet5'}}\n",
    "bare.py": ("import ml_collections\n\n\ndef get_config():\n"
                "  return ml_collections.ConfigDict({'seed': 0})\n"),
    "frozen.py": ("import ml_collections\nfrom cnnjax.config import base_config\n\n\n"
                  "def get_config():\n"
                  "  return ml_collections.FrozenConfigDict(base_config())\n"),
    "config.txt": "def get_config():\n  pass\n",
}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
  """The paths the cases name: a trained run, a run without checkpoints,
  an empty directory, a plain file, bad experiment files."""
  root = tmp_path_factory.mktemp("bad_inputs")
  run = train_tiny_workdir(str(root / "run"), num_steps=2, eval_every=2,
                           checkpoint_every=2, log_every=1)
  no_checkpoint = root / "no_checkpoint"
  no_checkpoint.mkdir()
  shutil.copy(os.path.join(run, "config.json"), no_checkpoint)
  (root / "empty").mkdir()
  (root / "a_file").write_text("not a directory\n")
  (root / "dir.py").mkdir()
  configs = root / "configs"
  configs.mkdir()
  for name, text in CONFIG_FILES.items():
    (configs / name).write_text(text)
  return {"RUN": run, "NOCKPT": str(no_checkpoint), "EMPTY": str(root / "empty"),
          "FILE": str(root / "a_file"), "DIRPY": str(root / "dir.py"),
          "CONFIGS": str(configs), "ROOT": str(root)}


def _train(*flags):
  """A training command that must fail before its first step."""
  return ["train", "--config", CNN, "--workdir", "{TMP}/w", "--config.smoke=true",
          *flags]


def _viz(method, *flags):
  return ["visualize", method, "--workdir", "{RUN}", "--out", "{TMP}/viz", *flags]


def _sweep(*flags):
  return ["sweep", "--config", CNN, "--workdir", "{TMP}/sweep",
          "--config.smoke=true", *flags]


def _export(*flags):
  return ["export", "--workdir", "{RUN}", "--format", "stablehlo", *flags]


# (id, command line, what the one line must name). {RUN}, {FILE}, ... are
# the fixture's paths; {TMP} is a fresh directory of the case's own.
CASES = [
    # -- train: the experiment file --------------------------------------
    ("config-not-py", ["train", "--config", "{CONFIGS}/config.txt"],
     ["config.txt", "not a .py file"]),
    ("config-is-directory", ["train", "--config", "{DIRPY}"], ["dir.py", "directory"]),
    ("config-missing", ["train", "--config", "{TMP}/nope.py"], ["nope.py", "does not exist"]),
    ("config-empty", ["train", "--config", ""], ["config file is empty"]),
    ("get-config-raises", ["train", "--config", "{CONFIGS}/raises.py"],
     ["raises.py", "ValueError: boom in the body"]),
    ("get-config-returns-dict", ["train", "--config", "{CONFIGS}/returns_dict.py"],
     ["returns_dict.py", "not dict"]),
    ("get-config-without-base-keys", ["train", "--config", "{CONFIGS}/bare.py"],
     ["bare.py", "without the keys"]),
    ("get-config-frozen", ["train", "--config", "{CONFIGS}/frozen.py"],
     ["frozen.py", "FrozenConfigDict"]),
    # -- train: overrides -----------------------------------------------
    ("unknown-key", _train("--config.batch_sise=3"),
     ["'batch_sise'", "did you mean 'batch_size'"]),
    ("unknown-section", _train("--config.optimiser.name=sgd"), ["'optimiser.name'"]),
    ("override-without-value", _train("--config.seed"), ["--config.seed=VALUE"]),
    ("int-gets-text", _train("--config.batch_size=big"), ["batch_size", "'big'"]),
    ("float-gets-text", _train("--config.optimizer.learning_rate=fast"),
     ["learning_rate", "'fast'"]),
    ("bool-gets-text", _train("--config.smoke=maybe"), ["smoke", "'maybe'"]),
    ("tuple-of-ints-gets-words", _train("--config.schedule.boundaries=(a,b)"),
     ["schedule.boundaries", "integers"]),
    ("zero-batch-size", _train("--config.batch_size=0"), ["batch_size", "0"]),
    ("negative-steps", ["train", "--config", CNN, "--workdir", "{TMP}/w",
                        "--config.num_steps=-5"], ["num_steps", "-5"]),
    ("negative-learning-rate", _train("--config.optimizer.learning_rate=-1"),
     ["learning_rate", "-1"]),
    ("unknown-model", _train("--config.model.name=resnet9000"), ["'resnet9000'"]),
    ("unknown-dataset-name-empty", _train("--config.dataset.name="), ["dataset.name"]),
    ("unknown-optimizer", _train("--config.optimizer.name=lbfgs"), ["'lbfgs'"]),
    ("unknown-schedule", _train("--config.schedule.name=zigzag"), ["'zigzag'"]),
    ("unknown-loss", _train("--config.loss.name=hinge"), ["'hinge'"]),
    ("unknown-evaluator", _train("--config.evaluators=(nope,)"), ["'nope'"]),
    ("unknown-precision", _train("--config.precision=float8"), ["'float8'"]),
    ("class-subset-out-of-range", _train("--config.dataset.classes=(0,1,99)"),
     ["dataset.classes", "99"]),
    ("missing-transfer-source", _train("--config.transfer.init_from={TMP}/none"),
     ["transfer.init_from", "{TMP}/none"]),
    # -- train: the model's fields --------------------------------------
    ("num-classes-mismatch", _train("--config.model.num_classes=7"),
     ["num_classes is 7", "10 classes"]),
    ("model-field-text", _train("--config.model.features=abc"), ["features='abc'"]),
    ("model-field-negative", _train("--config.model.features=(25,-3,25)"),
     ["features=(25, -3, 25)", "negative"]),
    ("model-field-zero", _train("--config.model.strides=(2,0,2)"),
     ["strides=(2, 0, 2)", "positive"]),
    ("model-field-unknown", _train("--config.model.num_filters=-3"), ["'num_filters'"]),
    ("model-field-bool-for-int", _train("--config.model.padding=true"), ["padding=True"]),
    ("model-field-breaks-init", _train("--config.model.kernel_sizes=(99,3,3)"),
     ["model.kernel_sizes=(99, 3, 3)"]),
    # -- train: where it writes ------------------------------------------
    ("workdir-empty", ["train", "--config", CNN, "--workdir", ""], ["workdir is empty"]),
    ("workdir-is-file", _train()[:3] + ["--workdir", "{FILE}"], ["{FILE}", "is a file"]),
    ("workdir-below-file", _train()[:3] + ["--workdir", "{FILE}/run"],
     ["{FILE}", "not a directory"]),
    ("workdir-not-creatable", _train()[:3] + ["--workdir", "/proc/cnnjax_bad/run"],
     ["/proc/cnnjax_bad/run"]),
    ("workdir-holds-another-run", _train()[:3] + ["--workdir", "{RUN}",
                                                   "--config.smoke=true"],
     ["{RUN}", "different config"]),
    ("compilation-cache-is-file", _train("--compilation-cache", "{FILE}"),
     ["--compilation-cache", "{FILE}"]),
    ("unknown-flag", _train("--bogus"), ["--bogus"]),
    ("subcommand-typo", ["trian", "--config", CNN], ["'trian'", "did you mean 'train'"]),
    # -- eval --------------------------------------------------------------
    ("eval-no-run", ["eval", "--workdir", "{EMPTY}"], ["{EMPTY}", "not a cnnjax workdir"]),
    ("eval-no-checkpoint", ["eval", "--workdir", "{NOCKPT}"], ["no checkpoint"]),
    ("eval-a-file", ["eval", "--workdir", "{FILE}"], ["{FILE}"]),
    ("eval-empty-workdir", ["eval", "--workdir", ""], ["workdir is empty"]),
    ("eval-override", ["eval", "--workdir", "{RUN}", "--config.seed=3"],
     ["--config.seed=3"]),
    ("eval-without-workdir", ["eval"], ["--workdir"]),
    # -- visualize -------------------------------------------------------
    ("viz-unknown-method", _viz("salency"), ["'salency'", "did you mean 'saliency'"]),
    ("viz-unknown-layer", _viz("gradcam", "--layer", "c9"), ["'c9'"]),
    ("viz-layer-index-out-of-range", _viz("activations", "--layer", "99"), ["'99'"]),
    ("viz-class-out-of-range", _viz("saliency", "--class", "99"), ["99", "10 classes"]),
    ("viz-negative-class", _viz("saliency", "--class", "-5"), ["--class -5"]),
    ("viz-index-out-of-range", _viz("saliency", "--indices", "99999"), ["99999"]),
    ("viz-indices-text", _viz("saliency", "--indices", "0,x"), ["'0,x'"]),
    ("viz-unknown-split", _viz("saliency", "--split", "validation"), ["'validation'"]),
    ("viz-zero-examples", _viz("saliency", "--num-examples", "0"), ["--num-examples"]),
    ("viz-channel-out-of-range", _viz("neuron", "--layer", "c1", "--channel", "999"),
     ["--channel 999"]),
    ("viz-flag-the-method-ignores", _viz("saliency", "--layer", "c1"),
     ["saliency", "--layer"]),
    ("viz-unknown-option", _viz("saliency", "--option", "bogus=1"), ["--option bogus"]),
    ("viz-out-is-file", ["visualize", "filters", "--workdir", "{RUN}", "--out", "{FILE}"],
     ["{FILE}", "is a file"]),
    ("viz-out-not-creatable", ["visualize", "filters", "--workdir", "{RUN}", "--out",
                               "/proc/cnnjax_bad/viz"], ["/proc/cnnjax_bad/viz"]),
    ("viz-out-empty", ["visualize", "filters", "--workdir", "{RUN}", "--out", ""],
     ["--out is empty"]),
    ("viz-no-run", ["visualize", "filters", "--workdir", "{EMPTY}"], ["{EMPTY}"]),
    # -- summary and models ----------------------------------------------
    ("summary-unknown-model", ["summary", "resnet9000"], ["'resnet9000'"]),
    ("summary-bad-shape", ["summary", "lenet5", "--input-shape", "abc"], ["'abc'"]),
    ("summary-field-text", ["summary", "mnist1d_cnn", "--option", "features=abc"],
     ["features='abc'"]),
    ("summary-field-wrong-type", ["summary", "lenet5", "--option", "activation=3"],
     ["activation=3"]),
    ("summary-bad-dtype-option", ["summary", "lenet5", "--option", "dtype=abc"],
     ["dtype='abc'"]),
    ("summary-negative-classes", ["summary", "lenet5", "--num-classes", "-2"],
     ["num_classes=-2"]),
    ("summary-json-missing-dir", ["summary", "lenet5", "--json", "{TMP}/no/s.json"],
     ["{TMP}/no", "does not exist"]),
    ("summary-json-is-directory", ["summary", "lenet5", "--json", "{EMPTY}"],
     ["{EMPTY}", "is a directory"]),
    ("models-no-match", ["models", "nomatch*"], ["'nomatch*'"]),
    # -- benchmark and benchmark-data ------------------------------------
    ("bench-unknown-model", ["benchmark", "resnet9000"], ["'resnet9000'"]),
    ("bench-zero-batch", ["benchmark", "lenet5", "--batch-size", "0"], ["--batch-size"]),
    ("bench-negative-devices", ["benchmark", "lenet5", "--devices", "-1"], ["--devices"]),
    ("bench-steps-text", ["benchmark", "lenet5", "--steps", "abc"], ["--steps", "'abc'"]),
    ("bench-unknown-dtype", ["benchmark", "lenet5", "--dtype", "float64"], ["'float64'"]),
    ("bench-json-below-file", ["benchmark", "lenet5", "--json", "{FILE}/b.json"],
     ["{FILE}", "not a directory"]),
    ("bench-data-zero-steps", ["benchmark-data", "--config", CNN, "--steps", "0"],
     ["--steps"]),
    ("bench-data-json-missing-dir", ["benchmark-data", "--config", CNN, "--json",
                                     "{TMP}/no/d.json"], ["{TMP}/no"]),
    ("bench-data-num-classes", ["benchmark-data", "--config", CNN, "--config.smoke=true",
                                "--config.model.num_classes=3"], ["num_classes is 3"]),
    # -- sweep -------------------------------------------------------------
    ("sweep-unknown-grid-key", _sweep("--grid", "nokey=1,2"), ["'nokey'"]),
    ("sweep-grid-without-values", _sweep("--grid", "optimizer.learning_rate="),
     ["optimizer.learning_rate", "no values"]),
    ("sweep-grid-seed", _sweep("--grid", "seed=0,1"), ["'seed'"]),
    ("sweep-grid-twice", _sweep("--grid", "batch_size=8", "--grid", "batch_size=16"),
     ["'batch_size'", "twice"]),
    ("sweep-grid-bad-value", _sweep("--grid", "batch_size=8,big"), ["'big'"]),
    ("sweep-zero-seeds", _sweep("--grid", "batch_size=8,16", "--seeds", "0"), ["--seeds"]),
    ("sweep-workdir-empty", ["sweep", "--config", CNN, "--grid", "batch_size=8,16",
                             "--workdir", ""], ["--workdir is empty"]),
    ("sweep-workdir-below-file", ["sweep", "--config", CNN, "--grid", "batch_size=8,16",
                                  "--workdir", "{FILE}/s"], ["{FILE}"]),
    ("sweep-option-of-other-executor", _sweep("--grid", "batch_size=8,16",
                                              "--ray-address", "auto"),
     ["--ray-address"]),
    # -- reproduce -------------------------------------------------------
    ("reproduce-filter-matches-nothing", ["reproduce", "--filter", "nothingmatches",
                                          "--list"], ["'nothingmatches'"]),
    ("reproduce-zero-seeds", ["reproduce", "--filter", "mnist1d/cnn", "--seeds", "0",
                              "--list"], ["--seeds"]),
    ("reproduce-unknown-key", ["reproduce", "--filter", "mnist1d/cnn",
                               "--config.nokey=1", "--list"], ["'nokey'"]),
    ("reproduce-workdir-is-file", ["reproduce", "--filter", "mnist1d/cnn", "--smoke",
                                   "--workdir", "{FILE}"], ["{FILE}"]),
    ("reproduce-results-is-directory", ["reproduce", "--filter", "mnist1d/cnn",
                                        "--smoke", "--results", "{EMPTY}"],
     ["{EMPTY}", "is a directory"]),
    # -- convert -----------------------------------------------------------
    ("convert-missing-file", ["convert", "{TMP}/w.pth", "--model", "resnet18",
                              "--out", "{TMP}/c"], ["{TMP}/w.pth"]),
    ("convert-model-without-twin", ["convert", "{FILE}", "--model", "lenet5",
                                    "--out", "{TMP}/c"], ["'lenet5'"]),
    ("convert-over-a-run", ["convert", "{FILE}", "--model", "resnet18", "--out",
                            "{RUN}"], ["{RUN}", "already exists"]),
    ("convert-zero-classes", ["convert", "{FILE}", "--model", "resnet18", "--out",
                              "{TMP}/c", "--num-classes", "0"], ["--num-classes"]),
    ("convert-without-out", ["convert", "{FILE}", "--model", "resnet18"], ["--out"]),
    ("convert-override-without-config", ["convert", "{FILE}", "--model", "resnet18",
                                         "--out", "{TMP}/c", "--config.seed=1"],
     ["--config"]),
    # -- export ------------------------------------------------------------
    ("export-not-a-run", ["export", "--workdir", "{EMPTY}", "--format", "stablehlo"],
     ["{EMPTY}"]),
    ("export-unknown-format", ["export", "--workdir", "{RUN}", "--format", "tflite"],
     ["'tflite'"]),
    ("export-missing-step", _export("--checkpoint", "999"), ["999"]),
    ("export-step-text", _export("--checkpoint", "abc"), ["'abc'"]),
    ("export-out-empty", _export("--out", ""), ["--out is empty"]),
    ("export-out-below-file", _export("--out", "{FILE}/m.stablehlo"), ["{FILE}"]),
    ("export-out-is-directory", _export("--out", "{EMPTY}"), ["{EMPTY}", "directory"]),
    ("export-no-torch-twin", ["export", "--workdir", "{RUN}", "--format", "torch"],
     ["'lenet5_relu'"]),
]


def _fill(text: str, places: dict) -> str:
  for name, path in places.items():
    text = text.replace("{" + name + "}", path)
  return text


def _snapshot(directory: str) -> dict[str, str]:
  """{relative path: sha256} of every file below `directory`."""
  found = {}
  for folder, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return found


def test_the_cases_are_distinct_and_cover_every_subcommand():
  assert len(CASES) >= 40
  assert len({case[0] for case in CASES}) == len(CASES)
  assert len({tuple(case[1]) for case in CASES}) == len(CASES)
  commands = {case[1][0] for case in CASES}
  assert commands >= {"train", "eval", "sweep", "reproduce", "visualize", "summary",
                      "models", "benchmark", "benchmark-data", "convert", "export"}


@pytest.mark.parametrize("args, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_wrong_command_is_one_sentence(args, names, places, tmp_path, capsys,
                                        monkeypatch):
  if any(a.startswith("/proc/") for a in args) and not os.path.isdir("/proc/self"):
    pytest.skip("needs Linux's /proc, where nobody may create a directory")
  monkeypatch.chdir(REPO)  # Where `cnnjax reproduce` finds experiments/.
  where = {**places, "TMP": str(tmp_path)}
  args = [_fill(a, where) for a in args]
  before = _snapshot(places["RUN"])
  code = main(args)
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert code == 2, captured.err
  assert "Traceback" not in captured.err
  assert len(lines) == 1 and lines[0].startswith("cnnjax: error: "), lines
  for name in names:
    assert _fill(name, where) in lines[0], (name, lines[0])
  assert _snapshot(places["RUN"]) == before  # The run, named or not, is unchanged.
  # Output paths are checked before any work: nothing was computed.
  assert captured.out == ""


def test_no_case_left_a_folder_in_the_run(places):
  """visualize's default output is inside the run: no refused case made it."""
  assert "config.json" in _snapshot(places["RUN"])
  assert not os.path.exists(os.path.join(places["RUN"], "viz"))


def test_class_subsets_and_a_reinitialized_head_still_build(places):
  """The class check counts the classes the data keeps (config.dataset.classes)
  and leaves transfer learning alone: the digits 5-9 from the run's 10-class
  network, its head re-initialised with 5 outputs."""
  from cnnjax.train.setup import build

  config = tiny_mnist1d_config(**{
      "dataset.name": "digits", "dataset.image_size": 32, "model.name": "lenet5_relu",
      "dataset.classes": (5, 6, 7, 8, 9), "transfer.init_from": places["RUN"],
      "transfer.reinit": ("head",)})
  setup = build(config)
  assert setup.dataset.num_classes == 5
  assert setup.state.params["head"]["kernel"].shape == (84, 5)
