"""Pure train and evaluation steps. `make_*` bind the static parts; the
driver (loop.py) jits them."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from cnnjax import evaluators as evaluators_lib
from cnnjax.runs.inference import average_views
from cnnjax.train import metrics as metrics_lib
from cnnjax.train.mixing import mix_batch, mixed_loss
from cnnjax.train.precision import all_finite
from cnnjax.train.state import TrainState


# Per-step values of `train_step`'s metrics that check the step instead of
# describing it: the loop reads them and logs none of them.
CHECKS = ("variables_finite",)


def l1_norm(params):
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def max_norm(params, value: float, layers: Sequence[str]):
  """Rescales each unit's incoming weights in `layers` to L2 norm <= value.

  For a Dense kernel (in, out) or a conv kernel (*window, in, out) the vector
  of unit j is kernel[..., j]; longer ones are scaled down to `value`, shorter
  ones are left alone (Hinton et al. 2012; Kim 2014 uses 3 on the output
  layer). Biases are not constrained.
  """
  def constrain(kernel):
    axes = tuple(range(kernel.ndim - 1))
    norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=axes, keepdims=True))
    scale = jnp.minimum(1.0, value / jnp.maximum(norms, 1e-12))
    return (kernel * scale).astype(kernel.dtype)

  params = dict(params)
  for name in layers:
    layer = dict(params[name])
    layer["kernel"] = constrain(layer["kernel"])
    params[name] = layer
  return params


def split_outputs(outputs):
  """(main logits, [auxiliary logits]) of a model's training output."""
  if isinstance(outputs, (tuple, list)):
    return outputs[0], list(outputs[1:])
  return outputs, []


