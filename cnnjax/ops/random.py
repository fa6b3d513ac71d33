"""Fewer, larger random-number draws in one program, with identical values.

`batch_draws(fn)` is `fn` with its random draws regrouped: every
`jax.random` call that does not depend on another one's result is made in
one call with all the others of its wave. The values do not change, to the
bit; what changes is the program XLA compiles.

Why. `model.init` of a ResNet-50 draws about 160 keys (`fold_in` of each
layer's name) and 54 kernels. Each draw lowers to its own threefry hash, an
elementwise program of some hundred operations that XLA:CPU compiles to
machine code separately, about 0.1 s each whatever the array's size: 5-6 s
of compilation for 0.2 s of hashing. Regrouped, the 200 draws become a few
hashes (one per wave: the layer keys, then the kernels' bits), and the
compile time goes to what the remaining (per-kernel) transforms cost.

How. `fn` is traced to a jaxpr; nested `jit` calls are inlined; each
equation gets a wave number, the most random draws on any path from the
inputs to it. Waves are evaluated in order: first all draws of the wave,
together, then the other equations of the wave in their original order.
Together means:

- `random_fold_in` and `random_split` calls with the same parameters and
  shapes are stacked and made as one `jax.vmap`-ed call (both are
  elementwise in the key, so each result is what the call alone gives);
- `random_bits` calls on threefry keys with `jax_threefry_partitionable`
  (JAX's default) are one `threefry2x32` hash over the concatenation of
  their counters: under that setting the bits of a draw of shape S are the
  hash of (key, flat index) for each index of S, so each draw is a slice of
  the concatenation, reshaped. Other key implementations, or the other
  setting, keep one call per draw (the result is the same, only slower to
  compile).

Anything else (custom derivatives, control flow) is bound as it is, so a
draw inside a `lax.scan` or a `custom_jvp` is not regrouped; none of
cnnjax's initializers has one.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore
from jax.extend.random import threefry2x32_p

_DRAWS = ("random_bits", "random_fold_in", "random_split")
_INLINED = ("jit", "pjit")


class _Graph:
  """`fn`'s equations with nested jit calls inlined, over numbered values."""

  def __init__(self):
    self.nodes: list[tuple[Any, list, list[int]]] = []  # (eqn, inputs, outputs)
    self.consts: dict[int, Any] = {}
    self._count = 0

  def new_id(self) -> int:
    self._count += 1
    return self._count

  def add(self, jaxpr, consts, inputs: list) -> list:
    """Inlines `jaxpr` with its constants and input references; returns the
    references of its outputs. A reference is a value id (int) or a
    ('literal', value) pair."""
    env: dict[Any, Any] = {}

    def ref(atom):
      if isinstance(atom, jcore.Literal):
        return ("literal", atom.val)
      return env[atom]

    for var, value in zip(jaxpr.constvars, consts):
      env[var] = self.new_id()
      self.consts[env[var]] = value
    for var, inp in zip(jaxpr.invars, inputs):
      env[var] = inp
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in _INLINED:
        closed = eqn.params["jaxpr"]
        outs = self.add(closed.jaxpr, closed.consts, [ref(a) for a in eqn.invars])
        for var, out in zip(eqn.outvars, outs):
          env[var] = out
        continue
      outs = []
      for var in eqn.outvars:
        env[var] = self.new_id()
        outs.append(env[var])
      self.nodes.append((eqn, [ref(a) for a in eqn.invars], outs))
    return [ref(a) for a in jaxpr.outvars]

  def waves(self, input_ids) -> list[int]:
    """Each node's wave: the most draws on a path to it (draws included)."""
    depth = {i: 0 for i in input_ids}
    depth.update({i: 0 for i in self.consts})
    result = []
    for eqn, inputs, outputs in self.nodes:
      d = max((depth[i] for i in inputs if isinstance(i, int)), default=0)
      d += eqn.primitive.name in _DRAWS
      for o in outputs:
        depth[o] = d
      result.append(d)
    return result


def _bind(eqn, args):
  out = eqn.primitive.bind(*args, **eqn.primitive.get_bind_params(eqn.params))
  return out if eqn.primitive.multiple_results else [out]


# Draws are laid out in rows of this many elements, each row in one draw, so
# that keys and counters are per row (broadcast along it) instead of per element.
_ROW = 4096


