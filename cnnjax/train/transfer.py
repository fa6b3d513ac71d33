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
import re
import sys
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import runs
from cnnjax.errors import CnnjaxError
from cnnjax.trees import flat_paths, path_string

COLLECTIONS = ("params", "batch_stats")  # What a transfer copies.


def load_variables(path: str, which: str = "latest") -> dict:
  """{'params': ..., 'batch_stats': ...} of a cnnjax checkpoint, as NumPy.

  `path` is a run directory, its checkpoints/ directory or one step's
  directory; `which` is 'latest', 'best' or a step. Only those two
  collections are read (not the optimizer state), and no model is needed.
  """
  return runs.load_variables(path, which)


def checkpoint_shapes(path: str, which: str = "latest"):
  """{'params/c1/kernel': ShapeDtypeStruct} of a checkpoint (metadata only)."""
  return runs.checkpoint_shapes(path, which)


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
  into: str = ""  # the submodule the checkpoint's arrays were placed under

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
    prefix = len(self.into) + 1 if self.into else 0
    absent = sorted({_module(p.split("/", 1)[0] + "/" + p.split("/", 1)[1][prefix:])
                     for p in self.unused if p not in self.reasons})
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


def relocate(flat: Mapping[str, Any], into: str) -> dict[str, Any]:
  """{'params/stem/conv/kernel': v} -> {'params/<into>/stem/conv/kernel': v}:
  a checkpoint's arrays placed under submodule `into` ('' leaves them)."""
  if not into:
    return dict(flat)
  moved = {}
  for path, value in flat.items():
    collection, _, rest = path.partition("/")
    moved[f"{collection}/{into}/{rest}"] = value
  return moved


def _check_into(init_flat: Mapping[str, Any], into: str) -> None:
  if into and not any(p.startswith(f"params/{into}/") for p in init_flat):
    modules = sorted({_module(p) for p in init_flat if p.startswith("params/")})
    raise CnnjaxError(f"transfer.into '{into}' is not a submodule of this model with "
                      f"parameters; its top-level modules are {', '.join(modules)}")


def merge(init_variables: Mapping, pretrained: Mapping, reinit: Sequence[str] = (),
          into: str = "") -> tuple[dict, MergeReport]:
  """`init_variables` with every fitting array of `pretrained` copied in.

  An array is copied when its path (under submodule `into`, if given) exists
  in both with the same shape and a compatible dtype (cast to the model's),
  unless its top-level module is in `reinit`. Collections other than params
  and batch_stats are left alone.
  """
  init_flat = {p: v for p, v in flat_paths(dict(init_variables)).items()
               if p.split("/")[0] in COLLECTIONS}
  _check_into(init_flat, into)
  pretrained_flat = relocate(flat_paths(
      {c: pretrained.get(c, {}) for c in COLLECTIONS}), into)
  report = plan(init_flat, {p: np.asarray(v) for p, v in pretrained_flat.items()}, reinit)
  report = dataclasses.replace(report, into=into)
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
  step_dir = _source(transfer.init_from, transfer.get("init_step", "latest"))
  pretrained = runs.load_variables(step_dir)
  variables, report = merge(variables, pretrained, tuple(transfer.get("reinit", ())),
                            transfer.get("into", ""))
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
  shapes = relocate(runs.checkpoint_shapes(
      _source(transfer.init_from, transfer.get("init_step", "latest"))),
      transfer.get("into", ""))
  init_shapes = {"params/" + p: v for p, v in flat_paths(params).items()}
  _check_into(init_shapes, transfer.get("into", ""))
  # batch_stats are not parameters; plan() wants only the model's params here.
  report = plan(init_shapes, shapes, tuple(transfer.get("reinit", ())))
  paths = report.loaded_params
  if not paths:
    return ()
  return ("^(?:" + "|".join(re.escape(p) for p in paths) + f")$={factor!r}",)


def _source(init_from: str, which: str) -> str:
  """The step directory of the run to start from, with errors that name
  config.transfer."""
  import os

  if not os.path.isdir(os.path.expanduser(str(init_from))):
    raise CnnjaxError(f"transfer.init_from '{init_from}' does not exist; point it "
                      "at the workdir of a finished cnnjax run")
  return runs.checkpoint_directory(init_from, which)
