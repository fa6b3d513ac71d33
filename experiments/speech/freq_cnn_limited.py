"""Convolution over frequency bands with limited weight sharing (Abdel-Hamid
et al. 2014: filters of their own for each pooling section of the bands) on
the synthetic tones task.

    cnnjax train --config experiments/speech/freq_cnn_limited.py

The data (cnnjax/data/tones.py) is generated in code: six kinds of short
sounds (chirps up and down, steady tones, trills, arches, chords) at random
pitches in noise, as 40-band log-mel features of 51 frames; 3,000 training
and 1,000 test clips. The network (models/freq_cnn.py): 64 filters of 8
bands over all frames, max pooling over 3 band positions, a 256-unit layer
with dropout 0.2. Adam at 1e-3 with a cosine decay, batch 64, 15 epochs.

No published figure: the task is this project's. The comparison is limited
against full weight sharing (speech/freq_cnn_full): the paper found
limited sharing better on TIMIT phones, whose spectra differ between bands;
here every kind of sound occurs at every pitch.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "freq_cnn_full.py")
  config.model.weight_sharing = "limited"
  return config
