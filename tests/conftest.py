"""Shared fixtures: tiny configs that train in a second or two."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")


def tiny_mnist1d_config(**changes):
  """The MNIST-1D CNN recipe on 1,000 generated signals, 40 steps."""
  from cnnjax.config import load_config, set_value

  config = load_config(os.path.join(EXPERIMENTS, "mnist1d", "cnn.py"))
  with config.unlocked():
    config.dataset.num_samples = 1000
    config.batch_size = 50
    config.num_steps = 40
    config.log_every = 10
    config.eval_every = 20
    config.checkpoint_every = 20
    config.progress_bar = False
    for key, value in changes.items():
      set_value(config, key, value)
  return config


@pytest.fixture
def cli_env():
  """Environment for running `python -m cnnjax.cli` in a subprocess."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("XLA_FLAGS", None)
  return env


CLI = [sys.executable, "-m", "cnnjax.cli"]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Share XLA compilations between the many tiny runs of the suite."""
  import jax

  cache = str(tmp_path_factory.mktemp("jax_cache"))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  yield cache


# XLA's CPU backend without LLVM's expensive passes: compiling is most of the
# cost of a model test on a CPU, and these settings about halve it.
QUICK_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def random_variables(model, *inputs, seed=0, **init_kwargs):
  """Variables shaped by an abstract `init`, filled by numpy (no compile).

  Kernels get LeCun-normal values, 1D parameters (biases, BatchNorm scales)
  small nonzero ones, BatchNorm statistics mean 0 and variance 1: enough for
  shape, finiteness and gradient-flow tests, and far cheaper on a CPU than
  compiling the real initialisers.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  shapes = jax.eval_shape(
      lambda *a: model.init(jax.random.key(0), *a, **init_kwargs), *inputs)
  rng = np.random.default_rng(seed)

  def draw(path, s):
    names = [getattr(k, "key", "") for k in path]
    if "batch_stats" in names:
      value = np.ones(s.shape) if names[-1] == "var" else np.zeros(s.shape)
    elif len(s.shape) > 1:
      value = rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    else:
      value = 1.0 + 0.1 * rng.standard_normal(s.shape)
    return jnp.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)
