"""Claim: deeper plain networks train worse than shallower ones, while
residual networks of the same depths do not (the degradation problem; He et
al. 2016, "Deep Residual Learning for Image Recognition", Figures 1 and 6).

    cnnjax reproduce --filter claims/degradation_cifar10

Plain-20, Plain-56, ResNet-20 and ResNet-56 on CIFAR-10 with the paper's
CIFAR recipe (experiments/cifar10/resnet20.py: SGD momentum 0.9, batch 128,
weight decay 1e-4, 4-pixel padding and crop, flips) except the budget: 200
steps (about half an epoch) instead of 64,000, at the constant rate 0.1
after a 50-step linear warmup from 0 (the paper's divisions at 32k and 48k
steps are never reached; its 0.01 warmup was for ResNet-110 only). The claim
is about training error, so the card shows the final training loss beside
test accuracy; at this budget the gap between Plain-20 and Plain-56 is the
beginning of the paper's curves, not their end. The four rows take about 20
minutes on 2 CPU cores (ResNet-56 trains at about 0.5 steps/s there).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../cifar10/resnet20.py")
  config.model.name = "plain20"
  config.num_steps = 200
  config.schedule.name = "constant"
  config.schedule.boundaries = ()
  config.schedule.warmup_steps = 50
  config.log_every = 20
  config.eval_every = 100
  config.checkpoint_every = 100
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.others = ()
  config.reference.source = ("He et al. 2016, Figures 1 and 6: deeper plain nets "
                             "train worse (higher training error); residual "
                             "nets of the same depth do not")
  config.reproduce.seeds = 1
  config.reproduce.compare = ("model.name=plain20,plain56,resnet20,resnet56",)
  # The paper's evidence is training error, but the card keeps only the
  # headline metric (test accuracy) per seed, so the claims are tested on it:
  # the deeper plain net does worse, and at 56 layers the residual net does
  # better than the plain one.
  config.reproduce.claim = ("name=plain20 > name=plain56", "name=resnet56 > name=plain56")
  config.reproduce.note = ("200 steps (about half an epoch) instead of 64,000, constant "
                           "rate 0.1 after a 50-step warmup; otherwise the "
                           "paper's CIFAR recipe")
  return config
