"""Statistics over seeds: t-intervals, seed-paired differences, verdicts.

The expected numbers come from elsewhere: by hand from a t table, or from
scipy.stats.ttest_rel and t.interval, which the module does not call.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from cnnjax.errors import CnnjaxError
from cnnjax.sweep import stats

T_975_2 = 4.302652729749464  # t_{0.975} with 2 degrees of freedom (a t table)


def test_interval_of_one_two_three_by_hand():
  spread = stats.interval([1.0, 2.0, 3.0])
  assert spread["n"] == 3 and spread["confidence"] == 0.95
  assert spread["mean"] == pytest.approx(2.0)
  assert spread["std"] == pytest.approx(1.0)
  assert spread["sem"] == pytest.approx(1 / math.sqrt(3))
  assert spread["half_width"] == pytest.approx(T_975_2 / math.sqrt(3))
  assert spread["half_width"] == pytest.approx(2.4841377, abs=1e-7)
  assert (spread["low"], spread["high"]) == pytest.approx(
      (2 - 2.4841377, 2 + 2.4841377), abs=1e-7)


def test_interval_matches_scipy_at_other_levels():
  values = np.random.default_rng(0).normal(0.9, 0.02, size=7)
  for confidence in (0.8, 0.95, 0.99):
    spread = stats.interval(values, confidence)
    low, high = scipy_stats.t.interval(confidence, df=6, loc=values.mean(),
                                       scale=scipy_stats.sem(values))
    assert (spread["low"], spread["high"]) == pytest.approx((low, high), rel=1e-12)
  for bad in (0.0, 1.0, 95):
    with pytest.raises(CnnjaxError, match="strictly between 0 and 1"):
      stats.interval(values, bad)


def test_one_value_has_no_interval_and_none_has_nothing():
  one = stats.interval([0.75])
  assert one["n"] == 1 and one["mean"] == 0.75
  for key in ("std", "sem", "low", "high", "half_width"):
    assert math.isnan(one[key]), key
  empty = stats.interval([])
  assert empty["n"] == 0
  for key in ("mean", "std", "sem", "low", "high", "half_width"):
    assert math.isnan(empty[key]), key


def test_equal_values_give_a_zero_width_interval():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    spread = stats.interval([0.5, 0.5, 0.5])
  assert spread["std"] == 0.0 and spread["half_width"] == 0.0
  assert spread["low"] == spread["high"] == 0.5


def test_paired_difference_pairs_by_seed_and_matches_ttest_rel():
  # Seed 3 only in a, seed 7 only in b: both dropped; the dicts' order differs.
  a = {0: 0.91, 1: 0.84, 2: 0.88, 3: 0.70, 4: 0.86}
  b = {4: 0.85, 2: 0.83, 0: 0.87, 1: 0.83, 7: 0.50}
  diff = stats.paired_difference(a, b)
  assert diff["seeds"] == [0, 1, 2, 4] and diff["n"] == 4
  seeds = [0, 1, 2, 4]
  expected = scipy_stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
  ci = expected.confidence_interval(0.95)
  assert diff["mean"] == pytest.approx(np.mean([0.04, 0.01, 0.05, 0.01]))
  assert diff["std"] == pytest.approx(np.std([0.04, 0.01, 0.05, 0.01], ddof=1))
  assert (diff["low"], diff["high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
  assert diff["p_value"] == pytest.approx(expected.pvalue, rel=1e-10)
  # The order of the mappings does not matter; swapping a and b flips the sign.
  again = stats.paired_difference(dict(reversed(list(a.items()))), b)
  assert again["mean"] == diff["mean"] and again["p_value"] == diff["p_value"]
  swapped = stats.paired_difference(b, a)
  assert swapped["mean"] == pytest.approx(-diff["mean"])
  assert (swapped["low"], swapped["high"]) == pytest.approx((-diff["high"], -diff["low"]))
  assert swapped["p_value"] == pytest.approx(diff["p_value"])


def test_paired_difference_by_hand():
  # Differences 1, 2, 3: mean 2, std 1, the interval of [1, 2, 3] above.
  diff = stats.paired_difference({0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0})
  assert diff["mean"] == pytest.approx(2.0) and diff["std"] == pytest.approx(1.0)
  assert diff["half_width"] == pytest.approx(T_975_2 / math.sqrt(3))
  # t = 2 / (1 / sqrt 3) = 2 sqrt 3 with 2 degrees of freedom.
  assert diff["p_value"] == pytest.approx(2 * scipy_stats.t.sf(2 * math.sqrt(3), 2))
  assert diff["p_value"] == pytest.approx(0.0742, abs=1e-4)


def test_fewer_than_two_paired_seeds_have_no_interval():
  one = stats.paired_difference({0: 0.9, 1: 0.8}, {1: 0.7, 2: 0.6})
  assert one["n"] == 1 and one["seeds"] == [1]
  assert one["mean"] == pytest.approx(0.1)
  assert math.isnan(one["low"]) and math.isnan(one["high"]) and math.isnan(one["p_value"])
  assert stats.verdict(one) == "one seed"
  none = stats.paired_difference({0: 0.9}, {1: 0.7})
  assert none["n"] == 0 and none["seeds"] == [] and math.isnan(none["mean"])
  assert stats.verdict(none, direction="less") == "one seed"


def test_zero_variance_of_differences_collapses_the_interval():
  a = {0: 1.0, 1: 2.0, 2: 3.0}
  shifted = {0: 0.5, 1: 1.5, 2: 2.5}  # Differences exactly 0.5 each.
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # No division-by-zero warnings.
    diff = stats.paired_difference(a, shifted)
    same = stats.paired_difference(a, dict(a))
  assert diff["std"] == 0.0 and diff["low"] == diff["high"] == diff["mean"] == 0.5
  assert diff["p_value"] == 0.0
  assert stats.verdict(diff) == "holds"
  assert stats.verdict(diff, direction="less") == "reversed"
  assert same["low"] == same["high"] == 0.0 and same["p_value"] == 1.0
  assert stats.verdict(same) == "unresolved"


def test_verdicts_follow_the_interval_and_the_direction():
  def diff(low, high, n=3):
    return {"n": n, "low": low, "high": high}

  assert stats.verdict(diff(0.1, 0.3)) == "holds"
  assert stats.verdict(diff(-0.3, -0.1)) == "reversed"
  assert stats.verdict(diff(-0.1, 0.3)) == "unresolved"
  assert stats.verdict(diff(0.0, 0.3)) == "unresolved"  # 0 is in the interval.
  assert stats.verdict(diff(-0.3, -0.1), direction="less") == "holds"
  assert stats.verdict(diff(0.1, 0.3), direction="less") == "reversed"
  assert stats.verdict(diff(-0.1, 0.3), direction="less") == "unresolved"
  assert stats.verdict(diff(math.nan, math.nan)) == "unresolved"
  assert stats.verdict(diff(0.1, 0.3, n=1)) == "one seed"
  with pytest.raises(CnnjaxError, match="'greater' or 'less'"):
    stats.verdict(diff(0.1, 0.3), direction=">")
  assert set(stats.VERDICTS) == {"holds", "reversed", "unresolved", "one seed"}
