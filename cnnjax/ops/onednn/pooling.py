"""Max pooling on the CPU through oneDNN (`pool.cc`), forward and gradient.

`max_pool(x, window, strides, padding)` takes `lax.reduce_window`'s
full-rank arguments for a channels-last max pool and computes what
`lax.reduce_window(x, -inf, lax.max, ...)` and its gradient compute, with
oneDNN's pooling primitive: the training forward pass records where each
window's maximum was (oneDNN's workspace, a byte per output for windows of
up to 255 elements) and the backward pass sends each gradient there, to the
window's first maximum as XLA's select-and-scatter does, so the gradients
are equal. Forward and backward, AMD EPYC, 2 cores (scripts/bench_max_pool.py,
two runs): ResNet's stem pool (3x3 / 2 over 32x112x112x64) 32-38 ms here,
193-198 ms through XLA with cnnjax's gradient (cnnjax.ops.pool_grad),
289-337 ms with JAX's select-and-scatter, 39 ms in PyTorch.

What oneDNN is not asked to do goes to `cnnjax.ops.pool_grad` (XLA):
windows over the batch or channel axes, padding as wide as the window (a
window could then hold padding only), dtypes other than float32 (bfloat16
where oneDNN has it on this CPU), and backends other than the CPU.
"""

from __future__ import annotations

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.ops import onednn, pool_grad, varying


def _reference(x, window, strides, padding):
  return pool_grad.max_pool(x, window, strides, padding)


def _geometry(x, window, strides, padding):
  """(spatial window, strides, low, high, output shape) when oneDNN takes
  this pooling, else None."""
  n = x.ndim - 2
  if n not in (1, 2, 3) or len(window) != x.ndim or len(strides) != x.ndim:
    return None
  dtype = jnp.dtype(x.dtype)
  if dtype not in onednn.DTYPES or (dtype == jnp.dtype(jnp.bfloat16)
                                    and not onednn.has_bfloat16()):
    return None
  pads = pool_grad.explicit_padding(x.shape, window, strides, padding)
  if (window[0], window[-1], strides[0], strides[-1]) != (1, 1, 1, 1) or pads[0] != (0, 0) \
      or pads[-1] != (0, 0):
    return None
  window, strides, pads = tuple(window[1:-1]), tuple(strides[1:-1]), pads[1:-1]
  out = []
  for size, w, s, (lo, hi) in zip(x.shape[1:-1], window, strides, pads):
    if lo < 0 or hi < 0 or lo >= w or hi >= w or s < 1:
      return None
    count = (size + lo + hi - w) // s + 1
    if count < 1 or (count - 1) * s - lo >= size:  # A window of padding only.
      return None
    out.append(count)
  low = tuple(lo for lo, _ in pads)
  high = tuple(hi for _, hi in pads)
  return window, strides, low, high, (x.shape[0], *out, x.shape[-1])


def supported(x, window, strides, padding) -> bool:
  """Whether oneDNN takes this max pooling (the module docstring)."""
  return _geometry(x, window, strides, padding) is not None


@functools.lru_cache(maxsize=None)
def workspace_bytes(x_shape, y_shape, window, strides, low, high, bf16: bool) -> int:
  """The size of oneDNN's workspace for one pooling, in bytes."""
  library = onednn.ensure()
  function = library.cnnjax_dnnl_max_pool_workspace
  function.restype = ctypes.c_int64
  array = lambda values: (ctypes.c_int64 * len(values))(*values)
  size = function(array(x_shape), array(y_shape), ctypes.c_int64(len(x_shape)),
                  array(window), array(strides), array(low), array(high), int(bf16))
  if size < 0:
    raise onednn.Unavailable(f"oneDNN refuses max pooling of {x_shape} with window "
                             f"{window}, strides {strides} and padding {low}/{high}")
  return int(size)


def max_pool(x, window, strides, padding):
  """`lax.reduce_window(x, -inf, lax.max, window, strides, padding)` with
  its gradient, computed by oneDNN where `supported`."""
  geometry = _geometry(x, window, strides, padding)
  if geometry is None:
    return _reference(x, window, strides, padding)
  onednn.ensure()
  window, strides, low, high, out_shape = geometry
  attrs = (tuple(x.shape), out_shape, window, strides, low, high)
  return _max_pool(x, attrs)


def _call(name, results, *args, attrs):
  _, _, window, strides, low, high = attrs
  outs = jax.ffi.ffi_call(f"cnnjax_dnnl_max_pool_{name}", results, vmap_method="sequential")(
      *args, window=np.asarray(window, np.int64), strides=np.asarray(strides, np.int64),
      padding_low=np.asarray(low, np.int64), padding_high=np.asarray(high, np.int64))
  # Inside shard_map the results vary over the axes their inputs vary over.
  if isinstance(outs, (tuple, list)):
    return tuple(varying.union(o, *args) for o in outs)
  return varying.union(outs, *args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, attrs):
  out_shape = attrs[1]
  return _call("inference", jax.ShapeDtypeStruct(out_shape, x.dtype), x, attrs=attrs)


def _forward(x, attrs):
  x_shape, out_shape, window, strides, low, high = attrs
  size = workspace_bytes(x_shape, out_shape, window, strides, low, high,
                         jnp.dtype(x.dtype) == jnp.dtype(jnp.bfloat16))
  y, workspace = _call("training", (jax.ShapeDtypeStruct(out_shape, x.dtype),
                                    jax.ShapeDtypeStruct((size,), jnp.uint8)), x, attrs=attrs)
  return y, workspace


def _backward(attrs, workspace, dy):
  # dy has y's dtype, x's.
  return (_call("backward", jax.ShapeDtypeStruct(attrs[0], dy.dtype), dy, workspace,
                attrs=attrs),)


_max_pool.defvjp(_forward, _backward)
