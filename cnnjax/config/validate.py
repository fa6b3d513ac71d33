"""Validation: every value that cannot work is refused before any work starts."""

from __future__ import annotations

import re
from typing import Sequence

import ml_collections

from cnnjax.config.base import KERNEL_INITS, PRECISIONS, RESIZE_MODES
from cnnjax.errors import CnnjaxError


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises CnnjaxError for values that cannot work, before any work starts."""
  if not config.model.name:
    raise CnnjaxError("config.model.name is empty; see `cnnjax models`")
  kernel_init = config.model.get("kernel_init", "")
  if kernel_init not in ("", None) and kernel_init not in KERNEL_INITS:
    raise CnnjaxError(f"config.model.kernel_init must be one of "
                      f"{', '.join(KERNEL_INITS)} (or '' for the model's own "
                      f"initializers), got {kernel_init!r}")
  if config.get("conv_backend", "") not in ("", "xla", "onednn", "auto"):
    raise CnnjaxError(f"config.conv_backend must be 'xla', 'onednn', 'auto' or '' "
                      f"(CNNJAX_CONV_BACKEND, else 'xla'), got {config.conv_backend!r}")
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
  if config.schedule.get("warmup_from", 0.0) < 0:
    raise CnnjaxError("config.schedule.warmup_from (the warmup's first learning "
                      "rate over the peak) cannot be negative, got "
                      f"{config.schedule.warmup_from}")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if config[key] <= 0:
      raise CnnjaxError(f"config.{key} must be positive, got {config[key]}")
  if config.eval_every < 0:
    raise CnnjaxError(f"config.eval_every cannot be negative, got {config.eval_every}")
  _validate_divergence(config)
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
  if config.parallel.get("preemption_check_every", 0) < 0:
    raise CnnjaxError("config.parallel.preemption_check_every cannot be negative")
  if config.precision not in PRECISIONS:
    raise CnnjaxError(f"config.precision must be one of {', '.join(PRECISIONS)}, "
                      f"got '{config.precision}'")
  if not 0.0 <= config.ema.decay < 1.0:
    raise CnnjaxError(f"config.ema.decay must be in [0, 1), got {config.ema.decay}")
  la = config.lookahead
  if not isinstance(la.every, int) or la.every < 0:
    raise CnnjaxError(f"config.lookahead.every must be a whole number of steps (0: off), "
                      f"got {la.every!r}")
  if not 0.0 <= la.decay < 1.0 or la.power < 0:
    raise CnnjaxError(f"config.lookahead.decay must be in [0, 1) and power not negative, "
                      f"got {la.decay} and {la.power}")
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
  check_resize(config.dataset)
  if not 0.0 <= config.loss.label_smoothing < 1.0:
    raise CnnjaxError("config.loss.label_smoothing must be in [0, 1), got "
                      f"{config.loss.label_smoothing}")
  _validate_transfer(config)


def _validate_divergence(config: ml_collections.ConfigDict) -> None:
  """config.divergence: the guard's switch and its loss factor."""
  d = config.divergence
  if not isinstance(d.stop_on_nonfinite, bool):
    raise CnnjaxError("config.divergence.stop_on_nonfinite must be true or false, "
                      f"got {d.stop_on_nonfinite!r}")
  factor = d.loss_factor
  # A factor of 1 or less would flag a run whose loss merely did not fall.
  if isinstance(factor, bool) or not (factor == 0 or factor > 1):
    raise CnnjaxError("config.divergence.loss_factor must be above 1 (or 0 to "
                      f"turn the warning off), got {factor!r}")


def _validate_transfer(config: ml_collections.ConfigDict) -> None:
  """Class selection, clipping, per-group learning rates and transfer."""
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
  into = t.get("into", "")
  if not isinstance(into, str) or into.startswith("/") or into.endswith("/") or "//" in into:
    raise CnnjaxError("config.transfer.into must be a submodule path such as 'encoder' "
                      f"(or '' for the same paths), got {into!r}")
  if not t.init_from and (t.freeze != "none" or t.reinit or t.backbone_lr_factor != 1.0
                          or into):
    raise CnnjaxError("config.transfer.freeze, reinit, backbone_lr_factor and into "
                      "need config.transfer.init_from (the run to start from)")


def check_resize(dataset: ml_collections.ConfigDict) -> None:
  """config.dataset.resize_mode and resize_size (image folders), checked.

  The image-folder loader calls it too, since `cnnjax eval` reads a run's
  stored config without validating it.
  """
  mode = dataset.get("resize_mode", "square")
  size = dataset.get("resize_size", 0)
  image_size = dataset.get("image_size", 0) or 0
  if mode not in RESIZE_MODES:
    raise CnnjaxError(f"config.dataset.resize_mode must be {' or '.join(RESIZE_MODES)}, "
                      f"got '{mode}'")
  if not isinstance(size, int) or isinstance(size, bool) or size < 0:
    raise CnnjaxError("config.dataset.resize_size must be a whole number of pixels "
                      f">= 0 (0: image_size / 0.875), got {size!r}")
  if mode == "square":
    if size:
      raise CnnjaxError("config.dataset.resize_size applies only to "
                        "config.dataset.resize_mode='shorter_side_center_crop', but the "
                        "resize_mode is 'square'")
    return
  if dataset.get("name", "") != "image_folder":
    raise CnnjaxError(f"config.dataset.resize_mode='{mode}' works with the image_folder "
                      f"source only, not '{dataset.get('name', '')}'")
  if image_size <= 0:
    raise CnnjaxError(f"config.dataset.resize_mode='{mode}' needs "
                      "config.dataset.image_size, the side of the central crop (e.g. 224)")
  if 0 < size < image_size:
    raise CnnjaxError(f"config.dataset.resize_size ({size}) must be at least "
                      f"config.dataset.image_size ({image_size}), the crop cut from it")


def parse_multipliers(rules: Sequence[str]) -> list[tuple[re.Pattern, float]]:
  """('REGEX=FACTOR', ...) -> [(compiled regex, factor)], checked.

  The factor follows the last '=' (a regex may hold one, as in '(?=...)').
  """
  parsed = []
  for rule in rules:
    rule = str(rule)
    if "=" not in rule:
      raise CnnjaxError(f"config.optimizer.lr_multipliers entry '{rule}' needs the "
                        "form REGEX=FACTOR, e.g. 'head=10' or '^(c1|c3)/=0'")
    pattern, _, factor_text = rule.rpartition("=")
    try:
      factor = float(factor_text)
    except ValueError:
      factor = -1.0
    if not factor >= 0:  # Also catches NaN.
      raise CnnjaxError(f"config.optimizer.lr_multipliers entry '{rule}' needs a "
                        f"factor >= 0 after '=', got '{factor_text}'")
    try:
      parsed.append((re.compile(pattern), factor))
    except re.error as e:
      raise CnnjaxError(f"config.optimizer.lr_multipliers entry '{rule}' has an "
                        f"invalid regular expression ({e})") from e
  return parsed
