"""The shared MedMNIST v2 recipe (Yang et al. 2023, "MedMNIST v2", Scientific
Data 10:41, and MedMNIST/experiments): Adam at 1e-3, batch 128, 100 epochs,
the learning rate divided by 10 after epochs 50 and 75, cross-entropy, no
augmentation, evaluation every epoch and the model kept with the best
validation AUC. The benchmark's ACC and AUC are what the loop reports as
test/accuracy and test/auc (cnnjax/evaluators/medmnist.py, official_metrics).

The model files set the network, the image size and their published row;
their get_variants() gives one variant per subset (experiments/medmnist/
_targets.py holds the table).
"""

from cnnjax.config import base_config


def get_config():
  config = base_config()
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
  return config
