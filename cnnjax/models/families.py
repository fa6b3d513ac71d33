"""Imports every model family so that their registrations run."""

from cnnjax.models import alexnet  # noqa: F401
from cnnjax.models import allconv  # noqa: F401
from cnnjax.models import cifar_resnet  # noqa: F401
from cnnjax.models import claims  # noqa: F401
from cnnjax.models import conv1d  # noqa: F401
from cnnjax.models import densenet  # noqa: F401
from cnnjax.models import ecg  # noqa: F401
from cnnjax.models import googlenet  # noqa: F401
from cnnjax.models import lenet  # noqa: F401
from cnnjax.models import mlp  # noqa: F401
from cnnjax.models import recurrent  # noqa: F401
from cnnjax.models import resnet  # noqa: F401
from cnnjax.models import text_cnn  # noqa: F401
from cnnjax.models import toy  # noqa: F401
from cnnjax.models import vgg  # noqa: F401
