"""How fast does a model train? Train-step throughput, side by side with PyTorch.

`benchmark_model` times cnnjax's own train step (`cnnjax.train.step`, the
one `cnnjax train` runs: forward, loss, backward, SGD with momentum and
weight decay, BatchNorm statistics, metrics) on one synthetic batch that
stays on the device, data-parallel over the devices as in training. It
reports:

  images_per_s     median over `repeats` timed runs of `steps` steps each
                   (by default as many as take about RUN_SECONDS, at least
                   10: a LeNet-5 step is milliseconds, and runs that short
                   time the machine's hiccups rather than the step),
                   after `warmup` steps; steps are dispatched without host
                   syncs and the run ends with one block_until_ready.
  compile_s        tracing, lowering and compiling the step.
  flops_per_image  XLA's cost analysis of the compiled step, per example.
  achieved_flops   flops_per_image * images_per_s, and `utilization`
                   against the device's peak: the datasheet's dense figure
                   for known accelerators, on a CPU a large matrix product
                   timed in the same run (what XLA's GEMM reaches there).
  peak_memory_bytes  the device's peak in use where the runtime reports it
                   (GPU, TPU), else XLA's buffer assignment for the step.

With `compare='torch'` the same network (`cnnjax.bench.torch_models`) trains
on the same batch shape in PyTorch eager, timed the same way, in both memory
layouts (channels-first and channels-last; the faster one is the reference),
in a process of its own (`torch_process.py`: one process with both
frameworks' thread pools slows each of them; `torch_process='same'` is that),
and `ratio` = images_per_s / torch_images_per_s. The timed runs then take
turns (`interleaved_rates`: one run of cnnjax and of each layout per round,
in rotating order), so that a slow spell of a shared machine falls on every
contender alike instead of on whichever was being timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.errors import CnnjaxError
from cnnjax.ops import random as random_ops

DTYPES = ("float32", "bfloat16")
# Timed runs without --steps last about this long.
RUN_SECONDS = 1.0
MIN_STEPS, MAX_STEPS = 10, 1000
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4

# Dense peak FLOP/s by device kind (datasheets): (float32, bfloat16). On
# GPUs XLA's default float32 matmul precision uses TF32 tensor cores.
DEVICE_PEAKS = {
    "H100": (494e12, 989e12),  # SXM; TF32 dense
    "H200": (494e12, 989e12),
    "A100": (156e12, 312e12),
    "L4": (60e12, 121e12),
    "TPU v4": (275e12, 275e12),
    "TPU v5 lite": (197e12, 197e12),
    "TPU v5": (459e12, 459e12),
}


@dataclasses.dataclass
class Options:
  model: str
  batch_size: int = 128
  dtype: str = "float32"
  steps: int | None = None  # None: auto_steps
  repeats: int = 5
  warmup: int = 3
  image_size: int | None = None
  num_classes: int = 10
  num_devices: int = 0
  compare: str | None = None  # 'torch'
  torch_layouts: tuple[str, ...] = ("channels_first", "channels_last")
  # 'separate': the twin trains in a child process of its own
  # (cnnjax.bench.torch_process); 'same': in this one, beside XLA.
  torch_process: str = "separate"

  def check(self) -> None:
    if self.dtype not in DTYPES:
      raise CnnjaxError(f"--dtype must be one of {', '.join(DTYPES)}, got "
                        f"{self.dtype!r}")
    for name in ("batch_size", "steps", "repeats", "num_classes"):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise CnnjaxError(f"--{name.replace('_', '-')} must be at least 1, "
                          f"got {getattr(self, name)}")
    if self.warmup < 0:
      raise CnnjaxError(f"--warmup must be >= 0, got {self.warmup}")
    if self.num_devices < 0:
      raise CnnjaxError(f"--devices must be a count of devices, or 0 for all of "
                        f"them, got {self.num_devices}")
    if self.image_size is not None and self.image_size < 1:
      raise CnnjaxError(f"--image-size must be positive, got {self.image_size}")
    if self.compare not in (None, "torch"):
      raise CnnjaxError(f"--compare knows 'torch', got {self.compare!r}")
    if self.torch_process not in ("separate", "same"):
      raise CnnjaxError(f"--torch-process must be 'separate' or 'same', got "
                        f"{self.torch_process!r}")


def input_shape(options: Options) -> tuple[int, ...]:
  from cnnjax.models.registry import model_input_dtype, model_input_shape
  shape = model_input_shape(options.model)
  if model_input_dtype(options.model) != "float32" or len(shape) != 3:
    raise CnnjaxError(f"cnnjax benchmark times image models; '{options.model}' "
                      f"takes inputs of shape {shape}")
  if options.image_size:
    shape = (options.image_size, options.image_size, shape[-1])
  return shape


def synthetic_batch(options: Options, shape) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {"image": rng.standard_normal((options.batch_size, *shape), np.float32),
          "label": rng.integers(0, options.num_classes, options.batch_size,
                                dtype=np.int32)}


def _median_rate(run, count: int, repeats: int) -> tuple[float, list[float]]:
  """Median items/s of `repeats` calls of `run()` (which processes `count`)."""
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    rates.append(count / (time.perf_counter() - start))
  return statistics.median(rates), rates


# -- cnnjax ---------------------------------------------------------------------

def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else {}
  return cost or {}


def _memory_bytes(compiled) -> int | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it.
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes +
             m.temp_size_in_bytes - m.alias_size_in_bytes)


def cpu_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of an n x n matrix product through XLA on the default device."""
  jdtype = jnp.dtype(dtype)
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jdtype)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  rate, _ = _median_rate(lambda: jax.block_until_ready(f(a)), 2 * n**3, repeats)
  return rate