def make_train_step(loss_fn: Callable, learning_rate: Callable, *,
                    l1: float = 0.0, aux_weight: float = 0.3,
                    max_norm_value: float = 0.0,
                    max_norm_layers: Sequence[str] = (),
                    grad_accum_steps: int = 1,
                    mix: Mapping[str, float] | None = None,
                    ema_decay: float = 0.0, ema_warmup: bool = True,
                    lookahead: Mapping[str, float] | None = None,
                    total_steps: int = 0, per_device_mesh=None, frozen_batch_stats=None,
                    input_key: str = "image", task: str = "multiclass"):
  """Returns `train_step(state, batch, rng) -> (state, metrics)`.

  The model's input is `batch[input_key]` ('image' for any dense input,
  'tokens' for token ids) and its target `batch['label']`.

  `metrics` are sums over the batch (see `metrics.classification_sums`) plus
  the learning rate used; the loop averages them when it logs. They also hold
  `CHECKS`: 'variables_finite' is 1 when the parameters and batch statistics
  after the update are all finite, else 0 (the loop's divergence guard). A
  model that returns (logits, aux1, ...) in training (GoogLeNet) adds
  `aux_weight` times each auxiliary loss to the objective; the metrics are the
  main logits'.
  With `max_norm_value` > 0 the named layers are constrained after the update.

  `grad_accum_steps` = k splits the batch into k micro-batches whose
  gradients are averaged (one optimizer update). `mix` holds the mixup/cutmix
  options (config.mix). With `state.loss_scale` (float16) the loss is scaled
  and a step with non-finite gradients changes nothing but the scale. With
  `per_device_mesh` (a Mesh) BatchNorm normalises each device's shard with its
  own statistics: the gradient computation runs per device under `shard_map`
  and its results are averaged; otherwise it runs on the global batch and
  XLA's partitioner makes the statistics global. `frozen_batch_stats` (a
  tree of bools like the state's batch_stats) marks running statistics that
  keep their values (the frozen layers of a fixed feature extractor).
  `lookahead` (config.lookahead: every, decay, power) syncs the state's slow
  weights after each update (`TrainState.sync_lookahead`, with `total_steps`).

  With `task='detection'` the model computes its own losses from the batch's
  targets (`model.losses(images, targets)`, models/detection.py; `loss_fn`
  is not used): the objective is their sum, and the metrics are each loss
  (the detector's sampling draws from the 'sampling' rng stream).
  """
  mixing = bool(mix) and (mix["mixup_alpha"] > 0 or mix["cutmix_alpha"] > 0)

  def detection_gradients(state: TrainState, batch, rng):
    inputs = batch[input_key]
    targets = detection_targets(batch)

    def objective(params):
      variables = dict(state.variables, params=params)
      out, new_vars = state.apply_fn(
          variables, inputs, targets, train=True, method="losses",
          rngs={"dropout": rng, "sampling": jax.random.fold_in(rng, 1)},
          mutable=["batch_stats"])
      total = out["loss"]
      if l1:
        total = total + l1 * l1_norm(params)
      scaled = total if state.loss_scale is None else state.loss_scale.scale_loss(total)
      return scaled, (out, new_vars.get("batch_stats", {}))

    grads, (out, batch_stats) = jax.grad(objective, has_aux=True)(state.params)
    if state.loss_scale is not None:
      grads = state.loss_scale.unscale(grads)
    count = jnp.asarray(inputs.shape[0], jnp.float32)
    return grads, batch_stats, {"count": count, **{k: v * count for k, v in out.items()}}

  def gradients(state: TrainState, batch, rng):
    """(grads, new batch_stats, metric sums) of one (micro-)batch."""
    if task == "detection":
      return detection_gradients(state, batch, rng)
    inputs, labels = batch[input_key], batch["label"]
    if mixing:
      inputs, partner, lam = mix_batch(
          inputs, jax.random.fold_in(rng, 1), mixup_alpha=mix["mixup_alpha"],
          cutmix_alpha=mix["cutmix_alpha"], switch_prob=mix["switch_prob"],
          prob=mix["prob"])
      example_loss = lambda logits: mixed_loss(loss_fn, logits, labels, partner, lam)  # noqa: E731
    else:
      example_loss = lambda logits: loss_fn(logits, labels)  # noqa: E731

    def objective(params):
      variables = dict(state.variables, params=params)
      outputs, new_vars = state.apply_fn(
          variables, inputs, train=True, rngs={"dropout": rng},
          mutable=["batch_stats"])
      logits, auxiliary = split_outputs(outputs)
      logits = logits.astype(jnp.float32)  # the loss in float32 (mixed precision)
      per_example = example_loss(logits)
      total = jnp.mean(per_example)
      if l1:
        total = total + l1 * l1_norm(params)
      for aux in auxiliary:
        total = total + aux_weight * jnp.mean(example_loss(aux.astype(jnp.float32)))
      if state.loss_scale is not None:
        total = state.loss_scale.scale_loss(total)
      return total, (per_example, logits, new_vars.get("batch_stats", {}))

    grads, (per_example, logits, batch_stats) = jax.grad(
        objective, has_aux=True)(state.params)
    if state.loss_scale is not None:
      grads = state.loss_scale.unscale(grads)
    return grads, batch_stats, metrics_lib.classification_sums(
        logits, labels, per_example)

  def accumulated(state: TrainState, batch, rng):
    if grad_accum_steps == 1:
      return gradients(state, batch, rng)
    k = grad_accum_steps
    # Micro-batch j takes rows j, j + k, j + 2k, ...: a device's contiguous
    # share of the batch stays on that device.
    micro = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1),
        batch)

    def body(carry, xs):
      grads_sum, batch_stats, sums = carry
      j, micro_batch = xs
      grads, batch_stats, micro_sums = gradients(
          state.replace(batch_stats=batch_stats), micro_batch,
          jax.random.fold_in(rng, j))
      return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats,
              metrics_lib.add_sums(sums, micro_sums)), None

    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(gradients, state, first, rng)
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)  # noqa: E731
    init = (zeros(shapes[0]), state.batch_stats, zeros(shapes[2]))
    (grads, batch_stats, sums), _ = jax.lax.scan(
        body, init, (jnp.arange(k), micro))
    return jax.tree.map(lambda g: g / k, grads), batch_stats, sums

  if per_device_mesh is None:
    compute = accumulated
  else:
    from jax.sharding import PartitionSpec as P

    from cnnjax.parallel import DATA_AXIS

    def per_device(state, batch, rng):
      rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXIS))
      grads, batch_stats, sums = accumulated(state, batch, rng)
      return (jax.lax.pmean(grads, DATA_AXIS),
              jax.lax.pmean(batch_stats, DATA_AXIS),
              jax.lax.psum(sums, DATA_AXIS))

    compute = jax.shard_map(per_device, mesh=per_device_mesh,
                            in_specs=(P(), P(DATA_AXIS), P()),
                            out_specs=(P(), P(), P()))

  def train_step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    grads, batch_stats, sums = compute(state, batch, rng)
    if frozen_batch_stats is not None:
      batch_stats = jax.tree.map(lambda frozen, new, old: old if frozen else new,
                                 frozen_batch_stats, batch_stats, state.batch_stats)
    lr = learning_rate(state.step, state.opt_state)
    new_state = state.apply_gradients(grads, batch_stats=batch_stats,
                                      loss=sums["loss"] / sums["count"])
    if max_norm_value:
      new_state = new_state.replace(params=max_norm(
          new_state.params, max_norm_value, max_norm_layers))
    extras = {"learning_rate": lr}
    if state.loss_scale is not None:
      finite = all_finite(grads)
      # A step with overflowing gradients is skipped (its batch too), and the
      # scale backs off; the step counter still advances.
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                               new_state, state.replace(step=state.step + 1))
      new_state = new_state.replace(loss_scale=state.loss_scale.adjust(finite))
      extras["loss_scale"] = state.loss_scale.scale
    new_state = new_state.update_ema(ema_decay, ema_warmup)
    if lookahead and lookahead["every"]:
      new_state = new_state.sync_lookahead(lookahead["every"], lookahead["decay"],
                                           lookahead["power"], total_steps)
    # The global gradient norm, weighted by the example count so that the
    # loop's division by the count gives its mean over the logged steps.
    sums = dict(sums, grad_norm=optax.tree.norm(grads) * sums["count"])
    # Whether the weights this step leaves are all finite: a check, not a
    # metric (see CHECKS). The loop reads it where it fetches the metrics
    # anyway, so a diverged state is caught without a host sync per step.
    extras["variables_finite"] = all_finite(new_state.variables).astype(jnp.float32)
    return new_state, dict(sums, **extras)

  return train_step


