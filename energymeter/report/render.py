"""A report as text for people: the summary lines, the per-channel and per-phase tables, and
whole reports as ``table``, ``json``, ``csv``, ``markdown`` or ``latex`` (what ``energymeter
report`` prints). Nothing here prints."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from ..store.rundir import REPORT_NAME
from .bases import BASIS_LABEL, BASIS_MEANING, check_basis
from .tables import (
    FORMATS,
    LATEX_NOTE,
    check_label,
    check_width,
    column_align,
    format_ci,
    format_number,
    latex_comment,
    latex_escape,
    markdown_code,
    markdown_escape,
    render_csv,
    render_fitted,
    render_markdown,
    render_table,
)
from .values import LEDGER_COLUMNS, RUNNING

if TYPE_CHECKING:
    from .model import Report
    from .values import ChannelEnergy


CHANNEL_HEADERS = ("channel", "kind", "device", "method", "energy (J)", "mean (W)", "peak (W)")
PHASE_HEADERS = ("phase", "parent", "start (s)", "duration (s)", "energy (J)")
BASES_HEADERS = ("basis", "energy (J)", "of machine", "how")


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else :class:`ReportError`."""
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r} unknown; accepted: {', '.join(FORMATS)}")
    return fmt


def check_caption_options(fmt: str, caption: str | None, label: str | None) -> None:
    """:class:`ReportError` unless ``caption`` and ``label`` suit ``fmt``: a caption is for
    ``markdown`` and ``latex``, a label for ``latex`` (and must be a valid LaTeX label)."""
    if caption is not None and fmt not in ("markdown", "latex"):
        raise ReportError(f"a caption is for the markdown and latex formats, not {fmt}")
    if label is not None:
        if fmt != "latex":
            raise ReportError(f"a label is for the latex format, not {fmt}")
        check_label(label)


def _sig(value: float | None) -> str:
    """Four significant digits; ``?`` for a figure a report leaves out (null)."""
    return "?" if value is None else f"{value:.4g}"


def _percent(share: float) -> str:
    """A share as a percentage: ``27 %``, ``0.4 %`` (a small share is not rounded to 0)."""
    pct = share * 100
    return f"{pct:.0f} %" if pct >= 1 or pct == 0 else f"{pct:.1g} %"


def _window(from_s: float, until_s: float | None) -> str:
    """When a channel's energy was estimated: ``after 3.1 s``, ``from 3.1 to 3.4 s``."""
    if until_s is None:
        return f"after {from_s:.1f} s"
    digits = 1  # enough to tell the two apart (a gap of a few ms)
    while digits < 3 and round(from_s, digits) == round(until_s, digits):
        digits += 1
    return f"from {from_s:.{digits}f} to {until_s:.{digits}f} s"


def method_label(c: ChannelEnergy) -> str:
    """A channel's method for people: ``counter``, ``model (estimated)``, ``mixed (1.2 J
    estimated after 3.1 s)``."""
    ch, part = c.channel, c.estimated
    if ch.method == "mixed" and part is not None:
        return (f"mixed ({format_number(part.estimated_j, 2)} J estimated "
                f"{_window(part.from_s, part.until_s)})")
    return ch.method + (" (estimated)" if ch.method == "model" else "")


def _kind_flag(report: Report, kind: str) -> str:
    """What of ``kind``'s energy was estimated, for the summary's energy line: `` (estimated)``
    when all of it, `` (mixed: 1.2 J, 27 %, estimated after 3.1 s)`` when part of it."""
    channels = [c for c in report.channels
                if c.channel.kind == kind and not c.channel.is_subzone]
    parts = [c.estimated for c in channels if c.channel.method == "mixed" and c.estimated]
    if not parts:
        return " (estimated)" if "model" in report.methods(kind) else ""
    estimated_j = sum(c.estimated_j for c in channels)
    energy_j = sum(c.energy_j for c in channels)
    from_s = min(p.from_s for p in parts)
    untils = [p.until_s for p in parts]
    until_s = None if any(u is None for u in untils) else max(u for u in untils if u is not None)
    share = estimated_j / energy_j if energy_j > 0 else 1.0
    return (f" (mixed: {estimated_j:.1f} J, {_percent(share)}, estimated "
            f"{_window(from_s, until_s)})")


