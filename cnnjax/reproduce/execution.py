"""Running a reproduction: a sweep over the plan's grid and seeds, then the
experiment's analysis, then its card.

Runs train in `<workdir>/<id>/<setting>/seed_<s>`; finished runs are never
trained again, so an interrupted reproduction resumes. An experiment with
`reproduce.init_from_experiment` first reproduces seed 0 of that source
(and of the source's own source, and so on) and starts from its run.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

from cnnjax import sweep
from cnnjax.errors import CnnjaxError
from cnnjax.reproduce.cards import CARD_FILE, build_card, write_card
from cnnjax.reproduce.catalogue import Experiment, discover, find
from cnnjax.reproduce.planning import plan


def reproduce_one(experiment: Experiment, *, workdir: str, seeds: int | None = None,
                  smoke: bool = False, overrides: Sequence[str] = (),
                  vmap_seeds: bool = False,
                  executor: sweep.Executor | None = None,
                  experiments: Sequence[Experiment] | None = None,
                  progress: Callable[[str], Any] | None = None) -> dict[str, Any]:
  """Trains (or finds) every run of `experiment` and returns its card.

  Args:
    experiment: from `discover`.
    workdir: the root of all reproductions; this one's runs train in
      `<workdir>/<id>/<setting>/seed_<s>` and its card is written to
      `<workdir>/<id>/card.json`.
    seeds: the number of seeds (0 .. seeds-1); None: `reproduce.seeds`.
    smoke: shrink every run to a few steps (`config.apply_smoke`).
    overrides: the user's 'KEY=VALUE' config overrides, for every run.
    vmap_seeds: train the seeds of a setting together (see sweep.run).
    executor: where the runs train (see sweep.run); None: this process.
    experiments: where `reproduce.init_from_experiment` is looked up
      (default: `discover()` of the experiment's root).
    progress: called with the sweep's progress lines; None for silence.

  Returns:
    The card, a JSON-able dict (see `build_card`).
  """
  run_plan = plan(experiment, seeds=seeds, smoke=smoke, overrides=overrides)
  config = run_plan.config
  init_from = None
  source_id = config.reproduce.init_from_experiment
  if source_id:
    init_from = _reproduce_source(experiment, source_id, workdir=workdir,
                                  smoke=smoke, overrides=overrides,
                                  executor=executor, experiments=experiments,
                                  progress=progress, chain=(experiment.id,))
    with config.unlocked():
      config.transfer.init_from = init_from
  summary = sweep.run(config, run_plan.grid, run_plan.seeds,
                      workdir=os.path.join(workdir, experiment.id),
                      overrides=overrides, config_path=experiment.path,
                      vmap_seeds=vmap_seeds, executor=executor, progress=progress)
  finished = [r for r in summary.runs if r["result"] is not None]
  analysis, analysis_error = {}, None
  if config.reproduce.analysis and finished:
    analysis, analysis_error = _run_analysis(config.reproduce.analysis, finished)
  card = build_card(run_plan, summary.runs, analysis=analysis,
                    analysis_error=analysis_error, init_from=init_from,
                    seeds_given=seeds, overrides=overrides)
  write_card(card, os.path.join(workdir, experiment.id, CARD_FILE))
  return card


def _reproduce_source(target: Experiment, source_id: str, *, workdir: str,
                      smoke: bool, overrides: Sequence[str],
                      executor: sweep.Executor | None,
                      experiments: Sequence[Experiment] | None,
                      progress: Callable[[str], Any] | None,
                      chain: tuple[str, ...]) -> str:
  """Reproduces the seed 0 of a transfer source; returns that run's workdir.

  The user's overrides apply to the source as to the target (a data
  directory, a progress bar), so that the source's run is the one a
  `cnnjax reproduce` of the source with the same command line would make.
  """
  if source_id in chain:
    raise CnnjaxError("reproduce.init_from_experiment makes a loop: "
                      + " -> ".join(chain + (source_id,)))
  if experiments is None:
    experiments = discover(target.root)
  source = find(experiments, source_id)
  source_plan = plan(source, seeds=1, smoke=smoke, overrides=overrides)
  config = source_plan.config
  upstream = config.reproduce.init_from_experiment
  if upstream:
    with config.unlocked():
      config.transfer.init_from = _reproduce_source(
          source, upstream, workdir=workdir, smoke=smoke, overrides=overrides,
          executor=executor, experiments=experiments,
          progress=progress, chain=chain + (source_id,))
  if progress:
    progress(f"  first the source of its transfer, {source_id} (seed 0)")
  summary = sweep.run(config, source_plan.grid, [0],
                      workdir=os.path.join(workdir, source.id),
                      overrides=overrides, config_path=source.path,
                      executor=executor, progress=progress)
  first = summary.runs[0]  # The first setting's seed 0.
  if first["status"] == "failed":
    raise CnnjaxError(f"the source run of '{target.id}' ({source_id}, "
                      f"{first['slug']} seed 0) failed: {first['error']}")
  return first["workdir"]


def _run_analysis(name: str, runs: Sequence[dict[str, Any]]
                  ) -> tuple[dict[str, dict[str, float]], str | None]:
  """{slug: {figure: value}} of the named analysis, or ({}, its error)."""
  try:
    # Imported by its full name at each call, so that a stand-in module put
    # in sys.modules under that name (as tests do) is the one called.
    from cnnjax.reproduce.analyses import run_analysis
  except ImportError as e:
    return {}, f"the analysis module cannot be imported: {e}"
  records = [{"slug": r["slug"], "setting": r["setting"], "seed": r["seed"],
              "workdir": r["workdir"], "result": r["result"]} for r in runs]
  try:
    figures = run_analysis(name, records)
  except CnnjaxError as e:
    return {}, str(e)
  return {slug: {k: _json_number(v) for k, v in values.items()}
          for slug, values in (figures or {}).items()}, None


def _json_number(value: Any) -> Any:
  """Floats as JSON can hold them (NaN and inf become None)."""
  if hasattr(value, "item") and hasattr(value, "dtype"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
