"""Everything built from a config before the first step: a `Setup`.

    setup = build(config)          # data, model, optimizer, initial state, steps
    train, eval_batch = step_functions(setup)

`build` loads the data (unless given, so that seeds of one setting share it),
builds the model for it (`runs.model_for`), initializes the variables (from
another run's checkpoint with `config.transfer`), the optimizer and the
TrainState, and binds the pure train and evaluation steps. Nothing here
writes a file or jits: the driver (loop.py) does both.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from cnnjax import config as config_lib
from cnnjax import evaluators as evaluators_lib
from cnnjax.data import ArrayDataset, get_dataset, pipeline
from cnnjax.data.arrays import data_key_for_seed, nbytes, train_batch
from cnnjax.data.stream import StreamDataset, as_stream, prefetch
from cnnjax.errors import CnnjaxError
from cnnjax.ops import random as random_ops
from cnnjax.parallel import DataParallel, initialize_distributed, make_data_parallel
from cnnjax.runs import model_for
from cnnjax.train import kernel_init, losses, optim, precision, step as step_lib, transfer
from cnnjax.train.state import TrainState


@dataclasses.dataclass
class Setup:
  """Everything built from a config before the first step."""
  config: ml_collections.ConfigDict
  dataset: Any  # ArrayDataset or StreamDataset
  resident: bool  # the training data lives on the device
  durations: config_lib.Durations
  state: TrainState
  train_step: Any  # pure: (state, batch, rng) -> (state, metric sums)
  eval_batch: Any  # pure: (variables, batch) -> per-example outputs (see evaluation.py)
  preprocess: tuple[Any, Any]  # on-device (train_fn(batch, key), eval_fn(batch))
  evaluators: tuple[str, ...]  # names from cnnjax.evaluators
  parallel: DataParallel  # the device mesh and shardings

  @property
  def stream(self) -> StreamDataset:
    return self.dataset if isinstance(self.dataset, StreamDataset) else as_stream(self.dataset)

  @property
  def host_crops(self) -> dict[str, tuple]:
    """The random resized crop's options when the host cuts it (streams)."""
    if isinstance(self.dataset, StreamDataset) and self.dataset.host_crops:
      a = self.config.augment
      return {"crop_scale": tuple(a.crop_scale), "crop_ratio": tuple(a.crop_ratio)}
    return {}


def _check_task(config, dataset) -> None:
  if dataset.task == "multilabel" and config.loss.name != "sigmoid_cross_entropy":
    raise CnnjaxError(
        f"dataset '{dataset.name}' is multi-label ({dataset.num_classes} labels "
        "per example); set --config.loss.name=sigmoid_cross_entropy")
  if (config.mix.mixup_alpha or config.mix.cutmix_alpha) and not np.issubdtype(
      pipeline.model_input_dtype(dataset), np.floating):
    raise CnnjaxError(f"mixup and cutmix mix images; dataset '{dataset.name}' "
                      "has token inputs")
  if dataset.task in ("segmentation", "detection"):
    if config.mix.mixup_alpha or config.mix.cutmix_alpha:
      raise CnnjaxError(f"mixup and cutmix mix one label per image; dataset "
                        f"'{dataset.name}' is a {dataset.task} task; turn them off")
    if dataset.task == "segmentation" and config.loss.name != "softmax_cross_entropy":
      raise CnnjaxError(f"a segmentation task trains with loss.name="
                        f"softmax_cross_entropy (per pixel), not '{config.loss.name}'")
    if dataset.task == "detection" and not callable(
        getattr(model_class(config), "losses", None)):
      raise CnnjaxError(f"dataset '{dataset.name}' is a detection task; model "
                        f"'{config.model.name}' is not a detector (e.g. faster_rcnn)")


def model_class(config):
  """The registered class (or factory) of config.model.name."""
  from cnnjax.models.registry import MODELS
  factory = MODELS.get(config.model.name).factory
  return getattr(factory, "func", factory)


def _check_classes(config, dataset) -> None:
  """Refuses a config.model.num_classes other than the data's: a head of the
  wrong size trains without a word (labels beyond it are never predicted,
  extra outputs are never a label) and reports a meaningless accuracy. The
  model takes the data's count when the config leaves num_classes unset;
  with config.dataset.classes the data's count is that subset's size."""
  wanted = config.model.get("num_classes")
  if wanted is None or wanted == dataset.num_classes:
    return
  subset = tuple(config.dataset.get("classes", ()) or ())
  kept = f" (the {len(subset)} of config.dataset.classes)" if subset else ""
  raise CnnjaxError(
      f"config.model.num_classes is {wanted} but dataset '{dataset.name}' has "
      f"{dataset.num_classes} classes{kept}; leave model.num_classes unset "
      "and the model takes the data's count (transfer.reinit replaces a "
      "pretrained head)")


