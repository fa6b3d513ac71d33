"""Batch norm in training on the CPU: flax's autodiff against cnnjax's
hand-derived gradient (cnnjax.ops.norm), forward + backward of BN + ReLU at
ResNet-20's three shapes (batch 128), in one process, medians of --repeats.

    python scripts/bench_batch_norm.py [--repeats 30]

The two paths are timed in turns. 'flax' is flax's `nn.BatchNorm.__call__`
(momentum 0.9, epsilon 1e-5); 'cnnjax' is `layers.TorchLikeBatchNorm`, which
takes `batch_norm_train` on the CPU. The last line weights each shape by
how many batch norms ResNet-20 has there (7, 6, 6).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

SHAPES = (((128, 32, 32, 16), 7), ((128, 16, 16, 32), 6), ((128, 8, 8, 64), 6))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args(argv)
  from cnnjax import runtime
  runtime.setup(compilation_cache=None)
  import flax.linen as nn
  import jax

  from cnnjax import layers
  from cnnjax.bench.compat import cpu_model

  print(f"{cpu_model()}; jax {jax.__version__}; forward + backward of BN + ReLU, ms")
  totals = {"flax": 0.0, "cnnjax": 0.0}
  for shape, count in SHAPES:
    x = jax.random.normal(jax.random.key(0), shape)
    weights = jax.random.normal(jax.random.key(1), shape)
    modules = {"flax": nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5),
               "cnnjax": layers.TorchLikeBatchNorm(use_running_average=False)}
    steps = {}
    for name, module in modules.items():
      variables = module.init(jax.random.key(0), x)

      def loss(params, x, module=module, stats=variables["batch_stats"]):
        y, _ = module.apply({"params": params, "batch_stats": stats}, x,
                            mutable=["batch_stats"])
        return (jax.nn.relu(y) * weights).sum()

      grad = jax.jit(jax.grad(loss, (0, 1)))
      steps[name] = (grad, variables["params"])
      jax.block_until_ready(grad(variables["params"], x))
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
      for name, (grad, params) in steps.items():
        start = time.perf_counter()
        jax.block_until_ready(grad(params, x))
        times[name].append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name in totals:
      totals[name] += count * medians[name]
    print(f"  {'x'.join(map(str, shape))}: flax {medians['flax']:.2f}, cnnjax "
          f"{medians['cnnjax']:.2f} ({medians['flax'] / medians['cnnjax']:.2f}x)")
  print(f"  ResNet-20's 19 batch norms: flax {totals['flax']:.1f}, cnnjax "
        f"{totals['cnnjax']:.1f} ({totals['flax'] / totals['cnnjax']:.2f}x)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
