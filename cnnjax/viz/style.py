"""Style transfer (Gatys et al., 2016) with the trained network's features:
`style-transfer`.

One example's content (the activations of one layer) drawn in the style of
another (the Gram matrices, `synthesis.gram_matrix`, of the conv features),
optimized from the content image by `synthesis.gradient_ascent`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.viz import figures, synthesis
from cnnjax.viz.registry import Options, Output, register


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
  style = sum(relative(synthesis.gram_matrix(acts[l]), style_targets[l]) for l in style_layers)
  return content, style, content + style_weight * style


@register("style-transfer", "one example's content in another's style, from the "
          "network's features (Gatys et al. 2016)")
def style_transfer(trained, options: Options) -> Output:
  trained.require_images("synthesis")
  split = options.split or trained.eval_split
  content_layer = synthesis.feature_layer(trained, options.layer)
  style_layers = options.get("style_layers", ())
  style_layers = ([l for part in style_layers for l in str(part).split(",") if l]
                  or synthesis.conv_map_layers(trained))
  for layer in style_layers:
    trained.check_layer(layer)
  if len(options.indices) >= 2:
    content_index, style_index = options.indices[:2]
  else:
    labels = np.asarray(trained.dataset.splits[split]["label"])
    content_index = options.indices[0] if options.indices else 0
    # The style: the first example of another class (or simply the next one).
    if labels.ndim == 1 and np.any(labels != labels[content_index]):
      style_index = int(np.argmax(labels != labels[content_index]))
    else:
      style_index = (content_index + 1) % len(labels)
  examples = trained.examples(split, indices=[content_index, style_index])
  settings = synthesis.ascent_settings(trained, options, steps=200, lr=0.01, l2=0.0,
                                       jitter=0, blur_every=0, blur_sigma=0.0,
                                       optimizer="adam")
  style_weight = options.get("style_weight", 10.0)
  settings.pop("l2")

  @jax.jit
  def solve(variables, content_image, style_image, key):
    model = trained.with_variables(variables)
    layers = list(dict.fromkeys([content_layer, *style_layers]))
    targets = model.activations(jnp.concatenate([content_image, style_image]), layers)
    content_target = targets[content_layer][:1]
    style_targets = {l: synthesis.gram_matrix(targets[l][1:]) for l in style_layers}

    def objective(x):
      content, style, total = style_losses(
          model, x, content_layer=content_layer, style_layers=style_layers,
          content_target=content_target, style_targets=style_targets,
          style_weight=style_weight)
      return -total, {"content": content, "style": style}

    x, history = synthesis.gradient_ascent(objective, content_image, key=key,
                                           has_aux=True, **settings)
    _, final_aux = objective(x)
    return x, history, final_aux

  content_image = jnp.asarray(examples.inputs[:1])
  style_image = jnp.asarray(examples.inputs[1:2])
  result, history, final = solve(trained.variables, content_image, style_image,
                                 jax.random.key(options.seed))
  losses = {"total": -np.asarray(history["objective"])[:, 0],
            "content": np.asarray(history["content"])[:, 0],
            "style": np.asarray(history["style"])[:, 0]}
  final_content = float(final["content"][0])
  final_style = float(final["style"][0])
  final_total = final_content + style_weight * final_style
  display = np.asarray(trained.to_display(result))

  plt = figures.pyplot()
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
