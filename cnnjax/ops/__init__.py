"""Reference convolution maths: forward implementations, backward rules, timing."""

from cnnjax.ops.backward import (conv_input_grad, conv_weight_grad,  # noqa: F401
                                 max_pool, max_pool_grad)
from cnnjax.ops.conv import (CONV_IMPLEMENTATIONS, ConvArgs, conv_direct,  # noqa: F401
                             conv_fft, conv_im2col, conv_lax, im2col_patches,
                             next_fast_len, normalize_conv_args)

_BENCHMARK = ("conv_crossover", "find_crossovers", "format_table")


def __getattr__(name):
  # Imported lazily so that `python -m cnnjax.ops.benchmark` runs a fresh module.
  if name in _BENCHMARK:
    from cnnjax.ops import benchmark
    return getattr(benchmark, name)
  raise AttributeError(f"module 'cnnjax.ops' has no attribute {name!r}")
