"""Log-mel features in JAX against librosa: filterbank, power spectrogram and
their log, on a chirp with noise."""

from __future__ import annotations

import numpy as np
import pytest

from cnnjax.ops import audio

librosa = pytest.importorskip("librosa")


def _signal(n=8000, sr=16000, seed=0):
  t = np.arange(n) / sr
  rng = np.random.default_rng(seed)
  chirp = np.sin(2 * np.pi * (300 * t + 2000 * t ** 2))
  return (0.5 * chirp + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 40, 0.0, None),
                                                         (8000, 256, 24, 50.0, 3500.0)])
def test_filterbank_equals_librosas(sr, n_fft, n_mels, fmin, fmax):
  np.testing.assert_allclose(audio.mel_filterbank(sr, n_fft, n_mels, fmin, fmax),
                             librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
                                                 fmin=fmin, fmax=fmax), rtol=1e-5, atol=1e-8)


def test_log_mel_equals_librosas():
  y = _signal()
  ours = np.asarray(audio.log_mel(y[None], sample_rate=16000, n_fft=512, hop_length=160,
                                  n_mels=40))[0]
  mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=160, n_mels=40,
                                       center=True, pad_mode="constant", power=2.0)
  want = np.log(mel.T + 1e-6)
  assert ours.shape == want.shape == (51, 40)
  np.testing.assert_allclose(ours, want, atol=1e-4)  # 3e-6 measured
