"""Read, show and compare runs: what ``energymeter report`` and ``energymeter compare`` print.

:func:`compare` groups reports by name and returns plain data (a list of dicts, one per group:
mean, standard deviation and ratio to the first group of every figure); :func:`format_comparison`
and :func:`format_reports` turn reports or comparisons into ``table``, ``json``, ``csv``,
``markdown`` or ``latex`` text. Nothing here prints, and pandas is never needed.

>>> from energymeter.compare import compare, load_reports
>>> rows = compare(load_reports(["runs/"]))        # doctest: +SKIP
>>> rows[1]["energy_total_j_ratio"]                 # doctest: +SKIP
0.82
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ReportError
from .tables import (
    CHANNEL_HEADERS,
    PHASE_HEADERS,
    channel_rows,
    decimals_for,
    format_number,
    phase_rows,
    render_latex,
    render_markdown,
    render_table,
)

if TYPE_CHECKING:
    from .report import Report

FORMATS = ("table", "json", "csv", "markdown", "latex")

#: Energy kinds in the order they are shown (``psys`` is never part of the total).
KIND_ORDER = ("cpu", "dram", "gpu", "soc", "psys")

_MIB = 2**20

# metric key -> (label, unit shown, divisor from SI)
_FIXED_METRICS: tuple[tuple[str, str, str, float], ...] = (
    ("duration_s", "duration", "s", 1.0),
    ("mean_power_w", "mean power", "W", 1.0),
    ("emissions_g", "emissions", "gCO2e", 1.0),
    ("peak_rss_bytes", "peak RSS", "MiB", _MIB),
    ("peak_gpu_memory_bytes", "peak GPU memory", "MiB", _MIB),
)


# -- loading -----------------------------------------------------------------------------------
def _is_run_dir(path: Path) -> bool:
    return (path / "report.json").is_file() or (path / "events.jsonl").is_file()


def _expand_one(raw: str | Path) -> tuple[list[Path], bool]:
    """The runs ``raw`` names, and whether it was a folder of runs."""
    path = Path(raw)
    if path.is_dir() and not _is_run_dir(path):
        runs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
        if not runs:
            raise ReportError(f"{path} is neither a run directory (it has no report.json or "
                              "events.jsonl) nor a folder of runs; give a run directory, "
                              "its report.json or the out folder of runs")
        return runs, True
    return [path], False


def expand_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories and ``report.json`` files named by ``paths``; a directory holding run
    directories (an ``out`` folder) stands for all of them."""
    return [run for raw in paths for run in _expand_one(raw)[0]]