def _blame_model_field(config, dataset, example) -> str | None:
  """The config.model field whose default would let the model initialize on
  `example`, as 'model.FIELD=VALUE', or None. Tried one field at a time,
  abstractly (jax.eval_shape: no compilation), only after an initialization
  failed, so that the error names the field the user set, not the input."""
  for field, value in config.model.items():
    if field == "name":
      continue
    trial = copy.deepcopy(config)
    with trial.model.unlocked():
      del trial.model[field]
    try:
      model = model_for(trial, dataset)
      jax.eval_shape(lambda r, x, m=model: m.init(r, x, train=False),
                     jax.random.key(0), example)
    except Exception:  # noqa: BLE001 - this field is not the one to blame.
      continue
    return f"model.{field}={value!r}"
  return None


def is_resident(config, dataset) -> bool:
  """Whether the data is held on the device (in memory, and small enough)."""
  return (isinstance(dataset, ArrayDataset) and
          nbytes(dataset) <= config.dataset.max_device_mb * 2**20)


def initial_variables(config, model, dataset) -> dict:
  """The model's variables for the first step: initialized from the seed, its
  kernels drawn again with config.model.kernel_init (kernel_init.py), then
  (with config.transfer) the fitting arrays of another run copied in."""
  init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  example = np.zeros((1, *dataset.input_shape), pipeline.model_input_dtype(dataset))
  try:
    variables = random_ops.init(model, init_rng, example, train=False)
  except CnnjaxError:
    raise
  except Exception as e:  # noqa: BLE001 - turned into one sentence, or re-raised.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    field = _blame_model_field(config, dataset, example)
    if field is not None:
      raise CnnjaxError(
          f"model '{config.model.name}' cannot be built with config.{field} "
          f"(it builds with that field's default): {reason}") from e
    if not isinstance(e, (TypeError, ValueError)):
      raise  # Neither the config's fields nor a shape: a bug, with its traceback.
    raise CnnjaxError(
        f"model '{config.model.name}' cannot take inputs of shape "
        f"{dataset.input_shape} from dataset '{dataset.name}': {reason}") from e
  variables = kernel_init.from_config(config, variables, model=model, example=example)
  variables = _init_from_data(config, model, dataset, variables)
  return transfer.initialize_from(config, variables)


# Training examples a model's `init_from_data` sees (airbench's whitening
# filters are computed from 5,000, as in its paper).
DATA_INIT_EXAMPLES = 5000


def _init_from_data(config, model, dataset, variables) -> dict:
  """`variables` as the model's `init_from_data(variables, inputs)` sets
  them from the first training examples, normalised as for evaluation;
  unchanged for a model without that method."""
  hook = getattr(model, "init_from_data", None)
  if not callable(hook):
    return variables
  inputs = pipeline.first_inputs(dataset, DATA_INIT_EXAMPLES)
  stats = pipeline.channel_stats(dataset, config.dataset)
  _, eval_prep = pipeline.make_preprocess(config.augment, stats)
  key = dataset.input_key
  inputs = np.asarray(jax.jit(eval_prep)({key: inputs})[key])
  return hook(variables, inputs)


def _max_norm_layers(config, variables) -> list[str]:
  constrained = [n.strip() for n in config.optimizer.max_norm_layers.split(",")
                 if n.strip()]
  missing = [n for n in constrained if n not in variables["params"] or
             "kernel" not in variables["params"][n]]
  if config.optimizer.max_norm and missing:
    raise CnnjaxError(
        f"config.optimizer.max_norm_layers names {', '.join(missing)}, which "
        f"model '{config.model.name}' does not have; its top-level layers are "
        f"{', '.join(variables['params'])}")
  return constrained


def evaluation_parts(config, dataset, apply_fn, parallel: DataParallel
                     ) -> tuple[Callable, Callable, tuple[str, ...]]:
  """(eval preprocessing, pure eval_batch(variables, batch), evaluator names)
  of a config on its data: what training and `cnnjax eval` evaluate with."""
  names = evaluators_lib.resolve(tuple(config.get("evaluators", ())),
                                 task=dataset.task, metadata=dataset.metadata)
  if (dataset.task in ("segmentation", "detection")
      and pipeline.test_time_views(config.augment)):
    raise CnnjaxError(f"augment.tta_flip and augment.tta_shift average class scores "
                      f"over moved copies of an image, which a {dataset.task} task's "
                      "outputs cannot be; turn them off")
  stats = pipeline.channel_stats(dataset, config.dataset)
  host_crops = isinstance(dataset, StreamDataset) and dataset.host_crops
  train_prep, eval_prep = pipeline.make_preprocess(config.augment, stats,
                                                   host_crops=host_crops)
  eval_batch = step_lib.make_eval_batch(
      apply_fn, losses.get_loss(config.loss), preprocess=eval_prep,
      views=pipeline.test_time_views(config.augment),
      multilabel=dataset.task == "multilabel", evaluators=names,
      input_key=dataset.input_key, batch_sharding=parallel.batch, task=dataset.task)
  return (train_prep, eval_prep), eval_batch, names


