"""Named intermediate features and replaceable classifier heads, for any model.

Every module call of a Flax model has a path ('stage2_block1/conv2', 'fc7',
...). `intermediate_features` returns the outputs of the modules asked for
without changing the model (Flax's `capture_intermediates`), which is what
visualization (feature maps, Grad-CAM) and transfer learning (penultimate
features) need; `layer_shapes` gives every module's output shape without
running anything. Every cnnjax classifier names its last layer `head`
(mostly a `layers.ClassifierHead`, made by `layers.classify`);
`replace_head` gives a model new classes while keeping the rest of its
weights.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError

HEAD = "head"


def _path(module: nn.Module) -> str:
  return "/".join(str(p) for p in module.path)


def feature_names(model: nn.Module, variables, x) -> list[str]:
  """The paths of every module called on `x`, in call order (abstractly)."""
  names: list[str] = []

  def record(mdl, method_name):
    if method_name == "__call__" and mdl.path:
      name = _path(mdl)
      if name not in names:
        names.append(name)
    return False

  jax.eval_shape(lambda v, a: model.apply(v, a, capture_intermediates=record,
                                          mutable=["intermediates"]),
                 variables, x)
  return names


def layer_shapes(model: nn.Module, variables, x) -> dict[str, Any]:
  """{module path: output shape, batch axis included} for every module
  called on `x` in inference, in `feature_names`' order (a module after
  the modules it calls), computed abstractly (nothing runs). `variables`
  may be None: they are then shaped by `model.init`. Modules returning
  something other than one array map to None.
  """
  shapes: dict[str, Any] = {}

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and context.module.path:
      shapes.setdefault(_path(context.module),
                        tuple(y.shape) if hasattr(y, "shape") else None)
    return y

  def forward(variables, a):
    if variables is None:
      variables = model.init(jax.random.key(0), a)
    with nn.intercept_methods(record):
      return model.apply(variables, a)

  jax.eval_shape(forward, variables, x)
  return shapes


def intermediate_features(model: nn.Module, variables, x,
                          names: Sequence[str], *, train: bool = False,
                          rngs=None) -> dict[str, Any]:
  """Runs the model and returns {name: output} for the module paths `names`.

  A module called more than once (shared weights) gives its first output.
  Unknown names raise `CnnjaxError` naming the close matches.
  """
  wanted = set(names)

  def keep(mdl, method_name):
    return method_name == "__call__" and _path(mdl) in wanted

  kwargs = {"mutable": ["intermediates"]}
  if train:
    kwargs["mutable"] = ["intermediates", "batch_stats"]
  _, state = model.apply(variables, x, train=train, rngs=rngs,
                         capture_intermediates=keep, **kwargs)
  found = {}
  flat = jax.tree_util.tree_flatten_with_path(
      state.get("intermediates", {}),
      is_leaf=lambda t: isinstance(t, tuple))[0]
  for key_path, value in flat:
    keys = [k.key for k in key_path if hasattr(k, "key")]
    if keys and keys[-1] == "__call__":
      found.setdefault("/".join(keys[:-1]), value[0])
  missing = [n for n in names if n not in found]
  if missing:
    known = feature_names(model, variables, x)
    hints = []
    for n in missing:
      close = difflib.get_close_matches(n, known, n=3, cutoff=0.4)
      hints.append(f"'{n}'" + (f" (did you mean {', '.join(close)}?)"
                               if close else ""))
    raise CnnjaxError(f"the model has no layer {', '.join(hints)}; its layers "
                      f"are listed by cnnjax summary")
  return {n: found[n] for n in names}


def replace_head(variables, num_classes: int, rng, *,
                 head: str = HEAD, dtype=jnp.float32):
  """New variables whose classifier `head` has `num_classes` outputs.

  The kernel is drawn like Flax's Dense default (LeCun normal) and the bias
  is zero; every other variable is kept. For a convolutional head (a 1x1
  conv) the last axis of the kernel is replaced the same way.
  """
  params = variables.get("params", {})
  if head not in params or "kernel" not in params[head]:
    raise CnnjaxError(f"the model has no classifier layer '{head}' to replace")
  old = params[head]["kernel"]
  shape = tuple(old.shape[:-1]) + (num_classes,)
  new_head = {"kernel": nn.initializers.lecun_normal()(rng, shape, dtype)}
  if "bias" in params[head]:
    new_head["bias"] = jnp.zeros((num_classes,), dtype)
  new_params = dict(params)
  new_params[head] = new_head
  return dict(variables, params=new_params)
