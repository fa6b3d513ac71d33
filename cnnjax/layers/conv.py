"""Convolutions on channels-last inputs with 1, 2 or 3 spatial dimensions.

`Conv` is `flax.linen.Conv` with friendlier arguments and early, readable
errors: an int `kernel_size` means a square (cubic, ...) kernel of `ndim`
spatial dims instead of flax's 1D kernel, and every geometry argument is
normalised to a per-dimension tuple when the module is built, so analysis code
can read `kernel_size`, `strides`, `padding`, `kernel_dilation` and
`feature_group_count` straight off the module. Parameters keep flax's names
and layouts: `kernel` of shape (*kernel_size, in_features // groups, features)
and `bias` of shape (features,).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn

from cnnjax.errors import CnnjaxError
from cnnjax.ops import backend

_STRING_PADDINGS = ("SAME", "VALID", "CIRCULAR", "REFLECT", "CAUSAL")


def spatial_tuple(value: Any, ndim: int, what: str) -> tuple[int, ...]:
  """An int or a sequence of `ndim` ints as a tuple of `ndim` positive ints."""
  if value is None:
    value = 1
  if isinstance(value, int):
    value = (value,) * ndim
  try:
    value = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise CnnjaxError(f"{what} must be an int or a sequence of {ndim} ints, "
                      f"got {value!r}.") from None
  if len(value) != ndim or any(v < 1 for v in value):
    raise CnnjaxError(f"{what} must be a positive int or {ndim} positive "
                      f"ints (one per spatial dim), got {value!r}.")
  return value


def normalize_padding(padding: Any, ndim: int) -> str | tuple[tuple[int, int], ...]:
  """Padding as an upper-case string or `ndim` (low, high) pairs.

  Accepts 'SAME'/'VALID' (any case, plus flax's 'CIRCULAR', 'REFLECT' and
  1D 'CAUSAL'), an int (the same on both sides of every dim, like torch), one
  int per dim, or one (low, high) pair per dim.
  """
  if isinstance(padding, str):
    upper = padding.upper()
    if upper not in _STRING_PADDINGS:
      raise CnnjaxError(f"padding must be one of {', '.join(_STRING_PADDINGS)}, "
                        f"an int or per-dim ints/(low, high) pairs, got {padding!r}.")
    return upper
  if isinstance(padding, int):
    padding = (padding,) * ndim
  try:
    pairs = []
    for p in padding:
      lo, hi = (p, p) if isinstance(p, int) else tuple(p)
      pairs.append((int(lo), int(hi)))
  except (TypeError, ValueError):
    pairs = None
  if pairs is None or len(pairs) != ndim or any(v < 0 for pair in pairs
                                                 for v in pair):
    raise CnnjaxError(f"padding must be a string, a non-negative int or {ndim} "
                      f"non-negative ints/(low, high) pairs, got {padding!r}.")
  return tuple(pairs)


def check_window_fits(spatial: Sequence[int], window: Sequence[int],
                      padding: Any, what: str) -> None:
  """Raises CnnjaxError if a (dilated) window is larger than the padded input.

  `padding` is a normalised padding; string paddings other than 'VALID' pad
  enough for any window.
  """
  if isinstance(padding, str) and padding != "VALID":
    return
  pads = ((0, 0),) * len(spatial) if padding == "VALID" else padding
  for dim, (size, w, (lo, hi)) in enumerate(zip(spatial, window, pads)):
    if size + lo + hi < w:
      raise CnnjaxError(
          f"The {what} of size {tuple(window)} does not fit in the input of "
          f"spatial shape {tuple(spatial)} (dim {dim}: {size} + padding "
          f"{lo}+{hi} < {w}).")



def kernel_ndim(kernel_size, ndim: int | None, layer: str) -> int:
  """The number of spatial dims of a layer's `kernel_size` (an int: `ndim`,
  default 2; a sequence: its length, which must agree with `ndim`); 1 to 3,
  else one sentence naming `layer`."""
  if isinstance(kernel_size, int):
    n = 2 if ndim is None else ndim
  else:
    try:
      n = len(kernel_size)
    except TypeError:
      raise CnnjaxError(f"{layer} kernel_size must be an int or a sequence of "
                        f"ints, got {kernel_size!r}.") from None
    if ndim is not None and ndim != n:
      raise CnnjaxError(f"{layer} kernel_size {tuple(kernel_size)!r} has {n} "
                        f"spatial dims but ndim={ndim}.")
  if not 1 <= n <= 3:
    raise CnnjaxError(f"{layer} supports 1, 2 or 3 spatial dims, got {n}.")
  return n

class Conv(nn.Conv):
  """`flax.linen.Conv` with int kernels of `ndim` dims and early shape errors.

  Attributes (beyond flax's, whose names and defaults are kept; note flax's
  default padding is 'SAME', torch's is 0):
    kernel_size: an int (the same in every one of `ndim` spatial dims) or one
      int per spatial dim. Stored as a tuple.
    ndim: number of spatial dims for an int `kernel_size`; None means 2, or
      the length of a tuple `kernel_size`. Stored as the actual number.
    strides, kernel_dilation: int or per-dim ints; stored as tuples.
    padding: 'SAME', 'VALID' (any case), an int (both sides of every dim,
      as torch's `padding=p`), per-dim ints, or per-dim (low, high) pairs.
      Stored as the upper-case string or a tuple of (low, high) pairs.
    feature_group_count: groups as in torch; in and out channels must be
      divisible by it. `feature_group_count == in_features` is depthwise.
  """
  ndim: int | None = None

  def __post_init__(self):
    # Canonicalise before flax freezes the dataclass, so clones (which pass
    # these values back in) see the same, already-normalised values.
    kernel = self.kernel_size
    ndim = kernel_ndim(kernel, self.ndim, "Conv")
    values = dict(
        ndim=ndim,
        kernel_size=spatial_tuple(kernel, ndim, "kernel_size"),
        strides=spatial_tuple(self.strides, ndim, "strides"),
        kernel_dilation=spatial_tuple(self.kernel_dilation, ndim,
                                      "kernel_dilation"),
        padding=normalize_padding(self.padding, ndim))
    if values["padding"] == "CAUSAL" and ndim != 1:
      raise CnnjaxError("CAUSAL padding is only defined for 1D convolutions.")
    if not isinstance(self.feature_group_count, int) or \
        self.feature_group_count < 1:
      raise CnnjaxError(f"feature_group_count must be a positive int, got "
                        f"{self.feature_group_count!r}.")
    if self.conv_general_dilated is None and self.conv_general_dilated_cls is None:
      # lax.conv_general_dilated on the chosen backend (cnnjax.ops.backend):
      # XLA with a faster weight gradient on CPU, or oneDNN.
      values["conv_general_dilated"] = backend.conv_general_dilated
    for key, value in values.items():
      object.__setattr__(self, key, value)
    super().__post_init__()

  def __call__(self, inputs):
    """Convolves (B, *spatial, C) inputs into (B, *spatial', features)."""
    n = len(self.kernel_size)
    if inputs.ndim < n + 1:
      raise CnnjaxError(f"a {n}D convolution needs inputs of shape "
                        f"(B, {n} spatial dims..., C), got {inputs.shape}.")
    in_features = inputs.shape[-1]
    groups = self.feature_group_count
    if in_features % groups or self.features % groups:
      raise CnnjaxError(
          f"feature_group_count={groups} must divide both the input channels "
          f"({in_features}) and the output features ({self.features}).")
    dilated = tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size,
                                                   self.kernel_dilation))
    check_window_fits(inputs.shape[-(n + 1):-1], dilated, self.padding,
                      "(dilated) convolution kernel")
    return super().__call__(inputs)


conv1d = functools.partial(Conv, ndim=1)
conv1d.__doc__ = "`Conv` with 1 spatial dim: inputs (B, W, C)."
conv2d = functools.partial(Conv, ndim=2)
conv2d.__doc__ = "`Conv` with 2 spatial dims: inputs (B, H, W, C)."
conv3d = functools.partial(Conv, ndim=3)
conv3d.__doc__ = "`Conv` with 3 spatial dims: inputs (B, D, H, W, C)."


def conv1x1(features: int, *, ndim: int = 2, **kwargs: Any) -> Conv:
  """A pointwise (1x1) convolution: a Dense applied at every position."""
  kwargs.setdefault("padding", "VALID")
  return Conv(features, kernel_size=1, ndim=ndim, **kwargs)


class ConvUnit(nn.Module):
  """conv -> norm (if given) -> act, with children named `conv` and `bn`.

  `conv` and `norm` are module factories (e.g. `Conv` and
  `TorchLikeBatchNorm` partials with their dtypes and train/eval mode
  bound): the paper's GoogLeNet units are conv + bias + ReLU (`norm=None`),
  torchvision's BasicConv2d bias-free conv + BatchNorm + ReLU.
  """
  features: int
  kernel_size: Any
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module] | None
  act: Callable
  strides: Any = 1
  padding: Any = 0

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, kernel_size=self.kernel_size,
                  strides=self.strides, padding=self.padding, name="conv")(x)
    if self.norm is not None:
      x = self.norm(name="bn")(x)
    return self.act(x)
