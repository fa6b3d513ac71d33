"""How long a model's initialization takes to compile, its draws made one by
one (`jax.jit(model.init)`) against batched (`cnnjax.ops.random.init`), and
beside it the compile time of the model's train step.

Each measurement runs in a fresh process with JAX's compilation cache off,
so nothing is reused; the configurations alternate, round after round, and
the table gives medians. The batched and the one-by-one variables are
compared bit for bit in every round.

    python scripts/bench_init.py [--rounds 3] [--models resnet20,resnet50]
        [--step-batch 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = r"""
import hashlib, json, sys, time
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_compilation_cache", False)
from cnnjax.models import create_model, model_input_shape
from cnnjax.ops import random as random_ops
name, mode, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "step":
  from cnnjax.bench import model as bm
  step = bm.compile_step(bm.Options(model=name, batch_size=batch))
  print(json.dumps({"compile_s": step.compile_s}))
  sys.exit()
model = create_model(name)
x = jnp.zeros((1, *model_input_shape(name)))
key = jax.random.key(0)
if mode == "batched":
  fn = jax.jit(random_ops.batch_draws(lambda k, a: model.init(k, a, train=False)))
else:
  fn = jax.jit(lambda k, a: model.init(k, a, train=False))
t0 = time.perf_counter()
lowered = fn.lower(key, x)
t1 = time.perf_counter()
compiled = lowered.compile()
t2 = time.perf_counter()
variables = jax.block_until_ready(compiled(key, x))
t3 = time.perf_counter()
digest = hashlib.sha256()
for leaf in jax.tree_util.tree_leaves(variables):
  digest.update(np.asarray(leaf).tobytes())
print(json.dumps({"trace_s": t1 - t0, "compile_s": t2 - t1, "run_s": t3 - t2,
                  "total_s": t3 - t0, "sha256": digest.hexdigest()}))
"""


def _run(*args) -> dict:
  out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)],
                       check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--models", default="resnet20,resnet18,resnet50,densenet121")
  parser.add_argument("--step-models", default="resnet50",
                      help="models whose train step's compile time is measured too")
  parser.add_argument("--step-batch", type=int, default=32)
  parser.add_argument("--json")
  args = parser.parse_args(argv)
  models = [m for m in args.models.split(",") if m]
  step_models = [m for m in args.step_models.split(",") if m]
  runs: dict[str, dict[str, list]] = {m: {"one_by_one": [], "batched": [], "step": []}
                                      for m in models + step_models}
  for r in range(args.rounds):
    for m in models:
      order = ("one_by_one", "batched") if r % 2 == 0 else ("batched", "one_by_one")
      for mode in order:
        runs[m][mode].append(_run(m, "plain" if mode == "one_by_one" else mode, 0))
      a, b = runs[m]["one_by_one"][-1], runs[m]["batched"][-1]
      if a["sha256"] != b["sha256"]:
        raise SystemExit(f"{m}: batched variables differ from one-by-one ones")
    for m in step_models:
      runs[m]["step"].append(_run(m, "step", args.step_batch))
    print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

  def med(rows, key):
    return statistics.median(row[key] for row in rows)

  print("| model | init, one by one: compile (total) | init, batched: compile (total) "
        "| compile speed-up | train step compile |")
  print("|---|---:|---:|---:|---:|")
  for m in dict.fromkeys(models + step_models):
    one, bat, step = runs[m]["one_by_one"], runs[m]["batched"], runs[m]["step"]
    cells = [m]
    if one:
      cells += [f"{med(one, 'compile_s'):.2f} s ({med(one, 'total_s'):.2f} s)",
                f"{med(bat, 'compile_s'):.2f} s ({med(bat, 'total_s'):.2f} s)",
                f"{med(one, 'compile_s') / med(bat, 'compile_s'):.1f}x"]
    else:
      cells += ["", "", ""]
    cells.append(f"{med(step, 'compile_s'):.2f} s (batch {args.step_batch})" if step else "")
    print("| " + " | ".join(cells) + " |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(runs, f, indent=1)


if __name__ == "__main__":
  main()
