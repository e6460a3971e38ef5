"""Energy-to-target: what a run spent until a logged metric first reached a target value.

The logs (``Meter.log``) are stamped with run time and cumulative energy; between the two logs
around the crossing the metric, the time and the energy are taken to move linearly, so the
figures are those at the interpolated crossing. Emissions use the run's own intensity and PUE
(its emissions over its energy)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import ReportError

if TYPE_CHECKING:
    from .model import Report

DIRECTIONS = (">=", "<=")


def parse_target(text: str) -> tuple[str, float, str]:
    """``"val_acc=0.9"``, ``"val_acc>=0.9"`` or ``"loss<=0.1"`` as ``(metric, target,
    direction)`` (``=`` means ``>=``). Raises :class:`ReportError` saying what is accepted."""
    for op, direction in ((">=", ">="), ("<=", "<="), ("=", ">=")):
        metric, sep, value = text.partition(op)
        if sep and metric.strip() and "=" not in metric and "<" not in metric \
                and ">" not in metric:
            try:
                target = float(value)
            except ValueError:
                break
            if math.isfinite(target):
                return metric.strip(), target, direction
            break
    raise ReportError(f"target {text!r} is not understood; accepted: METRIC=VALUE or "
                      "METRIC>=VALUE (reached at or above, e.g. val_acc=0.9), METRIC<=VALUE "
                      "(at or below, e.g. loss<=0.1)")


def _reached(value: float, target: float, direction: str) -> bool:
    return value >= target if direction == ">=" else value <= target


def energy_to(report: Report, metric: str, target: float, direction: str = ">=") -> dict[str, Any]:
    """See :meth:`~energymeter.report.Report.energy_to`."""
    if direction not in DIRECTIONS:
        raise ReportError(f"direction {direction!r} unknown; accepted: {', '.join(DIRECTIONS)}")
    out: dict[str, Any] = {"metric": metric, "target": target, "direction": direction,
                           "reached": False, "energy_j": None, "duration_s": None,
                           "emissions_g": None, "log_index": None, "logged": False}
    previous: tuple[float, float, float] | None = None
    for index, entry in enumerate(report.logs):
        value = entry.get("metrics", {}).get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            continue
        out["logged"] = True
        t_s, energy_j = float(entry["t_s"]), float(entry["energy_j"])
        if _reached(value, target, direction):
            if previous is not None and value != previous[2]:
                share = (target - previous[2]) / (value - previous[2])
                t_s = previous[0] + share * (t_s - previous[0])
                energy_j = previous[1] + share * (energy_j - previous[1])
            emissions = report.emissions_g
            out.update(reached=True, energy_j=energy_j, duration_s=t_s, log_index=index,
                       emissions_g=(emissions * energy_j / report.total_energy_j
                                    if emissions is not None and report.total_energy_j > 0
                                    else None))
            return out
        previous = (t_s, energy_j, float(value))
    return out
