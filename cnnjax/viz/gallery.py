"""One HTML page with every visualization of a trained model: `cnnjax visualize gallery`."""

from __future__ import annotations

import datetime
import html
import os
import sys
import time
from typing import Any, Sequence

from cnnjax.errors import CnnjaxError
from cnnjax.viz.registry import Options, get_method, method_names, run_method


def write_gallery(trained, out_dir: str, options: Options | None = None, *,
                  methods: Sequence[str] | None = None,
                  progress=None) -> dict[str, Any]:
  """Runs `methods` (default: all that draw the run's task) on `trained` (a `runs.TrainedModel`) into
  `out_dir` and writes `out_dir/index.html` linking their figures. A method
  that fails with a user-facing error (e.g. one that needs ReLUs) is listed
  with its reason and the others go on. Returns {'page': path, 'sections': [...]}.
  """
  options = options or Options()
  say = progress or (lambda line: None)
  if methods:
    names = list(methods)
  else:  # Every method that draws this run's kind of model.
    task = getattr(getattr(trained, "dataset", None), "task", None)
    names = [m for m in method_names()
             if m != "gallery" and (task is None or task in get_method(m).tasks)]
  for name in names:
    get_method(name)  # Unknown names fail before any work.
  os.makedirs(out_dir, exist_ok=True)
  sections = []
  options.forget_reads()
  for name in names:
    start = time.perf_counter()
    try:
      result = run_method(name, trained, options, out_dir)
      result["seconds"] = time.perf_counter() - start
      say(f"  {name}: {len(result['files'])} files in {result['seconds']:.1f} s")
    except CnnjaxError as e:
      result = {"method": name, "caption": get_method(name).summary, "files": [],
                "error": str(e), "seconds": time.perf_counter() - start}
      say(f"  {name}: skipped ({e})")
    sections.append(result)
  unread = options.unread()
  if unread:  # Set for the gallery, yet no method read it: a typo, most likely.
    raise CnnjaxError(f"no method of the gallery uses {', '.join(unread)}")
  page = os.path.join(out_dir, "index.html")
  with open(page + ".tmp", "w") as f:
    f.write(_page(trained, sections, out_dir))
  os.replace(page + ".tmp", page)
  return {"page": page, "sections": sections}


def _page(trained, sections, out_dir) -> str:
  title = f"cnnjax: inside {trained.config.model.name or 'a model'}"
  where = trained.workdir or "(in memory)"
  rows = []
  for s in sections:
    rows.append(f'<section id="{html.escape(s["method"])}">')
    rows.append(f'<h2>{html.escape(s["method"])}</h2>')
    rows.append(f'<p>{html.escape(s["caption"])}</p>')
    if s.get("error"):
      rows.append(f'<p class="error">Not shown: {html.escape(s["error"])}</p>')
    for path in s["files"]:
      rel = os.path.relpath(path, out_dir)
      if path.endswith(".png"):
        rows.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(rel)}">'
                    f'<figcaption>{html.escape(rel)}</figcaption></figure>')
      else:
        rows.append(f'<p class="data">Arrays: <a href="{html.escape(rel)}">'
                    f'{html.escape(rel)}</a></p>')
    rows.append(f'<p class="time">{s["seconds"]:.1f} s</p></section>')
  toc = " · ".join(f'<a href="#{html.escape(s["method"])}">{html.escape(s["method"])}</a>'
                   for s in sections)
  stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
section {{ border-top: 1px solid #ccc; padding-top: 0.5em; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
figure {{ margin: 0.5em 0; }}
figcaption, .time, .data {{ color: #777; font-size: 0.8em; }}
.error {{ color: #a33; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>Run: <code>{html.escape(where)}</code>, checkpoint step {trained.step};
dataset <code>{html.escape(str(trained.dataset.name))}</code>; written {stamp}.</p>
<nav>{toc}</nav>
{chr(10).join(rows)}
</body>
</html>
"""


def main_progress(line: str) -> None:
  print(line, file=sys.stderr, flush=True)
