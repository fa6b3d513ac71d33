"""CIFAR-10 (JPEG copy), the first five classes: the source network of a
transfer experiment, in torchvision's ResNet-18 layout.

    cnnjax train --config experiments/cifar10/transfer_source.py \
        --config.dataset.data_dir=DIR        # DIR/train/<class>/*.jpg, DIR/test/...

ResNet-18 exactly as torchvision builds it (the ImageNet stem: a 7x7/2
convolution and a 3x3/2 max pool, so the four stages see 8, 4, 2 and 1
pixel maps of a 32x32 image), trained on airplane, automobile, bird, cat
and deer. Its layout is what lets the trained network leave cnnjax and come
back: `cnnjax export --format torch` writes torchvision's `resnet18` state
dict, and `cnnjax convert` reads it into a run that
experiments/cifar10/transfer_target.py starts from, as it would start from
any torchvision file. A CPU budget: 4 epochs (780 steps of 128) with a
warmup and a cosine decay, He et al.'s optimizer and augmentation
(resnet20.py).

No paper reports this split; the target, 80% test accuracy on the five
classes, is this project's bar for the budget.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "resnet20.py")
  config.model.name = "resnet18"
  config.dataset.name = "image_folder"
  config.dataset.classes = (0, 1, 2, 3, 4)
  config.num_steps = 780
  config.schedule.name = "cosine"
  config.schedule.boundaries = ()
  config.schedule.warmup_steps = 50
  config.schedule.end_factor = 0.0
  config.log_every = 39
  config.eval_every = 195
  config.checkpoint_every = 195
  config.eval_batch_size = 500
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.80
  config.reference.source = ("cnnjax target for ResNet-18 (torchvision layout) on "
                             "CIFAR-10 classes 0-4 in 4 epochs (no published figure)")
  config.reproduce.note = ("CIFAR-10 (JPEG copy), classes 0-4, 4 epochs on 2 CPU "
                           "cores; the source of cifar10/transfer_target.")
  return config
