"""One registry pattern for every family of pluggable things.

Models, data sources, evaluators, visualization methods, claims analyses and
experiments are each a `Registry`: a name -> entry table filled by
`@REGISTRY.register(name, ...)` decorators in the modules that define the
entries (or, for experiments, by discovering files), and read with `get`,
`names` and `in`. A lookup of an unknown name raises `CnnjaxError` with one
sentence that names the close matches.

A registry can be given `populate`, a function that imports the modules whose
decorators fill it; it runs once, at the first lookup, so that importing a
registry is cheap and entries are always complete when they are read.

    MODELS = Registry("model", populate=_import_families)

    @MODELS.register("lenet5", input_shape=(32, 32, 1))
    class LeNet5(nn.Module): ...

    MODELS.get("lenet5")  # the entry built by `make_entry`
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Generic, Iterator, TypeVar

from cnnjax.errors import CnnjaxError

T = TypeVar("T")


class Registry(Generic[T]):
  """Named entries of one kind.

  Args:
    kind: what an entry is, for messages ('model', 'evaluator', ...).
    populate: imports the modules that register the entries; called once,
      before the first lookup.
    make_entry: turns `register(name, obj, **info)` into the stored entry
      (default: `obj` itself; `info` must then be empty).
    listing: where a user sees every name, for the unknown-name message
      ('`cnnjax models`').
  """

  def __init__(self, kind: str, *, populate: Callable[[], Any] | None = None,
               make_entry: Callable[..., T] | None = None, listing: str = ""):
    self.kind = kind
    self.listing = listing
    self._populate = populate
    self._populated = populate is None
    self._make_entry = make_entry
    self._entries: dict[str, T] = {}

  # ---- filling

  def add(self, name: str, obj: Any, **info) -> T:
    """Registers `obj` under `name`; a name may be registered only once."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
    if name in self._entries:
      raise ValueError(f"{self.kind} '{name}' is registered twice")
    if self._make_entry is not None:
      entry = self._make_entry(name, obj, **info)
    elif info:
      raise TypeError(f"the {self.kind} registry takes no details, got {sorted(info)}")
    else:
      entry = obj
    self._entries[name] = entry
    return entry

  def register(self, name: str, **info) -> Callable[[Any], Any]:
    """Decorator form of `add`; returns the decorated object unchanged."""

    def decorator(obj):
      self.add(name, obj, **info)
      return obj

    return decorator

  def clear(self) -> None:
    """Forgets every entry (registries filled by discovery, e.g. experiments)."""
    self._entries.clear()

  # ---- reading

  def _ensure(self) -> None:
    if not self._populated:
      self._populated = True  # Before the imports: they register entries.
      self._populate()

  def get(self, name: str) -> T:
    """The entry `name`; CnnjaxError naming close matches when there is none."""
    self._ensure()
    if name in self._entries:
      return self._entries[name]
    raise CnnjaxError(self.unknown_message(name))

  def unknown_message(self, name: str) -> str:
    """'unknown model 'x'; did you mean 'y'?' (or where to see the names)."""
    self._ensure()
    close = difflib.get_close_matches(str(name), list(self._entries), n=3)
    if close:
      hint = "; did you mean " + ", ".join(f"'{c}'" for c in close) + "?"
    elif self.listing:
      hint = f"; {self.listing} lists them"
    else:
      hint = f" (known: {', '.join(self._entries) or 'none'})"
    return f"unknown {self.kind} '{name}'{hint}"

  def names(self, pattern: str = "*") -> list[str]:
    """Registered names matching a glob, in registration order."""
    self._ensure()
    return [n for n in self._entries if fnmatch.fnmatch(n, pattern)]

  def items(self) -> list[tuple[str, T]]:
    self._ensure()
    return list(self._entries.items())

  def __contains__(self, name: object) -> bool:
    self._ensure()
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    self._ensure()
    return len(self._entries)
