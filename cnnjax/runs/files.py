"""A run's small files, written atomically: JSON records, the metric log, curves.

Every file a run writes is complete or absent, never half written: the text
goes to a temporary file beside the target (named with the writer's pid, so
two writers never share one), is flushed to the disk, and replaces the target
with one rename. The metric log is the exception: `metrics.jsonl` is appended
to, one line per log event, and a line cut short by a kill is skipped when the
log is read (and dropped when a resumed run truncates the log).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Iterator

from cnnjax.errors import CnnjaxError


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
    with open(self.path, "a") as f:
      f.write(json.dumps(event) + "\n")
    if self._tb is None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(self._tb_dir)
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def plot_curves(events: list[dict], path: str, title: str = "") -> str | None:
  """Loss and accuracy against steps, train and every eval split, as a PNG."""
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
  for ax, metric in zip(axes, ("loss", "accuracy")):
    for key, (xs, ys) in sorted(series.items()):
      if key.split("/", 1)[1] == metric:
        ax.plot(xs, ys, label=key.split("/")[0], marker="." if len(xs) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0].set_yscale("log")
  fig.suptitle(title)
  fig.tight_layout()
  return save_figure(fig, path, dpi=100)
