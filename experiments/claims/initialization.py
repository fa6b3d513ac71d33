"""Claim: in a deep plain network the scale of the random initial weights
decides whether it trains: too small a scale makes the signal and the
gradients vanish with depth; a scale set by each layer's fan (Glorot /
Xavier for tanh, He / Kaiming for ReLU) keeps them the same size in every
layer, and the network learns.

    cnnjax reproduce --filter claims/initialization

The material names weight initialization among the training details of a
CNN ("the network is initialized with randomly chosen weights"; "training
tricks and details: initialization, regularization, normalization") and
says that deeper plain networks are harder to optimize and that gradients
vanish in them; the scales themselves are Glorot & Bengio 2010
("Understanding the difficulty of training deep feedforward neural
networks": variance 2 / (fan_in + fan_out)) and He et al. 2015 ("Delving
deep into rectifiers": variance 2 / fan_in for ReLU).

A plain MLP of 15 hidden layers of 64 units (no residual, no
normalization) on MNIST-1D, trained with SGD and momentum 0.9 (Adam would
rescale vanishing gradients and hide the effect), each row drawing every
kernel (model.kernel_init) from N(0, 0.01^2) ('normal_0.01', the naive
"small random numbers"), Glorot or He, with ReLU and with tanh. The
analysis 'init_statistics' measures, at step 0, every layer's output std
and kernel-gradient std (the plot init_statistics.png beside the card) and
the first logged training loss; the claims are on the test accuracy after
a short budget.

Measured on 2 shared CPU cores (load average about 4), seed 0, one run
per row: he_normal/relu 39.4% test accuracy after 1,000 steps (8.4 s of
training, 21 s with start-up), glorot_normal/relu 13.4% (6.2 s),
glorot_normal/tanh 37.1% (6.1 s), normal_0.01 with either 8.9% (chance:
loss 2.303; 4.7-6.8 s). At step 0 (the analysis) the output std of the
16th layer is 1.02 with He/ReLU against 1.49 at the first, 0.0046 with
Glorot/ReLU, 0.19 with Glorot/tanh, and 2e-18 (tanh) or exactly 0 (ReLU,
below float32's range) with normal_0.01, whose kernel gradients are then
1e-18 or 0 in every layer. The 6 rows x 3 seeds take about 5 minutes, and
the analysis about 5 s per run.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../mnist1d/base.py")
  config.model.name = "mlp"
  config.model.hidden_sizes = (64,) * 15
  config.model.activation = "relu"
  config.model.kernel_init = "he_normal"
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.learning_rate = 0.01
  config.num_steps = 1000
  config.log_every = 20
  config.eval_every = 500
  config.checkpoint_every = 1000
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = (
      "the material: weight initialization is a training detail, deeper plain "
      "networks are harder to optimize; Glorot & Bengio 2010, He et al. 2015")
  config.reproduce.seeds = 3
  config.reproduce.compare = (
      "model.kernel_init=he_normal,glorot_normal,normal_0.01",
      "model.activation=relu,tanh")
  config.reproduce.claim = (
      "kernel_init=he_normal activation=relu > kernel_init=normal_0.01 activation=relu",
      "kernel_init=glorot_normal activation=tanh > kernel_init=normal_0.01 activation=tanh",
      # He et al. 2015: Glorot's scale halves the signal at every ReLU layer.
      "kernel_init=he_normal activation=relu > kernel_init=glorot_normal activation=relu",
  )
  config.reproduce.analysis = "init_statistics"
  config.reproduce.note = "a 15-layer plain MLP, SGD, 1,000 steps"
  return config