def channel_rows(report: Report) -> list[list[str]]:
    """Per-channel rows: channel, kind, device, method, energy (J), mean and peak power (W)."""
    rows = []
    for c in report.channels:
        ch = c.channel
        label = ch.id + (f" (in {ch.part_of})" if ch.is_subzone else "")
        method = method_label(c)
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
        flag = _kind_flag(report, kind)
        parts.append(f"{kind} {joules:.1f} J{flag}" + (" [not in total]"
                                                       if kind == "psys" else ""))
    total = report.total_energy_j
    lines = [f"energymeter: {report.name} {report.status} in {report.duration_s:.2f} s, "
             f"{total:.1f} J ({total / 3600:.4f} Wh), mean {report.mean_power_w:.1f} W",
             "  energy: " + (", ".join(parts) if parts else "no energy channel")]
    lines += bases_lines(report)
    if report.energy_per_item_j is not None:
        own = report.energy_on("attributed")
        lines.append(f"  per item: {_sig(report.energy_per_item_j)} J over {report.items:.6g} "
                     "items" + (f" (attributed {_sig(own.total_j / report.items)} J)"
                                if own is not None and report.items else ""))
    if report.carbon:
        cb = report.carbon
        lines.append(f"  carbon: {_sig(cb.get('emissions_g', 0))} gCO2e at "
                     f"{_sig(cb.get('g_per_kwh', 0))} g/kWh ({cb.get('region')}, "
                     f"{cb.get('basis', '')}, {cb.get('source', '')}), "
                     f"PUE {cb.get('pue')}")
    res = report.resources
    if res:
        # The best memory figure (PSS where forked workers share pages), else summed RSS.
        lines.append(f"  resources: cpu {res.get('cpu_time_s') or 0:.2f} s, "
                     + memory_text(res, command=report.command is not None)
                     + (f", peak gpu mem {res['peak_gpu_memory_bytes'] / 2**20:.0f} MiB"
                        if res.get("peak_gpu_memory_bytes") else ""))
    lines += job_lines(report)
    for c in report.channels:
        if c.attributed_energy_j is not None:
            lines.append(f"  MIG: {c.channel.id} measured {c.energy_j:.1f} J for the whole GPU; "
                         f"{c.attributed_energy_j:.1f} J ({c.channel.meta.get('mig_share'):.0%})"
                         " attributed to the visible slice(s) by capacity")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    if report.path:
        lines.append(_where(report, report.path))
    return "\n".join(lines)


def memory_text(resources: Mapping[str, Any], *, command: bool = False) -> str:
    """``peak memory 38 MiB (RSS)``; ``not sampled`` when the processes ended before the first
    gauge read (not 0 MiB); for a command (``energymeter run``), the kernel's high-water mark
    of its largest process beside it where that is higher (a spike between samples). The
    mark of a ``measure()`` block covers the whole process's life, so it is not shown."""
    memory = resources.get("peak_memory_bytes", resources.get("peak_rss_bytes")) or 0
    basis = str(resources.get("memory_basis", "rss")).upper()
    kernel = resources.get("max_rss_bytes_rusage") or 0
    if not memory:
        return "peak memory not sampled (the processes ended before the first sample)"
    text = f"peak memory {memory / 2**20:.0f} MiB ({basis})"
    if command and kernel > memory * 1.05:
        text += (f", kernel high-water mark {kernel / 2**20:.0f} MiB (RSS of the largest "
                 "process, catching spikes between samples)")
    return text


def bases_lines(report: Report) -> list[str]:
    """``  bases: machine 43.0 J, attributed 21.1 J (49 %), net 12.2 J (idle 30.8 ± 0.4 J)``:
    the run's total on every energy basis it has, where it has more than the machine's."""
    shown = []
    machine = report.total_energy_j
    for basis in ("attributed", "net"):
        energy = report.energy_on(basis)
        if energy is None:
            continue
        text = f"{basis} {_joules(energy.total_j)}"
        if basis == "attributed":
            notes = [f"{100 * energy.total_j / machine:.0f} %"] if machine > 0 else []
            notes += [f"{', '.join(energy.whole)} whole: no per-process figure"
                      ] if energy.whole else []
            text += f" ({'; '.join(notes)})" if notes else ""
        else:
            idle = (report.baseline or {}).get("idle_total_j")
            spread = sum(float(c.get("idle_std_j") or 0.0) for c in
                         ((report.baseline or {}).get("channels") or {}).values())
            if isinstance(idle, (int, float)):
                mean, half = format_ci(idle, spread) if spread > 0 else (f"{idle:.1f}", None)
                text += (f" (idle {mean}" + (f" ± {half}" if half else "")
                         + f" J over {report.duration_s:.2f} s)")
        shown.append(text)
    if not shown:
        return []
    return [f"  bases: machine {_joules(machine)}, " + ", ".join(shown)]


def _joules(value: float) -> str:
    """``43.0 J``, ``0.263 J``: one decimal from 10 J up, three significant digits below."""
    return f"{value:.1f} J" if abs(value) >= 10 else f"{value:.3g} J"


def job_lines(report: Report) -> list[str]:
    """The job of a run under a launcher (job, node, rank, what it measured), or of a merged
    job report its nodes, one line each, and the nodes it misses."""
    job = report.job
    if not job:
        return []
    if not job.get("merged"):
        return [f"  job: {job.get('id')} ({job.get('launcher') or 'no launcher'}), node "
                f"{job.get('node')}, rank {job.get('rank')} of {job.get('world_size')}, "
                f"measures: {job.get('measures')} (ranks={job.get('ranks_mode')})"]
    nodes = [n for n in job.get("nodes", []) if isinstance(n, dict)]
    lines = [f"  job: {job.get('id')} ({job.get('launcher') or '?'}), {len(nodes)} node(s), "
             f"{job.get('runs')} run(s), span {format_number(job.get('span_s'), 3)} s"]
    for n in nodes:
        energy = n.get("energy_j") or {}
        kinds = ", ".join(f"{k} {format_number(v, 1)} J"
                          for k, v in (energy.get("by_kind") or {}).items())
        measured = (f"{format_number(energy.get('total'), 1)} J ({kinds})" if n.get("measured_by")
                    else "NOT MEASURED")
        lines.append(f"    node {n.get('node')}: ranks {n.get('ranks')}, {measured}")
    if job.get("missing_nodes"):
        lines.append(f"    missing: {', '.join(str(m) for m in job['missing_nodes'])}")
    return lines