def device_peak(dtype: str) -> tuple[float, str]:
  """(peak FLOP/s, where the figure comes from) for the default device."""
  device = jax.devices()[0]
  kind = device.device_kind
  for name, (f32, bf16) in DEVICE_PEAKS.items():
    if name.lower() in kind.lower():
      return (bf16 if dtype == "bfloat16" else f32), f"{kind} datasheet"
  if device.platform == "cpu":
    return cpu_matmul_peak(dtype), "measured XLA 2048x2048 matmul"
  return float("nan"), f"unknown for {kind}"


@dataclasses.dataclass
class CompiledStep:
  """cnnjax's compiled train step and what it runs on."""
  step: Any  # jax.stages.Compiled: (state, batch, rng) -> (state, metrics)
  state: Any
  batch: Any
  rng: Any
  compile_s: float
  num_devices: int
  input_shape: tuple[int, ...]

  def run(self, n: int):
    """n steps without host syncs, then one wait; returns the last metrics."""
    state, metrics = self.state, None
    for _ in range(n):
      state, metrics = self.step(state, self.batch, self.rng)
    jax.block_until_ready((state, metrics))
    self.state = state
    return metrics


def auto_steps(run, seconds: float = RUN_SECONDS) -> int:
  """Steps for a timed run of about `seconds` (MIN_STEPS to MAX_STEPS), from
  the median of three timed single steps of `run(n)`."""
  times = []
  for _ in range(3):
    start = time.perf_counter()
    run(1)
    times.append(time.perf_counter() - start)
  return int(min(MAX_STEPS, max(MIN_STEPS, math.ceil(seconds / statistics.median(times)))))


