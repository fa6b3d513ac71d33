"""Exporting a trained run: open it, pick a checkpoint, write one format.

    export_run("runs/mnist1d/cnn", "stablehlo")   # -> runs/mnist1d/cnn/export/model.stablehlo
    export_run("runs/mnist1d/cnn", "onnx", "/tmp/cnn.onnx", checkpoint="best")

`FORMATS` maps a format's name to its writer, `write(trained, out_path) ->
path` with `trained` a `runs.TrainedModel`, and its default file name inside
`<run>/export/`. Another module adds a format with
`FORMATS.add("torch", write, filename="model.safetensors")`.

What the export takes: the model's own input (float32, channels last, after
the run's normalization; int32 token ids for text models), not raw images,
so that one artifact serves every way of decoding and resizing images. The
sidecar records the run's normalization (uint8 images / 255, minus the
per-channel mean, divided by the std), the class names, the run and the step.
The run's evaluation may average test-time views (flips, shifts); the export
computes one view, and the sidecar says so when the run used them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from cnnjax.errors import CnnjaxError, DataMissingError
from cnnjax.export import common
from cnnjax.registry import Registry
from cnnjax.runs import Run


@dataclasses.dataclass(frozen=True)
class ExportFormat:
  name: str
  write: Callable[[Any, str], str]  # (TrainedModel, out_path) -> path
  filename: str  # The default file inside <run>/export/.
  needs: tuple[str, ...] = ()  # Optional modules, checked before any work.
  extra: str = ""  # The extra that installs them.


def _make_format(name: str, write, *, filename: str, needs=(), extra: str = ""
                 ) -> ExportFormat:
  return ExportFormat(name, write, filename, tuple(needs), extra)


FORMATS: Registry[ExportFormat] = Registry("export format", make_entry=_make_format)


def run_metadata(trained) -> dict[str, Any]:
  """The sidecar fields a run knows: model name, classes, how its inputs are
  prepared, and where the weights come from."""
  from cnnjax.data.pipeline import test_time_views

  config = trained.config
  record: dict[str, Any] = {"model": config.model.name,
                            "class_names": list(trained.class_names)}
  if input_dtype(trained) == "int32":
    record["input"] = "int32 token ids (B, length), as the run's data gives them"
  elif trained.stats is not None:
    mean, std = trained.stats
    record["input"] = ("float32 images (B, H, W, C): uint8 pixels / 255, minus "
                       "mean, divided by std, per channel (the run's normalization)")
    record["normalization"] = {"scale": 1 / 255, "mean": list(mean), "std": list(std)}
  else:
    record["input"] = ("the run's float inputs as its data stores them (no "
                       "normalization)")
  if test_time_views(config.augment) is not None:
    record["test_time_views"] = ("the run's evaluation averages test-time views "
                                 "(config.augment tta_*); the export computes one")
  record.update(run=os.path.abspath(trained.workdir), step=int(trained.step))
  return record


def input_dtype(trained) -> str:
  """What the run's model takes: 'int32' token ids or 'float32'."""
  from cnnjax.models import model_input_dtype

  return model_input_dtype(trained.config.model.name)


def _stablehlo(trained, out_path: str) -> str:
  from cnnjax.export.stablehlo import export_stablehlo

  return export_stablehlo(trained.model, trained.variables, trained.input_shape,
                          out_path, input_dtype=input_dtype(trained),
                          metadata=run_metadata(trained))


def _onnx(trained, out_path: str) -> str:
  from cnnjax.export.onnx import export_onnx

  return export_onnx(trained.model, trained.variables, trained.input_shape,
                     out_path, input_dtype=input_dtype(trained),
                     metadata=run_metadata(trained))


FORMATS.add("stablehlo", _stablehlo, filename="model.stablehlo")
FORMATS.add("onnx", _onnx, filename="model.onnx", needs=("jax2onnx", "onnx"),
            extra="onnx")


def export_format(fmt: str) -> ExportFormat:
  """The format named `fmt`, or one sentence listing the known ones."""
  if fmt not in FORMATS:
    raise CnnjaxError(f"unknown export format '{fmt}'; the known formats are "
                      f"{', '.join(FORMATS.names())}")
  return FORMATS.get(fmt)


def export_run(workdir: str, fmt: str, out_path: str | None = None, *,
               checkpoint: str | int = "latest") -> str:
  """Exports a run's checkpoint ('latest', 'best' or a step) as `fmt`
  ('stablehlo', 'onnx', or another entry of FORMATS) to `out_path` (default
  `<run>/export/<format's file name>`); returns the path written."""
  entry = export_format(fmt)
  for module in entry.needs:
    common.require(module, f"{fmt} export", entry.extra)
  run = Run.open(workdir)
  path = common.check_out_path(out_path or run.path("export", entry.filename))
  step = run.step(checkpoint)  # No checkpoint, or no such one: one sentence.
  try:
    trained = run.trained(step)
  except DataMissingError:
    trained = _without_data(run, step)  # e.g. converted weights, data elsewhere
    if trained is None:
      raise
  return entry.write(trained, path)


@dataclasses.dataclass
class _Offline:
  """What an export reads of a run whose data is not on this machine."""
  config: Any
  model: Any
  variables: Any
  input_shape: tuple[int, ...]
  stats: tuple | None
  step: int
  workdir: str
  class_names: tuple = ()


def _without_data(run: Run, step: int) -> _Offline | None:
  """The run's model from its config alone, when the config names every
  field the data would otherwise decide (the class count: converted runs
  do); None otherwise. The input is the model's default shape at the
  config's image size; the normalization is the config's mean/std."""
  from cnnjax.config import model_fields
  from cnnjax.models import create_model, model_input_shape

  config = run.config
  fields = model_fields(config.model)
  if "num_classes" not in fields:
    return None
  shape = model_input_shape(config.model.name)
  size = int(config.dataset.get("image_size", 0) or 0)
  if size and len(shape) == 3:
    shape = (size, size, shape[-1])
  mean, std = tuple(config.dataset.get("mean", ())), tuple(config.dataset.get("std", ()))
  variables = {k: v for k, v in run.variables(step).items() if v}
  return _Offline(config=config, model=create_model(config.model.name, **fields),
                  variables=variables, input_shape=shape,
                  stats=(mean, std) if mean and std else None, step=step,
                  workdir=run.workdir)
