"""Experiment configs: loading, command-line overrides, validation, durations.

An experiment is a Python file with a `get_config()` function returning an
`ml_collections.ConfigDict`. Experiments start from `base_config()`, which
defines every key the train loop reads, so that the returned config can be
locked and a misspelt override is caught instead of silently ignored.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import math
import os
from typing import Any, Sequence

import ml_collections

from cnnjax.errors import CnnjaxError

# Keys that may change between a run and its resumption without invalidating
# its checkpoints: durations and bookkeeping, never the model or the data.
PRECISIONS = ("float32", "bfloat16", "float16")

RESUMABLE_KEYS = ("num_steps", "num_epochs", "log_every", "eval_every",
                  "checkpoint_every", "keep_checkpoints", "progress_bar",
                  # The same global batch on other devices: the same run.
                  "parallel.num_devices", "parallel.distributed",
                  # What the run aims at and how `reproduce` reports it, and
                  # keys that only smoke runs read.
                  "reference.*", "reproduce.*", "smoke_image_size",
                  "dataset.smoke_data")


def is_resumable(key: str) -> bool:
  """Whether a flat config key may change without invalidating checkpoints."""
  # 'reproduce.*' also covers 'reproduce' itself, which is how a group that
  # a config written by an older cnnjax lacks shows up.
  return any(key == k or (k.endswith(".*") and (key == k[:-2] or key.startswith(k[:-1])))
             for k in RESUMABLE_KEYS)


def base_config() -> ml_collections.ConfigDict:
  """Every key the train loop understands, with defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = ""  # A name from `cnnjax models`; other keys are overrides.

  # The data (see cnnjax/data/__init__.py for the sources and their keys).
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = ""  # `cnnjax.data.list_datasets()`, or any TFDS name
  c.dataset.data_dir = ""  # '' = the source's default (TFDS: ~/tensorflow_datasets)
  c.dataset.download = False  # fetch the data if it is missing (TFDS, MedMNIST)
  # Splits: '' / () take the source's own (TFDS: 'train' and 'test'). TFDS
  # slicing works ('train[:90%]'); 'NAME=SPEC' names an evaluation split,
  # e.g. ('validation=train[90%:]', 'test').
  c.dataset.train_split = ""
  c.dataset.eval_splits = ()
  c.dataset.subset = ""  # MedMNIST: the flag, e.g. 'pathmnist'
  c.dataset.image_size = 0  # 0: as stored; else resize (square) when loading
  # Data no larger than this (MiB, as stored) is held on the device and
  # batched inside the jitted step; larger data streams from the host.
  c.dataset.max_device_mb = 4096
  c.dataset.shuffle_buffer = 16_384  # tf.data streams only
  # Per-channel normalization of images stored as uint8, in [0, 1] units;
  # () computes them from the training split (ImageNet's for imagenet2012).
  c.dataset.mean = ()
  c.dataset.std = ()
  # Text (mr, text_file): k-fold cross-validation and the vocabulary.
  c.dataset.fold = 0
  c.dataset.num_folds = 10
  c.dataset.split_seed = 0
  c.dataset.min_count = 1
  c.dataset.max_length = 0  # 0: the longest training sentence
  c.dataset.pad = 4  # zeros at each end (Kim: filter height - 1)
  c.dataset.vocab_from = "train"
  # Keep only these classes (in-memory datasets), renumbered 0..k-1 in this
  # order, e.g. (5, 6, 7, 8, 9); () keeps all.
  c.dataset.classes = ()
  # Smoke runs only: 'auto' uses the real data when it is on this machine and
  # otherwise a generated stand-in of the same shapes, classes and task
  # (cnnjax/data/standin.py); 'synthetic' always uses the stand-in; 'real'
  # never does (a missing dataset is then an error, as in a full run).
  c.dataset.smoke_data = "auto"

  c.batch_size = 128  # Global batch, over all devices.
  c.eval_batch_size = 1000
  # Gradient accumulation: each step averages the gradients of this many
  # equal micro-batches of batch_size / grad_accum_steps (less memory, the
  # same update; BatchNorm sees the micro-batches).
  c.grad_accum_steps = 1

  # Devices (see cnnjax/parallel.py): the global batch is split over a 1-D
  # 'data' mesh; parameters are replicated and XLA all-reduces the gradients.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 0  # 0: every device (of every process)
  # 'global': BatchNorm statistics of the whole global batch (synchronised,
  # the same numbers as one device); 'per_device': each device normalises
  # with its own shard's statistics (pmap-style) and the running averages
  # are averaged over the devices.
  c.parallel.batch_norm = "global"
  c.parallel.distributed = False  # call jax.distributed.initialize() (multi-host)

  # Mixed precision: the computation dtype of the model (parameters, the
  # optimizer and the loss stay float32). float16 uses dynamic loss scaling.
  c.precision = "float32"  # float32 | bfloat16 | float16
  c.loss_scale = ml_collections.ConfigDict()
  c.loss_scale.initial = 2.0 ** 15
  c.loss_scale.growth_interval = 2000  # finite steps before the scale doubles
  c.loss_scale.backoff = 0.5  # factor after a non-finite step (then skipped)

  # An exponential moving average of the weights (and BatchNorm statistics),
  # evaluated beside the raw weights as '<split>_ema/<metric>'. 0: off.
  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.0
  c.ema.warmup = True  # decay min(decay, (1 + step) / (10 + step)) early on

  # Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training images:
  # lam ~ Beta(alpha, alpha) per batch, the partner is the reversed batch.
  c.mix = ml_collections.ConfigDict()
  c.mix.mixup_alpha = 0.0
  c.mix.cutmix_alpha = 0.0
  c.mix.switch_prob = 0.5  # with both: the chance a batch uses cutmix
  c.mix.prob = 1.0  # the chance a batch is mixed at all
  # Duration: exactly one of num_steps / num_epochs is positive.
  c.num_steps = 0
  c.num_epochs = 0.0

  # On-device augmentation of training images (see cnnjax/data/augment.py).
  # Applied in this order; each is off at its default.
  c.augment = ml_collections.ConfigDict()
  c.augment.crop_scale = ()  # random resized crop: area fraction range, e.g. (0.08, 1.0)
  c.augment.crop_ratio = (3 / 4, 4 / 3)  # ... and aspect-ratio range
  c.augment.rotate = 0.0  # random rotation of up to this many degrees
  c.augment.translate = 0  # random shift of up to this many pixels per axis
  c.augment.translate_mode = "edge"  # border: edge | constant (zeros) | reflect
  c.augment.flip = False  # random left-right mirror
  c.augment.brightness = 0.0  # colour jitter, torchvision's factors
  c.augment.contrast = 0.0
  c.augment.saturation = 0.0
  # Test-time augmentation in evaluation: softmax averaged over the views
  # (the image, its 4 diagonal shifts by tta_shift pixels, and mirrors).
  c.augment.tta_flip = False
  c.augment.tta_shift = 0

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "softmax_cross_entropy"
  c.loss.label_smoothing = 0.0
  c.loss.margin = 1.0  # multiclass_hinge only
  # Weight of each auxiliary classifier's loss, for models that return
  # (logits, aux_logits, ...) in training (GoogLeNet: 0.3).
  c.loss.aux_weight = 0.3

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9  # momentum, nesterov
  c.optimizer.b1 = 0.9  # adam, adamw
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.decay = 0.9  # rmsprop: decay of the squared-gradient average
  c.optimizer.rho = 0.9  # adadelta
  # L2 weight decay (coupled, added to the gradient; decoupled for adamw) and
  # an L1 penalty added to the loss. 'all' decays every parameter (PyTorch's
  # default), 'kernels' only those with two or more dimensions.
  c.optimizer.weight_decay = 0.0
  c.optimizer.weight_decay_mask = "all"
  c.optimizer.l1 = 0.0
  # Max-norm constraint (Kim 2014: 3 on the output layer): after every update
  # each unit's incoming weight vector in the named Dense layers is rescaled
  # to L2 norm <= max_norm. 0 turns it off.
  c.optimizer.max_norm = 0.0
  c.optimizer.max_norm_layers = "head"
  # Clip the raw gradients to this global L2 norm before anything else. 0: off.
  c.optimizer.clip_norm = 0.0
  # Per-parameter learning rates: 'REGEX=FACTOR' strings; the first regex that
  # matches a parameter's path ('c1/kernel', 'stage3/block0/conv1/kernel')
  # scales its updates by FACTOR (0 freezes it); unmatched parameters get 1.
  c.optimizer.lr_multipliers = ()

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "constant"  # constant|step|multistep|cosine|linear|plateau
  c.schedule.warmup_steps = 0
  c.schedule.warmup_epochs = 0.0
  c.schedule.step_size = 0  # step: decay every step_size steps
  c.schedule.step_size_epochs = 0.0
  c.schedule.boundaries = ()  # multistep, in steps
  c.schedule.boundary_epochs = ()  # multistep, in epochs
  c.schedule.gamma = 0.1  # step, multistep: factor at each boundary
  c.schedule.end_factor = 0.0  # cosine, linear: final lr / initial lr
  c.schedule.patience = 10  # plateau, in epochs (of train-loss averages)
  c.schedule.cooldown = 0
  c.schedule.factor = 0.1

  # Transfer learning (see cnnjax/train/transfer.py): start from another
  # run's checkpoint; arrays whose path and shape match are copied.
  c.transfer = ml_collections.ConfigDict()
  c.transfer.init_from = ""  # '' = off; a workdir, or one checkpoint step's directory
  c.transfer.init_step = "latest"  # latest | best | a step number
  c.transfer.reinit = ()  # top-level modules to re-initialise anyway, e.g. ('head',)
  # 'backbone': every loaded parameter is frozen (a fixed feature extractor);
  # 'none': all train, the loaded ones at backbone_lr_factor times the rate.
  # An optimizer.lr_multipliers rule that matches a loaded parameter wins.
  c.transfer.freeze = "none"
  c.transfer.backbone_lr_factor = 1.0

  c.log_every = 100
  c.eval_every = 1000  # 0: evaluate only at the end
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.best_metric = "test/accuracy"  # '' disables best-checkpoint tracking
  c.best_mode = "max"
  c.progress_bar = True

  # What the experiment aims at: the published number it reproduces.
  c.reference = ml_collections.ConfigDict()
  c.reference.metric = ""  # e.g. 'test/accuracy'
  c.reference.value = 0.0
  c.reference.source = ""
  # More published figures of the same run, as 'METRIC=VALUE' strings, e.g.
  # ('test/accuracy=0.907',) beside a test/auc reference.
  c.reference.others = ()

  # How `cnnjax reproduce` runs the experiment (see cnnjax/reproduce.py).
  c.reproduce = ml_collections.ConfigDict()
  c.reproduce.seeds = 1  # seeds when --seeds is not given
  # 'KEY=V1,V2,...' strings: runs over these settings are pooled into one
  # figure, their mean (Kim 2014's 10 folds: 'dataset.fold=0,1,...,9').
  c.reproduce.average_over = ()
  # 'KEY=V1,V2,...' strings: each setting (their cross product) is one row
  # of the result card (the material's claims: plain vs residual, ...).
  c.reproduce.compare = ()
  # One sentence on how this run departs from the paper (budget, data).
  c.reproduce.note = ""
  # An experiment id (e.g. 'digits/lenet5_first5') reproduced first; its
  # seed-0 run becomes this experiment's transfer.init_from.
  c.reproduce.init_from_experiment = ""
  # A check run on the finished runs, adding figures to the card (see
  # cnnjax/analysis/claims.py: 'ensemble', 'shift_invariance', ...).
  c.reproduce.analysis = ""

  # Shrinks any experiment to a few seconds (tests, `reproduce --smoke`).
  c.smoke = False
  c.smoke_steps = 12
  c.smoke_image_size = 64  # smoke runs cap dataset.image_size at this
  return c


