"""Modified ReLU gradients (guided backpropagation, deconvnet) for any model.

`modified_relu_gradient(fn, rule)` traces `fn` to a jaxpr and evaluates it
again, replacing every `jax.nn.relu` call (a `custom_jvp` around a jit named
'relu', possibly inside other jit calls) by a ReLU whose forward value is the
same but whose backward pass follows `rule`:

- 'guided' (Springenberg et al. 2015): g * (x > 0) * (g > 0);
- 'deconvnet' (Zeiler & Fergus 2014): g * (g > 0), whatever the forward sign.

Because the models are re-interpreted rather than patched, ReLUs bound at
import time (e.g. `act = nn.relu` in a module field) are found too.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError

RULES = ("guided", "deconvnet")


def _relu_with_rule(rule: str) -> Callable[[jax.Array], jax.Array]:
  @jax.custom_vjp
  def relu(x):
    return jnp.maximum(x, 0)

  def forward(x):
    return jnp.maximum(x, 0), x

  if rule == "guided":
    def backward(x, g):
      return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)
  else:  # deconvnet: the backward pass is itself a ReLU of the gradient
    def backward(x, g):
      del x
      return (jnp.where(g > 0, g, jnp.zeros_like(g)),)

  relu.defvjp(forward, backward)
  return relu


def _call_name(eqn) -> str | None:
  return eqn.params.get("name") if eqn.primitive.name in ("pjit", "jit") else None


def _is_relu(eqn) -> bool:
  """A jit named 'relu', or a custom_jvp whose body is only such a jit."""
  if _call_name(eqn) == "relu":
    return True
  if eqn.primitive.name == "custom_jvp_call":
    body = eqn.params["call_jaxpr"].jaxpr
    return len(body.eqns) == 1 and _call_name(body.eqns[0]) == "relu"
  return False


def _contains_relu(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if _is_relu(eqn):
      return True
    for sub in _sub_jaxprs(eqn):
      if _contains_relu(sub.jaxpr):
        return True
  return False


def _sub_jaxprs(eqn):
  """The closed jaxprs of call-like equations we know how to inline."""
  if eqn.primitive.name in ("pjit", "jit"):
    return [eqn.params["jaxpr"]]
  if eqn.primitive.name == "custom_jvp_call":
    return [eqn.params["call_jaxpr"]]
  return []


def _evaluate(jaxpr, consts, args, relu):
  from jax.extend.core import Literal

  env = {}

  def read(var):
    return var.val if isinstance(var, Literal) else env[var]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = value
  for var, value in zip(jaxpr.invars, args):
    env[var] = value
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    subs = _sub_jaxprs(eqn)
    if _is_relu(eqn):
      outs = [relu(values[-1])]  # custom_jvp_call: consts first, x last
    elif subs and _contains_relu(subs[0].jaxpr):
      # Inline the call so the ReLUs inside it get the new rule (a custom_jvp
      # around something holding a ReLU loses its own rule; none in models).
      outs = _evaluate(subs[0].jaxpr, subs[0].consts, values, relu)
    else:
      params = eqn.primitive.get_bind_params(eqn.params)
      if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
        values = [*subfuns, *values]
      with eqn.ctx.manager:
        outs = eqn.primitive.bind(*values, **params)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for var, value in zip(eqn.outvars, outs):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


def has_relu(fn: Callable, *args) -> bool:
  """Whether `fn(*args)` calls `jax.nn.relu` anywhere (traced, not run)."""
  return _contains_relu(jax.make_jaxpr(fn)(*args).jaxpr)


def modified_relu_gradient(fn: Callable, rule: str) -> Callable:
  """`fn` with the same values, whose gradients pass ReLUs by `rule`.

  Args:
    fn: any JAX-traceable function (e.g. `lambda x: trained.logits(x)`); its
      ReLUs must be `jax.nn.relu` / `flax.linen.relu` calls.
    rule: 'guided' (guided backpropagation) or 'deconvnet'.

  Returns:
    A function with the signature of `fn`.
  """
  if rule not in RULES:
    raise CnnjaxError(f"unknown ReLU gradient rule '{rule}'; use one of "
                      f"{', '.join(RULES)}")
  relu = _relu_with_rule(rule)

  def modified(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    flat_args = jax.tree_util.tree_leaves(args)
    outs = _evaluate(closed.jaxpr, closed.consts, flat_args, relu)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

  return modified
