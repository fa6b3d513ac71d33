"""Every registered model: shapes, finite outputs, gradients, pinned sizes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import CnnjaxError
from cnnjax.models import (create_model, list_models, model_input_dtype,
                           model_input_shape, register_model)
from cnnjax.ops import random as random_ops
from conftest import QUICK_COMPILE, random_variables, slow_if_deeper

# Pinned parameter counts at each model's default classes and input: 1000
# classes for the ImageNet networks (torchvision's counts where it has the
# network), 10 for CIFAR, MNIST and MNIST-1D, and as noted otherwise.
PARAMS = {
    "logistic_regression": 410,  # 40 * 10 + 10
    "mlp": 15_210,
    "mnist1d_mlp": 15_210,  # MNIST-1D paper, Table 1
    "mnist1d_cnn": 5_210,  # MNIST-1D paper: 150 + 1,900 + 1,900 + 1,260
    # airbench94 by hand in tests/models/test_airbench.py; the heads on a
    # ResNet-18 encoder for 4 classes: FCN-8s and U-Net read all of it
    # (11,176,512 parameters), Faster R-CNN up to its stride-8 stage.
    "airbench94": 1_971_640, "fcn": 11_184_716, "unet": 16_481_092,
    "faster_rcnn": 2_513_281,
    # 8 bands x 51 frames x 64 filters + 64, then 11 x 64 -> 256 -> 6.
    "freq_cnn": 208_198,
    # PyTorch's GRU (the paper's 5,134) has two more bias vectors per direction.
    "mnist1d_gru": 5_110,
    # 156 + 2,416 + 48,120 + 10,164 + 850 (C3 fully connected).
    "lenet5": 61_706,
    "lenet5_relu": 61_706,
    "lenet5_1998": 60_000,  # The paper's count (tests/models/test_lenet1998.py).
    "xo_convnet": 140,  # Two classes: X and O.
    "mlp_mnist": 669_706,
    "mlp_cifar": 1_841_162,
    # The lecture's one-tower AlexNet; two groups as on the paper's two GPUs.
    "alexnet": 62_378_344,
    "alexnet_groups": 60_965_224,
    "alexnet_tv": 61_100_840,
    "zfnet": 62_357_608,
    # VGG; the _bn variants keep their conv biases as torchvision's do.
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
    "vgg11_lrn": 132_863_336, "vgg11_lrn_bn": 132_868_840,
    "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16_1x1": 133_638_952, "vgg16_1x1_bn": 133_647_400,  # Config C.
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    # GoogLeNet with its two auxiliary classifiers (6,998,552 without them,
    # tests/models/test_densenet_googlenet.py); torchvision's without (its default).
    "googlenet": 13_378_280,
    "googlenet_tv": 6_624_904,
    "googlenet_naive": 97_526_008,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    # Without the projection shortcuts (1x1 conv + BN).
    "plain18": 11_515_688, "plain34": 21_623_848, "plain50": 22_780_456,
    "plain101": 41_772_584, "plain152": 57_416_232,
    "preact_resnet18": 11_687_720, "preact_resnet34": 21_795_880,
    "preact_resnet50": 25_549_352, "preact_resnet101": 44_541_480,
    "preact_resnet152": 60_185_128,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "se_resnet50": 28_088_024, "se_resnext50_32x4d": 27_559_896,
    # 3D, on 28^3 MedMNIST volumes with OrganMNIST3D's 11 classes.
    "resnet18_3d": 33_165_643, "resnet50_3d": 46_177_611,
    "densenet121": 7_978_856, "densenet169": 14_149_480,
    "densenet201": 20_013_928, "densenet161": 28_681_000,
    # CIFAR (He et al. 2015, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M;
    # option-A shortcuts have no parameters, so plain nets count the same).
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
    "resnet56": 853_018, "resnet110": 1_727_962, "resnet1202": 19_421_274,
    "plain20": 269_722, "plain32": 464_154, "plain44": 658_586,
    "plain56": 853_018, "plain110": 1_727_962,
    "preact_resnet110": 1_727_962, "preact_resnet164": 1_703_258,
    "wrn16_8": 10_961_370, "wrn28_10": 36_479_194, "wrn40_4": 8_949_210,
    "densenet_bc100_k12": 769_162, "densenet40_k12": 1_019_722,
    # CIFAR VGG with BatchNorm and one 512 -> 10 layer (kuangliu/pytorch-cifar:
    # VGG11 9.23M, VGG16 14.73M).
    "vgg11_bn_cifar": 9_231_114, "vgg13_bn_cifar": 9_416_010,
    "vgg16_bn_cifar": 14_728_266, "vgg19_bn_cifar": 20_040_522,
    "rf_cnn": 3_370,  # The claims network's 1-D default (16 channels, 3x3x3 stage).
    "oct_resnet50": 25_557_032, "oct_resnet20": 271_898,  # test_octresnet.py
    "sharing_mnist1d": 5_210, "sharing_digits": 7_370,  # Conv; all in test_sharing.py.
    "allconv_c": 1_369_738,
    "ecg_resnet34": 10_468_204,  # 12 rhythm classes.
    # Kim (2014) on a 20,000-word vocabulary of 300-d vectors, 2 classes.
    "kim_cnn_rand": 6_360_902, "kim_cnn_static": 6_360_902,
    "kim_cnn_nonstatic": 6_360_902, "kim_cnn_multichannel": 12_360_902,
}

# Families with their own test file run their gradient test there, on small
# stand-ins of one model per code path; every other model (a new family
# included) is gradient-tested here at its registered size, or at the small
# stand-in given in SMALL.
FAMILY_TESTS = {
    "cnnjax.models.resnet": "test_resnet.py",
    "cnnjax.models.octresnet": "test_octresnet.py",
    "cnnjax.models.ecg": "test_cifar_models.py",
    "cnnjax.models.allconv": "test_cifar_models.py",
    "cnnjax.models.densenet": "test_densenet_googlenet.py",
    "cnnjax.models.googlenet": "test_densenet_googlenet.py",
    "cnnjax.models.alexnet": "test_alexnet_text.py",
    "cnnjax.models.toy": "test_alexnet_text.py",
    "cnnjax.models.text_cnn": "test_alexnet_text.py",
    "cnnjax.models.segmentation": "test_segmentation.py",
    "cnnjax.models.detection": "test_detection.py",
}
# VGG configurations differ only in their stage lists: one with LRN and
# BatchNorm, one with 1x1 convolutions, on 32x32 images with narrow FC layers.
SMALL = {"vgg11_lrn_bn": ((32, 32, 3), {"hidden": 32}),
         "vgg16_1x1": ((32, 32, 3), {"hidden": 32})}


def _family(name):
  from cnnjax.models import registry
  factory = registry._spec(name).factory
  return getattr(factory, "func", factory).__module__


GRADIENT_TESTED = [n for n in list_models()
                   if _family(n) not in FAMILY_TESTS and
                   (not n.startswith("vgg") or n in SMALL)]


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_every_model_has_a_pinned_count():
  assert sorted(PARAMS) == list_models()


def test_family_test_files_exist():
  import os
  here = os.path.dirname(__file__)
  for module, test_file in FAMILY_TESTS.items():
    assert os.path.exists(os.path.join(here, test_file)), (module, test_file)


# The heads that do not return (batch, classes) logits, and what they return.
DENSE_OUTPUTS = {
    "fcn": lambda m: (2, 64, 64, m.num_classes),
    "unet": lambda m: (2, 64, 64, m.num_classes),
    "faster_rcnn": lambda m: {"boxes": (2, m.detections, 4), "scores": (2, m.detections),
                              "classes": (2, m.detections), "valid": (2, m.detections)},
}

# Tracing the deeper siblings (ResNet-1202's 600 blocks, DenseNet-201, ...)
# takes seconds each; their counts run under -m slow.
@pytest.mark.parametrize("name", slow_if_deeper(list_models()))
def test_parameter_count_and_output_shape(name):
  model = create_model(name)
  x = jax.ShapeDtypeStruct((2, *model_input_shape(name)),
                           jnp.dtype(model_input_dtype(name)))
  out, variables = jax.eval_shape(
      lambda a: model.init_with_output(jax.random.key(0), a), x)
  assert _count(variables["params"]) == PARAMS[name]
  if name in DENSE_OUTPUTS:  # logits per pixel; detections
    want = DENSE_OUTPUTS[name](model)
    assert jax.tree.map(lambda a: a.shape, out) == want
  else:
    assert out.shape == (2, model.num_classes)


@pytest.mark.parametrize("name", GRADIENT_TESTED)
def test_forward_and_every_parameter_gets_a_gradient(name):
  shape, overrides = SMALL.get(name, (model_input_shape(name), {}))
  model = create_model(name, num_classes=7, **overrides)
  x = jax.random.normal(jax.random.key(1), (3, *shape))
  variables = random_variables(model, x)
  logits = jax.jit(model.apply, compiler_options=QUICK_COMPILE)(variables, x)
  assert logits.shape == (3, 7)
  assert np.all(np.isfinite(logits))

  def loss(params):
    out = model.apply(dict(variables, params=params), x, train=True,
                      rngs={"dropout": jax.random.key(2)},
                      mutable=["batch_stats"])[0]
    outs = out if isinstance(out, tuple) else (out,)
    return sum(jnp.sum(jax.nn.log_softmax(o)[:, 0]) for o in outs)

  grads = jax.jit(jax.grad(loss), compiler_options=QUICK_COMPILE)(
      variables["params"])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_overrides_win_and_unknown_options_are_reported():
  wide = create_model("mnist1d_cnn", features=(8, 8, 8))
  x = jnp.zeros((1, 40, 1))
  params = jax.eval_shape(lambda: wide.init(jax.random.key(0), x))["params"]
  assert params["conv1"]["kernel"].shape == (5, 1, 8)
  with pytest.raises(CnnjaxError, match="has no option 'widht'"):
    create_model("mnist1d_cnn", widht=3)
  with pytest.raises(CnnjaxError, match="unknown model 'lenet'; did you mean"):
    create_model("lenet")


def test_register_model_decorator_and_duplicates():
  from cnnjax.models import registry

  @register_model("_test_tiny", input_shape=(4,))
  class Tiny(nn.Module):
    num_classes: int = 2

    @nn.compact
    def __call__(self, x, *, train=False):
      return nn.Dense(self.num_classes)(x)

  try:
    assert "_test_tiny" in list_models("_test*")
    assert isinstance(create_model("_test_tiny", num_classes=3), Tiny)
    with pytest.raises(ValueError, match="registered twice"):
      register_model("_test_tiny", input_shape=(4,))(Tiny)
  finally:
    registry.MODELS._entries.pop("_test_tiny")


def test_lenet5_layer_shapes():
  model = create_model("lenet5")
  x = jnp.zeros((2, 32, 32, 1))
  _, inter = model.apply(random_ops.init(model, jax.random.key(0), x), x,
                         capture_intermediates=True, mutable=["intermediates"])
  shapes = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items()
            if k != "__call__"}
  assert shapes == {"c1": (2, 28, 28, 6), "s2": (2, 14, 14, 6),
                    "c3": (2, 10, 10, 16), "s4": (2, 5, 5, 16), "c5": (2, 120),
                    "f6": (2, 84), "head": (2, 10)}


def test_mnist1d_cnn_lengths_match_the_reference():
  # 40 -> 19 -> 10 -> 5 positions, as (L - K + 2P) / S + 1 with floor.
  model = create_model("mnist1d_cnn")
  x = jnp.zeros((2, 40, 1))
  _, inter = model.apply(random_ops.init(model, jax.random.key(0), x), x,
                         capture_intermediates=True, mutable=["intermediates"])
  lengths = [inter["intermediates"][f"conv{i}"]["__call__"][0].shape[1] for i in (1, 2, 3)]
  assert lengths == [19, 10, 5]
