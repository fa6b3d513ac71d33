"""Sweep throughput by executor, and the per-trial overhead of Ray and submitit.

    python scripts/bench_sweep_executors.py [--steps 300] [--repeats 3] [--part both]

Part 1 (throughput): the MNIST-1D CNN on 5,000 signals, batch 100, STEPS
steps, over 8 learning rates x 3 seeds = 24 runs, as `cnnjax sweep` runs it
from the shell: serially in one process, and with 1, 2 and 4 local worker
processes. Each repetition runs every executor once, in rotating order, into
a fresh workdir; wall times include starting Python, compiling and writing
the summary. XLA's compilation cache points at one directory that a warm-up
sweep fills first, so every executor finds the same programs compiled.

Part 2 (overhead per trial): 8 runs of 10 steps each, serial, on a local Ray
(started by the sweep) and through submitit's local executor (each trial a
job). (wall time - serial wall time) / 8 is what each engine adds to a trial.

Prints every repetition, then the medians as JSON.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WORK = os.path.join(tempfile.gettempdir(), "cnnjax_bench_sweep_executors")
CONFIG = "experiments/mnist1d/cnn.py"
RATES = ("0.0005", "0.001", "0.002", "0.003", "0.005", "0.007", "0.01", "0.02")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

THROUGHPUT = {"serial": [], "workers_1": ["--executor", "local", "--workers", "1"],
              "workers_2": ["--executor", "local", "--workers", "2"],
              "workers_4": ["--executor", "local", "--workers", "4"]}
OVERHEAD = {"serial": [], "ray": ["--executor", "ray", "--cpus-per-trial", "2"],
            "submitit_local": ["--executor", "slurm", "--slurm-cluster", "local",
                               "--slurm-partition", "local", "--slurm-time", "10",
                               "--gpus-per-trial", "0", "--cpus-per-trial", "2"]}


def sweep(workdir: str, executor: list[str], *, rates, seeds: int, steps: int,
          env: dict) -> float:
  """Runs one `cnnjax sweep` from a fresh process; its wall time in seconds."""
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, "-m", "cnnjax.cli", "sweep", "--config", CONFIG,
             "--grid", "optimizer.learning_rate=" + ",".join(rates),
             "--seeds", str(seeds), "--workdir", workdir, *executor,
             "--config.dataset.num_samples=5000", "--config.batch_size=100",
             f"--config.num_steps={steps}", f"--config.log_every={steps}",
             f"--config.eval_every={steps}", f"--config.checkpoint_every={steps}"]
  start = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
  elapsed = time.perf_counter() - start
  if done.returncode != 0:
    raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                     f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
  return elapsed


def measure(executors: dict, *, rates, seeds: int, steps: int, repeats: int,
            env: dict) -> dict:
  times = {name: [] for name in executors}
  sweep(f"{WORK}/warmup", [], rates=rates, seeds=1, steps=steps, env=env)
  names = list(executors)
  for repetition in range(repeats):
    order = names[repetition % len(names):] + names[:repetition % len(names)]
    for name in order:
      times[name].append(sweep(f"{WORK}/{name}", executors[name], rates=rates,
                               seeds=seeds, steps=steps, env=env))
    print(repetition, {k: [round(t, 1) for t in v] for k, v in times.items()},
          flush=True)
  return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--part", choices=("throughput", "overhead", "both"),
                      default="both")
  args = parser.parse_args()
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=f"{WORK}/xla_cache")
  shutil.rmtree(WORK, ignore_errors=True)
  report = {"cpus": os.cpu_count()}
  if args.part in ("throughput", "both"):
    medians = measure(THROUGHPUT, rates=RATES, seeds=3, steps=args.steps,
                      repeats=args.repeats, env=env)
    report["throughput_s"] = medians
    report["runs_per_minute"] = {k: 24 * 60 / v for k, v in medians.items()}
    report["speedup_vs_serial"] = {k: medians["serial"] / v
                                   for k, v in medians.items()}
  if args.part in ("overhead", "both"):
    medians = measure(OVERHEAD, rates=RATES, seeds=1, steps=10,
                      repeats=args.repeats, env=env)
    report["overhead_wall_s"] = medians
    report["overhead_per_trial_s"] = {k: (v - medians["serial"]) / len(RATES)
                                      for k, v in medians.items() if k != "serial"}
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
