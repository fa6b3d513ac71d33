"""oneDNN convolutions and max pooling on the CPU through `jax.ffi` (the
`onednn` extra).

    pip install -e '.[onednn]'          # oneDNN 3.2 on OpenMP (about 180 MB)
    CNNJAX_CONV_BACKEND=onednn cnnjax train ...   # or --config.conv_backend=onednn

XLA's CPU convolutions are 2-10x slower than oneDNN's on CNN shapes
(BENCHMARKS.md, "oneDNN"). This package compiles `conv.cc` (three XLA FFI
handlers: forward, backward data, backward weights) and `pool.cc` (max
pooling: inference, training, backward; see `pooling`), which share
`common.h`, into one library against the oneDNN wheels and jaxlib's FFI
headers on first use, in `<$XDG_CACHE_HOME or ~/.cache>/cnnjax/onednn/<hash>/`
(the hash covers the sources, the oneDNN version and jaxlib's); registers
the handlers with `jax.ffi`; and gives `conv_general_dilated`, a drop-in for
`lax.conv_general_dilated` whose forward pass and both gradients (a
`custom_vjp`) call them. What oneDNN is not asked to do goes to
`fallback` (cnnjax.ops.weight_grad's convolution): inputs that are not
channels-last (N, *spatial, C) with (*window, I / G, O) kernels, input
dilation (transposed convolutions), batch groups, negative padding, dtypes
other than float32 and bfloat16 (bfloat16 only on CPUs where oneDNN has
it: AVX-512 bf16 or AMX), a requested `preferred_element_type`, and
every backend but the CPU.

The extra installs the `onednn-cpu-gomp` wheels: oneDNN's threads are
OpenMP's (the system's libgomp, or torch's where torch was imported first:
the same soname). The newer `onednn` wheels work too, but are slower here
(BENCHMARKS.md): they are built with oneDNN's SYCL runtime, which finds its
CPU device through the OpenCL loader, so `OCL_ICD_FILENAMES` is pointed at
the bundled runtime (`<prefix>/lib/libintelocl.so`) before the engine is
created, unless the user set it. `CNNJAX_ONEDNN_PREFIX` names another
installation prefix (with lib/libdnnl.so and include/oneapi/dnnl/).

Which backend runs is chosen in cnnjax.ops.backend (config.conv_backend,
CNNJAX_CONV_BACKEND).
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax import runtime
from cnnjax.errors import CnnjaxError
from cnnjax.ops import varying

HERE = os.path.dirname(__file__)
SOURCES = tuple(os.path.join(HERE, name) for name in ("conv.cc", "pool.cc"))
HEADERS = (os.path.join(HERE, "common.h"),)
TARGETS = {"conv_forward": "CnnjaxDnnlConvForward",
           "conv_backward_data": "CnnjaxDnnlConvBackwardData",
           "conv_backward_weights": "CnnjaxDnnlConvBackwardWeights",
           "max_pool_inference": "CnnjaxDnnlMaxPoolInference",
           "max_pool_training": "CnnjaxDnnlMaxPoolTraining",
           "max_pool_backward": "CnnjaxDnnlMaxPoolBackward"}
INSTALL = "pip install -e '.[onednn]'"
# Bumped when the compiler command changes (part of the cache key).
BUILD = "3"
DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))

_lock = threading.Lock()
_state: dict[str, Any] = {}  # 'library' or 'error', once per process.


class Unavailable(CnnjaxError):
  """oneDNN cannot be used here; the message says why in one sentence."""


# --------------------------------------------------------------------------
# Finding, building and loading the library


def prefix() -> str:
  """The installation prefix of the oneDNN wheels (lib/ and include/)."""
  return os.environ.get("CNNJAX_ONEDNN_PREFIX") or sys.prefix


def _find_installation() -> tuple[str, str]:
  """(lib dir, include dir), or Unavailable."""
  root = prefix()
  lib, include = os.path.join(root, "lib"), os.path.join(root, "include")
  if not os.path.exists(os.path.join(lib, "libdnnl.so")):
    raise Unavailable(f"the oneDNN library is not installed ({lib}/libdnnl.so is "
                      f"missing); install the extra: {INSTALL}")
  if not os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
    raise Unavailable(f"the oneDNN headers are not installed "
                      f"({include}/oneapi/dnnl/dnnl.hpp is missing); install the "
                      f"extra: {INSTALL}")
  return lib, include


def _compiler() -> str:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return name
  raise Unavailable("no C++ compiler found (set CXX, or install g++) to build "
                    "the oneDNN convolutions")


def _dnnl_version(include: str) -> str:
  parts = {}
  with open(os.path.join(include, "oneapi", "dnnl", "dnnl_version.h")) as f:
    for line in f:
      fields = line.split()
      if len(fields) == 3 and fields[0] == "#define" and fields[1].startswith(
          "DNNL_VERSION_"):
        parts[fields[1]] = fields[2]
  return ".".join(parts.get(f"DNNL_VERSION_{k}", "?") for k in ("MAJOR", "MINOR", "PATCH"))


def cache_dir() -> str:
  return runtime.user_cache_dir("onednn")


def library_path() -> str:
  """Builds the library unless this source, oneDNN and jaxlib already have
  one in the cache; returns its path. One build at a time (a file lock), so
  parallel workers wait for the first instead of compiling too."""
  lib, include = _find_installation()
  sources = []
  for path in SOURCES + HEADERS:
    with open(path, "rb") as f:
      sources.append(f.read())
  import jaxlib
  key = hashlib.sha256(b"\0".join([
      *sources, BUILD.encode(), _dnnl_version(include).encode(), jaxlib.__version__.encode(),
      os.path.realpath(lib).encode()])).hexdigest()[:16]
  folder = os.path.join(cache_dir(), key)
  target = os.path.join(folder, "libcnnjax_dnnl.so")
  if os.path.exists(target):
    return target
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise Unavailable(f"cannot create the oneDNN build folder {folder}: "
                      f"{e.strerror}") from None
  with open(os.path.join(folder, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(target):  # Another process built it meanwhile.
      return target
    handle, partial = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(handle)
    command = [_compiler(), "-O2", "-std=c++17", "-shared", "-fPIC", *SOURCES,
               f"-I{jax.ffi.include_dir()}", f"-I{include}", f"-L{lib}", "-ldnnl",
               # DT_RPATH, not RUNPATH: it also finds libdnnl's own
               # dependencies (TBB and SYCL for the `onednn` wheels) in
               # the same folder.
               "-Wl,--disable-new-dtags", f"-Wl,-rpath,{lib}", "-o", partial]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
      os.unlink(partial)
      errors = [l for l in done.stderr.splitlines() if "error" in l]
      raise Unavailable(f"building the oneDNN convolutions failed: "
                        f"{(errors or done.stderr.splitlines() or ['?'])[0].strip()}")
    os.replace(partial, target)
  return target


def _load() -> ctypes.CDLL:
  """The built library, its engine created and its handlers registered."""
  lib_dir, _ = _find_installation()
  icd = os.path.join(lib_dir, "libintelocl.so")
  if "OCL_ICD_FILENAMES" not in os.environ and os.path.exists(icd):
    os.environ["OCL_ICD_FILENAMES"] = icd
  path = library_path()
  try:
    library = ctypes.CDLL(path)
  except OSError as e:
    raise Unavailable(f"cannot load the oneDNN convolutions ({e})") from None
  message = ctypes.create_string_buffer(512)
  if library.cnnjax_dnnl_probe(message, len(message)) != 0:
    raise Unavailable(f"oneDNN cannot create a CPU engine: "
                      f"{message.value.decode(errors='replace')}")
  _state["bf16"] = bool(library.cnnjax_dnnl_has_bf16())
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(f"cnnjax_dnnl_{name}",
                                jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")
  return library


def ensure() -> ctypes.CDLL:
  """Loads (building if needed) once per process; raises Unavailable with
  the reason, the same one on every later call."""
  with _lock:
    if "library" not in _state and "error" not in _state:
      try:
        _state["library"] = _load()
      except Unavailable as e:
        _state["error"] = e
    if "error" in _state:
      raise _state["error"]
    return _state["library"]


def available() -> tuple[bool, str]:
  """(True, '') or (False, why not in one sentence)."""
  if jax.default_backend() != "cpu":
    return False, f"oneDNN serves the CPU, and JAX runs on {jax.default_backend()}"
  try:
    ensure()
  except Unavailable as e:
    return False, str(e)
  return True, ""


def has_bfloat16() -> bool:
  """Whether oneDNN has bfloat16 convolutions on this CPU (AVX-512 bf16 or
  AMX); without them bfloat16 convolutions go to `fallback`."""
  ensure()
  return _state["bf16"]


def version() -> str:
  """oneDNN's version as the loaded library reports it."""
  v = ensure().cnnjax_dnnl_version()
  return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


