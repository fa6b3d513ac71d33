"""PyTorch's side of `cnnjax benchmark --compare torch`, in a process of its own.

Two frameworks in one process are not what either user runs, and they
interfere: torch's OpenMP threads keep spinning for a while after each of its
operations and slow XLA's work that follows, and a oneDNN library built on
OpenMP shares torch's libgomp (the same soname), whose spin-waits then count
both pools' threads and shorten everyone's. So by default the twin trains in
a child process (`python -m cnnjax.bench.torch_process`, this module) that
the benchmark drives over a pipe (`model.TorchProcess`): the runs still take
turns with cnnjax's (`model.interleaved_rates`), but each framework owns its
process.

The child runs with the parent's allocator settings (`cnnjax.runtime`'s
`apply_malloc_defaults`, when the parent has them), which spare torch's large
temporaries page faults as they spare XLA's: the processes differ in nothing
but the framework. The protocol is one JSON object per line. The parent
writes the request (`options`, `layouts`, `cuda`, `malloc_defaults`); the
child answers `{"ready": true}` once each layout is built and warmed up.
Then `{"op": "run", "layout": L}` times one run and answers `{"seconds": s}`,
`{"op": "finish", "layout": L, "rates": [...]}` answers that layout's
figures, and the end of its input ends the child. The child's own stdout
goes to stderr, so nothing else reaches the pipe.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main() -> None:
  # The pipe is the original stdout; anything printed goes to stderr.
  pipe = os.fdopen(os.dup(sys.stdout.fileno()), "w")
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  from cnnjax.bench import model as bench

  def answer(message: dict[str, Any]) -> None:
    pipe.write(json.dumps(message, default=float) + "\n")
    pipe.flush()

  request = json.loads(sys.stdin.readline())
  if request["malloc_defaults"]:  # The allocator the parent runs with.
    from cnnjax import runtime
    runtime.apply_malloc_defaults()
  fields = request["options"]
  fields["torch_layouts"] = tuple(fields["torch_layouts"])
  options = bench.Options(**fields)
  contenders = {layout: bench.prepare_torch(options, layout, cuda=request["cuda"])
                for layout in request["layouts"]}
  answer({"ready": True})
  for line in sys.stdin:
    command = json.loads(line)
    timed = contenders[command["layout"]]
    if command["op"] == "run":
      start = time.perf_counter()
      timed.run()
      answer({"seconds": time.perf_counter() - start})
    else:
      answer(timed.finish(command["rates"]))


if __name__ == "__main__":
  main()
