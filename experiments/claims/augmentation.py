"""Claim: data augmentation with label-preserving transformations improves
generalization, and a transformation that does not preserve the label hurts
(Krizhevsky et al. 2012, AlexNet, section 4.1; the material's augmentation
slides).

    cnnjax reproduce --filter claims/augmentation

LeNet-5 on the digits (experiments/digits/lenet5.py) with random shifts of
up to 0, 1 and 2 pixels; 3 seeds, 20 of the recipe's 60 epochs (440 steps).

Measured on 2 busy CPU cores (load average 14): one row (one seed) trained
in 25 s, so the 3 rows x 3 seeds take about 4 minutes. A random left-right
mirror, which does not preserve a digit's identity (a mirrored 2 is no 2),
should hurt; it doubles the rows, so it is not in the card (shifts of 2 and
mirroring, one seed: 93.3% test accuracy at 440 steps). The contrast:

    cnnjax sweep --config experiments/claims/augmentation.py \
        --grid augment.translate=0,2 --grid augment.flip=false,true --seeds 3
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "../digits/lenet5.py")
  config.num_epochs = 20.0
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("Krizhevsky et al. 2012 (AlexNet), section 4.1: "
                             "label-preserving augmentation reduces overfitting")
  config.reproduce.seeds = 3
  config.reproduce.compare = ("augment.translate=0,1,2",)
  config.reproduce.note = "8x8 digits, LeNet-5, 20 of the recipe's 60 epochs"
  return config