# --------------------------------------------------------------------------
# The convolution


def _call(name: str, out_shape, dtype, a, b, *, strides, low, high, dilation, groups):
  # vmap (seeds trained together) runs the handler once per vmapped example;
  # inside shard_map the result varies over the mesh axes its inputs vary over.
  return varying.union(jax.ffi.ffi_call(f"cnnjax_dnnl_conv_{name}", jax.ShapeDtypeStruct(out_shape, dtype),
                          vmap_method="sequential")(
      a, b, strides=np.asarray(strides, np.int64), padding_low=np.asarray(low, np.int64),
      padding_high=np.asarray(high, np.int64), dilation=np.asarray(dilation, np.int64),
      groups=np.int64(groups)), a, b)


def supported(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count=1, batch_group_count=1,
              preferred_element_type=None) -> bool:
  """Whether oneDNN takes this convolution (see the module docstring)."""
  n = lhs.ndim - 2
  if n not in (1, 2, 3) or rhs.ndim != lhs.ndim:
    return False
  if jnp.dtype(lhs.dtype) not in DTYPES or lhs.dtype != rhs.dtype:
    return False
  if preferred_element_type is not None and jnp.dtype(preferred_element_type) != lhs.dtype:
    return False
  if jnp.dtype(lhs.dtype) == jnp.dtype(jnp.bfloat16) and not has_bfloat16():
    return False
  if batch_group_count != 1 or any(d != 1 for d in (lhs_dilation or ())):
    return False
  spec = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  channels_last = (0, n + 1, *range(1, n + 1))
  if spec.lhs_spec != channels_last or spec.out_spec != channels_last:
    return False
  if spec.rhs_spec != (n + 1, n, *range(n)):
    return False
  if not isinstance(padding, str) and any(p < 0 for pair in padding for p in pair):
    return False
  return True


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` computed by oneDNN (forward and gradients)
  where `supported`, otherwise by `fallback`. `precision` is ignored by
  oneDNN, which computes float32 in float32."""
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
          dimension_numbers, feature_group_count, batch_group_count, precision,
          preferred_element_type)
  if not supported(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count, batch_group_count,
                   preferred_element_type):
    return fallback(*args)
  ensure()
  n = lhs.ndim - 2
  strides = tuple(int(s) for s in window_strides)
  dilation = tuple(int(d) for d in (rhs_dilation or (1,) * n))
  window = rhs.shape[:n]
  if isinstance(padding, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:-1], dilated, strides, padding)
  low = tuple(int(p[0]) for p in padding)
  high = tuple(int(p[1]) for p in padding)
  out_spatial = tuple(
      (size + lo + hi - ((k - 1) * d + 1)) // s + 1
      for size, lo, hi, k, d, s in zip(lhs.shape[1:-1], low, high, window, dilation, strides))
  if any(o <= 0 for o in out_spatial):
    return fallback(*args)  # An empty output: lax says what is wrong.
  attrs = dict(strides=strides, low=low, high=high, dilation=dilation,
               groups=feature_group_count)
  out_shape = (lhs.shape[0], *out_spatial, rhs.shape[-1])
  # Inside shard_map: replicated weights vary over the batch's axes first, so
  # the custom gradient has their type (its transpose sums over devices).
  return _conv(lhs, varying.like(lhs, rhs), out_shape, tuple(sorted(attrs.items())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, out_shape, attrs):
  return _call("forward", out_shape, x.dtype, x, w, **dict(attrs))


def _conv_forward(x, w, out_shape, attrs):
  return _conv(x, w, out_shape, attrs), (x, w)


def _conv_backward(out_shape, attrs, residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  dx = _call("backward_data", x.shape, x.dtype, g, w, **dict(attrs))
  dw = _call("backward_weights", w.shape, w.dtype, x, g, **dict(attrs))
  return dx, dw


_conv.defvjp(_conv_forward, _conv_backward)


def fallback(*args, **kwargs):
  """What runs where oneDNN does not: cnnjax's XLA convolution."""
  from cnnjax.ops import weight_grad
  return weight_grad.conv_general_dilated(*args, **kwargs)
