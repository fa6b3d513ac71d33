"""What a detector or a segmenter predicts, beside the ground truth.

    cnnjax visualize detections --workdir RUN   # boxes: truth | prediction
    cnnjax visualize masks --workdir RUN        # image | true map | predicted map

One row per example (`--num-examples`, `--indices`, `--split`). Detections
are drawn with their class names and scores; `--option score=0.5` hides
those below a score (default 0.3). Class maps use one colour per class,
background black. The gallery runs each on the runs of its task and skips
it, saying why, on the others.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.viz import figures, scan
from cnnjax.viz.registry import Options, Output, register


def _colours(count: int) -> np.ndarray:
  plt = figures.pyplot()
  colours = plt.get_cmap("tab20")(np.arange(count) % 20)[:, :3]
  colours[0] = 0.0  # the background
  return colours


def _draw_boxes(ax, boxes, labels, names, colours, scores=None):
  plt = figures.pyplot()
  for k, (box, label) in enumerate(zip(boxes, labels)):
    x1, y1, x2, y2 = (float(v) for v in box)
    colour = colours[int(label) % len(colours)]
    ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                               edgecolor=colour, linewidth=1.2))
    text = names[int(label)] if int(label) < len(names) else str(int(label))
    if scores is not None:
      text += f" {float(scores[k]):.2f}"
    ax.text(x1, y1 - 1, text, fontsize=6, color="white",
            bbox=dict(facecolor=colour, alpha=0.7, pad=0.5, linewidth=0))


@register("detections", "a detector's boxes beside the ground truth's", tasks=("detection",))
def detections(trained, options: Options) -> Output:
  threshold = float(options.get("score", 0.3))
  examples = scan.query_examples(trained, options)
  split = scan.split_name(trained, options)
  arrays = trained.dataset.splits[split]
  gt_boxes = np.asarray(arrays["boxes"])[examples.indices]
  gt_classes = np.asarray(arrays["label"])[examples.indices]
  out = jax.device_get(jax.jit(lambda v, x: trained.model.apply(v, x, train=False))(
      trained.variables, jnp.asarray(examples.inputs)))
  names = trained.class_names
  colours = _colours(len(names))
  plt = figures.pyplot()
  n = len(examples.indices)
  fig, axes = plt.subplots(n, 2, figsize=(5.0, 2.5 * n + 0.3), squeeze=False)
  for row in range(n):
    image = np.asarray(examples.images[row])
    real = gt_classes[row] > 0
    keep = np.asarray(out["valid"][row]) & (np.asarray(out["scores"][row]) >= threshold)
    for col, ax in enumerate(axes[row]):
      ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
      ax.set_xticks([])
      ax.set_yticks([])
    _draw_boxes(axes[row, 0], gt_boxes[row][real], gt_classes[row][real], names, colours)
    _draw_boxes(axes[row, 1], np.asarray(out["boxes"][row])[keep],
                np.asarray(out["classes"][row])[keep], names, colours,
                np.asarray(out["scores"][row])[keep])
    axes[row, 0].set_title(f"#{int(examples.indices[row])}: truth ({int(real.sum())})",
                           fontsize=8)
    axes[row, 1].set_title(f"predicted ({int(keep.sum())} >= {threshold:g})", fontsize=8)
  fig.tight_layout()
  return Output(
      arrays={"boxes": np.asarray(out["boxes"]), "scores": np.asarray(out["scores"]),
              "classes": np.asarray(out["classes"]), "valid": np.asarray(out["valid"]),
              "indices": np.asarray(examples.indices)},
      figures={"detections": fig},
      caption=f"Ground-truth boxes (left) and the detector's (right, score >= "
              f"{threshold:g}) on {n} {split} images.")


@register("masks", "a segmenter's class maps beside the ground truth's",
          tasks=("segmentation",))
def masks(trained, options: Options) -> Output:
  examples = scan.query_examples(trained, options)
  logits = jax.device_get(jax.jit(lambda v, x: trained.model.apply(v, x, train=False))(
      trained.variables, jnp.asarray(examples.inputs)))
  predicted = np.argmax(np.asarray(logits), axis=-1)
  truth = np.asarray(examples.labels)
  colours = _colours(trained.dataset.num_classes)
  ignored = truth >= len(colours)
  truth_rgb = colours[np.where(ignored, 0, truth)]
  truth_rgb[ignored] = 1.0  # ignored pixels white
  tiles, titles = [], []
  for row, index in enumerate(examples.indices):
    right = truth[row] == predicted[row]
    valid = ~ignored[row]
    accuracy = right[valid].mean() if valid.any() else float("nan")
    tiles += [np.asarray(examples.images[row]), truth_rgb[row], colours[predicted[row]]]
    titles += [f"#{int(index)}", "truth", f"predicted ({100 * accuracy:.0f}% px)"]
  fig = figures.image_grid(tiles, titles, columns=3, size=1.8,
                           title="classes: " + ", ".join(trained.class_names))
  return Output(arrays={"predicted": predicted.astype(np.int32), "truth": truth,
                        "indices": np.asarray(examples.indices)},
                figures={"masks": fig},
                caption="Each image, its true class map and the predicted one "
                        "(one colour per class, background black, ignored pixels white).")
