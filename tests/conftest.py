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
