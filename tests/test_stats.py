"""energymeter.stats: hand-written Student's t, confidence intervals, Welch's test and
the relative difference, checked against arithmetic written out here and against scipy."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter import stats
from energymeter.errors import EnergyMeterError
from energymeter.stats import (
    StatsError,
    betainc,
    coefficient_of_variation,
    confidence_interval,
    mean,
    relative_difference,
    sample_std,
    summarize,
    t_cdf,
    t_ppf,
    t_sf,
    welch,
)

T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # df = 2: t_p = (2p - 1) / sqrt(2p(1 - p))


# -- by hand -----------------------------------------------------------------------------------
def test_t_distribution_closed_forms() -> None:
    # df = 1 (Cauchy): F(t) = 1/2 + atan(t) / pi
    for t in (-30.0, -1.0, 0.0, 0.3, 1.0, 12.7):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
    assert t_ppf(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)); quantile (2p - 1) / sqrt(2p(1 - p))
    for t in (-5.0, -0.5, 0.0, 2.0, 40.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12)
    assert abs(T_975_2 - 4.302652729749464) < 1e-12
    assert t_ppf(0.975, 2) == pytest.approx(T_975_2, rel=1e-12)
    assert t_ppf(0.025, 2) == pytest.approx(-T_975_2, rel=1e-12)
    # Printed tables: t(0.975, 4) = 2.776, t(0.975, 9) = 2.262, t(0.975, 30) = 2.042
    assert t_ppf(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_ppf(0.975, 9) == pytest.approx(2.262157, abs=1e-6)
    assert t_ppf(0.975, 30) == pytest.approx(2.042272, abs=1e-6)
    assert t_ppf(0.5, 7) == 0.0 and t_sf(0.0, 7) == 0.5
    assert t_sf(math.inf, 3) == 0.0 and t_cdf(math.inf, 3) == 1.0
    # Huge df: the normal distribution (z(0.975) = 1.959964)
    assert t_ppf(0.975, 1e9) == pytest.approx(1.959964, abs=1e-6)
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, rel=1e-13)
    assert betainc(2.5, 1, 0.4) == pytest.approx(0.4 ** 2.5, rel=1e-12)
    assert betainc(1, 3, 0.9) == pytest.approx(1 - 0.1 ** 3, rel=1e-12)


def test_summary_by_hand() -> None:
    # [10, 12, 14]: mean 12, squared deviations 4 + 0 + 4 = 8, variance 8 / 2 = 4, s = 2
    values = [10.0, 12.0, 14.0]
    assert mean(values) == 12.0
    assert sample_std(values) == pytest.approx(2.0, rel=1e-15)
    assert coefficient_of_variation(values) == pytest.approx(2 / 12, rel=1e-15)
    # half-width = t(0.975, 2) * s / sqrt(n) = 4.302653 * 2 / 1.732051 = 4.968275
    half = T_975_2 * 2 / math.sqrt(3)
    assert half == pytest.approx(4.968275, abs=1e-6)
    low, high = confidence_interval(values)
    assert (low, high) == (pytest.approx(12 - half, rel=1e-12), pytest.approx(12 + half))
    s = summarize(values)
    assert (s.n, s.mean, s.std, s.cv) == (3, 12.0, pytest.approx(2.0), pytest.approx(1 / 6))
    assert s.to_dict()["ci_low"] == pytest.approx(7.031725, abs=1e-6)


def test_summary_of_too_few_values() -> None:
    assert summarize([]) == stats.Summary(0, None, None, None, None, None)
    one = summarize([5.0])
    assert (one.n, one.mean, one.std, one.ci_low, one.cv) == (1, 5.0, None, None, None)
    assert coefficient_of_variation([0.0, 0.0]) is None  # mean 0
    assert summarize([3.0, 3.0]).ci_low == 3.0  # no spread: the interval is the mean


def test_welch_by_hand() -> None:
    # a = [1, 3], b = [4, 6]: means 2 and 5, s^2 = 2 each, s^2/n = 1 each
    # t = (5 - 2) / sqrt(1 + 1) = 3 / sqrt(2); df = (1 + 1)^2 / (1^2/1 + 1^2/1) = 2
    # p = 2 * (1 - F2(t)) = 1 - t / sqrt(2 + t^2) = 1 - (3/sqrt 2) / sqrt(6.5) = 1 - 3/sqrt(13)
    test = welch([1.0, 3.0], [4.0, 6.0])
    assert test is not None
    assert test.t == pytest.approx(3 / math.sqrt(2), rel=1e-14)
    assert test.df == pytest.approx(2.0, rel=1e-14)
    assert test.p_value == pytest.approx(1 - 3 / math.sqrt(13), rel=1e-12)
    assert test.p_value == pytest.approx(0.167950, abs=1e-6)
    # a = [10, 12, 14] (s^2 = 4), b = [20, 22, 27] (mean 23; 9 + 1 + 16 = 26, s^2 = 13)
    # s^2/n: 4/3 and 13/3; t = 11 / sqrt(17/3); df = (17/3)^2 / ((4/3)^2/2 + (13/3)^2/2)
    #   = (289/9) / (185/18) = 578/185
    test = welch([10.0, 12.0, 14.0], [20.0, 22.0, 27.0])
    assert test.t == pytest.approx(11 / math.sqrt(17 / 3), rel=1e-14)
    assert test.df == pytest.approx(578 / 185, rel=1e-14)
    assert welch([1.0], [1.0, 2.0]) is None
    assert welch([1.0, 1.0], [2.0, 2.0]) is None  # no spread at all: no test


def test_relative_difference_by_hand() -> None:
    # a = [9, 11]: mean 10, s^2 = 2; b = [18, 22]: mean 20, s^2 = 8. rel = 20/10 - 1 = 1
    # u = s^2 / (n mean^2): 2 / (2 * 100) = 0.01 and 8 / (2 * 400) = 0.01; se = sqrt(0.02)
    # df = (0.01 + 0.01)^2 / (0.01^2/1 + 0.01^2/1) = 2, so t(0.975, 2) = 4.302653
    # CI = exp(0.693147 -/+ 4.302653 * 0.141421) - 1 = exp(0.084660) - 1, exp(1.301634) - 1
    diff = relative_difference([9.0, 11.0], [18.0, 22.0])
    half = T_975_2 * math.sqrt(0.02)
    assert diff.rel_diff == pytest.approx(1.0, rel=1e-14)
    assert diff.ci_low == pytest.approx(math.exp(math.log(2) - half) - 1, rel=1e-12)
    assert diff.ci_high == pytest.approx(math.exp(math.log(2) + half) - 1, rel=1e-12)
    assert diff.ci_low == pytest.approx(0.088347, abs=1e-6)
    assert diff.ci_high == pytest.approx(2.675298, abs=1e-6)
    # Welch on the same: t = 10 / sqrt(1 + 4) = sqrt(20); df = 25 / (1 + 16) = 25/17
    assert diff.p_value == pytest.approx(welch([9.0, 11.0], [18.0, 22.0]).p_value)
    assert welch([9.0, 11.0], [18.0, 22.0]).df == pytest.approx(25 / 17)
    assert diff.significant() is (diff.p_value < 0.05)


def test_relative_difference_where_undefined() -> None:
    single = relative_difference([10.0], [5.0])
    assert single.rel_diff == pytest.approx(-0.5)
    assert (single.ci_low, single.ci_high, single.p_value) == (None, None, None)
    assert single.significant() is None
    zero = relative_difference([0.0, 0.0], [1.0, 2.0])
    assert zero.rel_diff is None and zero.ci_low is None and zero.p_value is not None
    negative = relative_difference([-1.0, -2.0], [1.0, 2.0])  # log ratio undefined
    assert negative.rel_diff == pytest.approx(-2.0) and negative.ci_low is None
    assert relative_difference([], [1.0]).rel_diff is None


def test_domain_errors_are_typed() -> None:
    for call in (lambda: t_ppf(0.0, 3), lambda: t_ppf(1.0, 3), lambda: t_cdf(1.0, 0),
                 lambda: t_sf(math.nan, 3), lambda: betainc(0, 1, 0.5),
                 lambda: betainc(1, 1, 1.5)):
        with pytest.raises(StatsError) as info:
            call()
        assert isinstance(info.value, EnergyMeterError) and isinstance(info.value, ValueError)
    with pytest.raises(StatsError, match="0 < p < 1"):
        t_ppf(2.0, 3)


def test_huge_values_give_none_not_infinities() -> None:
    s = summarize([1e308, 1e308, -1e308])
    assert all(v is None or math.isfinite(v) for v in s.to_dict().values())
    d = relative_difference([1e-300, 2e-300], [1e300, 2e300])
    assert all(v is None or math.isfinite(v) for v in d.to_dict().values())


def test_ci_of_the_relative_difference_covers_95_percent() -> None:
    """Simulated: normal samples of 5 with CVs of 5 %, true difference -40 %."""
    rng = random.Random(11)
    covered, trials = 0, 2000
    for _ in range(trials):
        a = [rng.gauss(500, 25) for _ in range(5)]
        b = [rng.gauss(300, 15) for _ in range(5)]
        d = relative_difference(a, b)
        covered += d.ci_low <= -0.4 <= d.ci_high
    assert 0.93 <= covered / trials <= 0.97


# -- against scipy (the `test` extra; the library itself never imports it) ----------------------
def _scipy() -> Any:
    return pytest.importorskip("scipy.stats")


def test_t_against_scipy_many_cases() -> None:
    scipy_stats = _scipy()
    rng = random.Random(20261122)
    for _ in range(2000):
        df = rng.choice([rng.uniform(0.3, 3), rng.uniform(1, 60), float(rng.randint(1, 40)),
                         rng.uniform(60, 5000)])
        t = rng.choice([rng.gauss(0, 1), rng.gauss(0, 5), rng.uniform(-300, 300),
                        rng.gauss(0, 0.01)])
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9, abs=1e-300)
        assert t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-300)
        p = rng.choice([rng.random(), 10 ** rng.uniform(-12, -1), 1 - 10 ** rng.uniform(-9, -1)])
        assert t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)


@settings(max_examples=300, deadline=None)
@given(df=st.floats(0.5, 2000), p=st.floats(1e-10, 1 - 1e-10))
def test_t_ppf_against_scipy_hypothesis(df: float, p: float) -> None:
    scipy_stats = _scipy()
    assert t_ppf(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
    assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, rel=1e-9)


def _sample(rng: random.Random) -> list[float]:
    centre, spread = rng.uniform(1, 1000), rng.uniform(0.001, 0.5)
    return [rng.gauss(centre, centre * spread) for _ in range(rng.randint(2, 12))]


def test_welch_and_ci_against_scipy_many_cases() -> None:
    scipy_stats = _scipy()
    rng = random.Random(7)
    for _ in range(500):
        a, b = _sample(rng), _sample(rng)
        ours = welch(a, b)
        theirs = scipy_stats.ttest_ind(b, a, equal_var=False)
        assert ours.t == pytest.approx(theirs.statistic, rel=1e-9)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-8, abs=1e-300)
        n = len(a)
        m, s = sum(a) / n, scipy_stats.tstd(a)
        low, high = scipy_stats.t.interval(0.95, n - 1, loc=m, scale=s / math.sqrt(n))
        assert confidence_interval(a) == (pytest.approx(low, rel=1e-10),
                                          pytest.approx(high, rel=1e-10))
        # the relative difference's interval: the same formula with scipy's quantile
        m_a, m_b = sum(a) / len(a), sum(b) / len(b)
        u_a = scipy_stats.tvar(a) / (len(a) * m_a ** 2) if m_a > 0 else None
        u_b = scipy_stats.tvar(b) / (len(b) * m_b ** 2) if m_b > 0 else None
        d = relative_difference(a, b)
        assert d.rel_diff == pytest.approx(m_b / m_a - 1, rel=1e-10, abs=1e-12)
        if u_a is None or u_b is None:
            assert d.ci_low is None
            continue
        df = (u_a + u_b) ** 2 / (u_a ** 2 / (len(a) - 1) + u_b ** 2 / (len(b) - 1))
        half = scipy_stats.t.ppf(0.975, df) * math.sqrt(u_a + u_b)
        assert d.ci_low == pytest.approx(m_b / m_a * math.exp(-half) - 1, rel=1e-8, abs=1e-12)
        assert d.ci_high == pytest.approx(m_b / m_a * math.exp(half) - 1, rel=1e-8, abs=1e-12)