def _load_one(path: Path) -> Report:
    from .report import Report

    if not path.exists():
        raise ReportError(f"{path} does not exist; give a run directory, its report.json "
                          "or a folder of runs")
    try:
        return Report.load(path)
    except ReportError as exc:
        message = str(exc)
        raise ReportError(message if str(path) in message else f"{path}: {message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None


def load_reports(paths: Iterable[str | Path]) -> list[Report]:
    """:meth:`Report.load` every run named by ``paths`` (see :func:`expand_runs`), in the order
    given; the runs of a folder come in the order they started. A run killed without writing
    ``report.json`` is rebuilt from its samples and marked ``interrupted``.

    Raises :class:`~energymeter.errors.ReportError` naming the path that could not be read."""
    paths = list(paths)
    if not paths:
        raise ReportError("no run given; pass run directories, report.json files or an out "
                          "folder (default energymeter-runs/)")
    reports: list[Report] = []
    for raw in paths:
        runs, folder = _expand_one(raw)
        block = [_load_one(run) for run in runs]
        # Directory names have one-second resolution: order a folder's runs by their start.
        reports += sorted(block, key=lambda r: r.started_at) if folder else block
    return reports


def _render(fmt: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if fmt == "markdown":
        return render_markdown(headers, rows)
    if fmt == "latex":
        return render_latex(headers, rows)
    return render_table(headers, rows)


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r} unknown; accepted: {', '.join(FORMATS)}")
    return fmt


def _csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return value


# -- one report --------------------------------------------------------------------------------
def format_report_table(report: Report) -> str:
    """The human summary of ``report`` followed by its per-channel (and phase) tables."""
    parts = [report.summary(), "",
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
    from .report import LEDGER_COLUMNS

    _check_format(fmt)
    if fmt == "json":
        if len(reports) == 1:
            return reports[0].to_json() + "\n"
        return json.dumps([r.to_dict() for r in reports], indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return _csv(LEDGER_COLUMNS, (r.to_row() for r in reports))
    if fmt == "markdown":
        return "\n".join(r.to_markdown() for r in reports)
    if fmt == "latex":
        return "\n".join(r.to_latex() for r in reports)
    return "\n".join(format_report_table(r) for r in reports)


# -- comparison --------------------------------------------------------------------------------
def _metric_list(kinds: Iterable[str]) -> list[tuple[str, str, str, float]]:
    """(key, label, unit, divisor) of every figure compared, with the energy ``kinds`` given."""
    kinds = set(kinds)
    ordered = [k for k in KIND_ORDER if k in kinds] + sorted(kinds - set(KIND_ORDER))
    energy = [("energy_total_j", "energy total", "J", 1.0)]
    energy += [(f"energy_{k}_j", f"energy {k}" + (" (not in total)" if k == "psys" else ""),
                "J", 1.0) for k in ordered]
    return energy + list(_FIXED_METRICS)


def _metrics(reports: Sequence[Report]) -> list[tuple[str, str, str, float]]:
    return _metric_list(k for r in reports for k in r.energy_j["by_kind"])


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
        for kind in (k for k in KIND_ORDER if any(k in r.energy_j["by_kind"] for r in members)):
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


def comparison_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flat columns of :func:`compare` rows, in order (the CSV header)."""
    columns = ["label", "name", "n", "run_ids", "statuses", "methods"]
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


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
    for kind in (k for k in KIND_ORDER if k in kinds):
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


def _cell(row: Mapping[str, Any], key: str, divisor: float, first: bool) -> str:
    mean = row.get(key)
    if mean is None:
        return "-"
    mean /= divisor
    std = row.get(f"{key}_std")
    decimals = decimals_for(mean)
    text = format_number(mean, decimals)
    if std is not None:
        text += f" ± {format_number(std / divisor, decimals)}"
    ratio = row.get(f"{key}_ratio")
    if not first and ratio is not None:
        text += f" (×{ratio:.2f})"
    return text


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the side-by-side table: one column per group (``name (n=3)``), one
    row per figure, ``mean ± std (×ratio to the first column)``."""
    headers = ["", *[f"{r['label']} (n={r['n']})" if r["n"] > 1 else str(r["label"])
                     for r in rows]]
    keys = {k for r in rows for k in r}
    table: list[list[str]] = []
    kinds = [k[len("energy_"):-len("_j")] for k in keys
             if k.startswith("energy_") and k.endswith("_j") and k != "energy_total_j"]
    for key, label, unit, divisor in _metric_list(kinds):
        if key not in keys or all(r.get(key) is None for r in rows):
            continue
        if key == "peak_gpu_memory_bytes" and not any(r.get(key) for r in rows):
            continue
        table.append([f"{label} ({unit})",
                      *[_cell(r, key, divisor, i == 0) for i, r in enumerate(rows)]])
    table.append(["methods", *[", ".join(f"{k}: {m}" for k, m in r["methods"].items()) or "-"
                               for r in rows]])
    table.append(["status", *[", ".join(f"{n} {s}" if r["n"] > 1 else s
                                        for s, n in r["statuses"].items()) for r in rows]])
    return headers, table


def format_comparison(rows: Sequence[Mapping[str, Any]], fmt: str = "table") -> str:
    """:func:`compare` rows as ``table`` (side by side, with warnings), ``json`` (the rows),
    ``csv`` (one row per group), ``markdown`` or ``latex`` (the side-by-side table)."""
    _check_format(fmt)
    if fmt == "json":
        return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return _csv(comparison_columns(rows), rows)
    headers, table = comparison_table(rows)
    text = _render(fmt, headers, table)
    if fmt == "table":
        if len(rows) > 1:
            text += f"\n(×ratio: mean / mean of {rows[0]['label']}; ± sample standard deviation)"
        warnings = comparison_warnings(rows)
        if warnings:
            text += "\n" + "\n".join(f"warning: {w}" for w in warnings)
    return text + "\n"
