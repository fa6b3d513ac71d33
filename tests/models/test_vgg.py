"""VGG: FLOPs against torchvision and training/inference behaviour."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.analysis import summarize
from cnnjax.models import create_model
from conftest import QUICK_COMPILE, random_variables


# torchvision's published GFLOPS (multiply-adds) at 224x224.
@pytest.mark.parametrize("name, gmacs", [
    ("vgg11", 7.61), ("vgg13", 11.31), ("vgg16", 15.47), ("vgg19", 19.63)])
def test_flops_match_torchvision(name, gmacs):
  macs = summarize(name, xla_flops=False).flops_counted / 2
  assert abs(macs / 1e9 - gmacs) / gmacs < 0.02


def test_lrn_follows_the_first_convolution_only_in_a_lrn():
  rows = [r.name for r in summarize("vgg11_lrn", xla_flops=False).rows]
  assert rows[:3] == ["conv1_1", "lrn", "pool1"]
  assert "lrn" not in [r.name for r in summarize("vgg11",
                                                 xla_flops=False).rows]


def test_dropout_and_batch_norm_act_only_in_training():
  model = create_model("vgg11_bn", num_classes=5, hidden=16)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = random_variables(model, x)

  @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
  def both(variables, x):
    evaluation = model.apply(variables, x)
    training, state = model.apply(variables, x, train=True,
                                  rngs={"dropout": jax.random.key(1)},
                                  mutable=["batch_stats"])
    return evaluation, training, state

  evaluation, training, state = both(variables, x)
  assert evaluation.shape == training.shape == (2, 5)
  assert not np.allclose(evaluation, training)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                       state["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(moved))  # Every running statistic updated.
  # Inference is deterministic: the same call gives the same logits.
  np.testing.assert_array_equal(evaluation, both(variables, x)[0])


def test_other_input_sizes_are_pooled_to_7x7_before_the_classifier():
  model = create_model("vgg16", num_classes=10, hidden=8)
  for size in (32, 64, 224):
    x = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda a: model.init(jax.random.key(0), a), x)
    assert variables["params"]["fc6"]["kernel"].shape == (7 * 7 * 512, 8)


def _cifar_vgg_count(stages, num_classes=10):
  """Parameters of a CIFAR VGG by hand: 3x3 convs with biases, BatchNorm
  scale and offset, and one 512 -> classes layer."""
  total, channels = 0, 3
  for kernels, width in zip(stages, (64, 128, 256, 512, 512)):
    for k in kernels:
      total += k * k * channels * width + width + 2 * width
      channels = width
  return total + 512 * num_classes + num_classes


@pytest.mark.parametrize("name, config, expected", [
    ("vgg11_bn_cifar", "A", 9_231_114), ("vgg16_bn_cifar", "D", 14_728_266)])
def test_cifar_vggs_have_one_512_input_head(name, config, expected):
  from cnnjax.models.vgg import VGG_STAGES
  assert _cifar_vgg_count(VGG_STAGES[config]) == expected
  model = create_model(name)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                             jnp.zeros((2, 32, 32, 3)))
  params = variables["params"]
  assert sum(a.size for a in jax.tree.leaves(params)) == expected
  assert params["head"]["kernel"].shape == (512, 10)
  assert "fc6" not in params and "fc7" not in params
  logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                          jnp.zeros((2, 32, 32, 3)))
  assert logits.shape == (2, 10)
  hundred = create_model(name, num_classes=100)
  out = jax.eval_shape(lambda x: hundred.init_with_output(jax.random.key(0), x)[0],
                       jnp.zeros((1, 32, 32, 3)))
  assert out.shape == (1, 100)
