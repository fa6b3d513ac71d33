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
  # Lookahead's slow copy of {'params', 'batch_stats'}, or None.
  slow: Any = None

  @classmethod
  def create(cls, *, apply_fn, variables, tx, ema: bool = False,
             loss_scale: LossScale | None = None, lookahead: bool = False):
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
               loss_scale=loss_scale,
               slow=(jax.tree.map(jnp.array, {"params": params,
                                              "batch_stats": batch_stats})
                     if lookahead else None))

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

  def sync_lookahead(self, every: int, decay: float, power: float,
                     total_steps: int) -> "TrainState":
    """Lookahead (config.lookahead): after update t, when t is a multiple of
    `every`, slow <- d * slow + (1 - d) * weights with d = decay * (t /
    total_steps) ** power, and the weights (and BatchNorm statistics) become
    slow; at t >= total_steps they become slow as it is (d = 1). Computed
    every step and selected, so the step stays one program."""
    if self.slow is None or not every:
      return self
    t = self.step
    last = t >= total_steps
    sync = (t % every == 0) | last
    fraction = t.astype(jnp.float32) / float(total_steps)
    d = jnp.where(last, 1.0, decay * fraction ** power)
    current = {"params": self.params, "batch_stats": self.batch_stats}
    moved = jax.tree.map(lambda s, w: (d * s + (1.0 - d) * w).astype(s.dtype),
                         self.slow, current)
    slow = jax.tree.map(lambda m, s: jnp.where(sync, m, s), moved, self.slow)
    current = jax.tree.map(lambda s, w: jnp.where(sync, s, w), slow, current)
    return self.replace(slow=slow, params=current["params"],
                        batch_stats=current["batch_stats"])
