"""Mesh-axis types inside `shard_map` for cnnjax's own gradients and kernels.

Inside `jax.shard_map` every value carries the mesh axes over which it varies
(a per-device batch varies over the data axis; replicated parameters do not).
JAX's own operations combine the two implicitly, but a `custom_vjp` must
return gradients of its inputs' exact types, and an FFI call does not derive
its output's type from its inputs'. `like` and `union` give both the types
JAX's autodiff would: a replicated parameter cast to the batch's axes has its
gradient summed over them by the cast's transpose.
"""

from __future__ import annotations

import jax
from jax import lax


def axes(a) -> frozenset:
  """The mesh axes over which `a` varies (empty outside shard_map). jax 0.10
  keeps them in `manual_axis_type.varying`, older releases in `vma`."""
  aval = jax.typeof(a)
  manual = getattr(aval, "manual_axis_type", None)
  return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def cast(a, to: frozenset):
  """`a` varying over `to` as well as its own axes."""
  missing = tuple(sorted(to - axes(a)))
  return lax.pcast(a, missing, to="varying") if missing else a


def like(x, *arrays):
  """`arrays` cast to vary over x's axes too (one array: the array itself)."""
  cast_ = tuple(cast(a, axes(x)) for a in arrays)
  return cast_[0] if len(cast_) == 1 else cast_


def union(out, *inputs):
  """`out` varying over every axis any of `inputs` varies over: the type of
  a kernel's result computed from those inputs."""
  return cast(out, frozenset().union(*(axes(a) for a in inputs)))
