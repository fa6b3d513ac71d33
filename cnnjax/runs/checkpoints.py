"""Orbax checkpoints in `<workdir>/checkpoints`: the last K and the best one.

Each checkpoint holds the TrainState's arrays ('state') and a small JSON record
('meta': wall time so far, eval metrics). Orbax writes asynchronously into a
temporary directory and renames it when complete, so a run killed mid-write
leaves the previous checkpoint as the latest complete one (the unfinished
write stays behind as a '<step>.orbax-checkpoint-tmp' directory, which is never
taken for a step, and which Orbax replaces when it writes that step again). A
complete checkpoint can still be damaged later (a full disk, a bad copy);
`restore_latest` then moves it aside, to `<checkpoints>.corrupt/`, and falls
back to the one before it.

A full disk (ENOSPC, raised in Orbax's writer threads) becomes one
`files.DiskFull` sentence from `save`, `wait` or `close`: the checkpoint that
failed, its size and the free space. The unfinished write is deleted (it only
holds space), the complete checkpoints stay (Orbax removes old ones only after
a new one is complete), and Orbax's own log records of the failure are
dropped, since the sentence says it all. The same command resumes once space
is freed.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import sys
import threading
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from cnnjax.errors import CnnjaxError
from cnnjax.runs import files

# The collections of a TrainState that hold the model's variables.
VARIABLE_COLLECTIONS = ("params", "batch_stats")


class Checkpointer:
  """A thin policy layer over `ocp.CheckpointManager`."""

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str = "",
               best_mode: str = "max", read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    preserve = [policies.LatestN(n=keep)]
    best_fn = None
    if best_metric:
      best_fn = lambda metrics: metrics[best_metric]  # noqa: E731
      preserve.append(policies.BestN(
          get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        best_fn=best_fn, best_mode=best_mode,
        preservation_policy=policies.AnyPreservationPolicy(preserve),
        enable_async_checkpointing=not read_only, read_only=read_only,
        create=not read_only)
    if read_only and not os.path.isdir(self.directory):
      raise CnnjaxError(f"no checkpoints in '{self.directory}'")
    self.read_only = read_only
    self._writing: int | None = None  # The step whose write may be in flight.
    self._state_bytes = 0
    _quiet_orbax_noise()
    self._manager = _TolerantManager(
        self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step scored best on `best_metric`; None when none was scored.

    Without a best_metric Orbax answers with the latest step, which would
    then pass for the best: None instead.
    """
    return self._manager.best_step() if self.best_metric else None

  def save(self, step: int, state, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    """Starts an asynchronous save; arrays are copied off the device first."""
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      metrics = None  # Not an evaluation of the tracked metric.
    self.wait()  # A failure of the write before is reported as that step's.
    self._state_bytes = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
    self._writing = step
    with self._reporting_full_disk():
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
          metrics=metrics)

  def restore(self, step: int, target_state):
    """Restores `step` into the structure, shapes and dtypes of `target_state`.

    Returns (state, meta). Raises CnnjaxError when the checkpoint belongs to a
    different model or optimizer, or when its files cannot be read.
    """
    try:
      return self._read(step, target_state)
    except _UnreadableCheckpoint as e:
      raise CnnjaxError(
          f"checkpoint {step} in '{self.directory}' cannot be read ({e}); move "
          "that step's directory away to resume from the one before it") from e.cause

  def restore_latest(self, target_state) -> tuple[int, Any, dict] | None:
    """Restores the newest readable checkpoint: (step, state, meta), or None.

    A checkpoint whose files cannot be read (truncated, overwritten, partly
    deleted) is moved to `<checkpoints>.corrupt/<step>`, never deleted, with one
    warning line on stderr, and the one before it is tried. None when there is
    no checkpoint or none can be read: the run starts from scratch. A readable
    checkpoint of a different model or optimizer still raises CnnjaxError, and
    nothing is moved.
    """
    self.wait()  # Nothing may be in flight while directories move.
    moved = []  # (step, why, where to)
    outcome = ""
    try:
      for step in sorted(self._manager.all_steps(), reverse=True):
        try:
          state, meta = self._read(step, target_state)
        except _UnreadableCheckpoint as e:
          if self.read_only:
            raise CnnjaxError(
                f"checkpoint {step} in '{self.directory}' cannot be read ({e})"
                "; move that step's directory away to use the one before it"
            ) from e.cause
          moved.append((step, str(e), self._move_aside(step)))
          continue
        outcome = f"resuming from step {step}"
        return step, state, meta
      outcome = "starting from scratch" if moved else ""
      return None
    finally:
      if moved:
        self._manager.reload()  # Forget the steps that moved away.
      for step, why, destination in moved:
        print(f"cnnjax: warning: checkpoint {step} in {self.directory} cannot be "
              f"read ({why}); moved it to {destination}"
              + (f" and {outcome}" if outcome else ""), file=sys.stderr)

  def _read(self, step: int, target_state):
    """(state, meta) of `step`; _UnreadableCheckpoint for damaged files."""
    if step in self._manager.unreadable_metrics:
      raise _UnreadableCheckpoint(self._manager.unreadable_metrics[step])
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      meta = restored.meta
      if not isinstance(meta, dict):
        raise TypeError(f"meta is a {type(meta).__name__}, not a JSON object")
    except Exception as e:  # Orbax and tensorstore raise many types for both.
      # Reading the step as it was stored, without the target's structure,
      # tells a different model (readable files) from damaged files.
      if self._readable_as_stored(step):
        raise CnnjaxError(
            f"checkpoint {step} in '{self.directory}' does not match this model "
            f"and optimizer ({type(e).__name__}: {_first_line(e)})") from e
      raise _UnreadableCheckpoint(e) from e
    return restored.state, dict(meta)

  def _readable_as_stored(self, step: int) -> bool:
    """Whether a step's arrays (as host arrays) and meta record read back."""
    step_dir = os.path.join(self.directory, str(step))
    try:
      with ocp.PyTreeCheckpointer() as reader:
        stored = reader.metadata(os.path.join(step_dir, "state")).item_metadata
        if stored is None:  # No readable tree metadata.
          return False
        as_numpy = jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
        reader.restore(os.path.join(step_dir, "state"),
                       args=ocp.args.PyTreeRestore(restore_args=as_numpy))
      with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
        meta = reader.restore(os.path.join(step_dir, "meta"))
    except Exception:  # Any failure to read is damage.
      return False
    return isinstance(meta, dict)

  def _move_aside(self, step: int) -> str:
    """Moves a step's directory into `<checkpoints>.corrupt/`; returns where."""
    corrupt = self.directory + ".corrupt"
    os.makedirs(corrupt, exist_ok=True)
    destination = os.path.join(corrupt, str(step))
    suffix = 1
    while os.path.exists(destination):  # An earlier corrupt copy of this step.
      destination = os.path.join(corrupt, f"{step}.{suffix}")
      suffix += 1
    os.rename(os.path.join(self.directory, str(step)), destination)
    return destination

  def wait(self) -> None:
    """Waits for the write in flight; raises DiskFull if the disk filled up."""
    with self._reporting_full_disk():
      self._manager.wait_until_finished()
    self._writing = None

  def close(self) -> None:
    with self._reporting_full_disk():
      self._manager.close()

  @contextlib.contextmanager
  def _reporting_full_disk(self) -> Iterator[None]:
    """Turns a full disk, raised by Orbax in any form, into one DiskFull."""
    try:
      yield
    except Exception as e:  # Orbax and tensorstore raise ValueError, OSError, ...
      if not files.is_disk_full(e):
        raise
      step, self._writing = self._writing, None
      raise self._disk_full(step) from e

  def _disk_full(self, step: int | None) -> files.DiskFull:
    """The sentence for a checkpoint that the disk had no room for."""
    # Orbax raises at its first failed write while its other writer threads
    # run on; they end quickly, and must end before their directory goes
    # (and before the interpreter exits under them, with a traceback).
    for thread in threading.enumerate():
      if (thread is not threading.current_thread()
          and type(thread).__module__.startswith("orbax")):
        try:
          thread.join(timeout=60)
        except Exception:  # Orbax's threads raise their own error on join.
          pass
    for unfinished in glob.glob(os.path.join(self.directory, f"{step}.{_TMP_MARK}*")):
      shutil.rmtree(unfinished, ignore_errors=True)  # Space back, nothing lost.
    complete = sorted(int(n) for n in _listdir(self.directory)
                      if n.isdigit() and int(n) != step)
    size = (_directory_bytes(os.path.join(self.directory, str(complete[-1])))
            if complete else self._state_bytes)
    what = f"checkpoint {step}" if step is not None else "a checkpoint"
    kept = (f"the last good checkpoint (step {complete[-1]}) is kept" if complete
            else "no checkpoint was written before")
    return files.DiskFull(
        f"the disk is full: {what} could not be written to {self.directory} "
        f"(a checkpoint takes about {files.format_bytes(size)}, "
        f"{files.format_bytes(files.free_bytes(self.directory))} are free there "
        f"now); {kept}; free some space and run the same command again to resume")


