"""Process-wide JAX settings, applied explicitly by the entry points.

Importing cnnjax changes nothing in the process. The `cnnjax` command calls
`setup()` first thing; a Python program that wants the same settings calls
it before it uses JAX:

    import cnnjax.runtime
    cnnjax.runtime.setup()   # XLA CPU flags, allocator, compilation cache

Three settings:

- XLA CPU flags (`apply_xla_defaults`). On the CPU, XLA 0.10 hands
  convolutions to YNNPACK by default. For the backward pass that path is
  slow: the weight gradient becomes a convolution with an image-sized window,
  2-5x slower than XLA's own (Eigen) convolution, and the forward pass is also
  faster in Eigen for CNN shapes. Measured in BENCHMARKS.md ("Train step"): a
  ResNet-20 train step on two cores goes from 199 to 277 images/s with this
  flag alone. The flags are read when JAX creates its CPU client, so they
  must be set before the first computation. They never override a flag the
  user set, change nothing for GPU or TPU (they are CPU-only), and are skipped
  with CNNJAX_XLA_DEFAULTS=0 or on a jaxlib that does not know them (an
  unknown flag would abort XLA).
- glibc's allocator (`apply_malloc_defaults`). XLA's CPU runtime takes one
  block for all of a step's temporaries (298 MB for ResNet-20 at batch 128)
  from malloc on every execution; glibc serves a block that size with a
  fresh mmap and unmaps it on free, so each step faults in every page of it
  again: 72,779 page faults per ResNet-20 step, about a third of the step's
  time on two cores (BENCHMARKS.md, "Page faults"). Keeping freed memory in
  the process (one arena, no mmap for big blocks, no trimming: mallopt
  M_ARENA_MAX=1, M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1) reuses the same pages
  step after step. The price: the process keeps its peak heap until it
  exits, as accelerator allocators do. Skipped with CNNJAX_MALLOC_DEFAULTS=0,
  when the user set glibc's malloc tunables (GLIBC_TUNABLES glibc.malloc.*,
  MALLOC_ARENA_MAX, MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, ...) and
  outside glibc. Must run before JAX starts its threads (each thread that
  already has an arena keeps it).
- XLA's persistent compilation cache (`enable_compilation_cache`): compiled
  programs are stored on disk and a second run of the same model loads them
  instead of compiling again. 'auto' is `<user cache dir>/cnnjax/xla`
  ($XDG_CACHE_HOME or ~/.cache); a cache directory the user already gave JAX
  (JAX_COMPILATION_CACHE_DIR or jax.config) is never replaced.
"""

from __future__ import annotations

import os
import platform
import sys

CPU_FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}
MIN_JAXLIB = (0, 10)  # The oldest jaxlib these flags were measured with.
# Compilations shorter than this are not written to the cache (reading a
# tiny program back costs about as much as compiling it).
CACHE_MIN_COMPILE_SECONDS = 0.5


def _jaxlib_version() -> tuple[int, ...]:
  try:
    from importlib.metadata import version
    return tuple(int(p) for p in version("jaxlib").split(".")[:2])
  except Exception:  # noqa: BLE001 - not installed, or an odd version string.
    return (0,)


def apply_xla_defaults() -> list[str]:
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


# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
               "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_malloc_applied: list[bool] = []


def apply_malloc_defaults() -> bool:
  """Makes glibc keep and reuse freed memory (see the module docstring);
  True if it did (now or earlier in this process)."""
  if _malloc_applied:
    return _malloc_applied[0]
  if (os.environ.get("CNNJAX_MALLOC_DEFAULTS", "1") == "0"
      or sys.platform != "linux" or platform.libc_ver()[0] != "glibc"
      or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
      or any(name in os.environ for name in _MALLOC_ENV)):
    return False
  import ctypes
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  done = all(mallopt(parameter, value) == 1 for parameter, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  _malloc_applied[:] = [done]
  return done


def malloc_defaults_applied() -> bool:
  """Whether this process runs with the settings of `apply_malloc_defaults`."""
  return _malloc_applied == [True]


def user_cache_dir(*parts: str) -> str:
  """<$XDG_CACHE_HOME or ~/.cache>/cnnjax/<parts>: cnnjax's files that can be
  made again (compiled programs, the oneDNN library)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "cnnjax", *parts)


def default_cache_dir() -> str:
  """<$XDG_CACHE_HOME or ~/.cache>/cnnjax/xla."""
  return user_cache_dir("xla")


_explicit_choice: list[str | None] = []  # The entry point's --compilation-cache.


def enable_compilation_cache(where: str = "auto", *, explicit: bool = False) -> str | None:
  """Turns XLA's persistent compilation cache on; returns its directory.

  `where`: 'auto' (the user cache directory), 'none' or '' (off), or a
  directory. An `explicit` choice (the command line's --compilation-cache)
  wins over every later call, such as the one the training driver makes
  with `config.compilation_cache`. A cache directory the user gave JAX
  (JAX_COMPILATION_CACHE_DIR or jax.config) is never replaced by 'auto'.
  Returns None when the cache is off.
  """
  import jax

  if _explicit_choice and not explicit:
    return _explicit_choice[0]
  where = str(where or "none").strip()
  current = jax.config.jax_compilation_cache_dir or os.environ.get(
      "JAX_COMPILATION_CACHE_DIR") or None
  if where.lower() == "none":
    directory = None
    if current and explicit:
      jax.config.update("jax_compilation_cache_dir", None)
  elif where.lower() == "auto" and current:
    directory = current  # The user's (or an earlier call's) cache stays.
  else:
    directory = default_cache_dir() if where.lower() == "auto" else os.path.abspath(
        os.path.expanduser(where))
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError:
      directory = None  # A read-only home: run without the cache, as before.
    if directory:
      jax.config.update("jax_compilation_cache_dir", directory)
      # The user's JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS wins.
      if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          CACHE_MIN_COMPILE_SECONDS)
  if explicit:
    _explicit_choice[:] = [directory]
  return directory


def setup(compilation_cache: str | None = "auto") -> None:
  """The XLA CPU flags and glibc's allocator settings, then the compilation
  cache (None: leave the cache to the config of the run that follows). Call
  it before JAX computes anything."""
  apply_xla_defaults()
  apply_malloc_defaults()
  if compilation_cache is not None:
    enable_compilation_cache(compilation_cache, explicit=True)
