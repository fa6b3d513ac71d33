"""The base config: every key the training driver reads, with its default.

Experiments start from `base_config()` and change a few fields, so every
experiment has the same names and the returned config can be locked: a
misspelt override is then caught instead of silently ignored.
"""

from __future__ import annotations

import ml_collections

PRECISIONS = ("float32", "bfloat16", "float16")
# config.dataset.resize_mode: how an image folder's images reach image_size.
RESIZE_MODES = ("square", "shorter_side_center_crop")
# config.model.kernel_init: the schemes of jax.nn.initializers that re-draw
# every kernel after the model's own init (cnnjax/train/kernel_init.py).
# Glorot is Xavier, He is Kaiming; 'he_*' scale by the fan-in, '*_fan_out'
# by the fan-out (torch's mode='fan_out'); 'normal_0.01' is the naive
# N(0, 0.01^2) of "small random numbers".
KERNEL_INITS = ("lecun_normal", "lecun_uniform", "glorot_normal", "glorot_uniform",
                "he_normal", "he_uniform", "he_normal_fan_out", "he_uniform_fan_out",
                "normal_0.01")
# config.model keys that are settings, not fields of the model's constructor.
MODEL_SETTINGS = ("name", "kernel_init")

# Keys that may change between a run and its resumption without invalidating
# its checkpoints: durations and bookkeeping, never the model or the data.
RESUMABLE_KEYS = ("num_steps", "num_epochs", "log_every", "eval_every",
                  "checkpoint_every", "keep_checkpoints", "progress_bar",
                  # The same global batch on other devices: the same run.
                  "parallel.num_devices", "parallel.distributed",
                  "parallel.preemption_check_every",
                  # What the run aims at and how `reproduce` reports it, and
                  # keys that only smoke runs read.
                  "reference.*", "reproduce.*", "smoke_image_size",
                  "dataset.smoke_data",
                  # What evaluation reports, and where compilations are cached.
                  "evaluators", "compilation_cache",
                  # The same convolutions computed by another library.
                  "conv_backend",
                  # How divergence is watched: checks, not training.
                  "divergence.*")


def is_resumable(key: str) -> bool:
  """Whether a flat config key may change without invalidating checkpoints."""
  # 'reproduce.*' also covers 'reproduce' itself, which is how a group that
  # a config written by an older cnnjax lacks shows up.
  return any(key == k or (k.endswith(".*") and (key == k[:-2] or key.startswith(k[:-1])))
             for k in RESUMABLE_KEYS)


def model_fields(model: ml_collections.ConfigDict) -> dict:
  """The keys of config.model that are the model constructor's fields: all
  but the settings (MODEL_SETTINGS: the name, the kernel initializer)."""
  return {k: v for k, v in model.items() if k not in MODEL_SETTINGS}


