"""The shapes detector (faster_rcnn_shapes.py) with a pretrained backbone:
the ResNet-18 of cifar10/transfer_source (CIFAR-10 classes 0-4, 4 epochs)
loaded under the detector's `encoder` (`transfer.into`), against the same
detector trained from scratch (faster_rcnn_shapes.py's card).

    cnnjax train --config experiments/cifar10/transfer_source.py --config.dataset.data_dir=DIR
    cnnjax train --config experiments/detection/faster_rcnn_shapes_pretrained.py \
        --config.transfer.init_from=runs/cifar10/transfer_source

Only the stem and the first two stages of the classifier have a place in
the detector (it reads the stride-8 map); the classifier's head and its
last two stages are left out, the region proposal network and the box head
start at random. Every layer trains at the same rate (fine-tuning). Any
classifier run of the `resnet18` twin plugs in the same way, a torchvision
ImageNet file converted with `cnnjax convert --model resnet18` included
(none can be downloaded here).
"""

from cnnjax.config import config_from


def get_config():
  config = config_from(__file__, "faster_rcnn_shapes.py")
  config.transfer.init_from = "runs/cifar10/transfer_source"
  config.transfer.into = "encoder"
  config.reference.source = ("no published figure: procedural scenes (cnnjax.data.scenes); "
                             "compare faster_rcnn_shapes (the same detector from scratch)")
  config.reproduce.note = ("backbone: ResNet-18 of cifar10/transfer_source (CIFAR-10 JPEG "
                           "copy, classes 0-4, 4 epochs); 5 epochs of shapes scenes on 2 CPU "
                           "cores.")
  config.reproduce.init_from_experiment = "cifar10/transfer_source"
  return config
