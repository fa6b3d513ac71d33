"""Seeds trained together (one vmapped step) against one after another.

    python scripts/bench_vmap_seeds.py [STEPS]

Four seeds of the MNIST-1D CNN (5,000 signals, batch 100), STEPS steps each
(1,500 by default), with one evaluation and one checkpoint per run. Wall
times include compiling. Prints each repetition and the medians of three.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tests"))

from conftest import tiny_mnist1d_config  # noqa: E402

from cnnjax.train import loop  # noqa: E402

SEEDS = (0, 1, 2, 3)
WORK = os.path.join(tempfile.gettempdir(), "cnnjax_bench_vmap_seeds")


def config(seed: int, steps: int):
  return tiny_mnist1d_config(**{
      "dataset.num_samples": 5000, "batch_size": 100, "num_steps": steps,
      "log_every": 100, "eval_every": steps, "checkpoint_every": steps,
      "seed": seed})


def main(steps: int) -> None:
  times = {"one_after_another_s": [], "together_s": []}
  for repetition in range(3):
    shutil.rmtree(WORK, ignore_errors=True)
    start = time.perf_counter()
    for seed in SEEDS:
      loop.train_and_evaluate(config(seed, steps), f"{WORK}/alone{seed}")
    times["one_after_another_s"].append(time.perf_counter() - start)
    start = time.perf_counter()
    loop.train_seeds_together([config(s, steps) for s in SEEDS],
                              [f"{WORK}/together{s}" for s in SEEDS])
    times["together_s"].append(time.perf_counter() - start)
    print(repetition, times, flush=True)
  medians = {k: statistics.median(v) for k, v in times.items()}
  medians["speedup"] = medians["one_after_another_s"] / medians["together_s"]
  print(json.dumps(medians))


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
