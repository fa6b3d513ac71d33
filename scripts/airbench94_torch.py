"""airbench94 in PyTorch on the CPU: the reference the cnnjax experiment
(experiments/cifar10/airbench94.py) is measured against on the same data.

Written from the description of Jordan (2024), "94% on CIFAR-10 in 3.29
Seconds on a Single GPU", and the hyperparameters of its published script,
with every piece of the recipe: whitening layer from 5,000 training images
(its bias trained for 3 epochs, then frozen), Dirac-started convolutions,
BatchNorm without scale (running statistics keep 60% per batch), norm biases
at 64 times the learning rate, Nesterov SGD, the triangular schedule, label
smoothing 0.2, alternating flips, 2-pixel reflected translations, lookahead
averaging every 5 steps, and test-time flips plus 1-pixel translations.
float32 and channels-last on the CPU instead of float16 on a GPU.

Its purpose: to tell what the recipe itself reaches on the JPEG copy of
CIFAR-10 in ../shared/data (an ImageFolder tree), so that the cnnjax
experiment's figure can be read against the data rather than against the
paper's 94.01% on the original images.

    python scripts/airbench94_torch.py --data-dir /tmp/data --seeds 0 1 2 \
        --out airbench94_torch.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from cnnjax.bench.compat import cpu_model

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
           "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

HYP = dict(epochs=9.9, batch_size=1024, lr=11.5, momentum=0.85, weight_decay=0.0153,
           bias_scaler=64.0, label_smoothing=0.2, whiten_bias_epochs=3,
           translate=2, widths=(64, 256, 256), bn_keep=0.6, head_scale=1 / 9)


def load_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (N, 32, 32, 3) images and int64 labels of root/split/<class>/*."""
  from PIL import Image
  images, labels = [], []
  for label, name in enumerate(CLASSES):
    folder = os.path.join(root, split, name)
    for file in sorted(os.listdir(folder)):
      with Image.open(os.path.join(folder, file)) as image:
        images.append(np.asarray(image.convert("RGB")))
      labels.append(label)
  return np.stack(images), np.asarray(labels, np.int64)


def build(torch, nn):
  widths = HYP["widths"]

  class Norm(nn.BatchNorm2d):
    def __init__(self, channels):
      # torch's momentum is the weight of the new batch.
      super().__init__(channels, eps=1e-12, momentum=1 - HYP["bn_keep"])
      self.weight.requires_grad = False

  class Conv(nn.Conv2d):
    def __init__(self, cin, cout):
      super().__init__(cin, cout, 3, padding="same", bias=False)
      with torch.no_grad():
        nn.init.dirac_(self.weight[:cin])

  class Group(nn.Module):
    def __init__(self, cin, cout):
      super().__init__()
      self.conv1, self.norm1 = Conv(cin, cout), Norm(cout)
      self.conv2, self.norm2 = Conv(cout, cout), Norm(cout)
      self.pool, self.act = nn.MaxPool2d(2), nn.GELU()

    def forward(self, x):
      x = self.act(self.norm1(self.pool(self.conv1(x))))
      return self.act(self.norm2(self.conv2(x)))

  class Scale(nn.Module):
    def forward(self, x):
      return x * HYP["head_scale"]

  whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
  whiten.weight.requires_grad = False
  return nn.Sequential(whiten, nn.GELU(), Group(24, widths[0]), Group(widths[0], widths[1]),
                       Group(widths[1], widths[2]), nn.MaxPool2d(3), nn.Flatten(),
                       nn.Linear(widths[2], 10, bias=False), Scale())


def whiten_(torch, layer, images, eps=5e-4):
  """The whitening filters: eigenvectors of the 2x2 patches' covariance over
  sqrt(eigenvalue + eps), and their negatives."""
  patches = images.unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H', W', 2, 2
  patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
  covariance = patches.T @ patches / len(patches)
  values, vectors = torch.linalg.eigh(covariance)
  values, vectors = values.flip(0), vectors.T.flip(0)
  filters = (vectors / torch.sqrt(values + eps)[:, None]).reshape(12, 3, 2, 2)
  with torch.no_grad():
    layer.weight.copy_(torch.cat([filters, -filters]).float())
    layer.bias.zero_()


