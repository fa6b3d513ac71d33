"""A trial: the unit of work a sweep hands to an executor.

A trial is one run (a setting and a seed), or a setting's seeds trained
together in one vmapped program (`vmap_seeds`). `run_trial` is what every
executor calls, in this process, in a local worker process, in a Ray task or
in a SLURM job: it trains the trial's runs into their usual directories and
returns one plain outcome per run, so results look the same whoever ran
them and cross process boundaries as plain data.

An outcome is one of
  {"result": <result.json>}       the run finished (now or before);
  {"error": "<one sentence>"}     the run failed (diverged, bad config, ...);
  {"claimed": "<one sentence>"}   another live process trains in its directory.

A run that is already finished is found and not trained again, so a trial
handed out twice (a rerun after a crash, two sweeps at once) costs nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import ml_collections

from cnnjax.errors import CnnjaxError

Outcome = dict[str, Any]


@dataclasses.dataclass
class Trial:
  """One unit of a sweep's work.

  Attributes:
    index: the trial's position in the sweep (stable across reruns).
    slug: the setting's directory name.
    seeds: the seeds of its runs.
    configs: one config per run, in `seeds` order.
    workdirs: one run directory per run.
    config_path: the experiment file, recorded in the results.
    together: train the runs as one vmapped program (they are one
      setting's seeds).
  """
  index: int
  slug: str
  seeds: list[int]
  configs: list[ml_collections.ConfigDict]
  workdirs: list[str]
  config_path: str = ""
  together: bool = False

  @property
  def name(self) -> str:
    seeds = ", ".join(map(str, self.seeds))
    return f"{self.slug} seed{'s' if len(self.seeds) > 1 else ''} {seeds}"


def run_trial(trial: Trial, say: Callable[[str], Any] = lambda line: None
              ) -> list[Outcome]:
  """Trains the trial's unfinished runs; one outcome per run, in order.

  Raises TrainingInterrupted when a signal stopped the training (the
  checkpoint is saved; the caller decides whether the whole sweep stops).
  """
  # Imported here: the sweep's grid and summary need no JAX, and tests
  # replace loop.train_and_evaluate.
  from cnnjax.runs import Run
  from cnnjax.runs.claim import RunClaimed
  from cnnjax.train import loop

  outcomes: list[Outcome | None] = [None] * len(trial.configs)
  for i, (config, workdir) in enumerate(zip(trial.configs, trial.workdirs)):
    result = Run(workdir).finished_result(config)
    if result is not None:
      outcomes[i] = {"result": result, "before": True}
  todo = [i for i, o in enumerate(outcomes) if o is None]

  def outcome(call: Callable[[], Any]) -> Outcome | list[Any]:
    try:
      return {"result": call()}
    except loop.TrainingInterrupted:
      raise
    except RunClaimed as e:
      return {"claimed": str(e)}
    except CnnjaxError as e:
      return {"error": str(e)}

  if trial.together and len(todo) > 1:
    configs = [trial.configs[i] for i in todo]
    workdirs = [trial.workdirs[i] for i in todo]
    reason = loop.can_train_together(configs)
    if not reason:
      got = outcome(lambda: loop.train_seeds_together(
          configs, workdirs, config_path=trial.config_path))
      if "result" in got:
        for i, result in zip(todo, got["result"]):
          outcomes[i] = {"result": result}
        return _plain(outcomes)
      if "claimed" in got:
        for i in todo:
          outcomes[i] = got
        return _plain(outcomes)
      reason = got["error"]
    say(f"    seeds train one at a time: {reason}")
  for i in todo:
    config, workdir = trial.configs[i], trial.workdirs[i]
    outcomes[i] = outcome(lambda: loop.train_and_evaluate(
        config, workdir, config_path=trial.config_path))
  return _plain(outcomes)


def _plain(outcomes: Sequence[Outcome | None]) -> list[Outcome]:
  assert all(o is not None for o in outcomes)
  return list(outcomes)  # type: ignore[arg-type]
