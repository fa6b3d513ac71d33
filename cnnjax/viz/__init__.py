"""Looking inside trained CNNs: `cnnjax visualize METHOD --workdir RUN`.

`load_run(workdir)` gives a `Run`; `run_method(name, run, Options(...), out_dir)`
runs one method (see `method_names()`) and writes its PNG figures and .npz
arrays; `write_gallery` runs them all into one HTML page.
"""

from cnnjax.viz.registry import Options, method_names, run_method  # noqa: F401
from cnnjax.viz.run import Run, load_run, make_run  # noqa: F401
