"""PyTorch state dicts to cnnjax variables and back, by the twin tables.

What a module holds decides how its tensors convert, read off the cnnjax
variables (so the tables in twins.py only name modules):

  convolution  kernel (*k, I/g, O)  <-> weight (O, I/g, *k); bias as is
  dense        kernel (I, O)        <-> weight (O, I), transposed; after a
               flatten (rule chw=(H, W)) the input axis is reordered from
               cnnjax's (H, W, C) to PyTorch's (C, H, W); a 1x1
               convolution in PyTorch (rule conv1x1) gets its two unit axes
  BatchNorm    scale, bias          <-> weight, bias
               batch_stats mean/var <-> running_mean, running_var
               (num_batches_tracked is not imported, and exported as 0)

Both directions are exact (transposes and reshapes only), so cnnjax ->
torch -> cnnjax gives back the same bits. BatchNorm's epsilon is part of
the model (1e-5, or 1e-3 for GoogLeNet, as in torchvision), not of the file.

Import checks everything before it builds anything: every tensor the model
needs must be in the file with the right shape, and every tensor of the file
must be used (or knowingly ignored, see `Twin.ignored`); the first problem is
one `WeightsMismatchError` sentence naming the key and both shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnnjax.errors import CnnjaxError
from cnnjax.ops import random as random_ops
from cnnjax.weights.twins import Rule, Twin, twin_of

HEAD = "head"


class WeightsMismatchError(CnnjaxError):
  """A weight file that does not fit the model asked for."""


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One PyTorch tensor a cnnjax model has: where it goes and its shape."""
  key: str                          # PyTorch state-dict key
  jax_path: tuple[str, ...]         # (collection, *module path, leaf)
  torch_shape: tuple[int, ...]
  kind: str                         # 'conv', 'dense', 'dense_chw', 'conv1x1', 'copy'
  chw: tuple[int, int] | None = None


# ---- per-kind conversions (cnnjax array <-> PyTorch array)

def _to_torch(kind: str, value: np.ndarray, chw=None) -> np.ndarray:
  if kind == "conv":  # (*k, I, O) -> (O, I, *k)
    n = value.ndim
    return np.transpose(value, (n - 1, n - 2) + tuple(range(n - 2)))
  if kind == "dense":
    return value.T
  if kind == "conv1x1":
    return value.T[:, :, None, None]
  if kind == "dense_chw":  # (H*W*C, O) -> (O, C*H*W)
    h, w = chw
    c = value.shape[0] // (h * w)
    return value.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(value.shape[1], -1)
  return value


def _from_torch(kind: str, value: np.ndarray, chw=None) -> np.ndarray:
  if kind == "conv":  # (O, I, *k) -> (*k, I, O)
    return np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))
  if kind == "dense":
    return value.T
  if kind == "conv1x1":
    return value.reshape(value.shape[:2]).T
  if kind == "dense_chw":  # (O, C*H*W) -> (H*W*C, O)
    h, w = chw
    c = value.shape[1] // (h * w)
    return value.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
  return value


