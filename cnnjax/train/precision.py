"""Mixed precision: computation dtypes and dynamic loss scaling for float16.

bfloat16 has float32's exponent range, so it needs no loss scaling: the model
computes in bfloat16 while the parameters, the optimizer and the loss stay
float32. float16 gradients underflow to zero for small losses, so the loss is
multiplied by a scale S before the backward pass and the gradients divided by
S after it. S halves (and the update is skipped) whenever a gradient is not
finite and doubles after `growth_interval` finite steps in a row (Micikevicius
et al. 2018, "Mixed precision training").

Flax's `DynamicScale` wraps `value_and_grad` and adjusts its scale at every
call; here the scale must stay fixed over the micro-batches of one step and be
adjusted once, after the gradients are summed over devices and micro-batches,
so the three operations are separate functions of a small state.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@flax.struct.dataclass
class LossScale:
  scale: jax.Array  # float32 scalar
  finite_steps: jax.Array  # int32: finite steps since the last change
  growth_interval: int = flax.struct.field(pytree_node=False, default=2000)
  backoff: float = flax.struct.field(pytree_node=False, default=0.5)

  @classmethod
  def create(cls, initial: float = 2.0 ** 15, growth_interval: int = 2000,
             backoff: float = 0.5) -> "LossScale":
    return cls(scale=jnp.asarray(initial, jnp.float32),
               finite_steps=jnp.zeros((), jnp.int32),
               growth_interval=growth_interval, backoff=backoff)

  def scale_loss(self, loss):
    return loss * self.scale.astype(loss.dtype)

  def unscale(self, grads):
    inverse = 1.0 / self.scale
    return jax.tree.map(lambda g: (g.astype(jnp.float32) * inverse).astype(g.dtype),
                        grads)

  def adjust(self, grads_finite: jax.Array) -> "LossScale":
    """The scale for the next step, given whether this step's gradients were finite."""
    grow = self.finite_steps + 1 >= self.growth_interval
    scale = jnp.where(grads_finite,
                      jnp.where(grow, self.scale * 2.0, self.scale),
                      jnp.maximum(self.scale * self.backoff, 1.0))
    finite_steps = jnp.where(grads_finite & ~grow, self.finite_steps + 1, 0)
    return self.replace(scale=scale, finite_steps=finite_steps.astype(jnp.int32))


def all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
