"""Reading and writing PyTorch weight files: `.pth`/`.pt`/`.bin` and `.safetensors`.

A weight file is untrusted input. PyTorch's own format is a pickle, and
unpickling arbitrary objects can run arbitrary code, so `.pth` files are
read only with `torch.load(weights_only=True)`, which restores tensors and
plain containers and refuses everything else; a file that needs more is
refused with one sentence. torch is needed for `.pth` files alone:
`.safetensors` files (timm and Hugging Face publish their weights so) are
read with the `safetensors` package, without torch.

What comes back is a flat state dict {key: numpy array} in the file's order,
unwrapped from the usual training-script containers ({'state_dict': ...},
{'model': ...}) and with DataParallel's 'module.' prefix removed.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np

from cnnjax.errors import CnnjaxError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_SUFFIXES = TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)
# Containers that training scripts wrap a state dict in, most specific first.
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "net")

StateDict = dict  # {key: np.ndarray}, in the file's order.


def _candidates(directory: str, hint: str) -> list[str]:
  """Weight files below `directory` whose file or folder names name `hint`
  (a torch hub cache holds 'resnet18-f37072fd.pth'; the Hugging Face cache
  'models--timm--seresnet50.a1_in1k/snapshots/<hash>/model.safetensors')."""
  token = re.compile(rf"(^|[^a-z0-9]){re.escape(hint.lower())}([^a-z0-9_]|$)")
  found = []
  for folder, subfolders, names in os.walk(directory):
    subfolders.sort()
    for name in sorted(names):
      if not name.endswith(WEIGHT_SUFFIXES):
        continue
      path = os.path.join(folder, name)
      relative = os.path.relpath(path, directory).lower()
      if not hint or token.search(relative):
        found.append(path)
  return found


def resolve_weight_file(path: str, hint: str = "") -> str:
  """The weight file `path` names: the file itself, or, for a directory (a
  torch hub or Hugging Face cache), the one weight file in it named after
  `hint` (the twin's name)."""
  path = os.path.expanduser(os.fspath(path))
  if os.path.isfile(path):
    return path
  if not os.path.exists(path):
    raise CnnjaxError(f"weight file '{path}' does not exist")
  found = _candidates(path, hint)
  if len(found) == 1:
    return found[0]
  if not found:
    raise CnnjaxError(
        f"'{path}' holds no weight file ({', '.join(WEIGHT_SUFFIXES)}) for "
        f"'{hint}'; pass the file itself")
  raise CnnjaxError(
      f"'{path}' holds {len(found)} weight files for '{hint}' "
      f"({', '.join(os.path.relpath(f, path) for f in found[:4])}"
      f"{', ...' if len(found) > 4 else ''}); pass the one to use")


def _read_safetensors(path: str) -> dict:
  try:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
  except ImportError as e:  # pragma: no cover - a core dependency.
    raise CnnjaxError("reading .safetensors files needs the safetensors "
                      "package: pip install safetensors") from e
  try:
    return load_file(path)
  except (SafetensorError, OSError, ValueError) as e:
    raise CnnjaxError(f"'{path}' is not a readable .safetensors file "
                      f"({_first_line(e)}); is it truncated?") from e
  except TypeError as e:  # e.g. bfloat16, which NumPy has no type for.
    raise CnnjaxError(f"'{path}' holds tensors NumPy cannot read "
                      f"({_first_line(e)}); save it in float32") from e


def _read_torch(path: str) -> dict:
  try:
    import torch
  except ImportError as e:
    raise CnnjaxError(
        f"reading '{os.path.basename(path)}' needs PyTorch (pip install torch)"
        "; or convert it to .safetensors where torch is installed") from e
  import pickle

  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    if not re.search(r"GLOBAL|[Uu]nsupported class|blocked", str(e)):
      raise CnnjaxError(f"'{path}' is not a readable PyTorch weight file "
                        "(its pickle stream is damaged); is it truncated?") from e
    raise CnnjaxError(
        f"'{path}' asks to unpickle Python objects other than tensors, which "
        "could run arbitrary code, so cnnjax refuses it; save its "
        "state_dict() (or a .safetensors file) where it came from") from e
  except (RuntimeError, EOFError, OSError, ValueError) as e:
    raise CnnjaxError(f"'{path}' is not a readable PyTorch weight file "
                      f"({_first_line(e)}); is it truncated?") from e
  return loaded


def _to_numpy(value):
  """A tensor or array as a NumPy array (half and bfloat16 widened to float32)."""
  if isinstance(value, np.ndarray):
    return value
  import torch

  if isinstance(value, torch.Tensor):
    tensor = value.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float64:
      tensor = tensor.float()
    return tensor.numpy()
  return None


def _unwrap(loaded, path: str) -> Mapping:
  if not isinstance(loaded, Mapping):
    raise CnnjaxError(f"'{path}' holds a {type(loaded).__name__}, not a state "
                      "dict of tensors")
  for key in _WRAPPERS:
    inner = loaded.get(key)
    if isinstance(inner, Mapping) and inner:
      return inner
  return loaded


def read_state_dict(path: str, hint: str = "") -> StateDict:
  """{key: NumPy array} of a `.pth`/`.pt`/`.bin`/`.safetensors` file (or of
  the file named `hint` in a cache directory); see the module docstring."""
  path = resolve_weight_file(path, hint)
  if path.endswith(SAFETENSORS_SUFFIX):
    loaded = _read_safetensors(path)
  elif path.endswith(TORCH_SUFFIXES):
    loaded = _read_torch(path)
  else:
    raise CnnjaxError(
        f"'{path}' is neither a PyTorch file ({', '.join(TORCH_SUFFIXES)}) nor "
        f"a {SAFETENSORS_SUFFIX} file")
  state = _unwrap(loaded, path)
  out: StateDict = {}
  for key, value in state.items():
    array = _to_numpy(value)
    if array is None:
      raise CnnjaxError(f"'{path}' is not a state dict: its entry '{key}' is a "
                        f"{type(value).__name__}, not a tensor")
    key = str(key)
    if key.startswith("module."):  # Saved from DataParallel.
      key = key[len("module."):]
    out[key] = np.asarray(array)
  if not out:
    raise CnnjaxError(f"'{path}' holds no tensors")
  return out


def write_state_dict(state: Mapping[str, np.ndarray], path: str) -> str:
  """Writes a state dict as `.safetensors` (no torch needed) or `.pth`
  (torch.save of tensors), atomically; returns the path."""
  from cnnjax.runs.files import atomic_path

  path = os.path.expanduser(os.fspath(path))
  if os.path.isdir(path):
    raise CnnjaxError(f"'{path}' is a directory; name the weight file to write")
  parent = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise CnnjaxError(f"cannot create '{parent}' ({e.strerror or e})") from e
  arrays = {k: np.asarray(v, order="C") for k, v in state.items()}
  if path.endswith(SAFETENSORS_SUFFIX):
    from safetensors.numpy import save_file

    with atomic_path(path) as temporary:
      save_file(arrays, temporary)
  elif path.endswith(TORCH_SUFFIXES):
    try:
      import torch
    except ImportError as e:
      raise CnnjaxError(
          f"writing '{os.path.basename(path)}' needs PyTorch (pip install "
          f"torch); write a {SAFETENSORS_SUFFIX} file instead") from e
    tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    with atomic_path(path) as temporary:
      torch.save(tensors, temporary)
  else:
    raise CnnjaxError(f"'{path}' must end in {SAFETENSORS_SUFFIX} or "
                      f"{', '.join(TORCH_SUFFIXES)}")
  return path


def _first_line(error: BaseException, limit: int = 160) -> str:
  text = str(error).strip().splitlines()
  line = text[0] if text else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."
