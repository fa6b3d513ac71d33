"""Images made by gradient ascent: class models, neurons, DeepDream.

Every method here (and `style-transfer`, in `style`) optimizes an input image
for an objective computed by the trained network, with the same machinery,
`gradient_ascent`:

- `class-model` (Simonyan et al., 2014): an image per class maximizing the
  class score (the logit) minus an L2 penalty, from the mean image (zero in
  model-input space), with the regularizers of Yosinski et al. (2015):
  jitter, periodic Gaussian blur, L2 decay and clipping to the input range;
- `neuron`: the same for the mean activation (or the centre unit) of one
  channel of a layer;
- `deepdream` (Mordvintsev et al., 2015): a real image pushed to excite a
  layer (mean squared activation), coarse to fine over octaves.

Everything numeric is JAX, jitted, one chunk of `options.batch_size` images at
a time (`runs.inference.map_batches`); the network's variables are jit
arguments (not constants baked into the trace).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.runs import inference
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


def ascent_settings(trained, options: Options, *, steps: int, lr: float, l2: float,
                    jitter: int | None, blur_every: int, blur_sigma: float,
                    optimizer: str) -> dict[str, Any]:
  """The keyword arguments of `gradient_ascent`: defaults, overridden by
  --option values.

  `lr` is given as a fraction of the input range's width (so one default
  suits inputs in [0, 1] and standardized ones).
  """
  low, high = trained.input_range()
  height = trained.input_shape[0] if len(trained.input_shape) >= 3 else 1
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


def conv_map_layers(trained) -> list[str]:
  """Layers whose output is a (B, H, W, C) map with H, W > 1 and that hold a
  convolution kernel (e.g. LeNet-5: c1, c3); any such map if none do."""
  shapes = trained.layer_shapes()
  maps = [n for n, s in shapes.items() if len(s) == 3 and s[0] > 1 and s[1] > 1]
  params = dict(trained.variables).get("params", {})
  convs = [n for n in maps if _has_kernel(params, n.split("/"))]
  return convs or maps


def feature_layer(trained, layer: str) -> str:
  """`layer` if given (checked), else the last conv-like layer."""
  if layer:
    trained.check_layer(layer)
    return layer
  layers = conv_map_layers(trained)
  if not layers:
    raise CnnjaxError("this model has no layer with a spatial feature map; "
                      "name one with --layer")
  return layers[-1]


def _ascend_in_chunks(solve, trained, arrays: Sequence[np.ndarray], batch_size: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Runs `solve(variables, *chunk, key) -> (images (B, ...), objective
  (steps, B))` over chunks of the rows of `arrays`, chunk i with the key
  fold_in(key(seed), i). Returns (images (N, ...), objective (steps, N))."""
  rows = np.arange(len(arrays[0]))
  size = max(1, min(int(batch_size), len(rows)))

  def chunk(first, *parts):
    key = jax.random.fold_in(jax.random.key(seed), int(first[0]) // size)
    x, objective = solve(trained.variables, *parts, key)
    return x, jnp.transpose(objective)  # Examples first, to cut the padding.

  images, objective = inference.map_batches(chunk, (rows, *arrays), size)
  return images, objective.T


def _start_images(trained, options: Options, count: int) -> np.ndarray:
  """The mean image (zeros in model-input space) plus faint noise, 1% of the
  input range (`--option init_noise`): at exactly zero a network without
  biases (e.g. freshly initialized) has dead ReLUs and no gradient."""
  low, high = trained.input_range()
  noise = options.get("init_noise", 0.01) * (high - low)
  rng = np.random.default_rng(options.seed)
  return (noise * rng.standard_normal((count, *trained.input_shape))).astype(np.float32)


def _display(trained, x) -> np.ndarray:
  return np.asarray(trained.to_display(x))


def _curve_figure(history: np.ndarray, labels: Sequence[str], title: str, ylabel: str):
  plt = figures.pyplot()
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
def class_model(trained, options: Options) -> Output:
  trained.require_images("synthesis")
  num_classes = trained.dataset.num_classes
  if options.target_class >= num_classes:
    raise CnnjaxError(f"--target-class {options.target_class} is out of range: the "
                      f"model has {num_classes} classes")
  classes = (np.arange(num_classes) if options.target_class < 0
             else np.array([options.target_class]))
  settings = ascent_settings(trained, options, steps=200, lr=0.02, l2=1e-3, jitter=None,
                             blur_every=4, blur_sigma=0.5, optimizer="adam")

  @jax.jit
  def solve(variables, x0, targets, key):
    model = trained.with_variables(variables)

    def score(x):  # (B,) the logit of each image's class
      logits = model.logits(x)
      return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]

    x, history = gradient_ascent(score, x0, key=key, **settings)
    return x, history["objective"]

  x0 = _start_images(trained, options, len(classes))  # ~ the mean image
  images, history = _ascend_in_chunks(solve, trained, (x0, classes.astype(np.int32)),
                                      options.batch_size, options.seed)
  logits = inference.map_batches(jax.jit(trained.logits), (images,), options.batch_size)
  scores = logits[np.arange(len(classes)), classes]
  names = [trained.class_names[c] for c in classes]
  display = _display(trained, images)
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
def neuron(trained, options: Options) -> Output:
  trained.require_images("synthesis")
  layer = feature_layer(trained, options.layer)
  shape = trained.layer_shapes()[layer]
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
  settings = ascent_settings(trained, options, steps=200, lr=0.02, l2=1e-3, jitter=None,
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
    model = trained.with_variables(variables)
    x, history = gradient_ascent(lambda x: channel_value(model, x, targets), x0,
                                 key=key, **settings)
    return x, history["objective"]

  x0 = _start_images(trained, options, len(channels))
  images, history = _ascend_in_chunks(solve, trained, (x0, channels.astype(np.int32)),
                                      options.batch_size, options.seed)
  start = jax.jit(lambda v, x, t: channel_value(trained.with_variables(v), x, t))
  final = np.asarray(start(trained.variables, jnp.asarray(images), jnp.asarray(channels)))
  initial = np.asarray(start(trained.variables, jnp.asarray(x0), jnp.asarray(channels)))
  display = _display(trained, images)
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
def deepdream(trained, options: Options) -> Output:
  trained.require_images("synthesis")
  layer = feature_layer(trained, options.layer)
  split = options.split or trained.eval_split
  indices = options.indices or tuple(range(min(2, trained.split_size(split))))
  examples = trained.examples(split, indices=indices)
  settings = ascent_settings(trained, options, steps=20, lr=0.01, l2=0.0, jitter=None,
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
    model = trained.with_variables(variables)
    return deep_dream(lambda x: energy(model, x), x0, octaves=octaves,
                      octave_scale=octave_scale, steps=settings["steps"],
                      lr=settings["lr"], jitter=settings["jitter"],
                      clip=settings["clip"], key=key)

  dreamed, history = _ascend_in_chunks(solve, trained, (examples.inputs,),
                                       options.batch_size, options.seed)
  measure = jax.jit(lambda v, x: energy(trained.with_variables(v), x))
  before = np.asarray(measure(trained.variables, jnp.asarray(examples.inputs)))
  after = np.asarray(measure(trained.variables, jnp.asarray(dreamed)))
  display = _display(trained, dreamed)
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
