"""Max pooling on the CPU, forward + backward, in one process, timed in
turns, medians of --repeats: 'lax' is `lax.reduce_window` with JAX's own
gradient (a select-and-scatter), 'xla' cnnjax's XLA backend (the same
forward, cnnjax.ops.pool_grad's gradient), 'onednn' the oneDNN backend
(cnnjax.ops.onednn.pooling), 'torch' PyTorch's channels-last kernel.

    python scripts/bench_max_pool.py [--repeats 15] [--no-torch]

Shapes: ResNet's stem (3x3 / 2, padding 1, over 32x112x112x64), VGG-16's
first pooling at batch 32 (2x2 / 2 over 32x224x224x64) and GoogLeNet's
3x3 / 1 in an inception block (32x28x28x192).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

# (shape, window, stride, padding)
CASES = (((32, 112, 112, 64), 3, 2, 1), ((32, 224, 224, 64), 2, 2, 0),
         ((32, 28, 28, 192), 3, 1, 1))


def _jax_steps(shape, window, stride, padding):
  import jax
  import jax.numpy as jnp

  from cnnjax.layers import pooling
  from cnnjax.ops import backend

  x = jax.random.normal(jax.random.key(0), shape)
  steps = {}
  for name in ("lax", "xla", "onednn"):
    backend.set_conv_backend("onednn" if name == "onednn" else "xla")
    if name == "lax":  # JAX's own gradient: select-and-scatter.
      dims, strides, pads, _ = pooling._window_args(x, window, stride, padding, "max_pool")
      pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pads)  # noqa: E731
    else:
      pool = lambda x: pooling.max_pool(x, window, stride, padding)  # noqa: E731
    weights = jax.random.normal(jax.random.key(1), jax.eval_shape(pool, x).shape)
    grad = jax.jit(jax.grad(lambda x, w: (pool(x) * w).sum()))  # Traced with this backend.
    jax.block_until_ready(grad(x, weights))
    steps[name] = lambda grad=grad, w=weights: jax.block_until_ready(grad(x, w))
  return steps


def _torch_step(shape, window, stride, padding):
  import torch

  n, h, w, c = shape
  x = torch.randn(n, c, h, w).to(memory_format=torch.channels_last).requires_grad_(True)
  weights = torch.randn_like(torch.nn.functional.max_pool2d(x, window, stride, padding))

  def step():
    x.grad = None
    (torch.nn.functional.max_pool2d(x, window, stride, padding) * weights).sum().backward()
  step()
  return step


def _timed(steps, repeats):
  times = {name: [] for name in steps}
  for _ in range(repeats):
    for name, step in steps.items():
      start = time.perf_counter()
      step()
      times[name].append((time.perf_counter() - start) * 1000)
  return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--no-torch", action="store_true")
  args = parser.parse_args(argv)
  from cnnjax import runtime
  runtime.setup(compilation_cache=None)
  import jax

  from cnnjax.bench.compat import cpu_model
  from cnnjax.ops import onednn
  if not onednn.available()[0]:
    print(f"oneDNN is not available: {onednn.available()[1]}")
    return 1
  if not args.no_torch:
    import torch
    torch.set_num_threads(2)
  print(f"{cpu_model()}; jax {jax.__version__}, oneDNN {onednn.version()}; forward + "
        f"backward, ms, median of {args.repeats}")
  for shape, window, stride, padding in CASES:
    steps = _jax_steps(shape, window, stride, padding)
    if not args.no_torch:
      steps["torch"] = _torch_step(shape, window, stride, padding)
    m = _timed(steps, args.repeats)
    extra = f", torch {m['torch']:.2f}" if "torch" in m else ""
    print(f"  {window}x{window} / {stride} over {'x'.join(map(str, shape))}: lax "
          f"{m['lax']:.2f}, xla {m['xla']:.2f}, onednn {m['onednn']:.2f}{extra}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
