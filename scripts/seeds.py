"""Trains one experiment over several seeds and prints a RESULTS.md row.

    python scripts/seeds.py --config experiments/mnist1d/cnn.py --seeds 3 [--config.KEY=VALUE ...]

Each seed trains in `<workdir>/seed<N>` (default workdir: runs/<experiment>), so
rerunning skips finished seeds and resumes unfinished ones. The row shows the
published value, the measured mean and standard deviation over seeds, the
individual values, and the median wall time per run.
"""

import argparse
import os
import statistics
import sys

from cnnjax import config as config_lib
from cnnjax.cli import default_workdir
from cnnjax.errors import CnnjaxError
from cnnjax.train.loop import train_and_evaluate


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--workdir")
  args, overrides = parser.parse_known_args(argv)
  workdir = args.workdir or default_workdir(args.config)
  values, times = [], []
  try:
    for seed in range(args.seeds):
      config = config_lib.load_config(args.config)
      config_lib.apply_overrides(config, overrides + [f"seed={seed}"])
      result = train_and_evaluate(config, os.path.join(workdir, f"seed{seed}"),
                                  config_path=args.config)
      metric = config.reference.metric or "test/accuracy"
      values.append(result["final"][metric])
      times.append(result["wall_time_s"])
      print(f"seed {seed}: {metric} = {values[-1]:.4f} ({times[-1]:.1f} s)", flush=True)
  except CnnjaxError as e:
    print(f"seeds.py: error: {e}", file=sys.stderr)
    return 2
  mean = statistics.mean(values)
  spread = statistics.stdev(values) if len(values) > 1 else 0.0
  published = config.reference.value
  print(f"| {args.config} | {100 * published:.1f} | {100 * mean:.1f} ± {100 * spread:.1f} "
        f"| {', '.join(f'{100 * v:.1f}' for v in values)} | {statistics.median(times):.0f} s |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