def _concatenated_bits(draws) -> list:
  """The random_bits draws [(eqn, args)] on threefry keys, from one hash."""
  sizes = [math.prod(eqn.params["shape"]) for eqn, _ in draws]
  rows = [-(-n // _ROW) for n in sizes]
  keys = jnp.stack([jax.random.key_data(args[0]) for _, args in draws])  # (D, 2)
  owner = np.repeat(np.arange(len(draws)), rows)  # the draw of each row
  first = np.repeat(np.cumsum([0] + rows[:-1]), rows)
  row_keys = keys[owner]  # (R, 2)
  # The flat index of each element in its own draw, as (high, low) words.
  low = (np.arange(len(owner), dtype=np.uint32) - first.astype(np.uint32))
  low = low[:, None] * np.uint32(_ROW) + lax.iota(jnp.uint32, _ROW)[None, :]
  bits1, bits2 = threefry2x32_p.bind(row_keys[:, :1], row_keys[:, 1:],
                                     jnp.zeros_like(low), low)
  out, start = [], 0
  for (eqn, _), n, r in zip(draws, sizes, rows):
    width, shape = eqn.params["bit_width"], eqn.params["shape"]
    b1 = bits1[start:start + r].reshape(-1)[:n]
    b2 = bits2[start:start + r].reshape(-1)[:n]
    start += r
    if width == 64:
      bits = (lax.convert_element_type(b1, jnp.uint64) << jnp.uint64(32)) | \
          lax.convert_element_type(b2, jnp.uint64)
    else:
      bits = lax.convert_element_type(b1 ^ b2, np.dtype(f"uint{width}"))
    out.append([bits.reshape(shape)])
  return out


def _concatenable(eqn, key) -> bool:
  width = eqn.params["bit_width"]
  return (jax.config.jax_threefry_partitionable and
          str(jax.random.key_impl(key)) == "threefry2x32" and
          key.shape == () and 0 < math.prod(eqn.params["shape"]) < 2**31 and
          (width != 64 or jax.config.jax_enable_x64))


def _stacked(eqn, args_list) -> list:
  """Calls of one fold_in/split equation on several argument lists, as one
  vmapped call."""
  stacked = [jnp.stack(column) for column in zip(*args_list)]
  outs = jax.vmap(lambda *a: _bind(eqn, a))(*stacked)
  return [[o[i] for o in outs] for i in range(len(args_list))]


def _draw_wave(items) -> list:
  """Results of the draws [(eqn, args)] of one wave, in their order."""
  results: list[Any] = [None] * len(items)
  bits, groups = [], collections.defaultdict(list)
  for index, (eqn, args) in enumerate(items):
    if eqn.primitive.name == "random_bits" and _concatenable(eqn, args[0]):
      bits.append(index)
    elif eqn.primitive.name != "random_bits":
      signature = (eqn.primitive.name, repr(sorted(eqn.params.items())),
                   tuple(str(jax.typeof(a)) for a in args))
      groups[signature].append(index)
    else:
      results[index] = _bind(eqn, args)
  if bits:
    for index, out in zip(bits, _concatenated_bits([items[i] for i in bits])):
      results[index] = out
  for indices in groups.values():
    if len(indices) == 1:
      eqn, args = items[indices[0]]
      results[indices[0]] = _bind(eqn, args)
      continue
    eqn = items[indices[0]][0]
    outs = _stacked(eqn, [items[i][1] for i in indices])
    for index, out in zip(indices, outs):
      results[index] = out
  return results


def batch_draws(fn: Callable) -> Callable:
  """`fn` with its independent random draws made together (module docstring).

  The result is traced again on each call; wrap it in `jax.jit`."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    flat, tree = jax.tree_util.tree_flatten((args, kwargs))
    def call(*leaves):
      a, kw = jax.tree_util.tree_unflatten(tree, leaves)
      return fn(*a, **kw)

    closed, out_shape = jax.make_jaxpr(call, return_shape=True)(*flat)
    if closed.effects:  # Ordered effects (callbacks, prints) keep their order.
      return call(*flat)
    graph = _Graph()
    input_ids = [graph.new_id() for _ in flat]
    outputs = graph.add(closed.jaxpr, closed.consts, input_ids)
    values: dict[int, Any] = dict(zip(input_ids, flat))
    values.update(graph.consts)

    def read(r):
      return r[1] if isinstance(r, tuple) else values[r]

    waves = graph.waves(input_ids)
    order = collections.defaultdict(list)
    for node, wave in zip(graph.nodes, waves):
      order[wave].append(node)
    for wave in sorted(order):
      nodes = order[wave]
      draws = [n for n in nodes if n[0].primitive.name in _DRAWS]
      for (eqn, inputs, outs), result in zip(
          draws, _draw_wave([(n[0], [read(i) for i in n[1]]) for n in draws])):
        values.update(zip(outs, result))
      for eqn, inputs, outs in nodes:
        if eqn.primitive.name in _DRAWS:
          continue
        values.update(zip(outs, _bind(eqn, [read(i) for i in inputs])))
    leaves = [read(r) for r in outputs]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape),
                                        leaves)

  return wrapped


def init(module, rngs, *args, **kwargs):
  """`jax.jit(module.init)(rngs, *args, **kwargs)` with the draws batched
  (`batch_draws`): the same variables, to the bit, compiled several times
  faster (a ResNet-50's in a third of the time). Keyword arguments are
  static (train=False, ...)."""
  return jax.jit(batch_draws(functools.partial(module.init, **kwargs)))(rngs, *args)
