"""Statistics over seeds that a reviewer can trust: t-intervals per setting,
seed-paired differences between settings, and what a difference says about
a claim.

A handful of seeds is a small sample, so the spread of a mean is the
Student t-interval (n-1 degrees of freedom), not mean ± std. Two settings
trained with the same seeds share their data order and initialization, so
they are compared seed by seed (a paired t-test on the differences), which
removes the seed-to-seed variation both share. With one seed there is no
interval: its bounds are NaN, and the tables say "n=1, no interval" rather
than a misleading ±0.

numpy and scipy.stats only (scipy is imported where it is used), so that
sweeps and cards can report statistics without starting JAX.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from cnnjax.errors import CnnjaxError

CONFIDENCE = 0.95
VERDICTS = ("holds", "reversed", "unresolved", "one seed")
DIRECTIONS = ("greater", "less")


def _check_confidence(confidence: float) -> None:
  if not 0.0 < confidence < 1.0:
    raise CnnjaxError(f"a confidence level lies strictly between 0 and 1, "
                      f"got {confidence!r}")


def _t_quantile(confidence: float, df: int) -> float:
  """The two-sided critical value t_{(1+confidence)/2, df}."""
  from scipy import stats

  return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
  """The mean of `values` with its t-interval.

  Args:
    values: one number per seed.
    confidence: the interval's coverage, e.g. 0.95.

  Returns:
    {'n', 'mean', 'std' (sample std, ddof=1), 'sem' (std / sqrt(n)), 'low',
    'high', 'half_width', 'confidence'}. The interval is mean ± t_{(1+c)/2,
    n-1} * sem. With one value std, sem and the interval are NaN (undefined,
    never ±0); with none everything but n is NaN. Equal values (n >= 2)
    give a zero-width interval at the mean.
  """
  import numpy as np

  _check_confidence(confidence)
  array = np.asarray(list(values), dtype=np.float64)
  n = int(array.size)
  out = {"n": n, "mean": math.nan, "std": math.nan, "sem": math.nan,
         "low": math.nan, "high": math.nan, "half_width": math.nan,
         "confidence": float(confidence)}
  if n == 0:
    return out
  out["mean"] = float(array.mean())
  if n == 1:
    return out
  std = float(array.std(ddof=1))
  sem = std / math.sqrt(n)
  # sem == 0 (equal values) gives half_width 0 without any division.
  half = _t_quantile(confidence, n - 1) * sem
  out.update(std=std, sem=sem, half_width=half, low=out["mean"] - half,
             high=out["mean"] + half)
  return out


def paired_difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> dict[str, Any]:
  """The seed-paired difference a - b over the seeds both have.

  Args:
    a_by_seed: {seed: value} of one setting.
    b_by_seed: {seed: value} of the other; seeds only one of them has are
      dropped, and the order of the mappings does not matter.
    confidence: the interval's coverage.

  Returns:
    {'n' (paired seeds), 'seeds' (sorted), 'mean', 'std', 'sem', 'low',
    'high', 'half_width', 'confidence' (as `interval` of the differences)
    and 'p_value': the two-sided paired t-test of mean difference 0 (what
    scipy.stats.ttest_rel gives). Fewer than 2 paired seeds: interval and
    p-value NaN. Differences that are all equal (n >= 2): the interval is
    the mean itself, and p is 0 when that mean is not 0, 1 when it is
    (scipy would divide 0 by 0 there).
  """
  seeds = sorted(set(a_by_seed) & set(b_by_seed))
  differences = [float(a_by_seed[s]) - float(b_by_seed[s]) for s in seeds]
  out = interval(differences, confidence)
  out["seeds"] = seeds
  out["p_value"] = math.nan
  n, mean, sem = out["n"], out["mean"], out["sem"]
  if n >= 2 and math.isfinite(mean) and math.isfinite(sem):
    if sem == 0.0:
      out["p_value"] = 0.0 if mean != 0.0 else 1.0
    else:
      from scipy import stats

      t = mean / sem
      out["p_value"] = float(2.0 * stats.t.sf(abs(t), n - 1))
  return out


def verdict(diff: Mapping[str, Any], *, direction: str = "greater") -> str:
  """What a paired difference a - b says about the claim 'a > b' ('greater')
  or 'a < b' ('less').

  'holds': the interval lies entirely on the claimed side of 0; 'reversed':
  entirely on the other side; 'unresolved': it contains 0 (or is undefined
  for lack of finite values); 'one seed': fewer than 2 paired seeds, so
  there is no interval to tell.
  """
  if direction not in DIRECTIONS:
    raise CnnjaxError(f"a claim's direction is 'greater' or 'less', not {direction!r}")
  if diff["n"] < 2:
    return "one seed"
  low, high = diff["low"], diff["high"]
  if direction == "less":
    low, high = -high, -low
  if low > 0:
    return "holds"
  if high < 0:
    return "reversed"
  return "unresolved"


def finite_or_none(value: Any) -> Any:
  """NaN and infinities as None, for JSON files that stay valid JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
