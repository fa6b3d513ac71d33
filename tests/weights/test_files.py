"""Weight files are untrusted input: safe reading, one sentence per bad file."""

from __future__ import annotations

import builtins
import os
import sys

import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.weights import files

torch = pytest.importorskip("torch")


def _state():
  return {"conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
          "bn1.num_batches_tracked": np.array(3, np.int64)}


def test_pth_and_safetensors_read_the_same(tmp_path):
  state = _state()
  a = files.write_state_dict(state, str(tmp_path / "w.pth"))
  b = files.write_state_dict(state, str(tmp_path / "w.safetensors"))
  for path in (a, b):
    read = files.read_state_dict(path)
    assert sorted(read) == sorted(state)
    for key in state:
      assert read[key].dtype == state[key].dtype
      assert np.array_equal(read[key], state[key])
  assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]  # Atomic writes.


def test_training_wrappers_and_dataparallel_prefix_are_removed(tmp_path):
  tensor = torch.ones(2, dtype=torch.float16)
  path = str(tmp_path / "ckpt.pt")
  torch.save({"epoch": 3, "state_dict": {"module.fc.bias": tensor}}, path)
  read = files.read_state_dict(path)
  assert list(read) == ["fc.bias"] and read["fc.bias"].dtype == np.float32


class _Payload:
  """Unpickling this would create a directory: arbitrary code at load time."""

  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return (os.makedirs, (self.target,))


def test_a_file_that_needs_arbitrary_objects_is_refused(tmp_path):
  marker = str(tmp_path / "code_ran")
  path = str(tmp_path / "evil.pth")
  torch.save({"fc.weight": torch.zeros(2), "extra": _Payload(marker)}, path)
  with pytest.raises(CnnjaxError, match="could run arbitrary code, so cnnjax refuses it"):
    files.read_state_dict(path)
  assert not os.path.exists(marker)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files(tmp_path, suffix):
  path = files.write_state_dict(_state(), str(tmp_path / f"w{suffix}"))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(CnnjaxError, match="is truncated|is not a readable"):
    files.read_state_dict(path)


def test_wrong_formats(tmp_path):
  text = tmp_path / "weights.pth"
  text.write_text("not a weight file\n")
  with pytest.raises(CnnjaxError, match="is not a readable PyTorch weight file"):
    files.read_state_dict(str(text))
  other = tmp_path / "weights.npz"
  other.write_bytes(b"\0" * 10)
  with pytest.raises(CnnjaxError, match="is neither a PyTorch file"):
    files.read_state_dict(str(other))
  tensor_only = str(tmp_path / "tensor.pth")
  torch.save(torch.zeros(3), tensor_only)
  with pytest.raises(CnnjaxError, match="holds a Tensor, not a state dict"):
    files.read_state_dict(tensor_only)
  with pytest.raises(CnnjaxError, match="does not exist"):
    files.read_state_dict(str(tmp_path / "missing.pth"))
  with pytest.raises(CnnjaxError, match="must end in .safetensors"):
    files.write_state_dict(_state(), str(tmp_path / "out.txt"))


def _without_torch(monkeypatch):
  real_import = builtins.__import__

  def guarded(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
      raise ImportError("No module named 'torch'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", guarded)
  for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
    monkeypatch.delitem(sys.modules, name)


def test_safetensors_need_no_torch_and_pth_says_what_to_install(tmp_path, monkeypatch):
  st = files.write_state_dict(_state(), str(tmp_path / "w.safetensors"))
  pth = files.write_state_dict(_state(), str(tmp_path / "w.pth"))
  _without_torch(monkeypatch)
  assert np.array_equal(files.read_state_dict(st)["conv1.weight"],
                        _state()["conv1.weight"])
  with pytest.raises(CnnjaxError, match=r"needs PyTorch \(pip install torch\)"):
    files.read_state_dict(pth)
  with pytest.raises(CnnjaxError, match="write a .safetensors file instead"):
    files.write_state_dict(_state(), str(tmp_path / "out.pth"))


def test_cache_directories_resolve_by_the_twin_name(tmp_path):
  hub = tmp_path / "hub" / "checkpoints"
  hub.mkdir(parents=True)
  for name in ("resnet18-f37072fd.pth", "resnet50-0676ba61.pth"):
    (hub / name).write_bytes(b"")
  assert files.resolve_weight_file(str(tmp_path / "hub"), "resnet18").endswith(
      "resnet18-f37072fd.pth")
  hf = tmp_path / "hf" / "models--timm--seresnet50.a1_in1k" / "snapshots" / "abc"
  hf.mkdir(parents=True)
  (hf / "model.safetensors").write_bytes(b"")
  assert files.resolve_weight_file(str(tmp_path / "hf"), "seresnet50").endswith(
      "model.safetensors")
  with pytest.raises(CnnjaxError, match="holds no weight file"):
    files.resolve_weight_file(str(hub), "densenet121")
  (hub / "resnet18-other.pth").write_bytes(b"")
  with pytest.raises(CnnjaxError, match="holds 2 weight files for 'resnet18'"):
    files.resolve_weight_file(str(hub), "resnet18")
