"""Per-layer summary of a model: shapes, sizes, parameters, FLOPs, receptive fields.

Nothing is computed on real data: the model is traced abstractly
(`jax.eval_shape`) with Flax's method interception recording every module call.
A row is a leaf module (one that calls no other module; a module called
several times, e.g. a recurrent cell, is listed once); functions between
modules (ReLU, additions, `nn.max_pool`) have no row and do not change the
activation count, as in the lecture's VGG-16 memory table.

Receptive fields follow the data: each recorded output remembers its field,
and a module's input is looked up by identity; an input made by a function
(an addition, a ReLU) is matched to the widest recorded field at the same
spatial shape. A spatial reduction done by a function rather than a module
(e.g. `nn.max_pool`) is assumed to be non-overlapping (window = stride =
size ratio); the layers in `cnnjax.layers` are modules and need no guess.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.analysis.receptive_field import LayerGeometry, ReceptiveField
from cnnjax.analysis.shapes import conv_flops, same_padding
from cnnjax.errors import CnnjaxError
from cnnjax.layers.transpose import ConvTranspose


@dataclasses.dataclass
class LayerRow:
  """One leaf module call."""
  name: str  # Module path, e.g. 'stage1_block0/conv1'.
  kind: str  # Module class name.
  output_shape: tuple[int, ...]  # Without the batch axis.
  activations: int  # Output elements per example.
  activation_bytes: int
  params: int
  flops: int | None  # Per example; None where not counted.
  receptive_field: tuple[float, ...] | None  # Per spatial dim; None = global.
  jump: tuple[float, ...] | None
  start: tuple[float, ...] | None  # Input index of the first unit's centre.


@dataclasses.dataclass
class ModelSummary:
  """The rows and the totals; `format()` prints the table."""
  model: str
  input_shape: tuple[int, ...]
  input_dtype: str
  rows: list[LayerRow]
  params: int  # Trainable ('params' collection).
  non_trainable: int  # Everything else, e.g. BatchNorm statistics.
  param_bytes: int
  input_bytes: int
  forward_activation_bytes: int  # Per example: input + every layer output.
  training_activation_bytes: int  # Per example: activations + their grads.
  flops_counted: int  # Per example: weighted layers (see _layer_flops), 2 per multiply-add.
  flops_xla: float | None  # Per example, from XLA's cost analysis.
  xla_training_temp_bytes: float | None = None  # Per example, compiled step.

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def format(self) -> str:
    return format_summary(self)


def _path(module: nn.Module) -> str:
  return "/".join(str(p) for p in module.path) or type(module).__name__


def _subtree_size(tree: Any, path: Sequence[str]) -> int:
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return 0
    tree = tree[key]
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(
      tree))


def _tuple(value, ndim: int, default: int) -> tuple[int, ...]:
  if value is None:
    return (default,) * ndim
  if isinstance(value, int):
    return (value,) * ndim
  value = tuple(value)
  if len(value) == 1 and ndim > 1:
    value = value * ndim
  return value


def _low_pads(padding, in_spatial, kernel, strides, dilation) -> tuple[int, ...]:
  ndim = len(in_spatial)
  if isinstance(padding, str):
    if padding.upper() == "SAME":
      return tuple(same_padding(w, k, s, d)[0] for w, k, s, d in zip(
          in_spatial, kernel, strides, dilation))
    if padding.upper() == "CAUSAL":
      return tuple(d * (k - 1) for k, d in zip(kernel, dilation))
    return (0,) * ndim  # VALID, CIRCULAR (wraps: centres do not move).
  if isinstance(padding, int):
    return (padding,) * ndim
  pads = []
  for p in padding:
    pads.append(p if isinstance(p, int) else p[0])
  if len(pads) == 1 and ndim > 1:
    pads = pads * ndim
  return tuple(pads)


def _geometry(module, in_spatial, out_spatial) -> list[LayerGeometry] | None:
  """Per-dim geometry of a leaf; None if the module reduces space globally."""
  ndim = len(in_spatial)
  kernel = getattr(module, "kernel_size", None)
  window = getattr(module, "window_shape", None)
  if isinstance(module, ConvTranspose):
    return [_transposed_geometry(*g) for g in zip(
        module.kernel_size, module.strides, module.dilation, module.padding)]
  if kernel is not None and not isinstance(module, nn.ConvTranspose):
    kernel = _tuple(kernel, ndim, 1)
    strides = _tuple(getattr(module, "strides", None), ndim, 1)
    dilation = _tuple(getattr(module, "kernel_dilation", None), ndim, 1)
    pads = _low_pads(getattr(module, "padding", "VALID"), in_spatial, kernel,
                     strides, dilation)
    return [LayerGeometry(k, s, d, p) for k, s, d, p in zip(
        kernel, strides, dilation, pads)]
  if window is not None:
    window = _tuple(window, ndim, 1)
    strides = _tuple(getattr(module, "strides", None) or window, ndim, 1)
    pads = _low_pads(getattr(module, "padding", "VALID"), in_spatial, window,
                     strides, (1,) * ndim)
    return [LayerGeometry(k, s, 1, p) for k, s, p in zip(window, strides, pads)]
  return _inferred_geometry(in_spatial, out_spatial)


def _transposed_geometry(kernel: int, stride: int, dilation: int,
                         padding: int) -> LayerGeometry:
  """One dim of `layers.ConvTranspose` in its input's units: jump 1/stride;
  the size grows by the widest span of input units one output sees; the
  centre moves by (padding - dilation * (kernel - 1) / 2) / stride, the
  mean over output positions (the true centres step, a line cannot)."""
  span = 0  # Output o reads input (o + padding - dilation * m) / stride.
  for residue in range(stride):
    taps = [m for m in range(kernel) if (residue - dilation * m) % stride == 0]
    if taps:
      span = max(span, (taps[-1] - taps[0]) * dilation // stride)
  low = span / 2 - (padding - dilation * (kernel - 1) / 2) / stride
  return LayerGeometry(span + 1, 1 / stride, 1, low)


def _inferred_geometry(in_spatial, out_spatial) -> list[LayerGeometry]:
  """A layer of unknown kind: pointwise if the shape is kept, else assume
  non-overlapping windows (kernel = stride = the size ratio)."""
  geometry = []
  for w_in, w_out in zip(in_spatial, out_spatial):
    stride = max(1, w_in // max(w_out, 1)) if w_out != w_in else 1
    geometry.append(LayerGeometry(stride, stride))
  return geometry


def _layer_flops(module, x, y) -> int | None:
  """Counted FLOPs per example of weighted layers (2 per multiply-add).

  A layer of another kind is counted when it defines a method (marked
  `nn.nowrap`) `counted_flops(in_shape, out_shape) -> int` (shapes of one
  example, no batch axis), in the same units: layers.LocallyConnected and LeNet-5's
  SparseConv and EuclideanRBF do."""
  if x is None or y is None:
    return None
  if hasattr(type(module), "counted_flops"):
    return int(module.counted_flops(tuple(x.shape[1:]), tuple(y.shape[1:])))
  if isinstance(module, nn.Conv):  # layers.Conv included.
    kernel = _tuple(module.kernel_size, y.ndim - 2, 1)
    return conv_flops(y.shape[1:-1], kernel, x.shape[-1], y.shape[-1],
                      groups=module.feature_group_count)
  if isinstance(module, ConvTranspose):  # Every input scatters a kernel.
    return conv_flops(x.shape[1:-1], module.kernel_size, y.shape[-1],
                      x.shape[-1], groups=module.groups)
  if isinstance(module, nn.Dense):
    positions = math.prod(y.shape[1:-1])
    return 2 * positions * x.shape[-1] * y.shape[-1]
  return None


class _Recorder:
  """Collects leaf module calls and propagates receptive fields."""

  def __init__(self, input_spatial: tuple[int, ...]):
    self.input_spatial = input_spatial
    self.ndim = len(input_spatial)
    self.calls: list[dict] = []
    self.by_id: dict[int, tuple[ReceptiveField, ...] | None] = {}
    self.keep_alive: list[Any] = []  # Stops ids being reused while tracing.
    self.seen: list[tuple[tuple[int, ...], tuple[ReceptiveField, ...]]] = []
    self.active: list[nn.Module] = []  # Modules whose __call__ is running.

  def spatial(self, a) -> tuple[int, ...] | None:
    if not hasattr(a, "shape") or a.ndim != self.ndim + 2:
      return None
    return tuple(a.shape[1:-1])

  def remember(self, a, fields) -> None:
    if not hasattr(a, "shape"):
      return
    self.keep_alive.append(a)
    self.by_id[id(a)] = fields
    spatial = self.spatial(a)
    if fields is not None and spatial is not None:
      self.seen.append((spatial, fields))

  def field_of(self, a) -> tuple[ReceptiveField, ...] | None:
    """The field of an array: by identity, else the widest field recorded
    at its spatial shape, else the latest field passed through an inferred
    (non-overlapping) resampling to its shape."""
    if id(a) in self.by_id:
      return self.by_id[id(a)]
    spatial = self.spatial(a)
    if spatial is None:
      return None
    fields = self.field_of_shape(spatial)
    if fields is None and self.seen:
      last_spatial, last = self.seen[-1]
      geometry = _inferred_geometry(last_spatial, spatial)
      fields = tuple(f.after(g) for f, g in zip(last, geometry))
    return fields

  def interceptor(self, next_fun, args, kwargs, context):
    if context.method_name != "__call__" or (
        self.active and self.active[-1] is context.module):
      # Other methods, and a subclass's `super().__call__` (layers.Conv
      # wraps nn.Conv), belong to the call already being recorded.
      return next_fun(*args, **kwargs)
    self.active.append(context.module)
    try:
      return self._record(next_fun, args, kwargs, context)
    finally:
      self.active.pop()

  def _record(self, next_fun, args, kwargs, context):
    x = args[0] if args and hasattr(args[0], "shape") else None
    in_field = self.field_of(x) if x is not None else None
    index = len(self.calls)
    self.calls.append({})
    try:
      y = next_fun(*args, **kwargs)
    except BaseException:
      # A call cut short (a backbone stops its classifier after the last
      # stage it reads): no row of its own; what finished inside it stays.
      self.calls[index] = dict(module=context.module, x=x, y=None, leaf=False, field=None)
      raise
    out = y if hasattr(y, "shape") else None
    leaf = len(self.calls) == index + 1
    fields = None
    in_spatial = self.spatial(x) if x is not None else None
    out_spatial = self.spatial(out) if out is not None else None
    if in_spatial is not None and out_spatial is not None:
      if in_field is not None:
        if leaf:
          geometry = _geometry(context.module, in_spatial, out_spatial)
        else:  # A block: its leaves were recorded; use the widest match.
          geometry = None
        if geometry is not None:
          fields = tuple(f.after(g) for f, g in zip(in_field, geometry))
        else:
          fields = self.field_of_shape(out_spatial) or in_field
    elif (in_spatial is None and out_spatial is not None and x is not None
          and id(x) in self.by_id):  # An embedding of token ids: pointwise.
      fields = self.by_id[id(x)]
    if out is not None:
      self.remember(out, fields)
    self.calls[index] = dict(module=context.module, x=x, y=out, leaf=leaf,
                             field=fields)
    return y

  def field_of_shape(self, spatial):
    matches = [f for s, f in self.seen if s == spatial]
    if not matches:
      return None
    return tuple(max((m[d] for m in matches), key=lambda f: f.size)
                 for d in range(self.ndim))


def _input_spec(model_name, input_shape, dtype):
  if input_shape is None:
    from cnnjax.models import model_input_shape
    input_shape = model_input_shape(model_name)
  input_shape = tuple(int(s) for s in input_shape)
  if not input_shape or any(s < 1 for s in input_shape):
    raise CnnjaxError(f"the input shape must be positive sizes, got "
                      f"{input_shape}")
  return input_shape, jax.ShapeDtypeStruct((1, *input_shape), dtype)


def _blame_field(name: str, overrides: dict, x) -> str | None:
  """'FIELD=VALUE' of the model field whose default lets the registered
  model `name` initialize on `x`, or None: the field the user set is named,
  not the input shape."""
  from cnnjax.models import create_model, list_models
  if name not in list_models():
    return None
  for field, value in overrides.items():
    rest = {k: v for k, v in overrides.items() if k != field}
    try:
      model = create_model(name, **rest)
      jax.eval_shape(lambda a, m=model: m.init(jax.random.key(0), a, train=False), x)
    except Exception:  # noqa: BLE001 - not this field.
      continue
    return f"{field}={value!r}"
  return None


def summarize(model: nn.Module | str, input_shape: Sequence[int] | None = None,
              *, dtype=None, xla_flops: bool = True,
              xla_memory_batch: int | None = None,
              **model_overrides) -> ModelSummary:
  """Summarizes `model` (a Module or a registered name) on one example.

  Args:
    model: a Flax module, or a registered model name (built with
      `model_overrides`).
    input_shape: one example's shape without the batch axis; defaults to the
      registered input shape.
    dtype: the input dtype; by default the registered one (int32 for token
      models), else float32.
    xla_flops: also ask XLA's cost analysis for the forward FLOPs (lowering
      only; nothing is compiled).
    xla_memory_batch: if given, compile a training step (gradient of the
      summed logits) at this batch size and report XLA's temporary memory per
      example; this compiles the model and can take a while.
  """
  name = model if isinstance(model, str) else type(model).__name__
  if isinstance(model, str):
    from cnnjax.models import create_model, model_input_dtype
    if dtype is None:
      dtype = model_input_dtype(model)
    model = create_model(model, **model_overrides)
  dtype = jnp.float32 if dtype is None else dtype
  try:
    jnp.dtype(dtype)
  except TypeError:
    raise CnnjaxError(f"dtype={dtype!r} is not a dtype such as 'float32' or "
                      "'int32'") from None
  input_shape, x = _input_spec(name if isinstance(name, str) else None,
                               input_shape, dtype)
  try:
    variables = jax.eval_shape(
        lambda a: model.init(jax.random.key(0), a, train=False), x)
  except CnnjaxError as e:
    raise CnnjaxError(f"model '{name}' cannot take an input of shape "
                      f"{input_shape}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    field = _blame_field(name, model_overrides, x)
    if field is not None:
      raise CnnjaxError(f"model '{name}' cannot be built with {field} (it "
                        f"builds with that field's default): {reason}") from None
    # Otherwise what breaks while shaping a model on a user-chosen input
    # shape is most likely that shape (a filter larger than a feature map).
    raise CnnjaxError(
        f"model '{name}' cannot take an input of shape {input_shape} "
        f"({reason})") from None
  params_tree = variables.get("params", {})
  # Images and signals are (*spatial, channels); token ids are (*positions,),
  # and their embeddings (*positions, features) are the first feature maps.
  tokens = not jnp.issubdtype(np.dtype(dtype), jnp.floating)
  spatial = tuple(input_shape) if tokens else tuple(input_shape[:-1])
  recorder = _Recorder(spatial)

  def forward(variables, a):
    unit = tuple(ReceptiveField(1, 1, 0.0) for _ in spatial)
    recorder.remember(a, unit)
    if tokens:
      recorder.seen.append((spatial, unit))
    with nn.intercept_methods(recorder.interceptor):
      return model.apply(variables, a, train=False)

  jax.eval_shape(forward, variables, x)

  rows = []
  seen_paths = set()
  for call in recorder.calls:
    if not call["leaf"] or call["y"] is None:
      continue
    module, xin, y = call["module"], call["x"], call["y"]
    path = tuple(str(p) for p in module.path)
    # A module called again (shared weights, or traced twice by nn.scan) is
    # listed once.
    if path in seen_paths:
      continue
    seen_paths.add(path)
    params = _subtree_size(params_tree, path)
    fields = call["field"]
    itemsize = np.dtype(y.dtype).itemsize
    rows.append(LayerRow(
        name=_path(module), kind=type(module).__name__,
        output_shape=tuple(int(s) for s in y.shape[1:]),
        activations=int(np.prod(y.shape[1:])),
        activation_bytes=int(np.prod(y.shape[1:])) * itemsize,
        params=params, flops=_layer_flops(module, xin, y),
        receptive_field=tuple(f.size for f in fields) if fields else None,
        jump=tuple(f.jump for f in fields) if fields else None,
        start=tuple(f.start for f in fields) if fields else None))

  n_params = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(
      params_tree))
  n_all = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(
      variables))
  param_bytes = sum(int(np.prod(l.shape)) * np.dtype(l.dtype).itemsize
                    for l in jax.tree_util.tree_leaves(variables))
  input_bytes = int(np.prod(input_shape)) * np.dtype(dtype).itemsize
  forward_bytes = input_bytes + sum(r.activation_bytes for r in rows)

  flops_xla = None
  if xla_flops:
    lowered = jax.jit(lambda v, a: model.apply(v, a, train=False)).lower(
        variables, x)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost and "flops" in cost:
      flops_xla = float(cost["flops"])

  temp_bytes = None
  if xla_memory_batch:
    temp_bytes = _xla_training_memory(model, variables, input_shape, dtype,
                                      xla_memory_batch)

  return ModelSummary(
      model=name, input_shape=input_shape, input_dtype=np.dtype(dtype).name,
      rows=rows, params=n_params, non_trainable=n_all - n_params,
      param_bytes=param_bytes, input_bytes=input_bytes,
      forward_activation_bytes=forward_bytes,
      training_activation_bytes=2 * forward_bytes,
      flops_counted=sum(r.flops or 0 for r in rows), flops_xla=flops_xla,
      xla_training_temp_bytes=temp_bytes)


def _xla_training_memory(model, variables, input_shape, dtype, batch):
  """XLA's temporary buffer size per example for value_and_grad of a loss."""
  x = jax.ShapeDtypeStruct((batch, *input_shape), dtype)
  has_stats = "batch_stats" in variables

  def loss(params, other, a):
    out = model.apply({"params": params, **other}, a, train=True,
                      rngs={"dropout": jax.random.key(0)},
                      mutable=["batch_stats"] if has_stats else False)
    logits = out[0] if has_stats else out
    if isinstance(logits, (tuple, list)):
      logits = logits[0]
    return jnp.sum(logits.astype(jnp.float32))

  other = {k: v for k, v in variables.items() if k != "params"}
  compiled = jax.jit(jax.grad(loss)).lower(
      variables["params"], other, x).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return stats.temp_size_in_bytes / batch


