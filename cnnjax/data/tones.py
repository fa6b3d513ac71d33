"""A synthetic keyword task for convolution over frequency bands, generated
in code: short sounds of six kinds in noise, as log-mel features.

Each example is half a second at 16 kHz holding one sound of a random
pitch, loudness, length and onset in white noise of a random level:

  0 rising chirp    1 falling chirp    2 steady tone
  3 trill (two tones alternating)      4 arch (up, then down)
  5 a two-note chord (a fifth apart)

Every kind occurs at every pitch (a base frequency from 300 Hz to 2.4 kHz),
so a kind is a shape in the spectrogram that moves along the frequency
axis: the case the speech slide makes for convolution along frequency. The
inputs are log-mel features (cnnjax.ops.audio: 40 bands, 25 ms windows,
10 ms hops, 51 frames), stored as (40 bands, 51 frames): the frequency axis
is the one a 1D convolution slides along, the frames are its channels.
"""

from __future__ import annotations

import numpy as np

from cnnjax.data.arrays import ArrayDataset

KINDS = ("rising", "falling", "steady", "trill", "arch", "chord")
SAMPLE_RATE = 16000
SECONDS = 0.5
N_MELS = 40
SPLIT_SIZES = {"train": 3000, "test": 1000}
SMOKE_SPLIT_SIZES = {"train": 256, "test": 64}


def _sound(kind: int, t: np.ndarray, f0: float) -> np.ndarray:
  """The kind's waveform over times t (seconds from its onset)."""
  length = t[-1] + 1e-9
  u = t / length  # 0 -> 1 over the sound
  if kind == 0:  # rising: f0 -> 2 f0
    phase = 2 * np.pi * f0 * (t + 0.5 * t * u)
  elif kind == 1:  # falling: 2 f0 -> f0
    phase = 2 * np.pi * f0 * (2 * t - 0.5 * t * u)
  elif kind == 2:
    phase = 2 * np.pi * f0 * t
  elif kind == 3:  # trill: f0 and 1.5 f0, 8 switches
    freq = np.where((u * 8).astype(int) % 2 == 0, f0, 1.5 * f0)
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
  elif kind == 4:  # arch: f0 -> 1.8 f0 -> f0
    freq = f0 * (1 + 0.8 * np.sin(np.pi * u))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
  else:  # chord: f0 and 1.5 f0 together
    return 0.5 * (np.sin(2 * np.pi * f0 * t) + np.sin(2 * np.pi * 1.5 * f0 * t))
  return np.sin(phase)


def make_waveforms(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(num, 8000) float32 waveforms and their int32 kinds, from `seed`."""
  rng = np.random.default_rng(seed)
  total = int(SAMPLE_RATE * SECONDS)
  waves = np.zeros((num, total), np.float32)
  kinds = rng.integers(0, len(KINDS), num).astype(np.int32)
  for n in range(num):
    length = int(rng.uniform(0.2, 0.4) * SAMPLE_RATE)
    onset = int(rng.integers(0, total - length))
    f0 = float(np.exp(rng.uniform(np.log(300), np.log(2400))))
    t = np.arange(length) / SAMPLE_RATE
    envelope = np.minimum(1, np.minimum(t, t[-1] - t) / 0.01)  # 10 ms fades
    sound = _sound(int(kinds[n]), t, f0) * envelope * rng.uniform(0.3, 1.0)
    waves[n, onset:onset + length] = sound
    waves[n] += rng.uniform(0.02, 0.2) * rng.standard_normal(total)
  return waves, kinds


def features(waves: np.ndarray) -> np.ndarray:
  """(N, samples) -> (N, 40 bands, 51 frames) log-mel features."""
  from cnnjax.ops.audio import log_mel
  out = []
  for start in range(0, len(waves), 512):
    out.append(np.asarray(log_mel(waves[start:start + 512], sample_rate=SAMPLE_RATE,
                                  n_fft=400, hop_length=160, n_mels=N_MELS)))
  return np.concatenate(out).transpose(0, 2, 1).astype(np.float32)


def load_tones(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """The tones task: train and test from seeds 2s and 2s + 1 (s =
  config.dataset.split_seed), features standardised with the training
  split's mean and standard deviation."""
  seed = int(dataset_config.get("split_seed", 0))
  sizes = SMOKE_SPLIT_SIZES if smoke else SPLIT_SIZES
  splits = {}
  for offset, (split, count) in enumerate(sizes.items()):
    waves, kinds = make_waveforms(count, 2 * seed + offset)
    splits[split] = {"image": features(waves), "label": kinds}
  mean = float(splits["train"]["image"].mean())
  std = float(splits["train"]["image"].std())
  for arrays in splits.values():
    arrays["image"] = (arrays["image"] - mean) / std
  return ArrayDataset(name="tones", splits=splits, num_classes=len(KINDS),
                      metadata={"class_names": KINDS, "source": "cnnjax.data.tones"})
