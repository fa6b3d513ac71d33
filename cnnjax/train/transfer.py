"""Transfer learning: start a run from another run's checkpoint.

The three classic scenarios (e.g. CS231n's notes on transfer learning), all
from `config.transfer`:

  fixed feature extractor   freeze='backbone': every loaded parameter gets
                            learning-rate factor 0; only the new head trains.
  fine-tuning               freeze='none', backbone_lr_factor < 1: the loaded
                            parameters train at a smaller rate than the head.
  fine-tuning the top       freeze='none' plus optimizer.lr_multipliers, e.g.
                            ('^(c1|c3)/=0',) to freeze only the lowest layers.

A parameter is *loaded* when the checkpoint has an array at the same path
('c1/kernel', 'stage3/block0/conv1/kernel') with the same shape and a
compatible dtype, and its top-level module is not listed in
`transfer.reinit`; a head whose class count changed is therefore re-initialised
by itself. The checkpoint is read without the other run's model: its arrays
are restored by path from Orbax's own metadata.

The transfer's factor (0 or backbone_lr_factor) comes after the explicit
`optimizer.lr_multipliers` rules, so an explicit rule that matches a loaded
parameter wins: backbone_lr_factor=0.1 with ('^(c1|c3)/=0',) freezes c1 and
c3, fine-tunes c5 and f6 at a tenth of the rate and trains the head at the
full rate.

How the optimizer learns which parameters were loaded: `make_optimizer` calls
`multiplier_rules(config, params)`, which re-derives the loaded paths from the
checkpoint's metadata (shapes and dtypes only, no array is read) and the new
model's parameter shapes, by the same `plan` that `merge` uses. Both are pure
functions of (config, checkpoint, model), so nothing is cached between them,
and resuming or evaluating a transfer run rebuilds the same optimizer. The
source checkpoint must therefore still exist when a transfer run resumes.

Batch normalization with freeze='backbone': the frozen layers' scales and
offsets do not change, and neither do their running averages (the train step
puts back the statistics of layers whose parameters all have factor 0, see
`optim.frozen_batch_stats`), so evaluation sees the pretrained backbone
exactly. In training those layers still normalise with the batch's own
statistics, as a PyTorch model in train() mode with requires_grad off does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError

COLLECTIONS = ("params", "batch_stats")  # What a transfer copies.


def path_string(key_path) -> str:
  """The '/'-joined names of a JAX key path: 'c1/kernel', 'stage3/block0/bn/scale'.

  The same paths name parameters in `optimizer.lr_multipliers`.
  """
  parts = []
  for key in key_path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def flat_paths(tree) -> dict[str, Any]:
  """{path_string: leaf} of a pytree (empty subtrees have no entries)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {path_string(p): leaf for p, leaf in leaves}


# --------------------------------------------------------------------------
# Finding and reading a checkpoint


def _steps(directory: str) -> list[int]:
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state")))


def resolve_checkpoint(path: str, which: str = "latest") -> str:
  """The step directory (holding 'state') that `path` and `which` name.

  `path` is a cnnjax workdir, its `checkpoints/` directory, or one step's
  directory (then `which` is ignored); `which` is 'latest', 'best' or a step.
  """
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise CnnjaxError(f"transfer.init_from '{path}' does not exist; point it at "
                      "the workdir of a finished cnnjax run")
  if os.path.isdir(os.path.join(path, "state")):
    return path  # Already one step's directory.
  directory = os.path.join(path, "checkpoints")
  if not os.path.isdir(directory):
    directory = path
  steps = _steps(directory)
  if not steps:
    raise CnnjaxError(f"'{path}' holds no cnnjax checkpoint; point "
                      "transfer.init_from at a workdir whose run saved one")
  which = str(which).strip()
  if which == "latest":
    step = steps[-1]
  elif which == "best":
    step = _best_step(directory)
  elif which.isdigit():
    step = int(which)
    if step not in steps:
      raise CnnjaxError(f"'{directory}' has no checkpoint at step {step} (its "
                        f"steps: {', '.join(map(str, steps))})")
  else:
    raise CnnjaxError("transfer.init_step must be 'latest', 'best' or a step "
                      f"number, got '{which}'")
  return os.path.join(directory, str(step))


def _best_step(directory: str) -> int:
  """The best step by the source run's own best_metric (from its config.json)."""
  from cnnjax.train.checkpoint import Checkpointer

  config_path = os.path.join(os.path.dirname(directory), "config.json")
  try:
    with open(config_path) as f:
      source = json.load(f)
    metric, mode = source["best_metric"], source.get("best_mode", "max")
  except (OSError, ValueError, KeyError) as e:
    raise CnnjaxError(f"transfer.init_step='best' needs the source run's "
                      f"config.json ({config_path}), which cannot be read "
                      f"({type(e).__name__}); use 'latest' or a step") from e
  if not metric:
    raise CnnjaxError("the source run tracked no best checkpoint (its "
                      "best_metric is empty); use transfer.init_step='latest'")
  checkpointer = Checkpointer(directory, read_only=True, best_metric=metric,
                              best_mode=mode)
  try:
    step = checkpointer.best_step()
  finally:
    checkpointer.close()
  if step is None:
    raise CnnjaxError(f"no checkpoint in '{directory}' was scored on {metric}; "
                      "use transfer.init_step='latest'")
  return step


