"""What the training driver reads in the per-step metrics it fetches.

The jitted step returns metric sums per step (step.py); the driver keeps
them on the device and fetches them at the log steps and checkpoints, the
only host syncs. On the host this module turns them into:

- the logged means of a window of steps (`train_means`), with the sums of a
  window that a resume cut in two carried over in the checkpoint
  (`SeedRecord.meta`), so that metrics.jsonl does not depend on where a run
  was stopped;
- the divergence guard (`first_divergence`): the first step whose loss,
  gradient norm or weights stopped being finite;
- a warning when the logged loss climbs far above the first step's
  (`SeedRecord.loss_warning`, config.divergence.loss_factor).
"""

from __future__ import annotations

import math

from cnnjax.train.step import CHECKS

# Train metrics that are a value per step (logged at the last step), not
# sums over examples.
LAST_VALUE_METRICS = ("learning_rate", "loss_scale")


def window_sums(rows: list[dict], carried: dict | None = None) -> dict[str, float]:
  """The per-step metric sums of a log window, added up on the host.

  `carried` holds the sums of the window's steps before a resume (from the
  checkpoint); they come first, then `rows` in order: the float additions of
  an uninterrupted run, so that its logged means come out the same.
  """
  carried = carried or {}
  keys = rows[0] if rows else carried
  return {k: sum((float(m[k]) for m in rows), carried.get(k, 0)) for k in keys
          if k not in LAST_VALUE_METRICS and k not in CHECKS}


def train_means(host: list[dict], carried: dict | None = None) -> dict[str, float]:
  """'train/<metric>' averages of per-step metric sums fetched to the host
  (and of the `carried` sums of the window's steps before a resume)."""
  totals = window_sums(host, carried)
  count = totals.pop("count")
  means = {f"train/{k}": v / count for k, v in totals.items()}
  for k in LAST_VALUE_METRICS:  # Values at the last step, not sums.
    if k in host[-1]:
      means[f"train/{k}"] = float(host[-1][k])
  return means


def first_divergence(rows: list[dict], first_step: int, *,
                     nonfinite: bool = True) -> tuple[int, str] | None:
  """(step, what went wrong) of the first diverged step in `rows`, or None.

  `rows` are the per-step metrics of steps first_step, first_step + 1, ...
  A non-finite loss always counts; with `nonfinite` also a non-finite
  gradient norm (except on the steps that float16 loss scaling skips: their
  gradients overflow by design) and weights that are no longer finite.
  """
  for step, m in enumerate(rows, first_step):
    count = float(m["count"])
    loss = float(m["loss"]) / count
    if not math.isfinite(loss):
      return step, f"the loss is {loss}"
    if not nonfinite:
      continue
    grad_norm = float(m.get("grad_norm", 0.0)) / count
    if "loss_scale" not in m and not math.isfinite(grad_norm):
      return step, f"the gradient norm is {grad_norm}"
    if not float(m.get("variables_finite", 1.0)):
      return step, "a weight is no longer finite"
  return None


class SeedRecord:
  """One seed's host-side bookkeeping, stored with each of its checkpoints.

  `carried`: the metric sums of the steps of the current log window before
  a resume; `first_loss`: the loss of the run's first step, the baseline of
  the loss warning; `warning`: that warning once given (result.json's
  'divergence_warning'). A checkpoint written before these existed restores
  none of them: its first log averages the resumed steps only, and the loss
  warning is off.
  """

  def __init__(self, meta: dict):
    self.carried: dict | None = meta.get("window") or None
    self.first_loss: float | None = meta.get("first_loss")
    self.warning: dict | None = meta.get("divergence_warning")

  def meta(self, rows: list[dict]) -> dict:
    """What a checkpoint saved after `rows` (the window's steps) stores."""
    return {"window": window_sums(rows, self.carried) if rows or self.carried else {},
            "first_loss": self.first_loss, "divergence_warning": self.warning}

  def note_first_step(self, rows: list[dict], first_step: int) -> None:
    """Keeps the loss of step 1 when `rows` start there."""
    if first_step == 1 and rows and self.first_loss is None:
      self.first_loss = float(rows[0]["loss"]) / float(rows[0]["count"])

  def loss_warning(self, loss: float, step: int, factor: float) -> str:
    """The warning, the first time the logged `loss` exceeds `factor` times
    the first step's; '' otherwise (or with factor 0)."""
    if not factor or self.warning or not self.first_loss or self.first_loss <= 0:
      return ""
    if not loss > factor * self.first_loss:
      return ""
    self.warning = {"step": step, "train_loss": loss, "first_loss": self.first_loss,
                    "loss_factor": factor}
    return (f"the mean train loss is {loss:.4g} at step {step}, more than "
            f"{factor:g} times the loss of the first step ({self.first_loss:.4g}); "
            "training may be diverging: a lower config.optimizer.learning_rate may "
            "help (config.divergence.loss_factor sets this warning)")
