"""A report as text for people: the summary lines, the per-channel and per-phase tables, and
whole reports as ``table``, ``json``, ``csv``, ``markdown`` or ``latex`` (what ``energymeter
report`` prints). Nothing here prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ReportError
from ..store.rundir import REPORT_NAME
from .tables import format_number, render_csv, render_latex, render_markdown, render_table
from .values import LEDGER_COLUMNS, RUNNING

if TYPE_CHECKING:
    from .model import Report

FORMATS = ("table", "json", "csv", "markdown", "latex")

CHANNEL_HEADERS = ("channel", "kind", "device", "method", "energy (J)", "mean (W)", "peak (W)")
PHASE_HEADERS = ("phase", "parent", "start (s)", "duration (s)", "energy (J)")


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else :class:`ReportError`."""
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r} unknown; accepted: {', '.join(FORMATS)}")
    return fmt


def _sig(value: float | None) -> str:
    """Four significant digits; ``?`` for a figure a report leaves out (null)."""
    return "?" if value is None else f"{value:.4g}"


def channel_rows(report: Report) -> list[list[str]]:
    """Per-channel rows: channel, kind, device, method, energy (J), mean and peak power (W)."""
    rows = []
    for c in report.channels:
        ch = c.channel
        label = ch.id + (f" (in {ch.part_of})" if ch.is_subzone else "")
        method = ch.method + (" (estimated)" if ch.method == "model" else "")
        rows.append([label, ch.kind + (" (not in total)" if ch.kind == "psys" else ""),
                     ch.device or "-", method, format_number(c.energy_j, 2),
                     format_number(c.mean_power_w, 1), format_number(c.peak_power_w, 1)])
    return rows


def phase_rows(report: Report) -> list[list[str]]:
    """Per-phase rows: phase, parent, start, duration (s), energy (J)."""
    return [[p.name, p.parent or "-", format_number(p.start_s, 2),
             format_number(p.duration_s, 3),
             format_number(p.to_dict([c.channel for c in report.channels])
                           ["energy_j"]["total"], 2)]
            for p in report.phases]


def summary(report: Report) -> str:
    """A few human lines: energy by kind and method, power, carbon, resources, warnings."""
    by_kind = report.energy_j["by_kind"]
    parts = []
    for kind, joules in by_kind.items():
        method = report.methods(kind)
        flag = " (estimated)" if "model" in method else ""
        parts.append(f"{kind} {joules:.1f} J{flag}" + (" [not in total]"
                                                       if kind == "psys" else ""))
    total = report.total_energy_j
    lines = [f"energymeter: {report.name} {report.status} in {report.duration_s:.2f} s, "
             f"{total:.1f} J ({total / 3600:.4f} Wh), mean {report.mean_power_w:.1f} W",
             "  energy: " + (", ".join(parts) if parts else "no energy channel")]
    if report.carbon:
        cb = report.carbon
        lines.append(f"  carbon: {_sig(cb.get('emissions_g', 0))} gCO2e at "
                     f"{_sig(cb.get('g_per_kwh', 0))} g/kWh ({cb.get('region')}, "
                     f"{cb.get('basis', '')}, {cb.get('source', '')}), "
                     f"PUE {cb.get('pue')}")
    res = report.resources
    if res:
        # The best memory figure (PSS where forked workers share pages), else summed RSS.
        memory = res.get("peak_memory_bytes", res.get("peak_rss_bytes"))
        basis = str(res.get("memory_basis", "rss")).upper()
        lines.append(f"  resources: cpu {res.get('cpu_time_s') or 0:.2f} s, peak memory "
                     f"{(memory or 0) / 2**20:.0f} MiB ({basis})"
                     + (f", peak gpu mem {res['peak_gpu_memory_bytes'] / 2**20:.0f} MiB"
                        if res.get("peak_gpu_memory_bytes") else ""))
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    if report.path:
        lines.append(_where(report, report.path))
    return "\n".join(lines)


def _where(report: Report, run_dir: Path) -> str:
    """Where the run is: its ``report.json``, or (rebuilt, none written yet) its directory."""
    saved = run_dir / REPORT_NAME
    if not report.overhead.get("rebuilt_from_samples") or saved.is_file():
        return f"  report: {saved}"
    if report.status == RUNNING:
        return (f"  run: {run_dir} (rebuilt from its samples so far; it writes "
                f"{REPORT_NAME} when it ends)")
    return (f"  run: {run_dir} (rebuilt from its samples; it has no {REPORT_NAME}: "
            f"`energymeter report --save` writes one)")


def markdown(report: Report) -> str:
    """The channel table with duration, total, carbon and warnings, in Markdown."""
    total = report.total_energy_j
    lines = [f"### energymeter run `{report.name}` ({report.status})", "",
             f"Duration {report.duration_s:.2f} s, total energy {total:.2f} J "
             f"({total / 3600:.4f} Wh).", "",
             render_markdown(CHANNEL_HEADERS, channel_rows(report))]
    if report.carbon:
        cb = report.carbon
        lines += ["", f"Emissions {_sig(cb.get('emissions_g', 0))} gCO2e "
                      f"(region {cb.get('region')}, {cb.get('g_per_kwh')} g/kWh "
                      f"{cb.get('basis', '')}, {cb.get('source', '')}, PUE {cb.get('pue')})."]
    if report.warnings:
        lines += ["", "Warnings:", *[f"- {w}" for w in report.warnings]]
    return "\n".join(lines) + "\n"


def latex(report: Report) -> str:
    """A ``tabular`` of the channels with a total row (special characters escaped)."""
    total = ["total", "", "", "", format_number(report.total_energy_j, 2),
             format_number(report.mean_power_w, 1), ""]
    return render_latex(CHANNEL_HEADERS, [*channel_rows(report), total]) + "\n"


def table(report: Report) -> str:
    """The human summary of ``report`` followed by its per-channel (and phase) tables."""
    parts = [summary(report), "",
             render_table(CHANNEL_HEADERS, channel_rows(report),
                          ["l", "l", "l", "l", "r", "r", "r"])]
    if report.phases:
        parts += ["", render_table(PHASE_HEADERS, phase_rows(report),
                                   ["l", "l", "r", "r", "r"])]
    return "\n".join(parts) + "\n"


def format_reports(reports: Sequence[Report], fmt: str = "table") -> str:
    """``reports`` as text: ``table`` (summary and channel table of each), ``json`` (one report,
    or a list for several), ``csv`` (the ledger columns, one row per run), ``markdown`` or
    ``latex`` (each report's table)."""
    check_format(fmt)
    if fmt == "json":
        if len(reports) == 1:
            return reports[0].to_json() + "\n"
        return json.dumps([r.to_dict() for r in reports], indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return render_csv(LEDGER_COLUMNS, (r.to_row() for r in reports))
    if fmt == "markdown":
        return "\n".join(markdown(r) for r in reports)
    if fmt == "latex":
        return "\n".join(latex(r) for r in reports)
    return "\n".join(table(r) for r in reports)
