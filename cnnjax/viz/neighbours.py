"""Nearest neighbours: the training images closest to a query, in feature
space and, for comparison, in pixel space (`neighbors`).

The features are those of `scan.features_fn` (by default the input of the
head); the training split is scanned in chunks of `options.batch_size`.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from cnnjax.viz import figures, scan
from cnnjax.viz.registry import Options, Output, register


def nearest(queries: np.ndarray, trained, split: str, batch_size: int,
            features: Callable, top_k: int) -> tuple[np.ndarray, np.ndarray]:
  """L2 nearest rows of `split` for each query feature vector, scanning the
  split in chunks: (indices, distances), both (Q, top_k), nearest first."""
  queries = jnp.asarray(queries, jnp.float32)

  def distances(variables, inputs):
    feats = features(variables, inputs)  # (B, D)
    # (B, Q): examples first, so the last chunk's padding is cut off.
    diff = feats[:, None, :] - queries[None, :, :]  # (B, Q, D)
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))

  parts = [d for _, d in scan.batches(trained, split, batch_size, distances)]
  table = np.concatenate(parts).T  # (Q, N)
  order = np.argsort(table, axis=1, kind="stable")[:, :top_k]
  return order, np.take_along_axis(table, order, axis=1)


def _pixels(variables, inputs):
  del variables
  return jnp.reshape(inputs, (inputs.shape[0], -1)).astype(jnp.float32)


@register("neighbors", "nearest training images in feature space and in "
          "pixel space")
def neighbors(trained, options: Options) -> Output:
  layer = options.layer or None
  features = scan.features_fn(trained, layer)
  examples = scan.query_examples(trained, options)
  train = trained.dataset.train_split
  top_k = max(1, min(options.top_k, trained.split_size(train)))
  query_features = scan.penultimate_features(trained, examples.inputs, layer)
  indices, distances = nearest(query_features, trained, train, options.batch_size,
                               features, top_k)
  query_pixels = np.asarray(_pixels(None, jnp.asarray(examples.inputs)))
  pixel_indices, pixel_distances = nearest(query_pixels, trained, train,
                                           options.batch_size, _pixels, top_k)
  space = layer or f"input of {trained.layer_names()[-1]}"
  figs = {}
  for stem, idx, dist, where in (("neighbors_features", indices, distances, space),
                                 ("neighbors_pixels", pixel_indices,
                                  pixel_distances, "pixels")):
    train_examples = trained.examples(train, indices=np.unique(idx))
    lookup = {int(e): n for n, e in enumerate(train_examples.indices)}
    tiles, titles = [], []
    for q in range(len(examples.labels)):
      tiles.append(examples.images[q])
      titles.append(f"query {scan.class_name(trained, examples.labels[q])}")
      for t in range(top_k):
        n = lookup[int(idx[q, t])]
        tiles.append(train_examples.images[n])
        titles.append(f"{scan.class_name(trained, train_examples.labels[n])} "
                      f"d={dist[q, t]:.2f}")
    figs[stem] = figures.image_grid(
        tiles, titles, columns=1 + top_k, size=1.1,
        title=f"{top_k} nearest {train} images (L2 in {where}); first column: query")
  return Output(
      arrays={"indices": indices, "distances": distances,
              "pixel_indices": pixel_indices, "pixel_distances": pixel_distances,
              "query_indices": np.asarray(examples.indices),
              "query_labels": np.asarray(examples.labels)},
      figures=figs,
      caption=f"Nearest {train} images to each query, by L2 distance of the "
              f"features ({space}) and, for comparison, of the pixels.")


__all__ = ["nearest", "neighbors"]
