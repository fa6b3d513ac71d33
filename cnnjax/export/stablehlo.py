"""StableHLO: a serialized `jax.export` program of the inference function.

    export_stablehlo(model, variables, (32, 32, 3), "model.stablehlo")
    predict = load_stablehlo("model.stablehlo")
    logits = predict(x)          # any batch size: (B, 32, 32, 3) -> (B, K)

The program is the model in evaluation mode with its variables as constants,
traced once with a symbolic batch size, so one file serves every batch size.
It is lowered for the CPU and CUDA by default (one module, dispatching on
the platform it runs on), and is read back by `jax.export.deserialize` with
JAX alone: no cnnjax, no Flax, no model code. Newer JAX versions read a
serialized program only within their documented compatibility window, so
the sidecar records the versions that wrote it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from cnnjax.errors import CnnjaxError
from cnnjax.export import common

PLATFORMS = ("cpu", "cuda")


def export_stablehlo(model, variables, input_shape: Sequence[int], out_path: str, *,
                     input_dtype: str = "float32",
                     platforms: Sequence[str] | None = PLATFORMS,
                     metadata: Mapping[str, Any] | None = None) -> str:
  """Writes `model` with `variables` as a serialized `jax.export` program with
  a symbolic batch size to `out_path`, and a JSON sidecar beside it
  (`<out_path>.json`); returns the path.

  Args:
    input_shape: one example, without the batch axis, e.g. (32, 32, 3).
    input_dtype: what the model takes: 'float32' (images and signals, after
      the normalization the model was trained with) or 'int32' (token ids).
    platforms: what the program is lowered for (None: this machine's).
    metadata: extra sidecar fields: 'model' (its name), 'class_names',
      'normalization' ({'mean', 'std'}), 'input' (how inputs are prepared),
      and anything else to record (e.g. the run and step).
  """
  path = common.check_out_path(out_path)
  fn = common.inference_function(model, variables)
  spec = common.input_spec(input_shape, input_dtype)
  exported = jax.export.export(
      jax.jit(fn), platforms=tuple(platforms) if platforms else None)(spec)
  data = bytes(exported.serialize())
  sidecar = common.sidecar_record(
      "stablehlo", path, spec, int(exported.out_avals[0].shape[-1]), metadata,
      platforms=list(exported.platforms),
      load="jax.export.deserialize(open(file, 'rb').read()).call(x)")
  return common.write_export(path, data, sidecar)


@dataclasses.dataclass
class StableHLOModel:
  """A deserialized export: call it on a batch (B, *input_shape) of any B."""
  exported: jax.export.Exported = dataclasses.field(repr=False)
  metadata: dict | None = dataclasses.field(repr=False)  # The sidecar, if found.
  path: str = ""

  def __post_init__(self):
    self._call = jax.jit(self.exported.call)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.exported.in_avals[0].shape[1:])

  @property
  def input_dtype(self):
    return self.exported.in_avals[0].dtype

  def __call__(self, x) -> jax.Array:
    x = jnp.asarray(x, self.input_dtype)
    if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
      raise CnnjaxError(f"the export in '{self.path}' takes a batch of shape "
                        f"(B, {', '.join(map(str, self.input_shape))}), got "
                        f"{tuple(x.shape)}")
    return self._call(x)


def load_stablehlo(path: str) -> StableHLOModel:
  """The export written by `export_stablehlo`, as a callable x -> logits."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise CnnjaxError(f"cannot read the export '{path}' ({e.strerror or e})") from e
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:  # noqa: BLE001  (flatbuffers raise anything)
    raise CnnjaxError(f"'{path}' is not a serialized jax.export program "
                      f"({type(e).__name__})") from e
  if len(exported.in_avals) != 1:
    raise CnnjaxError(f"'{path}' takes {len(exported.in_avals)} inputs, not the "
                      "one batch a cnnjax export takes")
  return StableHLOModel(exported, common.read_sidecar(path), path)
