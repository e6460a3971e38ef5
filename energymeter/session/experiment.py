"""Experiment metadata of a run (tags, repeat group, warm-up) and early estimates of its
total (repeated runs: :mod:`.repeat`).

A run started inside another (``measure()`` in a script under ``energymeter run``) inherits
the outer run's tags, group and warm-up flag through the environment, so that it can be found
with it; comparisons leave such nested runs out by default (they are part of their parent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import _ids
from ..errors import ConfigError

#: Set by ``energymeter run`` for the command: the run's tags (JSON), repeat group and whether
#: it is a warm-up run, inherited by a ``measure()`` inside it.
TAGS_ENV = "ENERGYMETER_RUN_TAGS"
GROUP_ID_ENV = "ENERGYMETER_GROUP_ID"
WARMUP_ENV = "ENERGYMETER_WARMUP"

TAG_ACCEPTED = "accepted: a mapping of names to strings, numbers or true/false"


def check_tags(tags: Mapping[str, Any] | None) -> dict[str, Any]:
    """``tags`` as a plain dict, or :class:`ConfigError` saying what is accepted."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ConfigError(f"tags={tags!r} is not understood; {TAG_ACCEPTED}")
    out: dict[str, Any] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"tag name {key!r} is not a non-empty string; {TAG_ACCEPTED}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"tag {key}={value!r} is not a finite number; {TAG_ACCEPTED}")
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"tag {key}={value!r} is a {type(value).__name__}; {TAG_ACCEPTED}")
        out[key.strip()] = value
    return out


def parse_tag(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line: a value that reads as a JSON number or true/false
    becomes one (``lr=3e-4`` is the number 0.0003, as ``tags={"lr": 3e-4}`` would give)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--tag {text!r} is not understood; accepted: KEY=VALUE, e.g. "
                          "--tag method=sparse --tag lr=3e-4")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        parsed = value
    return key.strip(), parsed if isinstance(parsed, (int, float, bool)) else value


def inherited(env: Mapping[str, str]) -> tuple[dict[str, Any], str | None, bool]:
    """The tags, repeat group and warm-up flag an enclosing ``energymeter run`` passed on."""
    tags: dict[str, Any] = {}
    text = env.get(TAGS_ENV, "")
    if text:
        try:
            tags = check_tags(json.loads(text))
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"${TAGS_ENV} is not a JSON object of tags ({exc}); it is set "
                              "by energymeter run: unset it") from None
    return tags, env.get(GROUP_ID_ENV) or None, env.get(WARMUP_ENV, "") == "1"


def child_env(tags: Mapping[str, Any], group_id: str | None, warmup: bool) -> dict[str, str]:
    """The variables that pass a run's metadata on to a run nested in it."""
    out = {TAGS_ENV: json.dumps(dict(tags), sort_keys=True)} if tags else {}
    if group_id:
        out[GROUP_ID_ENV] = group_id
    if warmup:
        out[WARMUP_ENV] = "1"
    return out


def new_group_id() -> str:
    return _ids.random_id()


# -- early estimate --------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """The projected totals of a run from its progress so far (:meth:`Meter.estimate_total`).

    ``*_low``/``*_high``: a 95 % interval from the variation of the cost per unit of work
    between successive calls (None before there are two such intervals)."""

    done: float
    total: float
    energy_j: float
    duration_s: float
    emissions_g: float | None
    energy_low_j: float | None = None
    energy_high_j: float | None = None
    duration_low_s: float | None = None
    duration_high_s: float | None = None
    emissions_low_g: float | None = None
    emissions_high_g: float | None = None
    intervals: int = 0

    def summary(self) -> str:
        """One line: the projected energy (with its interval) and time."""
        span = ("" if self.energy_low_j is None
                else f" [{self.energy_low_j:.4g}, {self.energy_high_j:.4g}]")
        return (f"projected at {self.done:g}/{self.total:g}: {self.energy_j:.4g} J{span}, "
                f"{self.duration_s:.4g} s"
                + (f", {self.emissions_g:.4g} gCO2e" if self.emissions_g is not None else ""))


@dataclass
class Progress:
    """Points ``(done, t_s, energy_j)`` given to :meth:`Meter.estimate_total`, from (0, 0, 0)."""

    points: list[tuple[float, float, float]] = field(default_factory=lambda: [(0.0, 0.0, 0.0)])

    def estimate(self, done: float, total: float, t_s: float, energy_j: float,
                 g_per_j: float | None) -> Estimate:
        if not (math.isfinite(done) and math.isfinite(total)) or not 0 < done <= total:
            raise ConfigError(f"estimate_total(done={done!r}, total={total!r}); accepted: "
                              "0 < done <= total (units of work: epochs, steps, items)")
        if done < self.points[-1][0]:
            raise ConfigError(f"estimate_total(done={done!r}): done went back from "
                              f"{self.points[-1][0]!r}; accepted: non-decreasing progress")
        if done > self.points[-1][0]:
            self.points.append((done, t_s, energy_j))
        left = total - done
        energy = energy_j + left * energy_j / done
        duration = t_s + left * t_s / done
        low_high: dict[str, float | None] = {}
        steps = [(b[0] - a[0], b[1] - a[1], b[2] - a[2])
                 for a, b in zip(self.points, self.points[1:], strict=False)]
        if len(steps) >= 2:
            from ..stats import t_ppf  # here: the statistics load only for an interval

            half = t_ppf(0.975, len(steps) - 1) / math.sqrt(len(steps))
            for key, index, now in (("energy", 2, energy_j), ("duration", 1, t_s)):
                rates = [s[index] / s[0] for s in steps]
                mean = sum(rates) / len(rates)
                spread = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1))
                low_high[f"{key}_low"] = now + left * max(0.0, mean - half * spread)
                low_high[f"{key}_high"] = now + left * (mean + half * spread)

        def emissions(joules: float | None) -> float | None:
            return None if joules is None or g_per_j is None else joules * g_per_j

        return Estimate(
            done=done, total=total, energy_j=energy, duration_s=duration,
            emissions_g=emissions(energy),
            energy_low_j=low_high.get("energy_low"), energy_high_j=low_high.get("energy_high"),
            duration_low_s=low_high.get("duration_low"),
            duration_high_s=low_high.get("duration_high"),
            emissions_low_g=emissions(low_high.get("energy_low")),
            emissions_high_g=emissions(low_high.get("energy_high")),
            intervals=len(steps))
