"""Images made by gradient ascent: class models, neurons, DeepDream, style.

Every method here optimizes an input image for an objective computed by the
trained network, with the same machinery, `gradient_ascent`:

- `class-model` (Simonyan et al., 2014): an image per class maximizing the
  class score (the logit) minus an L2 penalty, from the mean image (zero in
  model-input space), with the regularizers of Yosinski et al. (2015):
  jitter, periodic Gaussian blur, L2 decay and clipping to the input range;
- `neuron`: the same for the mean activation (or the centre unit) of one
  channel of a layer;
- `deepdream` (Mordvintsev et al., 2015): a real image pushed to excite a
  layer (mean squared activation), coarse to fine over octaves;
- `style-transfer` (Gatys et al., 2016): the content of one example drawn in
  the style (Gram matrices of the conv features) of another.

Everything numeric is JAX, jitted, one batch of images at a time; the
network's variables are jit arguments (not constants baked into the trace).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.viz import figures
from cnnjax.viz.registry import Options, Output, register

_OPTIMIZERS = ("adam", "sgd", "normalized")


# ---------------------------------------------------------------------------
# Helpers (public).


def gram_matrix(a) -> jax.Array:
  """Channel correlations of feature maps, averaged over positions.

  Args:
    a: (..., H, W, C) activations (any number of leading batch axes).

  Returns:
    (..., C, C): G[i, j] = sum over positions of a[p, i] * a[p, j] / (H * W).
  """
  a = jnp.asarray(a, jnp.float32)
  if a.ndim < 3:
    raise ValueError(f"gram_matrix needs (..., H, W, C) activations, got shape {a.shape}")
  positions = a.shape[-3] * a.shape[-2]
  flat = a.reshape(*a.shape[:-3], positions, a.shape[-1])  # (..., HW, C)
  return jnp.einsum("...pi,...pj->...ij", flat, flat) / positions


def _gaussian_kernel(sigma: float) -> np.ndarray:
  radius = max(1, int(math.ceil(3.0 * sigma)))
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
  return (kernel / kernel.sum()).astype(np.float32)  # (2 * radius + 1,)


def gaussian_blur(x, sigma: float) -> jax.Array:
  """Separable Gaussian blur of each channel, edges padded by reflection.

  Args:
    x: (B, H, W, C) or (H, W, C) images.
    sigma: standard deviation in pixels (a Python float); <= 0 returns `x`.

  Returns:
    An array like `x`. The kernel sums to one and the padding repeats the
    image, so a constant image stays the same.
  """
  x = jnp.asarray(x, jnp.float32)
  if sigma <= 0:
    return x
  single = x.ndim == 3
  if single:
    x = x[None]
  kernel = jnp.asarray(_gaussian_kernel(float(sigma)))
  radius = (kernel.shape[0] - 1) // 2
  height, width = x.shape[1], x.shape[2]
  # Reflection needs the pad smaller than the side; 'edge' works for any size.
  mode_h = "reflect" if radius < height else "edge"
  mode_w = "reflect" if radius < width else "edge"
  x = jnp.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode=mode_h)
  x = sum(kernel[i] * x[:, i:i + height] for i in range(kernel.shape[0]))
  x = jnp.pad(x, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode=mode_w)
  x = sum(kernel[i] * x[:, :, i:i + width] for i in range(kernel.shape[0]))
  return x[0] if single else x


def gradient_ascent(objective: Callable, x0, *, steps: int, lr: float,
                    l2: float = 0.0, jitter: int = 0, blur_every: int = 0,
                    blur_sigma: float = 0.0, clip: tuple[float, float] | None = None,
                    key=None, optimizer: str = "adam", has_aux: bool = False):
  """Maximizes `objective` of each image in a batch, with regularizers.

  Each step: roll the images by a random shift of up to `jitter` pixels,
  take the gradient of `objective(x) - l2 * ||x||^2` (per image), roll it
  back, step (Adam, plain gradient ascent 'sgd', or 'normalized': the gradient
  divided by its mean absolute value per image, as in DeepDream), blur every
  `blur_every` steps, and clip to `clip`. A `lax.scan` loop: traceable, so
  callers jit it (with the network's variables as arguments).

  Args:
    objective: x (B, H, W, C) -> (B,) values to maximize (images are
      independent), or with `has_aux` -> ((B,), dict of (B,) arrays).
    x0: (B, H, W, C) starting images in model-input space.
    steps: iterations (a Python int).
    lr: step size in model-input units.
    l2: weight of the L2 penalty on each image.
    jitter: largest random shift in pixels (0: none).
    blur_every: blur the images every this many steps (0: never).
    blur_sigma: the blur's standard deviation in pixels.
    clip: (low, high) model-input values, or None.
    key: a `jax.random` key for the jitter.
    optimizer: 'adam', 'sgd' or 'normalized'.
    has_aux: whether `objective` also returns a dict of per-image values.

  Returns:
    (x, history): the final images (B, H, W, C) and {'objective': (steps, B),
    plus the aux values (steps, B)} recorded at each step's (jittered) input.
  """
  if optimizer not in _OPTIMIZERS:
    raise CnnjaxError(f"unknown optimizer '{optimizer}'; use one of {', '.join(_OPTIMIZERS)}")
  x0 = jnp.asarray(x0, jnp.float32)
  key = jax.random.key(0) if key is None else key
  jitter = int(jitter)
  axes = tuple(range(1, x0.ndim))

  def penalized(x):
    out = objective(x)
    value, aux = out if has_aux else (out, {})
    penalty = l2 * jnp.sum(jnp.square(x), axis=axes)
    return jnp.sum(value - penalty), (value, aux)

  grad_fn = jax.grad(penalized, has_aux=True)
  beta1, beta2, eps = 0.9, 0.999, 1e-8

  def step(carry, inputs):
    x, m, v = carry
    t, step_key = inputs
    if jitter > 0:
      shift = jax.random.randint(step_key, (2,), -jitter, jitter + 1)
      rolled = jnp.roll(x, (shift[0], shift[1]), axis=(1, 2))
      grad, (value, aux) = grad_fn(rolled)
      grad = jnp.roll(grad, (-shift[0], -shift[1]), axis=(1, 2))
    else:
      grad, (value, aux) = grad_fn(x)
    if optimizer == "adam":
      m = beta1 * m + (1 - beta1) * grad
      v = beta2 * v + (1 - beta2) * jnp.square(grad)
      tf = t.astype(jnp.float32) + 1.0
      update = (m / (1 - beta1 ** tf)) / (jnp.sqrt(v / (1 - beta2 ** tf)) + eps)
    elif optimizer == "normalized":
      scale = jnp.mean(jnp.abs(grad), axis=axes, keepdims=True)
      update = grad / (scale + 1e-8)
    else:
      update = grad
    x = x + lr * update
    if blur_every > 0 and blur_sigma > 0:
      x = jax.lax.cond((t + 1) % blur_every == 0,
                       lambda z: gaussian_blur(z, blur_sigma), lambda z: z, x)
    if clip is not None:
      x = jnp.clip(x, clip[0], clip[1])
    return (x, m, v), {"objective": value, **aux}

  zeros = jnp.zeros_like(x0)
  keys = jax.random.split(key, steps)
  (x, _, _), history = jax.lax.scan(step, (x0, zeros, zeros),
                                    (jnp.arange(steps), keys))
  return x, history


# ---------------------------------------------------------------------------
# Shared pieces of the methods.


def _settings(run, options: Options, *, steps: int, lr: float, l2: float,
              jitter: int | None, blur_every: int, blur_sigma: float,
              optimizer: str) -> dict[str, Any]:
  """The optimization settings: defaults, overridden by --option values.

  `lr` is given as a fraction of the input range's width (so one default
  suits inputs in [0, 1] and standardized ones).
  """
  low, high = run.input_range()
  height = run.input_shape[0] if len(run.input_shape) >= 3 else 1
  if jitter is None:
    jitter = max(1, height // 16)
  settings = dict(
      steps=options.steps or options.get("steps", steps),
      lr=options.get("lr", lr) * (high - low),
      l2=options.get("l2", l2),
      jitter=options.get("jitter", jitter),
      blur_every=options.get("blur_every", blur_every),
      blur_sigma=options.get("blur_sigma", blur_sigma),
      optimizer=str(options.get("optimizer", optimizer)),
      clip=(low, high) if options.get("clip", True) else None)
  if settings["steps"] <= 0:
    raise CnnjaxError(f"--steps must be positive, got {settings['steps']}")
  if settings["optimizer"] not in _OPTIMIZERS:
    raise CnnjaxError(f"--option optimizer={settings['optimizer']} is unknown; "
                      f"use one of {', '.join(_OPTIMIZERS)}")
  return settings


def _has_kernel(params, path: Sequence[str]) -> bool:
  node = params
  for part in path:
    if not isinstance(node, dict) or part not in node:
      return False
    node = node[part]
  return any(getattr(leaf, "ndim", 0) >= 4 for leaf in jax.tree_util.tree_leaves(node))


def conv_layers(run) -> list[str]:
  """Layers whose output is a (B, H, W, C) map with H, W > 1 and that hold a
  convolution kernel (e.g. LeNet-5: c1, c3); any such map if none do."""
  shapes = run.layer_shapes()
  maps = [n for n, s in shapes.items() if len(s) == 3 and s[0] > 1 and s[1] > 1]
  params = dict(run.variables).get("params", {})
  convs = [n for n in maps if _has_kernel(params, n.split("/"))]
  return convs or maps


def _feature_layer(run, layer: str) -> str:
  """`layer` if given (checked), else the last conv-like layer."""
  if layer:
    run.check_layer(layer)
    return layer
  layers = conv_layers(run)
  if not layers:
    raise CnnjaxError("this model has no layer with a spatial feature map; "
                      "name one with --layer")
  return layers[-1]


def _chunks(n: int, size: int):
  size = max(1, int(size))
  for start in range(0, n, size):
    yield start, min(n, start + size)


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  """`x` padded with copies of its last row to `size` rows (one compiled shape)."""
  if len(x) == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def _ascend_in_chunks(solve, run, x0: np.ndarray, targets: np.ndarray,
                      batch_size: int, seed: int):
  """Runs `solve(variables, x0, targets, key)` over chunks of the batch."""
  images, histories = [], []
  size = min(len(x0), max(1, batch_size))
  for i, (start, stop) in enumerate(_chunks(len(x0), size)):
    key = jax.random.fold_in(jax.random.key(seed), i)
    x, history = solve(run.variables, jnp.asarray(_padded(x0[start:stop], size)),
                       jnp.asarray(_padded(targets[start:stop], size)), key)
    count = stop - start
    images.append(np.asarray(x)[:count])
    histories.append(np.asarray(history["objective"])[:, :count])
  return np.concatenate(images), np.concatenate(histories, axis=1)


def _start_images(run, options: Options, count: int) -> np.ndarray:
  """The mean image (zeros in model-input space) plus faint noise, 1% of the
  input range (`--option init_noise`): at exactly zero a network without
  biases (e.g. freshly initialized) has dead ReLUs and no gradient."""
  low, high = run.input_range()
  noise = options.get("init_noise", 0.01) * (high - low)
  rng = np.random.default_rng(options.seed)
  return (noise * rng.standard_normal((count, *run.input_shape))).astype(np.float32)


def _display(run, x) -> np.ndarray:
  return np.asarray(run.to_display(x))


def _curve_figure(history: np.ndarray, labels: Sequence[str], title: str, ylabel: str):
  plt = figures._plt()
  fig, ax = plt.subplots(figsize=(5, 3))
  for column, label in zip(np.asarray(history).T, labels):
    ax.plot(column, label=label, linewidth=1)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  if len(labels) <= 12:
    ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  return fig


# ---------------------------------------------------------------------------
# class-model


@register("class-model", "an image per class maximizing its score (Simonyan et al. "
          "2014, with the regularizers of Yosinski et al. 2015)")
def class_model(run, options: Options) -> Output:
  run.require_images("synthesis")
  num_classes = run.dataset.num_classes
  if options.target_class >= num_classes:
    raise CnnjaxError(f"--target-class {options.target_class} is out of range: the "
                      f"model has {num_classes} classes")
  classes = (np.arange(num_classes) if options.target_class < 0
             else np.array([options.target_class]))
  settings = _settings(run, options, steps=200, lr=0.02, l2=1e-3, jitter=None,
                       blur_every=4, blur_sigma=0.5, optimizer="adam")

  @jax.jit
  def solve(variables, x0, targets, key):
    model = run.with_variables(variables)

    def score(x):  # (B,) the logit of each image's class
      logits = model.logits(x)
      return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]

    return gradient_ascent(score, x0, key=key, **settings)

  x0 = _start_images(run, options, len(classes))  # ~ the mean image
  images, history = _ascend_in_chunks(solve, run, x0, classes.astype(np.int32),
                                      options.batch_size, options.seed)
  logits = np.concatenate([np.asarray(jax.jit(run.logits)(images[a:b]))
                           for a, b in _chunks(len(images), options.batch_size)])
  scores = logits[np.arange(len(classes)), classes]
  names = [run.class_names[c] for c in classes]
  display = _display(run, images)
  grid = figures.image_grid(
      display, [f"{n}: {s:.1f}" for n, s in zip(names, scores)],
      title=f"class models (logit after {settings['steps']} steps)", size=1.9)
  grid.subplots_adjust(hspace=0.3)  # room for the titles of the lower rows
  curves = _curve_figure(history, names, "class score during the ascent", "logit")
  return Output(
      arrays={"inputs": images, "images": display, "classes": classes,
              "scores": scores, "logits": logits, "history": history},
      figures={"class-model": grid, "class-model_scores": curves},
      caption="Images synthesized from the mean image to maximize each class's "
              "logit, regularized by jitter, blur, L2 decay and clipping.")


# ---------------------------------------------------------------------------
# neuron


@register("neuron", "images maximizing one channel of a layer (default: the first "
          "channels of the last conv layer)")
def neuron(run, options: Options) -> Output:
  run.require_images("synthesis")
  layer = _feature_layer(run, options.layer)
  shape = run.layer_shapes()[layer]
  if len(shape) not in (1, 3):
    raise CnnjaxError(f"layer '{layer}' has outputs of shape {shape}; pick a "
                      f"layer with a (H, W, C) map or a vector")
  num_channels = shape[-1]
  if options.channel >= num_channels:
    raise CnnjaxError(f"--channel {options.channel} is out of range: layer "
                      f"'{layer}' has {num_channels} channels")
  channels = (np.arange(min(options.get("num_channels", 8), num_channels))
              if options.channel < 0 else np.array([options.channel]))
  unit = str(options.get("unit", "mean"))
  if unit not in ("mean", "center"):
    raise CnnjaxError(f"--option unit={unit} is unknown; use 'mean' or 'center'")
  settings = _settings(run, options, steps=200, lr=0.02, l2=1e-3, jitter=None,
                       blur_every=4, blur_sigma=0.5, optimizer="adam")

  def channel_value(model, x, targets):  # (B,)
    a = model.activations(x, [layer])[layer]
    picked = jnp.take_along_axis(a, targets.reshape((-1,) + (1,) * (a.ndim - 1)),
                                 axis=-1)[..., 0]  # (B, H, W) or (B,)
    if picked.ndim == 3 and unit == "center":
      return picked[:, picked.shape[1] // 2, picked.shape[2] // 2]
    return picked.reshape(picked.shape[0], -1).mean(axis=1)

  @jax.jit
  def solve(variables, x0, targets, key):
    model = run.with_variables(variables)
    return gradient_ascent(lambda x: channel_value(model, x, targets), x0, key=key,
                           **settings)

  x0 = _start_images(run, options, len(channels))
  images, history = _ascend_in_chunks(solve, run, x0, channels.astype(np.int32),
                                      options.batch_size, options.seed)
  start = jax.jit(lambda v, x, t: channel_value(run.with_variables(v), x, t))
  final = np.asarray(start(run.variables, jnp.asarray(images), jnp.asarray(channels)))
  initial = np.asarray(start(run.variables, jnp.asarray(x0), jnp.asarray(channels)))
  display = _display(run, images)
  grid = figures.image_grid(
      display, [f"{layer}[{c}]: {v:.2f}" for c, v in zip(channels, final)],
      title=f"channels of {layer} ({unit} activation)")
  return Output(
      arrays={"inputs": images, "images": display, "channels": channels,
              "activation": final, "initial_activation": initial, "history": history},
      figures={"neuron": grid},
      caption=f"Images synthesized to maximize the {unit} activation of channels of "
              f"layer {layer}.")


# ---------------------------------------------------------------------------
# deepdream


def _octave_sizes(height: int, width: int, octaves: int, scale: float):
  """(h, w) per octave, coarsest first, the last the full size."""
  sizes = []
  for o in range(octaves - 1, -1, -1):
    factor = scale ** o
    sizes.append((max(4, int(round(height / factor))), max(4, int(round(width / factor)))))
  return sizes


def deep_dream(objective: Callable, base, *, octaves: int = 3, octave_scale: float = 1.4,
               steps: int = 20, lr: float = 0.02, jitter: int = 1,
               clip: tuple[float, float] | None = None, key=None):
  """DeepDream ascent of `objective` from `base` (B, H, W, C), coarse to fine.

  At each octave the image is a coarser copy of `base` plus the detail found
  so far; it is optimized at that resolution (resized up to the full size for
  the network, so models with fixed input sizes work too) with normalized
  gradient steps, and the new detail is carried to the next octave.

  Returns:
    (dreamed images (B, H, W, C), history (octaves * steps, B) of the objective).
  """
  base = jnp.asarray(base, jnp.float32)
  batch, height, width, channels = base.shape
  key = jax.random.key(0) if key is None else key
  detail = None
  history = []
  for o, (h, w) in enumerate(_octave_sizes(height, width, octaves, octave_scale)):
    small_base = jax.image.resize(base, (batch, h, w, channels), "linear")
    detail = (jnp.zeros_like(small_base) if detail is None
              else jax.image.resize(detail, (batch, h, w, channels), "linear"))

    def full_size(z):
      return (z if (h, w) == (height, width)
              else jax.image.resize(z, (batch, height, width, channels), "linear"))

    x, hist = gradient_ascent(lambda z: objective(full_size(z)), small_base + detail,
                              steps=steps, lr=lr, jitter=jitter, clip=clip,
                              optimizer="normalized", key=jax.random.fold_in(key, o))
    detail = x - small_base
    history.append(hist["objective"])
  return base + detail if clip is None else jnp.clip(base + detail, *clip), \
      jnp.concatenate(history)


@register("deepdream", "a real image changed to excite a layer, over octaves "
          "(Mordvintsev et al. 2015)")
def deepdream(run, options: Options) -> Output:
  run.require_images("synthesis")
  layer = _feature_layer(run, options.layer)
  split = options.split or run.eval_split
  indices = options.indices or tuple(range(min(2, run.split_size(split))))
  examples = run.examples(split, indices=indices)
  settings = _settings(run, options, steps=20, lr=0.01, l2=0.0, jitter=None,
                       blur_every=0, blur_sigma=0.0, optimizer="normalized")
  octaves = options.get("octaves", 3)
  octave_scale = options.get("octave_scale", 1.4)
  if octaves < 1 or octave_scale < 1:
    raise CnnjaxError("--option octaves must be >= 1 and octave_scale >= 1")

  def energy(model, x):  # (B,) mean squared activation of the layer
    a = model.activations(x, [layer])[layer]
    return jnp.mean(jnp.square(a).reshape(a.shape[0], -1), axis=1)

  @jax.jit
  def solve(variables, x0, key):
    model = run.with_variables(variables)
    return deep_dream(lambda x: energy(model, x), x0, octaves=octaves,
                      octave_scale=octave_scale, steps=settings["steps"],
                      lr=settings["lr"], jitter=settings["jitter"],
                      clip=settings["clip"], key=key)

  dreamed, history = [], []
  size = min(len(indices), max(1, options.batch_size))
  for i, (a, b) in enumerate(_chunks(len(indices), size)):
    x, hist = solve(run.variables, jnp.asarray(_padded(examples.inputs[a:b], size)),
                    jax.random.fold_in(jax.random.key(options.seed), i))
    dreamed.append(np.asarray(x)[:b - a])
    history.append(np.asarray(hist)[:, :b - a])
  dreamed, history = np.concatenate(dreamed), np.concatenate(history, axis=1)
  measure = jax.jit(lambda v, x: energy(run.with_variables(v), x))
  before = np.asarray(measure(run.variables, jnp.asarray(examples.inputs)))
  after = np.asarray(measure(run.variables, jnp.asarray(dreamed)))
  display = _display(run, dreamed)
  panels, titles = [], []
  for i in range(len(indices)):
    panels += [examples.images[i], display[i]]
    titles += [f"#{examples.indices[i]} ({before[i]:.2f})", f"dreamed ({after[i]:.2f})"]
  grid = figures.image_grid(panels, titles, columns=2 * min(2, len(indices)),
                            title=f"DeepDream on {layer}: mean squared activation",
                            size=2.0)
  return Output(
      arrays={"inputs": dreamed, "images": display, "originals": examples.images,
              "indices": examples.indices, "energy_before": before,
              "energy_after": after, "history": history},
      figures={"deepdream": grid},
      caption=f"Real images changed by gradient ascent over {octaves} octaves to "
              f"raise the mean squared activation of layer {layer}.")


# ---------------------------------------------------------------------------
# style-transfer


def style_losses(model, x, *, content_layer: str, style_layers: Sequence[str],
                 content_target, style_targets: dict, style_weight: float = 1.0):
  """Per-image content, style and total losses (each (B,)) of Gatys et al.

  The content loss is the mean squared difference of `content_layer`'s
  activations to `content_target`, the style loss the sum over
  `style_layers` of the mean squared difference of Gram matrices to
  `style_targets[layer]`; each is divided by the mean square of its target so
  that layers of any scale weigh alike.
  """
  layers = list(dict.fromkeys([content_layer, *style_layers]))
  acts = model.activations(x, layers)

  def relative(a, target):
    error = jnp.square(a - target).reshape(a.shape[0], -1).mean(axis=1)
    return error / (jnp.mean(jnp.square(target)) + 1e-8)

  content = relative(acts[content_layer], content_target)
  style = sum(relative(gram_matrix(acts[l]), style_targets[l]) for l in style_layers)
  return content, style, content + style_weight * style


@register("style-transfer", "one example's content in another's style, from the "
          "network's features (Gatys et al. 2016)")
def style_transfer(run, options: Options) -> Output:
  run.require_images("synthesis")
  split = options.split or run.eval_split
  content_layer = _feature_layer(run, options.layer)
  style_layers = options.get("style_layers", ())
  style_layers = ([l for part in style_layers for l in str(part).split(",") if l]
                  or conv_layers(run))
  for layer in style_layers:
    run.check_layer(layer)
  if len(options.indices) >= 2:
    content_index, style_index = options.indices[:2]
  else:
    labels = np.asarray(run.dataset.splits[split]["label"])
    content_index = options.indices[0] if options.indices else 0
    # The style: the first example of another class (or simply the next one).
    if labels.ndim == 1 and np.any(labels != labels[content_index]):
      style_index = int(np.argmax(labels != labels[content_index]))
    else:
      style_index = (content_index + 1) % len(labels)
  examples = run.examples(split, indices=[content_index, style_index])
  settings = _settings(run, options, steps=200, lr=0.01, l2=0.0, jitter=0,
                       blur_every=0, blur_sigma=0.0, optimizer="adam")
  style_weight = options.get("style_weight", 10.0)
  settings.pop("l2")

  @jax.jit
  def solve(variables, content_image, style_image, key):
    model = run.with_variables(variables)
    layers = list(dict.fromkeys([content_layer, *style_layers]))
    targets = model.activations(jnp.concatenate([content_image, style_image]), layers)
    content_target = targets[content_layer][:1]
    style_targets = {l: gram_matrix(targets[l][1:]) for l in style_layers}

    def objective(x):
      content, style, total = style_losses(
          model, x, content_layer=content_layer, style_layers=style_layers,
          content_target=content_target, style_targets=style_targets,
          style_weight=style_weight)
      return -total, {"content": content, "style": style}

    x, history = gradient_ascent(objective, content_image, key=key, has_aux=True,
                                 **settings)
    _, final_aux = objective(x)
    return x, history, final_aux

  content_image = jnp.asarray(examples.inputs[:1])
  style_image = jnp.asarray(examples.inputs[1:2])
  result, history, final = solve(run.variables, content_image, style_image,
                                 jax.random.key(options.seed))
  losses = {"total": -np.asarray(history["objective"])[:, 0],
            "content": np.asarray(history["content"])[:, 0],
            "style": np.asarray(history["style"])[:, 0]}
  final_content = float(final["content"][0])
  final_style = float(final["style"][0])
  final_total = final_content + style_weight * final_style
  display = _display(run, result)

  plt = figures._plt()
  fig, axes = plt.subplots(1, 4, figsize=(10, 2.6),
                           gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
  for ax, image, title in zip(axes, [examples.images[0], examples.images[1], display[0]],
                              [f"content #{content_index}", f"style #{style_index}",
                               "result"]):
    figures.show_image(ax, image)
    ax.set_title(title, fontsize=8)
  for name, curve in losses.items():
    weight = style_weight if name == "style" else 1.0
    axes[3].plot(weight * curve, label=name + (f" x{style_weight:g}" if weight != 1 else ""))
  axes[3].set_yscale("log")
  axes[3].set_xlabel("step")
  axes[3].legend(fontsize=7)
  axes[3].set_title(f"losses (content: {content_layer}; style: {', '.join(style_layers)})",
                    fontsize=7)
  fig.tight_layout()
  return Output(
      arrays={"inputs": np.asarray(result), "images": display,
              "content_image": examples.images[0], "style_image": examples.images[1],
              "indices": np.array([content_index, style_index]),
              "total_loss": losses["total"], "content_loss": losses["content"],
              "style_loss": losses["style"],
              "final_losses": np.array([final_total, final_content, final_style])},
      figures={"style-transfer": fig},
      caption=f"Example {content_index}'s content (layer {content_layer}) drawn with "
              f"example {style_index}'s style (Gram matrices of "
              f"{', '.join(style_layers)}), optimized from the content image.")