def _state_metadata(step_dir: str) -> dict:
  """The 'state' item's tree of Orbax ArrayMetadata (shapes, dtypes)."""
  import orbax.checkpoint as ocp
  from etils import epath

  try:
    tree = ocp.PyTreeCheckpointHandler().metadata(
        epath.Path(step_dir) / "state").tree
  except Exception as e:  # Missing or corrupt files.
    raise CnnjaxError(f"checkpoint '{step_dir}' cannot be read "
                      f"({type(e).__name__}: {_first_line(e)})") from e
  if not isinstance(tree, Mapping) or "params" not in tree:
    raise CnnjaxError(f"checkpoint '{step_dir}' holds no 'params'; it was "
                      "not written by cnnjax's training loop")
  return {c: tree[c] for c in COLLECTIONS if c in tree}


def checkpoint_shapes(path: str, which: str = "latest") -> dict[str, jax.ShapeDtypeStruct]:
  """{'params/c1/kernel': ShapeDtypeStruct} of a checkpoint, from its
  metadata alone (no array is read)."""
  metadata = _state_metadata(resolve_checkpoint(path, which))
  return {p: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype)
          for p, m in flat_paths(metadata).items()}


def load_variables(path: str, which: str = "latest") -> dict:
  """{'params': ..., 'batch_stats': ...} of a cnnjax checkpoint, as NumPy.

  Only those two collections are read (not the optimizer state), and no
  model is needed: the structure comes from the checkpoint's metadata.
  """
  import orbax.checkpoint as ocp

  step_dir = resolve_checkpoint(path, which)
  metadata = _state_metadata(step_dir)
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
                        metadata)
  restore_args = jax.tree.map(
      lambda m: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  try:
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
      restored = checkpointer.restore(
          os.path.join(step_dir, "state"),
          args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                      partial_restore=True))
  except Exception as e:  # Truncated or corrupt array files.
    raise CnnjaxError(f"checkpoint '{step_dir}' cannot be read "
                      f"({type(e).__name__}: {_first_line(e)})") from e
  variables = {c: jax.tree.map(np.asarray, restored.get(c, {})) for c in COLLECTIONS}
  return variables


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else "no details"


# --------------------------------------------------------------------------
# Deciding what to copy


@dataclasses.dataclass(frozen=True)
class MergeReport:
  """What `merge` did, by '<collection>/<path>' ('params/c1/kernel').

  `reinitialised` are the new model's arrays that keep their fresh
  initialisation, with the reason in `reasons` ('asked', 'shape (84, 10) in
  the checkpoint', 'not in the checkpoint', ...); `unused` are the
  checkpoint's arrays that went nowhere.
  """
  loaded: tuple[str, ...]
  reinitialised: tuple[str, ...]
  unused: tuple[str, ...]
  reasons: Mapping[str, str]

  @property
  def loaded_params(self) -> tuple[str, ...]:
    """Loaded parameter paths without the collection: 'c1/kernel'."""
    return tuple(p[len("params/"):] for p in self.loaded if p.startswith("params/"))

  def summary(self, source: str = "", note: str = "") -> str:
    """Two or three lines for a person: counts and module names."""
    loaded = sorted({_module(p) for p in self.loaded})
    lines = [f"transfer: loaded {len(self.loaded)} of "
             f"{len(self.loaded) + len(self.reinitialised)} arrays"
             + (f" from {source}" if source else "")
             + f" (modules {', '.join(loaded)})" + (f", {note}" if note else "")]
    if self.reinitialised:
      by_module: dict[str, set[str]] = {}
      for p in self.reinitialised:
        by_module.setdefault(_module(p), set()).add(self.reasons[p].split(" (")[0])
      details = "; ".join(f"{m}: {', '.join(sorted(r))}" for m, r in sorted(by_module.items()))
      lines.append(f"transfer: re-initialised {len(self.reinitialised)} arrays ({details})")
    # Arrays the new model has no place for (mismatches are listed above).
    absent = sorted({_module(p) for p in self.unused if p not in self.reasons})
    if absent:
      lines.append(f"transfer: the checkpoint's modules {', '.join(absent)} are "
                   "not in this model and were left out")
    return "\n".join(lines)


def _module(path: str) -> str:
  """The top-level module of 'params/stage3/block0/conv1/kernel': 'stage3'."""
  parts = path.split("/")
  return parts[1] if len(parts) > 2 else parts[-1]


def _compatible(a, b) -> bool:
  """Same kind of number: floating with floating, integer with integer."""
  return any(jnp.issubdtype(a, kind) and jnp.issubdtype(b, kind)
             for kind in (jnp.floating, jnp.integer, jnp.bool_))


