"""ONNX: the inference function converted by jax2onnx (the `onnx` extra).

    export_onnx(model, variables, (32, 32, 3), "model.onnx")
    predict = load_onnx("model.onnx")     # through onnxruntime
    logits = predict(x)                   # (B, 32, 32, 3) -> (B, K), any B

The graph takes one input, 'input' (B, *input_shape), channels last as the
model does, with a dynamic batch dimension 'batch' (or a fixed one with
`batch_size=N`; a model that jax2onnx converts only at a fixed size gets a
batch of 1, and the sidecar says why), and gives 'logits' (B, K) in
float32. The variables are initializers of the graph. The sidecar JSON is also stored in the model's
`metadata_props` under 'cnnjax', so the file alone says what it needs.

One repair after conversion: cnnjax pools with `lax.reduce_window`, which
jax2onnx turns into a MaxPool over every axis of the tensor (batch and
channels with a window of 1). ONNX Runtime pools over at most three spatial
axes, so the max pooling of 2D images would not run; `split_max_pools`
rewrites each such node into Transpose -> MaxPool over the spatial axes ->
Transpose, which computes the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.export import common

INPUT, OUTPUT = "input", "logits"
MAX_POOL_AXES = 3  # The most spatial axes ONNX Runtime pools over.


def export_onnx(model, variables, input_shape: Sequence[int], out_path: str, *,
                input_dtype: str = "float32", opset: int | None = None,
                batch_size: int | None = None,
                metadata: Mapping[str, Any] | None = None) -> str:
  """Writes `model` with `variables` as an ONNX model to `out_path`, and a
  JSON sidecar beside it (`<out_path>.json`); returns the path.

  Args:
    input_shape: one example, without the batch axis, e.g. (32, 32, 3).
    input_dtype: what the model takes: 'float32' (after the normalization the
      model was trained with) or 'int32' (token ids).
    opset: the ONNX opset (None: jax2onnx's default).
    batch_size: None for a dynamic batch dimension, or a fixed size (for
      runtimes that want static shapes).
    metadata: extra sidecar fields, as `export_stablehlo` takes them.
  """
  path = common.check_out_path(out_path)
  jax2onnx = common.require("jax2onnx", "ONNX export")
  common.require("onnx", "ONNX export")
  fn = common.inference_function(model, variables)
  spec = common.input_spec(input_shape, input_dtype, batch_size=batch_size)
  classes = common.num_classes(fn, spec)  # The model itself traces.
  proto, spec, details = _to_onnx(jax2onnx, fn, spec, metadata, opset)
  split_max_pools(proto)
  used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
              None)
  sidecar = common.sidecar_record(
      "onnx", path, spec, classes, metadata, opset=used, input_name=INPUT,
      output_name=OUTPUT,
      load="onnxruntime.InferenceSession(file).run(None, {'input': x})[0]",
      **details)
  sidecar["versions"].update(jax2onnx=_version("jax2onnx"), onnx=_version("onnx"))
  entry = proto.metadata_props.add()
  entry.key, entry.value = "cnnjax", json.dumps(sidecar, default=repr)
  try:
    data = proto.SerializeToString()
  except ValueError as e:  # Protobuf's 2 GB limit.
    raise CnnjaxError(f"the ONNX model is too large for one file "
                      f"({proto.ByteSize() / 2**30:.1f} GB; ONNX files hold at "
                      "most 2 GB); export StableHLO instead") from e
  return common.write_export(path, data, sidecar)


def _to_onnx(jax2onnx, fn, spec, metadata, opset):
  """(ModelProto, the input it takes, sidecar notes): with `spec`'s batch,
  or, when a dynamic batch does not convert, a fixed batch of 1."""
  convert = functools.partial(_convert, jax2onnx, fn, name=_model_name(metadata),
                              opset=opset)
  try:
    return convert(spec), spec, {}
  except Exception as error:  # noqa: BLE001  (jax2onnx's limits, any type)
    if isinstance(spec.shape[0], int):
      raise _cannot_convert(metadata, error) from error
    fixed = jax.ShapeDtypeStruct((1, *spec.shape[1:]), spec.dtype)
    try:
      proto = convert(fixed)
    except Exception:  # noqa: BLE001
      raise _cannot_convert(metadata, error) from error
    return proto, fixed, {"batch_note": (
        f"jax2onnx could not convert this model with a dynamic batch "
        f"({_first_line(error)}); the batch size is fixed at 1")}


def _convert(jax2onnx, fn, spec, *, name: str, opset: int | None):
  options = {} if opset is None else {"opset": int(opset)}
  with _quiet("onnx_ir", "jax2onnx"):
    return jax2onnx.to_onnx(fn, [spec], model_name=name, input_names=[INPUT],
                            output_names=[OUTPUT], **options)


def _cannot_convert(metadata, error: Exception) -> CnnjaxError:
  name = (metadata or {}).get("model")
  what = f"model '{name}'" if name else "this model"
  return CnnjaxError(f"jax2onnx cannot convert {what} "
                     f"({type(error).__name__}: {_first_line(error)}); export "
                     "it as StableHLO instead")


def _first_line(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  return lines[0][:200] if lines else "no message"


@contextlib.contextmanager
def _quiet(*loggers: str):
  """Only errors from these loggers while converting (jax2onnx's IR warns
  about intermediate values it leaves untyped, which the runtime infers)."""
  saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
  for logger, _ in saved:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in saved:
      logger.setLevel(level)


def _model_name(metadata) -> str:
  name = (metadata or {}).get("model")
  return str(name) if name else "cnnjax_model"


def _version(package: str) -> str:
  from importlib import metadata

  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return "unknown"


def split_max_pools(proto) -> int:
  """Rewrites every MaxPool node of `proto` that pools over more than three
  axes, at least two of them trivially (window 1, stride 1, no padding: the
  batch and channel axes), into Squeeze -> Transpose (trivial axes first) ->
  MaxPool over the rest -> Transpose back -> Unsqueeze; returns the count.

  jax2onnx lowers `lax.reduce_window_max` on x (B, H, W, C) to a MaxPool of
  x[None, None] (1, 1, B, H, W, C) with kernel (1, kh, kw, 1); the rewrite
  pools (B, C, H, W) with kernel (kh, kw) and puts the axes back, so its
  output is the node's output, bit for bit.
  """
  from onnx import helper, numpy_helper

  graph, nodes, count = proto.graph, [], 0
  for node in graph.node:
    replacement = _split(node, helper) if node.op_type == "MaxPool" else None
    if replacement is None:
      nodes.append(node)
      continue
    axes, new_nodes = replacement
    graph.initializer.append(numpy_helper.from_array(
        np.asarray([0, 1], np.int64), axes))
    nodes.extend(new_nodes)
    count += 1
  if count:
    del graph.node[:]
    graph.node.extend(nodes)
  return count


def _split(node, helper):
  """(axes initializer name, nodes) replacing one MaxPool node, or None."""
  attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
  kernel = list(attrs.get("kernel_shape", ()))
  rank = len(kernel)
  if rank <= MAX_POOL_AXES or len(node.output) != 1:
    return None
  if set(attrs) - {"kernel_shape", "strides", "pads", "dilations"}:
    return None  # auto_pad, ceil_mode, storage_order: not what jax2onnx writes.
  strides = list(attrs.get("strides", [1] * rank))
  pads = list(attrs.get("pads", [0] * 2 * rank))
  dilations = list(attrs.get("dilations", [1] * rank))
  trivial = [i for i in range(rank) if kernel[i] == strides[i] == dilations[i] == 1
             and pads[i] == pads[rank + i] == 0]
  if len(trivial) < 2 or rank - 2 > MAX_POOL_AXES:
    return None
  pooled = [i for i in range(rank) if i not in trivial[:2]]
  perm = trivial[:2] + pooled
  inverse = [perm.index(i) for i in range(rank)]
  base = (node.name or node.output[0]) + "_split"
  axes = f"{base}_axes"
  names = [f"{base}_{i}" for i in range(4)]
  return axes, [
      helper.make_node("Squeeze", [node.input[0], axes], [names[0]],
                       name=f"{base}_squeeze"),
      helper.make_node("Transpose", [names[0]], [names[1]], perm=perm,
                       name=f"{base}_to_channels_first"),
      helper.make_node("MaxPool", [names[1]], [names[2]],
                       kernel_shape=[kernel[i] for i in pooled],
                       strides=[strides[i] for i in pooled],
                       pads=[pads[i] for i in pooled] + [pads[rank + i] for i in pooled],
                       dilations=[dilations[i] for i in pooled],
                       name=f"{base}_pool"),
      helper.make_node("Transpose", [names[2]], [names[3]], perm=inverse,
                       name=f"{base}_back"),
      helper.make_node("Unsqueeze", [names[3], axes], [node.output[0]],
                       name=f"{base}_unsqueeze"),
  ]


@dataclasses.dataclass
class ONNXModel:
  """An ONNX export in an onnxruntime session: call it on a batch."""
  session: Any = dataclasses.field(repr=False)
  metadata: dict | None
  path: str = ""

  def __call__(self, x) -> np.ndarray:
    spec = self.session.get_inputs()[0]
    dtype = np.int32 if "int32" in spec.type else (
        np.int64 if "int64" in spec.type else np.float32)
    x = np.asarray(x, dtype)
    fixed = [d if isinstance(d, int) else None for d in spec.shape]
    if x.ndim != len(fixed) or any(f is not None and f != s
                                   for f, s in zip(fixed, x.shape)):
      shape = ", ".join("B" if f is None else str(f) for f in fixed)
      raise CnnjaxError(f"the export in '{self.path}' takes a batch of shape "
                        f"({shape}), got {tuple(x.shape)}")
    return self.session.run(None, {spec.name: x})[0]


def load_onnx(path: str) -> ONNXModel:
  """The ONNX export at `path` in an onnxruntime CPU session, as a callable."""
  ort = common.require("onnxruntime", "Running an ONNX export")
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.isfile(path):
    raise CnnjaxError(f"cannot read the export '{path}': no such file")
  try:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Errors only.
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  except Exception as e:  # noqa: BLE001  (onnxruntime's own error types)
    raise CnnjaxError(f"onnxruntime cannot load '{path}' "
                      f"({str(e).splitlines()[0][:200]})") from e
  return ONNXModel(session, common.read_sidecar(path), path)
