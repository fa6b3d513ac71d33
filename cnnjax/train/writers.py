"""Where metrics go: metrics.jsonl, TensorBoard event files, a PNG of the curves."""

from __future__ import annotations

import json
import os
import time

import jax


class MetricWriter:
  """Appends one JSON object per log event and mirrors it to TensorBoard."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb_dir = os.path.join(workdir, "tensorboard")
    self._tb = None

  def truncate_after(self, step: int) -> None:
    """Drops events after `step`: a resumed run will log them again, identically."""
    if jax.process_index() != 0 or not os.path.exists(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          event = json.loads(line)
        except json.JSONDecodeError:
          continue  # A line cut short by a kill.
        if event.get("step", 0) <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
    with open(self.path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(self.path + ".tmp", self.path)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if jax.process_index() != 0:  # One writer in a multi-host run.
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


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  events = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          events.append(json.loads(line))
        except json.JSONDecodeError:
          pass
  return events


def plot_curves(workdir: str, filename: str = "curves.png") -> str | None:
  """Loss and accuracy against steps, train and every eval split."""
  events = read_metrics(workdir)
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
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  out = os.path.join(workdir, filename)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out