def plan(init_shapes: Mapping[str, Any], pretrained_shapes: Mapping[str, Any],
         reinit: Sequence[str] = ()) -> MergeReport:
  """Which arrays to copy, from {path: anything with .shape and .dtype}.

  Raises CnnjaxError for a `reinit` name the model does not have, and when
  nothing at all can be copied (a checkpoint of another model).
  """
  reinit = tuple(reinit)
  modules = {_module(p) for p in init_shapes if p.startswith("params/")}
  unknown = [m for m in reinit if m not in modules]
  if unknown:
    raise CnnjaxError(f"transfer.reinit names {', '.join(unknown)}, which this model "
                      f"does not have; its top-level modules are {', '.join(sorted(modules))}")
  loaded, reinitialised, reasons = [], [], {}
  for path, new in init_shapes.items():
    old = pretrained_shapes.get(path)
    if old is None:
      reasons[path] = "not in the checkpoint"
    elif _module(path) in reinit:
      reasons[path] = "asked (transfer.reinit)"
    elif tuple(old.shape) != tuple(new.shape):
      reasons[path] = (f"new shape (checkpoint {tuple(old.shape)}, "
                       f"model {tuple(new.shape)})")
    elif not _compatible(old.dtype, new.dtype):
      reasons[path] = f"dtype (checkpoint {old.dtype}, model {new.dtype})"
    else:
      loaded.append(path)
      continue
    reinitialised.append(path)
  if not loaded:
    raise CnnjaxError("no array of the checkpoint fits this model (no path with "
                      "the same shape); transfer.init_from must be a run of the "
                      "same architecture")
  taken = set(loaded)
  unused = [p for p in pretrained_shapes if p not in taken]
  return MergeReport(loaded=tuple(loaded), reinitialised=tuple(reinitialised),
                     unused=tuple(unused), reasons=reasons)


def merge(init_variables: Mapping, pretrained: Mapping, reinit: Sequence[str] = ()
          ) -> tuple[dict, MergeReport]:
  """`init_variables` with every fitting array of `pretrained` copied in.

  An array is copied when its path exists in both with the same shape and a
  compatible dtype (cast to the model's), unless its top-level module is in
  `reinit`. Collections other than params and batch_stats are left alone.
  """
  init_flat = {p: v for p, v in flat_paths(dict(init_variables)).items()
               if p.split("/")[0] in COLLECTIONS}
  pretrained_flat = {p: v for p, v in flat_paths(
      {c: pretrained.get(c, {}) for c in COLLECTIONS}).items()}
  report = plan(init_flat, {p: np.asarray(v) for p, v in pretrained_flat.items()}, reinit)
  chosen = set(report.loaded)

  def pick(key_path, fresh):
    path = path_string(key_path)
    if path in chosen:
      return jnp.asarray(pretrained_flat[path], dtype=fresh.dtype)
    return fresh

  variables = jax.tree_util.tree_map_with_path(pick, dict(init_variables))
  return variables, report


# --------------------------------------------------------------------------
# The config's side: config.transfer


def _transfer_config(config):
  transfer = config.get("transfer")
  if transfer is None or not transfer.get("init_from", ""):
    return None
  return transfer


def initialize_from(config, variables: Mapping) -> Mapping:
  """`variables` with the arrays of `config.transfer.init_from` copied in.

  A no-op when init_from is ''. Prints what was loaded and re-initialised to
  stderr.
  """
  transfer = _transfer_config(config)
  if transfer is None:
    return variables
  step_dir = resolve_checkpoint(transfer.init_from, transfer.get("init_step", "latest"))
  pretrained = load_variables(step_dir)
  variables, report = merge(variables, pretrained, tuple(transfer.get("reinit", ())))
  freeze = transfer.get("freeze", "none") == "backbone"
  factor = float(transfer.get("backbone_lr_factor", 1.0))
  note = ("frozen (transfer.freeze='backbone')" if freeze else
          f"trained at {factor:g} x the learning rate" if factor != 1.0 else "")
  print(report.summary(step_dir, note), file=sys.stderr)
  return variables


def multiplier_rules(config, params) -> tuple[str, ...]:
  """'REGEX=FACTOR' rules for `optimizer.lr_multipliers` from config.transfer.

  freeze='backbone' gives every loaded parameter factor 0; otherwise a
  backbone_lr_factor other than 1 gives them that factor. () when there is
  nothing to add. `make_optimizer` puts these rules after the explicit ones. The loaded paths come from `plan` on the checkpoint's
  metadata and the shapes of `params` (the new model's), as in `merge`.
  """
  transfer = _transfer_config(config)
  if transfer is None:
    return ()
  freeze = transfer.get("freeze", "none") == "backbone"
  factor = 0.0 if freeze else float(transfer.get("backbone_lr_factor", 1.0))
  if factor == 1.0:
    return ()
  shapes = checkpoint_shapes(transfer.init_from, transfer.get("init_step", "latest"))
  init_shapes = {"params/" + p: v for p, v in flat_paths(params).items()}
  # batch_stats are not parameters; plan() wants only the model's params here.
  report = plan(init_shapes, shapes, tuple(transfer.get("reinit", ())))
  paths = report.loaded_params
  if not paths:
    return ()
  return ("^(?:" + "|".join(re.escape(p) for p in paths) + f")$={factor!r}",)
