"""Looking inside a trained network: filters, feature maps, patches.

The methods of the lecture's "visualizing and understanding" part that need no
gradients and look at one layer (nearest neighbours and embeddings of the
features are in `neighbours` and `embedding`):

- `filters`: the kernels of a convolution as images;
- `activations`: feature maps of chosen layers for a few examples;
- `patches`: the input patches (receptive fields) that excite a channel most
  (Zeiler & Fergus, 2014; Girshick et al., 2014); the split is scanned in
  chunks of `options.batch_size` (`scan.batches`).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CnnjaxError
from cnnjax.viz import figures, scan
from cnnjax.viz.registry import ANY_TASK, Options, Output, register

_MAX_TILES = 16  # Channels (and filter rows / columns) shown per layer.

# ---------------------------------------------------------------- helpers


def _safe(name: str) -> str:
  """A layer path as a file stem / npz key ('stage1/conv1' -> 'stage1.conv1')."""
  return name.replace("/", ".")


def _subtree(params, path: str):
  tree = params
  for key in path.split("/"):
    if not hasattr(tree, "keys") or key not in tree:
      return None
    tree = tree[key]
  return tree


def layer_kernel(trained, layer: str) -> np.ndarray | None:
  """The convolution kernel of `layer` ((kh, kw, in, out) for 2-D), or None
  if the layer holds no kernel of a convolution. A layer that wraps exactly
  one kernel (e.g. a conv + norm block) gives that one."""
  tree = _subtree(trained.variables["params"], layer)
  if tree is None:
    return None
  if hasattr(tree, "keys") and "kernel" in tree:
    kernels = [tree["kernel"]]
  else:
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
               if getattr(path[-1], "key", None) == "kernel"]
  if len(kernels) != 1 or np.ndim(kernels[0]) < 3:  # Dense kernels are 2-D.
    return None
  return np.asarray(kernels[0], np.float32)


def conv_layers(trained) -> list[str]:
  """Layers (in call order) that are convolutions with a spatial output."""
  shapes = trained.layer_shapes()
  return [name for name, shape in shapes.items()
          if len(shape) >= 2 and layer_kernel(trained, name) is not None]


def spatial_layers(trained) -> list[str]:
  """Layers (in call order) whose output is a map: (H, W, C) and wider."""
  return [name for name, shape in trained.layer_shapes().items() if len(shape) >= 3]


def _symmetric(x: np.ndarray, axes) -> np.ndarray:
  """To [0, 1] with 0 at 0.5: x / (2 max|x|) + 1/2 over `axes`."""
  scale = np.max(np.abs(x), axis=axes, keepdims=True)
  return x / (2 * np.maximum(scale, 1e-12)) + 0.5


def kernel_tiles(kernel: np.ndarray) -> tuple[np.ndarray, str]:
  """Images of a 2-D kernel (kh, kw, in, out), each filter rescaled
  symmetrically (0 is mid-grey, the filter's largest |weight| is 0 or 1).

  Returns (tiles, layout): with 3 input channels, one RGB tile per filter
  ((out, kh, kw, 3), layout 'rgb'); with 1, one grey tile per filter
  ((out, kh, kw, 1), 'grey'); otherwise one grey tile per (output, input)
  channel pair, output-major ((out * in, kh, kw, 1), 'pairs').
  """
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim != 4:
    raise CnnjaxError(f"filters can draw 2-D convolution kernels only; this "
                      f"kernel has shape {kernel.shape} (a {kernel.ndim - 2}-D "
                      f"convolution)")
  per_filter = np.transpose(kernel, (3, 0, 1, 2))  # (out, kh, kw, in)
  tiles = _symmetric(per_filter, axes=(1, 2, 3))
  channels_in = kernel.shape[2]
  if channels_in == 3:
    return tiles, "rgb"
  if channels_in == 1:
    return tiles, "grey"
  pairs = np.transpose(tiles, (0, 3, 1, 2))[..., None]  # (out, in, kh, kw, 1)
  return pairs.reshape(-1, *pairs.shape[2:]), "pairs"


# ---------------------------------------------------------------- filters


@register("filters", "first-layer (or any conv layer's) kernels as images, "
          "0 = mid-grey", tasks=ANY_TASK)
def filters(trained, options: Options) -> Output:
  convs = conv_layers(trained)
  layer = options.layer or (convs[0] if convs else "")
  if not layer:
    raise CnnjaxError("filters needs a convolution layer, and this model has "
                      "none with a spatial output")
  trained.check_layer(layer)
  kernel = layer_kernel(trained, layer)
  if kernel is None:
    raise CnnjaxError(f"layer '{layer}' has no convolution kernel; pick one of "
                      f"{', '.join(convs) or '(none)'} with --layer")
  if kernel.ndim != 4:
    raise CnnjaxError(f"filters draws 2-D kernels only, and layer '{layer}' has "
                      f"a {kernel.ndim - 2}-D kernel of shape {kernel.shape}")
  first = not options.layer or layer == convs[0]
  kh, kw, channels_in, channels_out = kernel.shape
  if first and channels_in in (1, 3):
    tiles, layout = kernel_tiles(kernel)
    titles = [str(o) for o in range(len(tiles))]
    shown = tiles[:_MAX_TILES * _MAX_TILES]
    fig = figures.image_grid(
        shown, titles[:len(shown)], columns=min(len(shown), 8),
        title=f"{layer}: {channels_out} filters {kh}x{kw}"
              f"{' (RGB)' if layout == 'rgb' else ''}; 0 = mid-grey", size=1.0)
  else:  # One row per output channel, one tile per input channel.
    shown_out, shown_in = min(channels_out, _MAX_TILES), min(channels_in, _MAX_TILES)
    tiles, layout = kernel_tiles(kernel[:, :, :shown_in, :shown_out])
    if layout != "pairs":  # 1 or 3 inputs on a deeper layer: split them too.
      per = _symmetric(np.transpose(kernel[:, :, :shown_in, :shown_out], (3, 0, 1, 2)),
                       axes=(1, 2, 3))
      tiles = np.transpose(per, (0, 3, 1, 2))[..., None].reshape(-1, kh, kw, 1)
      layout = "pairs"
    titles = [f"in {i}" if o == 0 else "" for o in range(shown_out)
              for i in range(shown_in)]
    fig = figures.image_grid(
        tiles, titles, columns=shown_in, size=0.7,
        title=f"{layer}: rows = output channels (first {shown_out} of "
              f"{channels_out}), columns = input channels (first {shown_in} of "
              f"{channels_in}); 0 = mid-grey")
  return Output(arrays={"kernel": kernel, "tiles": tiles},
                figures={f"filters_{_safe(layer)}": fig},
                caption=f"Kernels of {layer} ({kh}x{kw}, {channels_in} -> "
                        f"{channels_out} channels), each filter scaled so that "
                        f"0 is mid-grey.")


# ---------------------------------------------------------------- activations


def _default_activation_layers(trained, limit: int = 6) -> list[str]:
  convs = conv_layers(trained) or spatial_layers(trained)
  if not convs:
    raise CnnjaxError("activations needs a layer with a spatial output, and "
                      "this model has none")
  if len(convs) > limit:  # Spread over the depth of a deep network.
    picks = np.unique(np.linspace(0, len(convs) - 1, limit).round().astype(int))
    convs = [convs[i] for i in picks]
  return convs


@register("activations", "feature maps of chosen layers for a few examples")
def activations(trained, options: Options) -> Output:
  if options.layer:
    layers = [options.layer]
  elif options.get("layers", ""):
    layers = [name.strip() for name in str(options.get("layers", "")).split(",")
              if name.strip()]
  else:
    layers = _default_activation_layers(trained)
  for layer in layers:
    trained.check_layer(layer)
  examples = scan.query_examples(trained, options)
  fn = jax.jit(lambda variables, x: trained.with_variables(variables).activations(x, layers))
  maps = jax.device_get(fn(trained.variables, jnp.asarray(examples.inputs)))
  arrays, figs = {}, {}
  for layer in layers:
    out = np.asarray(maps[layer], np.float32)  # (N, H, W, C) for 2-D maps
    arrays[_safe(layer)] = out
    if out.ndim != 4:
      raise CnnjaxError(f"activations draws 2-D feature maps, and layer "
                        f"'{layer}' outputs shape {out.shape[1:]}; pick a conv "
                        f"or pooling layer")
    channels = min(out.shape[-1], _MAX_TILES)
    tiles, titles = [], []
    for n in range(len(out)):
      tiles.append(examples.images[n])
      titles.append(f"#{int(examples.indices[n])} "
                    f"{scan.class_name(trained, examples.labels[n])}")
      for c in range(channels):
        tiles.append(figures.rescale(out[n, :, :, c]))
        titles.append(f"ch {c}" if n == 0 else "")
    figs[f"activations_{_safe(layer)}"] = figures.image_grid(
        tiles, titles, columns=1 + channels, size=1.0,
        title=f"{layer}: {out.shape[1]}x{out.shape[2]} maps, first {channels} of "
              f"{out.shape[-1]} channels (each rescaled to its own range)")
  arrays["labels"] = np.asarray(examples.labels)
  arrays["indices"] = np.asarray(examples.indices)
  return Output(arrays=arrays, figures=figs,
                caption=f"Feature maps of {', '.join(layers)}: one row per "
                        f"example, one tile per channel, white = most active (the "
                        f"modules' outputs: a ReLU applied after a conv "
                        f"module is not included).")


# ---------------------------------------------------------------- patches


def _unit_box(layer_row, position: Sequence[int]) -> list[tuple[int, int]]:
  box = []
  for axis, p in enumerate(position):
    size = int(round(layer_row.receptive_field[axis]))
    low = int(math.floor(layer_row.start[axis] + p * layer_row.jump[axis]
                         - (size - 1) / 2 + 0.5 - 1e-9))
    box.append((low, low + size))
  return box


def receptive_box(layer_row, i: int, j: int, image_shape=None) -> tuple[int, int, int, int]:
  """Input pixels (top, left, bottom, right), bottom/right exclusive, that
  unit (i, j) of a summary row sees: start + i * jump -/+ (size - 1) / 2.
  Not clipped: it may stick out of the image. `image_shape` is unused and
  kept for symmetry with `clipped_receptive_box`."""
  del image_shape
  if layer_row.receptive_field is None:
    raise CnnjaxError(f"layer '{layer_row.name}' has a global receptive field; "
                      f"pick a layer with a spatial output")
  (top, bottom), (left, right) = _unit_box(layer_row, (i, j))
  return top, left, bottom, right


def clipped_receptive_box(layer_row, i: int, j: int,
                          image_shape) -> tuple[int, int, int, int]:
  """`receptive_box` clipped to an image of shape (H, W, ...)."""
  top, left, bottom, right = receptive_box(layer_row, i, j)
  height, width = image_shape[0], image_shape[1]
  return (max(top, 0), max(left, 0), min(bottom, height), min(right, width))


def crop_box(image: np.ndarray, box, fill: float = 0.5) -> np.ndarray:
  """The pixels of `image` (H, W, C) in the unclipped `box`; what sticks out
  of the image is `fill` (grey), so every crop has the box's size."""
  top, left, bottom, right = box
  height, width = image.shape[:2]
  crop = np.full((bottom - top, right - left, *image.shape[2:]), fill, np.float32)
  t, l = max(top, 0), max(left, 0)
  b, r = min(bottom, height), min(right, width)
  if b > t and r > l:
    crop[t - top:b - top, l - left:r - left] = image[t:b, l:r]
  return crop


def _summary_row(trained, layer: str):
  from cnnjax.analysis.summary import summarize

  rows = summarize(trained.model, trained.input_shape).rows
  for row in rows:
    if row.name == layer:
      return row
  shape = trained.layer_shapes()[layer]
  inside = [row for row in rows if row.name.startswith(layer + "/")
            and tuple(row.output_shape) == shape]  # A block: its last leaf.
  if inside:
    return inside[-1]
  raise CnnjaxError(f"no receptive field is known for layer '{layer}'; pick a "
                    f"convolution or pooling layer with --layer")


def top_units(acts: np.ndarray, top_k: int, distinct: bool) -> tuple[np.ndarray, ...]:
  """Top-k units of one channel's maps `acts` (N, H, W): (values, n, i, j),
  largest first. `distinct` keeps at most one unit (its maximum) per example."""
  n_examples, height, width = acts.shape
  flat = acts.reshape(n_examples, -1)
  if distinct:
    best = flat.argmax(1)
    values = flat[np.arange(n_examples), best]
    order = np.argsort(-values, kind="stable")[:top_k]
    positions = best[order]
    examples = order
    values = values[order]
  else:
    everything = flat.reshape(-1)
    order = np.argsort(-everything, kind="stable")[:top_k]
    examples, positions = np.divmod(order, height * width)
    values = everything[order]
  i, j = np.divmod(positions, width)
  return values, examples, i, j


@register("patches", "input patches (receptive fields) that activate a "
          "channel the most")
def patches(trained, options: Options) -> Output:
  shapes = trained.layer_shapes()
  if options.layer:
    layer = options.layer
    trained.check_layer(layer)
  else:
    candidates = [n for n in (conv_layers(trained) or spatial_layers(trained))
                  if len(shapes[n]) == 3 and min(shapes[n][:2]) > 1]
    if not candidates:
      raise CnnjaxError("patches needs a 2-D conv layer with a spatial map "
                        "larger than 1x1, and this model has none")
    layer = candidates[-1]
  if len(shapes[layer]) != 3:
    raise CnnjaxError(f"patches needs a layer with 2-D maps (H, W, C), and "
                      f"layer '{layer}' outputs shape {shapes[layer]}")
  row = _summary_row(trained, layer)
  num_channels = shapes[layer][-1]
  if options.channel >= 0:
    if options.channel >= num_channels:
      raise CnnjaxError(f"layer '{layer}' has {num_channels} channels; "
                        f"--channel {options.channel} is out of range")
    channels = [options.channel]
  else:
    channels = list(range(min(8, num_channels)))
  split = scan.split_name(trained, options, default=trained.dataset.train_split)
  top_k = max(1, options.top_k)
  distinct = options.get("distinct", True)
  selected = jnp.asarray(channels)

  def channel_maps(variables, inputs):
    out = trained.with_variables(variables).activations(inputs, [layer])[layer]
    # (B, K, H, W): examples first, so the last chunk's padding is cut off.
    return jnp.moveaxis(out[..., selected], -1, 1)

  # Running top-k per channel over chunks: keep each chunk's candidates.
  kept = [([], [], [], []) for _ in channels]
  for rows, maps in scan.batches(trained, split, options.batch_size, channel_maps):
    maps = np.moveaxis(np.asarray(maps, np.float32), 1, 0)  # (K, B, H, W)
    for k in range(len(channels)):
      values, examples, i, j = top_units(maps[k], top_k, distinct)
      for store, part in zip(kept[k], (values, rows[examples], i, j)):
        store.append(part)
  images = trained.dataset.splits[split]["image"]
  image_shape = tuple(images.shape[1:3])
  size = tuple(int(round(s)) for s in row.receptive_field)
  values = np.zeros((len(channels), top_k), np.float32)
  example_indices = np.full((len(channels), top_k), -1, np.int64)
  positions = np.zeros((len(channels), top_k, 2), np.int64)
  boxes = np.zeros((len(channels), top_k, 4), np.int64)
  clipped = np.zeros((len(channels), top_k, 4), np.int64)
  crops = np.full((len(channels), top_k, *size, images.shape[-1]), 0.5, np.float32)
  for k in range(len(channels)):
    all_values, all_examples, all_i, all_j = (np.concatenate(p) for p in kept[k])
    order = np.argsort(-all_values, kind="stable")
    order = order[:top_k]  # Chunks hold disjoint rows: still one per example.
    found = len(order)
    values[k, :found] = all_values[order]
    example_indices[k, :found] = all_examples[order]
    positions[k, :found] = np.stack([all_i[order], all_j[order]], -1)
    for t in range(found):
      i, j = int(all_i[order[t]]), int(all_j[order[t]])
      boxes[k, t] = receptive_box(row, i, j)
      clipped[k, t] = clipped_receptive_box(row, i, j, image_shape)
  # Display the images of the found examples only.
  used = np.unique(example_indices[example_indices >= 0])
  shown = trained.examples(split, indices=used).images if used.size else None
  lookup = {int(e): n for n, e in enumerate(used)}
  tiles, titles = [], []
  for k, channel in enumerate(channels):
    for t in range(top_k):
      if example_indices[k, t] >= 0:
        crops[k, t] = crop_box(shown[lookup[int(example_indices[k, t])]], boxes[k, t])
      tiles.append(crops[k, t])
      titles.append((f"ch {channel}: " if t == 0 else "") + f"{values[k, t]:.2f}")
  fig = figures.image_grid(
      tiles, titles, columns=top_k, size=1.0,
      title=f"{layer}: top {top_k} {split} patches per channel "
            f"({size[0]}x{size[1]} receptive field, grey = outside the image)")
  return Output(
      arrays={"values": values, "example_indices": example_indices,
              "positions": positions, "boxes": boxes, "clipped_boxes": clipped,
              "patches": crops, "channels": np.asarray(channels)},
      figures={f"patches_{_safe(layer)}": fig},
      caption=f"For each channel of {layer}, the {top_k} {split} image patches "
              f"(the units' receptive fields) with the largest activation.")


__all__ = ["activations", "clipped_receptive_box", "conv_layers", "crop_box",
           "filters", "kernel_tiles", "layer_kernel", "patches", "receptive_box",
           "spatial_layers", "top_units"]
