"""A run directory is claimed while a process trains in it.

`claim.json` in the workdir names the holder (host, pid, when it started,
the command) and is refreshed every `HEARTBEAT_S` seconds by a background
thread. A second process that tries to train in the same directory is refused
with one sentence naming the holder. A claim is stale, and is taken over with
a warning, when its holder is gone:

- on the same host, when no process has its pid (or one has it that started
  later: the pid was reused);
- on another host (a shared file system), when its heartbeat is older than
  `STALE_AFTER_S`, since another host's processes cannot be looked at.

Checking the holder and writing the new claim happen under an exclusive lock
(`fcntl.flock` on `claim.lock`, held for milliseconds), so two processes that
start together cannot both take the directory; the claim file itself is
written atomically. A process that is killed leaves its claim behind, which
the next one takes over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
import threading
import time
import uuid
from typing import Iterator

from cnnjax.errors import CnnjaxError
from cnnjax.runs import files

CLAIM_FILE = "claim.json"
LOCK_FILE = ".claim.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class RunClaimed(CnnjaxError):
  """Another live process trains in this run directory."""


def _process_start(pid: int) -> float | None:
  """When process `pid` started (clock ticks since boot), or None if unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      # The command name may hold spaces; the fields after its ')' are fixed.
      fields = f.read().rsplit(")", 1)[1].split()
    return float(fields[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(pid: int, started: float | None) -> bool:
  """Whether process `pid` (started at `started`, if known) still runs here."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Someone else's process: it exists.
  now = _process_start(pid)
  return started is None or now is None or now == started


def describe(holder: dict) -> str:
  """'host h, pid 123, since 2026-12-04 18:02:11 UTC' for a claim record."""
  since = holder.get("since")
  when = (datetime.datetime.fromtimestamp(since, datetime.timezone.utc)
          .strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(since, (int, float)) else "?")
  return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {when}"


class RunClaim:
  """The claim of one run directory by this process (a context manager).

      with RunClaim(workdir):
        ...  # train; a second process gets RunClaimed

  Args:
    workdir: the run directory (created if needed).
    stale_after_s: heartbeat age after which another host's claim is stale.
    heartbeat_s: how often the claim is refreshed (0: never, for tests).
  """

  def __init__(self, workdir: str, *, stale_after_s: float = STALE_AFTER_S,
               heartbeat_s: float = HEARTBEAT_S):
    self.workdir = workdir
    self.path = os.path.join(workdir, CLAIM_FILE)
    self.stale_after_s = stale_after_s
    self.heartbeat_s = heartbeat_s
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.held = False
    self.created = False  # whether acquire() made the directory

  def record(self) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "since": time.time(), "command": " ".join(sys.argv)[:500],
            "token": self.token}

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(os.path.join(self.workdir, LOCK_FILE), os.O_CREAT | os.O_RDWR, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)  # Closing releases the lock.

  def holder(self) -> dict | None:
    """The current claim record, or None."""
    record = files.read_json(self.path)
    return record if isinstance(record, dict) else None

  def is_stale(self, holder: dict) -> bool:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
      return not _alive(holder["pid"], holder.get("process_start"))
    try:
      age = time.time() - os.path.getmtime(self.path)
    except OSError:
      return True
    return age > self.stale_after_s

  def acquire(self) -> "RunClaim":
    """Claims the directory, or raises RunClaimed naming the live holder."""
    self.created = not os.path.isdir(self.workdir)
    files.ensure_directory(self.workdir)  # A file in the way: one sentence.
    try:
      with self._locked():
        holder = self.holder()
        if holder is not None and holder.get("token") != self.token:
          if not self.is_stale(holder):
            raise RunClaimed(
                f"workdir '{self.workdir}' is in use by another cnnjax process "
                f"({describe(holder)}); wait for it to finish, stop it, or use "
                "another --workdir")
          # Not 'cnnjax: warning:', which flags damaged files: after a kill
          # this is the normal way back in.
          print(f"cnnjax: the process that trained in '{self.workdir}' is gone "
                f"({describe(holder)}); taking over its claim", file=sys.stderr)
        files.write_json(self.path, self.record())
    except OSError as e:  # Permissions, a read-only file system, ...
      if files.is_disk_full(e):
        raise files.disk_full(self.workdir) from e
      raise CnnjaxError(f"workdir '{self.workdir}' cannot be written "
                        f"({e.strerror or e})") from e
    self.held = True
    if self.heartbeat_s > 0:
      self._thread = threading.Thread(target=self._beat, daemon=True,
                                      name=f"cnnjax-claim-{os.path.basename(self.workdir)}")
      self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      try:
        os.utime(self.path)
      except OSError:
        pass  # Taken over or deleted: nothing to refresh.

  def release(self) -> None:
    """Gives the directory up (only if the claim is still this process's)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    if not self.held:
      return
    self.held = False
    try:
      with self._locked():
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:
          os.remove(self.path)
    except OSError:
      pass  # The directory went away; there is nothing left to release.
    self._remove_if_unused()

  def _remove_if_unused(self) -> None:
    """A directory this claim created and nothing was written to (a run
    refused before its first file) goes again, so a mistake leaves no trace."""
    if not self.created:
      return
    try:
      if os.listdir(self.workdir) == [LOCK_FILE]:
        os.remove(os.path.join(self.workdir, LOCK_FILE))
        os.rmdir(self.workdir)
    except OSError:
      pass  # Someone else writes here now; leave it.

  def __enter__(self) -> "RunClaim":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