# In the names of Orbax's unfinished writes ('<step>.orbax-checkpoint-tmp',
# with a timestamp suffix in some versions).
_TMP_MARK = "orbax-checkpoint-tmp"


def _listdir(directory: str) -> list[str]:
  try:
    return os.listdir(directory)
  except OSError:
    return []


def _directory_bytes(directory: str) -> int:
  """The disk space the files in `directory` take (their blocks, as du counts)."""
  total = 0
  for root, _, names in os.walk(directory):
    for name in names:
      try:
        stat = os.stat(os.path.join(root, name))
      except OSError:
        continue
      total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
  return total


# Orbax warnings about what `Checkpointer` does on purpose: saving between
# evaluations without the best metric, and opening a run read-only.
_EXPECTED_WARNINGS = ("Requested `tracked_metric`; did not provide",
                      "CheckpointManagerOptions.read_only=True",
                      "Given directory is read only")


class _OrbaxNoise(logging.Filter):
  """Drops Orbax's log records of a full disk (a traceback from each writer
  thread: `Checkpointer` reports it in one sentence instead) and its
  warnings about what `Checkpointer` does on purpose."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    message = record.getMessage()
    return not (files.is_disk_full(error) or files.says_disk_full(message)
                or message.startswith(_EXPECTED_WARNINGS))


_ORBAX_NOISE = _OrbaxNoise()


def _quiet_orbax_noise() -> None:
  logger = logging.getLogger("absl")  # Orbax logs through absl.
  if _ORBAX_NOISE not in logger.filters:
    logger.addFilter(_ORBAX_NOISE)


class _UnreadableCheckpoint(Exception):
  """A checkpoint's files are damaged; str() is 'ErrorType: first line'."""

  def __init__(self, cause: Exception | str):
    if isinstance(cause, Exception):
      super().__init__(f"{type(cause).__name__}: {_first_line(cause)}")
      self.cause = cause
    else:
      super().__init__(cause)
      self.cause = None


