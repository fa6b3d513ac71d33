"""MedMNIST v2: ResNet-18 (28) on one 2D subset, the benchmark's baseline (Yang et al. 2023).

    cnnjax train --config experiments/medmnist/resnet18_28.py \
        --config.dataset.data_dir=DIR [--config.dataset.subset=dermamnist]

DIR holds the official `pathmnist.npz` (or add --config.dataset.download=true
with `pip install medmnist`). The baseline: ResNet-18 with the CIFAR-style
stem (3x3 convolution, no max pooling) for 28x28 inputs, Adam at 1e-3, batch
128, 100 epochs with the learning rate divided by 10 after epochs 50 and 75,
no augmentation; the model kept is the one with the best validation AUC.
ChestMNIST is multi-label: add --config.loss.name=sigmoid_cross_entropy.

Published (PathMNIST, ResNet-18 (28)): test AUC 0.983, ACC 0.907 (Yang et al.
2023, "MedMNIST v2", Table 3).
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
  config.model.name = "resnet18"
  config.model.stem = "small"
  config.dataset.name = "medmnist"
  config.dataset.subset = "pathmnist"
  config.dataset.image_size = 28
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 100.0
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.schedule.name = "multistep"
  config.schedule.boundary_epochs = (50.0, 75.0)
  config.schedule.gamma = 0.1
  config.best_metric = "val/auc"
  config.log_every = 200
  config.eval_every = 703  # one epoch of PathMNIST's 89,996 training images
  config.checkpoint_every = 703
  config.reference.metric = "test/auc"
  config.reference.value = 0.983
  config.reference.source = "Yang et al. 2023 (MedMNIST v2), Table 3, ResNet-18 (28), PathMNIST"
  return config
