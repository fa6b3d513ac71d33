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

from cnnjax.config import base_config

SHARING = "limited"


def get_config():
  config = base_config()
  config.model.name = "freq_cnn"
  config.model.weight_sharing = SHARING
  config.dataset.name = "tones"
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_epochs = 15
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.log_every = 50
  config.eval_every = 0
  config.checkpoint_every = 500
  config.reference.metric = "test/accuracy"
  config.reference.source = "no published figure: synthetic tones (cnnjax.data.tones)"
  config.reproduce.seeds = 3
  return config
