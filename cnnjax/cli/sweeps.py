"""`cnnjax sweep` and `cnnjax reproduce`: many runs, on the executor asked for.

    cnnjax sweep ... --workers 4                       # 4 local worker processes
    cnnjax sweep ... --executor ray [--ray-address auto] [--cpus-per-trial 2] [--gpus-per-trial 1]
    cnnjax sweep ... --executor slurm --slurm-partition gpu --slurm-time 120 --gpus-per-trial 1
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

from cnnjax.cli import paths
from cnnjax.errors import CnnjaxError

# Which executor each option belongs to (for one-sentence refusals).
_OPTION_OWNERS = {
    "workers": ("local",), "ray_address": ("ray",),
    "cpus_per_trial": ("ray", "slurm"), "gpus_per_trial": ("ray", "slurm"),
    "slurm_partition": ("slurm",), "slurm_time": ("slurm",),
    "slurm_constraint": ("slurm",), "slurm_mem_gb": ("slurm",),
    "slurm_array_parallelism": ("slurm",), "slurm_cluster": ("slurm",),
}


def add_executor_options(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("where the runs train")
  g.add_argument("--executor", choices=("serial", "local", "ray", "slurm"),
                 help="serial: one run after another in this process (the "
                 "default); local: --workers processes on this machine; ray: a "
                 "Ray task per run; slurm: a SLURM job per run (submitit)")
  g.add_argument("--workers", type=int, metavar="N", help="local worker "
                 "processes, each with its own GPU or share of the CPU cores "
                 "(implies --executor local)")
  g.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster "
                 "('auto', 'ray://head:10001'); default: start a local Ray")
  g.add_argument("--cpus-per-trial", type=float, metavar="N",
                 help="CPUs of each run's task or job (default 1)")
  g.add_argument("--gpus-per-trial", type=float, metavar="N",
                 help="GPUs of each run's task or job (default 0)")
  g.add_argument("--slurm-partition", metavar="NAME")
  g.add_argument("--slurm-time", type=int, metavar="MIN",
                 help="each job's time limit in minutes (default 60)")
  g.add_argument("--slurm-constraint", metavar="EXPR")
  g.add_argument("--slurm-mem-gb", type=float, metavar="GB")
  g.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                 help="how many jobs of the sweep's array run at once")
  g.add_argument("--slurm-cluster", choices=("slurm", "local"),
                 help="local: run the jobs as processes on this machine "
                 "through submitit (a dry run without SLURM); default: SLURM")


def executor_from(args):
  """The executor the flags ask for; an option for another one is refused."""
  from cnnjax import sweep

  name = args.executor or ("local" if args.workers is not None else "serial")
  for option, owners in _OPTION_OWNERS.items():
    if getattr(args, option) is not None and name not in owners:
      flag = "--" + option.replace("_", "-")
      raise CnnjaxError(f"{flag} is an option of --executor {' or '.join(owners)}, "
                        f"not of --executor {name}")
  if name == "local":
    return sweep.LocalExecutor(args.workers if args.workers is not None else 2)
  cpus = args.cpus_per_trial if args.cpus_per_trial is not None else 1
  gpus = args.gpus_per_trial if args.gpus_per_trial is not None else 0
  if cpus <= 0 or gpus < 0:
    raise CnnjaxError("--cpus-per-trial must be positive and --gpus-per-trial "
                      "not negative")
  if name == "ray":
    return sweep.RayExecutor(args.ray_address, cpus_per_trial=cpus, gpus_per_trial=gpus)
  if name == "slurm":
    if gpus != int(gpus) or cpus != int(cpus):
      raise CnnjaxError("--executor slurm takes whole CPUs and GPUs per trial")
    options = {"cpus_per_trial": int(cpus), "gpus_per_trial": int(gpus),
               "partition": args.slurm_partition, "constraint": args.slurm_constraint,
               "mem_gb": args.slurm_mem_gb, "cluster": args.slurm_cluster}
    if args.slurm_time is not None:
      options["time_min"] = args.slurm_time
    if args.slurm_array_parallelism is not None:
      options["array_parallelism"] = args.slurm_array_parallelism
    return sweep.SlurmExecutor(**options)
  return None  # serial: this process.


def _parse_seed_list(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    seeds = []
  if not seeds:
    raise CnnjaxError(f"--seed-list takes integers such as 0,5,7, not '{text}'")
  return seeds


def _runs(count: int) -> str:
  return f"{count} run" + ("" if count == 1 else "s")


def cmd_sweep(args, overrides: list[str]) -> int:
  from cnnjax import config as config_lib
  from cnnjax import sweep

  grid: dict[str, list[str]] = {}
  for text in args.grid:
    key, values = sweep.parse_grid_flag(text)
    if key in grid:
      raise CnnjaxError(f"--grid names '{key}' twice; give all its values in one --grid")
    grid[key] = values
  config = config_lib.load_config(args.config)
  if args.seed_list is not None:
    seeds = _parse_seed_list(args.seed_list)
  else:
    if args.seeds < 1:
      raise CnnjaxError(f"--seeds must be positive, got {args.seeds}")
    # Seeds count up from config.seed, as the overrides leave it.
    first = config_lib.apply_overrides(copy.deepcopy(config), overrides).seed
    seeds = list(range(first, first + args.seeds))
  from cnnjax.config.files import default_workdir

  workdir = (paths.output_dir(args.workdir, "--workdir") if args.workdir is not None
             else os.path.join("runs", "sweeps",
                               os.path.relpath(default_workdir(args.config), "runs")))
  summary = sweep.run(config, grid, seeds, workdir=workdir, overrides=overrides,
                      metrics=args.metric or None, config_path=args.config,
                      vmap_seeds=args.vmap_seeds, executor=executor_from(args))
  print()
  print(summary.to_markdown())
  print()
  print(f"Summary in {', '.join(summary.files.values())}; "
        f"the runs in {os.path.join(workdir, '<setting>', 'seed_<s>')}")
  trained, done = summary.count("trained"), summary.count("done")
  failed = summary.failed
  if not trained and not failed:
    print(f"Nothing new was trained: all {_runs(done)} were already done.")
  else:
    print(f"{_runs(trained)} trained, {done} already done, {len(failed)} failed.")
  for run in failed:
    print(f"cnnjax: {run['slug']} seed {run['seed']} failed: {run['error']}",
          file=sys.stderr)
  return 1 if failed else 0


def cmd_reproduce(args, overrides: list[str]) -> int:
  from cnnjax import reproduce

  # Output paths first: an empty one would silently mean the default.
  if args.workdir is not None:
    paths.output_dir(args.workdir, "--workdir")
  if args.results is not None:
    paths.output_file(args.results, "--results", make_parents=True)
    paths.output_dir(reproduce.results_dirs(args.results)[0],
                     "--results (its results/cards folder)")
  experiments = reproduce.discover("experiments")
  chosen = reproduce.select(experiments, args.filter)
  if args.seeds is not None and args.seeds < 1:
    raise CnnjaxError(f"--seeds must be positive, got {args.seeds}")
  # Every config, override and grid is checked before anything trains.
  plans = [reproduce.plan(e, seeds=args.seeds, smoke=args.smoke, overrides=overrides)
           for e in chosen]
  if args.list:
    print(reproduce.table([reproduce.plan_line(p) for p in plans],
                          ("id", "metric", "published", "runs", "source")))
    return 0
  if args.render_only:
    results = args.results or "RESULTS.md"
    cards_dir, _ = reproduce.results_dirs(results)
    written = reproduce.refresh_stored_cards(cards_dir, experiments)
    reproduce.update_results(results, cards_dir)
    print(f"{len(written)} stored cards recomputed (intervals, differences, claims); "
          f"{results} rewritten; nothing trained")
    return 0
  from cnnjax.train.loop import TrainingInterrupted

  executor = executor_from(args)
  # Smoke cards never reach the repository's RESULTS.md unless asked to.
  smoke = any(p.config.smoke for p in plans)
  workdir = args.workdir or os.path.join(
      "runs", "reproduce_smoke" if smoke else "reproduce")
  results = args.results or (os.path.join(workdir, "RESULTS.md") if smoke
                             else "RESULTS.md")
  cards_dir, _ = reproduce.results_dirs(results)
  cards, errors, interrupted = [], [], None
  for index, (experiment, p) in enumerate(zip(chosen, plans)):
    print(f"[{index + 1}/{len(chosen)}] {experiment.id}: {_runs(p.num_runs)}",
          flush=True)
    try:
      card = reproduce.reproduce_one(
          experiment, workdir=workdir, seeds=args.seeds, smoke=args.smoke,
          overrides=overrides, vmap_seeds=args.vmap_seeds, experiments=experiments,
          executor=executor,
          progress=lambda line: print(f"    {line}", flush=True))
    except TrainingInterrupted as e:
      interrupted = e
      break
    except CnnjaxError as e:
      errors.append(experiment.id)
      print(f"cnnjax: error: {experiment.id}: {e}", file=sys.stderr)
      continue
    reproduce.store_card(card, cards_dir)
    cards.append(card)
  if cards:
    reproduce.update_results(results, cards_dir)
    print()
    print(reproduce.table([reproduce.summary_line(c) for c in cards],
                          ("id", "published", "measured", "runs", "wall time")))
    print()
    print(f"Cards in {cards_dir}; results in {results}")
  failed = [(c["id"], f) for c in cards for f in c["failed"]]
  for experiment_id, f in failed:
    print(f"cnnjax: {experiment_id}: {f['setting']} seed {f['seed']} failed: "
          f"{f['error']}", file=sys.stderr)
  if interrupted is not None:
    print(f"cnnjax: {interrupted}; rerun the same command to resume", file=sys.stderr)
    return interrupted.exit_code
  return 2 if errors else 1 if failed else 0


def add_commands(sub) -> None:
  """Adds `sweep` and `reproduce` to the `cnnjax` subcommands."""
  p = sub.add_parser(
      "sweep", help="train an experiment over a grid of config values and "
      "several seeds, and summarize each setting (mean and std over seeds)",
      description="Overrides for every run: --config.KEY=VALUE. Grid values "
      "are parsed as overrides are and separated by commas, or by ';' when a "
      "value holds a comma: --grid 'model.stage_sizes=(1,1);(2,2)'. Each run "
      "trains in WORKDIR/<setting>/seed_<s>; finished runs are not trained "
      "again and interrupted ones resume.")
  p.add_argument("--config", required=True, help="experiment file")
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                 help="a config key and its values, e.g. "
                 "optimizer.learning_rate=0.1,0.01 (repeat for a cross product)")
  seeds = p.add_mutually_exclusive_group()
  seeds.add_argument("--seeds", type=int, default=1, metavar="N",
                     help="train seeds config.seed .. config.seed+N-1 (default 1)")
  seeds.add_argument("--seed-list", metavar="S1,S2,...",
                     help="train these seeds instead, e.g. 0,5,7")
  p.add_argument("--workdir", help="the sweep's directory "
                 "(default: runs/sweeps/<experiment>)")
  p.add_argument("--vmap-seeds", action="store_true",
                 help="train each setting's seeds together in one vmapped "
                 "step (small models whose data fits on one device)")
  p.add_argument("--metric", action="extend", nargs="+", default=[], metavar="KEY",
                 help="summarize only these final metrics, e.g. test/accuracy")
  add_executor_options(p)
  p.set_defaults(func=cmd_sweep, takes_overrides=True)

  p = sub.add_parser(
      "reproduce", help="reproduce published results: run the experiments "
      "under experiments/ and rewrite their result cards in RESULTS.md",
      description="Overrides for every run: --config.KEY=VALUE. Runs train "
      "in WORKDIR/<experiment id>/<setting>/seed_<s>; finished runs are not "
      "trained again, so an interrupted reproduction resumes.")
  p.add_argument("--filter", action="append", default=[], metavar="TEXT",
                 help="only experiments whose id contains TEXT (repeatable)")
  p.add_argument("--smoke", action="store_true", help="a few steps per run, "
                 "to check that everything runs (cards go to WORKDIR/RESULTS.md)")
  p.add_argument("--seeds", type=int, metavar="N",
                 help="seeds 0..N-1 (default: each experiment's reproduce.seeds)")
  p.add_argument("--workdir", help="where the runs train (default: "
                 "runs/reproduce, runs/reproduce_smoke with --smoke)")
  p.add_argument("--results", help="the results file to update (default: "
                 "RESULTS.md, WORKDIR/RESULTS.md with --smoke)")
  p.add_argument("--list", action="store_true",
                 help="list the experiments and their runs, and exit")
  p.add_argument("--render-only", action="store_true",
                 help="recompute the stored cards' statistics and claims from "
                 "their per-seed values and rewrite the results file; train nothing")
  p.add_argument("--vmap-seeds", action="store_true",
                 help="train each setting's seeds together in one vmapped step")
  add_executor_options(p)
  p.set_defaults(func=cmd_reproduce, takes_overrides=True)
