"""The package's shape: the layer order of docs/ARCHITECTURE.md (a module
imports from its own layer or below), no import cycles, no reaching into another module's private names, short files, and an
import that changes nothing."""

import ast
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "cnnjax")
MAX_LINES = 600


def _layers() -> list[list[str]]:
  """The layer order, bottom first, from the block in docs/ARCHITECTURE.md."""
  with open(os.path.join(REPO, "docs", "ARCHITECTURE.md")) as f:
    text = f.read()
  block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
  assert block, "docs/ARCHITECTURE.md lost its layers block"
  layers = []
  for line in block.group(1).splitlines():
    names = line.split("#")[0].split()
    if names:
      layers.append(names)
  return layers


def _modules() -> dict[str, str]:
  """{module name: path} of every file of the package."""
  found = {}
  for folder, subfolders, files in os.walk(PACKAGE):
    subfolders[:] = [d for d in subfolders if d != "__pycache__"]
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(parts)] = path
  return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ""
  package = module.split(".")
  if not MODULES[module].endswith("__init__.py"):
    package = package[:-1]
  base = package[:len(package) - node.level + 1]
  return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, int, list[str]]]:
  """(imported cnnjax module, line, names taken from it) of every import in
  `module`, at the top or inside functions alike."""
  with open(MODULES[module]) as f:
    tree = ast.parse(f.read())
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "cnnjax":
          found.append((alias.name, node.lineno, []))
    elif isinstance(node, ast.ImportFrom):
      target = _resolve(module, node)
      if target.split(".")[0] != "cnnjax":
        continue
      for alias in node.names:
        submodule = f"{target}.{alias.name}"
        if submodule in MODULES:
          found.append((submodule, node.lineno, []))
        else:
          found.append((target, node.lineno, [alias.name]))
  return found


def _component(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "cnnjax"


def _level(module: str, layers) -> int:
  component = _component(module)
  for level, names in enumerate(layers):
    if component in names:
      return level
  raise AssertionError(f"{module}: its part '{component}' is in no layer of "
                       "docs/ARCHITECTURE.md")


def test_every_part_of_the_package_has_a_layer():
  layers = _layers()
  named = [n for names in layers for n in names]
  assert len(named) == len(set(named)), "a part is in two layers"
  for module in MODULES:
    if module != "cnnjax":  # The package's face: its version and error type.
      _level(module, layers)


def test_imports_only_go_down_the_layers():
  layers = _layers()
  wrong = []
  for module in MODULES:
    if module == "cnnjax":
      continue
    mine = _level(module, layers)
    for target, line, _ in _imports(module):
      if target == "cnnjax" or _component(target) == _component(module):
        continue
      theirs = _level(target, layers)
      if theirs > mine:  # Parts on one line of the block are peers.
        wrong.append(f"{MODULES[module]}:{line} imports {target} "
                     f"(layer {theirs + 1} is above {mine + 1})")
  assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
  graph = {m: sorted({t for t, _, _ in _imports(m) if t in MODULES and t != m})
           for m in MODULES}
  state, stack, cycles = {}, [], []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in graph[node]:
      if state.get(nxt) == "open":
        cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module)
  assert not cycles, "\n".join(cycles)


def test_no_module_takes_another_modules_private_names():
  wrong = []
  for module, path in MODULES.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    aliases = {}
    for target, line, names in _imports(module):
      for name in names:
        if name.startswith("_") and not name.startswith("__"):
          wrong.append(f"{path}:{line} imports {target}.{name}")
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.startswith("cnnjax"):
            aliases[alias.asname or alias.name.split(".")[0]] = alias.name
      elif isinstance(node, ast.ImportFrom):
        for alias in node.names:
          target = f"{_resolve(module, node)}.{alias.name}"
          if target in MODULES:
            aliases[alias.asname or alias.name] = target
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        wrong.append(f"{path}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
  assert not wrong, "\n".join(wrong)


def test_no_file_is_longer_than_600_lines():
  long = []
  for path in MODULES.values():
    with open(path) as f:
      count = sum(1 for _ in f)
    if count > MAX_LINES:
      long.append(f"{os.path.relpath(path, REPO)}: {count} lines")
  assert not long, "\n".join(long)


@pytest.mark.parametrize("modules", [
    "cnnjax",
    "cnnjax.models, cnnjax.data, cnnjax.train.loop, cnnjax.viz, cnnjax.cli",
])
def test_importing_cnnjax_changes_no_environment_variable(modules):
  code = ("import os, json; before = dict(os.environ); "
          f"import {modules}; "
          "print(json.dumps({k: v for k, v in os.environ.items() "
          "if before.get(k) != v}))")
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, check=True, cwd=REPO)
  assert out.stdout.strip() == "{}"
