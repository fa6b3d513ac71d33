"""Where one CPU train step spends its time: cnnjax's compiled step op by op
against its PyTorch twin's, each in a process of its own (torch's step ran
a third slower after cnnjax's ResNet-18 steps in the same process, BENCHMARKS.md),
with the `cnnjax` command's process settings (cnnjax.runtime.setup: XLA
flags, allocator).

cnnjax: `jax.profiler.trace` of --steps steps with XLA's per-thunk trace
events (--xla_cpu_enable_xprof_traceme), summed by operation: oneDNN FFI
calls by their target, XLA fusions by their kind (the name without its
number), and the wall time in which each kind runs (XLA runs independent
operations at the same time, so the sums can exceed it). PyTorch:
`torch.profiler` of as many steps of the channels-last
twin, self CPU time per aten op. Also the untimed steps' wall time (median of
--repeats runs of --steps steps each) and minor page faults per step.

    python scripts/profile_step.py --model resnet20 --conv-backend onednn
    python scripts/profile_step.py --model lenet5 --conv-backend xla --top 15
    python scripts/profile_step.py --model resnet18 --image-size 224 --batch-size 32 --steps 2
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import resource
import statistics
import sys
import tempfile
import time


def _wall(run, steps, repeats):
  """(median ms per step, minor page faults per step)."""
  times, faults = [], 0
  for _ in range(repeats):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    run(steps)
    times.append((time.perf_counter() - start) / steps * 1000)
    faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  return statistics.median(times), faults / (steps * repeats)


def profile_cnnjax(model, batch, image_size, backend_name, steps, repeats):
  import jax

  from cnnjax.bench import model as bench
  from cnnjax.ops import backend

  backend.set_conv_backend(backend_name)
  compiled = bench.compile_step(bench.Options(model, batch_size=batch, image_size=image_size))
  hlo = compiled.step.as_text()
  targets = dict(re.findall(
      r"%([\w.-]+) = [^\n]*?custom_call_target=\"([^\"]+)\"", hlo))
  compiled.run(3)
  wall, faults = _wall(compiled.run, steps, repeats)
  folder = tempfile.mkdtemp()
  with jax.profiler.trace(folder):
    compiled.run(steps)
  path = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0]
  data = jax.profiler.ProfileData.from_file(path)
  ops, calls = collections.Counter(), collections.Counter()
  spans = {"oneDNN calls": [], "XLA's own work": []}
  for plane in data.planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name:  # XLA's thunks run on its Eigen pool.
        continue
      for event in line.events:
        if event.name.startswith(("ThunkExecutor", "end:")):
          continue
        name = targets.get(event.name) or re.sub(r"\.\d+$", "", event.name)
        ops[name] += event.duration_ns / 1e6 / steps
        calls[name] += 1 / steps
        kind = "oneDNN calls" if name.startswith("cnnjax_dnnl") else "XLA's own work"
        spans[kind].append((event.start_ns, event.start_ns + event.duration_ns))
  return wall, faults, ops, calls, spans


def _busy_ms(spans):
  """Milliseconds in which at least one of the (start, end) spans (ns) runs."""
  busy, begin, end = 0, None, None
  for start, stop in sorted(spans):
    if end is not None and start <= end:
      end = max(end, stop)
      continue
    if end is not None:
      busy += end - begin
    begin, end = start, stop
  if end is not None:
    busy += end - begin
  return busy / 1e6


def _busy_table(spans, steps):
  """The wall time in which each kind of operation runs. XLA runs
  independent operations on its threads at once, and a oneDNN call that
  waits for another (the library runs one at a time) is timed while it
  waits, so the sums above count such overlaps twice; torch's profile is one
  thread's time."""
  every = [s for kind in spans.values() for s in kind]
  print(f"  wall time per step (XLA runs independent operations concurrently, so "
        f"the sums above can exceed it): busy {_busy_ms(every) / steps:.1f} ms")
  for kind, kind_spans in spans.items():
    print(f"    {kind}: {_busy_ms(kind_spans) / steps:.1f} ms busy, "
          f"{sum(b - a for a, b in kind_spans) / 1e6 / steps:.1f} ms summed")


def profile_torch(model, batch, image_size, steps, repeats):
  import numpy as np
  import torch

  from cnnjax.bench import model as bench
  from cnnjax.bench.torch_models import create_torch_model, to_torch_input

  options = bench.Options(model, batch_size=batch, image_size=image_size)
  shape = bench.input_shape(options)
  net = create_torch_model(model, options.num_classes, shape[-1])
  net = net.to(memory_format=torch.channels_last).train()
  data = bench.synthetic_batch(options, shape)
  images = to_torch_input(data["image"]).contiguous(memory_format=torch.channels_last)
  labels = torch.from_numpy(data["label"].astype(np.int64))
  optimizer = torch.optim.SGD(net.parameters(), lr=bench.LEARNING_RATE,
                              momentum=bench.MOMENTUM, weight_decay=bench.WEIGHT_DECAY)

  def run(n):
    for _ in range(n):
      optimizer.zero_grad(set_to_none=True)
      torch.nn.functional.cross_entropy(net(images), labels).backward()
      optimizer.step()

  run(3)
  wall, faults = _wall(run, steps, repeats)
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    run(steps)
  ops, calls = collections.Counter(), collections.Counter()
  for event in prof.key_averages():
    if event.self_cpu_time_total > 0:
      ops[event.key] += event.self_cpu_time_total / 1000 / steps
      calls[event.key] += event.count / steps
  return wall, faults, ops, calls


def _table(title, wall, faults, ops, calls, top):
  print(f"\n{title}: {wall:.1f} ms per step untraced (median), {faults:,.0f} page "
        f"faults per step; op times summed over the traced steps:")
  total = sum(ops.values())
  for name, ms in ops.most_common(top):
    print(f"  {ms:8.2f} ms  {calls[name]:6.0f} calls  {name}")
  rest = total - sum(ms for _, ms in ops.most_common(top))
  print(f"  {rest:8.2f} ms  (the rest)\n  {total:8.2f} ms  in all")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet20")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--image-size", type=int, default=None)
  parser.add_argument("--conv-backend", default="onednn", choices=("xla", "onednn"))
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--top", type=int, default=20)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--only", choices=("cnnjax", "torch"),
                      help="profile one side in this process (the default runs each side "
                           "in a child process of its own)")
  args = parser.parse_args(argv)
  if args.only is None:
    import subprocess
    argv = list(sys.argv[1:] if argv is None else argv)
    for side in ("cnnjax",) if args.no_torch else ("cnnjax", "torch"):
      code = subprocess.run([sys.executable, os.path.abspath(__file__), *argv,
                             "--only", side]).returncode
      if code:
        return code
    return 0
  flag = "--xla_cpu_enable_xprof_traceme=true"
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
  from cnnjax import runtime
  from cnnjax.bench.compat import cpu_model
  runtime.setup(compilation_cache=None)
  import jax
  if args.only == "cnnjax":
    print(f"{cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}; "
          f"{args.model}, batch {args.batch_size}")
    *profiled, spans = profile_cnnjax(args.model, args.batch_size, args.image_size,
                                      args.conv_backend, args.steps, args.repeats)
    _table(f"cnnjax ({args.conv_backend} convolutions)", *profiled, args.top)
    _busy_table(spans, args.steps)
  else:
    import torch
    _table(f"torch {torch.__version__} (channels-last, {torch.get_num_threads()} threads)",
           *profile_torch(args.model, args.batch_size, args.image_size, args.steps,
                          args.repeats), args.top)
  return 0


if __name__ == "__main__":
  sys.exit(main())
