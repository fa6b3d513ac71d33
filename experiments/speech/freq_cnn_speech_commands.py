"""Convolution over frequency bands with full weight sharing (Abdel-Hamid et
al. 2014) on Speech Commands v0.02 (Warden 2018): twelve-way keyword spotting.

    cnnjax train --config experiments/speech/freq_cnn_speech_commands.py \
        --config.dataset.data_dir=DIR   # DIR holds the prepared TFDS speech_commands

For users who have TFDS `speech_commands` prepared (or add
`--config.dataset.download=true` where the network allows). The data
(cnnjax/data/speech_commands.py): the ten keywords, '_silence_' and
'_unknown_'; 85,511 training, 10,102 validation and 4,890 test clips, each
cut or zero-padded to one second and turned into 40-band log-mel features of
101 frames (the tones task's features over twice the time), standardised
with the training split's statistics and held in memory. The network is
speech/freq_cnn_full's (models/freq_cnn.py: 64 filters of 8 bands over all
frames, max pooling over 3 band positions, a 256-unit layer with dropout
0.2); Adam at 1e-3 with a cosine decay, batch 128, 20 epochs; evaluated on
validation and test every 1,000 steps, the best checkpoint chosen by
validation accuracy.

No published figure: the paper reports TIMIT phone error rates, and there
is none for this model on Speech Commands; reference.value is 0.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "freq_cnn_full.py")
  config.dataset.name = "speech_commands"
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 20
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.best_metric = "validation/accuracy"
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("no published figure for this model on Speech Commands "
                             "(TFDS speech_commands; Abdel-Hamid et al. 2014 report TIMIT)")
  return config
