"""Process-wide settings: XLA CPU flags and the persistent compilation cache,
applied by the entry points only."""

import os
import subprocess
import sys

import pytest

from conftest import CLI, EXPERIMENTS, REPO


def _python(code: str, env: dict) -> str:
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, check=True, cwd=REPO)
  return out.stdout.strip()


def test_cache_choices_and_an_explicit_choice_wins(tmp_path, cli_env):
  env = dict(cli_env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  code = f"""
import jax
from cnnjax import runtime
print(runtime.enable_compilation_cache('none'))
print(runtime.enable_compilation_cache('auto'))
print(runtime.enable_compilation_cache({str(tmp_path / 'mine')!r}, explicit=True))
print(runtime.enable_compilation_cache('auto'))  # a run's config: the flag wins
print(jax.config.jax_compilation_cache_dir)
"""
  lines = _python(code, env).splitlines()
  assert lines[0] == "None"
  assert lines[1] == str(tmp_path / "xdg" / "cnnjax" / "xla")
  assert lines[2:] == [str(tmp_path / "mine")] * 3


def test_a_cache_the_user_gave_jax_is_kept(tmp_path, cli_env):
  env = dict(cli_env, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "theirs"))
  code = "from cnnjax import runtime; print(runtime.enable_compilation_cache('auto'))"
  assert _python(code, env) == str(tmp_path / "theirs")


def test_xla_defaults_never_override_the_users_flag(cli_env):
  env = dict(cli_env, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=mine")
  code = ("import os; from cnnjax import runtime; "
          "print(runtime.apply_xla_defaults(), os.environ['XLA_FLAGS'])")
  assert _python(code, env) == "[] --xla_cpu_experimental_ynn_fusion_type=mine"


# About 30 s on 2 cores (two CLI runs): -m slow.
@pytest.mark.slow
def test_the_second_train_of_a_model_compiles_from_the_cache(tmp_path, cli_env):
  cache = tmp_path / "cache"
  config = os.path.join(EXPERIMENTS, "mnist1d", "cnn.py")
  # The tests' quick-compile flags make every program compile in under the
  # cache's 0.5 s threshold: store them all here.
  cli_env = dict(cli_env, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

  def train(workdir):
    subprocess.run(CLI + ["train", "--config", config, "--workdir", str(workdir),
                          "--config.smoke=true", "--compilation-cache", str(cache)],
                   env=cli_env, capture_output=True, text=True, check=True, cwd=REPO)
    return sorted(os.listdir(cache))

  first = train(tmp_path / "a")
  assert first  # The train step (at least) was stored...
  assert train(tmp_path / "b") == first  # ...and found again: nothing new compiled.


_FAULTS = """
import resource
from cnnjax import runtime
applied = runtime.apply_malloc_defaults()
import jax, jax.numpy as jnp
# sin(x) is a 64 MB temporary (above glibc's largest mmap threshold, 32 MB).
f = jax.jit(lambda x, v: (jnp.sin(x) @ v).sum())
x, v = jnp.ones((4096, 4096)), jnp.ones((4096, 4))
faults = []
for _ in range(24):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, v).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sorted(faults)[len(faults) // 4])  # The lower quartile.
"""


@pytest.mark.slow  # Two child processes, 7 s.
@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator settings")
def test_the_allocator_settings_stop_each_call_faulting_its_temporaries_in(cli_env):
  """A step's temporary block is served again from the same pages: without
  the settings every call faults in its 64 MB (16,384 pages) again; with
  them most calls fault in none (some grow the heap while an earlier call's
  block is still being freed, more of them on a busy machine: hence the
  lower quartile)."""
  applied, faults = _python(_FAULTS, cli_env).split()
  if applied != "True":
    pytest.skip("not glibc")
  off, plain = _python(_FAULTS, dict(cli_env, CNNJAX_MALLOC_DEFAULTS="0")).split()
  assert off == "False"
  assert int(plain) > 10000 and int(faults) < 1000, (faults, plain)


def test_the_users_own_malloc_settings_are_left_alone(cli_env):
  code = "from cnnjax import runtime; print(runtime.apply_malloc_defaults())"
  assert _python(code, dict(cli_env, MALLOC_ARENA_MAX="4")) == "False"
  assert _python(code, dict(cli_env, GLIBC_TUNABLES="glibc.malloc.hugetlb=1")) == "False"
