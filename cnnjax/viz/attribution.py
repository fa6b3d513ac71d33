"""Attribution: which input pixels (or feature-map places) a class score uses.

Registered methods (see `cnnjax visualize --help`):

- `saliency` (Simonyan et al. 2014): |d score_c / d x|, max over channels;
- `smoothgrad` (Smilkov et al. 2017): the gradient averaged over noisy copies;
- `guided-backprop` (Springenberg et al. 2015) and `deconvnet` (Zeiler &
  Fergus 2014): gradients with a modified ReLU backward rule
  (`cnnjax.viz.relu_rules.modified_relu_gradient`);
- `gradcam` (Selvaraju et al. 2017): feature maps of one layer weighted by
  their mean gradient, and guided Grad-CAM;
- `occlusion` (Zeiler & Fergus 2014): the drop of the class probability when
  a grey square hides part of the image;
- `integrated-gradients` (Sundararajan et al. 2017): gradients averaged along
  the straight path from a baseline (the mean image), times the input change.

The class score is the logit of the example's label (`target_class`
overrides it; `--option use=predicted` explains the predicted class). Every
pass over many inputs (noisy copies, path steps, occluded copies) runs in
jitted chunks of `options.batch_size` (`runs.inference.map_batches`).

`batch_to_explain`, `gradients`, `gradcam_fn`, `heat` and `spearman` are
public for `sanity` (the sanity check of these maps).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.runs import inference
from cnnjax.viz import figures
from cnnjax.viz.registry import Options, Output, register
from cnnjax.viz.relu_rules import has_relu, modified_relu_gradient


# ---------------------------------------------------------------- shared parts


@dataclasses.dataclass
class Batch:
  """The examples a method explains, with the model's view of them."""
  split: str
  inputs: np.ndarray  # (N, H, W, C) model inputs
  images: np.ndarray  # (N, H, W, C) in [0, 1]
  labels: np.ndarray  # (N,)
  indices: np.ndarray  # (N,)
  logits: np.ndarray  # (N, num_classes)
  predicted: np.ndarray  # (N,)
  targets: np.ndarray  # (N,) the class each map explains

  def row_titles(self, class_names: Sequence[str]) -> list[str]:
    def name(c):
      return class_names[int(c)] if 0 <= int(c) < len(class_names) else str(int(c))
    titles = []
    for label, pred, target in zip(self.labels, self.predicted, self.targets):
      label_text = name(label) if np.ndim(label) == 0 else "-"
      title = f"{label_text} / {name(pred)}"
      if np.ndim(label) != 0 or int(target) != int(label):
        title += f"\n(class {name(target)})"
      titles.append(title)
    return titles

  def arrays(self) -> dict[str, np.ndarray]:
    return {"images": self.images, "labels": self.labels, "indices": self.indices,
            "predicted": self.predicted, "targets": self.targets,
            "logits": self.logits}


def _logit_fn(trained, rule: str | None = None) -> Callable:
  """(variables, inputs) -> logits, optionally with a modified ReLU rule."""
  def logits(variables, inputs):
    return trained.with_variables(variables).logits(inputs)
  return modified_relu_gradient(logits, rule) if rule else logits


def gradient_fn(trained, rule: str | None = None) -> Callable:
  """Jitted (variables, inputs (B, ...), targets (B,)) -> d logit_t / d inputs."""
  logits = _logit_fn(trained, rule)

  def score(inputs, variables, targets):
    out = logits(variables, inputs)  # (B, num_classes)
    return jnp.take_along_axis(out, targets[:, None].astype(jnp.int32), axis=1).sum()

  grad = jax.grad(score)
  return jax.jit(lambda variables, inputs, targets: grad(inputs, variables, targets))


def gradients(trained, variables, inputs, targets, batch_size, rule=None, grad_fn=None):
  """d logit_t / d inputs of many inputs, in chunks (`grad_fn`: a
  `gradient_fn` to reuse its compilation)."""
  grad_fn = grad_fn or gradient_fn(trained, rule)
  return inference.map_batches(lambda x, t: grad_fn(variables, x, t), (inputs, targets),
                               batch_size)


def _logits(trained, variables, inputs, batch_size) -> np.ndarray:
  fn = jax.jit(_logit_fn(trained))
  return inference.map_batches(lambda x: fn(variables, x), (inputs,), batch_size)


