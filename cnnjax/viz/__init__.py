"""Looking inside trained CNNs: `cnnjax visualize METHOD --workdir RUN`.

`load_trained(workdir)` gives a `runs.TrainedModel` (a checkpoint's model,
variables and data); `run_method(name, trained, Options(...), out_dir)` runs
one method (see `method_names()`) and writes its PNG figures and .npz arrays;
`write_gallery` runs them all into one HTML page.

The methods, by module: `inspection` (filters, activations, patches),
`neighbours`, `embedding`, `attribution` (gradient maps, Grad-CAM, occlusion,
integrated gradients), `sanity` (the sanity check of attribution maps),
`synthesis` (class models, neurons, DeepDream), `style` (style transfer) and
`predictions` (a detector's boxes, a segmenter's class maps, beside the truth);
`scan` holds what the inspection methods share, `registry` the names.
"""

from cnnjax.errors import CnnjaxError
from cnnjax.runs import Run, TrainedModel
from cnnjax.viz.registry import Options, method_names, run_method  # noqa: F401


def load_trained(workdir: str, *, which: str = "latest") -> TrainedModel:
  """The latest (or 'best', or a step's) checkpoint of the run in `workdir`,
  with its images held in memory, as visualization needs them."""
  from cnnjax.data.arrays import ArrayDataset

  run = Run.open(workdir)
  dataset = run.dataset()
  if not isinstance(dataset, ArrayDataset) or dataset.input_key != "image":
    raise CnnjaxError(
        f"visualization needs images held in memory; dataset "
        f"'{run.config.dataset.name}' is "
        + ("streamed" if not isinstance(dataset, ArrayDataset) else "text"))
  return run.trained(which)


make_trained = TrainedModel.from_parts

# Importing the method modules registers their methods, in this order (that of
# `method_names()`, the CLI's help and the gallery). Any `cnnjax.viz.*` import
# runs this file first, so the registry is always complete.
from cnnjax.viz import inspection, neighbours, embedding  # noqa: E402,F401
from cnnjax.viz import attribution, sanity  # noqa: E402,F401
from cnnjax.viz import synthesis, style  # noqa: E402,F401
from cnnjax.viz import handcrafted  # noqa: E402,F401
from cnnjax.viz import predictions  # noqa: E402,F401
