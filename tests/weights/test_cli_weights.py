"""`cnnjax convert` and `cnnjax export --format torch` end to end: a
torchvision file becomes a run that `cnnjax eval` scores exactly as
torchvision does (its ImageNet preprocessing on a generated folder), and
the run goes back to PyTorch with strict loading and the same logits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cnnjax.cli import main
from conftest import EXPERIMENTS, import_torchvision

torch = pytest.importorskip("torch")
EVAL_CONFIG = os.path.join(EXPERIMENTS, "imagenet", "eval_torchvision.py")
SHALLOW = "--config.model.stage_sizes=(1,1,1,1)"


def _folder(root, sizes=((300, 260), (257, 400), (224, 500), (260, 260))):
  """val/<class>/<image>.jpg of three classes, of several sizes."""
  from PIL import Image

  rng = np.random.default_rng(0)
  for c in range(3):
    os.makedirs(root / "val" / f"n0{c}", exist_ok=True)
    for i, (w, h) in enumerate(sizes):
      pixels = rng.integers(0, 256, (h, w, 3), np.uint8)
      Image.fromarray(pixels).save(root / "val" / f"n0{c}" / f"{i}.jpg", quality=90)
  return str(root)


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
  """A shallow torchvision ResNet-18 of 3 classes with measured BN statistics."""
  tv = import_torchvision()
  torch.manual_seed(0)
  model = tv.models.resnet.ResNet(tv.models.resnet.BasicBlock, [1, 1, 1, 1],
                                  num_classes=3)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.momentum = None
  model.train()
  with torch.no_grad():
    model(torch.randn(8, 3, 64, 64))
  model.eval()
  path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
  torch.save(model.state_dict(), path)
  return str(path), model


def _torchvision_eval(model, data_dir):
  tv = import_torchvision()
  t = tv.transforms
  folder = tv.datasets.ImageFolder(os.path.join(data_dir, "val"), t.Compose([
      t.Resize(256), t.CenterCrop(224), t.ToTensor(),
      t.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
  images = torch.stack([x for x, _ in folder])
  labels = torch.tensor([y for _, y in folder])
  with torch.no_grad():
    logits = model(images)
  loss = torch.nn.functional.cross_entropy(logits, labels).item()
  return float((logits.argmax(1) == labels).float().mean()), loss


@pytest.mark.slow  # 4-12 s on 2 cores: the slow tier (and CI) runs it
def test_convert_then_eval_reproduces_torchvision(tmp_path, torch_file, capsys):
  path, model = torch_file
  data_dir = _folder(tmp_path)
  run = str(tmp_path / "run")
  assert main(["convert", path, "--model", "resnet18", "--out", run,
               "--config", EVAL_CONFIG, f"--config.dataset.data_dir={data_dir}",
               "--config.eval_batch_size=6", SHALLOW]) == 0
  out = capsys.readouterr()
  assert "loaded 62 tensors of torchvision.resnet18" in out.err
  config = json.load(open(os.path.join(run, "config.json")))
  assert config["model"]["num_classes"] == 3 and config["num_steps"] == 0
  assert config["reference"]["metric"] == "val/accuracy"  # torchvision's acc@1
  assert main(["eval", "--workdir", run]) == 0
  captured = capsys.readouterr()
  result = json.loads(captured.out)
  accuracy, loss = _torchvision_eval(model, data_dir)
  assert result["val/accuracy"] == pytest.approx(accuracy, abs=1e-6)
  assert result["val/loss"] == pytest.approx(loss, abs=1e-4)
  assert "Published val/accuracy: 0.69758" in captured.err
  # visualize reads a converted run too: Grad-CAM of the network on a folder
  # held in memory (one with train/; evaluation-only folders stream, and
  # visualization says so in one sentence).
  import shutil
  shutil.copytree(os.path.join(data_dir, "val"), os.path.join(data_dir, "train"))
  viewed = str(tmp_path / "viewed")
  assert main(["convert", path, "--model", "resnet18", "--out", viewed,
               "--config", EVAL_CONFIG, f"--config.dataset.data_dir={data_dir}",
               SHALLOW]) == 0
  assert main(["visualize", "gradcam", "--workdir", viewed, "--split", "val",
               "--num-examples", "2", "--out", str(tmp_path / "viz")]) == 0
  assert any(name.endswith(".png") for name in os.listdir(tmp_path / "viz"))


def test_export_torch_loads_strictly_with_the_same_logits(tmp_path, torch_file, monkeypatch):
  from cnnjax.models import create_model
  from cnnjax.runs import Run
  from cnnjax.weights import read_state_dict

  path, model = torch_file
  run = str(tmp_path / "run")
  assert main(["convert", path, "--model", "resnet18", "--out", run,
               "--config", EVAL_CONFIG, SHALLOW]) == 0
  out = str(tmp_path / "back.pth")
  # A relative --workdir, as users type it (Orbax itself takes absolute paths).
  monkeypatch.chdir(tmp_path)
  assert main(["export", "--workdir", "run", "--format", "torch", "--out", "back.pth"]) == 0
  state = read_state_dict(out)
  original = {k: v.numpy() for k, v in model.state_dict().items()}
  assert set(state) == set(original)
  assert all(np.array_equal(state[k], original[k]) for k in original
             if not k.endswith("num_batches_tracked"))
  sidecar = json.load(open(str(tmp_path / "back.json")))
  assert sidecar["builder"] == "torchvision.models.resnet18(num_classes=3)"
  tv = import_torchvision()
  again = tv.models.resnet.ResNet(tv.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3)
  again.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  again.eval()
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  converted = Run.open(run)
  fields = {k: v for k, v in converted.config.model.items() if k != "name"}
  ours = create_model("resnet18", **fields).apply(converted.variables(), x, train=False)
  with torch.no_grad():
    reference = again(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  assert np.abs(np.asarray(ours) - reference).max() <= 1e-4


def test_convert_refuses_without_writing(tmp_path, torch_file, capsys):
  path, _ = torch_file
  run = tmp_path / "run"
  assert main(["convert", path, "--model", "resnet50", "--out", str(run)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "'layer1.0.conv1.weight' has shape (64, 64, 3, 3)" in err
  assert not run.exists() and os.listdir(tmp_path) == []
  run.mkdir()
  (run / "keep.txt").write_text("data")
  assert main(["convert", path, "--model", "resnet18", "--out", str(run),
               "--config", EVAL_CONFIG, SHALLOW]) == 2
  assert "already exists" in capsys.readouterr().err
  assert os.listdir(run) == ["keep.txt"]
  assert main(["convert", path, "--model", "lenet5", "--out", str(tmp_path / "x")]) == 2
  assert "has no torchvision or timm twin" in capsys.readouterr().err
  assert main(["convert", "--list"]) == 0
  assert "densenet121-a639ec97.pth" in capsys.readouterr().out


@pytest.mark.slow
def test_a_converted_run_fine_tunes_through_transfer(tmp_path, torch_file):
  """config.transfer.init_from takes a converted run; the head of another
  class count is re-initialized, the backbone frozen."""
  path, model = torch_file
  run = str(tmp_path / "converted")
  assert main(["convert", path, "--model", "resnet18", "--out", run,
               "--config", EVAL_CONFIG, SHALLOW]) == 0
  data_dir = _folder(tmp_path / "data")
  os.rename(os.path.join(data_dir, "val"), os.path.join(data_dir, "train"))
  _folder(tmp_path / "data")
  workdir = str(tmp_path / "tuned")
  assert main(["train", "--config", EVAL_CONFIG, "--workdir", workdir,
               "--config.model.name=resnet18", SHALLOW,
               f"--config.dataset.data_dir={data_dir}",
               "--config.dataset.eval_splits=('val',)",
               f"--config.transfer.init_from={run}", "--config.transfer.freeze=backbone",
               "--config.transfer.reinit=('head',)",
               "--config.num_steps=2", "--config.num_epochs=0", "--config.batch_size=4",
               "--config.eval_every=2", "--config.checkpoint_every=2",
               "--config.log_every=1", "--config.progress_bar=false"]) == 0
  from cnnjax.runs import Run

  before = Run.open(run).variables()["params"]
  after = Run.open(workdir).variables()["params"]
  assert np.array_equal(before["stem_conv"]["kernel"], after["stem_conv"]["kernel"])
  assert not np.array_equal(before["head"]["kernel"], after["head"]["kernel"])


@pytest.mark.slow  # 4 s.
def test_a_converted_run_exports_without_its_data(tmp_path, torch_file):
  """The ImageNet folder is not here: the export builds the model from the
  run's config and records the config's normalization."""
  from cnnjax.export import load_stablehlo

  path, model = torch_file
  run = str(tmp_path / "run")
  assert main(["convert", path, "--model", "resnet18", "--out", run, "--config",
               EVAL_CONFIG, SHALLOW, "--config.dataset.image_size=64"]) == 0
  assert main(["export", "--workdir", run, "--format", "stablehlo"]) == 0
  exported = load_stablehlo(os.path.join(run, "export", "model.stablehlo"))
  assert exported.metadata["normalization"]["mean"] == [0.485, 0.456, 0.406]
  x = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    reference = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  assert np.abs(np.asarray(exported(x)) - reference).max() <= 1e-4
