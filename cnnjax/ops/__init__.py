"""Reference convolution maths (forward implementations, backward rules, timing),
and the region ops of detection with torchvision.ops' names."""

from cnnjax.ops.backward import (conv_input_grad, conv_weight_grad,  # noqa: F401
                                 max_pool, max_pool_grad)
from cnnjax.ops.boxes import (batched_nms, box_area, box_iou,  # noqa: F401
                              clip_boxes_to_image, decode_boxes, encode_boxes, nms,
                              remove_small_boxes)
from cnnjax.ops.conv import (CONV_IMPLEMENTATIONS, ConvArgs, conv_direct,  # noqa: F401
                             conv_fft, conv_im2col, conv_lax, im2col_patches,
                             next_fast_len, normalize_conv_args)
from cnnjax.ops.roi import roi_align, roi_pool  # noqa: F401

_BENCHMARK = ("conv_crossover", "find_crossovers", "format_table")


def __getattr__(name):
  # Imported lazily so that `python -m cnnjax.ops.benchmark` runs a fresh module.
  if name in _BENCHMARK:
    from cnnjax.ops import benchmark
    return getattr(benchmark, name)
  raise AttributeError(f"module 'cnnjax.ops' has no attribute {name!r}")
