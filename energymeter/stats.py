"""The statistics of a comparison, hand-written in plain Python (no numpy, no scipy).

* :func:`summarize`: n, mean, sample standard deviation, the 95 % confidence interval of the
  mean (Student's t with n − 1 degrees of freedom) and the coefficient of variation.
* :func:`welch`: Welch's unequal-variances t-test (two-sided p-value; Welch–Satterthwaite
  degrees of freedom).
* :func:`relative_difference`: ``mean_b / mean_a - 1`` with a 95 % confidence interval from the
  delta method on the log of the ratio of means: ``log(mean_b / mean_a) ± t · se`` with
  ``se² = s_a² / (n_a mean_a²) + s_b² / (n_b mean_b²)`` and the Welch–Satterthwaite degrees of
  freedom of those two terms, mapped back with ``exp(·) - 1``. The interval is asymmetric (as a
  ratio of positive quantities should be) and valid for positive means only; it is None
  otherwise.
* Student's t distribution: :func:`t_cdf`, :func:`t_sf` and :func:`t_ppf` (quantile), via the
  regularised incomplete beta function :func:`betainc` (Lentz's continued fraction).

Every function returns None (or a field None) where a figure cannot be computed (too few
values, no spread, a non-positive mean, an overflow) rather than NaN or an infinity, so that the
results are strict JSON. Domain errors (a probability outside (0, 1), degrees of freedom ≤ 0)
are :class:`StatsError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from .errors import EnergyMeterError

#: The confidence level of every interval shown, and the significance level (1 - it).
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 20000
# Above this many degrees of freedom, t is the normal distribution to better than 1e-7 and the
# continued fraction would need O(sqrt(df)) terms.
_NORMAL_DF = 1e7


class StatsError(EnergyMeterError, ValueError):
    """A statistical function was given an argument outside its domain."""


# -- the incomplete beta function and Student's t ---------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), which
    converges fast for ``x < (a + 1) / (a + b + 2)``."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise StatsError(f"the incomplete beta function did not converge for a={a}, b={b}, "
                     f"x={x}; accepted: a and b up to about {_NORMAL_DF:g}")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1.

    ``y`` is ``1 - x`` when the caller knows it more precisely than the subtraction gives."""
    if not (a > 0 and b > 0):
        raise StatsError(f"betainc needs a > 0 and b > 0, got a={a}, b={b}")
    if y is None:
        y = 1.0 - x
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise StatsError(f"betainc needs 0 <= x <= 1, got x={x}")
    if x == 0.0:
        return 0.0
    if y == 0.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(y))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _check_df(df: float) -> None:
    if not df > 0:  # also NaN
        raise StatsError(f"degrees of freedom must be > 0, got {df}")


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (the upper tail)."""
    _check_df(df)
    if math.isnan(t):
        raise StatsError("t is NaN; accepted: a number (infinities included)")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    if t == 0.0:
        return 0.5
    if df > _NORMAL_DF:
        return NormalDist().cdf(-t)
    t2 = t * t
    # x = df / (df + t²), y = 1 - x = t² / (df + t²), both computed without cancellation
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))
    return tail if t > 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    return t_sf(-t, df)


def t_pdf(t: float, df: float) -> float:
    """The density of Student's t with ``df`` degrees of freedom at ``t``."""
    _check_df(df)
    log_norm = (math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0)
                - 0.5 * math.log(df * math.pi))
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def t_ppf(p: float, df: float) -> float:
    """The quantile of Student's t: the t with P(T ≤ t) = ``p``, for 0 < p < 1.

    Newton's method on the upper tail from the normal quantile: for t > 0 the tail is convex
    and decreasing and the t quantile lies beyond the normal one, so the iterates increase
    monotonically to the root and never overshoot."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise StatsError(f"a quantile needs 0 < p < 1, got p={p}")
    if p == 0.5:
        return 0.0
    q = min(p, 1.0 - p)  # the upper-tail probability of |t|
    sign = 1.0 if p > 0.5 else -1.0
    t = -NormalDist().inv_cdf(q)
    if df > _NORMAL_DF:
        return sign * t
    for _ in range(_MAX_ITER):
        step = (t_sf(t, df) - q) / t_pdf(t, df)
        if not math.isfinite(step) or step <= 0.0:
            break  # at the root to within rounding
        t += step
        if step <= 4 * _EPS * t:
            break
    return sign * t


# -- summaries ---------------------------------------------------------------------------------
def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean (exactly rounded sum), None for no values."""
    if not values:
        return None
    try:
        return _finite(math.fsum(values) / len(values))
    except OverflowError:
        return None


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (n − 1 in the denominator), None for fewer than 2."""
    m = mean(values)
    if m is None or len(values) < 2:
        return None
    try:
        return _finite(math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)))
    except OverflowError:
        return None


def confidence_interval(values: Sequence[float], confidence: float = CONFIDENCE
                        ) -> tuple[float, float] | None:
    """The ``confidence`` interval of the mean: ``mean ± t(1 - α/2, n - 1) · s / √n``; None for
    fewer than 2 values."""
    m, s = mean(values), sample_std(values)
    if m is None or s is None:
        return None
    half = t_ppf(0.5 + confidence / 2.0, len(values) - 1) * s / math.sqrt(len(values))
    low, high = _finite(m - half), _finite(m + half)
    return None if low is None or high is None else (low, high)


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample standard deviation over the absolute mean; None for fewer than 2 values or a
    mean of 0."""
    m, s = mean(values), sample_std(values)
    if m is None or s is None or m == 0:
        return None
    return _finite(s / abs(m))


