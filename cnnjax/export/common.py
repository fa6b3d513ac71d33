"""What every export format shares: the inference function, the input
specification with a symbolic batch, the output path checks and the writing
of an artifact together with its JSON sidecar.

An export is a file and a sidecar beside it (`<file>.json`): the artifact
alone says nothing about the classes, the normalization the inputs need or
the versions that made it, and a reader should not need cnnjax to find out.
Both are written atomically (runs/files.py) and the sidecar is renamed into
place first, so that a reader who sees the artifact always finds its sidecar,
and a failure leaves neither half-written.

The exported function is the model's own forward pass in evaluation mode
(`train=False`), with the variables baked in as constants: it takes what the
model takes (float32 inputs after the run's normalization, or int32 token
ids) and returns float32 logits (B, K). The sidecar records the
normalization, so that a consumer can prepare raw images the way the run did.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import numbers
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError
from cnnjax.ops import backend as conv_backend
from cnnjax.runs import files

BATCH = "batch"  # The name of the symbolic batch dimension.
INSTALL_ONNX = "pip install 'cnnjax[onnx]'"


def inference_function(model, variables) -> Callable[[jax.Array], jax.Array]:
  """x (B, ...) -> float32 logits (B, K): `model` in evaluation mode with
  `variables` closed over (an export bakes them in as constants). Models that
  return (logits, auxiliary outputs) give their logits."""
  variables = jax.tree_util.tree_map(jnp.asarray, variables)

  def logits(x):
    # XLA's convolutions, whatever config.conv_backend chose: oneDNN's are
    # calls into this process's FFI handlers, which no exported file can hold.
    with conv_backend.forced("xla"):
      out = model.apply(variables, x, train=False)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.astype(jnp.float32)

  return logits


def input_spec(input_shape, input_dtype: str = "float32", *,
               batch_size: int | None = None) -> jax.ShapeDtypeStruct:
  """The input of one batch: (B, *input_shape) with a symbolic B (or a fixed
  `batch_size`). `input_shape` is one example, without the batch axis."""
  shape = normalize_shape(input_shape)
  try:
    dtype = jnp.dtype(input_dtype)
  except TypeError:
    raise CnnjaxError(f"input_dtype must be a dtype such as 'float32' or "
                      f"'int32', got {input_dtype!r}") from None
  if batch_size is None:
    batch = jax.export.symbolic_shape(BATCH)
  else:
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
      raise CnnjaxError(f"batch_size must be a positive integer or None (a "
                        f"dynamic batch), got {batch_size!r}")
    batch = (int(batch_size),)
  return jax.ShapeDtypeStruct((*batch, *shape), dtype)


def normalize_shape(input_shape) -> tuple[int, ...]:
  """`input_shape` as a tuple of positive ints (one example, no batch axis)."""
  try:
    shape = tuple(int(d) for d in input_shape)
  except (TypeError, ValueError):
    raise CnnjaxError(f"input_shape must be a sequence of ints (one example, "
                      f"without the batch axis), got {input_shape!r}") from None
  if not shape or min(shape) < 1:
    raise CnnjaxError(f"input_shape must be one example's positive sizes "
                      f"without the batch axis, e.g. (32, 32, 3), got {shape}")
  return shape


def num_classes(fn, spec: jax.ShapeDtypeStruct) -> int:
  """The logits' last size, traced abstractly at batch 1 (nothing runs)."""
  example = jax.ShapeDtypeStruct((1, *spec.shape[1:]), spec.dtype)
  return int(jax.eval_shape(fn, example).shape[-1])


# ---- tracing with a symbolic batch

# ---- optional packages

def require(module: str, what: str, extra: str = "onnx"):
  """`import module`, or one sentence naming the extra that installs it."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise CnnjaxError(f"{what} needs {module}, which is not installed; install "
                      f"the {extra} extra: pip install 'cnnjax[{extra}]'") from None


# ---- where an export goes

def sidecar_path(path: str) -> str:
  """The JSON beside an artifact: `model.onnx` -> `model.onnx.json`."""
  return f"{path}.json"


def check_out_path(out_path) -> str:
  """The absolute path an export may be written to, or one sentence why not
  (checked before any work, so that nothing is computed for nothing)."""
  if not isinstance(out_path, (str, os.PathLike)) or not str(out_path).strip():
    raise CnnjaxError("the export's output path is empty; give a file, e.g. "
                      "--out model.stablehlo")
  path = os.path.abspath(os.path.expanduser(os.fspath(out_path)))
  for target in (path, sidecar_path(path)):
    if os.path.isdir(target):
      raise CnnjaxError(f"cannot write the export to '{target}': it is a "
                        "directory; give a file path")
  ancestor = os.path.dirname(path)
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise CnnjaxError(f"cannot write the export to '{path}': '{ancestor}' is a "
                      "file, not a directory")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise CnnjaxError(f"cannot write the export to '{path}': '{ancestor}' is "
                      "not writable")
  return path


def write_export(path: str, data: bytes, sidecar: Mapping[str, Any]) -> str:
  """Writes the artifact `data` to `path` and `sidecar` to `<path>.json`,
  each atomically, the sidecar first; returns `path`."""
  text = json.dumps(dict(sidecar), indent=2, default=repr) + "\n"
  try:
    with contextlib.ExitStack() as stack:
      artifact = stack.enter_context(files.atomic_path(path))
      record = stack.enter_context(files.atomic_path(sidecar_path(path)))
      with open(artifact, "wb") as f:
        f.write(data)
      with open(record, "w") as f:
        f.write(text)
      # Leaving the stack renames the sidecar, then the artifact.
  except OSError as e:
    raise CnnjaxError(f"cannot write the export to '{path}' "
                      f"({e.strerror or e})") from e
  return path


def read_sidecar(path: str) -> dict | None:
  """The sidecar of the artifact at `path`, or None."""
  record = files.read_json(sidecar_path(path))
  return record if isinstance(record, dict) else None


def sidecar_record(fmt: str, path: str, spec: jax.ShapeDtypeStruct,
                   classes: int, metadata: Mapping[str, Any] | None,
                   **details) -> dict[str, Any]:
  """The sidecar: format, input, output, classes, the caller's metadata (model
  name, class names, normalization, run) and the versions that wrote it."""
  metadata = dict(metadata or {})
  batch = spec.shape[0]
  record: dict[str, Any] = {
      "format": fmt,
      "file": os.path.basename(path),
      "model": metadata.pop("model", None),
      "input_shape": [int(d) for d in spec.shape[1:]],
      "input_dtype": str(jnp.dtype(spec.dtype)),
      "batch": batch if isinstance(batch, numbers.Integral) else "dynamic",
      "input": metadata.pop("input", "the model's own input, channels last "
                            "(B, *input_shape), as the model sees it"),
      "normalization": metadata.pop("normalization", None),
      "output": "float32 logits (B, num_classes), evaluation mode",
      "num_classes": classes,
      "class_names": metadata.pop("class_names", None),
  }
  record.update(details)
  record.update(metadata)
  record["versions"] = versions()
  record["created"] = round(time.time(), 3)
  return record


def versions() -> dict[str, str]:
  import cnnjax
  import flax
  import jaxlib

  return {"cnnjax": cnnjax.__version__, "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "flax": flax.__version__}
