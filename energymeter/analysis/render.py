"""A comparison as text: the side-by-side table (``mean ± std (×ratio)``), or its rows as
``json``/``csv``, or the table in ``markdown``/``latex``. Nothing here prints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..report.render import check_format
from ..report.tables import decimals_for, format_number, render, render_csv
from .compare import comparison_warnings, metric_list


def comparison_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flat columns of :func:`compare` rows, in order (the CSV header)."""
    columns = ["label", "name", "n", "run_ids", "statuses", "methods"]
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


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
    for key, label, unit, divisor in metric_list(kinds):
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
    check_format(fmt)
    if fmt == "json":
        return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return render_csv(comparison_columns(rows), rows)
    headers, table = comparison_table(rows)
    text = render(fmt, headers, table)
    if fmt == "table":
        if len(rows) > 1:
            text += f"\n(×ratio: mean / mean of {rows[0]['label']}; ± sample standard deviation)"
        warnings = comparison_warnings(rows)
        if warnings:
            text += "\n" + "\n".join(f"warning: {w}" for w in warnings)
    return text + "\n"
