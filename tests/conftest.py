"""Shared fixtures: tiny configs that train in a second or two.

The suite compiles hundreds of small programs and runs each a few times, so
XLA's CPU backend compiles without LLVM's expensive optimizations here
(`TEST_XLA_FLAGS`, about a quarter less time for the suite on 2 cores; the
programs compute the same numbers, and the parity tests against PyTorch
hold). `CNNJAX_TEST_QUICK_COMPILE=0` runs the suite with XLA's defaults.
"""

import os
import importlib.util
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")

TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 "
                  "--xla_llvm_disable_expensive_passes=true "
                  "--xla_cpu_use_fusion_emitters=false")
if os.environ.get("CNNJAX_TEST_QUICK_COMPILE", "1") != "0":
  # Before any test imports JAX: XLA reads the flags when its client starts.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                             TEST_XLA_FLAGS).strip()


# Deeper or wider members of a model family whose shallower member's code
# the default suite already traces, builds and counts: their own checks
# (parameter counts, summaries) run in the slow tier (`pytest -m slow`, and
# in CI), to bring the default suite toward its 5 minutes on 2 cores.
DEEPER_SIBLINGS = frozenset({
    "resnet1202", "resnet101", "resnet152", "plain101", "plain152",
    "preact_resnet101", "preact_resnet152", "preact_resnet110",
    "resnet44", "resnet56", "resnet110", "plain44", "plain56", "plain110",
    "densenet169", "densenet201", "wrn28_10", "resnext101_32x8d",
    "wide_resnet101_2", "vgg19", "vgg19_bn",
    # 2 to 8 s each on 2 cores: densenet121 / densenet40_k12 / preact_resnet18
    # / oct_resnet20 / googlenet / resnet18_3d run the same code by default.
    "densenet161", "densenet_bc100_k12", "preact_resnet164", "oct_resnet50",
    "googlenet_tv", "preact_resnet50", "resnet50_3d"})


def slow_if_deeper(names):
  """`names` as pytest parameters, the DEEPER_SIBLINGS marked slow."""
  return [pytest.param(n, marks=pytest.mark.slow) if n in DEEPER_SIBLINGS else n
          for n in names]


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
  env.pop("XLA_FLAGS", None)  # Nothing a test set for itself (device counts)...
  if os.environ.get("CNNJAX_TEST_QUICK_COMPILE", "1") != "0":
    env["XLA_FLAGS"] = TEST_XLA_FLAGS  # ...but the suite's quick compiles.
  return env


CLI = [sys.executable, "-m", "cnnjax.cli"]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Share XLA compilations between the many tiny runs of the suite, and
  between the pytest-xdist workers (and the CLI subprocesses they start):
  many tests compile the same small programs."""
  import jax

  if os.environ.get("CNNJAX_TEST_CACHE", "1") == "0":
    yield None
    return
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # The session's folder, above each worker's own.
  cache = str(base / "xla_cache")
  os.makedirs(cache, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  yield cache


@pytest.fixture(autouse=True)
def close_figures():
  """Figures a test made and did not close go when it ends (pyplot keeps
  every open figure, and a worker runs hundreds of tests)."""
  yield
  plt = sys.modules.get("matplotlib.pyplot")
  if plt is not None:
    plt.close("all")


# XLA's CPU backend without LLVM's expensive passes: compiling is most of the
# cost of a model test on a CPU, and these settings about halve it.
QUICK_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}


def fill_variables(abstract, seed=0):
  """Concrete values for the abstract variables of `jax.eval_shape(init)`.

  Kernels and tables get He-normal values (std sqrt(2 / fan_in)), BatchNorm
  scales 1 + N(0, 0.1^2), other vectors (biases) N(0, 0.1^2), running
  statistics mean 0 and variance 1: enough for shape, finiteness, gradient
  flow and short training tests, and far cheaper on a CPU than compiling the
  real initialisers (seconds per model).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = getattr(path[-1], "key", "")
    if name == "var":
      value = np.ones(s.shape)
    elif name == "mean":
      value = np.zeros(s.shape)
    elif name == "scale":
      value = 1.0 + 0.1 * rng.standard_normal(s.shape)
    elif len(s.shape) > 1:
      value = rng.standard_normal(s.shape) * np.sqrt(
          2 / np.prod(s.shape[:-1]))
    else:
      value = 0.1 * rng.standard_normal(s.shape)
    return jnp.asarray(value, s.dtype)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def random_variables(model, *inputs, seed=0, **init_kwargs):
  """`fill_variables` of the model's abstract `init` on `inputs`."""
  import jax

  return fill_variables(jax.eval_shape(
      lambda *a: model.init(jax.random.key(0), *a, **init_kwargs), *inputs),
      seed)


def import_torchvision():
  """`torchvision` (importable beside the CPU torch wheel: see
  cnnjax/bench/compat.py), or a skip when it is not installed."""
  pytest.importorskip("torch")
  if importlib.util.find_spec("torchvision") is None:
    pytest.skip("torchvision is not installed")
  from cnnjax.bench.compat import import_torchvision as load
  return load()