def base_config() -> ml_collections.ConfigDict:
  """Every key the train loop understands, with defaults."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = ""  # A name from `cnnjax models`; other keys are overrides.
  # Not a default key but an optional setting: config.model.kernel_init, one
  # of KERNEL_INITS, re-draws every kernel (Dense, Conv) with that scheme;
  # absent or '' keeps each model's own initializers. It is not passed to the
  # model (MODEL_SETTINGS), and left out of the defaults so that the stored
  # configs of earlier runs stay equal to today's (resume, reproduce).

  # The data (see cnnjax/data/__init__.py for the sources and their keys).
  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = ""  # `cnnjax.data.list_datasets()`, or any TFDS name
  c.dataset.data_dir = ""  # '' = the source's default (TFDS: ~/tensorflow_datasets)
  c.dataset.download = False  # fetch the data if it is missing (TFDS, MedMNIST)
  # Splits: '' / () take the source's own (TFDS: 'train' and 'test'). TFDS
  # slicing works ('train[:90%]'); 'NAME=SPEC' names an evaluation split,
  # e.g. ('validation=train[90%:]', 'test').
  c.dataset.train_split = ""
  c.dataset.eval_splits = ()
  c.dataset.subset = ""  # MedMNIST: the flag, e.g. 'pathmnist'
  c.dataset.image_size = 0  # 0: as stored; else resize (square) when loading
  # Image folders: 'square' resizes each image to image_size x image_size
  # (bilinear); 'shorter_side_center_crop' resizes its shorter side to
  # resize_size and keeps the central image_size square, torchvision's
  # Resize(resize_size) + CenterCrop(image_size) evaluation transform on PIL
  # images. resize_size 0 takes image_size / 0.875 (224 -> 256, 299 -> 342).
  c.dataset.resize_mode = "square"
  c.dataset.resize_size = 0
  # Data no larger than this (MiB, as stored) is held on the device and
  # batched inside the jitted step; larger data streams from the host.
  c.dataset.max_device_mb = 4096
  c.dataset.shuffle_buffer = 16_384  # tf.data streams only
  # Per-channel normalization of images stored as uint8, in [0, 1] units;
  # () computes them from the training split (ImageNet's for imagenet2012).
  c.dataset.mean = ()
  c.dataset.std = ()
  # Text (mr, text_file): k-fold cross-validation and the vocabulary.
  c.dataset.fold = 0
  c.dataset.num_folds = 10
  c.dataset.split_seed = 0
  c.dataset.min_count = 1
  c.dataset.max_length = 0  # 0: the longest training sentence
  c.dataset.pad = 4  # zeros at each end (Kim: filter height - 1)
  c.dataset.vocab_from = "train"
  # Keep only these classes (in-memory datasets), renumbered 0..k-1 in this
  # order, e.g. (5, 6, 7, 8, 9); () keeps all.
  c.dataset.classes = ()
  # Smoke runs only: 'auto' uses the real data when it is on this machine and
  # otherwise a generated stand-in of the same shapes, classes and task
  # (cnnjax/data/standin.py); 'synthetic' always uses the stand-in; 'real'
  # never does (a missing dataset is then an error, as in a full run).
  c.dataset.smoke_data = "auto"

  c.batch_size = 128  # Global batch, over all devices.
  c.eval_batch_size = 1000
  # Gradient accumulation: each step averages the gradients of this many
  # equal micro-batches of batch_size / grad_accum_steps (less memory, the
  # same update; BatchNorm sees the micro-batches).
  c.grad_accum_steps = 1

  # Devices (see cnnjax/parallel.py): the global batch is split over a 1-D
  # 'data' mesh; parameters are replicated and XLA all-reduces the gradients.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 0  # 0: every device (of every process)
  # 'global': BatchNorm statistics of the whole global batch (synchronised,
  # the same numbers as one device); 'per_device': each device normalises
  # with its own shard's statistics (pmap-style) and the running averages
  # are averaged over the devices.
  c.parallel.batch_norm = "global"
  c.parallel.distributed = False  # call jax.distributed.initialize() (multi-host)
  # Several processes: every this many steps they agree on SIGTERM/SIGINT
  # (one number all-gathered, a host sync), so that all checkpoint the same
  # step and stop. 0: at the log steps (log_every), where the loop waits for
  # the devices anyway. One process checks every step, without a sync.
  c.parallel.preemption_check_every = 0

  # Mixed precision: the computation dtype of the model (parameters, the
  # optimizer and the loss stay float32). float16 uses dynamic loss scaling.
  c.precision = "float32"  # float32 | bfloat16 | float16
  c.loss_scale = ml_collections.ConfigDict()
  c.loss_scale.initial = 2.0 ** 15
  c.loss_scale.growth_interval = 2000  # finite steps before the scale doubles
  c.loss_scale.backoff = 0.5  # factor after a non-finite step (then skipped)

  # An exponential moving average of the weights (and BatchNorm statistics),
  # evaluated beside the raw weights as '<split>_ema/<metric>'. 0: off.
  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.0
  c.ema.warmup = True  # decay min(decay, (1 + step) / (10 + step)) early on

  # Lookahead averaging as airbench94 does it (Zhang et al. 2019's slow and
  # fast weights, with a scheduled rate): every `every` steps the slow copy
  # of the weights and BatchNorm statistics becomes d * slow + (1 - d) *
  # weights, d = decay * (step / total steps) ** power, and the weights are
  # set to it; after the last step they are the slow copy. every 0: off.
  c.lookahead = ml_collections.ConfigDict()
  c.lookahead.every = 0
  c.lookahead.decay = 0.0
  c.lookahead.power = 0.0

  # Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training images:
  # lam ~ Beta(alpha, alpha) per batch, the partner is the reversed batch.
  c.mix = ml_collections.ConfigDict()
  c.mix.mixup_alpha = 0.0
  c.mix.cutmix_alpha = 0.0
  c.mix.switch_prob = 0.5  # with both: the chance a batch uses cutmix
  c.mix.prob = 1.0  # the chance a batch is mixed at all
  # Duration: exactly one of num_steps / num_epochs is positive.
  c.num_steps = 0
  c.num_epochs = 0.0

  # On-device augmentation of training images (see cnnjax/data/augment.py).
  # Applied in this order; each is off at its default.
  c.augment = ml_collections.ConfigDict()
  c.augment.crop_scale = ()  # random resized crop: area fraction range, e.g. (0.08, 1.0)
  c.augment.crop_ratio = (3 / 4, 4 / 3)  # ... and aspect-ratio range
  c.augment.rotate = 0.0  # random rotation of up to this many degrees
  c.augment.translate = 0  # random shift of up to this many pixels per axis
  c.augment.translate_mode = "edge"  # border: edge | constant (zeros) | reflect
  c.augment.flip = False  # random left-right mirror
  c.augment.brightness = 0.0  # colour jitter, torchvision's factors
  c.augment.contrast = 0.0
  c.augment.saturation = 0.0
  # Test-time augmentation in evaluation: softmax averaged over the views
  # (the image, its 4 diagonal shifts by tta_shift pixels, and mirrors).
  c.augment.tta_flip = False
  c.augment.tta_shift = 0

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "softmax_cross_entropy"
  c.loss.label_smoothing = 0.0
  c.loss.margin = 1.0  # multiclass_hinge only
  # Weight of each auxiliary classifier's loss, for models that return
  # (logits, aux_logits, ...) in training (GoogLeNet: 0.3).
  c.loss.aux_weight = 0.3

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9  # momentum, nesterov
  c.optimizer.b1 = 0.9  # adam, adamw
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.decay = 0.9  # rmsprop: decay of the squared-gradient average
  c.optimizer.rho = 0.9  # adadelta
  # L2 weight decay (coupled, added to the gradient; decoupled for adamw) and
  # an L1 penalty added to the loss. 'all' decays every parameter (PyTorch's
  # default), 'kernels' only those with two or more dimensions.
  c.optimizer.weight_decay = 0.0
  c.optimizer.weight_decay_mask = "all"
  c.optimizer.l1 = 0.0
  # Max-norm constraint (Kim 2014: 3 on the output layer): after every update
  # each unit's incoming weight vector in the named Dense layers is rescaled
  # to L2 norm <= max_norm. 0 turns it off.
  c.optimizer.max_norm = 0.0
  c.optimizer.max_norm_layers = "head"
  # Clip the raw gradients to this global L2 norm before anything else. 0: off.
  c.optimizer.clip_norm = 0.0
  # Per-parameter learning rates: 'REGEX=FACTOR' strings; the first regex that
  # matches a parameter's path ('c1/kernel', 'stage3/block0/conv1/kernel')
  # scales its updates by FACTOR (0 freezes it); unmatched parameters get 1.
  c.optimizer.lr_multipliers = ()

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "constant"  # constant|step|multistep|cosine|linear|plateau
  c.schedule.warmup_steps = 0
  c.schedule.warmup_epochs = 0.0
  c.schedule.warmup_from = 0.0  # the warmup's first lr, as a fraction of the peak
  c.schedule.step_size = 0  # step: decay every step_size steps
  c.schedule.step_size_epochs = 0.0
  c.schedule.boundaries = ()  # multistep, in steps
  c.schedule.boundary_epochs = ()  # multistep, in epochs
  c.schedule.gamma = 0.1  # step, multistep: factor at each boundary
  c.schedule.end_factor = 0.0  # cosine, linear: final lr / initial lr
  c.schedule.patience = 10  # plateau, in epochs (of train-loss averages)
  c.schedule.cooldown = 0
  c.schedule.factor = 0.1

  # Transfer learning (see cnnjax/train/transfer.py): start from another
  # run's checkpoint; arrays whose path and shape match are copied.
  c.transfer = ml_collections.ConfigDict()
  c.transfer.init_from = ""  # '' = off; a workdir, or one checkpoint step's directory
  c.transfer.init_step = "latest"  # latest | best | a step number
  c.transfer.reinit = ()  # top-level modules to re-initialise anyway, e.g. ('head',)
  # 'backbone': every loaded parameter is frozen (a fixed feature extractor);
  # 'none': all train, the loaded ones at backbone_lr_factor times the rate.
  # An optimizer.lr_multipliers rule that matches a loaded parameter wins.
  c.transfer.freeze = "none"
  c.transfer.backbone_lr_factor = 1.0
  # Where the checkpoint's arrays go in this model: '' = the same paths; a
  # submodule such as 'encoder' puts a classifier's arrays under the
  # detector's or segmenter's backbone ('stem/conv/kernel' lands at
  # 'encoder/stem/conv/kernel'; the classifier's head finds no place).
  c.transfer.into = ""

  # The divergence guard, read at the log and checkpoint steps from per-step
  # values the train step returns anyway (no host sync of its own). A
  # non-finite loss always stops the run, keeping the last good checkpoint
  # (exit status 2); so does a non-finite gradient norm or weight while
  # stop_on_nonfinite is on: a float32 gradient norm overflows to inf long
  # before the loss does (learning_rate=1e6 keeps the loss finite, near 1e27,
  # with an infinite gradient norm). Steps that float16 loss scaling skips
  # do not count: their gradients overflow by design.
  c.divergence = ml_collections.ConfigDict()
  c.divergence.stop_on_nonfinite = True
  # Warn once (stderr, and 'divergence_warning' in result.json) when a logged
  # mean train loss exceeds this many times the loss of the run's first
  # step; a healthy run never climbs that far above its start. 0: no warning.
  c.divergence.loss_factor = 100.0

  c.log_every = 100
  c.eval_every = 1000  # 0: evaluate only at the end
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.best_metric = "test/accuracy"  # '' disables best-checkpoint tracking
  c.best_mode = "max"
  c.progress_bar = True
  # What each evaluation reports, by name from `cnnjax.evaluators` (accuracy,
  # auc, medmnist, multilabel, confusion_matrix); () takes the dataset's own
  # (accuracy, plus the AUC for binary, multi-label and MedMNIST data).
  c.evaluators = ()
  # XLA's persistent compilation cache: 'auto' (a cnnjax folder in the user's
  # cache directory), 'none', or a directory. A second run of the same model
  # then loads its compiled steps instead of compiling them again.
  c.compilation_cache = "auto"
  # Which library computes the convolutions on a CPU (cnnjax.ops.backend):
  # 'xla', 'onednn' (the `onednn` extra) or 'auto' (oneDNN where it runs);
  # '' reads CNNJAX_CONV_BACKEND, else 'xla'. GPUs and TPUs always use XLA.
  c.conv_backend = ""

  # What the experiment aims at: the published number it reproduces.
  c.reference = ml_collections.ConfigDict()
  c.reference.metric = ""  # e.g. 'test/accuracy'
  c.reference.value = 0.0
  c.reference.source = ""
  # More published figures of the same run, as 'METRIC=VALUE' strings, e.g.
  # ('test/accuracy=0.907',) beside a test/auc reference.
  c.reference.others = ()

  # How `cnnjax reproduce` runs the experiment (see cnnjax/reproduce/).
  c.reproduce = ml_collections.ConfigDict()
  c.reproduce.seeds = 1  # seeds when --seeds is not given
  # 'KEY=V1,V2,...' strings: runs over these settings are pooled into one
  # figure, their mean (Kim 2014's 10 folds: 'dataset.fold=0,1,...,9').
  c.reproduce.average_over = ()
  # 'KEY=V1,V2,...' strings: each setting (their cross product) is one row
  # of the result card (the material's claims: plain vs residual, ...).
  c.reproduce.compare = ()
  # What the compare rows should show, tested on the card with the
  # seed-paired difference of two rows and its 95% t-interval: strings
  # '[METRIC: ]LEFT > RIGHT' (or '<'), each side naming one row by its
  # compare settings as the row labels write them ('translate=2 >
  # translate=0'); METRIC defaults to reference.metric (grammar:
  # reproduce/planning.py, `parse_claims`).
  c.reproduce.claim = ()
  # One sentence on how this run departs from the paper (budget, data).
  c.reproduce.note = ""
  # An experiment id (e.g. 'digits/lenet5_first5') reproduced first; its
  # seed-0 run becomes this experiment's transfer.init_from.
  c.reproduce.init_from_experiment = ""
  # A check run on the finished runs, adding figures to the card (see
  # cnnjax/reproduce/analyses.py: 'ensemble', 'shift_invariance', ...).
  c.reproduce.analysis = ""

  # Shrinks any experiment to a few seconds (tests, `reproduce --smoke`).
  c.smoke = False
  c.smoke_steps = 12
  c.smoke_image_size = 64  # smoke runs cap dataset.image_size at this
  return c
