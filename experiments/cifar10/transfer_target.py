"""Transfer on CIFAR-10 (JPEG copy): the ResNet-18 of the first five classes
(transfer_source.py) reused for the other five (dog, frog, horse, ship,
truck), frozen or fine-tuned, against training from scratch
(transfer_scratch.py).

    cnnjax train --config experiments/cifar10/transfer_source.py --config.dataset.data_dir=DIR
    cnnjax export --workdir runs/cifar10/transfer_source --format torch \
        --out /tmp/resnet18_first5.safetensors
    cnnjax convert /tmp/resnet18_first5.safetensors --model resnet18 \
        --out runs/cifar10/resnet18_first5_converted \
        --config experiments/cifar10/transfer_source.py --config.dataset.data_dir=DIR
    cnnjax train --config experiments/cifar10/transfer_target.py --config.dataset.data_dir=DIR \
        --config.transfer.init_from=runs/cifar10/resnet18_first5_converted

The round trip through torchvision's state dict is exact, so starting from
the converted run or from the source run itself trains the same numbers
(`cnnjax reproduce` points init_from at the source run). Any torchvision
`resnet18` file converts the same way, ImageNet's included.

Two settings (`reproduce.compare`): the backbone frozen (a linear classifier
on the 512 pooled features; only the new head trains) and full fine-tuning
(every layer; the pretrained ones at a tenth of the head's learning rate).
The head, 512 -> 5 in both runs, is re-initialised. A short budget: 2 epochs
(390 steps of 128); transfer pays most when the target is short of training.

No paper reports this split; the target, 70% test accuracy with the frozen
backbone, is this project's bar.
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "transfer_source.py")
  config.dataset.classes = (5, 6, 7, 8, 9)
  config.num_steps = 390
  config.schedule.warmup_steps = 20
  config.transfer.init_from = "runs/cifar10/transfer_source"
  config.transfer.reinit = ("head",)
  config.transfer.freeze = "backbone"
  config.transfer.backbone_lr_factor = 0.1  # With freeze='none'.
  config.reference.metric = "test/accuracy"
  config.reference.value = 0.70
  config.reference.source = ("cnnjax target for a frozen ResNet-18 backbone of "
                             "CIFAR-10 classes 0-4 on classes 5-9 (no published figure)")
  config.reproduce.note = ("CIFAR-10 (JPEG copy), classes 5-9, 2 epochs on 2 CPU "
                           "cores, from the classes 0-4 network.")
  config.reproduce.init_from_experiment = "cifar10/transfer_source"
  config.reproduce.compare = ("transfer.freeze=backbone,none",)
  return config