def _targets(trained, options: Options, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  num_classes = trained.dataset.num_classes
  if options.target_class >= 0:
    if options.target_class >= num_classes:
      raise CnnjaxError(f"target class {options.target_class} is out of range: the "
                        f"model has {num_classes} classes (0 to {num_classes - 1})")
    return np.full(len(labels), options.target_class, np.int32)
  use = str(options.get("use", "label"))
  if use not in ("label", "predicted"):
    raise CnnjaxError(f"--option use={use!r} is not known; use 'label' or 'predicted'")
  if use == "predicted" or np.ndim(labels) != 1:
    return predicted.astype(np.int32)
  return labels.astype(np.int32)


def batch_to_explain(trained, options: Options) -> Batch:
  """The examples of `options` with the model's logits and the target classes."""
  split = options.split or trained.eval_split
  if split not in trained.dataset.splits:
    raise CnnjaxError(f"the dataset has no split '{split}' (its splits: "
                      f"{', '.join(trained.dataset.splits)})")
  examples = trained.examples(split, options.num_examples,
                              indices=list(options.indices) if options.indices else None)
  if len(examples.labels) == 0:
    raise CnnjaxError("no examples to explain; ask for --num-examples 1 or more")
  logits = _logits(trained, trained.variables, examples.inputs, options.batch_size)
  predicted = np.argmax(logits, axis=-1)
  return Batch(split=split, inputs=examples.inputs, images=examples.images,
               labels=examples.labels, indices=examples.indices, logits=logits,
               predicted=predicted,
               targets=_targets(trained, options, examples.labels, predicted))


def heat(values: np.ndarray) -> np.ndarray:
  """(N, H, W, C) -> (N, H, W): max |value| over channels."""
  return np.abs(values).max(axis=-1)


def _signed_image(values: np.ndarray) -> np.ndarray:
  """(H, W, C) signed values -> an image in [0, 1] with 0 at mid grey."""
  values = np.asarray(values, np.float32)
  scale = max(float(np.abs(values).max()), 1e-12)
  return np.clip(0.5 + 0.5 * values / scale, 0.0, 1.0)


def _rows_figure(batch: Batch, class_names, columns, *, title: str = ""):
  """One row per example: the image, then one panel per column.

  `columns`: [(title, maps (N, H, W) or (N, H, W, C), kind)], kind 'heat'
  (rescaled, over the grey image) or 'signed' (shown as an image, 0 = grey).
  """
  plt = figures.pyplot()
  rows, width = len(batch.images), 1 + len(columns)
  fig, axes = plt.subplots(rows, width, figsize=(1.8 * width, 1.8 * rows + 0.5),
                           squeeze=False)
  row_titles = batch.row_titles(class_names)
  for i in range(rows):
    image = batch.images[i]
    figures.show_image(axes[i, 0], image)
    axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
    for j, (column_title, maps, kind) in enumerate(columns):
      ax = axes[i, j + 1]
      if kind == "signed":
        figures.show_image(ax, _signed_image(maps[i]))
      else:
        figures.show_image(ax, np.asarray(image).mean(-1))
        ax.imshow(figures.rescale(maps[i]), cmap="jet", alpha=0.55, vmin=0, vmax=1,
                  interpolation="bilinear")
      if i == 0:
        ax.set_title(column_title, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


# ---------------------------------------------------------------- gradients


@register("saliency", "Saliency map: |gradient of the class score| per pixel "
          "(Simonyan et al. 2014)")
def saliency(trained, options: Options) -> Output:
  trained.require_images("an attribution map")
  batch = batch_to_explain(trained, options)
  grads = gradients(trained, trained.variables, batch.inputs, batch.targets,
                    options.batch_size)
  maps = heat(grads)
  fig = _rows_figure(batch, trained.class_names, [("saliency |grad|", maps, "heat")],
                     title="Saliency (label / predicted)")
  return Output(arrays={**batch.arrays(), "maps": maps, "gradients": grads},
                figures={"saliency": fig},
                caption="Pixels whose change moves the class score most: the "
                        "absolute input gradient, max over channels.")


def smoothgrad_gradients(trained, variables, inputs, targets, *, samples: int, noise: float,
                         batch_size: int, seed: int = 0, rule: str | None = None) -> np.ndarray:
  """Mean gradient over `samples` noisy copies of each input; the noise's
  std is `noise` times each input's value range. (N, ...) -> (N, ...)."""
  inputs = np.asarray(inputs, np.float32)
  n = len(inputs)
  axes = tuple(range(1, inputs.ndim))
  spread = (inputs.max(axis=axes) - inputs.min(axis=axes)).reshape((n,) + (1,) * len(axes))
  rng = np.random.default_rng(seed)
  grad_fn = gradient_fn(trained, rule)
  targets = np.asarray(targets)

  def noisy_gradients(rows):  # The noisy copies are made per chunk.
    noisy = inputs[rows] + (noise * spread[rows] *
                            rng.standard_normal(inputs[rows].shape).astype(np.float32))
    return grad_fn(variables, noisy, targets[rows])

  # Chunks over (example, sample) pairs, summed per example as they come.
  total = np.zeros_like(inputs)
  pairs = np.repeat(np.arange(n), samples)
  for where, grads in inference.iter_batches(noisy_gradients, (pairs,), batch_size):
    np.add.at(total, pairs[where], grads)
  return total / samples


@register("smoothgrad", "SmoothGrad: the gradient averaged over noisy copies of "
          "the input (Smilkov et al. 2017)")
def smoothgrad(trained, options: Options) -> Output:
  trained.require_images("an attribution map")
  batch = batch_to_explain(trained, options)
  samples = options.get("samples", 25)
  noise = options.get("noise", 0.15)
  if samples < 1 or noise < 0:
    raise CnnjaxError("smoothgrad needs --option samples=1 or more and noise=0 or more")
  grads = smoothgrad_gradients(trained, trained.variables, batch.inputs, batch.targets,
                               samples=samples, noise=noise,
                               batch_size=options.batch_size, seed=options.seed)
  plain = gradients(trained, trained.variables, batch.inputs, batch.targets,
                    options.batch_size)
  maps, plain_maps = heat(grads), heat(plain)
  fig = _rows_figure(batch, trained.class_names,
                     [("gradient", plain_maps, "heat"),
                      (f"SmoothGrad ({samples}, {noise:g})", maps, "heat")],
                     title="SmoothGrad vs the plain gradient")
  return Output(arrays={**batch.arrays(), "maps": maps, "gradients": grads,
                        "plain_maps": plain_maps, "samples": np.asarray(samples),
                        "noise": np.asarray(noise)},
                figures={"smoothgrad": fig},
                caption=f"Gradients averaged over {samples} copies with Gaussian noise "
                        f"of {noise:g} x the input range: less speckle than one gradient.")


def _relu_rule_method(trained, options: Options, rule: str, label: str) -> Output:
  trained.require_images("an attribution map")
  batch = batch_to_explain(trained, options)
  grads = gradients(trained, trained.variables, batch.inputs, batch.targets,
                    options.batch_size, rule=rule)
  maps = heat(grads)
  stem = "guided-backprop" if rule == "guided" else "deconvnet"
  # A network without ReLUs (the classic tanh LeNet-5) has no rule to change.
  plain = not has_relu(trained.logits, batch.inputs[:1])
  note = (" This model has no ReLU, so the map is the plain gradient." if plain else "")
  fig = _rows_figure(batch, trained.class_names,
                     [(label, grads, "signed"), (f"|{label}|", maps, "heat")],
                     title=f"{label} (grey = 0)" + (": no ReLU, plain gradient" if plain else ""))
  return Output(arrays={**batch.arrays(), "maps": maps, "gradients": grads},
                figures={stem: fig},
                caption=f"{label}: the gradient with a modified ReLU backward pass, "
                        f"shown as an image (grey = 0) and as its magnitude." + note)


@register("guided-backprop", "Guided backpropagation: only positive gradients "
          "through active ReLUs (Springenberg et al. 2015)")
def guided_backprop(trained, options: Options) -> Output:
  return _relu_rule_method(trained, options, "guided", "guided backprop")


@register("deconvnet", "Deconvnet: gradients through ReLUs passed only where "
          "positive (Zeiler & Fergus 2014)")
def deconvnet(trained, options: Options) -> Output:
  return _relu_rule_method(trained, options, "deconvnet", "deconvnet")


# ---------------------------------------------------------------- Grad-CAM


def default_cam_layer(trained) -> str:
  """The last module output with a spatial map: ndim 4 and H, W > 1."""
  spatial = [n for n, s in trained.layer_shapes().items()
             if len(s) == 3 and s[0] > 1 and s[1] > 1]
  if not spatial:
    raise CnnjaxError(f"model '{trained.config.model.name}' has no layer with a spatial "
                      f"map for Grad-CAM; name one with --layer")
  return spatial[-1]


def gradcam_fn(trained, layer: str) -> Callable:
  """Jitted (variables, inputs (B, H, W, C), targets (B,)) -> (B, H, W) maps."""
  def cam(variables, inputs, targets):
    net = trained.with_variables(variables)
    acts = net.activations(inputs, [layer])[layer]  # (B, h, w, K)
    if acts.ndim != 4:
      raise CnnjaxError(f"Grad-CAM needs a layer with (B, H, W, C) output; "
                        f"'{layer}' gives shape {tuple(acts.shape)}")

    def score(delta):
      logits = net.apply_at(inputs, layer, lambda a: a + delta)
      return jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), 1).sum()

    grads = jax.grad(score)(jnp.zeros_like(acts))
    weights = grads.mean(axis=(1, 2))  # (B, K)
    maps = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", acts, weights))
    size = inputs.shape[:3]
    return jax.image.resize(maps, size, method="bilinear")

  return jax.jit(cam)


