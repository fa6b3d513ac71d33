"""The airbench94-style network: its size, the whitening layer computed from
data (and set by the train driver), identity-like initial convolutions, the
norm biases' faster learning, and the recipe's schedule and frozen filters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax import lax

from cnnjax.config import durations as durations_lib, load_config
from cnnjax.data.arrays import ArrayDataset
from cnnjax.models import airbench, create_model
from cnnjax.train import optim, setup

EXPERIMENT = "experiments/cifar10/airbench94.py"


def _experiment_config() -> ml_collections.ConfigDict:
  import pathlib
  return load_config(str(pathlib.Path(__file__).parents[2] / EXPERIMENT))


def test_parameter_count_by_hand():
  model = create_model("airbench94")
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))
  count = sum(np.prod(l.shape) for l in jax.tree_util.tree_leaves(shapes["params"]))
  whiten = 2 * 2 * 3 * 24 + 24
  convs = 9 * (24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 2 * 256 * 256)
  norm_biases = 2 * (64 + 256 + 256)
  assert count == whiten + convs + norm_biases + 256 * 10 == 1_971_640
  assert "batch_stats" in shapes and "scale" not in str(shapes["params"])


def _correlated_images(n=64, seed=0):
  """Smooth, channel-correlated images: far from white."""
  rng = np.random.default_rng(seed)
  noise = rng.standard_normal((n, 33, 33, 1))
  smooth = (noise[:, :-1, :-1] + noise[:, 1:, :-1] + noise[:, :-1, 1:] + noise[:, 1:, 1:])
  colour = rng.standard_normal((n, 32, 32, 3)) * 0.3
  return (smooth + colour).astype(np.float32)


def test_whitening_filters_decorrelate_the_patches():
  images = _correlated_images()
  kernel = airbench.whitening_kernel(images, 24)
  assert kernel.shape == (2, 2, 3, 24)
  out = lax.conv_general_dilated(images.astype(np.float64), kernel.astype(np.float64),
                                 (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
  flat = np.asarray(out).reshape(-1, 24)
  moments = flat.T @ flat / len(flat)
  # The 12 eigen-directions: uncorrelated, each of variance l / (l + eps).
  patches = np.stack([images[:, i:31 + i, j:31 + j] for i in range(2) for j in range(2)],
                     axis=3).reshape(-1, 12).astype(np.float64)
  eigen = np.sort(np.linalg.eigvalsh(patches.T @ patches / len(patches)))[::-1]
  np.testing.assert_allclose(moments[:12, :12], np.diag(eigen / (eigen + airbench.WHITEN_EPS)),
                             atol=1e-5)
  # ... and their negatives.
  np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])


def test_first_filters_start_as_the_identity():
  kernel = airbench.dirac_partial_init(jax.random.key(0), (3, 3, 8, 20))
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 8))
  y = lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(y[..., :8], x, atol=1e-6)
  rest = np.asarray(kernel[..., 8:])
  assert np.abs(rest).max() <= 1 / np.sqrt(9 * 8) and rest.std() > 0


def test_norm_biases_learn_64_times_faster_with_the_same_decay():
  """One SGD step with coupled weight decay moves the effective bias by
  lr * (64 * gradient + wd * bias), as the paper's two parameter groups do."""
  norm = airbench.ScaledBiasNorm(bias_scale=8.0)
  x = jax.random.normal(jax.random.key(0), (4, 3, 3, 5))
  variables = norm.init(jax.random.key(1), x, train=False)
  params = {"shift": {"bias": jnp.arange(5.0) / 8}}  # effective bias 0..4
  weights = jnp.arange(1.0, 6.0)

  def loss(p):
    out = norm.apply({**variables, "params": p}, x, train=False)
    return jnp.sum(out * weights)

  lr, wd = 0.01, 0.5
  tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr))
  grads = jax.grad(loss)(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  effective_before = 8 * params["shift"]["bias"]
  effective_after = 8 * new["shift"]["bias"]
  gradient = weights * x[..., 0].size  # d loss / d (effective bias)
  np.testing.assert_allclose(effective_after - effective_before,
                             -lr * (64 * gradient + wd * effective_before), rtol=1e-5)


def _tiny_dataset(n=40):
  rng = np.random.default_rng(0)
  images = (rng.random((n, 32, 32, 3)) * 255).astype(np.uint8)
  return ArrayDataset("tiny", {"train": {"image": images,
                                         "label": rng.integers(0, 10, n).astype(np.int32)}},
                      num_classes=10)


def test_the_driver_sets_the_whitening_layer_from_normalised_training_images():
  config = _experiment_config()
  dataset = _tiny_dataset()
  model = create_model("airbench94", widths=(8, 16, 16))
  variables = setup.initial_variables(config, model, dataset)
  images = dataset.splits["train"]["image"].astype(np.float64) / 255
  mean, std = images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2))
  expected = airbench.whitening_kernel((images - mean) / std, 24)
  np.testing.assert_allclose(variables["params"]["whiten"]["conv"]["kernel"], expected,
                             rtol=1e-3, atol=1e-4)


def test_recipe_freezes_the_whitening_filters_and_warms_up_from_a_fifth():
  config = _experiment_config()
  model = create_model("airbench94", widths=(8, 16, 16))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))["params"]
  factors = jax.tree_util.tree_leaves_with_path(
      optim.lr_factors(params, optim.multiplier_rules(config, params)))
  frozen = [jax.tree_util.keystr(p) for p, f in factors if f == 0]
  assert frozen == ["['whiten']['conv']['kernel']"]
  durations = durations_lib.resolve_durations(config, 50_000)
  assert durations.num_steps == 476 and durations.steps_per_epoch == 48
  schedule = optim.make_schedule(config, durations)
  peak = config.optimizer.learning_rate
  assert peak == pytest.approx(1.5)
  assert float(schedule(0)) == pytest.approx(0.2 * peak)
  assert float(schedule(durations.warmup_steps)) == pytest.approx(peak)
  assert float(schedule(durations.num_steps)) == pytest.approx(0.07 * peak)