def _where(report: Report, run_dir: Path) -> str:
    """Where the run is: its ``report.json`` only if that exists; else (rebuilt, or a disk
    that refused it) its directory and what it holds, or that nothing of it is on disk."""
    saved = run_dir / REPORT_NAME
    if saved.is_file():
        return f"  report: {saved}"
    if report.overhead.get("rebuilt_from_samples"):
        if report.status == RUNNING:
            return (f"  run: {run_dir} (rebuilt from its samples so far; it writes "
                    f"{REPORT_NAME} when it ends)")
        return (f"  run: {run_dir} (rebuilt from its samples; it has no {REPORT_NAME}: "
                f"`energymeter report --save` writes one)")
    if run_dir.is_dir():
        return (f"  run: {run_dir} (no {REPORT_NAME}: its samples.csv and events.jsonl as far "
                "as they were written; `energymeter report` on it rebuilds the report)")
    return f"  nothing was saved (the run directory {run_dir} is gone)"


# -- paper tables (markdown, latex) -------------------------------------------------------------
#: The most phases and logs a Markdown or LaTeX table shows (a float cannot span pages; the
#: json and csv forms keep every entry), and the most logged metrics (columns) shown.
MAX_PHASE_ROWS = 50
MAX_LOG_ROWS = 30
MAX_LOG_METRICS = 8

_CHANNEL_ALIGN = ("l", "l", "l", "l", "r", "r", "r")
_PHASE_ALIGN = ("l", "l", "r", "r", "r")
ESTIMATED_NOTE = ("est.: includes energy estimated by a model (CPU utilisation × TDP), not "
                  "measured")


def estimated_in_total(report: Report) -> bool:
    """Whether the total of ``report`` includes energy estimated by a model (a channel whose
    method is ``model``, or ``mixed``: estimated in part)."""
    return any(c.channel.method in ("model", "mixed") and c.channel.in_total
               for c in report.channels)


#: Tags that tell runs apart without saying what they are (a sweep's bookkeeping).
_LABEL_SKIPPED_TAGS = frozenset({"study", "variant", "sweep_axes"})


def _tag_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else f"{value}"


def run_labels(reports: Sequence[Report], *, warmup: bool = True) -> list[str]:
    """A label per run that tells it from the others shown: its name, the tags whose values
    differ between the runs (``t1 method=dense``; a run without one shows ``method=-``), and
    its short id only where that still leaves two alike; ``warm-up`` for one (``warmup``)."""
    keys = sorted({k for r in reports for k in r.tags} - _LABEL_SKIPPED_TAGS)
    varying = [k for k in keys
               if len({_tag_value(r.tags[k]) if k in r.tags else None for r in reports}) > 1]
    base = []
    for r in reports:
        parts = [r.name]
        parts += [f"{k}={_tag_value(r.tags[k]) if k in r.tags else '-'}" for k in varying]
        base.append(" ".join(parts))
    labels = []
    for r, text in zip(reports, base, strict=True):
        notes = [r.run_id[:8]] if base.count(text) > 1 else []
        notes += ["warm-up"] if warmup and r.warmup else []
        labels.append(text + (f" ({', '.join(notes)})" if notes else ""))
    return labels



