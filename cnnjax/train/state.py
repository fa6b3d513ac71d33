"""The training state: everything a checkpoint must hold to resume exactly."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from cnnjax.train.precision import LossScale


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any  # {} for models without batch normalization
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformationExtraArgs = flax.struct.field(pytree_node=False)
  # An exponential moving average of {'params', 'batch_stats'}, or None.
  ema: Any = None
  # Dynamic loss scaling (float16 training), or None.
  loss_scale: LossScale | None = None

  @classmethod
  def create(cls, *, apply_fn, variables, tx, ema: bool = False,
             loss_scale: LossScale | None = None):
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=batch_stats, opt_state=tx.init(params),
               apply_fn=apply_fn, tx=tx,
               # Copies: the step donates the state, which must not hold a
               # buffer twice.
               ema=(jax.tree.map(jnp.array, {"params": params,
                                             "batch_stats": batch_stats})
                    if ema else None),
               loss_scale=loss_scale)

  @property
  def variables(self):
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def ema_state(self) -> "TrainState":
    """This state with the averaged weights in place of the raw ones."""
    return self.replace(params=self.ema["params"],
                        batch_stats=self.ema["batch_stats"])

  def apply_gradients(self, grads, *, batch_stats, loss):
    """One optimizer update; `loss` feeds schedules that read it (plateau)."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params,
                                        value=loss)
    return self.replace(step=self.step + 1,
                        params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)

  def update_ema(self, decay: float, warmup: bool = True) -> "TrainState":
    """ema <- d * ema + (1 - d) * weights, d = min(decay, (1 + t) / (10 + t))
    with warmup (t: updates so far), so early averages forget the init."""
    if self.ema is None:
      return self
    d = jnp.asarray(decay, jnp.float32)
    if warmup:
      t = self.step.astype(jnp.float32)
      d = jnp.minimum(d, (1.0 + t) / (10.0 + t))
    current = {"params": self.params, "batch_stats": self.batch_stats}
    ema = jax.tree.map(lambda e, w: (d * e + (1.0 - d) * w).astype(e.dtype),
                       self.ema, current)
    return self.replace(ema=ema)
