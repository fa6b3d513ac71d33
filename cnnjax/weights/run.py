"""Weights as run directories: a converted PyTorch file becomes a cnnjax run
(config.json + one checkpoint) that `cnnjax eval`, `cnnjax visualize` and
`config.transfer.init_from` accept; a run's checkpoint becomes the twin's
state dict.

A converted run is written into a temporary sibling directory and renamed
into place at the end, so a failure leaves nothing behind, and an existing
directory is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import time

import ml_collections
import numpy as np

from cnnjax import config as config_lib
from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run
from cnnjax.runs.checkpoints import Checkpointer
from cnnjax.weights.api import Pretrained, export_state_dict
from cnnjax.weights.twins import twin_of

CONVERSION_FILE = "conversion.json"


def _run_config(pretrained: Pretrained, config: ml_collections.ConfigDict | None
                ) -> ml_collections.ConfigDict:
  config = config_lib.base_config() if config is None else config
  if config.model.get("name") and config.model.name != pretrained.name:
    raise CnnjaxError(f"the config's model is '{config.model.name}' but the "
                      f"weights are converted for '{pretrained.name}'")
  with config.unlocked():
    config.model.name = pretrained.name
    for field, value in pretrained.fields.items():
      config.model[field] = value
    config.num_steps = 0  # Nothing was trained here.
  return config


def check_new_run_dir(out: str) -> str:
  """`out` as an absolute path, if a converted run may be written there: a
  new (or empty) directory; one sentence otherwise. Callers check before
  reading a weight file, so that a mistake costs no conversion."""
  out = os.path.abspath(os.path.expanduser(os.fspath(out)))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise CnnjaxError(f"'{out}' already exists; give --out a new directory "
                      "(nothing is overwritten)")
  return out


def write_converted_run(out: str, pretrained: Pretrained,
                        config: ml_collections.ConfigDict | None = None) -> Run:
  """A run directory `out` holding `pretrained`'s variables as step 0."""
  out = check_new_run_dir(out)
  config = _run_config(pretrained, config)
  parent = os.path.dirname(out)
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise CnnjaxError(f"cannot create '{parent}' ({e.strerror or e})") from e
  staging = f"{out}.converting-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    run = Run(staging)
    run.prepare(config)
    state = {"step": np.zeros((), np.int32),
             "params": pretrained.variables["params"],
             "batch_stats": pretrained.variables.get("batch_stats", {})}
    checkpointer = Checkpointer(run.checkpoints_dir)
    try:
      checkpointer.save(0, state, {"wall_time_s": 0.0,
                                   "converted_from": pretrained.report.source})
      checkpointer.wait()
    finally:
      checkpointer.close()
    report = pretrained.report
    run.write_json(CONVERSION_FILE, {
        "model": pretrained.name, "twin": report.twin, "source": report.source,
        "tensors": report.tensors, "num_classes": report.num_classes,
        "head_reinitialized": report.head_reinitialized,
        "file_classes": report.file_classes, "ignored": report.ignored,
        "model_fields": pretrained.fields, "time": time.time()})
    if os.path.isdir(out):
      os.rmdir(out)  # Empty (checked above).
    os.replace(staging, out)
  except OSError as e:
    raise CnnjaxError(f"cannot write the converted run to '{out}' "
                      f"({e.strerror or e})") from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return Run.open(out)


def export_run_weights(workdir: str, out: str | None = None, *,
                       which: str | int = "latest") -> str:
  """Writes a run's checkpoint as its twin's state dict (.safetensors or
  .pth by `out`'s suffix; default `<run>/export/<twin>.safetensors`) with a
  JSON sidecar naming the PyTorch builder; returns the path."""
  run = Run.open(workdir)
  name = run.config.model.name
  twin = twin_of(name)
  variables = run.variables(which)
  out = out or run.path("export", f"{twin.name}.safetensors")
  export_state_dict(name, variables, out)
  fields = {k: v for k, v in run.config.model.items() if k != "name"}
  kwargs = dict(twin.torch_kwargs)
  head = variables["params"]["head"]["kernel"]
  kwargs["num_classes"] = int(np.shape(head)[-1])
  if fields.get("transform_input") is not None and twin.name == "googlenet":
    kwargs["transform_input"] = bool(fields["transform_input"])
  builder = twin.builder(kwargs)
  sidecar = {"library": twin.library, "model": twin.name, "kwargs": kwargs,
             "builder": builder, "cnnjax_model": name, "run": run.workdir,
             "checkpoint": str(which), "step": run.step(which),
             "load": f"model = {builder}; model.load_state_dict(state_dict, "
                     "strict=True)"}
  from cnnjax.runs.files import write_json

  write_json(os.path.splitext(out)[0] + ".json", sidecar)
  return out