def detection_targets(batch) -> dict:
  """A detection batch's padded targets as the detector takes them."""
  return {"boxes": batch["boxes"], "classes": batch["label"], "box_mask": batch["label"] > 0}


def make_eval_batch(apply_fn: Callable, loss_fn: Callable, *,
                    preprocess: Callable | None = None,
                    views: Callable | None = None, multilabel: bool = False,
                    evaluators: Sequence[str] = ("accuracy",),
                    input_key: str = "image", batch_sharding=None,
                    keep_logits: bool = False, task: str = "multiclass"):
  """Returns `eval_batch(variables, batch) -> per-example outputs`.

  The batch is preprocessed as in evaluation (`preprocess`: uint8 -> float,
  normalization), the model runs in inference mode, and with `views`
  (images -> (V, B, ...), test-time augmentation) the prediction is the mean
  of the views' softmax (sigmoid for multi-label). The outputs are what the
  named evaluators need per example (`evaluators.batch_outputs`), the
  batch's 'mask' (padding rows are 0) and, with `keep_logits`, the logits.
  """
  def eval_batch(variables, batch):
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    if preprocess is not None:
      batch = preprocess(batch)
    inputs, labels = batch[input_key], batch["label"]
    mask = batch.get("mask", jnp.ones(labels.shape[0], jnp.float32))
    if task == "detection":  # the detector's boxes against the targets
      outputs = evaluators_lib.batch_outputs(evaluators, evaluators_lib.EvalInputs(
          logits=apply_fn(variables, inputs, train=False), labels=detection_targets(batch),
          loss=jnp.zeros(labels.shape[0]), multilabel=False))
      outputs["mask"] = mask
      return outputs

    def apply(x):
      return apply_fn(variables, x, train=False)

    logits = average_views(apply, views(inputs), multilabel) if views else apply(inputs)
    logits = logits.astype(jnp.float32)
    outputs = evaluators_lib.batch_outputs(evaluators, evaluators_lib.EvalInputs(
        logits=logits, labels=labels, loss=loss_fn(logits, labels),
        multilabel=multilabel))
    outputs["mask"] = batch.get("mask", jnp.ones(labels.shape[0], jnp.float32))
    if keep_logits:
      outputs["logits"] = logits
    return outputs

  return eval_batch
