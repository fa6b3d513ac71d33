"""A run's small files, written atomically: JSON records, the metric log, curves.

Every file a run writes is complete or absent, never half written: the text
goes to a temporary file beside the target (named with the writer's pid, so
two writers never share one), is flushed to the disk, and replaces the target
with one rename. The metric log is the exception: `metrics.jsonl` is appended
to, one line per log event, and a line cut short by a kill is skipped when the
log is read (and dropped when a resumed run truncates the log).

A full disk is `DiskFull`, one sentence naming the file and the free space,
with exit status 75 (EX_TEMPFAIL: try again later), since the run resumes
once space is freed: the file it could not write is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from typing import Any, Iterator

from cnnjax.errors import CnnjaxError

# sysexits.h EX_TEMPFAIL: a failure that the same command can get past later.
DISK_FULL_EXIT_CODE = 75
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How tensorstore (Orbax's array writer) and other C++ writers spell ENOSPC.
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded",
               "os_error_code='28'", "os_error_code=28")


class DiskFull(CnnjaxError):
  """A write failed for lack of space (ENOSPC or EDQUOT); exit status 75."""

  exit_code = DISK_FULL_EXIT_CODE


def is_disk_full(error: BaseException | None) -> bool:
  """Whether `error`, or an exception it was raised from, is a full disk."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, DiskFull):
      return True
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
      return True
    if says_disk_full(str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def says_disk_full(text: str) -> bool:
  """Whether an error message reports a full disk (C++ writers' wording too)."""
  return any(t in text for t in _FULL_TEXTS)


def free_bytes(path: str) -> int | None:
  """Free space on the file system that holds `path` (or its nearest parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def format_bytes(count: int | float | None) -> str:
  """'1.5 MiB' (binary units), or 'an unknown amount' for None."""
  if count is None:
    return "an unknown amount"
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(count) < 1024 or unit == "TiB":
      return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
    count /= 1024
  raise AssertionError("unreachable")


def disk_full(path: str) -> DiskFull:
  """The DiskFull for a file that could not be written to `path`."""
  return DiskFull(f"the disk is full: {path} could not be written "
                  f"({format_bytes(free_bytes(path))} free there); free some "
                  "space and run the same command again")


def ensure_directory(path: str, what: str = "workdir") -> None:
  """Creates directory `path` (and its parents), or raises one sentence why not.

  Names the part of the path that is a file when there is one, since
  'Not a directory' alone does not say which.
  """
  if os.path.isdir(path):
    return
  if os.path.exists(path):
    raise CnnjaxError(f"{what} '{path}' is a file, not a directory")
  parent = os.path.dirname(os.path.abspath(path))
  while parent and not os.path.exists(parent) and os.path.dirname(parent) != parent:
    parent = os.path.dirname(parent)
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise CnnjaxError(f"{what} '{path}' cannot be created: '{parent}' is a "
                      "file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    if is_disk_full(e):
      raise disk_full(path) from e
    raise CnnjaxError(f"{what} '{path}' cannot be created "
                      f"({e.strerror or e})") from e


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path to write; on success it replaces `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise CnnjaxError(f"cannot write {path}: {directory} is a file, not a directory")
  os.makedirs(directory, exist_ok=True)
  if os.path.isdir(path):
    raise CnnjaxError(f"cannot write {path}: it is a directory")
  temporary = f"{path}.tmp.{os.getpid()}"
  try:
    yield temporary
    with open(temporary, "rb+") as f:  # On the disk before the rename.
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except OSError as e:
    if is_disk_full(e):
      raise disk_full(path) from e
    raise
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  with atomic_path(path) as temporary:
    with open(temporary, "w", newline="") as f:
      f.write(text)


def write_json(path: str, record: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
  """Writes `record` as JSON to `path` atomically."""
  write_text(path, json.dumps(record, indent=indent, sort_keys=sort_keys,
                              default=repr) + "\n")


def save_figure(figure, path: str, **savefig_kwargs) -> str:
  """Saves a matplotlib figure to `path` atomically and closes it."""
  import matplotlib.pyplot as plt

  fmt = os.path.splitext(path)[1].lstrip(".") or "png"
  try:
    with atomic_path(path) as temporary:
      figure.savefig(temporary, format=fmt, **savefig_kwargs)
  finally:
    plt.close(figure)
  return path


def read_json(path: str) -> Any | None:
  """The JSON in `path`, or None when it is missing or not valid JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_jsonl(path: str) -> list[dict]:
  """Every complete JSON line of `path` (a line cut short by a kill is skipped)."""
  events = []
  try:
    with open(path) as f:
      for line in f:
        try:
          events.append(json.loads(line))
        except json.JSONDecodeError:
          pass
  except OSError:
    pass
  return events


class MetricLog:
  """`metrics.jsonl` (one JSON object per log event) mirrored to TensorBoard.

  Only the writing process (process 0 of a multi-host run) should hold one
  that writes; `enabled=False` makes every call a no-op.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb_dir = os.path.join(workdir, "tensorboard")
    self._tb = None
    self.enabled = enabled

  def truncate_after(self, step: int) -> None:
    """Drops events after `step`: a resumed run will log them again, identically."""
    if not self.enabled or not os.path.exists(self.path):
      return
    kept = [json.dumps(e) + "\n" for e in read_jsonl(self.path)
            if e.get("step", 0) <= step]
    write_text(self.path, "".join(kept))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    event = {"step": int(step), "time": round(time.time(), 3)}
    event.update({k: float(v) for k, v in metrics.items()})
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(event) + "\n")
    except OSError as e:  # A part of the line may be written: resuming drops it.
      if is_disk_full(e):
        raise disk_full(self.path) from e
      raise
    if self._tb is None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(self._tb_dir)
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


# The right panel's metrics: classification's accuracy, segmentation's and
# detection's scores.
SCORES = ("accuracy", "pixel_accuracy", "mean_iou", "map_50", "map")


def plot_curves(events: list[dict], path: str, title: str = "") -> str | None:
  """Loss and the scores (accuracy, or mean IoU, or mAP) against steps, train
  and every eval split, as a PNG."""
  if not events:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  series: dict[str, tuple[list, list]] = {}
  for e in events:
    for k, v in e.items():
      if "/" in k:
        xs, ys = series.setdefault(k, ([], []))
        xs.append(e["step"])
        ys.append(v)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  scores = {key.split("/", 1)[1] for key in series} & set(SCORES)
  for ax, metrics in zip(axes, (("loss",), tuple(m for m in SCORES if m in scores))):
    for key, (xs, ys) in sorted(series.items()):
      split, metric = key.split("/", 1)
      if metric in metrics:
        label = split if metrics == ("loss",) or metric == "accuracy" else key
        ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(metrics[0] if len(metrics) == 1 else "score")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  axes[0].set_yscale("log")
  fig.suptitle(title)
  fig.tight_layout()
  return save_figure(fig, path, dpi=100)