def compile_step(options: Options) -> CompiledStep:
  """Builds and compiles cnnjax's train step for `options` (synthetic data)."""
  from cnnjax.models.registry import create_model
  from cnnjax.parallel import make_data_parallel
  from cnnjax.train import losses
  from cnnjax.train import step as step_lib
  from cnnjax.train.state import TrainState

  shape = input_shape(options)
  dp = make_data_parallel(options.num_devices)
  dp.check_batch_size(options.batch_size, "--batch-size")
  overrides = {"num_classes": options.num_classes}
  if options.dtype != "float32":
    overrides["dtype"] = jnp.dtype(options.dtype)
  model = create_model(options.model, **overrides)
  example = jnp.zeros((1, *shape), jnp.float32)
  variables = random_ops.init(model, jax.random.key(0), example, train=False)
  tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY),
                   optax.sgd(LEARNING_RATE, momentum=MOMENTUM))
  state = dp.put_replicated(TrainState.create(apply_fn=model.apply,
                                              variables=variables, tx=tx))
  train_step = step_lib.make_train_step(
      lambda logits, labels: losses.softmax_cross_entropy(logits, labels),
      lambda step, opt_state: jnp.asarray(LEARNING_RATE))
  batch = dp.put_batch(synthetic_batch(options, shape))
  rng = jax.random.key(1)
  step = jax.jit(train_step, donate_argnums=0,
                 out_shardings=(dp.replicated, dp.replicated))
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  return CompiledStep(compiled, state, batch, rng, compile_s, dp.num_devices, shape)


@dataclasses.dataclass
class Timed:
  """One contender: `run()` processes `count` images (and waits for them);
  `finish(rates)` turns the timed runs' images/s into its result."""
  run: Any
  count: int
  finish: Any


def prepare_cnnjax(options: Options) -> Timed:
  """Compiles and warms up cnnjax's step; nothing is timed yet."""
  step = compile_step(options)
  cost = _cost(step.step)
  # The cost of the partitioned program is one device's share.
  flops = float(cost.get("flops", float("nan"))) * step.num_devices
  if options.warmup:
    step.run(options.warmup)
  if options.steps is None:
    options.steps = auto_steps(step.run)
  holder = []

  def finish(rates: list[float]) -> dict[str, Any]:
    rate = statistics.median(rates)
    metrics = jax.device_get(holder[-1])
    loss = float(metrics["loss"] / metrics["count"])
    stats = jax.devices()[0].memory_stats() or {}
    peak_memory = stats.get("peak_bytes_in_use") or _memory_bytes(step.step)
    peak, peak_source = device_peak(options.dtype)
    flops_per_image = flops / options.batch_size
    achieved = flops_per_image * rate
    return {
        "images_per_s": rate,
        "images_per_s_runs": rates,
        "step_ms": 1000 * options.batch_size / rate,
        "compile_s": step.compile_s,
        "flops_per_image": flops_per_image,
        "achieved_flops": achieved,
        "peak_flops": peak,
        "peak_flops_source": peak_source,
        "utilization": achieved / peak if peak == peak else None,
        "peak_memory_bytes": peak_memory,
        "final_loss": loss,
        "num_devices": step.num_devices,
        "input_shape": list(step.input_shape),
    }

  return Timed(lambda: holder.append(step.run(options.steps)),
               options.steps * options.batch_size, finish)


# -- PyTorch --------------------------------------------------------------------

def _import_torch():
  try:
    import torch
  except ImportError:
    raise CnnjaxError("--compare torch needs PyTorch, which is in the bench "
                      "extra: pip install -e '.[bench]'") from None
  return torch


def _torch_available() -> None:
  """Fails unless PyTorch can be imported, without importing it here (the
  twin may train in a process of its own)."""
  import importlib.util
  if importlib.util.find_spec("torch") is None:
    _import_torch()


