"""Repeated runs of a function (:func:`repeat`): one repeat group, warm-up runs recorded but
left out of comparisons (``energymeter run --repeat`` does the same for a command)."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..report import Report
from .experiment import new_group_id
from .meter import Meter


@dataclass(frozen=True)
class Repeats:
    """What :func:`repeat` returns: the measured runs, the warm-up runs, the group id."""

    reports: tuple[Report, ...]
    warmup_reports: tuple[Report, ...]
    group_id: str
    results: tuple[Any, ...] = ()


def repeat(fn: Callable[..., Any], n: int = 5, *, warmup: int = 0, cooldown_s: float = 0.0,
           name: str | None = None, tags: Mapping[str, Any] | None = None,
           **measure_kwargs: Any) -> Repeats:
    """Run ``fn`` ``warmup + n`` times, each call measured as its own run of one repeat group
    (``group_id``); the first ``warmup`` runs are recorded with ``warmup: true`` and left out
    of comparisons. ``fn`` gets the running :class:`~energymeter.Meter` if it takes an
    argument (for phases, logs, counts), else nothing. ``cooldown_s`` seconds pass between runs,
    unmeasured. Other keyword arguments are those of :func:`~energymeter.measure`.
    An exception from ``fn`` ends the repeats (its run is reported ``failed``) and propagates."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"repeat n={n!r}; accepted: a whole number of runs >= 1")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"repeat warmup={warmup!r}; accepted: a whole number >= 0")
    if not (isinstance(cooldown_s, (int, float)) and math.isfinite(cooldown_s)
            and cooldown_s >= 0):
        raise ConfigError(f"repeat cooldown_s={cooldown_s!r}; accepted: seconds >= 0")
    takes_meter = _takes_an_argument(fn)
    group_id = new_group_id()
    run_name = name or getattr(fn, "__qualname__", "run")
    done: list[Report] = []
    results: list[Any] = []
    for i in range(warmup + n):
        if i and cooldown_s:
            time.sleep(cooldown_s)
        meter = Meter(run_name, tags=tags, group_id=group_id, warmup=i < warmup,
                      **measure_kwargs)
        with meter:
            results.append(fn(meter) if takes_meter else fn())
        assert meter.report is not None
        done.append(meter.report)
    return Repeats(tuple(done[warmup:]), tuple(done[:warmup]), group_id,
                   tuple(results[warmup:]))


def _takes_an_argument(fn: Callable[..., Any]) -> bool:
    try:
        parameters: Sequence[inspect.Parameter] = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in parameters)
