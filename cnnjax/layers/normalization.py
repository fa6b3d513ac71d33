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

Batch normalisation is flax's `nn.BatchNorm`, re-exported; see
`TorchLikeBatchNorm` for the constants that match torch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
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
  """`nn.BatchNorm` with torch's defaults: momentum 0.9, epsilon 1e-5.

  Momentum conventions are opposite: torch updates
  running = (1 - m) * running + m * batch with m = 0.1, flax
  running = m * running + (1 - m) * batch, so torch's 0.1 is flax's 0.9
  (flax's own default is 0.99). Both use eps=1e-5 and normalise with the
  biased batch variance in training.

  One difference remains: torch's running_var is updated with the *unbiased*
  batch variance (times n / (n - 1), n = elements per channel), flax's with
  the biased one. After a training step from running_var=1,
  torch: 0.9 + 0.1 * var * n / (n - 1); flax: 0.9 + 0.1 * var. The outputs
  in training, the running means, and eval outputs given the same running
  statistics are identical. To import torch statistics, copy running_var as
  is (it is used as a variance in eval by both).

  Channels are the last axis, any rank: (B, C), (B, W, C), (B, H, W, C), ...
  Pass `use_running_average=not train` at construction or call time and
  `mutable=['batch_stats']` to `apply` when training.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5


def batch_norm(*, train: bool, **kwargs: Any) -> TorchLikeBatchNorm:
  """A `TorchLikeBatchNorm` using batch statistics iff `train`."""
  return TorchLikeBatchNorm(use_running_average=not train, **kwargs)