def build(config: ml_collections.ConfigDict, *, dataset=None) -> Setup:
  """Data, model, optimizer and initial state for `config` (already validated).

  `dataset`: the already loaded data of `config.dataset` (runs that differ
  only in their seed share it).
  """
  if config.parallel.distributed:
    initialize_distributed()
  parallel = make_data_parallel(config.parallel.num_devices)
  parallel.check_batch_size(config.batch_size)
  if dataset is None:
    dataset = get_dataset(config.dataset, smoke=config.smoke)
  _check_task(config, dataset)
  _check_classes(config, dataset)
  resident = is_resident(config, dataset)
  durations = config_lib.resolve_durations(config,
                                           dataset.num_examples(dataset.train_split))
  model = model_for(config, dataset)
  variables = initial_variables(config, model, dataset)
  constrained = _max_norm_layers(config, variables)
  tx, learning_rate = optim.make_optimizer(config, durations, variables["params"])
  loss_scale = (precision.LossScale.create(
      config.loss_scale.initial, config.loss_scale.growth_interval,
      config.loss_scale.backoff) if config.precision == "float16" else None)
  state = parallel.put_replicated(TrainState.create(
      apply_fn=model.apply, variables=variables, tx=tx,
      ema=config.ema.decay > 0, loss_scale=loss_scale,
      lookahead=config.lookahead.every > 0))
  preprocess, eval_batch, names = evaluation_parts(config, dataset, model.apply,
                                                   parallel)
  train_step = step_lib.make_train_step(
      losses.get_loss(config.loss), learning_rate, l1=config.optimizer.l1,
      aux_weight=config.loss.aux_weight,
      max_norm_value=config.optimizer.max_norm, max_norm_layers=constrained,
      grad_accum_steps=config.grad_accum_steps, mix=config.mix.to_dict(),
      ema_decay=config.ema.decay, ema_warmup=config.ema.warmup,
      lookahead=config.lookahead.to_dict(), total_steps=durations.num_steps,
      per_device_mesh=(parallel.mesh
                       if config.parallel.batch_norm == "per_device" else None),
      frozen_batch_stats=optim.frozen_batch_stats(config, variables),
      input_key=dataset.input_key, task=dataset.task)
  return Setup(config=config, dataset=dataset, resident=resident,
               durations=durations, state=state, train_step=train_step,
               eval_batch=eval_batch, preprocess=preprocess, evaluators=names,
               parallel=parallel)


def seed_keys(seed: int) -> dict[str, jax.Array]:
  """The keys of a run: the data order, the augmentation, the train step."""
  return {"data": data_key_for_seed(seed),
          "augment": jax.random.fold_in(jax.random.key(seed), 3),
          "step": jax.random.fold_in(jax.random.key(seed), 2)}


def train_function(setup: Setup):
  """`train(state, data, rng, data_key, augment_key) -> (state, metric sums)`,
  pure and not jitted (the seed's keys are arguments, so that runs of several
  seeds can be vmapped together). `data` is the whole training split on the
  device (the batch is selected inside, from the step number) or, for
  streamed data, the batch itself."""
  batch_size = setup.config.batch_size
  train_prep, _ = setup.preprocess
  sharding = setup.parallel.batch

  def train(state, data, rng, data_key, augment_key):
    if setup.resident:
      data = train_batch(data, state.step, batch_size=batch_size, data_key=data_key)
    data = jax.lax.with_sharding_constraint(data, sharding)
    batch = train_prep(data, jax.random.fold_in(augment_key, state.step))
    return setup.train_step(state, batch, rng)

  return train


def train_inputs(setup: Setup, start_step: int):
  """An endless iterator of what the train function takes as `data`."""
  parallel = setup.parallel
  if setup.resident:  # Every device holds the whole split (uint8).
    data = parallel.put_replicated(setup.dataset.splits[setup.dataset.train_split])
    return itertools.repeat(data)
  batches = setup.stream.train_batches(
      setup.config.batch_size // jax.process_count(), start_step,
      setup.config.seed, **setup.host_crops)
  return prefetch(batches, size=3, transfer=parallel.host_batch_to_global)
