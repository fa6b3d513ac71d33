"""Datasets: every source yields dicts with 'image' (or 'tokens') and 'label'."""

from __future__ import annotations

import difflib

from cnnjax.data.arrays import (ArrayDataset, stack_eval_batches,  # noqa: F401
                                train_batch)
from cnnjax.errors import CnnjaxError


def _loaders():
  from cnnjax.data.digits import load_digits
  from cnnjax.data.mnist1d import load_mnist1d
  return {"mnist1d": load_mnist1d, "digits": load_digits}


def list_datasets() -> list[str]:
  return sorted(_loaders())


def get_dataset(dataset_config, *, smoke: bool = False) -> ArrayDataset:
  """Loads the dataset named by `dataset_config.name` into memory."""
  loaders = _loaders()
  name = dataset_config.name
  if name not in loaders:
    close = difflib.get_close_matches(name, list(loaders), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise CnnjaxError(f"unknown dataset '{name}'{hint} (known: "
                      f"{', '.join(sorted(loaders))})")
  return loaders[name](dataset_config, smoke=smoke)