def _torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of a cnnjax array of `shape` (nothing is allocated)."""
  if kind == "conv":
    return (shape[-1], shape[-2]) + tuple(shape[:-2])
  if kind in ("dense", "dense_chw"):
    return (shape[1], shape[0])
  if kind == "conv1x1":
    return (shape[1], shape[0], 1, 1)
  return tuple(shape)


# ---- the plan: every tensor of a model, from its (abstract) variables

def _modules(variables) -> dict[tuple[str, ...], dict[tuple[str, str], Any]]:
  """{module path: {(collection, leaf): array or ShapeDtypeStruct}}."""
  modules: dict[tuple[str, ...], dict] = {}
  for path, leaf in traverse_util.flatten_dict(dict(variables)).items():
    collection, *module, name = path
    modules.setdefault(tuple(module), {})[(collection, name)] = leaf
  return modules


def _module_tensors(twin: Twin, module: tuple[str, ...], leaves: dict
                    ) -> list[Tensor]:
  path = "/".join(module)
  torch_name, rule = twin.torch_module(path)
  names = {name for _, name in leaves}
  out = []
  if "scale" in names or ("batch_stats", "mean") in leaves:
    pairs = {("params", "scale"): "weight", ("params", "bias"): "bias",
             ("batch_stats", "mean"): "running_mean",
             ("batch_stats", "var"): "running_var"}
    for where, leaf in leaves.items():
      if where not in pairs:
        raise CnnjaxError(f"cnnjax layer '{path}' holds '{'/'.join(where)}', "
                          "which no PyTorch BatchNorm has")
      out.append(Tensor(f"{torch_name}.{pairs[where]}", (where[0], *module, where[1]),
                        tuple(leaf.shape), "copy"))
    return out
  kernel = leaves.get(("params", "kernel"))
  if kernel is None or set(leaves) - {("params", "kernel"), ("params", "bias")}:
    raise CnnjaxError(f"cnnjax layer '{path}' ({', '.join('/'.join(k) for k in leaves)})"
                      " is neither a convolution, a dense layer nor a BatchNorm")
  kind = _kernel_kind(rule, kernel.ndim)
  shape = tuple(kernel.shape)
  out.append(Tensor(f"{torch_name}.weight", ("params", *module, "kernel"),
                    _torch_shape(kind, shape), kind, rule.chw))
  if ("params", "bias") in leaves:
    out.append(Tensor(f"{torch_name}.bias", ("params", *module, "bias"),
                      tuple(leaves[("params", "bias")].shape), "copy"))
  return out


def _kernel_kind(rule: Rule, ndim: int) -> str:
  if ndim >= 3:
    return "conv"
  if rule.chw is not None:
    return "dense_chw"
  return "conv1x1" if rule.conv1x1 else "dense"


def plan(twin: Twin, variables) -> list[Tensor]:
  """Every PyTorch tensor of the model whose (abstract) variables are given."""
  tensors = []
  for module, leaves in _modules(variables).items():
    tensors.extend(_module_tensors(twin, module, leaves))
  return tensors


# ---- import

@dataclasses.dataclass
class ImportReport:
  model: str
  twin: str
  source: str
  tensors: int
  num_classes: int
  head_reinitialized: bool = False
  file_classes: int | None = None
  ignored: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    text = (f"loaded {self.tensors} tensors of {self.twin} into cnnjax's "
            f"{self.model}")
    if self.source:
      text += f" from {self.source}"
    if self.ignored:
      text += (f"; ignored {len(self.ignored)} tensors the model has no use "
               f"for ({self.ignored[0]}, ...)")
    if self.head_reinitialized:
      text += (f"; the classifier ('{HEAD}') has {self.num_classes} classes "
               f"where the file's has {self.file_classes}, so it is newly "
               "initialized and needs training")
    return text


def _head_classes(twin: Twin, state: Mapping[str, np.ndarray]) -> int | None:
  name, _ = twin.torch_module(HEAD)
  weight = state.get(f"{name}.weight")
  return None if weight is None else int(weight.shape[0])


def _shape_text(shape) -> str:
  return str(tuple(int(d) for d in shape))


def check_state_dict(twin: Twin, tensors: list[Tensor],
                     state: Mapping[str, np.ndarray], *, skip_head: bool,
                     source: str = "the file") -> list[str]:
  """Raises WeightsMismatchError at the first key that does not fit; returns
  the ignored keys."""
  head_keys = {t.key for t in tensors if t.jax_path[1:-1] == (HEAD,)}
  wanted = {t.key: t for t in tensors}
  ignored = []
  for key, value in state.items():
    if key in wanted:
      expected = wanted[key].torch_shape
      if skip_head and key in head_keys:
        continue
      if tuple(value.shape) != expected:
        raise WeightsMismatchError(
            f"'{key}' has shape {_shape_text(value.shape)} in {source} but "
            f"{twin.model} needs {_shape_text(expected)} there (cnnjax "
            f"'{'/'.join(wanted[key].jax_path)}'); the file is not for "
            f"{twin.library}'s {twin.name} with these options")
    elif key.endswith(".num_batches_tracked") or (
        skip_head and key.rsplit(".", 1)[0] == twin.torch_module(HEAD)[0]):
      continue  # A counter cnnjax has no use for; a head being replaced.
    elif twin.is_ignored(key):
      ignored.append(key)
    else:
      raise WeightsMismatchError(
          f"{source} has a tensor '{key}' {_shape_text(value.shape)} that "
          f"{twin.library}'s {twin.name} (cnnjax {twin.model}) does not have; "
          "the file is for another model")
  for key, tensor in wanted.items():
    if key not in state and not (skip_head and key in head_keys):
      raise WeightsMismatchError(
          f"{source} lacks '{key}', which {twin.model} needs with shape "
          f"{_shape_text(tensor.torch_shape)} (cnnjax '{'/'.join(tensor.jax_path)}'); "
          "the file is for another model")
  return ignored


def abstract_variables(model, input_shape, input_dtype="float32"):
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.dtype(input_dtype))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype),
                                           train=False))


def state_dict_to_variables(model_name: str, model, state: Mapping[str, np.ndarray], *,
                            input_shape, reinit_head: bool = False, rng=0,
                            source: str = "the file") -> tuple[dict, ImportReport]:
  """cnnjax variables of `model` (an instance of `model_name`) from a PyTorch
  state dict of its twin. With `reinit_head` the classifier is drawn afresh
  (the model's class count differs from the file's)."""
  twin = twin_of(model_name)
  state = {twin.rename(k): v for k, v in state.items()}
  abstract = abstract_variables(model, input_shape)
  tensors = plan(twin, abstract)
  ignored = check_state_dict(twin, tensors, state, skip_head=reinit_head,
                             source=source)
  flat = {}
  for t in tensors:
    if reinit_head and t.jax_path[1:-1] == (HEAD,):
      continue
    value = _from_torch(t.kind, np.asarray(state[t.key]), t.chw)
    leaf = traverse_util.flatten_dict(dict(abstract))[t.jax_path]
    flat[t.jax_path] = np.asarray(value.astype(leaf.dtype), order="C")
  if reinit_head:
    key = jax.random.key(rng) if isinstance(rng, int) else rng
    fresh = random_ops.init(model, key, jnp.zeros((1, *input_shape), jnp.float32),
                            train=False)
    for path, value in traverse_util.flatten_dict(dict(fresh)).items():
      if path[1:-1] == (HEAD,):
        flat[path] = np.asarray(value)
  variables = traverse_util.unflatten_dict(flat)
  head_name = twin.torch_module(HEAD)[0]
  file_head = state.get(f"{head_name}.weight")
  report = ImportReport(
      model=model_name, twin=f"{twin.library}.{twin.name}", source=source,
      tensors=len(tensors) - (2 if reinit_head else 0),
      num_classes=int(traverse_util.flatten_dict(dict(abstract))[
          ("params", HEAD, "kernel")].shape[-1]),
      head_reinitialized=reinit_head,
      file_classes=None if file_head is None else int(file_head.shape[0]),
      ignored=ignored)
  return variables, report


# ---- export

def variables_to_state_dict(model_name: str, variables) -> dict[str, np.ndarray]:
  """The state dict of the twin (loads with strict=True), from cnnjax variables."""
  twin = twin_of(model_name)
  variables = {k: v for k, v in dict(variables).items()
               if k in ("params", "batch_stats")}
  flat = traverse_util.flatten_dict(variables)
  state: dict[str, np.ndarray] = {}
  for t in plan(twin, variables):
    value = np.asarray(flat[t.jax_path], np.float32)
    state[t.key] = np.asarray(_to_torch(t.kind, value, t.chw), order="C")
    if t.key.endswith(".running_var"):
      state[t.key[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
  return state
