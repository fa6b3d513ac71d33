"""Batch normalization in training with a hand-derived gradient (CPU).

`batch_norm_train(x, scale, shift, epsilon)` normalizes over every axis of
`x` but the last with this batch's statistics and returns (y, mean, var),
var the biased variance computed as E[x^2] - E[x]^2 (flax's default,
`use_fast_variance`). It is the same function as the one flax's `BatchNorm`
computes, with a `custom_vjp` that gives XLA the textbook gradient:

    dshift = sum(dy),  dscale = sum(dy * (x - mean)) * rstd,
    dx = scale * rstd * (dy - sum(dy) / m - (x - mean) * rstd^2 * sum(dy * (x - mean)) / m)

so the backward pass is one reduction over (x, dy) and one elementwise
pass, and the forward pass one reduction and one elementwise pass, where
autodiff of flax's forward gives XLA's CPU backend more passes over the
activations: BN + ReLU forward and backward at ResNet-20's shapes (batch
128) take 1.45-1.56x as long through flax's path
(`scripts/bench_batch_norm.py`, BENCHMARKS.md). Cotangents that
reach `mean` or `var` (a loss on the statistics themselves) are added in
JAX; the training step only stores them, and they cost nothing then.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnnjax.ops import varying


def batch_norm_train(x, scale, shift, epsilon: float):
  """(y, mean, var) of batch normalization over all axes of x but the last;
  scale and shift have x.shape[-1] values. float32 throughout."""
  # Inside shard_map the parameters vary over x's mesh axes first (what JAX
  # does implicitly where they meet x), so the custom gradients have their
  # types; the cast's transpose sums them over the devices (ops.varying).
  scale, shift = varying.like(x, scale, shift)
  return _batch_norm(x, scale, shift, float(epsilon))


def _statistics(x):
  axes = tuple(range(x.ndim - 1))
  m = x.size // x.shape[-1]
  mean = jnp.sum(x, axes) / m
  var = jnp.maximum(jnp.sum(x * x, axes) / m - mean * mean, 0.0)
  return mean, var


def _normalize(x, scale, shift, epsilon):
  mean, var = _statistics(x)
  rstd = lax.rsqrt(var + epsilon)
  return (x - mean) * (rstd * scale) + shift, mean, var, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, scale, shift, epsilon):
  return _normalize(x, scale, shift, epsilon)[:3]


def _forward(x, scale, shift, epsilon):
  # symbolic_zeros: the arguments come as CustomVJPPrimal(value, perturbed).
  x, scale, shift = x.value, scale.value, shift.value
  y, mean, var, rstd = _normalize(x, scale, shift, epsilon)
  return (y, mean, var), (x, mean, rstd, scale)


def _backward(epsilon, residuals, cotangents):
  del epsilon  # In rstd already.
  x, mean, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  m = x.size // x.shape[-1]
  # x - mean is recomputed inside each elementwise pass rather than written
  # out once: the reduction takes sum(dy * x) - mean * sum(dy), which equals
  # sum(dy * (x - mean)) (the same cancellation as the forward pass's
  # E[x^2] - E[x]^2), so XLA need not store a centred copy of the activations
  # for it (BN + ReLU forward and backward 11-24% faster at ResNet shapes).
  # The gradient's error on inputs with mean 10 or 100 standard deviations
  # is the same as with the centred copy (the forward's variance dominates).
  if isinstance(dy, SymbolicZero):
    dx = jnp.zeros_like(x)
    dscale = dshift = jnp.zeros_like(scale)
  else:
    dshift = jnp.sum(dy, axes)
    dcentred = jnp.sum(dy * x, axes) - mean * dshift
    dscale = dcentred * rstd
    dx = (scale * rstd) * (dy - dshift / m - (x - mean) * (rstd * rstd * dcentred / m))
  if not isinstance(dmean, SymbolicZero):
    dx = dx + dmean / m
  if not isinstance(dvar, SymbolicZero):
    dx = dx + dvar * 2.0 / m * (x - mean)
  return dx, dscale, dshift


_batch_norm.defvjp(_forward, _backward, symbolic_zeros=True)