# --------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """Imports the experiment file at `path` and returns its locked config."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CnnjaxError(f"config file '{path}' does not exist")
  module_name = "cnnjax_experiment_" + os.path.splitext(
      os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except CnnjaxError:
    raise
  except Exception as e:  # A syntax or import error in the user's file.
    raise CnnjaxError(
        f"config file '{path}' failed to load: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise CnnjaxError(f"config file '{path}' has no get_config() function")
  config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise CnnjaxError(
        f"get_config() in '{path}' must return an ml_collections.ConfigDict")
  config.lock()
  return config


def module_from(this_file: str, sibling: str):
  """Imports a sibling Python file of an experiment (shared tables, helpers)."""
  path = os.path.join(os.path.dirname(this_file), sibling)
  name = "cnnjax_experiment_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_from(this_file: str, sibling: str) -> ml_collections.ConfigDict:
  """Loads a sibling experiment, for configs derived from another one."""
  config = load_config(os.path.join(os.path.dirname(this_file), sibling))
  config.unlock()
  return config


# --------------------------------------------------------------------------
# Overrides: --config.a.b=value


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += _flat_keys(v, prefix + k + ".")
    else:
      keys.append(prefix + k)
  return keys


def _parse_value(text: str, current: Any, key: str) -> Any:
  """Turns the text of an override into a value of the field's type."""
  if isinstance(current, bool):
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise CnnjaxError(f"--config.{key} expects true or false, got '{text}'")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, int):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise CnnjaxError(f"--config.{key} expects an integer, got '{text}'")
  if isinstance(current, float):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise CnnjaxError(f"--config.{key} expects a number, got '{text}'")
  if isinstance(current, (tuple, list)):
    if not text.strip():
      return ()
    if isinstance(value, (tuple, list)):
      return tuple(value)
    # '1,2,3' parses as a tuple above; what is left is one item or bare words.
    return tuple(_literal_or_text(t) for t in text.split(",") if t.strip())
  return value  # None or another type: take the literal as it is.


def _literal_or_text(text: str) -> Any:
  try:
    return ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    return text.strip()


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies 'a.b=value' (or '--config.a.b=value') strings to `config`."""
  known = _flat_keys(config)
  for item in overrides:
    text = item[len("--config."):] if item.startswith("--config.") else item
    if "=" not in text:
      raise CnnjaxError(
          f"override '{item}' needs a value, as in --config.{text}=VALUE")
    key, raw = text.split("=", 1)
    if key.startswith("model.") and key.count(".") == 1 and key not in known:
      # Any field of the model may be overridden; create_model checks the name.
      with config.model.unlocked():
        config.model[key.split(".")[1]] = _literal_or_text(raw)
      continue
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean '{close[0]}'?" if close else ""
      raise CnnjaxError(f"unknown config key '{key}'{hint}")
    set_value(config, key, _parse_value(raw, get_value(config, key), key))
  return config


def _parent(config: ml_collections.ConfigDict, key: str):
  *path, leaf = key.split(".")
  for part in path:
    config = config[part]
  return config, leaf


def get_value(config: ml_collections.ConfigDict, key: str) -> Any:
  """config['a.b.c'] for a dotted key (ml_collections has no dotted access)."""
  parent, leaf = _parent(config, key)
  return parent[leaf]


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets a dotted key; the value's type may differ (e.g. a tuple for a list)."""
  parent, leaf = _parent(config, key)
  with parent.ignore_type():
    parent[leaf] = value


# --------------------------------------------------------------------------
# Validation and durations


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises CnnjaxError for values that cannot work, before any work starts."""
  if not config.model.name:
    raise CnnjaxError("config.model.name is empty; see `cnnjax models`")
  if not config.dataset.name:
    raise CnnjaxError("config.dataset.name is empty")
  if config.batch_size <= 0:
    raise CnnjaxError(f"config.batch_size must be positive, got {config.batch_size}")
  if config.eval_batch_size <= 0:
    raise CnnjaxError(
        f"config.eval_batch_size must be positive, got {config.eval_batch_size}")
  if (config.num_steps > 0) == (config.num_epochs > 0):
    raise CnnjaxError("set exactly one of config.num_steps and config.num_epochs "
                      f"to a positive value (got {config.num_steps} and "
                      f"{config.num_epochs})")
  if config.num_steps < 0 or config.num_epochs < 0:
    raise CnnjaxError("config.num_steps and config.num_epochs cannot be negative")
  if config.optimizer.learning_rate <= 0:
    raise CnnjaxError("config.optimizer.learning_rate must be positive, got "
                      f"{config.optimizer.learning_rate}")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if config[key] <= 0:
      raise CnnjaxError(f"config.{key} must be positive, got {config[key]}")
  if config.eval_every < 0:
    raise CnnjaxError(f"config.eval_every cannot be negative, got {config.eval_every}")
  if config.best_mode not in ("max", "min"):
    raise CnnjaxError(f"config.best_mode must be 'max' or 'min', got '{config.best_mode}'")
  if config.optimizer.weight_decay < 0 or config.optimizer.l1 < 0:
    raise CnnjaxError("weight_decay and l1 must be non-negative")
  if config.optimizer.max_norm < 0 or config.loss.aux_weight < 0:
    raise CnnjaxError("config.optimizer.max_norm and config.loss.aux_weight "
                      "must be non-negative")
  if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
    raise CnnjaxError(
        f"config.grad_accum_steps ({config.grad_accum_steps}) must be a positive "
        f"divisor of config.batch_size ({config.batch_size})")
  if config.parallel.batch_norm not in ("global", "per_device"):
    raise CnnjaxError("config.parallel.batch_norm must be 'global' or "
                      f"'per_device', got '{config.parallel.batch_norm}'")
  if config.parallel.num_devices < 0:
    raise CnnjaxError("config.parallel.num_devices cannot be negative")
  if config.precision not in PRECISIONS:
    raise CnnjaxError(f"config.precision must be one of {', '.join(PRECISIONS)}, "
                      f"got '{config.precision}'")
  if not 0.0 <= config.ema.decay < 1.0:
    raise CnnjaxError(f"config.ema.decay must be in [0, 1), got {config.ema.decay}")
  m = config.mix
  if m.mixup_alpha < 0 or m.cutmix_alpha < 0:
    raise CnnjaxError("config.mix.mixup_alpha and cutmix_alpha cannot be negative")
  if not (0.0 <= m.switch_prob <= 1.0 and 0.0 <= m.prob <= 1.0):
    raise CnnjaxError("config.mix.switch_prob and config.mix.prob must be in [0, 1]")
  s = config.loss_scale
  if s.initial <= 0 or s.growth_interval < 1 or not 0 < s.backoff < 1:
    raise CnnjaxError("config.loss_scale needs initial > 0, growth_interval >= 1 "
                      "and 0 < backoff < 1")
  a = config.augment
  for key in ("rotate", "translate", "brightness", "contrast", "saturation", "tta_shift"):
    if a[key] < 0:
      raise CnnjaxError(f"config.augment.{key} cannot be negative, got {a[key]}")
  if a.translate_mode not in ("edge", "constant", "reflect"):
    raise CnnjaxError("config.augment.translate_mode must be edge, constant or "
                      f"reflect, got '{a.translate_mode}'")
  if config.dataset.max_device_mb < 0:
    raise CnnjaxError("config.dataset.max_device_mb cannot be negative")
  if config.dataset.smoke_data not in ("auto", "synthetic", "real"):
    raise CnnjaxError("config.dataset.smoke_data must be auto, synthetic or "
                      f"real, got '{config.dataset.smoke_data}'")
  if not 0.0 <= config.loss.label_smoothing < 1.0:
    raise CnnjaxError("config.loss.label_smoothing must be in [0, 1), got "
                      f"{config.loss.label_smoothing}")
  _validate_transfer(config)


def _validate_transfer(config: ml_collections.ConfigDict) -> None:
  """Class selection, clipping, per-group learning rates and transfer."""
  from cnnjax.train.optim import parse_multipliers  # optim imports this module

  classes = tuple(config.dataset.classes)
  if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
             for c in classes):
    raise CnnjaxError("config.dataset.classes must be class numbers (integers "
                      f">= 0), got {classes}")
  if len(set(classes)) != len(classes) or len(classes) == 1:
    raise CnnjaxError("config.dataset.classes needs two or more different "
                      f"classes, got {classes}")
  if config.optimizer.clip_norm < 0:
    raise CnnjaxError("config.optimizer.clip_norm cannot be negative (0 turns "
                      f"clipping off), got {config.optimizer.clip_norm}")
  parse_multipliers(config.optimizer.lr_multipliers)  # Raises for bad rules.
  t = config.transfer
  if t.freeze not in ("none", "backbone"):
    raise CnnjaxError(f"config.transfer.freeze must be 'none' or 'backbone', got '{t.freeze}'")
  if t.backbone_lr_factor < 0:
    raise CnnjaxError("config.transfer.backbone_lr_factor cannot be negative, "
                      f"got {t.backbone_lr_factor}")
  step = str(t.init_step).strip()
  if step not in ("latest", "best") and not step.isdigit():
    raise CnnjaxError("config.transfer.init_step must be 'latest', 'best' or a "
                      f"step number, got '{t.init_step}'")
  if not t.init_from and (t.freeze != "none" or t.reinit or t.backbone_lr_factor != 1.0):
    raise CnnjaxError("config.transfer.freeze, reinit and backbone_lr_factor "
                      "need config.transfer.init_from (the run to start from)")


def apply_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """With config.smoke set, shrinks the run to a few steps; otherwise a no-op.

  The dataset loaders also read `smoke` and generate or load less data.
  """
  if not config.smoke:
    return config
  with config.unlocked():
    steps = config.smoke_steps
    config.num_steps = steps
    config.num_epochs = 0.0
    config.log_every = max(1, min(config.log_every, steps // 3))
    config.eval_every = max(1, steps // 2)
    config.checkpoint_every = max(1, steps // 2)
    config.eval_batch_size = min(config.eval_batch_size, 256)
    config.batch_size = min(config.batch_size, 32)
    config.schedule.warmup_steps = min(config.schedule.warmup_steps, steps // 4)
    config.schedule.warmup_epochs = 0.0
    if config.dataset.image_size > config.smoke_image_size > 0:
      config.dataset.image_size = config.smoke_image_size
  return config


@dataclasses.dataclass(frozen=True)
class Durations:
  """Every step count the loop and the schedules need, in steps."""
  num_steps: int
  steps_per_epoch: int
  warmup_steps: int
  step_size: int
  boundaries: tuple[int, ...]


def resolve_durations(config: ml_collections.ConfigDict,
                      num_train_examples: int) -> Durations:
  """The one place where epochs become steps."""
  if num_train_examples < config.batch_size:
    raise CnnjaxError(
        f"the training split has {num_train_examples} examples, fewer than "
        f"one batch of {config.batch_size}; lower config.batch_size")
  steps_per_epoch = num_train_examples // config.batch_size

  def to_steps(steps: int, epochs: float) -> int:
    return int(steps) if steps else int(math.ceil(epochs * steps_per_epoch))

  num_steps = to_steps(config.num_steps, config.num_epochs)
  s = config.schedule
  boundaries = tuple(int(b) for b in s.boundaries) or tuple(
      int(math.ceil(e * steps_per_epoch)) for e in s.boundary_epochs)
  return Durations(
      num_steps=num_steps,
      steps_per_epoch=steps_per_epoch,
      warmup_steps=to_steps(s.warmup_steps, s.warmup_epochs),
      step_size=to_steps(s.step_size, s.step_size_epochs),
      boundaries=boundaries)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  """Flat keys whose values differ between two config dicts (as JSON)."""
  diffs = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += config_differences(a, b, prefix + key + ".")
    elif a != b and not (isinstance(a, (list, tuple)) and
                         isinstance(b, (list, tuple)) and list(a) == list(b)):
      diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return diffs
