"""Local response normalisation (AlexNet) and batch normalisation.

Local response normalisation (Krizhevsky et al. 2012, section 3.3) divides
each activation by a power of the energy of its neighbouring channels at the
same position:

    b_i = a_i / (k + alpha * sum_{j in window(i)} a_j^2) ** beta

where window(i) is `size` consecutive channels around i: size // 2 before and
(size - 1) // 2 after, clipped at the edges (for odd size that is centred;
for even size this is torch's choice). The paper's constants (n=5, k=2,
alpha=1e-4, beta=0.75) are the defaults.

PyTorch's `nn.LocalResponseNorm` averages instead of summing the squares,
i.e. it uses alpha / size. `alpha_per_size=True` reproduces that;
equivalently, torch's LRN with alpha=A equals ours with alpha=A / size.

Batch normalisation is flax's `nn.BatchNorm`, re-exported, and
`TorchLikeBatchNorm`, the one every cnnjax model uses: torch's constants and
torch's running-variance update (the unbiased batch variance), so that a
model imported from PyTorch and trained here keeps the statistics its torch
twin would. It overrides `BatchNorm.__call__` with flax's own helpers
(`flax.linen.normalization._compute_stats`, `_normalize`), changing only
the running-variance update; flax has no public hook for it. On the CPU a
float32 training call without mask or cross-device axis computes the same
function through `cnnjax.ops.norm.batch_norm_train`, whose hand-derived
gradient XLA's CPU backend runs in fewer passes than flax's autodiff.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import normalization as flax_norm
from jax import lax

from cnnjax.errors import CnnjaxError

BatchNorm = nn.BatchNorm


def local_response_norm(x, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                        beta: float = 0.75, alpha_per_size: bool = False):
  """Local response normalisation across the last (channel) axis.

  Works for any channels-last input, e.g. (B, W, C), (B, H, W, C) or
  (B, D, H, W, C); the output has the input's shape.

  Args:
    x: activations, channels last.
    size: the number of channels in each window (the paper's n).
    k, alpha, beta: the paper's constants.
    alpha_per_size: if True, use alpha / size as torch does.
  """
  if not isinstance(size, int) or size < 1:
    raise CnnjaxError(f"local_response_norm needs a positive int size, got "
                      f"{size!r}.")
  if x.ndim < 2:
    raise CnnjaxError(f"local_response_norm needs channels-last inputs of "
                      f"rank >= 2, got shape {x.shape}.")
  # Windowed sum of squares over channels, zero padded like torch:
  # size // 2 channels before, (size - 1) // 2 after. Same shape as x.
  window = (1,) * (x.ndim - 1) + (size,)
  padding = ((0, 0),) * (x.ndim - 1) + ((size // 2, (size - 1) // 2),)
  squares = lax.reduce_window(x * x, 0.0, lax.add, window,
                              (1,) * x.ndim, padding)
  scale = alpha / size if alpha_per_size else alpha
  return x / (k + scale * squares) ** beta


class LocalResponseNorm(nn.Module):
  """`local_response_norm` as a module (no parameters).

  Attributes:
    size, k, alpha, beta: the paper's n, k, alpha, beta (AlexNet defaults).
    alpha_per_size: False (default) for the paper's formula,
      k + alpha * sum a_j^2; True for torch's, k + alpha / size * sum a_j^2.
  """
  size: int = 5
  k: float = 2.0
  alpha: float = 1e-4
  beta: float = 0.75
  alpha_per_size: bool = False

  def __call__(self, x):
    return local_response_norm(x, self.size, self.k, self.alpha, self.beta,
                               self.alpha_per_size)


class TorchLikeBatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` that trains like torch's: momentum 0.9, epsilon 1e-5, and
  running variances updated with the unbiased batch variance.

  Momentum conventions are opposite: torch updates
  running = (1 - m) * running + m * batch with m = 0.1, flax
  running = m * running + (1 - m) * batch, so torch's 0.1 is flax's 0.9
  (flax's own default is 0.99). Both use eps=1e-5 and normalise with the
  biased batch variance in training.

  The running variance is where flax and torch part: torch folds in the
  *unbiased* batch variance, var * n / (n - 1) with n the elements per
  channel the statistics were computed over (batch x spatial positions),
  flax the biased one. The difference is small for big maps but not for
  small ones (resnet18's last stage on a 32x32 input is 1x1, so n is the
  batch size there), and an imported model fine-tuned here would drift from
  its torch twin. `unbiased_running_var=True` (the default) updates `var` in
  `batch_stats` as torch does; `False` keeps flax's biased update. Outputs,
  running means and evaluation are the same either way; torch statistics
  import as they are (running_var is a variance in eval for both).

  n counts what the statistics saw: with a `mask`, the unmasked elements of
  each channel; with `axis_name` (synchronised BN under pmap, shard_map or a
  named vmap), the elements on every member of the axis, or of its
  `axis_index_groups` group. For n <= 1 the unbiased variance is undefined
  (torch refuses one value per channel in training; its kernel would store
  nan), so the update falls back to the biased variance, 0 for n = 1.

  Channels are the last axis, any rank: (B, C), (B, W, C), (B, H, W, C), ...
  Pass `use_running_average=not train` at construction or call time and
  `mutable=['batch_stats']` to `apply` when training.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  unbiased_running_var: bool = True

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *,
               mask: jax.Array | None = None):
    """flax's `BatchNorm.__call__` (same variables, same maths, its own
    helpers) but for the running variance's Bessel correction."""
    use_running_average = nn.merge_param(
        "use_running_average", self.use_running_average, use_running_average)
    feature_axes = flax_norm._canonicalize_axes(x.ndim, self.axis)
    reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    feature_shape = [x.shape[ax] for ax in feature_axes]
    stats_dtype = (jnp.float32 if self.force_float32_reductions
                   else self.param_dtype)
    ra_mean = self.variable("batch_stats", "mean",
                            lambda s: jnp.zeros(s, stats_dtype), feature_shape)
    ra_var = self.variable("batch_stats", "var",
                           lambda s: jnp.ones(s, stats_dtype), feature_shape)

    if (not use_running_average and not self.is_initializing()
        and self._fast_applies(x, feature_axes, mask)):
      return self._fast_train(x, feature_shape, reduction_axes, ra_mean, ra_var)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
      if not self.force_float32_reductions:
        mean = jnp.asarray(mean, self.param_dtype)
        var = jnp.asarray(var, self.param_dtype)
    else:
      mean, var = flax_norm._compute_stats(
          x, reduction_axes, dtype=self.dtype,
          axis_name=self.axis_name if not self.is_initializing() else None,
          axis_index_groups=self.axis_index_groups,
          use_fast_variance=self.use_fast_variance, mask=mask,
          force_float32_reductions=self.force_float32_reductions)
      if not self.is_initializing():
        batch_var = var
        if self.unbiased_running_var:
          batch_var = var * self._bessel_factor(x, reduction_axes, mask,
                                                var.dtype)
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean
        ra_var.value = m * ra_var.value + (1 - m) * batch_var

    return flax_norm._normalize(
        self, x, mean, var, reduction_axes, feature_axes, self.dtype,
        self.param_dtype, self.epsilon, self.use_bias, self.use_scale,
        self.bias_init, self.scale_init, self.force_float32_reductions)

  def _fast_applies(self, x, feature_axes, mask) -> bool:
    """Whether this training call takes `cnnjax.ops.norm.batch_norm_train`
    (the hand-derived gradient): on the CPU, float32 throughout, channels
    last, flax's fast variance, no mask and no cross-device axis."""
    f32 = jnp.dtype(jnp.float32)
    return (mask is None and self.axis_name is None and self.use_fast_variance
            and jax.default_backend() == "cpu" and x.ndim >= 2
            and tuple(feature_axes) == (x.ndim - 1,) and jnp.dtype(x.dtype) == f32
            and jnp.dtype(self.param_dtype) == f32
            and (self.dtype is None or jnp.dtype(self.dtype) == f32))

  def _fast_train(self, x, feature_shape, reduction_axes, ra_mean, ra_var):
    """The training call through `batch_norm_train`: the same variables,
    outputs and running-statistics update as flax's path."""
    from cnnjax.ops import norm
    scale = (self.param("scale", self.scale_init, feature_shape, self.param_dtype)
             if self.use_scale else jnp.ones(feature_shape, jnp.float32))
    shift = (self.param("bias", self.bias_init, feature_shape, self.param_dtype)
             if self.use_bias else jnp.zeros(feature_shape, jnp.float32))
    y, mean, var = norm.batch_norm_train(x, scale, shift, self.epsilon)
    batch_var = var
    if self.unbiased_running_var:
      batch_var = var * self._bessel_factor(x, reduction_axes, None, var.dtype)
    m = self.momentum
    ra_mean.value = m * ra_mean.value + (1 - m) * mean
    ra_var.value = m * ra_var.value + (1 - m) * batch_var
    return y

  def _bessel_factor(self, x, reduction_axes, mask, dtype):
    """n / (n - 1) per channel (1 where n <= 1), n the elements per channel
    of this batch over the whole `axis_name` axis (or group), unmasked only."""
    if mask is None:
      n = math.prod(x.shape[ax] for ax in reduction_axes)
    else:
      present = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
      n = jnp.sum(present, axis=reduction_axes, dtype=jnp.int32)
    if self.axis_name is not None:
      n = lax.psum(n, self.axis_name,
                   axis_index_groups=self.axis_index_groups)
    n = jnp.asarray(n, dtype)
    return jnp.where(n > 1, n / jnp.maximum(n - 1, 1), 1).astype(dtype)


def batch_norm(*, train: bool, **kwargs: Any) -> TorchLikeBatchNorm:
  """A `TorchLikeBatchNorm` using batch statistics iff `train`."""
  return TorchLikeBatchNorm(use_running_average=not train, **kwargs)

