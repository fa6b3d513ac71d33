"""cnnjax: convolutional neural networks in JAX/Flax."""

__version__ = "0.1.0"

from cnnjax import _xla_flags

_xla_flags.apply()  # Before JAX creates its CPU client; see _xla_flags.

from cnnjax.errors import CnnjaxError  # noqa: E402, F401
