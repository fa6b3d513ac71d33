"""Claim: features a CNN learns beat hand-crafted ones, on CIFAR-10 (the
material's "Hand-crafted Features vs Learned Features").

    cnnjax reproduce --filter claims/handcrafted_features_cifar10 \
        --config.dataset.name=image_folder --config.dataset.data_dir=DIR

DIR is CIFAR-10 as JPEG files (DIR/train/<class>/*.jpg, DIR/test/<class>/*.jpg,
cnnjax/data/image_folder.py); without the flags the TFDS copy is read. A
small CNN (rf_cnn, 16 channels, three 3x3 convolutions, two 2x2 max
poolings, a dense head on the flattened 8x8 maps) on a CPU budget, with
flips and 4-pixel shifts. The analysis 'handcrafted_features'
(cnnjax/reproduce/analyses_features.py) fits a logistic regression and an
RBF SVM on the pixels, Sobel maps, Robinson compass responses and HOG
descriptors (4-pixel cells, 2x2-cell blocks, 9 unsigned bins, L2-Hys) of
5,000 training images, and on the trained CNN's penultimate features of
the same images, scored on 2,000 test images, beside the CNN's own accuracy
on them ('cnn/end_to_end'). As in claims/handcrafted_features (the digits),
the comparison is a finding in the card's figures
('learned_minus_handcrafted/linear', '.../rbf_svm'): the claim grammar
compares settings' headline metrics only.

Measured on 2 CPU cores (load average about 4, then quiet) with the JPEG
folder: the one row (one seed) trained in 193 s, decoding the 60,000 JPEGs
included (51.0% test accuracy), and the analysis took 330 s (ten
classifiers on up to 3,072 features of 5,000 images): about 9 minutes. Its
figures on the 2,000 test images: 'linear' pixels 26.7%, Sobel 27.5%,
Robinson 27.2%, HOG 37.8%, CNN features 45.9%; 'rbf_svm' pixels 45.9%,
Sobel 40.3%, Robinson 38.0%, HOG 48.8%, CNN features 55.5%; the CNN itself
51.8%: the learned features lead the best hand-crafted set (HOG) by 8.1 and
6.8 points.
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "rf_cnn"
  config.model.channels = 16
  config.model.stage = "3x3x3"
  config.model.pooling = "max"
  config.model.head = "flatten"
  config.dataset.name = "cifar10"
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_steps = 800
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "cosine"
  config.augment.translate = 4
  config.augment.translate_mode = "constant"
  config.augment.flip = True
  config.log_every = 50
  config.eval_every = 400
  config.checkpoint_every = 400
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.0
  config.reference.source = ("the material's 'Hand-crafted Features vs Learned "
                             "Features': learned features need no expert design")
  config.reproduce.seeds = 1
  config.reproduce.analysis = "handcrafted_features"
  config.reproduce.note = ("a 5-layer CNN, 800 steps on a CPU budget; classifiers "
                           "on 5,000 train / 2,000 test images; the comparison is "
                           "in the analysis figures (a finding)")
  return config
