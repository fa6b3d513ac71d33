"""When does the FFT convolution win? Time the forward pass against kernel size.

lax, direct and im2col do F^2 multiply-adds per output pixel and channel pair;
the FFT does O(log L) per pixel whatever the kernel size, so beyond some
kernel size it must win. Timings are of the forward pass, jitted, on
`jax.devices()[0]`.

    python -m cnnjax.ops.benchmark --image-size 64 --kernel-sizes 3,5,7,9 \
        --implementations lax,fft --json crossover.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.ops.conv import CONV_IMPLEMENTATIONS

DEFAULT_KERNEL_SIZES = (3, 5, 7, 9, 11, 15, 21, 31)
DEFAULT_IMPLEMENTATIONS = ("lax", "fft", "direct", "im2col")


def _check_implementations(implementations: Sequence[str]) -> tuple[str, ...]:
  implementations = tuple(implementations)
  if not implementations:
    raise CnnjaxError("name at least one implementation to time")
  unknown = [i for i in implementations if i not in CONV_IMPLEMENTATIONS]
  if unknown:
    raise CnnjaxError(f"unknown convolution implementation(s) {', '.join(unknown)}; "
                      f"choose from {', '.join(CONV_IMPLEMENTATIONS)}")
  return implementations


def _time_ms(fn, *args, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(1000 * (time.perf_counter() - start))
  return times


def conv_crossover(image_size: int = 64, kernel_sizes: Sequence[int] = DEFAULT_KERNEL_SIZES,
                   batch: int = 8, in_channels: int = 3, out_channels: int = 16,
                   repeats: int = 5,
                   implementations: Sequence[str] = DEFAULT_IMPLEMENTATIONS,
                   padding: str = "SAME", seed: int = 0,
                   progress: Callable[[dict], None] | None = None) -> list[dict]:
  """Times the forward 2-D convolution for each (kernel size, implementation).

  Input (batch, image_size, image_size, in_channels), kernel (F, F, in, out),
  stride 1. Each configuration is jit-compiled once (compile time reported
  separately), run once to warm up, then timed `repeats` times with
  `block_until_ready`; the row holds the median. `max_abs_diff` is the largest
  difference from `conv_lax` on the same inputs, as a sanity check.
  `progress`, if given, is called with each row as soon as it is measured.
  """
  implementations = _check_implementations(implementations)
  kernel_sizes = tuple(int(k) for k in kernel_sizes)
  if not kernel_sizes:
    raise CnnjaxError("name at least one kernel size to time")
  if min(image_size, batch, in_channels, out_channels, repeats) < 1:
    raise CnnjaxError("image size, batch, channels and repeats must all be at least 1")
  if min(kernel_sizes) < 1:
    raise CnnjaxError(f"kernel sizes must be at least 1, got {list(kernel_sizes)}")
  if max(kernel_sizes) > image_size:
    raise CnnjaxError(f"kernel size {max(kernel_sizes)} is bigger than the image "
                      f"({image_size} x {image_size})")
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, image_size, image_size, in_channels)),
                  jnp.float32)
  reference = jax.jit(functools.partial(CONV_IMPLEMENTATIONS["lax"], padding=padding))
  rows = []
  for f in kernel_sizes:
    w = rng.standard_normal((f, f, in_channels, out_channels)) / np.sqrt(f * f * in_channels)
    w = jnp.asarray(w, jnp.float32)  # scaled so that outputs are O(1), for the error check
    expected = reference(x, w)
    for name in implementations:
      fn = jax.jit(functools.partial(CONV_IMPLEMENTATIONS[name], padding=padding))
      start = time.perf_counter()
      compiled = fn.lower(x, w).compile()
      compile_ms = 1000 * (time.perf_counter() - start)
      out = jax.block_until_ready(compiled(x, w))  # warm-up
      times = _time_ms(compiled, x, w, repeats=repeats)
      rows.append(dict(
          kernel_size=f, implementation=name, median_ms=statistics.median(times),
          min_ms=min(times), compile_ms=compile_ms,
          max_abs_diff=float(jnp.max(jnp.abs(out - expected))),
          image_size=image_size, batch=batch, in_channels=in_channels,
          out_channels=out_channels, repeats=repeats, padding=padding))
      if progress is not None:
        progress(rows[-1])
  return rows


def find_crossovers(rows: Sequence[dict], fast: str = "fft") -> dict[str, int | None]:
  """Per other implementation: the smallest kernel size from which `fast` wins.

  "From which" means `fast` has a lower median time at that kernel size and at
  every larger one measured; None if it is not faster at the largest size.
  """
  times: dict[str, dict[int, float]] = {}
  for row in rows:
    times.setdefault(row["implementation"], {})[row["kernel_size"]] = row["median_ms"]
  if fast not in times:
    return {}
  crossovers = {}
  for name, by_size in times.items():
    if name == fast:
      continue
    sizes = sorted(set(by_size) & set(times[fast]))
    crossover = None
    for f in reversed(sizes):
      if times[fast][f] < by_size[f]:
        crossover = f
      else:
        break
    crossovers[name] = crossover
  return crossovers


def format_table(rows: Sequence[dict]) -> str:
  """Markdown table: one row per kernel size, median ms per implementation."""
  names = list(dict.fromkeys(r["implementation"] for r in rows))
  sizes = sorted({r["kernel_size"] for r in rows})
  ms = {(r["kernel_size"], r["implementation"]): r["median_ms"] for r in rows}
  speedup = "fft" in names and "lax" in names
  header = ["kernel"] + [f"{n} (ms)" for n in names] + (["fft speedup vs lax"] if speedup else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
  for f in sizes:
    cells = [f"{f}x{f}"]
    cells += [f"{ms[f, n]:.2f}" if (f, n) in ms else "-" for n in names]
    if speedup:
      ok = (f, "fft") in ms and (f, "lax") in ms
      cells.append(f"{ms[f, 'lax'] / ms[f, 'fft']:.2f}x" if ok else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _int_list(text: str, name: str) -> list[int]:
  try:
    return [int(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise CnnjaxError(f"{name} must be comma-separated integers, got {text!r}") from None


def _report_progress(row: dict) -> None:
  print(f"  {row['kernel_size']}x{row['kernel_size']} {row['implementation']}: "
        f"{row['median_ms']:.2f} ms (compile {row['compile_ms'] / 1000:.1f} s)",
        file=sys.stderr, flush=True)


def device_description() -> str:
  device = jax.devices()[0]
  return f"{device.platform} ({device.device_kind}), {jax.device_count()} device(s)"


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the crossover benchmark and prints a markdown table; returns 0."""
  parser = argparse.ArgumentParser(
      prog="cnnjax conv-benchmark",
      description="Time lax / FFT / direct / im2col convolutions against kernel size.")
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--in-channels", type=int, default=3)
  parser.add_argument("--out-channels", type=int, default=16)
  parser.add_argument("--kernel-sizes", default=",".join(map(str, DEFAULT_KERNEL_SIZES)),
                      help="comma-separated, e.g. 3,5,7")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--implementations", default=",".join(DEFAULT_IMPLEMENTATIONS),
                      help=f"comma-separated subset of {','.join(CONV_IMPLEMENTATIONS)}")
  parser.add_argument("--padding", default="SAME", help="SAME or VALID")
  parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
  parser.add_argument("--progress", action="store_true",
                      help="print each measurement to stderr as it is taken")
  args = parser.parse_args(argv)

  implementations = _check_implementations(
      [t.strip() for t in args.implementations.split(",") if t.strip()])
  if args.padding.upper() not in ("SAME", "VALID"):
    raise CnnjaxError(f"--padding must be SAME or VALID, got {args.padding!r}")
  rows = conv_crossover(
      image_size=args.image_size, kernel_sizes=_int_list(args.kernel_sizes, "--kernel-sizes"),
      batch=args.batch, in_channels=args.in_channels, out_channels=args.out_channels,
      repeats=args.repeats, implementations=implementations, padding=args.padding.upper(),
      progress=_report_progress if args.progress else None)
  crossovers = find_crossovers(rows)
  device = device_description()
  print(f"Forward conv, batch {args.batch}, {args.image_size}x{args.image_size}, "
        f"{args.in_channels} -> {args.out_channels} channels, {args.padding.upper()} "
        f"padding, median of {args.repeats}; {device}, jax {jax.__version__}")
  print()
  print(format_table(rows))
  print()
  if crossovers:
    for name, size in crossovers.items():
      where = f"from kernel size {size}" if size else "at none of the sizes measured"
      print(f"fft is faster than {name} {where}")
  if args.json:
    result = dict(device=device, jax_version=jax.__version__, config=vars(args),
                  rows=rows, crossovers=crossovers)
    try:
      with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    except OSError as e:
      raise CnnjaxError(f"cannot write {args.json}: {e.strerror}") from None
    print(f"Wrote {args.json}")
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except CnnjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
