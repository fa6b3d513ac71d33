"""What benchmarks and cards need from the host and from torchvision.

`cpu_model()` names the processor a figure was measured on (cards and
benchmark tables print it beside every timing). `import_torchvision()`
imports torchvision beside a CPU-only torch wheel whose build lacks
torchvision's compiled detection ops: torchvision 0.28 registers a fake
(meta) kernel for `torchvision::nms` at import and fails when that operator
was never declared. Declaring the schemas of the two ops (nms, qnms) lets the
import finish; the classification and segmentation models never call them.
With `numpy_nms`, `torchvision.ops.boxes.nms` (which its `batched_nms`, the
RPN and the box head look up) is replaced by a greedy loop that computes what
torchvision's CPU kernel computes, so its detection models run too.

Only benchmarks and tests use this: cnnjax itself never imports torchvision.
"""

from __future__ import annotations

import platform
import sys

_DECLARED: list = []  # torch.library.Library objects: the schemas live while they do.


def cpu_model() -> str:
  """The processor's model name ('Intel(R) Xeon(R) ...'), or what platform
  knows when /proc/cpuinfo does not say."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def import_torchvision(*, numpy_nms: bool = False):
  """The torchvision module, importable beside the CPU torch wheel (module
  docstring). Raises ImportError when torch or torchvision is missing."""
  import torch
  try:
    import torchvision
  except RuntimeError as e:
    if "torchvision::nms" not in str(e):
      raise
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
      del sys.modules[name]
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
      try:
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
      except RuntimeError:
        pass  # Declared already, in this process.
    _DECLARED.append(library)
    import torchvision
  if numpy_nms:
    _use_numpy_nms(torch)
  return torchvision


def _use_numpy_nms(torch) -> None:
  import numpy as np
  from torchvision.extension import _has_ops
  from torchvision.ops import boxes as tv_boxes
  if _has_ops():
    return  # The compiled kernel loads: keep it.

  def nms(boxes, scores, iou_threshold):
    """Greedy NMS as torchvision's CPU kernel: by falling score, drop every
    later box whose IoU with a kept one exceeds the threshold."""
    order = torch.argsort(scores, descending=True)
    iou = tv_boxes.box_iou(boxes[order], boxes[order]).numpy()
    keep = np.ones(len(order), bool)
    for i in range(len(order)):
      if keep[i]:
        keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[torch.from_numpy(keep)]

  tv_boxes.nms = nms
