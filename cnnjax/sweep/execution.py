"""Running a sweep: every (setting, seed) pair is an ordinary run in its own
workdir, `<workdir>/<setting slug>/seed_<s>`; finished runs are found and not
trained again, so a sweep stopped part-way resumes where it stopped.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run, files
from cnnjax.sweep import grid as grid_lib
from cnnjax.sweep.executors import Executor, SerialExecutor
from cnnjax.sweep.summary import Summary, summarize_settings, write_summary
from cnnjax.sweep.trials import Outcome, Trial

SWEEP_FILE = "sweep.json"


def run(base_config: ml_collections.ConfigDict,
        grid: Mapping[str, Sequence[Any]],
        seeds: Sequence[int] = (0,), *,
        workdir: str,
        overrides: Sequence[str] = (),
        metrics: Sequence[str] | None = None,
        config_path: str = "",
        vmap_seeds: bool = False,
        executor: Executor | None = None,
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
    executor: where the trials train (see executors.py): None for this
      process, one after another; `LocalExecutor(n)` for n worker processes,
      `RayExecutor`, `SlurmExecutor`. A trial is one run, or a setting's
      seeds with `vmap_seeds`.
    progress: called with one line per setting and run; None for silence.

  Returns:
    The Summary, also written as summary.csv, differences.csv, summary.md,
    summary.json and summary.png (see summary.write_summary).
  """
  say = progress or (lambda line: None)
  executor = executor or SerialExecutor()
  executor.check()
  base = copy.deepcopy(base_config)
  overrides = [o[len("--config."):] if o.startswith("--config.") else o
               for o in overrides]
  config_lib.apply_overrides(base, overrides)
  parsed = grid_lib.parse_grid(base, grid_lib.check_grid(base, grid or {}))
  seeds = grid_lib.check_seeds(seeds)
  keys = list(parsed)
  settings = list(itertools.product(*parsed.values()))
  slugs = grid_lib.setting_slugs(keys, settings)

  # Every config is built before anything trains, so a bad value stops the
  # sweep at once rather than after hours.
  groups = []
  for values, slug in zip(settings, slugs):
    configs, workdirs = [], []
    for seed in seeds:
      config = copy.deepcopy(base)
      for key, value in zip(keys, values):
        grid_lib.apply_value(config, key, value)
      config_lib.set_value(config, "seed", seed)
      configs.append(config)
      workdirs.append(os.path.join(workdir, slug, f"seed_{seed}"))
    groups.append((dict(zip(keys, values)), slug, configs, workdirs))

  override_keys = [o.split("=", 1)[0] for o in overrides]
  _check_sweep_file(workdir, {
      "grid": grid_lib.jsonable(parsed),
      "seeds": seeds,
      "config": config_path,
      "overrides": grid_lib.jsonable(
          {k: config_lib.get_value(base, k) for k in override_keys}),
  })

  outcomes: dict[str, Outcome] = {}  # Run directory -> its outcome.
  trials: list[Trial] = []
  for index, (setting, slug, configs, workdirs) in enumerate(groups):
    finished = [_finished_result(c, w) for c, w in zip(configs, workdirs)]
    for w, result in zip(workdirs, finished):
      if result is not None:
        outcomes[w] = {"result": result, "before": True}
    todo = [i for i, r in enumerate(finished) if r is None]
    done_seeds = [seeds[i] for i in range(len(seeds)) if i not in todo]
    head = f"[{index + 1}/{len(groups)}] {slug}:"
    if not todo:
      say(f"{head} {_seeds_text(done_seeds)} already done")
      continue
    also = f" ({_seeds_text(done_seeds)} already done)" if done_seeds else ""
    say(f"{head} training {_seeds_text([seeds[i] for i in todo])}{also}")
    parts = [todo] if vmap_seeds else [[i] for i in todo]
    for part in parts:
      trials.append(Trial(index=len(trials), slug=slug, seeds=[seeds[i] for i in part],
                          configs=[configs[i] for i in part],
                          workdirs=[workdirs[i] for i in part],
                          config_path=config_path, together=vmap_seeds))

  if trials and not isinstance(executor, SerialExecutor):
    say(f"{len(trials)} trial{'s' if len(trials) > 1 else ''} on {executor.describe()}")
  _execute(executor, trials, outcomes, workdir=workdir, say=say)

  runs = []
  for setting, slug, configs, workdirs in groups:
    for seed, run_dir in zip(seeds, workdirs):
      outcome = outcomes[run_dir]
      failed = "result" not in outcome
      status = ("failed" if failed else "done" if outcome.get("before") else "trained")
      runs.append({"setting": setting, "slug": slug, "seed": seed,
                   "workdir": run_dir, "status": status,
                   "error": outcome.get("error") if failed else None,
                   "result": None if failed else outcome["result"]})

  summary = summarize_settings(keys, [g[0] for g in groups], slugs, runs,
                               metrics=metrics, seeds=seeds)
  summary.files = write_summary(summary, workdir)
  return summary


