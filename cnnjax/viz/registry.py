"""Visualization methods by name, their shared options, and their outputs.

A method is `fn(trained, options) -> Output` (`trained`: a
`runs.TrainedModel`): arrays (saved as `<name>.npz`) and matplotlib figures
(saved as PNG). `cnnjax visualize METHOD` and the gallery call methods through
`run_method`, which writes the files.

The method modules register themselves when imported; `cnnjax/viz/__init__.py`
imports them all, and it runs before any `cnnjax.viz.*` module, so the
registry is complete however it was reached (and imports none of them: no
cycle).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.registry import Registry
from cnnjax.viz import figures


# The options a method may ignore silently: bounds on memory and the random
# seed change no picture. Any other option a user sets and the method never
# reads is refused (`Options.unread`): `--layer` for saliency, `--channel` for
# activations or a misspelt `--option` would otherwise do nothing, unsaid.
_FLAGS = {"split": "--split", "indices": "--indices",
          "num_examples": "--num-examples", "layer": "--layer",
          "channel": "--channel", "target_class": "--class", "steps": "--steps",
          "top_k": "--top-k"}


@dataclasses.dataclass
class Options:
  """What a method may be asked for; each method reads what it needs.

  `extra` holds method-specific values from `--option key=value`. The
  options a method reads are recorded, so that one set but never read can
  be refused (`unread`).
  """
  split: str = ""  # '' = the dataset's test split
  indices: tuple[int, ...] = ()  # examples to explain; () = the first `num_examples`
  num_examples: int = 4
  layer: str = ""  # module path, e.g. 'c3'; '' = the method's default
  channel: int = -1  # -1 = the method's default (e.g. the most active)
  target_class: int = -1  # -1 = each example's label (or predicted class)
  steps: int = 0  # iterations of an optimization; 0 = the method's default
  top_k: int = 9
  batch_size: int = 256  # memory bound for methods that run many passes
  seed: int = 0
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  _read: set[str] = dataclasses.field(default_factory=set, init=False,
                                      repr=False, compare=False)

  def __getattribute__(self, name: str):
    if name in _FLAGS:
      object.__getattribute__(self, "_read").add(name)
    return object.__getattribute__(self, name)

  def forget_reads(self) -> None:
    """Starts recording afresh (the CLI's own checks read options too)."""
    self._read.clear()

  def unread(self) -> list[str]:
    """The options set to other than their default that nothing read since
    `forget_reads`, as the flags a user typed ('--layer', '--option x')."""
    defaults = Options()
    given = [flag for field, flag in _FLAGS.items()
             if field not in self._read and
             object.__getattribute__(self, field) != object.__getattribute__(defaults, field)]
    return given + [f"--option {k}" for k in self.extra if "extra:" + k not in self._read]

  def get(self, key: str, default):
    """A method-specific option, converted to the type of `default`."""
    self._read.add("extra:" + key)
    if key not in self.extra:
      return default
    value = self.extra[key]
    try:
      if isinstance(default, bool):
        return str(value).lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)
      if isinstance(default, (int, float)) and not isinstance(default, bool):
        return type(default)(value)
      if isinstance(default, tuple):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    except (TypeError, ValueError) as e:
      raise CnnjaxError(f"--option {key}={value!r}: expected a "
                        f"{type(default).__name__}") from e
    return value


@dataclasses.dataclass
class Output:
  """What a method produced: arrays for the .npz and figures for PNGs."""
  arrays: dict[str, np.ndarray]
  figures: dict[str, Any]  # file stem -> matplotlib Figure
  caption: str = ""  # one or two sentences for the gallery


# The tasks of the classification methods (the default): segmentation and
# detection models output maps and boxes, which only their own methods read.
CLASSIFICATION = ("multiclass", "binary", "multilabel", "ordinal")
ANY_TASK = CLASSIFICATION + ("segmentation", "detection")


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  fn: Callable[..., Output]
  summary: str  # one line for --help and the gallery
  tasks: tuple[str, ...] = CLASSIFICATION  # the data's tasks it draws


METHODS: Registry[Method] = Registry(
    "visualization method",
    make_entry=lambda name, fn, summary, tasks=CLASSIFICATION: Method(name, fn, summary,
                                                                      tuple(tasks)),
    listing="`cnnjax visualize --help`")


def register(name: str, summary: str, tasks: tuple[str, ...] = CLASSIFICATION):
  """Decorator: registers `fn(trained, options) -> Output` as method `name`,
  for runs whose data is one of `tasks`."""
  return METHODS.register(name, summary=summary, tasks=tasks)


def method_names() -> list[str]:
  return METHODS.names()


def get_method(name: str) -> Method:
  return METHODS.get(name)


def run_method(name: str, trained, options: Options, out_dir: str, *,
               strict: bool = False) -> dict[str, Any]:
  """Runs a method on `trained` (a `runs.TrainedModel`) and writes
  `<out_dir>/<name>.npz` and its PNGs.

  strict: refuse, before writing, an option set that the method never read
  (`cnnjax visualize` is strict; the gallery, whose options are for
  whichever methods read them, checks them all at its end).

  Returns {'method', 'caption', 'files': [paths]}.
  """
  plt = figures.pyplot()
  method = get_method(name)
  task = getattr(getattr(trained, "dataset", None), "task", None)
  if task is not None and task not in method.tasks:
    raise CnnjaxError(f"{name} draws models of {', '.join(method.tasks)} data; this run's "
                      f"data is a {task} task")
  if strict:
    options.forget_reads()
  output = method.fn(trained, options)
  unread = options.unread() if strict else []
  if unread:  # Refused before anything is written.
    for figure in output.figures.values():
      plt.close(figure)
    raise CnnjaxError(f"{name} does not use {', '.join(unread)}; leave "
                      f"{'it' if len(unread) == 1 else 'them'} out")
  os.makedirs(out_dir, exist_ok=True)
  files = []
  if output.arrays:
    path = os.path.join(out_dir, f"{name}.npz")
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in output.arrays.items()})
    files.append(path)
  for stem, figure in output.figures.items():
    path = os.path.join(out_dir, f"{stem}.png")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    files.append(path)
  return {"method": name, "caption": output.caption or method.summary,
          "files": files}
