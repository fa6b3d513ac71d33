"""Where a CNN train step spends its time on a CPU: one 3x3 convolution's
forward pass, input gradient and weight gradient, XLA against PyTorch.

For each (map size, channels) of a CIFAR ResNet's three stages, at batch 128,
times (median of --repeats, after a warm-up):

  xla-default   jax's own settings (convolutions through YNNPACK)
  xla-eigen     with cnnjax's XLA flag (convolutions through XLA's Eigen path)
  cnnjax        the flag plus the batch-chunked weight gradient
                (cnnjax.ops.weight_grad)
  onednn        cnnjax's oneDNN backend through jax.ffi (cnnjax.ops.onednn;
                the onednn extra; left out where it cannot run)
  torch         PyTorch eager (oneDNN), channels-last

Each XLA configuration runs in its own process (XLA reads its flags once).

    python scripts/bench_conv_layers.py [--repeats 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = ((32, 16), (16, 32), (8, 64))  # (map size, channels): the 3 stages.
BATCH = 128


def _median_ms(fn, repeats):
  fn()
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(1000 * (time.perf_counter() - start))
  return statistics.median(times)


def time_xla(repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from cnnjax.ops.backend import conv_general_dilated  # CNNJAX_CONV_BACKEND

  dn = ("NHWC", "HWIO", "NHWC")
  conv = lambda x, w: conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),  # noqa: E731
                                           dimension_numbers=dn)
  out = {}
  for size, c in SHAPES:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((BATCH, size, size, c)), jnp.float32)
    w = jnp.asarray(0.1 * rng.standard_normal((3, 3, c, c)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((BATCH, size, size, c)), jnp.float32)
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1])
    out[f"{size}x{size}x{c}"] = {
        "forward": _median_ms(lambda: jax.block_until_ready(fwd(x, w)), repeats),
        "input_grad": _median_ms(lambda: jax.block_until_ready(dx(x, w, g)), repeats),
        "weight_grad": _median_ms(lambda: jax.block_until_ready(dw(x, w, g)), repeats)}
  return out


def time_torch(repeats: int) -> dict:
  import torch
  out = {}
  for size, c in SHAPES:
    cl = torch.channels_last
    x = torch.randn(BATCH, c, size, size).contiguous(memory_format=cl)
    w = (0.1 * torch.randn(c, c, 3, 3)).contiguous(memory_format=cl)
    g = torch.randn(BATCH, c, size, size).contiguous(memory_format=cl)

    def backward(mask):
      return torch.ops.aten.convolution_backward(
          g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
    out[f"{size}x{size}x{c}"] = {
        "forward": _median_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1),
                              repeats),
        "input_grad": _median_ms(lambda: backward([True, False, False]), repeats),
        "weight_grad": _median_ms(lambda: backward([False, True, False]), repeats)}
  return out


CONFIGS = {
    "xla-default": {"CNNJAX_XLA_DEFAULTS": "0", "CNNJAX_WEIGHT_GRAD_CHUNKS": "1"},
    "xla-eigen": {"CNNJAX_WEIGHT_GRAD_CHUNKS": "1"},
    "cnnjax": {"CNNJAX_CONV_BACKEND": "xla"},
    "onednn": {"CNNJAX_CONV_BACKEND": "onednn"},
}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--json")
  parser.add_argument("--worker", choices=("xla", "torch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    # What the cnnjax command does first (importing cnnjax sets nothing); off
    # with CNNJAX_XLA_DEFAULTS=0, as in 'xla-default'.
    from cnnjax import runtime
    runtime.apply_xla_defaults()
    fn = time_xla if args.worker == "xla" else time_torch
    print(json.dumps(fn(args.repeats)))
    return 0

  results = {}
  for name, env in [*CONFIGS.items(), ("torch", {})]:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    environ.update(env)
    worker = "torch" if name == "torch" else "xla"
    proc = subprocess.run([sys.executable, __file__, "--worker", worker,
                           "--repeats", str(args.repeats)],
                          env=environ, capture_output=True, text=True)
    if proc.returncode != 0:
      if name == "onednn":  # Not installed here: the other columns stand.
        print(f"onednn left out: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        continue
      raise SystemExit(proc.stderr)
    results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

  print(f"3x3 convolution, batch {BATCH}, float32; milliseconds (median of "
        f"{args.repeats})\n")
  print("| layer | pass | " + " | ".join(results) + " |")
  print("|---|---|" + "---:|" * len(results))
  for layer in results["torch"]:
    for part in ("forward", "input_grad", "weight_grad"):
      cells = " | ".join(f"{results[n][layer][part]:.1f}" for n in results)
      print(f"| {layer} | {part.replace('_', ' ')} | {cells} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