# --------------------------------------------------------------------------
# The calls into training: the only two places that know a run's files and
# its trainer.


def _finished_result(config: ml_collections.ConfigDict,
                     workdir: str) -> dict[str, Any] | None:
  """result.json of a finished run of `config` in `workdir`, else None (see
  `Run.finished_result`)."""
  return Run(workdir).finished_result(config)


def _execute(executor: Executor, trials: list[Trial], outcomes: dict[str, Outcome],
             *, workdir: str, say: Callable[[str], Any]) -> None:
  """Runs the trials on the executor, filling `outcomes` as they end.

  A trial whose run another live process is training (a second copy of
  this sweep, or a worker of a killed one still saving its checkpoint) is
  not trained twice: the sweep waits for that process to let go of the run
  and hands the trial out again, which then finds it finished or resumes it.
  """
  def on_done(trial: Trial, results: list[Outcome]) -> None:
    if any("claimed" in o for o in results):
      waiting.append(trial)
      return
    for seed, run_dir, outcome in zip(trial.seeds, trial.workdirs, results):
      outcomes[run_dir] = outcome
      if "result" in outcome:
        text = _final_text(outcome["result"])
        if outcome.get("before"):
          text = "finished by another process: " + text
      else:
        text = f"failed: {outcome['error']}"
      say(f"    {trial.slug} seed {seed}: {text}")

  while trials:
    waiting: list[Trial] = []
    executor.run(trials, on_done, say, workdir=workdir)
    if waiting:
      say(f"    {len(waiting)} trial(s) are being trained by another process; "
          "waiting for it to let go")
      _wait_for_claims([w for t in waiting for w in t.workdirs])
    trials = waiting


def _wait_for_claims(workdirs: Sequence[str], poll_s: float = 2.0) -> None:
  """Returns once no live process holds any of `workdirs`."""
  from cnnjax.runs.claim import RunClaim

  while True:
    held = False
    for w in workdirs:
      claim = RunClaim(w)
      holder = claim.holder()
      if holder is not None and not claim.is_stale(holder):
        held = True
        break
    if not held:
      return
    time.sleep(poll_s)


# --------------------------------------------------------------------------
# The sweep's identity and its progress lines


def _check_sweep_file(workdir: str, record: dict[str, Any]) -> None:
  """Refuses to mix two different sweeps in one workdir, then writes sweep.json."""
  path = os.path.join(workdir, SWEEP_FILE)
  if os.path.exists(path):
    previous = files.read_json(path)
    if previous is not None:
      differences = []
      if list(previous.get("grid", {}).items()) != list(record["grid"].items()):
        differences.append(
            f"its grid is {grid_lib.grid_text(previous.get('grid', {}))}, "
            f"not {grid_lib.grid_text(record['grid'])}")
      if previous.get("overrides", {}) != record["overrides"]:
        differences.append(f"its overrides are {previous.get('overrides')}, "
                           f"not {record['overrides']}")
      if differences:
        raise CnnjaxError(
            f"workdir '{workdir}' holds a different sweep ({'; '.join(differences)}); "
            "use another --workdir, or delete this one to start over")
  files.write_json(path, record)


def _seeds_text(seeds: Sequence[int]) -> str:
  return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _final_text(result: dict[str, Any]) -> str:
  """'test/accuracy=91.25% test/loss=0.3012 (12.3 s)'."""
  parts = [f"{k}={100 * v:.2f}%" if "accuracy" in k else f"{k}={v:.4f}"
           for k, v in result["final"].items()]
  return " ".join(parts + [f"({result['wall_time_s']:.1f} s)"])
