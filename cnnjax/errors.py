"""The one exception type for mistakes a user can make.

Anything raised as `CnnjaxError` is shown by the CLI as a single sentence with
a non-zero exit status; every other exception is a bug and keeps its traceback.
"""


class CnnjaxError(Exception):
  """A user-caused error (bad config, missing data, impossible shape, ...)."""


class DataMissingError(CnnjaxError):
  """The dataset is not on this machine (not prepared, not downloaded, no
  folder or file where the config points), as opposed to data that is
  present but wrong. Smoke runs fall back to a generated stand-in on it."""