@dataclass(frozen=True)
class Summary:
    """A sample described: ``n``, ``mean``, ``std`` (sample), ``ci_low``/``ci_high`` (the
    confidence interval of the mean) and ``cv`` (std / |mean|)."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    cv: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> Summary:
    """:class:`Summary` of ``values`` (None fields where a figure needs more values)."""
    values = [float(v) for v in values]
    ci = confidence_interval(values, confidence)
    return Summary(n=len(values), mean=mean(values), std=sample_std(values),
                   ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None,
                   cv=coefficient_of_variation(values))


# -- two samples -------------------------------------------------------------------------------
def welch_df(u_a: float, n_a: int, u_b: float, n_b: int) -> float | None:
    """The Welch–Satterthwaite degrees of freedom of ``u_a + u_b``, where ``u`` is the
    squared standard error of each sample (``s² / n``); None when both are 0."""
    denominator = u_a * u_a / (n_a - 1) + u_b * u_b / (n_b - 1)
    if denominator <= 0:
        return None
    return _finite((u_a + u_b) ** 2 / denominator)


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of two means: ``t`` (of b − a), ``df`` and the two-sided ``p_value``."""

    t: float
    df: float
    p_value: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's two-sided t-test of ``mean(b) == mean(a)`` (variances not assumed equal): the
    same as ``scipy.stats.ttest_ind(b, a, equal_var=False)``. None with fewer than 2 values in
    either sample or no spread in both."""
    if len(a) < 2 or len(b) < 2:
        return None
    m_a, m_b, s_a, s_b = mean(a), mean(b), sample_std(a), sample_std(b)
    if None in (m_a, m_b, s_a, s_b):
        return None
    try:
        u_a, u_b = s_a * s_a / len(a), s_b * s_b / len(b)
        df = welch_df(u_a, len(a), u_b, len(b))
        if df is None:
            return None
        t = (m_b - m_a) / math.sqrt(u_a + u_b)
    except (OverflowError, ZeroDivisionError):
        return None
    if not math.isfinite(t):
        return None
    return Welch(t=t, df=df, p_value=min(1.0, 2.0 * t_sf(abs(t), df)))


@dataclass(frozen=True)
class Difference:
    """How sample b differs from sample a: ``rel_diff = mean_b / mean_a - 1``, its confidence
    interval ``ci_low``/``ci_high`` (delta method on the log ratio, Welch–Satterthwaite df) and
    Welch's two-sided ``p_value``. Fields are None where they cannot be computed."""

    rel_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None

    def significant(self, alpha: float = ALPHA) -> bool | None:
        """Whether ``p_value < alpha`` (None without a p-value)."""
        return None if self.p_value is None else self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relative_difference(a: Sequence[float], b: Sequence[float],
                        confidence: float = CONFIDENCE) -> Difference:
    """``mean(b) / mean(a) - 1`` with its ``confidence`` interval and Welch's p-value.

    The interval is ``exp(log(mean_b / mean_a) ± t(1 - α/2, ν) · se) - 1`` with
    ``se² = u_a + u_b``, ``u = s² / (n · mean²)`` (the delta method's variance of the log of a
    sample mean) and ``ν`` the Welch–Satterthwaite degrees of freedom of ``u_a + u_b``. It needs
    positive means and 2 or more values in each sample, and some spread; otherwise it is None
    (the point estimate is kept whenever ``mean_a`` is not 0)."""
    m_a, m_b = mean(a), mean(b)
    rel = None
    if m_a is not None and m_b is not None and m_a != 0:
        try:
            rel = _finite(m_b / m_a - 1.0)
        except OverflowError:
            rel = None
    test = welch(a, b)
    p_value = test.p_value if test is not None else None
    low = high = None
    if rel is not None and m_a > 0 and m_b > 0 and len(a) >= 2 and len(b) >= 2:
        s_a, s_b = sample_std(a), sample_std(b)
        if s_a is not None and s_b is not None:
            try:
                u_a = (s_a / m_a) ** 2 / len(a)
                u_b = (s_b / m_b) ** 2 / len(b)
                df = welch_df(u_a, len(a), u_b, len(b))
                if df is not None:
                    half = t_ppf(0.5 + confidence / 2.0, df) * math.sqrt(u_a + u_b)
                    log_ratio = math.log(m_b / m_a)
                    low = _finite(math.expm1(log_ratio - half))
                    high = _finite(math.expm1(log_ratio + half))
            except (OverflowError, ZeroDivisionError):
                low = high = None
    if low is None or high is None:
        low = high = None
    return Difference(rel_diff=rel, ci_low=low, ci_high=high, p_value=p_value)