def runs_table(reports: Sequence[Report], basis: str = "machine"
               ) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows and alignment of the runs table: one row per run with its duration,
    energy (``est.`` where a model estimated part of it), mean power, and where any run has
    them its status (when not all completed), emissions, items and energy per item, and the
    idle energy over the run and the energy net of it (runs with an idle baseline). The
    energy, power, emissions and per-item figures are on ``basis`` (the header says which
    where it is not the machine's; a run without it shows its machine figures marked
    ``(machine)``)."""
    status = any(r.status != "completed" for r in reports)
    carbon = any(r.emissions_g is not None for r in reports)
    items = any(r.items is not None for r in reports)
    idle = any(r.baseline for r in reports)
    on = "" if basis == "machine" else f", {BASIS_LABEL[basis]}"
    headers = ["run", *(["status"] if status else []), "duration (s)", f"energy{on} (J)",
               f"mean power{on} (W)", *([f"emissions{on} (gCO2e)"] if carbon else []),
               *(["items", f"energy per item{on} (J)"] if items else []),
               *(["idle (J)", "net of idle (J)"] if idle and basis != "net" else [])]
    rows = []
    for r, label in zip(reports, run_labels(reports), strict=True):
        energy = r.energy_on(basis) or r.energy_on("machine")
        marks = [m for m in ("est." if estimated_in_total(r) else "",
                             "machine" if energy.basis != basis else "") if m]
        total = energy.total_j
        row = [label, *([r.status] if status else []), format_number(r.duration_s),
               format_number(total) + (f" ({', '.join(marks)})" if marks else ""),
               format_number(total / r.duration_s if r.duration_s > 0 else 0.0)]
        if carbon:
            machine = r.total_energy_j
            row.append("-" if r.emissions_g is None else _sig(
                r.emissions_g * (total / machine if machine > 0 else 1.0)))
        if items:
            row += ["-" if r.items is None else f"{r.items:.6g}",
                    "-" if not r.items else _sig(total / r.items)]
        if idle and basis != "net":
            b = r.baseline or {}
            row += ["-" if b.get("idle_total_j") is None else format_number(b["idle_total_j"]),
                    "-" if b.get("net_total_j") is None else format_number(b["net_total_j"])]
        rows.append(row)
    return headers, rows, ["l", *(["l"] if status else []), *["r"] * (len(headers) - 1
                                                                      - status)]


def bases_rows(report: Report) -> list[list[str]]:
    """One row per energy basis ``report`` has: basis, energy (J), share of the machine's,
    how it was obtained (and the idle energy subtracted, for net)."""
    machine = report.total_energy_j
    rows = []
    for basis in report.energy_bases:
        energy = report.energy_on(basis)
        how = energy.how
        if energy.whole:
            how += f"; {', '.join(energy.whole)} whole" + (
                ": no per-process figure" if basis == "attributed" else ": no baseline")
        if basis == "net" and report.baseline:
            b = report.baseline
            how = (f"idle {format_number(b.get('idle_total_j'), 2)} J subtracted "
                   f"({b.get('source') or 'measured'} baseline"
                   + (", taken under load" if b.get("under_load") else "") + ")")
        rows.append([basis, format_number(energy.total_j, 2),
                     f"{100 * energy.total_j / machine:.0f} %" if machine > 0 else "-", how])
    return rows


def _total_row(report: Report) -> list[str]:
    return ["total", "", "", "", format_number(report.total_energy_j, 2),
            format_number(report.mean_power_w, 1), ""]


def _phases(report: Report) -> tuple[list[list[str]], str | None]:
    rows = phase_rows(report)
    notes = []
    if len(rows) > MAX_PHASE_ROWS:
        notes.append(f"the first {MAX_PHASE_ROWS} of {len(rows)} phases, json and csv have all")
        rows = rows[:MAX_PHASE_ROWS]
    short = sum(1 for p in report.phases[:MAX_PHASE_ROWS] if p.below_resolution)
    if short:
        notes.append(f"{short} shorter than the energy counter's update period, so their "
                     "energy is uncertain")
    return rows, "; ".join(notes) or None


def _metric_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _sig(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:39] + "…"


def log_table(report: Report) -> tuple[list[str], list[list[str]], list[str], str | None]:
    """Headers, rows, alignment and a note (what was left out, or None) of the logs table:
    per ``log()`` its time (s), cumulative energy (J) and metrics; at most
    :data:`MAX_LOG_ROWS` logs (evenly spaced, the first and last kept) and
    :data:`MAX_LOG_METRICS` metrics."""
    logs = list(report.logs)
    keys: list[str] = []
    for entry in logs:
        keys += [k for k in entry.get("metrics", {}) if k not in keys]
    notes = []
    if len(logs) > MAX_LOG_ROWS:
        step = (len(logs) - 1) / (MAX_LOG_ROWS - 1)
        logs = [logs[round(i * step)] for i in range(MAX_LOG_ROWS)]
        notes.append(f"{MAX_LOG_ROWS} of {len(report.logs)} logs evenly spaced, json and csv "
                     "have all")
    if len(keys) > MAX_LOG_METRICS:
        notes.append(f"{len(keys) - MAX_LOG_METRICS} more metrics not shown: "
                     + ", ".join(keys[MAX_LOG_METRICS:]))
        keys = keys[:MAX_LOG_METRICS]
    headers = ["time (s)", "energy (J)", *keys]
    rows = [[format_number(e.get("t_s")), format_number(e.get("energy_j")),
             *[_metric_cell(e.get("metrics", {}).get(k)) for k in keys]] for e in logs]
    align = ["r", "r", *column_align([["", *r[2:]] for r in rows], len(keys) + 1)[1:]]
    return headers, rows, align, "; ".join(notes) or None


def carbon_text(report: Report) -> str | None:
    """How the emissions of ``report`` were computed, in one sentence (None without carbon)."""
    cb = report.carbon
    if not cb:
        return None
    where = str(cb.get("region"))
    if cb.get("name") and cb.get("name") != cb.get("region"):
        where = f"{cb.get('name')}, {where}"
    detail = ", ".join(str(x) for x in (cb.get("basis") and f"{cb.get('basis')} basis",
                                        cb.get("source"), cb.get("year")) if x)
    live = ""
    if cb.get("provider") not in (None, "table"):
        live = f"; live intensity from {cb.get('provider')}"
    return (f"Emissions {_sig(cb.get('emissions_g'))} gCO2e = energy × PUE {cb.get('pue')} × "
            f"{_sig(cb.get('g_per_kwh'))} gCO2e/kWh ({where}{live}"
            + (f"; {detail}" if detail else "") + ").")


def markdown(report: Report, *, caption: str | None = None, heading: bool = True) -> str:
    """``report`` in Markdown: a heading (``caption``, else the run's name and status), its
    duration, energy (and per item), the channel table with a total row, how emissions were
    computed, the phase and log tables where it has them, and its warnings. Text columns are
    left-aligned, numbers right-aligned."""
    total = report.total_energy_j
    lines = []
    if heading:
        title = (markdown_escape(caption) if caption else
                 f"energymeter run {markdown_code(report.name)} ({report.status})")
        lines += [f"### {title}", ""]
    per_item = ""
    if report.energy_per_item_j is not None:
        per_item = (f" Energy per item {_sig(report.energy_per_item_j)} J "
                    f"({report.items:.6g} items).")
    lines += [f"Duration {report.duration_s:.2f} s, total energy {total:.2f} J "
              f"({total / 3600:.4f} Wh), mean power {report.mean_power_w:.1f} W." + per_item,
              "", render_markdown(CHANNEL_HEADERS, [*channel_rows(report), _total_row(report)],
                                  _CHANNEL_ALIGN)]
    if len(report.energy_bases) > 1:
        lines += ["", "Energy bases:", "", render_markdown(BASES_HEADERS, bases_rows(report),
                                                          ("l", "r", "r", "l"))]
    if estimated_in_total(report):
        lines += ["", "Channels with method `model (estimated)`: energy estimated from CPU "
                      "utilisation × TDP, not measured."]
    if report.carbon:
        lines += ["", markdown_escape(carbon_text(report) or "")]
    if report.phases:
        rows, note = _phases(report)
        lines += ["", "Phases" + (f" ({markdown_escape(note)})" if note else "") + ":", "",
                  render_markdown(PHASE_HEADERS, rows, _PHASE_ALIGN)]
    if report.logs:
        headers, rows, align, note = log_table(report)
        lines += ["", "Logged metrics" + (f" ({markdown_escape(note)})" if note else "")
                  + ":", "", render_markdown(headers, rows, align)]
    if report.warnings:
        lines += ["", "Warnings:", *[f"- {markdown_escape(w)}" for w in report.warnings]]
    return "\n".join(lines) + "\n"


def _tex_name(report: Report) -> str:
    return latex_escape(report.name)


def _caption(default: str, caption: str | None, part: str | None = None) -> str:
    """The caption of a table: ``default`` (LaTeX), or the user's ``caption`` (escaped), with
    ``part`` (LaTeX) after it for the tables after the first."""
    if caption is None:
        return default
    return latex_escape(caption) + (f": {part}" if part else "")


def _labels(reports: Sequence[Report], label: str | None) -> str:
    """The label of the runs table, the stem of the others' (``-channels``, ``-bases``,
    ``-phases``, ``-logs``): ``label``, else ``tab:energymeter-<run id>`` for one run and
    ``tab:energymeter-runs`` for several."""
    if label is not None:
        return check_label(label)
    if len(reports) == 1:
        return f"tab:energymeter-{_label_part(reports[0].run_id)}"
    return "tab:energymeter-runs"


def _label_part(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", run_id)[:8] or "run"


def _carbon_caption(reports: Sequence[Report]) -> str:
    keys = {_carbon_key(r) for r in reports if r.carbon}
    if not keys:
        return ""
    if len(keys) > 1:
        return " Carbon settings differ between runs (region, intensity or PUE)."
    cb = next(r.carbon for r in reports if r.carbon)
    assert cb is not None
    where = str(cb.get("region"))
    detail = ", ".join(str(x) for x in (cb.get("basis") and f"{cb.get('basis')} basis",
                                        cb.get("source"), cb.get("year")) if x)
    return (f" Emissions: energy × PUE {cb.get('pue')} × {_sig(cb.get('g_per_kwh'))} "
            f"gCO2e/kWh ({where}" + (f"; {detail}" if detail else "") + ").")


def _carbon_key(report: Report) -> tuple[Any, ...]:
    cb = report.carbon or {}
    return tuple(str(cb.get(k)) for k in ("region", "g_per_kwh", "pue", "basis", "source",
                                          "year"))


def _tex(text: str) -> str:
    return latex_escape(text).replace("CO2e", r"CO\textsubscript{2}e")


#: How the runs table of the latex format marks a figure: (mark, what it means).
_EST_MARK = ("*", "includes energy estimated by a model (CPU utilisation × TDP), not measured")
_MACHINE_MARK = ("†", "the machine's energy: the run has none on the basis asked")


def _latex_runs(reports: Sequence[Report], caption: str | None, label: str,
                basis: str = "machine", width: str = "column") -> str:
    headers, rows, align = runs_table(reports, basis)
    marks = {"est.": _EST_MARK[0], "machine": _MACHINE_MARK[0]}
    used: set[str] = set()
    for row in rows:  # "310.0 (est., machine)" -> "310.0*†": narrow, explained below
        for i, cell in enumerate(row):
            m = re.fullmatch(r"(.*) \(((?:est\.|machine)(?:, (?:est\.|machine))?)\)", cell)
            if i and m:
                found = m.group(2).split(", ")
                used.update(found)
                row[i] = m.group(1) + "".join(marks[f] for f in found)
    what = (f"run {_tex_name(reports[0])}" if len(reports) == 1
            else f"{len(reports)} runs")
    default = f"Energy, duration and emissions of {what}, measured with energymeter."
    if basis != "machine":
        default += _tex(f" Energy basis: {basis}, {BASIS_MEANING[basis]}.")
    default += _tex(_carbon_caption(reports))
    default += " Time: duration; Power: mean power" + (
        "; CO2e: emissions" if any(h.startswith("emissions") for h in headers) else "") + (
        "; Per item: energy per item" if "items" in headers else "") + "."
    default = default.replace("CO2e", r"CO\textsubscript{2}e")
    for key, (mark, meaning) in (("est.", _EST_MARK), ("machine", _MACHINE_MARK)):
        if key in used:
            default += " " + _tex(f"{mark}: {meaning}.")
    return render_fitted([_short_header(h) for h in headers], rows, align, raw_caption=True,
                         label=label, caption=_caption(default, caption), width=width)


#: Shorter headers of the latex runs table (the caption says what they are).
_SHORT_HEADERS = (("duration (s)", "Time (s)"), ("mean power", "Power"),
                  ("energy per item", "Per item"), ("net of idle", "Net of idle"))


def _short_header(header: str) -> str:
    m = re.fullmatch(r"emissions(.*) \(gCO2e\)", header)
    if m:
        return f"CO2e{m.group(1)} (g)"
    for long, short in _SHORT_HEADERS:
        if header.startswith(long):
            return short + header[len(long):]
    return header[:1].upper() + header[1:]


def _capitalised(headers: Sequence[str]) -> list[str]:
    return [h[:1].upper() + h[1:] for h in headers]


def _devices(reports: Sequence[Report]) -> dict[str, str] | None:
    """Each channel's device where every run gives a channel id the same one (for the
    caption, a narrower table), else None (a device column)."""
    devices: dict[str, str] = {}
    for r in reports:
        for c in r.channels:
            if devices.setdefault(c.channel.id, c.channel.device or "-") != (c.channel.device
                                                                            or "-"):
                return None
    return devices


def _grouped_rows(parts: Sequence[tuple[str, list[list[str]]]], columns: int
                  ) -> tuple[list[list[str]], list[int]]:
    """The rows of several runs in one table: with more than one run, each run's rows under
    a row holding its label, a rule before it; the indices of the rows a rule precedes."""
    if len(parts) == 1:
        return parts[0][1], []
    rows: list[list[str]] = []
    rules = []
    for label, block in parts:
        rules.append(len(rows))
        rows.append([label, *[""] * (columns - 1)])
        rows += block
    return rows, rules


def _latex_channels(reports: Sequence[Report], labels: Sequence[str], caption: str | None,
                    stem: str, width: str) -> str:
    """One table of every run's channels: for one run a row per channel (method, energy,
    mean and peak power) and the total; for several, a row per run and a column per
    channel's energy (:func:`_latex_channel_columns`)."""
    if len(reports) > 1:
        return _latex_channel_columns(reports, labels, caption, stem, width)
    devices = _devices(reports)
    headers = ["Channel", *(["Device"] if devices is None else []), "Method", "Energy (J)",
               "Mean (W)", "Peak (W)"]
    parts = []
    for r, label in zip(reports, labels, strict=True):
        block = []
        for c in r.channels:
            ch = c.channel
            name = ch.id + (f" (in {ch.part_of})" if ch.is_subzone else "") + (
                " (not in total)" if ch.kind == "psys" else "")
            block.append([name, *([ch.device or "-"] if devices is None else []),
                          method_label(c), format_number(c.energy_j),
                          format_number(c.mean_power_w), format_number(c.peak_power_w)])
        block.append(["total", *([""] if devices is None else []), "",
                      format_number(r.total_energy_j), format_number(r.mean_power_w), ""])
        parts.append((label, block))
    rows, rules = _grouped_rows(parts, len(headers))
    totals = [i for i, row in enumerate(rows) if row[0] == "total"]
    whose = f"run {_tex_name(reports[0])}"
    text = f"Energy and power per channel of {whose}, with the total."
    if devices:
        text += _tex(" Devices: " + "; ".join(f"{k}: {v}" for k, v in devices.items()) + ".")
    if any(estimated_in_total(r) for r in reports):
        text += (" Method \\emph{model (estimated)}: estimated from CPU utilisation "
                 r"$\times$ TDP, not measured.")
    return render_fitted(headers, rows, ["l"] * (len(headers) - 3) + ["r"] * 3,
                         rules_before=sorted({*rules, *totals}), raw_caption=True,
                         label=f"{stem}-channels", width=width,
                         caption=_caption(text, caption, f"energy per channel of {whose}"))


