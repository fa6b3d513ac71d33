"""Sanity check of attribution maps (Adebayo et al. 2018): `sanity-check`.

A map that explains the model should change when the model's weights do. The
method re-initialises the weights from the top layer down, one more layer at
each stage, and compares the saliency, guided backprop and Grad-CAM maps (of
`attribution`) with those of the trained weights by rank correlation.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.ops import random as random_ops
from cnnjax.runs import inference
from cnnjax.viz import attribution, figures
from cnnjax.viz.registry import Options, Output, register


def _parameter_modules(trained) -> list[str]:
  """Top-level modules holding variables, in call order (input to output)."""
  owners = set()
  for collection in trained.variables.values():
    owners.update(collection.keys())
  order = []
  for name in trained.layer_names():
    top = name.split("/")[0]
    if top in owners and top not in order:
      order.append(top)
  order += sorted(owners - set(order))  # any not seen as a module output
  return order


def _randomized(variables, fresh, modules: Sequence[str]):
  """`variables` with the entries of `modules` taken from `fresh`."""
  out = {}
  for collection, entries in variables.items():
    entries = dict(entries)
    for module in modules:
      if module in entries and module in fresh.get(collection, {}):
        entries[module] = fresh[collection][module]
    out[collection] = entries
  return out


@register("sanity-check", "Sanity check: how the maps change when the weights are "
          "re-initialised from the top layer down (Adebayo et al. 2018)")
def sanity_check(trained, options: Options) -> Output:
  trained.require_images("an attribution map")
  batch = attribution.batch_to_explain(trained, options)
  modules = _parameter_modules(trained)
  example = jnp.zeros((1, *trained.input_shape), jnp.float32)
  fresh = random_ops.init(trained.model, jax.random.key(options.seed + 1), example,
                          train=False)
  fresh = jax.device_get(fresh)
  fresh = {k: dict(v) for k, v in fresh.items()}
  layer = attribution.cam_layer(trained, options)
  grad_fn = attribution.gradient_fn(trained)
  guided_fn = attribution.gradient_fn(trained, "guided")
  cam_fn = attribution.gradcam_fn(trained, layer)
  method_names = ("saliency", "guided backprop", "Grad-CAM")

  def maps_for(variables):  # (methods, N, H, W)
    grads = attribution.gradients(trained, variables, batch.inputs, batch.targets,
                                  options.batch_size, grad_fn=grad_fn)
    guided = attribution.gradients(trained, variables, batch.inputs, batch.targets,
                                   options.batch_size, grad_fn=guided_fn)
    cams = inference.map_batches(lambda x, t: cam_fn(variables, x, t),
                                 (batch.inputs, batch.targets), options.batch_size)
    return np.stack([attribution.heat(grads), attribution.heat(guided), cams])

  # Stage k re-initialises the top k parameter modules (cascading down).
  stages = [modules[len(modules) - k:] for k in range(1, len(modules) + 1)]
  trained_maps = maps_for(trained.variables)
  randomized = np.stack([maps_for(_randomized(trained.variables, fresh, s)) for s in stages])
  n = len(batch.inputs)
  correlations = np.array([[[attribution.spearman(trained_maps[m, i], randomized[s, m, i])
                             for i in range(n)] for m in range(len(method_names))]
                           for s in range(len(stages))])  # (stages, methods, N)
  with np.errstate(all="ignore"):
    mean_corr = np.nanmean(correlations, axis=-1) if np.isfinite(correlations).any() \
        else np.full(correlations.shape[:2], np.nan)
  stage_names = [f"{s[0]}.." if len(s) > 1 else s[0] for s in stages]
  fig = _sanity_figure(batch, trained.class_names, trained_maps, randomized, correlations,
                       method_names, stage_names)
  last = ", ".join(f"{m} {c:.2f}" for m, c in zip(method_names, mean_corr[-1]))
  return Output(arrays={**batch.arrays(), "trained_maps": trained_maps,
                        "randomized_maps": randomized, "spearman": mean_corr,
                        "spearman_per_example": correlations,
                        "methods": np.asarray(method_names),
                        "stages": np.asarray([",".join(s) for s in stages]),
                        "layer": np.asarray(layer)},
                figures={"sanity-check": fig},
                caption=f"Maps of the trained model vs models re-initialised from the top "
                        f"layer down; rank correlation with all layers random: {last}. A "
                        f"method that ignores the weights keeps a high correlation.")


def _sanity_figure(batch, class_names, trained_maps, randomized, correlations, method_names,
                   stage_names):
  """For the first example: one row per method, the trained map then one
  column per randomisation stage, titled with the rank correlation."""
  plt = figures.pyplot()
  columns = 2 + len(stage_names)
  rows = len(method_names)
  fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.6 * rows + 0.6),
                           squeeze=False)
  image = batch.images[0]
  grey = np.asarray(image).mean(-1)
  for m, method in enumerate(method_names):
    figures.show_image(axes[m, 0], image)
    axes[m, 0].set_ylabel(method, fontsize=8)
    panels = [(trained_maps[m, 0], "trained")] + [
        (randomized[s, m, 0], f"{stage_names[s]}\nrho={correlations[s, m, 0]:.2f}")
        for s in range(len(stage_names))]
    for j, (heat, title) in enumerate(panels):
      ax = axes[m, j + 1]
      figures.show_image(ax, grey)
      ax.imshow(figures.rescale(heat), cmap="jet", alpha=0.55, vmin=0, vmax=1,
                interpolation="bilinear")
      ax.set_title(title, fontsize=6)
  if len(batch.images):
    axes[0, 0].set_title(batch.row_titles(class_names)[0], fontsize=7)
  fig.suptitle("Sanity check: re-initialised from the top layer down "
               "(rho: Spearman vs trained)", fontsize=8)
  fig.tight_layout()
  return fig
