"""Orbax checkpoints in `<workdir>/checkpoints`: the last K and the best one.

Each checkpoint holds the TrainState's arrays ('state') and a small JSON record
('meta': wall time so far, eval metrics). Orbax writes asynchronously into a
temporary directory and renames it when complete, so a run killed mid-write
leaves the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from cnnjax.errors import CnnjaxError


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
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def save(self, step: int, state, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    """Starts an asynchronous save; arrays are copied off the device first."""
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      metrics = None  # Not an evaluation of the tracked metric.
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics=metrics)

  def restore(self, step: int, target_state):
    """Restores `step` into the structure, shapes and dtypes of `target_state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise CnnjaxError(
          f"checkpoint {step} in '{self.directory}' does not match this model "
          f"and optimizer ({type(e).__name__}: {_first_line(e)})") from e
    except Exception as e:  # Unreadable files: truncated, corrupt, missing.
      raise CnnjaxError(
          f"checkpoint {step} in '{self.directory}' cannot be read "
          f"({type(e).__name__}: {_first_line(e)}); move that step's directory "
          "away to resume from the one before it") from e
    return restored.state, dict(restored.meta)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else "no details"
