"""Speed of the application heads beside torchvision's, in one process:
train-step and inference images/s of cnnjax's Faster R-CNN-style detector
and FCN-8s segmenter, and of PyTorch twins built from torchvision's parts.

    python scripts/bench_applications.py [--rounds 3] [--batch 16] [--steps 5]
        [--conv-backend xla|onednn] [--json out.json]

The twins have cnnjax's layers and settings, so the ratio compares the
frameworks, not the models:
- detector: torchvision's `FasterRCNN` on a ResNet-18 trunk cut after
  layer2 (stride 8, 128 channels, cnnjax's `feature_index=2`), one level of
  anchors (12, 24, 48 px x ratios 0.5, 1, 2), `MultiScaleRoIAlign` on that
  level (7x7, 2 samples), `TwoMLPHead` of 256, the same RPN and box-head
  sample sizes, pre/post-NMS counts and thresholds, images kept at 64 px.
- segmenter: FCN-8s on torchvision's ResNet-18 (1x1 scores of layer4, layer3
  and layer2, transposed convolutions 4/2, 4/2, 16/8), channels-last.
Both train with the optimizer of their experiment (SGD momentum 0.9 /
Adam), on scenes from cnnjax.data.scenes (64x64, up to 4 objects).

What differs, and is said in BENCHMARKS.md: torchvision's compiled ops do
not load beside the CPU torch wheel here (the `torchvision::nms`
registration is missing), so its `roi_align` runs its own pure-PyTorch
fallback `_roi_align` and `nms` is the NumPy greedy loop below (what
torchvision's CPU kernel computes). cnnjax's detector runs fixed-size NMS
inside its compiled program.

Rounds interleave the two frameworks; each figure is the median over rounds
of (steps x batch) / seconds after a warmup.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cnnjax.bench.compat import cpu_model, import_torchvision  # noqa: E402
from cnnjax.data import scenes  # noqa: E402
from cnnjax.models.registry import create_model  # noqa: E402
from cnnjax.ops import backend  # noqa: E402
from cnnjax.ops import random as random_ops  # noqa: E402
from cnnjax.train import losses  # noqa: E402
from cnnjax.train import step as step_lib  # noqa: E402
from cnnjax.train.state import TrainState  # noqa: E402

NUM_CLASSES = 4  # background + square, circle, triangle
SIZE = 64
MEAN, STD = 0.5, 0.25  # any normalisation: both sides get the same floats


def timed(fn, steps: int) -> float:
  start = time.perf_counter()
  fn(steps)
  return time.perf_counter() - start


# -- cnnjax ---------------------------------------------------------------------

class JaxBench:
  """cnnjax's driver step (train/step.py) and its jitted inference."""

  def __init__(self, model_name: str, batch: dict, tx, **model_kwargs):
    task = "detection" if model_name == "faster_rcnn" else "multiclass"
    self.model = create_model(model_name, num_classes=NUM_CLASSES, **model_kwargs)
    images = jnp.asarray(batch["image"])
    variables = random_ops.init(self.model, jax.random.key(0), images[:1], train=False)
    self.state = TrainState.create(apply_fn=self.model.apply, variables=variables, tx=tx)
    train_step = step_lib.make_train_step(
        losses.softmax_cross_entropy, lambda step, opt_state: jnp.asarray(0.0), task=task)
    self.batch = jax.tree.map(jnp.asarray, batch)
    self.rng = jax.random.key(1)
    start = time.perf_counter()
    self.step = jax.jit(train_step, donate_argnums=0).lower(
        self.state, self.batch, self.rng).compile()
    self.compile_s = time.perf_counter() - start
    self.infer = jax.jit(lambda v, x: self.model.apply(v, x, train=False))

  def train(self, steps: int):
    state, metrics = self.state, None
    for _ in range(steps):
      state, metrics = self.step(state, self.batch, self.rng)
    jax.block_until_ready((state, metrics))
    self.state = state

  def inference(self, steps: int):
    out = None
    for _ in range(steps):
      out = self.infer(self.state.variables, self.batch["image"])
    jax.block_until_ready(out)


# -- PyTorch --------------------------------------------------------------------

def torch_detector(torch, torchvision):
  from torch import nn
  from torchvision.models.detection import FasterRCNN
  from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
  from torchvision.models.detection.rpn import AnchorGenerator
  from torchvision.ops import MultiScaleRoIAlign

  trunk = torchvision.models.resnet18(weights=None)
  body = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1,
                       trunk.layer2)
  body.out_channels = 128
  return FasterRCNN(
      body,
      rpn_anchor_generator=AnchorGenerator(sizes=((12, 24, 48),),
                                           aspect_ratios=((0.5, 1.0, 2.0),)),
      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
      box_head=TwoMLPHead(128 * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, NUM_CLASSES),
      num_classes=None, min_size=SIZE, max_size=SIZE,
      image_mean=[MEAN] * 3, image_std=[STD] * 3,
      rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=300,
      rpn_post_nms_top_n_train=200, rpn_post_nms_top_n_test=100,
      rpn_batch_size_per_image=256, box_batch_size_per_image=128,
      box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100)


