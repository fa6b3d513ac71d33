"""The training state: everything a checkpoint must hold to resume exactly."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any  # {} for models without batch normalization
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformationExtraArgs = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, apply_fn, variables, tx):
    params = variables["params"]
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=variables.get("batch_stats", {}),
               opt_state=tx.init(params), apply_fn=apply_fn, tx=tx)

  @property
  def variables(self):
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def apply_gradients(self, grads, *, batch_stats, loss):
    """One optimizer update; `loss` feeds schedules that read it (plateau)."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params,
                                        value=loss)
    return self.replace(step=self.step + 1,
                        params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
