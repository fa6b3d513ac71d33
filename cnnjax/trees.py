"""Pytree paths: the names that parameters have everywhere in cnnjax.

A parameter's path is the '/'-joined names of its keys: 'c1/kernel',
'stage3_block0/conv1/kernel'. The same paths name parameters in
`optimizer.lr_multipliers`, in transfer reports and in checkpoints.
"""

from __future__ import annotations

from typing import Any

import jax


def path_string(key_path) -> str:
  """The '/'-joined names of a JAX key path: 'c1/kernel', 'stage3/block0/bn/scale'."""
  parts = []
  for key in key_path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def flat_paths(tree) -> dict[str, Any]:
  """{path_string: leaf} of a pytree (empty subtrees have no entries)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {path_string(p): leaf for p, leaf in leaves}


def stack(trees):
  """Trees of the same structure stacked leaf by leaf on a new leading axis."""
  import jax.numpy as jnp

  leaves = [jax.tree.leaves(t) for t in trees]
  treedef = jax.tree.structure(trees[0])
  return treedef.unflatten([jnp.stack(xs) for xs in zip(*leaves)])


def take(tree, index: int):
  """Entry `index` of every leaf's leading axis (the inverse of `stack`)."""
  return jax.tree.map(lambda x: x[index], tree)
