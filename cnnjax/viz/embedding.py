"""Embeddings: 2-D maps (PCA and t-SNE) of the features of many examples,
coloured by class, with thumbnails of the images (`embedding`).

The features are those of `scan.features_fn` (by default the input of the
head), computed over the split in chunks of `options.batch_size`.
"""

from __future__ import annotations

import numpy as np

from cnnjax.viz import figures, scan
from cnnjax.viz.registry import Options, Output, register


def _colour_labels(labels) -> np.ndarray:
  labels = np.asarray(labels)
  return labels.argmax(-1) if labels.ndim > 1 else labels.astype(int)


def pca_2d(features: np.ndarray) -> np.ndarray:
  """(N, D) -> (N, 2): projections of the centred rows on the top-2 axes."""
  centred = np.asarray(features, np.float64) - np.mean(features, axis=0)
  _, _, axes = np.linalg.svd(centred, full_matrices=False)
  coords = centred @ axes[:2].T
  if coords.shape[1] < 2:  # One feature (or one point): pad a zero axis.
    coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
  return coords.astype(np.float32)


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
  """(N, D) -> (N, 2) with sklearn's t-SNE, perplexity min(30, N / 4)."""
  from sklearn.manifold import TSNE

  n = len(features)
  tsne = TSNE(n_components=2, perplexity=max(1.0, min(30.0, n / 4)), init="pca",
              random_state=seed)
  return tsne.fit_transform(np.asarray(features, np.float32)).astype(np.float32)


def _scatter(trained, coords, labels, title):
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 5.5))
  colours = _colour_labels(labels)
  cmap = plt.get_cmap("tab10" if trained.dataset.num_classes <= 10 else "tab20")
  for c in np.unique(colours):
    mask = colours == c
    ax.scatter(coords[mask, 0], coords[mask, 1], s=10, color=cmap(int(c) % cmap.N),
               label=scan.class_name(trained, c))
  ax.legend(fontsize=7, markerscale=1.5, loc="best", ncol=2 if len(np.unique(colours)) > 10 else 1)
  ax.set_title(title, fontsize=10)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  return fig


def _thumbnails(trained, coords, images, labels, title):
  from matplotlib.offsetbox import AnnotationBbox, OffsetImage

  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(9, 9))
  colours = _colour_labels(labels)
  cmap = plt.get_cmap("tab10" if trained.dataset.num_classes <= 10 else "tab20")
  zoom = 0.6 * 32 / max(images.shape[1], images.shape[2])
  # Dots for every point; thumbnails only where they do not hide another
  # thumbnail (greedy, in a random order), so the map stays readable.
  ax.scatter(coords[:, 0], coords[:, 1], s=4,
             color=[cmap(int(c) % cmap.N) for c in colours])
  span = coords.max(0) - coords.min(0) + 1e-6
  unit = (coords - coords.min(0)) / span  # (N, 2) in [0, 1]
  placed: list[np.ndarray] = []
  for n in np.random.default_rng(0).permutation(len(coords)):
    if placed and np.min(np.max(np.abs(np.asarray(placed) - unit[n]), axis=1)) < 0.045:
      continue
    placed.append(unit[n])
    image, c = images[n], colours[n]
    picture = image[..., 0] if image.shape[-1] == 1 else image
    box = OffsetImage(np.clip(picture, 0, 1), zoom=zoom,
                      cmap="gray" if picture.ndim == 2 else None)
    ax.add_artist(AnnotationBbox(box, coords[n], frameon=True, pad=0.05,
                                 bboxprops=dict(edgecolor=cmap(int(c) % cmap.N),
                                                linewidth=1.2)))
  margin = 0.05 * span
  ax.set_xlim(coords[:, 0].min() - margin[0], coords[:, 0].max() + margin[0])
  ax.set_ylim(coords[:, 1].min() - margin[1], coords[:, 1].max() + margin[1])
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  return fig


@register("embedding", "PCA and t-SNE maps of the penultimate features")
def embedding(trained, options: Options) -> Output:
  split = scan.split_name(trained, options)
  layer = options.layer or None
  total = trained.split_size(split)
  max_points = max(2, options.get("max_points", 2000))
  if options.indices:
    rows = np.asarray(options.indices)
  elif total > max_points:
    rows = np.sort(np.random.default_rng(options.seed).choice(
        total, max_points, replace=False))
  else:
    rows = np.arange(total)
  parts = [f for _, f in scan.batches(trained, split, options.batch_size,
                                       scan.features_fn(trained, layer), indices=rows)]
  feats = np.concatenate(parts)
  labels = np.asarray(trained.dataset.splits[split]["label"][rows])
  space = layer or f"the input of {trained.layer_names()[-1]}"
  pca = pca_2d(feats)
  arrays = {"pca": pca, "labels": labels, "indices": rows}
  figs = {"embedding_pca": _scatter(
      trained, pca, labels, f"PCA of the features ({space}; {split}, {len(rows)} points)")}
  thumbs_at, thumbs_name = pca, "PCA"
  if options.get("tsne", True) and len(rows) >= 5:
    tsne = tsne_2d(feats, options.seed)
    arrays["tsne"] = tsne
    figs["embedding_tsne"] = _scatter(
        trained, tsne, labels, f"t-SNE of the features ({space}; {split}, {len(rows)} points)")
    thumbs_at, thumbs_name = tsne, "t-SNE"
  if len(rows) <= 500:
    images = trained.examples(split, indices=rows).images
    figs["embedding_images"] = _thumbnails(
        trained, thumbs_at, images, labels,
        f"{thumbs_name} of the features ({space}), with some of the images")
  return Output(arrays=arrays, figures=figs,
                caption=f"2-D maps of the features ({space}) of {len(rows)} {split} "
                        f"examples (PCA and t-SNE), coloured by class.")


__all__ = ["embedding", "pca_2d", "tsne_2d"]
