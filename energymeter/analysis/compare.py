"""Compare runs: group reports and compute, per group, the mean, spread and ratio to the first
group of every figure (what ``energymeter compare`` shows, rendered by :mod:`.render`).

:func:`compare` returns plain data (a list of dicts, one per group). Nothing here prints, and
pandas is never needed.

>>> from energymeter.analysis import compare, load_reports
>>> rows = compare(load_reports(["runs/"]))        # doctest: +SKIP
>>> rows[1]["energy_total_j_ratio"]                 # doctest: +SKIP
0.82
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ReportError
from ..probes.base import KINDS
from ..report import Report

_MIB = 2**20

# metric key -> (label, unit shown, divisor from SI)
_FIXED_METRICS: tuple[tuple[str, str, str, float], ...] = (
    ("duration_s", "duration", "s", 1.0),
    ("mean_power_w", "mean power", "W", 1.0),
    ("emissions_g", "emissions", "gCO2e", 1.0),
    ("peak_rss_bytes", "peak RSS", "MiB", _MIB),
    ("peak_gpu_memory_bytes", "peak GPU memory", "MiB", _MIB),
)


# -- comparison --------------------------------------------------------------------------------
def metric_list(kinds: Iterable[str]) -> list[tuple[str, str, str, float]]:
    """(key, label, unit, divisor) of every figure compared, with the energy ``kinds`` given."""
    kinds = set(kinds)
    ordered = [k for k in KINDS if k in kinds] + sorted(kinds - set(KINDS))
    energy = [("energy_total_j", "energy total", "J", 1.0)]
    energy += [(f"energy_{k}_j", f"energy {k}" + (" (not in total)" if k == "psys" else ""),
                "J", 1.0) for k in ordered]
    return energy + list(_FIXED_METRICS)


def _metrics(reports: Sequence[Report]) -> list[tuple[str, str, str, float]]:
    return metric_list(k for r in reports for k in r.energy_j["by_kind"])


def _value(report: Report, key: str) -> float | None:
    if key == "energy_total_j":
        return report.total_energy_j
    if key.startswith("energy_"):
        value = report.energy_j["by_kind"].get(key[len("energy_"):-len("_j")])
        return None if value is None else float(value)
    if key == "duration_s":
        return report.duration_s
    if key == "mean_power_w":
        return report.mean_power_w
    if key == "emissions_g":
        value = report.emissions_g
        return None if value is None else float(value)
    value = report.resources.get(key)
    return None if value is None else float(value)


def _group(reports: Sequence[Report], by_name: bool) -> list[tuple[str, list[Report]]]:
    groups: dict[str, list[Report]] = {}
    for r in reports:
        key = r.name if by_name else f"{r.name} ({r.run_id[:8]})"
        groups.setdefault(key, []).append(r)
    return list(groups.items())


def compare(reports: Sequence[Report], *, group: bool = True) -> list[dict[str, Any]]:
    """One dict per group of ``reports`` (runs sharing a name, in order of first appearance;
    with ``group=False`` one per run): ``label``, ``name``, ``n``, ``run_ids``, ``statuses``
    (count per status), ``methods`` (per energy kind, e.g. ``{"cpu": "model"}``) and, for every
    figure ``<key>`` (``energy_total_j``, ``energy_<kind>_j``, ``duration_s``, ``mean_power_w``,
    ``emissions_g``, ``peak_rss_bytes``, ``peak_gpu_memory_bytes``): ``<key>`` (mean over the
    group), ``<key>_std`` (sample standard deviation, None for one run) and ``<key>_ratio``
    (mean / mean of the first group; None where that is 0 or missing). SI units throughout."""
    import statistics

    if not reports:
        raise ReportError("nothing to compare: give at least one run")
    metrics = _metrics(reports)
    rows: list[dict[str, Any]] = []
    for label, members in _group(reports, group):
        statuses: dict[str, int] = {}
        for r in members:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        methods: dict[str, str] = {}
        for kind in (k for k in KINDS if any(k in r.energy_j["by_kind"] for r in members)):
            found = sorted({m for r in members for m in r.methods(kind).split("+") if m})
            methods[kind] = "+".join(found)
        row: dict[str, Any] = {
            "label": label, "name": members[0].name, "n": len(members),
            "run_ids": [r.run_id for r in members], "statuses": statuses, "methods": methods,
        }
        for key, *_ in metrics:
            values = [v for v in (_value(r, key) for r in members) if v is not None]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
            row[f"{key}_ratio"] = None
        rows.append(row)
    base = rows[0]
    for row in rows:
        for key, *_ in metrics:
            mean, ref = row[key], base[key]
            row[f"{key}_ratio"] = mean / ref if mean is not None and ref else None
    return rows


def comparison_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What makes a comparison unfair: runs not completed, or an energy kind measured by
    different methods in different groups (e.g. a counter against a model)."""
    warnings = []
    for row in rows:
        bad = {s: n for s, n in row["statuses"].items() if s != "completed"}
        if bad:
            shown = ", ".join(f"{n} {s}" for s, n in bad.items())
            warnings.append(f"{row['label']}: {shown} of {row['n']} run(s)")
    kinds = {k for row in rows for k in row["methods"]}
    for kind in (k for k in KINDS if k in kinds):
        seen = {row["methods"][kind] for row in rows if kind in row["methods"]}
        if len(seen) > 1:
            warnings.append(f"{kind} energy was obtained by different methods "
                            f"({', '.join(sorted(seen))}): its ratios compare unlike numbers")
    for row in rows:
        estimated = [k for k, m in row["methods"].items() if "model" in m]
        if estimated:
            warnings.append(f"{row['label']}: {', '.join(estimated)} energy is estimated by a "
                            "model, not measured")
    return warnings