def _latex_channel_columns(reports: Sequence[Report], labels: Sequence[str],
                           caption: str | None, stem: str, width: str) -> str:
    """Several runs' channels in one table: a row per run, a column per channel (its
    energy, ``*`` where a model estimated it) and the total; devices, methods and channels
    left out of the total in the caption."""
    ids: list[str] = []
    notes: dict[str, set[str]] = {}
    devices = _devices(reports) or {}
    estimated = False
    for r in reports:
        for c in r.channels:
            ch = c.channel
            if ch.id not in ids:
                ids.append(ch.id)
            notes.setdefault(ch.id, set()).add(method_label(c).split(" (")[0])
    rows = []
    for r, label in zip(reports, labels, strict=True):
        by_id = {c.channel.id: c for c in r.channels}
        row = [label]
        for cid in ids:
            c = by_id.get(cid)
            mark = "*" if c is not None and c.channel.method in ("model", "mixed") else ""
            estimated = estimated or bool(mark)
            row.append("-" if c is None else format_number(c.energy_j) + mark)
        rows.append([*row, format_number(r.total_energy_j)])
    channels = {c.channel.id: c.channel for r in reports for c in r.channels}
    described = []
    for cid in ids:
        ch = channels[cid]
        what = [devices[cid]] if devices.get(cid, "-") != "-" else []
        what.append("/".join(sorted(notes[cid])))
        if ch.is_subzone:
            what.append(f"part of {ch.part_of}, not in the total")
        elif not ch.in_total:
            what.append("not in the total")
        described.append(f"{cid}: {', '.join(what)}")
    text = ("Energy per channel of each run, and the total. " + _tex("; ".join(described))
            + ".")
    if estimated:
        text += (" *: estimated (in part, for method mixed) from CPU utilisation "
                 r"$\times$ TDP, not measured.")
    return render_fitted(["Run", *[f"{cid} (J)" for cid in ids], "Total (J)"], rows,
                         ["l"] + ["r"] * (len(ids) + 1), raw_caption=True,
                         label=f"{stem}-channels", width=width,
                         caption=_caption(text, caption, "energy per channel of each run"))


