"""Which library computes cnnjax's convolutions (and max pooling) on the CPU:
XLA or oneDNN.

    config.conv_backend = 'onednn'        # or --config.conv_backend=onednn
    CNNJAX_CONV_BACKEND=onednn            # for any program (config '' reads it)
    cnnjax.ops.backend.set_conv_backend('auto')   # from Python

- 'xla' (the default): XLA's convolution, with cnnjax's batch-chunked
  weight gradient (cnnjax.ops.weight_grad).
- 'onednn': oneDNN's, through jax.ffi (cnnjax.ops.onednn; the `onednn`
  extra), and oneDNN's max pooling as well (cnnjax.ops.onednn.pooling:
  XLA's CPU gradient of a max pool is several times slower); refused in one
  sentence where it cannot run.
- 'auto': oneDNN where it runs, otherwise XLA, saying once, in one line on
  stderr, why not.

`layers.Conv` and `layers.ConvTranspose` (so every model) call
`conv_general_dilated` here, and `layers.max_pool` (so `MaxPool`) calls
`max_pool`; both read the choice when a function is traced: set it before
the first `jit` of a model (the training driver does, from the config).
GPUs and TPUs always get XLA's.
"""

from __future__ import annotations

import contextlib
import os
import sys

from cnnjax.errors import CnnjaxError

BACKENDS = ("xla", "onednn", "auto")
ENV = "CNNJAX_CONV_BACKEND"

_resolved: list[str] = []  # ['xla'] or ['onednn'] once chosen.
_said: set[str] = set()  # The reasons 'auto' has printed (once per process).


def requested(name: str | None = None) -> str:
  """The requested backend: `name`, else $CNNJAX_CONV_BACKEND, else 'xla'."""
  value = (name or os.environ.get(ENV) or "xla").strip().lower()
  if value not in BACKENDS:
    source = f"{ENV}" if not name else "config.conv_backend"
    raise CnnjaxError(f"{source} must be one of {', '.join(BACKENDS)}, got {value!r}")
  return value


def set_conv_backend(name: str | None = None, *, quiet: bool = False) -> str:
  """Chooses the backend ('' or None: $CNNJAX_CONV_BACKEND, else 'xla');
  returns the one that will run, 'xla' or 'onednn'."""
  import jax

  value = requested(name)
  if value == "xla" or jax.default_backend() != "cpu":
    chosen = "xla"
  else:
    from cnnjax.ops import onednn

    ok, why = onednn.available()
    if ok:
      chosen = "onednn"
    elif value == "onednn":
      raise CnnjaxError(f"the oneDNN convolution backend cannot run: {why}")
    else:
      chosen = "xla"
      if not quiet and why not in _said:  # A sweep's runs share the process.
        _said.add(why)
        print(f"cnnjax: convolutions run on XLA, not oneDNN: {why}", file=sys.stderr)
  _resolved[:] = [chosen]
  return chosen


def active() -> str:
  """The backend that computes convolutions now ('xla' or 'onednn')."""
  if not _resolved:
    set_conv_backend()
  return _resolved[0]


@contextlib.contextmanager
def forced(name: str):
  """Traces inside this block use backend `name` ('xla' or 'onednn'),
  whatever was chosen: exports use 'xla', since a program that calls this
  process's FFI handlers runs nowhere else."""
  if name not in ("xla", "onednn"):
    raise CnnjaxError(f"forced() takes 'xla' or 'onednn', got {name!r}")
  saved = list(_resolved)
  _resolved[:] = [name]
  try:
    yield
  finally:
    _resolved[:] = saved


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` (same signature) on the active backend."""
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
          dimension_numbers, feature_group_count, batch_group_count, precision,
          preferred_element_type)
  if active() == "onednn":
    from cnnjax.ops import onednn
    return onednn.conv_general_dilated(*args)
  from cnnjax.ops import weight_grad
  return weight_grad.conv_general_dilated(*args)


def max_pool(x, window, strides, padding):
  """`lax.reduce_window(x, -inf, lax.max, window, strides, padding)` on the
  active backend: oneDNN's pooling where it takes it (forward and
  gradient, cnnjax.ops.onednn.pooling), otherwise XLA's, on the CPU with
  cnnjax's window-offset gradient (cnnjax.ops.pool_grad)."""
  if active() == "onednn":
    from cnnjax.ops.onednn import pooling
    return pooling.max_pool(x, window, strides, padding)
  import jax
  if jax.default_backend() == "cpu":
    from cnnjax.ops import pool_grad
    return pool_grad.max_pool(x, window, strides, padding)
  from jax import lax
  return lax.reduce_window(x, -float("inf"), lax.max, window, strides, padding)