def prepare_torch(options: Options, layout: str, cuda: bool | None = None) -> Timed:
  """The PyTorch twin's eager train step, on the same batch shape, warmed up
  (on a GPU if `cuda` and torch has one; None: if cnnjax's devices are GPUs)."""
  torch = _import_torch()
  from cnnjax.bench.torch_models import create_torch_model, to_torch_input

  shape = input_shape(options)
  if cuda is None:
    cuda = jax.devices()[0].platform == "gpu"
  use_cuda = cuda and torch.cuda.is_available()
  device = torch.device("cuda" if use_cuda else "cpu")
  torch.manual_seed(0)
  model = create_torch_model(options.model, options.num_classes, shape[-1])
  memory_format = (torch.channels_last if layout == "channels_last" else
                   torch.contiguous_format)
  model = model.to(device=device, memory_format=memory_format).train()
  batch = synthetic_batch(options, shape)
  images = to_torch_input(batch["image"]).to(device).contiguous(
      memory_format=memory_format)
  labels = torch.from_numpy(batch["label"].astype(np.int64)).to(device)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE,
                              momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=options.dtype == "bfloat16")
  sync = torch.cuda.synchronize if use_cuda else (lambda: None)

  def run(n):
    for _ in range(n):
      optimizer.zero_grad(set_to_none=True)
      with autocast:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
      loss.backward()
      optimizer.step()
    sync()
    return loss.detach()

  if options.warmup:
    run(options.warmup)
  losses = []

  def finish(rates: list[float]) -> dict[str, Any]:
    rate = statistics.median(rates)
    return {"images_per_s": rate, "images_per_s_runs": rates,
            "step_ms": 1000 * options.batch_size / rate,
            "device": str(device), "threads": torch.get_num_threads(),
            "pid": os.getpid(),
            "version": torch.__version__, "final_loss": losses[-1].item()}

  return Timed(lambda: losses.append(run(options.steps)),
               options.steps * options.batch_size, finish)