def cam_layer(trained, options: Options) -> str:
  """`options.layer` (checked), else `default_cam_layer`."""
  if options.layer:
    trained.check_layer(options.layer)
    return options.layer
  return default_cam_layer(trained)


@register("gradcam", "Grad-CAM: a layer's feature maps weighted by their mean "
          "gradient, and guided Grad-CAM (Selvaraju et al. 2017)")
def gradcam(trained, options: Options) -> Output:
  trained.require_images("an attribution map")
  batch = batch_to_explain(trained, options)
  layer = cam_layer(trained, options)
  cam_fn = gradcam_fn(trained, layer)
  maps = inference.map_batches(lambda x, t: cam_fn(trained.variables, x, t),
                               (batch.inputs, batch.targets), options.batch_size)
  guided = gradients(trained, trained.variables, batch.inputs, batch.targets,
                     options.batch_size, rule="guided")
  guided_cam = guided * maps[..., None]
  fig = _rows_figure(batch, trained.class_names,
                     [(f"Grad-CAM ({layer})", maps, "heat"),
                      ("guided Grad-CAM", guided_cam, "signed")],
                     title=f"Grad-CAM at '{layer}'")
  return Output(arrays={**batch.arrays(), "maps": maps, "guided_gradcam": guided_cam,
                        "layer": np.asarray(layer)},
                figures={"gradcam": fig},
                caption=f"Where layer '{layer}' holds evidence for the class: its maps "
                        f"weighted by the mean gradient, ReLU, upsampled; guided Grad-CAM "
                        f"multiplies by guided backprop.")


