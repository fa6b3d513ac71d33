"""Experiment configs: the base config, loading, overrides, validation, durations.

An experiment is a Python file with a `get_config()` function returning an
`ml_collections.ConfigDict` built from `base_config()`:

    config = load_config('experiments/mnist1d/cnn.py')
    apply_overrides(config, ['optimizer.learning_rate=0.003'])
    validate(apply_smoke(config))

  base.py        every key the driver reads, and which keys a resumed run may change
  files.py       loading experiment files
  overrides.py   dotted keys: overrides, get/set, differences
  validate.py    the checks a config passes before any work starts
  durations.py   smoke runs; epochs to steps
"""

from cnnjax.config.base import (PRECISIONS, RESUMABLE_KEYS,  # noqa: F401
                                base_config, is_resumable, model_fields)
from cnnjax.config.durations import (Durations, apply_smoke,  # noqa: F401
                                     resolve_durations)
from cnnjax.config.files import (config_from, import_experiment_file,  # noqa: F401
                                 load_config, module_from)
from cnnjax.config.overrides import (apply_changes, apply_overrides,  # noqa: F401
                                     check_key, config_differences, flat_keys,
                                     get_value, is_model_field, literal_or_text,
                                     set_value, tuples)
from cnnjax.config.validate import parse_multipliers, validate  # noqa: F401
