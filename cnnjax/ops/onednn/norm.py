"""Batch normalization in training, with an optional fused ReLU, through
oneDNN's batch-normalization primitive (`norm.cc`).

`batch_norm_train(x, scale, shift, epsilon, relu)` returns (y, mean, var)
as `cnnjax.ops.norm.batch_norm_train` does (y passed through a ReLU when
`relu`), normalizing over every axis of x but the last, var the biased
variance. Forward: oneDNN computes the statistics and writes y in one
primitive; with the ReLU it also records where y was positive, so the
backward pass (one primitive: dx, dscale, dshift) needs no copy of y and
XLA no separate ReLU passes. Cotangents that reach `mean` or `var` are added
in JAX, as in `cnnjax.ops.norm`.

Where it pays (`worth_it`; BENCHMARKS.md, "oneDNN batch norm"): forward
and backward of BN + ReLU at ResNet's 224x224 shapes take 1.4-2.5x less
time than XLA's fusions of the hand-derived gradient (32x56x56x64: 18.7
against 46.6 ms), and are level with them at ResNet-20's CIFAR shapes.
Without the ReLU, XLA fuses the normalization into what follows (a residual
addition), which a call into oneDNN cannot join, and oneDNN's kernel,
vectorized over channels, is slower than that below 64 channels.
oneDNN accumulates the statistics in float32 with less care than XLA's
reductions: mean and variance agree with float64 to about 1e-5 relative at
400,000 values per channel (XLA's: 1e-7), well inside what a mini-batch's
sampling changes them by, but enough to flip the ReLU mask of a few values
that sit within rounding of zero.
"""

from __future__ import annotations

import ctypes
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from cnnjax.ops import onednn, varying

# Without a fused ReLU, activations with at least this many channels go to
# oneDNN (module docstring).
MIN_CHANNELS_WITHOUT_RELU = 64


def supported(x, scale, shift) -> bool:
  """float32 (..., C) activations with (C,) float32 parameters."""
  f32 = jnp.dtype(jnp.float32)
  return (x.ndim >= 2 and x.size > 0 and all(jnp.dtype(a.dtype) == f32 for a in (x, scale, shift))
          and scale.shape == shift.shape == x.shape[-1:])


def worth_it(x, relu: bool) -> bool:
  """Whether oneDNN is at least as fast as XLA's fusions here: with the ReLU
  fused always, without it from MIN_CHANNELS_WITHOUT_RELU channels."""
  return relu or x.shape[-1] >= MIN_CHANNELS_WITHOUT_RELU


@functools.lru_cache(maxsize=None)
def workspace_bytes(m: int, c: int, epsilon: float, relu: bool) -> int:
  """The size of oneDNN's ReLU workspace for an (m, c) batch, in bytes."""
  function = onednn.ensure().cnnjax_dnnl_batch_norm_workspace
  function.restype = ctypes.c_int64
  function.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_int]
  size = function(m, c, epsilon, int(relu))
  if size < 0:
    raise onednn.Unavailable(f"oneDNN refuses batch norm over ({m}, {c})")
  return int(size)


def batch_norm_train(x, scale, shift, epsilon: float, relu: bool = False):
  """(y, mean, var): y = [relu]((x - mean) / sqrt(var + epsilon) * scale + shift)."""
  onednn.ensure()
  scale, shift = varying.like(x, scale, shift)
  return _batch_norm(x, scale, shift, float(np.float32(epsilon)), bool(relu))


def _attrs(epsilon, relu):
  return dict(epsilon=np.float32(epsilon), relu=relu)


def _forward_call(x, scale, shift, epsilon, relu):
  c = x.shape[-1]
  m = x.size // c
  results = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((c,), jnp.float32),
             jax.ShapeDtypeStruct((c,), jnp.float32),
             jax.ShapeDtypeStruct((workspace_bytes(m, c, epsilon, relu),), jnp.uint8))
  outs = jax.ffi.ffi_call("cnnjax_dnnl_batch_norm_forward", results, vmap_method="sequential")(
      x, scale, shift, **_attrs(epsilon, relu))
  return tuple(varying.union(o, x, scale, shift) for o in outs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm(x, scale, shift, epsilon, relu):
  return _forward_call(x, scale, shift, epsilon, relu)[:3]


def _forward(x, scale, shift, epsilon, relu):
  # symbolic_zeros: the arguments come as CustomVJPPrimal(value, perturbed).
  x, scale, shift = x.value, scale.value, shift.value
  y, mean, var, workspace = _forward_call(x, scale, shift, epsilon, relu)
  return (y, mean, var), (x, mean, var, scale, workspace)


def _backward(epsilon, relu, residuals, cotangents):
  x, mean, var, scale, workspace = residuals
  dy, dmean, dvar = cotangents
  m = math.prod(x.shape[:-1])
  if isinstance(dy, SymbolicZero):
    dx = jnp.zeros_like(x)
    dscale = dshift = jnp.zeros_like(scale)
  else:
    results = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(scale.shape, jnp.float32),
               jax.ShapeDtypeStruct(scale.shape, jnp.float32))
    outs = jax.ffi.ffi_call("cnnjax_dnnl_batch_norm_backward", results,
                            vmap_method="sequential")(
        x, dy.astype(x.dtype), mean, var, scale, workspace, **_attrs(epsilon, relu))
    dx, dscale, dshift = (varying.union(o, x, dy, scale) for o in outs)
  if not isinstance(dmean, SymbolicZero):
    dx = dx + dmean / m
  if not isinstance(dvar, SymbolicZero):
    dx = dx + dvar * 2.0 / m * (x - mean)
  return dx, dscale, dshift


_batch_norm.defvjp(_forward, _backward, symbolic_zeros=True)
