"""TFDS's `speech_commands` (Warden 2018, Speech Commands v0.02) as log-mel
features for the frequency-band CNN (models/freq_cnn.py).

    cnnjax train --config experiments/speech/freq_cnn_speech_commands.py \
        --config.dataset.data_dir=~/tensorflow_datasets

For users who have the data prepared (TFDS `speech_commands`; `download=true`
fetches it where the network allows). Twelve classes, TFDS's labels: the ten
keywords (down, go, left, no, off, on, right, stop, up, yes), '_silence_'
and '_unknown_'; splits train (85,511 clips), validation (10,102) and test
(4,890). Each clip (int16 at 16 kHz) becomes float (/ 32768), is cut or
zero-padded at its end to exactly one second (16,000 samples) and turned
into log-mel features as the tones task's are (cnnjax.ops.audio.log_mel: 40
bands, 25 ms windows, 10 ms hops, so 101 frames), stored as float32 (40
bands, 101 frames): the frequency axis first, the frames as its channels.
The features are computed in batches of 256 clips by one jitted function,
then standardised with the training split's mean and standard deviation
(one number each, as tones does; kept in metadata as `feature_mean` and
`feature_std`). Everything is held in memory: about 1.6 GB of float32 for
all three splits.

Splits are TFDS specifications (`train_split`, `eval_splits`, e.g.
'val=train[90%:]'); the defaults are 'train' for training and 'validation'
and 'test' for evaluation. Smoke runs take the first 256 training and 128
evaluation clips of each split.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from cnnjax.data.arrays import ArrayDataset
from cnnjax.errors import CnnjaxError, DataMissingError

NAME = "speech_commands"
SAMPLE_RATE = 16000
SAMPLES = SAMPLE_RATE  # one second
N_MELS = 40
N_FFT = 400  # 25 ms windows
HOP_LENGTH = 160  # 10 ms hops
FRAMES = 1 + SAMPLES // HOP_LENGTH  # centred frames: 101
BATCH = 256  # clips per call of the jitted feature function
DEFAULT_EVAL = ("validation", "test")
SMOKE_EXAMPLES = {"train": 256}  # every other split: SMOKE_EVAL_EXAMPLES
SMOKE_EVAL_EXAMPLES = 128


def fit_clip(audio: np.ndarray) -> np.ndarray:
  """One int16 clip -> (16000,) float32 in [-1, 1): its first second,
  zero-padded at the end when it is shorter."""
  audio = np.asarray(audio).reshape(-1)[:SAMPLES]
  out = np.zeros(SAMPLES, np.float32)
  out[:len(audio)] = audio.astype(np.float32) / 32768.0
  return out


@functools.lru_cache(maxsize=4)
def _features_fn(batch: int):
  """A jitted (batch, 16000) float32 -> (batch, 40, 101) log-mel function."""
  from cnnjax.ops.audio import log_mel

  del batch  # One function (and one compilation) per batch size.

  def features(waves):
    mel = log_mel(waves, sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
                  n_mels=N_MELS)
    return mel.transpose(0, 2, 1)

  return jax.jit(features)


def clip_features(waves: np.ndarray) -> np.ndarray:
  """(N, 16000) float32 clips -> (N, 40, 101) float32 log-mel features,
  computed BATCH clips at a time (the last batch zero-padded, so the
  function compiles once)."""
  fn = _features_fn(BATCH)
  out = np.empty((len(waves), N_MELS, FRAMES), np.float32)
  for start in range(0, len(waves), BATCH):
    chunk = waves[start:start + BATCH]
    full = np.zeros((BATCH, SAMPLES), np.float32)
    full[:len(chunk)] = chunk
    out[start:start + len(chunk)] = np.asarray(fn(full))[:len(chunk)]
  return out


def load_speech_commands(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """Speech Commands as (N, 40, 101) float32 log-mel features and int32
  labels 0..11 (module docstring)."""
  from cnnjax.data.tf_utils import import_tfds

  try:
    import_tfds()
  except CnnjaxError as e:  # Without TensorFlow the data cannot be read here.
    raise DataMissingError(f"dataset '{NAME}' is read through TFDS, which needs "
                           "`pip install tensorflow-cpu tensorflow-datasets`") from e
  from cnnjax.data.tfdata_sources import parse_splits, tfds_builder

  data_dir = os.path.expanduser(dataset_config.get("data_dir", "") or "")
  builder = tfds_builder(NAME, data_dir, bool(dataset_config.get("download", False)))
  train_spec, eval_specs = parse_splits(dataset_config, "train", list(DEFAULT_EVAL))
  specs = {"train": train_spec, **eval_specs}
  if smoke:
    specs = {s: f"{spec}[:{SMOKE_EXAMPLES.get(s, SMOKE_EVAL_EXAMPLES)}]"
             if "[" not in spec else spec for s, spec in specs.items()}
  label = builder.info.features["label"]
  splits = {}
  for split, spec in specs.items():
    arrays = _to_arrays(builder.as_dataset(split=spec, shuffle_files=False))
    if not len(arrays["label"]):
      raise CnnjaxError(f"split '{split}' ({spec}) of TFDS dataset '{NAME}' has no examples")
    splits[split] = arrays
  mean, std = _moments(splits["train"]["image"])
  for arrays in splits.values():
    arrays["image"] -= mean  # in place: the arrays are the loader's own
    arrays["image"] /= std
  return ArrayDataset(
      name=NAME, splits=splits, num_classes=label.num_classes,
      metadata={"class_names": tuple(label.names), "tfds_name": builder.name,
                "splits": specs, "sample_rate": SAMPLE_RATE, "frames": FRAMES,
                "feature_mean": mean, "feature_std": std})


def _to_arrays(ds) -> dict[str, np.ndarray]:
  """{'image': (N, 40, 101) float32 log-mel features, 'label': (N,) int32}."""
  chunks, labels = [], []
  waves = np.zeros((BATCH, SAMPLES), np.float32)
  filled = 0
  for example in ds.as_numpy_iterator():
    waves[filled] = fit_clip(example["audio"])
    labels.append(int(example["label"]))
    filled += 1
    if filled == BATCH:
      chunks.append(clip_features(waves))
      filled = 0
  if filled:
    chunks.append(clip_features(waves[:filled]))
  images = (np.concatenate(chunks) if chunks
            else np.zeros((0, N_MELS, FRAMES), np.float32))
  return {"image": images, "label": np.asarray(labels, np.int32)}


def _moments(images: np.ndarray) -> tuple[float, float]:
  """The mean and standard deviation of every value, summed in float64 a
  few thousand examples at a time."""
  total = squares = 0.0
  for start in range(0, len(images), 4096):
    chunk = images[start:start + 4096].astype(np.float64)
    total += chunk.sum()
    squares += np.square(chunk).sum()
  mean = total / images.size
  std = float(np.sqrt(max(squares / images.size - mean**2, 1e-12)))
  return float(mean), std
