"""The one exception type for mistakes a user can make.

Anything raised as `CnnjaxError` is shown by the CLI as a single sentence with
a non-zero exit status; every other exception is a bug and keeps its traceback.
"""


class CnnjaxError(Exception):
  """A user-caused error (bad config, missing data, impossible shape, ...)."""
