"""ImageNet: evaluating torchvision's IMAGENET1K_V1 weights, converted, on an image folder.

    cnnjax convert resnet50-0676ba61.pth --model resnet50 --out runs/resnet50_tv
    cnnjax eval --workdir runs/resnet50_tv \
        --config experiments/imagenet/eval_torchvision.py \
        --config.model.name=resnet50 --config.dataset.data_dir=DIR

DIR holds val/<wnid>/<file>.JPEG: the 50,000 ILSVRC-2012 validation images
in 1,000 folders named by WordNet id (torchvision's ImageFolder layout; no
train/ is needed). The classes are the sorted wnids, the class order the
torchvision weights were trained with. The images cannot be downloaded
without an image-net.org account; with ILSVRC2012_img_val.tar and
ILSVRC2012_devkit_t12.tar.gz in ROOT, torchvision sorts them into
ROOT/val/<wnid>/:

    python -c "import torchvision; torchvision.datasets.ImageNet('ROOT', split='val')"

The preprocessing is torchvision's `weights.transforms()` for all of these
weights, pixel for pixel (tests/data/test_imagenet_eval.py compares it):
PIL decoding to RGB, the shorter side resized to 256 (bilinear, antialiased;
the longer side int(256 * long / short)), the central 224 x 224 crop, /255,
then ImageNet's mean and std. Other weights use other sizes
(`--config.dataset.resize_size=342 --config.dataset.image_size=299` for
Inception v3). The folder (7 GiB at 224) streams from disk through tf.data.
Top-1 is `val/accuracy`, top-5 `val/top5_accuracy`.

Published figures: `PUBLISHED`, one entry per cnnjax model, the acc@1 and
acc@5 of `meta['_metrics']['ImageNet-1K']` in torchvision 0.28's
models/*.py. torchvision's `alexnet` and `googlenet` are cnnjax's
`alexnet_tv` and `googlenet_tv`. `get_config()` cannot know the model
(`--config.model.name` is applied after it), so it names no reference;
`apply_reference(config)` fills `config.reference` for `config.model.name`.
Without a reference this file is also not one of `cnnjax reproduce`'s
experiments, which train.

Weight files: each weights enum's `url` in the same sources,
https://download.pytorch.org/models/<file> with the file of `PUBLISHED`.
On a machine with internet:

    curl -LO https://download.pytorch.org/models/resnet50-0676ba61.pth
    # or, into ~/.cache/torch/hub/checkpoints/ (torchvision checks the hash):
    python -c "import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V1')"

The file name's suffix is the start of the file's SHA-256.
"""

from cnnjax.config import config_from
from cnnjax.errors import CnnjaxError