# ---------------------------------------------------------------- occlusion


def _window_starts(length: int, size: int, stride: int) -> list[int]:
  starts = list(range(0, max(length - size, 0) + 1, stride))
  if starts[-1] != max(length - size, 0):  # cover the far edge too
    starts.append(max(length - size, 0))
  return starts


def occlusion_maps(trained, variables, inputs, targets, *, size: int, stride: int,
                   batch_size: int):
  """Probability drops for a zero square slid over each input.

  Returns (maps (N, H, W): the mean drop over the windows covering each
  pixel, drops (N, windows), starts (windows, 2) top-left corners,
  probabilities (N,) of the target class without occlusion).
  """
  inputs = np.asarray(inputs, np.float32)
  n, height, width = inputs.shape[:3]
  starts = np.array([(y, x) for y in _window_starts(height, size, stride)
                     for x in _window_starts(width, size, stride)], np.int32)
  logits_fn = _logit_fn(trained)
  all_inputs = jnp.asarray(inputs)

  @jax.jit
  def probs(variables, rows, top, left, target):
    x = all_inputs[rows]  # (B, H, W, C)
    r = jnp.arange(height)[None, :, None]
    c = jnp.arange(width)[None, None, :]
    hidden = ((r >= top[:, None, None]) & (r < top[:, None, None] + size) &
              (c >= left[:, None, None]) & (c < left[:, None, None] + size))
    x = jnp.where(hidden[..., None], 0.0, x)  # zero = the mean after normalization
    p = jax.nn.softmax(logits_fn(variables, x), axis=-1)
    return jnp.take_along_axis(p, target[:, None], axis=1)[:, 0]

  rows = np.repeat(np.arange(n, dtype=np.int32), len(starts))
  tops = np.tile(starts[:, 0], n)
  lefts = np.tile(starts[:, 1], n)
  target = np.asarray(targets, np.int32)[rows]
  occluded = inference.map_batches(lambda *a: probs(variables, *a),
                                   (rows, tops, lefts, target), batch_size)
  occluded = occluded.reshape(n, len(starts))
  away = -10 * size  # A square far outside the image hides nothing.
  base = inference.map_batches(
      lambda r, t: probs(variables, r, np.full_like(r, away), np.full_like(r, away), t),
      (np.arange(n, dtype=np.int32), np.asarray(targets, np.int32)), batch_size)
  drops = base[:, None] - occluded  # (N, windows)
  total = np.zeros((n, height, width), np.float32)
  count = np.zeros((height, width), np.float32)
  for w, (y, x) in enumerate(starts):
    total[:, y:y + size, x:x + size] += drops[:, w, None, None]
    count[y:y + size, x:x + size] += 1
  maps = total / np.maximum(count, 1)
  return maps, drops, starts, base


