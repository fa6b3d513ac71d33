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
  the straight path from a baseline (the mean image), times the input change;
- `sanity-check` (Adebayo et al. 2018): how much the maps change when the
  weights are re-initialised, layer by layer from the top.

The class score is the logit of the example's label (`target_class`
overrides it; `--option use=predicted` explains the predicted class). Every
pass over many inputs (noisy copies, path steps, occluded copies) runs in
jitted chunks of `options.batch_size`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.viz import figures
from cnnjax.viz.registry import Options, Output, register
from cnnjax.viz.relu_rules import has_relu, modified_relu_gradient


# ---------------------------------------------------------------- shared parts


@dataclasses.dataclass
class _Batch:
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


def _chunked(fn: Callable, arrays: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
  """fn(*chunk) over the rows of `arrays` in chunks of equal size (the last
  one padded by repeating its last row, so `fn` compiles once)."""
  total = len(arrays[0])
  chunk = max(1, min(int(batch_size), total))
  outs = []
  for start in range(0, total, chunk):
    parts = [np.asarray(a[start:start + chunk]) for a in arrays]
    rows = len(parts[0])
    if rows < chunk:
      parts = [np.concatenate([p, np.repeat(p[-1:], chunk - rows, axis=0)]) for p in parts]
    outs.append(np.asarray(fn(*parts))[:rows])
  return np.concatenate(outs)


def _logit_fn(run, rule: str | None = None) -> Callable:
  """(variables, inputs) -> logits, optionally with a modified ReLU rule."""
  def logits(variables, inputs):
    return run.with_variables(variables).logits(inputs)
  return modified_relu_gradient(logits, rule) if rule else logits


def _gradient_fn(run, rule: str | None = None) -> Callable:
  """Jitted (variables, inputs (B, ...), targets (B,)) -> d logit_t / d inputs."""
  logits = _logit_fn(run, rule)

  def score(inputs, variables, targets):
    out = logits(variables, inputs)  # (B, num_classes)
    return jnp.take_along_axis(out, targets[:, None].astype(jnp.int32), axis=1).sum()

  grad = jax.grad(score)
  return jax.jit(lambda variables, inputs, targets: grad(inputs, variables, targets))


def _gradients(run, variables, inputs, targets, batch_size, rule=None, grad_fn=None):
  grad_fn = grad_fn or _gradient_fn(run, rule)
  return _chunked(lambda x, t: grad_fn(variables, x, t), (inputs, targets), batch_size)


def _logits(run, variables, inputs, batch_size) -> np.ndarray:
  fn = jax.jit(_logit_fn(run))
  return _chunked(lambda x: fn(variables, x), (inputs,), batch_size)


def _targets(run, options: Options, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  num_classes = run.dataset.num_classes
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


def _batch(run, options: Options) -> _Batch:
  split = options.split or run.eval_split
  if split not in run.dataset.splits:
    raise CnnjaxError(f"the dataset has no split '{split}' (its splits: "
                      f"{', '.join(run.dataset.splits)})")
  examples = run.examples(split, options.num_examples,
                          indices=list(options.indices) if options.indices else None)
  if len(examples.labels) == 0:
    raise CnnjaxError("no examples to explain; ask for --num-examples 1 or more")
  logits = _logits(run, run.variables, examples.inputs, options.batch_size)
  predicted = np.argmax(logits, axis=-1)
  return _Batch(split=split, inputs=examples.inputs, images=examples.images,
                labels=examples.labels, indices=examples.indices, logits=logits,
                predicted=predicted,
                targets=_targets(run, options, examples.labels, predicted))


def _heat(gradients: np.ndarray) -> np.ndarray:
  """(N, H, W, C) -> (N, H, W): max |value| over channels."""
  return np.abs(gradients).max(axis=-1)


def _signed_image(values: np.ndarray) -> np.ndarray:
  """(H, W, C) signed values -> an image in [0, 1] with 0 at mid grey."""
  values = np.asarray(values, np.float32)
  scale = max(float(np.abs(values).max()), 1e-12)
  return np.clip(0.5 + 0.5 * values / scale, 0.0, 1.0)


def _rows_figure(batch: _Batch, class_names, columns, *, title: str = ""):
  """One row per example: the image, then one panel per column.

  `columns`: [(title, maps (N, H, W) or (N, H, W, C), kind)], kind 'heat'
  (rescaled, over the grey image) or 'signed' (shown as an image, 0 = grey).
  """
  plt = figures._plt()
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
def saliency(run, options: Options) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  grads = _gradients(run, run.variables, batch.inputs, batch.targets, options.batch_size)
  maps = _heat(grads)
  fig = _rows_figure(batch, run.class_names, [("saliency |grad|", maps, "heat")],
                     title="Saliency (label / predicted)")
  return Output(arrays={**batch.arrays(), "maps": maps, "gradients": grads},
                figures={"saliency": fig},
                caption="Pixels whose change moves the class score most: the "
                        "absolute input gradient, max over channels.")


def smoothgrad_gradients(run, variables, inputs, targets, *, samples: int, noise: float,
                         batch_size: int, seed: int = 0, rule: str | None = None) -> np.ndarray:
  """Mean gradient over `samples` noisy copies of each input; the noise's
  std is `noise` times each input's value range. (N, ...) -> (N, ...)."""
  inputs = np.asarray(inputs, np.float32)
  n = len(inputs)
  axes = tuple(range(1, inputs.ndim))
  spread = (inputs.max(axis=axes) - inputs.min(axis=axes)).reshape((n,) + (1,) * len(axes))
  rng = np.random.default_rng(seed)
  grad_fn = _gradient_fn(run, rule)
  total = np.zeros_like(inputs)
  # Chunks over (example, sample) pairs: the noisy copies are made per chunk.
  pairs = np.repeat(np.arange(n), samples)
  chunk = max(1, min(int(batch_size), len(pairs)))
  for start in range(0, len(pairs), chunk):
    rows = pairs[start:start + chunk]
    m = len(rows)
    if m < chunk:
      rows = np.concatenate([rows, np.repeat(rows[-1:], chunk - m)])
    noisy = inputs[rows] + (noise * spread[rows] *
                            rng.standard_normal(inputs[rows].shape).astype(np.float32))
    grads = np.asarray(grad_fn(variables, noisy, np.asarray(targets)[rows]))[:m]
    np.add.at(total, rows[:m], grads)
  return total / samples


@register("smoothgrad", "SmoothGrad: the gradient averaged over noisy copies of "
          "the input (Smilkov et al. 2017)")
def smoothgrad(run, options: Options) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  samples = options.get("samples", 25)
  noise = options.get("noise", 0.15)
  if samples < 1 or noise < 0:
    raise CnnjaxError("smoothgrad needs --option samples=1 or more and noise=0 or more")
  grads = smoothgrad_gradients(run, run.variables, batch.inputs, batch.targets,
                               samples=samples, noise=noise,
                               batch_size=options.batch_size, seed=options.seed)
  plain = _gradients(run, run.variables, batch.inputs, batch.targets, options.batch_size)
  maps, plain_maps = _heat(grads), _heat(plain)
  fig = _rows_figure(batch, run.class_names,
                     [("gradient", plain_maps, "heat"),
                      (f"SmoothGrad ({samples}, {noise:g})", maps, "heat")],
                     title="SmoothGrad vs the plain gradient")
  return Output(arrays={**batch.arrays(), "maps": maps, "gradients": grads,
                        "plain_maps": plain_maps, "samples": np.asarray(samples),
                        "noise": np.asarray(noise)},
                figures={"smoothgrad": fig},
                caption=f"Gradients averaged over {samples} copies with Gaussian noise "
                        f"of {noise:g} x the input range: less speckle than one gradient.")


def _relu_rule_method(run, options: Options, rule: str, label: str) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  grads = _gradients(run, run.variables, batch.inputs, batch.targets,
                     options.batch_size, rule=rule)
  maps = _heat(grads)
  stem = "guided-backprop" if rule == "guided" else "deconvnet"
  # A network without ReLUs (the classic tanh LeNet-5) has no rule to change.
  plain = not has_relu(run.logits, batch.inputs[:1])
  note = (" This model has no ReLU, so the map is the plain gradient." if plain else "")
  fig = _rows_figure(batch, run.class_names,
                     [(label, grads, "signed"), (f"|{label}|", maps, "heat")],
                     title=f"{label} (grey = 0)" + (": no ReLU, plain gradient" if plain else ""))
  return Output(arrays={**batch.arrays(), "maps": maps, "gradients": grads},
                figures={stem: fig},
                caption=f"{label}: the gradient with a modified ReLU backward pass, "
                        f"shown as an image (grey = 0) and as its magnitude." + note)


@register("guided-backprop", "Guided backpropagation: only positive gradients "
          "through active ReLUs (Springenberg et al. 2015)")
def guided_backprop(run, options: Options) -> Output:
  return _relu_rule_method(run, options, "guided", "guided backprop")


@register("deconvnet", "Deconvnet: gradients through ReLUs passed only where "
          "positive (Zeiler & Fergus 2014)")
def deconvnet(run, options: Options) -> Output:
  return _relu_rule_method(run, options, "deconvnet", "deconvnet")


# ---------------------------------------------------------------- Grad-CAM


def default_cam_layer(run) -> str:
  """The last module output with a spatial map: ndim 4 and H, W > 1."""
  spatial = [n for n, s in run.layer_shapes().items()
             if len(s) == 3 and s[0] > 1 and s[1] > 1]
  if not spatial:
    raise CnnjaxError(f"model '{run.config.model.name}' has no layer with a spatial "
                      f"map for Grad-CAM; name one with --layer")
  return spatial[-1]


def _gradcam_fn(run, layer: str) -> Callable:
  """Jitted (variables, inputs (B, H, W, C), targets (B,)) -> (B, H, W) maps."""
  def cam(variables, inputs, targets):
    net = run.with_variables(variables)
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


def _cam_layer(run, options: Options) -> str:
  if options.layer:
    run.check_layer(options.layer)
    return options.layer
  return default_cam_layer(run)


@register("gradcam", "Grad-CAM: a layer's feature maps weighted by their mean "
          "gradient, and guided Grad-CAM (Selvaraju et al. 2017)")
def gradcam(run, options: Options) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  layer = _cam_layer(run, options)
  cam_fn = _gradcam_fn(run, layer)
  maps = _chunked(lambda x, t: cam_fn(run.variables, x, t),
                  (batch.inputs, batch.targets), options.batch_size)
  guided = _gradients(run, run.variables, batch.inputs, batch.targets,
                      options.batch_size, rule="guided")
  guided_cam = guided * maps[..., None]
  fig = _rows_figure(batch, run.class_names,
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


def occlusion_maps(run, variables, inputs, targets, *, size: int, stride: int,
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
  logits_fn = _logit_fn(run)
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
  occluded = _chunked(lambda *a: probs(variables, *a), (rows, tops, lefts, target),
                      batch_size).reshape(n, len(starts))
  base = _chunked(lambda r, t: probs(variables, r, np.full_like(r, -10 * size),
                                     np.full_like(r, -10 * size), t),
                  (np.arange(n, dtype=np.int32), np.asarray(targets, np.int32)),
                  batch_size)
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
def occlusion(run, options: Options) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  height, width = run.input_shape[:2]
  size = options.get("size", max(1, min(height, width) // 4))
  stride = options.get("stride", max(1, size // 2))
  if size < 1 or stride < 1 or size > min(height, width):
    raise CnnjaxError(f"occlusion needs --option size= between 1 and "
                      f"{min(height, width)} and stride=1 or more")
  maps, drops, starts, base = occlusion_maps(
      run, run.variables, batch.inputs, batch.targets, size=size, stride=stride,
      batch_size=options.batch_size)
  fig = _rows_figure(batch, run.class_names,
                     [(f"drop of p (square {size}, stride {stride})", maps, "heat")],
                     title="Occlusion sensitivity")
  return Output(arrays={**batch.arrays(), "maps": maps, "drops": drops,
                        "window_starts": starts, "probabilities": base,
                        "size": np.asarray(size), "stride": np.asarray(stride)},
                figures={"occlusion": fig},
                caption=f"How much the class probability falls when a {size}x{size} grey "
                        f"square hides each place (red: the evidence the model uses).")


# ---------------------------------------------------------------- integrated gradients


def integrated_gradients(run, variables, inputs, targets, *, steps: int, batch_size: int,
                         baseline=None):
  """Midpoint Riemann sum of the gradient along baseline -> input, times
  (input - baseline). Returns (attributions (N, ...), completeness gaps (N,),
  score differences (N,)): gap = |sum(attributions) - (score(x) - score(b))|."""
  inputs = np.asarray(inputs, np.float32)
  baseline = np.zeros_like(inputs) if baseline is None else np.broadcast_to(
      np.asarray(baseline, np.float32), inputs.shape)
  n = len(inputs)
  grad_fn = _gradient_fn(run)
  alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
  rows = np.repeat(np.arange(n), steps)
  alpha = np.tile(alphas, n)
  target = np.asarray(targets, np.int32)[rows]
  shape = (-1,) + (1,) * (inputs.ndim - 1)

  def chunk_grads(r, a, t):
    x = baseline[r] + a.reshape(shape) * (inputs[r] - baseline[r])
    return grad_fn(variables, x, t)

  grads = _chunked(chunk_grads, (rows, alpha, target), batch_size)
  mean_grads = grads.reshape((n, steps) + inputs.shape[1:]).mean(axis=1)
  attributions = (inputs - baseline) * mean_grads
  logits_x = _logits(run, variables, inputs, batch_size)
  logits_b = _logits(run, variables, baseline, batch_size)
  idx = np.arange(n), np.asarray(targets)
  difference = logits_x[idx] - logits_b[idx]
  gaps = np.abs(attributions.reshape(n, -1).sum(axis=1) - difference)
  return attributions, gaps, difference


@register("integrated-gradients", "Integrated gradients from the mean image, with "
          "their completeness gap (Sundararajan et al. 2017)")
def integrated_gradients_method(run, options: Options) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  steps = options.steps or 32
  attributions, gaps, difference = integrated_gradients(
      run, run.variables, batch.inputs, batch.targets, steps=steps,
      batch_size=options.batch_size)
  maps = np.abs(attributions).sum(axis=-1)
  relative = gaps / np.maximum(np.abs(difference), 1e-8)
  fig = _rows_figure(batch, run.class_names,
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


# ---------------------------------------------------------------- sanity check


def spearman(a, b) -> float:
  """Spearman rank correlation of two maps (NaN if one is constant)."""
  from scipy.stats import rankdata

  a = rankdata(np.ravel(a))
  b = rankdata(np.ravel(b))
  if a.std() == 0 or b.std() == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def _parameter_modules(run) -> list[str]:
  """Top-level modules holding variables, in call order (input to output)."""
  owners = set()
  for collection in run.variables.values():
    owners.update(collection.keys())
  order = []
  for name in run.layer_names():
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
def sanity_check(run, options: Options) -> Output:
  run.require_images("an attribution map")
  batch = _batch(run, options)
  modules = _parameter_modules(run)
  example = jnp.zeros((1, *run.input_shape), jnp.float32)
  fresh = run.model.init(jax.random.key(options.seed + 1), example, train=False)
  fresh = jax.device_get(fresh)
  fresh = {k: dict(v) for k, v in fresh.items()}
  layer = _cam_layer(run, options)
  grad_fn = _gradient_fn(run)
  guided_fn = _gradient_fn(run, "guided")
  cam_fn = _gradcam_fn(run, layer)
  method_names = ("saliency", "guided backprop", "Grad-CAM")

  def maps_for(variables):
    grads = _gradients(run, variables, batch.inputs, batch.targets,
                       options.batch_size, grad_fn=grad_fn)
    guided = _gradients(run, variables, batch.inputs, batch.targets,
                        options.batch_size, grad_fn=guided_fn)
    cams = _chunked(lambda x, t: cam_fn(variables, x, t),
                    (batch.inputs, batch.targets), options.batch_size)
    return np.stack([_heat(grads), _heat(guided), cams])  # (methods, N, H, W)

  # Stage k re-initialises the top k parameter modules (cascading down).
  stages = [modules[len(modules) - k:] for k in range(1, len(modules) + 1)]
  trained = maps_for(run.variables)
  randomized = np.stack([maps_for(_randomized(run.variables, fresh, s)) for s in stages])
  n = len(batch.inputs)
  correlations = np.array([[[spearman(trained[m, i], randomized[s, m, i])
                             for i in range(n)] for m in range(len(method_names))]
                           for s in range(len(stages))])  # (stages, methods, N)
  with np.errstate(all="ignore"):
    mean_corr = np.nanmean(correlations, axis=-1) if np.isfinite(correlations).any() \
        else np.full(correlations.shape[:2], np.nan)
  stage_names = [f"{s[0]}.." if len(s) > 1 else s[0] for s in stages]
  fig = _sanity_figure(batch, run.class_names, trained, randomized, correlations,
                       method_names, stage_names)
  last = ", ".join(f"{m} {c:.2f}" for m, c in zip(method_names, mean_corr[-1]))
  return Output(arrays={**batch.arrays(), "trained_maps": trained,
                        "randomized_maps": randomized, "spearman": mean_corr,
                        "spearman_per_example": correlations,
                        "methods": np.asarray(method_names),
                        "stages": np.asarray([",".join(s) for s in stages]),
                        "layer": np.asarray(layer)},
                figures={"sanity-check": fig},
                caption=f"Maps of the trained model vs models re-initialised from the top "
                        f"layer down; rank correlation with all layers random: {last}. A "
                        f"method that ignores the weights keeps a high correlation.")


def _sanity_figure(batch, class_names, trained, randomized, correlations, method_names,
                   stage_names):
  """For the first example: one row per method, the trained map then one
  column per randomisation stage, titled with the rank correlation."""
  plt = figures._plt()
  columns = 2 + len(stage_names)
  rows = len(method_names)
  fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.6 * rows + 0.6),
                           squeeze=False)
  image = batch.images[0]
  grey = np.asarray(image).mean(-1)
  for m, method in enumerate(method_names):
    figures.show_image(axes[m, 0], image)
    axes[m, 0].set_ylabel(method, fontsize=8)
    panels = [(trained[m, 0], "trained")] + [
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
