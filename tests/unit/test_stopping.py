"""The stopping signal's parts against hand computations."""

import math

import pytest

from ml_backend.core.stopping import StabilityRule, cohen_kappa, stop_set, wilson


def test_kappa_by_hand():
    a = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    b = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    p_o = 8 / 10
    p_e = (4 * 3 + 4 * 4 + 2 * 3) / 100  # marginals of a: 4,4,2; of b: 3,4,3
    assert cohen_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0 and math.isnan(cohen_kappa([], []))
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


def test_the_stop_set_does_not_depend_on_order_and_keeps_its_members():
    keys = list(range(200))
    chosen = stop_set(keys, 20, seed=3)
    assert stop_set(list(reversed(keys)), 20, seed=3) == chosen and len(set(chosen)) == 20
    fewer = [k for k in keys if k not in chosen[:5]]  # five of them get labeled meanwhile
    assert set(chosen[5:]) <= set(stop_set(fewer, 20, seed=3))


def test_the_rule_fires_on_the_mean_of_the_last_window():
    rule = StabilityRule(0.9, 3)
    assert rule.first([0.5, 0.95, 0.95, 0.85, 0.95]) == 3  # (0.95+0.95+0.85)/3 = 0.917; before: 0.8
    assert not rule.fires([0.95, 0.95]) and rule.first([0.5, 0.6]) is None
    assert rule.first([float("nan"), 0.95, 0.95, 0.95]) == 3  # NaN comparisons are skipped
    with pytest.raises(ValueError):
        StabilityRule(1.5, 3)


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # the textbook value for 8/10
    assert all(math.isnan(v) for v in wilson(0, 0))
