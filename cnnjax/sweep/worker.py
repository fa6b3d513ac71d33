"""A local sweep worker: `python -m cnnjax.sweep.worker`, started by
`LocalExecutor` with its devices already chosen in its environment.

It receives pickled trials on the socket named by CNNJAX_SWEEP_FD, trains
each with `run_trial` and sends back ("outcomes", [...]); None means leave.
A signal that stops the training sends ("interrupted", (message, signum))
after the checkpoint is saved. A watchdog thread stops the worker the same
way (SIGTERM to itself) when its sweep process is gone, so that a sweep
killed with kill -9 leaves checkpoints behind, not stray trainers.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing import connection

WATCH_EVERY_S = 0.5


def _watch_parent(parent: int) -> None:
  while True:
    time.sleep(WATCH_EVERY_S)
    if os.getppid() != parent:  # Re-parented: the sweep process died.
      os.kill(os.getpid(), signal.SIGTERM)
      return


def main() -> int:
  from cnnjax.sweep.executors import CPUS_ENV, FD_ENV

  cpus = os.environ.pop(CPUS_ENV, "")
  if cpus:  # Before JAX starts its CPU client, which sizes its pools to them.
    os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])
  from cnnjax import runtime

  runtime.apply_xla_defaults()  # As the CLI does, before JAX starts.
  runtime.apply_malloc_defaults()
  conn = connection.Connection(int(os.environ.pop(FD_ENV)))
  threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

  from cnnjax.errors import CnnjaxError
  from cnnjax.sweep.trials import run_trial
  from cnnjax.train.loop import TrainingInterrupted

  while True:
    try:
      message = conn.recv_bytes()
    except (EOFError, OSError):
      return 0  # The sweep is gone.
    trial = pickle.loads(message)
    if trial is None:
      return 0
    print(f"== trial {trial.index}: {trial.name}", flush=True)
    try:
      reply = ("outcomes", run_trial(trial, say=lambda line: print(line, flush=True)))
    except TrainingInterrupted as e:
      conn.send_bytes(pickle.dumps(("interrupted", (str(e), e.exit_code - 128))))
      return e.exit_code
    except KeyboardInterrupt:  # A second signal during a step.
      conn.send_bytes(pickle.dumps(("interrupted", ("interrupted", signal.SIGINT))))
      return 130
    except (CnnjaxError, Exception) as e:  # noqa: BLE001 - reported, not lost.
      reply = ("error", f"{type(e).__name__}: {e}".splitlines()[0])
    try:
      conn.send_bytes(pickle.dumps(reply))
    except OSError:
      return 0


if __name__ == "__main__":
  sys.exit(main())
