"""Energy-to-target over runs: what each run spent until a logged metric first reached a
target (:meth:`energymeter.report.Report.energy_to`), also when the metric was logged by a run
nested in it (a ``measure()`` inside ``energymeter run``), and per group the mean over the runs
that reached it (:func:`target_results`, what ``energymeter report --target`` shows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from ..report.samples import iter_energy
from ..report.target import parse_target
from ..stats import summarize
from ..store import SAMPLES_NAME
from .groups import group_runs

if TYPE_CHECKING:
    from ..report import Report

Target = tuple[str, float, str]

#: The figures of an energy-to-target result, with the statistics' key of each.
TARGET_FIGURES = (("energy_j", "energy_to_target_j"), ("duration_s", "time_to_target_s"),
                  ("emissions_g", "emissions_to_target_g"))


def as_target(target: str | Target) -> Target:
    """``(metric, value, direction)`` from ``"val_acc=0.9"`` (see
    :func:`~energymeter.report.target.parse_target`) or such a tuple."""
    return parse_target(target) if isinstance(target, str) else target


def target_text(target: Target) -> str:
    """``val_acc ≥ 0.9`` (for tables)."""
    metric, value, direction = target
    return f"{metric} {'≥' if direction == '>=' else '≤'} {value:g}"


def energy_before(report: Report, offset_s: float) -> float:
    """The energy (J) ``report`` had spent ``offset_s`` seconds after it started: the sum of
    its channels that enter the total, read from its ``samples.csv`` and interpolated between
    the rows around ``offset_s``. Raises :class:`ReportError` saying why it cannot be known."""
    if offset_s <= 0:
        return 0.0
    wanted = [c.channel.id for c in report.channels if c.channel.in_total]
    if not wanted:
        raise ReportError(f"run {report.run_id} has no channel in the total")
    previous: tuple[float, float] | None = None
    for t_s, joules in iter_energy(report, wanted):
        energy_j = sum(joules.get(c, 0.0) for c in wanted)
        if t_s >= offset_s:
            if previous is None or t_s == previous[0]:
                return energy_j
            share = (offset_s - previous[0]) / (t_s - previous[0])
            return previous[1] + share * (energy_j - previous[1])
        previous = (t_s, energy_j)
    raise ReportError(f"{report.path}/{SAMPLES_NAME} ends before {offset_s:.3g} s")


def run_energy_to(report: Report, target: str | Target,
                  nested: Sequence[Report] = ()) -> dict[str, Any]:
    """:meth:`Report.energy_to` of ``report``, with ``source`` (``run`` or ``nested``) and
    ``note``. When ``report`` logged no value of the metric but one of its ``nested`` runs did,
    the earliest crossing among them is used: its figures plus what ``report`` spent before
    that nested run started (from ``report``'s ``samples.csv``, at the nested run's start
    offset); when that cannot be read, the nested run's own figures, with a note saying so."""
    metric, value, direction = as_target(target)
    own = report.energy_to(metric, value, direction)
    result = {**own, "source": "run", "note": None}
    if own["logged"] or not nested:
        return result
    logged = [(n, n.energy_to(metric, value, direction))
              for n in sorted(nested, key=lambda r: r.started_at)]
    logged = [(n, r) for n, r in logged if r["logged"]]
    if not logged:
        return result
    reached = [(n, r, (n.started_at - report.started_at).total_seconds())
               for n, r in logged if r["reached"]]
    if not reached:
        return {**own, "logged": True, "source": "nested",
                "note": f"logged by nested run {logged[0][0].run_id[:8]}; not reached"}
    child, found, offset_s = min(reached, key=lambda x: x[2] + x[1]["duration_s"])
    out = {**found, "source": "nested", "nested_run_id": child.run_id, "log_index": None}
    try:
        before_j = energy_before(report, offset_s)
    except ReportError as exc:
        out["note"] = (f"figures of nested run {child.run_id[:8]} alone, from its start "
                       f"{offset_s:.3g} s into the run (the energy before it is unknown: {exc})")
        return out
    energy_j = before_j + found["energy_j"]
    rate = None
    for source in (report, child):
        if source.emissions_g is not None and source.total_energy_j > 0:
            rate = source.emissions_g / source.total_energy_j
            break
    out.update(energy_j=energy_j, duration_s=offset_s + found["duration_s"],
               emissions_g=None if rate is None else rate * energy_j,
               note=f"from nested run {child.run_id[:8]} (started {offset_s:.3g} s in), "
                    f"plus the {before_j:.4g} J spent before it")
    return out


def _entry(report: Report, result: dict[str, Any], group: str | None) -> dict[str, Any]:
    note = result["note"]
    if not result["logged"]:
        note = "metric not logged"
    elif not result["reached"]:
        note = note or "not reached"
    return {"label": f"{report.name} ({report.run_id[:8]})", "run_id": report.run_id,
            "name": report.name, "group": group, "status": report.status,
            "warmup": report.warmup, "reached": result["reached"],
            "energy_j": result["energy_j"], "duration_s": result["duration_s"],
            "emissions_g": result["emissions_g"], "source": result["source"], "note": note}


def target_results(runs: Iterable[Report | tuple[str | None, Report]], target: str | Target,
                   *, by: str | None = None, nested: bool = False) -> dict[str, Any]:
    """Energy-to-target of every run (a run reached twice counts once; nested runs are left
    out, or compared instead of their parents with ``nested``), and with ``by`` (as for
    :func:`~energymeter.analysis.compare`) per group the statistics over the runs that reached
    the target, warm-up runs left out.

    Returns ``{"target": {"metric", "target", "direction", "text"}, "by", "runs": [...],
    "groups": [...] or None, "notes": [...]}`` (``notes``: duplicates dropped, nested runs
    left out): each run has ``label``, ``run_id``, ``group``, ``warmup``,
    ``reached``, ``energy_j``, ``duration_s``, ``emissions_g``, ``source``, ``note``; each
    group ``label``, ``n``, ``warmup``, ``reached`` and, for ``energy_to_target_j``,
    ``time_to_target_s`` and ``emissions_to_target_g``, ``n``, ``mean``, ``std``, ``ci_low``,
    ``ci_high``, ``cv`` (of the runs that reached it)."""
    metric, value, direction = as_target(target)
    grouping = group_runs(runs, by=by or "auto", group=by is not None, nested=nested)
    entries: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for g in grouping.groups:
        results = []
        for report in (*g.runs, *g.warmup_runs):
            result = run_energy_to(report, (metric, value, direction),
                                   grouping.nested.get(report.run_id, ()))
            entries.append(_entry(report, result, g.label if by is not None else None))
            if not report.warmup:
                results.append(result)
        reached = [r for r in results if r["reached"]]
        row: dict[str, Any] = {"label": g.label, "n": len(g.runs),
                               "warmup": len(g.warmup_runs), "reached": len(reached)}
        for figure, key in TARGET_FIGURES:
            row[key] = summarize(r[figure] for r in reached
                                 if r[figure] is not None).to_dict()
        groups.append(row)
    notes = []
    if grouping.duplicates:
        notes.append(f"{grouping.duplicates} duplicate run(s) dropped (a run reached twice "
                     "counts once)")
    if grouping.nested_excluded:
        notes.append(f"{grouping.nested_excluded} nested run(s) left out (part of a run "
                     "shown; --nested shows them instead)")
    return {"target": {"metric": metric, "target": value, "direction": direction,
                       "text": target_text((metric, value, direction))},
            "by": grouping.by if by is not None else None, "runs": entries,
            "groups": groups if by is not None else None, "notes": notes}
