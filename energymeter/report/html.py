"""A report as a small HTML block, for notebooks (``Report._repr_html_``): the headline
figures, the channels with how each was measured, the phases, and the warnings folded away.
Every value from the report is escaped."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from .render import method_label
from .tables import energy_unit, format_number

if TYPE_CHECKING:
    from .model import Report

#: How many phases are shown before the rest are counted.
MAX_PHASES = 12

_STYLE = ("font-family: sans-serif; font-size: 12px; border-collapse: collapse; "
          "margin: 4px 0")
_CELL = "padding: 2px 8px; border-bottom: 1px solid #ddd"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    def cell(tag: str, text: str, i: int) -> str:
        align = "right" if i in numeric else "left"
        return f'<{tag} style="{_CELL}; text-align: {align}">{escape(text)}</{tag}>'

    head = "".join(cell("th", h, i) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f'<table style="{_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _energy(joules: float) -> str:
    unit, per_unit = energy_unit(abs(joules))
    return f"{format_number(joules / per_unit)} {unit}"


def report_html(report: Report) -> str:
    """The HTML block of ``report`` (see the module docstring)."""
    total = report.total_energy_j
    facts: list[tuple[str, Any]] = [
        ("status", report.status),
        ("duration", f"{format_number(report.duration_s)} s"),
        ("energy", _energy(total)),
        ("mean power", f"{format_number(report.mean_power_w)} W"),
    ]
    if report.carbon and report.carbon.get("emissions_g") is not None:
        cb = report.carbon
        facts.append(("emissions", f"{format_number(cb['emissions_g'])} gCO2e "
                                   f"({cb.get('region')}, {format_number(cb.get('g_per_kwh'))} "
                                   f"g/kWh, PUE {cb.get('pue')})"))
    if report.energy_per_item_j is not None:
        facts.append(("per item", f"{format_number(report.energy_per_item_j)} J"))
    if report.tags:
        facts.append(("tags", ", ".join(f"{k}={v}" for k, v in report.tags.items())))
    head = " · ".join(f"<b>{escape(k)}</b> {escape(str(v))}" for k, v in facts)
    parts = [f'<div class="energymeter-report"><div style="font-family: sans-serif">'
             f'energymeter run <code>{escape(report.name)}</code> · {head}</div>']
    rows = []
    for c in report.channels:
        ch = c.channel
        method = method_label(c)
        label = ch.id + (f" (in {ch.part_of})" if ch.is_subzone else "")
        rows.append([label, ch.kind + (" (not in total)" if ch.kind == "psys" else ""),
                     ch.device or "-", method, format_number(c.energy_j),
                     format_number(c.mean_power_w), format_number(c.peak_power_w)])
    parts.append(_table(["channel", "kind", "device", "method", "energy (J)", "mean (W)",
                         "peak (W)"], rows, {4, 5, 6}))
    if report.phases:
        channels = [c.channel for c in report.channels]
        shown = report.phases[:MAX_PHASES]
        phase_rows = [[p.name, p.parent or "-", format_number(p.start_s),
                       format_number(p.duration_s),
                       format_number(p.to_dict(channels)["energy_j"]["total"])] for p in shown]
        if len(report.phases) > len(shown):
            phase_rows.append([f"… {len(report.phases) - len(shown)} more", "", "", "", ""])
        parts.append(_table(["phase", "parent", "start (s)", "duration (s)", "energy (J)"],
                            phase_rows, {2, 3, 4}))
    if report.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
        parts.append(f'<details style="font-family: sans-serif; font-size: 12px"><summary>'
                     f'{len(report.warnings)} warning(s)</summary><ul>{items}</ul></details>')
    if report.path is not None:
        parts.append(f'<div style="font-family: sans-serif; font-size: 11px; color: #666">'
                     f'{escape(str(report.path))}</div>')
    parts.append("</div>")
    return "".join(parts)
