"""CIFAR-10: ResNet-20 on a CPU budget: He et al.'s model and data, three epochs.

    cnnjax reproduce --filter cifar10/resnet20_cpu_budget \
        --config.dataset.name=image_folder --config.dataset.data_dir=DIR

The paper's 64,000 steps take about 11 hours on the 2 CPU cores of this
project's machines (1.5 steps/s). This is the same network, batch, optimizer,
weight decay and augmentation for 1,170 steps (3 epochs, about 13 minutes),
with the learning-rate schedule compressed to fit: a 100-step linear warmup
to 0.1, then a cosine decay to 0 (He et al. divide by 10 at 32k and 48k).
It is a budget run, not the paper's: its figure shows how far three epochs
get, with the test-accuracy curve every half epoch.

Published (full schedule): 8.75% test error, i.e. 91.25% accuracy (He et al.
2016, Table 6).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.num_steps = 1170
  config.schedule.name = "cosine"
  config.schedule.boundaries = ()
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.0
  config.log_every = 65
  config.eval_every = 195
  config.checkpoint_every = 390
  config.reproduce.note = ("3 epochs (1,170 steps) instead of 64,000 steps, with a "
                           "warmup + cosine schedule instead of steps at 32k and 48k.")
  return config
