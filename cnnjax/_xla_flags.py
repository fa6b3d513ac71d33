"""XLA CPU settings that make convolutional networks train faster.

On the CPU, XLA 0.10 hands convolutions to YNNPACK by default. For the
backward pass that path is slow: the weight gradient becomes a convolution
with an image-sized window, 2-5x slower than XLA's own (Eigen) convolution,
and the forward pass is also faster in Eigen for CNN shapes. Measured in
BENCHMARKS.md ("Train step"): a ResNet-20 train step on two cores goes from
199 to 277 images/s with this flag alone. (Also routing elementwise ops to YNNPACK,
'+eltwise', added a few percent more but made some compilations 30x slower:
a ResNet-50 forward pass took 29 s instead of 0.9 s.)

`apply()` adds these flags to XLA_FLAGS when cnnjax is imported, before JAX
creates its CPU client (XLA reads the variable then). It never overrides a
flag the user set, changes nothing for GPU or TPU (the flags are CPU-only),
and is skipped with CNNJAX_XLA_DEFAULTS=0 or on a jaxlib that does not know
the flags (an unknown flag would abort XLA).
"""

from __future__ import annotations

import os

CPU_FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}
MIN_JAXLIB = (0, 10)  # The oldest jaxlib these flags were measured with.


def _jaxlib_version() -> tuple[int, ...]:
  try:
    from importlib.metadata import version
    return tuple(int(p) for p in version("jaxlib").split(".")[:2])
  except Exception:  # noqa: BLE001 - not installed, or an odd version string.
    return (0,)


def apply() -> list[str]:
  """Adds the CPU flags to XLA_FLAGS; returns the flags it added."""
  if os.environ.get("CNNJAX_XLA_DEFAULTS", "1") == "0":
    return []
  if _jaxlib_version() < MIN_JAXLIB:
    return []
  current = os.environ.get("XLA_FLAGS", "")
  added = [f"{name}={value}" for name, value in CPU_FLAGS.items()
           if name not in current]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
  return added
