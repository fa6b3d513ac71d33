"""Exports of a trained model that run without cnnjax: StableHLO and ONNX.

  common.py     the inference function, the symbolic batch, output checks,
                the artifact and its JSON sidecar (written atomically)
  stablehlo.py  export_stablehlo / load_stablehlo: a serialized jax.export
                program with a symbolic batch size (JAX alone reads it)
  onnx.py       export_onnx / load_onnx: through jax2onnx and onnxruntime
                (the `onnx` extra), with a dynamic batch dimension
  run.py        export_run: a run directory's checkpoint in one of FORMATS

Every export is the model in evaluation mode with its variables baked in,
taking the model's own input (float32 after the run's normalization, or
int32 token ids) and giving float32 logits; `<file>.json` beside it records
the input, the normalization, the classes and the versions. Plain
`(model, variables)` pairs (e.g. converted PyTorch weights) export the same
way as runs.
"""

from cnnjax.export.common import sidecar_path  # noqa: F401
from cnnjax.export.onnx import ONNXModel, export_onnx, load_onnx  # noqa: F401
from cnnjax.export.run import (FORMATS, ExportFormat, export_format,  # noqa: F401
                               export_run, run_metadata)
from cnnjax.export.stablehlo import (StableHLOModel, export_stablehlo,  # noqa: F401
                                     load_stablehlo)
