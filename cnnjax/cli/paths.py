"""The paths a command will write, checked before it does any work.

A summary computed for a minute, or a sweep trained for an hour, should not
end in a traceback because its output cannot be written. Every flag that
names an output (`--workdir` of sweep and reproduce, `--out`, `--json`,
`--results`, `--compilation-cache`) goes through one of these two checks
first, and a mistake is one sentence naming the flag and the path. (The
workdir of `cnnjax train` is checked where its run claims it, in runs/.)

Directories a command writes into may not exist yet (the command creates
them), but whatever part of the path exists must be a directory we may write
in. A side file such as `--json` goes into a directory that exists, as a
shell redirection would; export files may also create their directory
(`make_parents=True`), as `cnnjax export` always has.
"""

from __future__ import annotations

import os

from cnnjax.errors import CnnjaxError


def _given(path, flag: str) -> str:
  """`path` as a string, refusing an empty one (which would otherwise fall
  back to a default location without a word)."""
  if path is None or not str(path).strip():
    raise CnnjaxError(f"{flag} is empty; give a path")
  return os.path.expanduser(os.fspath(path))


def _probe_creatable(path: str, flag: str, given: str) -> None:
  """Refuses a missing directory `path` that could not be created: below a
  file, or in a place we may not write. Creating the missing levels and
  removing them again is the one test that root, read-only file systems and
  virtual ones like /proc all answer truthfully."""
  ancestor = path
  while not os.path.exists(ancestor):
    parent = os.path.dirname(ancestor)
    if parent == ancestor:
      break
    ancestor = parent
  if not os.path.isdir(ancestor):
    raise CnnjaxError(f"cannot write {flag} '{given}': '{ancestor}' is a file, "
                      "not a directory")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise CnnjaxError(f"cannot write {flag} '{given}': directory '{ancestor}' "
                      "is not writable")
  if ancestor == path:
    return
  try:
    os.makedirs(path)
  except OSError as e:
    raise CnnjaxError(f"cannot create {flag} '{given}' "
                      f"({e.strerror or e})") from None
  # Remove what the probe created, deepest first; the command makes it again.
  level = path
  while level != ancestor:
    try:
      os.rmdir(level)
    except OSError:
      break
    level = os.path.dirname(level)


def output_dir(path, flag: str) -> str:
  """`path` (a directory `flag` names, to create or write into), or one
  sentence saying why it cannot be one."""
  given = _given(path, flag)
  full = os.path.abspath(given)
  if os.path.exists(full) and not os.path.isdir(full):
    raise CnnjaxError(f"{flag} '{given}' is a file; give a directory")
  _probe_creatable(full, flag, given)
  return given


def output_file(path, flag: str, *, make_parents: bool = False) -> str:
  """`path` (a file `flag` names), or one sentence saying why it cannot be
  written: empty, a directory, in a directory that does not exist (unless
  `make_parents`), below a file, or not writable."""
  given = _given(path, flag)
  full = os.path.abspath(given)
  if os.path.isdir(full):
    raise CnnjaxError(f"{flag} '{given}' is a directory; give a file path")
  parent = os.path.dirname(full)
  if not make_parents and not os.path.exists(parent):
    raise CnnjaxError(f"cannot write {flag} '{given}': directory '{parent}' "
                      "does not exist")
  _probe_creatable(parent, flag, given)
  if os.path.exists(full) and not os.access(full, os.W_OK):
    raise CnnjaxError(f"cannot write {flag} '{given}': the file is not writable")
  return given