def _latex_bases(reports: Sequence[Report], labels: Sequence[str], caption: str | None,
                 stem: str, width: str) -> str | None:
    chosen = [(r, label) for r, label in zip(reports, labels, strict=True)
              if len(r.energy_bases) > 1]
    if not chosen:
        return None
    rows, rules = _grouped_rows([(label, bases_rows(r)) for r, label in chosen], 4)
    whose = f"run {_tex_name(chosen[0][0])}" if len(reports) == 1 else "each run"
    return render_fitted(["Basis", "Energy (J)", "Of machine", "How"], rows,
                         ("l", "r", "r", "l"), rules_before=rules, raw_caption=True,
                         label=f"{stem}-bases", width=width, caption=_caption(
                             f"Energy of {whose} on each basis: the whole machine's, the "
                             "run's own share (attributed) and net of the idle baseline, "
                             "where measured.", caption, f"energy bases of {whose}"))


def _latex_phases(reports: Sequence[Report], labels: Sequence[str], caption: str | None,
                  stem: str, width: str) -> str | None:
    chosen = [(r, label) for r, label in zip(reports, labels, strict=True) if r.phases]
    if not chosen:
        return None
    each = max(1, MAX_PHASE_ROWS // len(chosen))  # one float: the rows shared out
    parts, notes = [], []
    short = 0
    capped = []
    for r, label in chosen:
        rows = phase_rows(r)
        if len(rows) > each:
            capped.append(f"{label}: the first {each} of {len(r.phases)} phases")
            rows = rows[:each]
        short += sum(1 for p in r.phases[:each] if p.below_resolution)
        parts.append((label, rows))
    if len(capped) > 2:  # one clause, not one per run: the caption stays short
        most = max(len(r.phases) for r, _ in chosen)
        capped = [f"the first {each} phases of each run ({len(capped)} runs have more, up "
                  f"to {most})"]
    if capped:
        notes += [*capped, "json and csv have all"]
    if short:
        notes.append(f"{short} shorter than the energy counter's update period, so their "
                     "energy is uncertain")
    rows, rules = _grouped_rows(parts, len(PHASE_HEADERS))
    extra = f"; {_tex('; '.join(notes))}" if notes else ""
    whose = f"run {_tex_name(chosen[0][0])}" if len(reports) == 1 else "the runs"
    return render_fitted(_capitalised(PHASE_HEADERS), rows, _PHASE_ALIGN, rules_before=rules,
                         raw_caption=True, label=f"{stem}-phases", width=width,
                         caption=_caption(f"Phases of {whose}: start from the run's start, "
                                          f"duration and energy{extra}.", caption,
                                          f"phases of {whose}{extra}"))


def _latex_logs(reports: Sequence[Report], labels: Sequence[str], caption: str | None,
                stem: str, width: str) -> str | None:
    chosen = [(r, label) for r, label in zip(reports, labels, strict=True) if r.logs]
    if not chosen:
        return None
    each = max(2, MAX_LOG_ROWS // len(chosen))  # one float: the rows shared out
    keys: list[str] = []
    for r, _ in chosen:
        for entry in r.logs:
            keys += [k for k in entry.get("metrics", {}) if k not in keys]
    notes = []
    if len(keys) > MAX_LOG_METRICS:
        notes.append(f"{len(keys) - MAX_LOG_METRICS} more metrics not shown: "
                     + ", ".join(keys[MAX_LOG_METRICS:]))
        keys = keys[:MAX_LOG_METRICS]
    parts = []
    spaced = []
    for r, label in chosen:
        logs = list(r.logs)
        if len(logs) > each:
            step = (len(logs) - 1) / (each - 1)
            logs = [logs[round(i * step)] for i in range(each)]
            spaced.append(f"{label}: {each} of {len(r.logs)} logs evenly spaced"
                          if len(chosen) > 1 else f"{each} of {len(r.logs)} logs evenly spaced")
        parts.append((label, [[format_number(e.get("t_s")), format_number(e.get("energy_j")),
                               *[_metric_cell(e.get("metrics", {}).get(k)) for k in keys]]
                              for e in logs]))
    if len(spaced) > 2:  # one clause, not one per run: the caption stays short
        most = max(len(r.logs) for r, _ in chosen)
        spaced = [f"{each} logs of each run evenly spaced ({len(spaced)} runs have more, up "
                  f"to {most})"]
    if spaced:
        notes += [*spaced, "json and csv have all"]
    headers = ["Time (s)", "Energy (J)", *keys]
    rows, rules = _grouped_rows(parts, len(headers))
    data = [r for i, r in enumerate(rows) if i not in rules]
    align = ["l" if len(chosen) > 1 else "r", "r",
             *column_align([["", *r[2:]] for r in data], len(keys) + 1)[1:]]
    extra = f"; {_tex('; '.join(notes))}" if notes else ""
    whose = f"run {_tex_name(chosen[0][0])}" if len(reports) == 1 else "the runs"
    return render_fitted(headers, rows, align, rules_before=rules, raw_caption=True,
                         label=f"{stem}-logs", width=width, text_columns=[],
                         caption=_caption(f"Metrics logged during {whose}, with the time and "
                                          f"the energy used until each log{extra}.", caption,
                                          f"metrics logged during {whose}{extra}"))


def latex(report: Report, *, caption: str | None = None, label: str | None = None,
          width: str = "column") -> str:
    """``report`` as LaTeX tables to ``\\input`` into a paper (booktabs, each a ``table``
    float with a caption and a label): the run's figures, energy per channel with a total
    row, and its phases and logs where it has them; its warnings as comments. ``caption``
    replaces the default captions (escaped; the later tables add what they show), ``label``
    the default label ``tab:energymeter-<run id>`` (the later tables add ``-channels``,
    ``-phases``, ``-logs``); each fits ``width`` (``column`` or ``page``)."""
    return format_reports([report], "latex", caption=caption, label=label, width=width)


def _unique(reports: Sequence[Report]) -> list[Report]:
    seen: set[str] = set()
    out = []
    for r in reports:
        if r.run_id not in seen:
            seen.add(r.run_id)
            out.append(r)
    return out


def latex_reports(reports: Sequence[Report], *, caption: str | None = None,
                  label: str | None = None, basis: str = "machine",
                  width: str = "column") -> str:
    """The LaTeX of :func:`latex` for one or more runs: one float per kind of table, however
    many runs: the runs table (a row per run, on ``basis``; label ``label``, default
    ``tab:energymeter-<run id>`` for one run, ``tab:energymeter-runs`` for several), the
    channels of every run (``<label>-channels``; with several runs each run's label heads its
    rows), their energy bases (``-bases``, runs that have more than the machine's), phases
    (``-phases``) and logged metrics (``-logs``) where runs have them; the warnings as
    comments. Each table fits ``width`` (``column``: one column of a two-column paper,
    ``page``: ``table*``). A run given twice shows once."""
    check_width(width)
    reports = _unique(reports)
    base = _labels(reports, label)
    labels = run_labels(reports)
    parts = [LATEX_NOTE, _latex_runs(reports, caption, base, basis, width),
             _latex_channels(reports, labels, caption, base, width)]
    for table_of in (_latex_bases, _latex_phases, _latex_logs):
        text = table_of(reports, labels, caption, base, width)
        if text is not None:
            parts.append(text)
    for r in reports:
        if r.warnings:
            parts.append(latex_comment("\n".join(f"warning ({r.name}): {w}"
                                                 for w in r.warnings)))
    return "\n\n".join(parts) + "\n"


def markdown_reports(reports: Sequence[Report], *, caption: str | None = None,
                     basis: str = "machine") -> str:
    """:func:`markdown` of each report; several are preceded by a runs table (a row per run,
    on ``basis``) under ``caption`` (or ``energymeter runs``)."""
    if len(reports) == 1:
        return markdown(reports[0], caption=caption)
    headers, rows, align = runs_table(reports, basis)
    head = [f"## {markdown_escape(caption) if caption else 'energymeter runs'}", "",
            render_markdown(headers, rows, align)]
    if any(estimated_in_total(r) for r in reports):
        head += ["", markdown_escape(ESTIMATED_NOTE[0].upper() + ESTIMATED_NOTE[1:] + ".")]
    return "\n".join(head) + "\n\n" + "\n".join(markdown(r) for r in reports)


def table(report: Report) -> str:
    """The human summary of ``report`` followed by its per-channel (and phase) tables."""
    parts = [summary(report), "",
             render_table(CHANNEL_HEADERS, channel_rows(report),
                          ["l", "l", "l", "l", "r", "r", "r"])]
    if report.phases:
        parts += ["", render_table(PHASE_HEADERS, phase_rows(report),
                                   ["l", "l", "r", "r", "r"])]
    return "\n".join(parts) + "\n"


def format_reports(reports: Sequence[Report], fmt: str = "table", *,
                   caption: str | None = None, label: str | None = None,
                   basis: str = "machine", width: str = "column") -> str:
    """``reports`` as text: ``table`` (summary and channel table of each), ``json`` (one report,
    or a list for several), ``csv`` (the ledger columns, one row per run), ``markdown``
    (:func:`markdown_reports`) or ``latex`` (:func:`latex_reports`: booktabs tables for a
    paper). ``caption`` and ``label`` are for ``markdown`` (caption only) and ``latex``;
    other formats refuse them (:class:`ReportError`). ``basis``: the energy basis of the runs
    table (markdown, latex) and of the csv rows' energy figures (with an ``energy_basis``
    column; a run without it gives its machine figures). ``width``: what the latex tables fit
    (``column`` of a two-column paper, or ``page``)."""
    check_format(fmt)
    check_width(width)
    check_caption_options(fmt, caption, label)
    check_basis(basis)
    if fmt == "csv" and basis != "machine":
        return render_csv([*LEDGER_COLUMNS, "energy_basis"],
                          (r.row_on(basis, fallback=True) for r in reports))
    if fmt == "json":
        if len(reports) == 1:
            return reports[0].to_json() + "\n"
        return json.dumps([r.to_dict() for r in reports], indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return render_csv(LEDGER_COLUMNS, (r.to_row() for r in reports))
    if fmt == "markdown":
        return markdown_reports(reports, caption=caption, basis=basis)
    if fmt == "latex":
        return latex_reports(reports, caption=caption, label=label, basis=basis, width=width)
    return "\n".join(table(r) for r in reports)
