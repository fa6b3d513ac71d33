"""Imports every model family so that their registrations run."""

from cnnjax.models import conv1d  # noqa: F401
from cnnjax.models import lenet  # noqa: F401
from cnnjax.models import mlp  # noqa: F401
from cnnjax.models import recurrent  # noqa: F401
from cnnjax.models import vgg  # noqa: F401