WEIGHTS_URL = "https://download.pytorch.org/models/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# cnnjax model -> (torchvision weights, acc@1 %, acc@5 %, file under WEIGHTS_URL).
PUBLISHED = {
    "resnet18": ("ResNet18_Weights.IMAGENET1K_V1", 69.758, 89.078,
                 "resnet18-f37072fd.pth"),
    "resnet34": ("ResNet34_Weights.IMAGENET1K_V1", 73.314, 91.42,
                 "resnet34-b627a593.pth"),
    "resnet50": ("ResNet50_Weights.IMAGENET1K_V1", 76.13, 92.862,
                 "resnet50-0676ba61.pth"),
    "resnet101": ("ResNet101_Weights.IMAGENET1K_V1", 77.374, 93.546,
                  "resnet101-63fe2227.pth"),
    "resnet152": ("ResNet152_Weights.IMAGENET1K_V1", 78.312, 94.046,
                  "resnet152-394f9c45.pth"),
    "resnext50_32x4d": ("ResNeXt50_32X4D_Weights.IMAGENET1K_V1", 77.618, 93.698,
                        "resnext50_32x4d-7cdf4587.pth"),
    "resnext101_32x8d": ("ResNeXt101_32X8D_Weights.IMAGENET1K_V1", 79.312, 94.526,
                         "resnext101_32x8d-8ba56ff5.pth"),
    "wide_resnet50_2": ("Wide_ResNet50_2_Weights.IMAGENET1K_V1", 78.468, 94.086,
                        "wide_resnet50_2-95faca4d.pth"),
    "wide_resnet101_2": ("Wide_ResNet101_2_Weights.IMAGENET1K_V1", 78.848, 94.284,
                         "wide_resnet101_2-32ee1156.pth"),
    "vgg11": ("VGG11_Weights.IMAGENET1K_V1", 69.02, 88.628, "vgg11-8a719046.pth"),
    "vgg11_bn": ("VGG11_BN_Weights.IMAGENET1K_V1", 70.37, 89.81, "vgg11_bn-6002323d.pth"),
    "vgg13": ("VGG13_Weights.IMAGENET1K_V1", 69.928, 89.246, "vgg13-19584684.pth"),
    "vgg13_bn": ("VGG13_BN_Weights.IMAGENET1K_V1", 71.586, 90.374, "vgg13_bn-abd245e5.pth"),
    "vgg16": ("VGG16_Weights.IMAGENET1K_V1", 71.592, 90.382, "vgg16-397923af.pth"),
    "vgg16_bn": ("VGG16_BN_Weights.IMAGENET1K_V1", 73.36, 91.516, "vgg16_bn-6c64b313.pth"),
    "vgg19": ("VGG19_Weights.IMAGENET1K_V1", 72.376, 90.876, "vgg19-dcbb9e9d.pth"),
    "vgg19_bn": ("VGG19_BN_Weights.IMAGENET1K_V1", 74.218, 91.842, "vgg19_bn-c79401a0.pth"),
    "densenet121": ("DenseNet121_Weights.IMAGENET1K_V1", 74.434, 91.972,
                    "densenet121-a639ec97.pth"),
    "densenet161": ("DenseNet161_Weights.IMAGENET1K_V1", 77.138, 93.56,
                    "densenet161-8d451a50.pth"),
    "densenet169": ("DenseNet169_Weights.IMAGENET1K_V1", 75.6, 92.806,
                    "densenet169-b2777c0a.pth"),
    "densenet201": ("DenseNet201_Weights.IMAGENET1K_V1", 76.896, 93.37,
                    "densenet201-c1103571.pth"),
    "googlenet_tv": ("GoogLeNet_Weights.IMAGENET1K_V1", 69.778, 89.53,
                     "googlenet-1378be20.pth"),
    "alexnet_tv": ("AlexNet_Weights.IMAGENET1K_V1", 56.522, 79.066,
                   "alexnet-owt-7be5be79.pth"),
}
# torchvision's names of the networks cnnjax names otherwise.
TORCHVISION_NAMES = {"alexnet_tv": "alexnet", "googlenet_tv": "googlenet"}


def reference_for(model_name: str) -> dict:
  """config.reference's keys for the torchvision weights of `model_name`."""
  if model_name not in PUBLISHED:
    ours = {tv: ours for ours, tv in TORCHVISION_NAMES.items()}
    hint = (f"; torchvision's '{model_name}' weights fit cnnjax's "
            f"'{ours[model_name]}'" if model_name in ours else "")
    raise CnnjaxError(f"there is no published torchvision figure for model "
                      f"'{model_name}'{hint} (known: {', '.join(PUBLISHED)})")
  weights, top1, top5, _ = PUBLISHED[model_name]
  return {"metric": "val/accuracy", "value": round(top1 / 100, 6),
          "source": (f"torchvision {weights} (acc@1 {top1:.3f}, acc@5 {top5:.3f}; "
                     "Resize(256), CenterCrop(224))"),
          "others": (f"val/top5_accuracy={round(top5 / 100, 6)}",)}


def apply_reference(config):
  """Fills config.reference for config.model.name; returns the config."""
  reference = reference_for(config.model.name)
  with config.unlocked():
    for key, value in reference.items():
      config.reference[key] = value
  return config


def get_config():
  config = config_from(__file__, "base.py")  # The recipe, should the folder have train/.
  config.model.name = ""  # --config.model.name=resnet50: a key of PUBLISHED
  config.dataset.name = "image_folder"
  config.dataset.data_dir = ""  # --config.dataset.data_dir=DIR, with val/<wnid>/ inside
  config.dataset.eval_splits = ("val",)
  config.dataset.image_size = 224
  config.dataset.resize_mode = "shorter_side_center_crop"
  config.dataset.resize_size = 256
  config.dataset.mean = IMAGENET_MEAN
  config.dataset.std = IMAGENET_STD
  config.evaluators = ("accuracy",)  # loss, top-1 and top-5
  config.eval_batch_size = 250
  config.best_metric = "val/accuracy"
  config.reference.metric = ""  # apply_reference(config), once the model is known
  return config
