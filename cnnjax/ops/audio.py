"""Log-mel filterbank features in JAX, as librosa computes them.

    features = log_mel(waveforms, sample_rate=16000, n_fft=512, hop_length=160,
                       n_mels=40)  # (B, frames, n_mels)

The short-time Fourier transform frames the signal centred (n_fft // 2 zeros
at each end, librosa's `center=True, pad_mode='constant'`), weights each
frame with the periodic Hann window and takes |rfft|^2; the mel filterbank
is librosa's default (Slaney's mel scale: linear below 1 kHz, logarithmic
above; triangles normalised to equal area); the log is
log(mel power + `eps`). `tests/ops/test_audio.py` compares all three with
librosa.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Slaney's mel scale (librosa's `htk=False`).
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(f):
  f = np.asarray(f, np.float64)
  linear = f / _F_SP
  logarithmic = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOG_STEP
  return np.where(f >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(m):
  m = np.asarray(m, np.float64)
  linear = _F_SP * m
  logarithmic = _MIN_LOG_HZ * np.exp(_LOG_STEP * (m - _MIN_LOG_MEL))
  return np.where(m >= _MIN_LOG_MEL, logarithmic, linear)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """(n_mels, 1 + n_fft // 2) triangular filters, Slaney-normalised."""
  fmax = sample_rate / 2 if fmax is None else fmax
  fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  widths = np.diff(edges)
  ramps = edges[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / widths[:-1, None]
  upper = ramps[2:] / widths[1:, None]
  weights = np.maximum(0, np.minimum(lower, upper))
  weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
  return weights.astype(np.float32)


def power_spectrogram(waveforms: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
  """(B, samples) -> (B, frames, 1 + n_fft // 2) |STFT|^2, centred frames."""
  pad = n_fft // 2
  x = jnp.pad(waveforms, ((0, 0), (pad, pad)))
  frames = 1 + (x.shape[1] - n_fft) // hop_length
  index = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
  spectrum = jnp.fft.rfft(x[:, index] * window.astype(np.float32), axis=-1)
  return jnp.abs(spectrum) ** 2


def log_mel(waveforms: jax.Array, *, sample_rate: int = 16000, n_fft: int = 512,
            hop_length: int = 160, n_mels: int = 40, fmin: float = 0.0,
            fmax: float | None = None, eps: float = 1e-6) -> jax.Array:
  """(B, samples) -> (B, frames, n_mels) log mel power."""
  power = power_spectrogram(jnp.asarray(waveforms, jnp.float32), n_fft, hop_length)
  bank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  return jnp.log(power @ bank.T + eps)