@register("occlusion", "Occlusion: the drop of the class probability when a grey "
          "square hides each part of the image (Zeiler & Fergus 2014)")
def occlusion(trained, options: Options) -> Output:
  trained.require_images("an attribution map")
  batch = batch_to_explain(trained, options)
  height, width = trained.input_shape[:2]
  size = options.get("size", max(1, min(height, width) // 4))
  stride = options.get("stride", max(1, size // 2))
  if size < 1 or stride < 1 or size > min(height, width):
    raise CnnjaxError(f"occlusion needs --option size= between 1 and "
                      f"{min(height, width)} and stride=1 or more")
  maps, drops, starts, base = occlusion_maps(
      trained, trained.variables, batch.inputs, batch.targets, size=size, stride=stride,
      batch_size=options.batch_size)
  fig = _rows_figure(batch, trained.class_names,
                     [(f"drop of p (square {size}, stride {stride})", maps, "heat")],
                     title="Occlusion sensitivity")
  return Output(arrays={**batch.arrays(), "maps": maps, "drops": drops,
                        "window_starts": starts, "probabilities": base,
                        "size": np.asarray(size), "stride": np.asarray(stride)},
                figures={"occlusion": fig},
                caption=f"How much the class probability falls when a {size}x{size} grey "
                        f"square hides each place (red: the evidence the model uses).")


# ---------------------------------------------------------------- integrated gradients


def integrated_gradients(trained, variables, inputs, targets, *, steps: int, batch_size: int,
                         baseline=None):
  """Midpoint Riemann sum of the gradient along baseline -> input, times
  (input - baseline). Returns (attributions (N, ...), completeness gaps (N,),
  score differences (N,)): gap = |sum(attributions) - (score(x) - score(b))|."""
  inputs = np.asarray(inputs, np.float32)
  baseline = np.zeros_like(inputs) if baseline is None else np.broadcast_to(
      np.asarray(baseline, np.float32), inputs.shape)
  n = len(inputs)
  grad_fn = gradient_fn(trained)
  alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
  rows = np.repeat(np.arange(n), steps)
  alpha = np.tile(alphas, n)
  target = np.asarray(targets, np.int32)[rows]
  shape = (-1,) + (1,) * (inputs.ndim - 1)

  def chunk_grads(r, a, t):
    x = baseline[r] + a.reshape(shape) * (inputs[r] - baseline[r])
    return grad_fn(variables, x, t)

  grads = inference.map_batches(chunk_grads, (rows, alpha, target), batch_size)
  mean_grads = grads.reshape((n, steps) + inputs.shape[1:]).mean(axis=1)
  attributions = (inputs - baseline) * mean_grads
  logits_x = _logits(trained, variables, inputs, batch_size)
  logits_b = _logits(trained, variables, baseline, batch_size)
  idx = np.arange(n), np.asarray(targets)
  difference = logits_x[idx] - logits_b[idx]
  gaps = np.abs(attributions.reshape(n, -1).sum(axis=1) - difference)
  return attributions, gaps, difference


@register("integrated-gradients", "Integrated gradients from the mean image, with "
          "their completeness gap (Sundararajan et al. 2017)")
def integrated_gradients_method(trained, options: Options) -> Output:
  trained.require_images("an attribution map")
  batch = batch_to_explain(trained, options)
  steps = options.steps or 32
  attributions, gaps, difference = integrated_gradients(
      trained, trained.variables, batch.inputs, batch.targets, steps=steps,
      batch_size=options.batch_size)
  maps = np.abs(attributions).sum(axis=-1)
  relative = gaps / np.maximum(np.abs(difference), 1e-8)
  fig = _rows_figure(batch, trained.class_names,
                     [("|attribution|", maps, "heat"),
                      ("attribution", attributions, "signed")],
                     title=f"Integrated gradients ({steps} steps); completeness gap "
                           f"{float(np.max(relative)):.1%} of the score change at most")
  return Output(arrays={**batch.arrays(), "maps": maps, "attributions": attributions,
                        "completeness_gap": gaps, "score_difference": difference,
                        "steps": np.asarray(steps)},
                figures={"integrated-gradients": fig},
                caption="Attributions that sum to the change of the class score from the "
                        "mean image to the input (red: most of it).")


# ---------------------------------------------------------------- comparing maps


def spearman(a, b) -> float:
  """Spearman rank correlation of two maps (NaN if one is constant)."""
  from scipy.stats import rankdata

  a = rankdata(np.ravel(a))
  b = rankdata(np.ravel(b))
  if a.std() == 0 or b.std() == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])
