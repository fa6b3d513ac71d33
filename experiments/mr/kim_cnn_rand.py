"""MR sentence polarity: Kim's CNN-rand (random word vectors trained with the net).

    cnnjax train --config experiments/mr/kim_cnn_rand.py \
        --config.dataset.data_dir=../shared/data/mr [--config.dataset.fold=0..9]
    cnnjax reproduce --filter mr/kim_cnn_rand \
        --config.dataset.data_dir=../shared/data/mr     # all 10 folds, pooled

Kim (2014), section 3: filter widths 3, 4, 5 with 100 maps each, dropout 0.5,
an L2 max-norm of 3 on the output layer's weight vectors, mini-batches of 50,
Adadelta (rho 0.95), 25 epochs; sentences padded with 4 zeros at each end.
The paper reports 10-fold cross-validation; a run here is one fold
(`dataset.fold`), and the cross-validated figure is the mean over the ten,
which `cnnjax reproduce` computes (reproduce.average_over).
The vocabulary comes from the training folds only (`dataset.vocab_from`).

Published: CNN-rand 76.1% accuracy on MR (Kim 2014, Table 2).
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "kim_cnn_rand"
  config.dataset.name = "mr"
  config.dataset.fold = 0
  config.dataset.num_folds = 10
  config.batch_size = 50
  config.eval_batch_size = 1000
  config.num_epochs = 25.0
  config.optimizer.name = "adadelta"
  config.optimizer.learning_rate = 1.0
  config.optimizer.rho = 0.95
  config.optimizer.eps = 1e-6
  config.optimizer.max_norm = 3.0
  config.log_every = 100
  config.eval_every = 192  # one epoch of 9,595 training sentences
  config.checkpoint_every = 192
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.761
  config.reference.source = "Kim 2014, Table 2 (CNN-rand, MR; 10-fold cross-validation)"
  config.reproduce.average_over = ("dataset.fold=" + ",".join(map(str, range(10))),)
  config.reproduce.note = ("The vocabulary comes from the training folds only; Kim "
                           "built it from all the data.")
  return config