def train_one(torch, nn, data, seed: int, threads: int) -> dict:
  torch.manual_seed(seed)
  generator = torch.Generator().manual_seed(seed)
  train_x, train_y, test_x, test_y = data
  batch_size, momentum = HYP["batch_size"], HYP["momentum"]
  steps_per_epoch = len(train_x) // batch_size
  total = math.ceil(steps_per_epoch * HYP["epochs"])
  kilostep = 1024 * (1 + 1 / (1 - momentum))
  lr = HYP["lr"] / kilostep  # for the summed loss
  wd = HYP["weight_decay"] * batch_size / kilostep
  lr_bias = lr * HYP["bias_scaler"]

  model = build(torch, nn).to(memory_format=torch.channels_last)
  whiten_(torch, model[0], train_x[:5000])
  norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
  others = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
  optimizer = torch.optim.SGD(
      [dict(params=norm_biases, lr=lr_bias, weight_decay=wd / lr_bias),
       dict(params=others, lr=lr, weight_decay=wd / lr)],
      momentum=momentum, nesterov=True)
  warm = int(total * 0.23)

  def factor(step):
    if step < warm:
      return 0.2 + 0.8 * step / warm
    return 1.0 - 0.93 * (step - warm) / (total - warm)

  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
  loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="sum")
  alphas = 0.95 ** 5 * (torch.arange(total + 1) / total) ** 3
  slow = {k: v.clone() for k, v in model.state_dict().items()}

  def lookahead(decay):
    with torch.no_grad():
      for key, value in model.state_dict().items():
        if value.dtype.is_floating_point:
          slow[key].lerp_(value, 1 - decay)
          value.copy_(slow[key])

  # One random flip per image, applied on even epochs and undone on odd ones.
  flipped = torch.rand(len(train_x), generator=generator) < 0.5
  base = torch.where(flipped[:, None, None, None], train_x.flip(-1), train_x)
  pad = HYP["translate"]
  padded = torch.nn.functional.pad(base, (pad,) * 4, mode="reflect")
  step, start, log = 0, time.perf_counter(), []
  for epoch in range(math.ceil(HYP["epochs"])):
    model[0].bias.requires_grad = epoch < HYP["whiten_bias_epochs"]
    order = torch.randperm(len(train_x), generator=generator)
    model.train()
    losses, correct, seen = 0.0, 0, 0
    for b in range(steps_per_epoch):
      index = order[b * batch_size:(b + 1) * batch_size]
      dx = torch.randint(0, 2 * pad + 1, (len(index),), generator=generator)
      dy = torch.randint(0, 2 * pad + 1, (len(index),), generator=generator)
      rows = (dy[:, None] + torch.arange(32))[:, None, :, None]
      cols = (dx[:, None] + torch.arange(32))[:, None, None, :]
      batch = padded[index[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
      if epoch % 2 == 1:
        batch = batch.flip(-1)
      batch = batch.contiguous(memory_format=torch.channels_last)
      labels = train_y[index]
      outputs = model(batch)
      loss = loss_fn(outputs, labels)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      scheduler.step()
      step += 1
      losses += loss.item()
      correct += (outputs.argmax(1) == labels).sum().item()
      seen += len(labels)
      if step % 5 == 0:
        lookahead(alphas[step].item())
      if step >= total:
        lookahead(1.0)
        break
    log.append(dict(epoch=epoch + 1, step=step, train_loss=losses / seen,
                    train_accuracy=correct / seen, seconds=time.perf_counter() - start))
    print(json.dumps(log[-1]), flush=True)
    if step >= total:
      break
  train_seconds = time.perf_counter() - start
  accuracy = {level: evaluate(torch, model, test_x, test_y, level) for level in (0, 1, 2)}
  return dict(seed=seed, steps=total, train_seconds=train_seconds, threads=threads,
              test_accuracy=accuracy[2], test_accuracy_by_tta_level=accuracy, epochs=log)


def evaluate(torch, model, images, labels, tta_level: int) -> float:
  model.eval()

  def mirror(x):
    return 0.5 * model(x) + 0.5 * model(x.flip(-1))

  def views(x):
    if tta_level == 0:
      return model(x)
    if tta_level == 1:
      return mirror(x)
    padded = torch.nn.functional.pad(x, (1,) * 4, mode="reflect")
    shifted = 0.5 * mirror(padded[:, :, :32, :32]) + 0.5 * mirror(padded[:, :, 2:, 2:])
    return 0.5 * mirror(x) + 0.5 * shifted

  with torch.no_grad():
    logits = torch.cat([views(x.contiguous(memory_format=torch.channels_last))
                        for x in images.split(1000)])
  return (logits.argmax(1) == labels).float().mean().item()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True, help="ImageFolder tree with train/ and test/")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--out", default="", help="write the runs as JSON here")
  args = parser.parse_args(argv)
  try:
    import torch
    from torch import nn
  except ImportError:
    print("airbench94_torch needs PyTorch: pip install -e '.[bench]'", file=sys.stderr)
    return 2
  for split in ("train", "test"):
    if not os.path.isdir(os.path.join(args.data_dir, split)):
      print(f"{args.data_dir} has no {split}/ folder of class folders", file=sys.stderr)
      return 2
  torch.set_num_threads(args.threads)
  start = time.perf_counter()
  splits = [load_split(args.data_dir, split) for split in ("train", "test")]
  mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]

  def tensors(images, labels):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - mean) / std, torch.from_numpy(labels)

  data = (*tensors(*splits[0]), *tensors(*splits[1]))
  print(f"decoded {len(data[0])} + {len(data[2])} images in "
        f"{time.perf_counter() - start:.1f} s", flush=True)
  runs = []
  for seed in args.seeds:
    runs.append(train_one(torch, nn, data, seed, args.threads))
    print(json.dumps({k: v for k, v in runs[-1].items() if k != "epochs"}), flush=True)
  accuracies = [run["test_accuracy"] for run in runs]
  summary = dict(runs=runs, mean_test_accuracy=float(np.mean(accuracies)),
                 torch=torch.__version__, cpu=cpu_model(),
                 threads=args.threads, command=" ".join(sys.argv))
  print(f"mean test accuracy (TTA level 2) over {len(runs)} seeds: "
        f"{100 * summary['mean_test_accuracy']:.2f}%")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
