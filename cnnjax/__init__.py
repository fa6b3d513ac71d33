"""cnnjax: convolutional neural networks in JAX/Flax."""

__version__ = "0.1.0"

from cnnjax.errors import CnnjaxError  # noqa: F401