def torch_fcn8s(torch, torchvision):
  from torch import nn

  class FCN8s(nn.Module):
    """cnnjax's fcn (variant 8s, resnet18) in PyTorch."""

    def __init__(self, k):
      super().__init__()
      t = torchvision.models.resnet18(weights=None)
      self.stem = nn.Sequential(t.conv1, t.bn1, t.relu, t.maxpool, t.layer1, t.layer2)
      self.layer3, self.layer4 = t.layer3, t.layer4
      self.score = nn.Conv2d(512, k, 1)
      self.score16, self.score8 = nn.Conv2d(256, k, 1), nn.Conv2d(128, k, 1)
      self.up32 = nn.ConvTranspose2d(k, k, 4, 2, 1, bias=False)
      self.up16 = nn.ConvTranspose2d(k, k, 4, 2, 1, bias=False)
      self.up_final = nn.ConvTranspose2d(k, k, 16, 8, 4, bias=False)

    def forward(self, x):
      c8 = self.stem(x)
      c16 = self.layer3(c8)
      c32 = self.layer4(c16)
      y = self.up32(self.score(c32)) + self.score16(c16)
      y = self.up16(y) + self.score8(c8)
      return self.up_final(y)

  return FCN8s(NUM_CLASSES).to(memory_format=torch.channels_last)


class TorchBench:
  def __init__(self, torch, model, batch: dict, optimizer, detection: bool):
    self.torch, self.model, self.optimizer, self.detection = torch, model, optimizer, detection
    images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
    if detection:
      self.images = list(images)
      self.targets = [{"boxes": torch.from_numpy(b[c > 0]),
                       "labels": torch.from_numpy(c[c > 0].astype(np.int64))}
                      for b, c in zip(batch["boxes"], batch["label"])]
    else:
      self.images = images.contiguous(memory_format=torch.channels_last)
      self.labels = torch.from_numpy(batch["label"].astype(np.int64))

  def train(self, steps: int):
    self.model.train()
    for _ in range(steps):
      self.optimizer.zero_grad(set_to_none=True)
      if self.detection:
        loss = sum(self.model(self.images, self.targets).values())
      else:
        loss = self.torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
      loss.backward()
      self.optimizer.step()

  def inference(self, steps: int):
    self.model.eval()
    with self.torch.inference_mode():
      for _ in range(steps):
        self.model(self.images)


def parameter_counts(jax_bench: JaxBench, torch_model) -> tuple[int, int]:
  ours = sum(x.size for x in jax.tree.leaves(jax_bench.state.params))
  theirs = sum(p.numel() for p in torch_model.parameters())
  return ours, theirs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  parser.add_argument("--conv-backend", default="xla", choices=("xla", "onednn"))
  parser.add_argument("--only", choices=("detector", "segmenter"))
  parser.add_argument("--json")
  args = parser.parse_args(argv)
  backend.set_conv_backend(args.conv_backend)
  import torch
  torchvision = import_torchvision(numpy_nms=True)

  s = scenes.make_scenes("shapes", args.batch, image_size=SIZE, seed=0)
  image = ((s["image"].astype(np.float32) / 255.0) - MEAN) / STD
  results = {"cpu": cpu_model(),
             "batch": args.batch,
             "steps": args.steps, "rounds": args.rounds, "conv_backend": args.conv_backend,
             "jax": jax.__version__, "torch": torch.__version__,
             "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
             "models": {}}
  benches = {}
  if args.only in (None, "detector"):
    batch = {"image": image, "label": s["classes"], "boxes": s["boxes"]}
    ours = JaxBench("faster_rcnn", batch, optax.sgd(0.02, momentum=0.9), backbone="resnet18")
    model = torch_detector(torch, torchvision)
    theirs = TorchBench(torch, model, batch,
                        torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9), True)
    benches["faster_rcnn (resnet18, stride 8)"] = (ours, theirs, model)
  if args.only in (None, "segmenter"):
    batch = {"image": image, "label": s["mask"]}
    ours = JaxBench("fcn", batch, optax.adam(1e-3), backbone="resnet18", variant="8s")
    model = torch_fcn8s(torch, torchvision)
    theirs = TorchBench(torch, model, batch, torch.optim.Adam(model.parameters(), lr=1e-3),
                        False)
    benches["fcn 8s (resnet18)"] = (ours, theirs, model)

  print(f"{results['cpu']}, {results['threads']} torch threads, conv backend "
        f"{args.conv_backend}, batch {args.batch}, {args.rounds} rounds of {args.steps} steps",
        flush=True)
  for name, (ours, theirs, model) in benches.items():
    counts = parameter_counts(ours, model)
    rates = {key: [] for key in ("cnnjax train", "torch train", "cnnjax inference",
                                 "torch inference")}
    for bench in (ours, theirs):  # warmup: compiles, allocator, first NMS
      bench.train(2)
      bench.inference(2)
    for _ in range(args.rounds):
      for label, bench in (("cnnjax", ours), ("torch", theirs)):
        rates[f"{label} train"].append(args.steps * args.batch / timed(bench.train, args.steps))
        rates[f"{label} inference"].append(
            args.steps * args.batch / timed(bench.inference, args.steps))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    results["models"][name] = {
        "parameters": {"cnnjax": counts[0], "torch": counts[1]},
        "compile_s": ours.compile_s, "images_per_s": medians, "runs": rates,
        "ratio_train": medians["cnnjax train"] / medians["torch train"],
        "ratio_inference": medians["cnnjax inference"] / medians["torch inference"]}
    r = results["models"][name]
    print(f"{name}: parameters cnnjax {counts[0]:,} / torch {counts[1]:,}; "
          f"train img/s {medians['cnnjax train']:.1f} vs {medians['torch train']:.1f} "
          f"(ratio {r['ratio_train']:.2f}); inference img/s "
          f"{medians['cnnjax inference']:.1f} vs {medians['torch inference']:.1f} "
          f"(ratio {r['ratio_inference']:.2f}); train-step compile {ours.compile_s:.1f} s",
          flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