class TorchProcess:
  """The PyTorch twin in a child process of its own (cnnjax.bench.torch_process,
  which describes why and the protocol), started and warmed up; `timed(layout)`
  is one contender for `interleaved_rates`. Use as a context manager."""

  def __init__(self, options, layouts: tuple[str, ...], cuda: bool = False):
    from cnnjax import runtime
    request = {"options": dataclasses.asdict(options), "layouts": list(layouts),
               "cuda": cuda, "malloc_defaults": runtime.malloc_defaults_applied()}
    self.count = options.steps * options.batch_size
    self._child = subprocess.Popen(
        [sys.executable, "-m", "cnnjax.bench.torch_process"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
      self._call(request)
    except BaseException:
      self.close()
      raise

  def _call(self, message: dict[str, Any]) -> dict[str, Any]:
    try:
      self._child.stdin.write(json.dumps(message) + "\n")
      self._child.stdin.flush()
      line = self._child.stdout.readline()
    except BrokenPipeError:
      line = ""
    if not line:
      code = self._child.wait()
      raise CnnjaxError(f"the PyTorch process of --compare torch ended (exit status "
                        f"{code}) before answering; its message is above")
    return json.loads(line)

  def timed(self, layout: str):
    return Timed(run=lambda: self._call({"op": "run", "layout": layout})["seconds"],
                 count=self.count,
                 finish=lambda rates: self._call(
                     {"op": "finish", "layout": layout, "rates": rates}))

  def close(self) -> None:
    """Ends the child (end of its input) and waits for it."""
    try:
      self._child.stdin.close()
    except BrokenPipeError:
      pass
    try:
      self._child.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self._child.kill()
      self._child.wait()
    self._child.stdout.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def interleaved_rates(contenders: dict[str, Timed], repeats: int) -> dict[str, list[float]]:
  """images/s of `repeats` timed runs of each contender, taken in turns (one
  run of each per round, the order rotating every round), so that a slow
  spell of a shared machine slows every contender alike."""
  names = list(contenders)
  rates: dict[str, list[float]] = {name: [] for name in names}
  for round_ in range(repeats):
    shift = round_ % len(names)
    for name in names[shift:] + names[:shift]:
      timed = contenders[name]
      start = time.perf_counter()
      seconds = timed.run()
      if not isinstance(seconds, float):
        seconds = time.perf_counter() - start
      rates[name].append(timed.count / seconds)
  return rates


# -- the whole benchmark ----------------------------------------------------------

def environment() -> dict[str, Any]:
  """The device and versions, as `cnnjax train` records them in result.json."""
  from cnnjax.train.loop import device_description, versions
  device = device_description()
  return {"device": f"{device['platform']}: {device['kind']}",
          "device_count": device["count"], "cpu_count": device["cpu_count"],
          **versions()}


def benchmark_model(options: Options) -> dict[str, Any]:
  """cnnjax's train step for `options.model` (and PyTorch's, to compare)."""
  options = dataclasses.replace(options)  # Its steps may be chosen below.
  options.check()
  if options.compare == "torch":
    _torch_available()  # Fail before the long part.
  from cnnjax.ops import backend as conv_backend

  result = {"model": options.model, "batch_size": options.batch_size,
            "dtype": options.dtype, "repeats": options.repeats, **environment(),
            "conv_backend": conv_backend.active()}
  with contextlib.ExitStack() as stack:
    contenders = {"cnnjax": prepare_cnnjax(options)}
    result["steps"] = options.steps  # Chosen by prepare_cnnjax if it was None.
    if options.compare == "torch" and options.torch_process == "separate":
      child = stack.enter_context(
          TorchProcess(options, options.torch_layouts,
                       cuda=jax.devices()[0].platform == "gpu"))
      contenders.update({layout: child.timed(layout) for layout in options.torch_layouts})
    elif options.compare == "torch":
      for layout in options.torch_layouts:
        contenders[layout] = prepare_torch(options, layout)
    rates = interleaved_rates(contenders, options.repeats)
    result.update(contenders.pop("cnnjax").finish(rates.pop("cnnjax")))
    if not contenders:
      return result
    runs = {layout: timed.finish(rates[layout]) for layout, timed in contenders.items()}
  result["torch_process"] = options.torch_process
  best = max(runs, key=lambda k: runs[k]["images_per_s"])
  result["torch"] = runs
  result["torch_layout"] = best
  result["torch_images_per_s"] = runs[best]["images_per_s"]
  result["ratio"] = result["images_per_s"] / result["torch_images_per_s"]
  return result


def _si(value, unit="") -> str:
  if value is None or value != value:
    return "n/a"
  for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= scale:
      return f"{value / scale:.2f} {prefix}{unit}"
  return f"{value:.2f} {unit}"


def format_result(r: dict[str, Any]) -> str:
  rows = [
      ("model", f"{r['model']}  batch {r['batch_size']}  {r['dtype']}  "
                f"input {'x'.join(map(str, r['input_shape']))}"),
      ("device", f"{r['device']} x{r['num_devices']}  (jax {r['jax']}; convolutions: "
                 f"{r.get('conv_backend', 'xla')})"),
      ("train step", f"{r['images_per_s']:.1f} images/s  ({r['step_ms']:.1f} ms/step, "
                     f"median of {r['repeats']} x {r['steps']} steps"
                     + (", timed in turns with torch's)" if "torch" in r else ")")),
      ("compile", f"{r['compile_s']:.2f} s"),
      ("FLOPs/image", _si(r["flops_per_image"], "FLOP")),
      ("achieved", f"{_si(r['achieved_flops'], 'FLOP/s')}  of "
                   f"{_si(r['peak_flops'], 'FLOP/s')} ({r['peak_flops_source']}): "
                   + (f"{100 * r['utilization']:.1f}%" if r["utilization"] is not None
                      else "n/a")),
      ("peak memory", _si(r["peak_memory_bytes"], "B")),
  ]
  if "torch" in r:
    for layout, t in r["torch"].items():
      rows.append((f"torch {layout}", f"{t['images_per_s']:.1f} images/s  "
                   f"({t['step_ms']:.1f} ms/step; torch {t['version']}, "
                   f"{t['threads']} threads, {t['device']})"))
    rows.append(("ratio", f"{r['ratio']:.2f}x  (cnnjax / torch {r['torch_layout']}; "
                 f"torch in {'its own' if r['torch_process'] == 'separate' else 'the same'} "
                 f"process)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_json(result: dict[str, Any], path: str) -> None:
  with open(path, "w") as f:
    json.dump(result, f, indent=2, default=float)
    f.write("\n")
