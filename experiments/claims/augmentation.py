"""Claim: data augmentation with label-preserving transformations improves
generalization, and a transformation that does not preserve the label hurts
(Krizhevsky et al. 2012, AlexNet, section 4.1; the material's augmentation
slides).

    cnnjax reproduce --filter claims/augmentation

LeNet-5 on the digits (experiments/digits/lenet5.py) with random shifts of
up to 0, 1 and 2 pixels; 3 seeds, the recipe's 60 epochs (1,320 steps). At
20 epochs the shifted runs had not converged yet (96.3% against 97.4% without
shifts, training accuracy 96.9%): augmentation needs the longer schedule.

The 3 rows x 3 seeds take about 5 minutes on 2 CPU cores with --vmap-seeds.
A random left-right mirror, which does not preserve a digit's identity (a
mirrored 2 is no 2), should hurt; it doubles the rows, so it is not in the
card (shifts of 2 and mirroring, one seed: 93.3% test accuracy at 440
steps). The contrast:

    cnnjax sweep --config experiments/claims/augmentation.py \
        --grid augment.translate=0,2 --grid augment.flip=false,true --seeds 3
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../digits/lenet5.py")
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("Krizhevsky et al. 2012 (AlexNet), section 4.1: "
                             "label-preserving augmentation reduces overfitting")
  config.reproduce.seeds = 3
  config.reproduce.compare = ("augment.translate=0,1,2",)
  # Label-preserving shifts raise test accuracy; the label-breaking mirror
  # is not a row of this card (see the sweep above), so only shifts are tested.
  config.reproduce.claim = ("translate=1 > translate=0", "translate=2 > translate=0")
  config.reproduce.note = "8x8 digits, LeNet-5, the recipe of experiments/digits/lenet5.py"
  return config
