"""TensorFlow for input pipelines only: imported lazily and kept off the GPU.

Importing TensorFlow costs seconds, so nothing imports it until a TFDS or
tf.data source is used. It must never claim an accelerator: JAX owns the GPU,
and TensorFlow grabbing its memory would starve the model.
"""

from __future__ import annotations

import os

from cnnjax.errors import CnnjaxError

_TF = None


def import_tensorflow():
  """Returns the `tensorflow` module, imported once with no GPU visible to it."""
  global _TF
  if _TF is None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
      import tensorflow as tf
    except ImportError as e:
      raise CnnjaxError(
          "this dataset needs TensorFlow for its input pipeline; install it "
          "with `pip install tensorflow-cpu tensorflow-datasets`") from e
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # Already initialized by the user; nothing to change.
      pass
    _TF = tf
  return _TF


def import_tfds():
  """Returns `tensorflow_datasets` (after `import_tensorflow`)."""
  import_tensorflow()
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise CnnjaxError("TFDS datasets need `pip install tensorflow-datasets`") from e
  return tfds