def _si(value: float | None, unit: str = "") -> str:
  if value is None:
    return "-"
  for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
    if abs(value) >= scale:
      return f"{value / scale:.2f}{prefix}{unit}"
  return f"{value:.0f}{unit}"


def _bytes(value: float | None) -> str:
  if value is None:
    return "-"
  for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
    if value >= scale:
      return f"{value / scale:.2f} {name}"
  return f"{value:.0f} B"


def _field(row: LayerRow) -> str:
  if row.receptive_field is None:
    return "global" if len(row.output_shape) == 1 else "-"
  size = "x".join(f"{s:g}" for s in row.receptive_field)
  jump = "x".join(f"{j:g}" for j in row.jump)
  return f"{size} /{jump}"


def format_summary(summary: ModelSummary) -> str:
  """The per-layer table and the totals as plain text."""
  header = ("layer", "type", "output shape", "activations", "params", "FLOPs",
            "receptive field /jump")
  table = [header, ("input", "", str(summary.input_shape),
                    f"{int(np.prod(summary.input_shape)):,}", "0", "-", "1")]
  for r in summary.rows:
    table.append((r.name, r.kind, str(r.output_shape), f"{r.activations:,}",
                  f"{r.params:,}", _si(r.flops), _field(r)))
  widths = [max(len(row[i]) for row in table) for i in range(len(header))]
  right = {3, 4, 5}
  lines = []
  for k, row in enumerate(table):
    cells = [c.rjust(w) if i in right else c.ljust(w)
             for i, (c, w) in enumerate(zip(row, widths))]
    lines.append("  ".join(cells).rstrip())
    if k == 0:
      lines.append("  ".join("-" * w for w in widths))
  xla = (f"{_si(summary.flops_xla)} (XLA cost analysis of the forward pass)"
         if summary.flops_xla is not None else "not asked")
  lines += [
      "",
      f"model: {summary.model}, input {summary.input_shape} "
      f"{summary.input_dtype}, per example",
      f"parameters: {summary.params:,} trainable, {summary.non_trainable:,} "
      f"other ({_bytes(summary.param_bytes)})",
      f"activations, forward: {_bytes(summary.forward_activation_bytes)} "
      f"(input and every layer output)",
      f"activations, training: {_bytes(summary.training_activation_bytes)} "
      f"(activations and their gradients: 2x forward)",
  ]
  if summary.xla_training_temp_bytes is not None:
    lines.append(f"XLA temporary memory of a training step: "
                 f"{_bytes(summary.xla_training_temp_bytes)} per example")
  lines += [
      f"FLOPs: {_si(summary.flops_counted)} counted (conv, dense and other weighted layers, "
      f"2 per multiply-add)",
      f"FLOPs: {xla}",
  ]
  return "\n".join(lines)


def write_json(summary: ModelSummary, path: str) -> None:
  with open(path, "w") as f:
    json.dump(summary.to_dict(), f, indent=1)