class _TolerantManager(ocp.CheckpointManager):
  """A CheckpointManager that lists a step whose metrics file is damaged.

  Orbax reads every step's metrics when it lists the steps, and a garbled file
  would stop it from opening the directory at all; the step is listed without
  metrics instead, and `restore_latest` treats it as unreadable.
  """

  def metrics(self, step: int):
    try:
      return super().metrics(step)
    except Exception as e:  # JSON or I/O errors from a damaged file.
      self.unreadable_metrics[step] = (
          f"its metrics file: {type(e).__name__}: {_first_line(e)}")
      return None

  def reload(self):
    self.unreadable_metrics.clear()
    super().reload()

  @property
  def unreadable_metrics(self) -> dict[int, str]:
    if "_unreadable_metrics" not in self.__dict__:
      self._unreadable_metrics = {}
    return self._unreadable_metrics


def _first_line(error: Exception, limit: int = 200) -> str:
  text = str(error).strip()
  line = text.splitlines()[0] if text else "no details"
  return line if len(line) <= limit else line[:limit - 3] + "..."


# --------------------------------------------------------------------------
# Reading a step's variables without the model that wrote them


def _state_metadata(step_dir: str) -> dict:
  """The 'state' item's tree of Orbax array metadata (shapes, dtypes)."""
  from etils import epath

  try:
    tree = ocp.PyTreeCheckpointHandler().metadata(
        epath.Path(step_dir) / "state").tree
  except Exception as e:  # Missing or corrupt files.
    raise CnnjaxError(f"checkpoint '{step_dir}' cannot be read "
                      f"({type(e).__name__}: {_first_line(e)})") from e
  if not isinstance(tree, dict) or "params" not in tree:
    raise CnnjaxError(f"checkpoint '{step_dir}' holds no 'params'; it was "
                      "not written by cnnjax's training driver")
  return tree


def stored_shapes(step_dir: str, collections=VARIABLE_COLLECTIONS
                  ) -> dict[str, jax.ShapeDtypeStruct]:
  """{'params/c1/kernel': ShapeDtypeStruct} of a step, from its metadata
  alone (no array is read)."""
  from cnnjax.trees import flat_paths

  metadata = _state_metadata(step_dir)
  chosen = {c: metadata[c] for c in collections if c in metadata}
  return {p: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype)
          for p, m in flat_paths(chosen).items()}


def read_variables(step_dir: str, collections=VARIABLE_COLLECTIONS) -> dict:
  """{collection: tree} of NumPy arrays from one step's directory.

  Only the named collections are read (not the optimizer state: e.g.
  ('params', 'batch_stats'), or ('ema',) for the weight average), and no model
  is needed: the structure comes from the checkpoint's metadata. A collection
  the checkpoint lacks (or holds empty) is an empty dict in the result.
  """
  step_dir = os.path.abspath(step_dir)  # Orbax takes absolute paths only.
  metadata = _state_metadata(step_dir)
  chosen = {c: metadata[c] for c in collections if c in metadata and metadata[c]}
  if not chosen:
    return {c: {} for c in collections}
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), chosen)
  restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), chosen)
  try:
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
      restored = checkpointer.restore(
          os.path.join(step_dir, "state"),
          args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                      partial_restore=True))
  except Exception as e:  # Truncated or corrupt array files.
    raise CnnjaxError(f"checkpoint '{step_dir}' cannot be read "
                      f"({type(e).__name__}: {_first_line(e)})") from e
  return {c: jax.tree.map(np.asarray, restored[c]) if c in chosen and c in restored
          else {} for c in collections}
