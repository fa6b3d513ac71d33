"""cnnjax: convolutional neural networks in JAX/Flax.

Importing cnnjax has no side effects; `cnnjax.runtime.setup()` applies the
process-wide JAX settings the `cnnjax` command uses (see runtime.py).
"""

__version__ = "0.1.0"

from cnnjax.errors import CnnjaxError  # noqa: E402, F401
