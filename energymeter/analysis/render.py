"""A comparison as text: the side-by-side table (``mean ± half-width of the 95 % confidence
interval``, and under each later column its difference from the first with its interval and
p-value), or its rows as ``json``/``csv``, or the table in ``markdown``/``latex``; and the
energy-to-target results of :func:`~energymeter.analysis.target.target_results` in the same
formats. Nothing here prints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..report.bases import BASIS_MEANING
from ..report.render import check_caption_options, check_format
from ..report.tables import (
    HEIGHT_PT,
    LATEX_NOTE,
    WIDTH_PT,
    check_width,
    fit_table,
    format_ci,
    format_number,
    latex_comment,
    latex_escape,
    markdown_escape,
    render,
    render_csv,
    render_fitted,
    scaled_unit,
)
from ..stats import ALPHA, CONFIDENCE
from .compare import comparison_warnings, metric_list, p_text, percent, signed

#: The width the plain table keeps to where it can (columns of a terminal).
WIDTH = 100

# Columns of the CSV before the figures; `mixed` (nested) is in the JSON only.
_LEAD = ("label", "name", "by", "key", "n", "warmup", "run_ids", "warmup_run_ids", "sources",
         "statuses", "methods", "memory_basis", "duplicates_dropped", "nested_excluded",
         "parents_replaced", "target", "target_reached", "target_notes")
_JSON_ONLY = ("mixed",)
# Figures kept out of the side-by-side table (in json and csv).
_TABLE_HIDDEN = ("emissions_to_target_g",)


def comparison_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flat columns of :func:`compare` rows, in order (the CSV header)."""
    present = {k for row in rows for k in row}
    columns = [c for c in _LEAD if c in present]
    for row in rows:
        for key in row:
            if key not in columns and key not in _JSON_ONLY and key != "warnings":
                columns.append(key)
    return columns + (["warnings"] if "warnings" in present else [])


# -- cells -------------------------------------------------------------------------------------
def value_cell(mean: float | None, low: float | None, high: float | None,
               divisor: float = 1.0) -> str:
    """``mean ± half-width`` of the interval (``mean`` alone without one), in the unit of
    ``divisor``, digits as :func:`~energymeter.report.tables.format_ci` shows them (the
    half-width to two significant digits, the mean to the same place); ``-`` without a
    mean."""
    if mean is None:
        return "-"
    half = None if low is None or high is None else (high - low) / 2 / divisor
    shown, half_shown = format_ci(mean / divisor, half)
    return shown if half_shown is None else f"{shown} ± {half_shown}"


def difference_parts(row: Mapping[str, Any], key: str, first_n: int = 2
                     ) -> tuple[str, str] | None:
    """The difference of ``row``'s ``key`` from the first group's, in two parts: ``−39.3 %
    [−41.2, −37.4]`` and ``p < 0.001`` (or ``p = 0.46, not significant``); None when there
    is no difference to show. ``first_n``: the first group's number of values of ``key``."""
    rel = row.get(f"{key}_rel_diff")
    if rel is None:
        return None
    low, high = row.get(f"{key}_rel_diff_ci_low"), row.get(f"{key}_rel_diff_ci_high")
    p = row.get(f"{key}_p_value")
    diff = percent(rel)
    if low is not None and high is not None:
        diff += f" [{signed(100 * low)}, {signed(100 * high)}]"
    if p is None:
        few = min(row.get(f"{key}_n") or 0, first_n) < 2
        return diff, "untested: n < 2" if few else "untested: no spread"
    return diff, p_text(p) + ("" if p < ALPHA else ", not significant")


def _header(row: Mapping[str, Any], grouped: bool) -> str:
    if not grouped:
        return str(row["label"])
    extra = f", +{row['warmup']} warm-up" if row.get("warmup") else ""
    return f"{row['label']} (n={row['n']}{extra})"


def _metrics(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, float]]:
    keys = {k for r in rows for k in r}
    kinds = [k for r in rows for k in r.get("methods", {})]
    target = next((r["target"] for r in rows if r.get("target")), None)
    bases = {r.get("memory_basis") for r in rows if r.get("memory_basis")}
    basis = rows[0].get("basis", "machine") if rows else "machine"
    metrics = metric_list(kinds, per_item="energy_per_item_j" in keys, target=target,
                          memory_basis=bases.pop() if len(bases) == 1 else None,
                          basis=None if basis == "machine" else basis,
                          baseline="baseline_idle_j" in keys)
    if basis == "net":  # the energy rows already are net of idle
        metrics = [m for m in metrics if m[0] != "baseline_net_j"]
    phase = rows[0].get("phase") if rows else None
    if phase is not None:
        metrics = [(k, f"{phase}: {label}", unit, div) for k, label, unit, div in metrics]
    return [m for m in metrics if m[0] in keys and any(r.get(m[0]) is not None for r in rows)
            and not (m[0] == "peak_gpu_memory_bytes" and not any(r.get(m[0]) for r in rows))]


def comparison_table(rows: Sequence[Mapping[str, Any]], *, lines: int = 1,
                     diff_label: str = "") -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the side-by-side table: one column per group (``label (n=5)``),
    one row per figure, ``mean ± half-width of the 95 % CI``. ``lines``: how the difference
    of each later column from the first is shown: 1, in the same cell (``… (−39.3 % [−41.2,
    −37.4], p < 0.001)``); 2, on one line under it; 3, on two lines (interval, then p).
    ``diff_label``: the first cell of those lines."""
    grouped = any(r.get("by") != "run" for r in rows)
    headers = ["", *[_header(r, grouped) for r in rows]]
    table: list[list[str]] = []
    for key, label, unit, divisor in _metrics(rows):
        if key in _TABLE_HIDDEN:
            continue
        # the unit's prefix that shows the row's figures as 0.1 to 999 (mJ, kJ)
        unit, factor = scaled_unit(unit, max((abs(r[key]) / divisor for r in rows
                                              if isinstance(r.get(key), (int, float))),
                                             default=0.0))
        divisor *= factor
        cells = [value_cell(r.get(key), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"),
                            divisor) for r in rows]
        first_n = rows[0].get(f"{key}_n") or 0
        parts = [None, *[difference_parts(r, key, first_n) for r in rows[1:]]]
        if lines == 1:
            cells = [c if p is None or c == "-" else f"{c} ({p[0]}, {p[1]})"
                     for c, p in zip(cells, parts, strict=True)]
        table.append([f"{label} ({unit})", *cells])
        if lines > 1 and any(p is not None for p in parts):
            if lines == 2:
                table.append([diff_label, *["" if p is None else f"{p[0]}, {p[1]}"
                                            for p in parts]])
            else:
                table.append([diff_label, *["" if p is None else p[0] for p in parts]])
                table.append(["", *["" if p is None else p[1] for p in parts]])
    if any("target" in r for r in rows):
        table.append([f"reached {next(r['target'] for r in rows if 'target' in r)}",
                      *[f"{r.get('target_reached', 0)} of {r['n']}" for r in rows]])
    table.append(["methods", *[_methods_cell(r["methods"]) for r in rows]])
    table.append(["status", *[", ".join(f"{n} {s}" if r["n"] > 1 else s
                                        for s, n in r["statuses"].items()) or "-"
                              for r in rows]])
    return headers, table


def _methods_cell(methods: Mapping[str, str]) -> str:
    """``counter: cpu, gpu; model: dram``: the kinds measured by each method."""
    kinds: dict[str, list[str]] = {}
    for kind, method in methods.items():
        kinds.setdefault(method, []).append(kind)
    return "; ".join(f"{m}: {', '.join(k)}" for m, k in kinds.items()) or "-"


def basis_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """``energy basis: attributed (this run's own share …)``: what the energy figures are
    (and of which phase, for a per-phase comparison)."""
    basis = rows[0].get("basis", "machine") if rows else "machine"
    phase = rows[0].get("phase") if rows else None
    line = f"energy basis: {basis}, {BASIS_MEANING[basis]}"
    if phase is not None:
        line = (f"phase {phase}: its energy, duration and mean power in each run (every "
                f"occurrence summed); {line}")
    return line


def comparison_footer(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the table's energy basis, ± and brackets mean."""
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    lines = [basis_line(rows),
             f"± : half-width of the {level} confidence interval of the mean (Student's t, "
             "n − 1 df)"]
    if len(rows) > 1:
        first = rows[0]["label"]
        lines += [f"% [low, high]: difference from {first} (mean / mean of {first} − 1), "
                  f"{level} CI by the delta",
                  "  method on the log ratio; p: Welch's t-test, two-sided; not significant: "
                  f"p ≥ {ALPHA:.2g}"]
    return lines


#: The first cell of the line under a figure that gives each later group's difference.
DIFF_LABEL = "difference"


def _paper_table(rows: Sequence[Mapping[str, Any]], lines: int = 2
                 ) -> tuple[list[str], list[list[str]], int]:
    """The table of the markdown and latex formats (the difference under each figure, on
    ``lines - 1`` lines, labelled :data:`DIFF_LABEL`) and the index of its first text row."""
    headers, table = comparison_table(rows, lines=lines, diff_label=DIFF_LABEL)
    text_from = next(i for i, r in enumerate(table) if r[0] == "methods"
                     or r[0].startswith("reached "))
    return headers, table, text_from


def comparison_caption(rows: Sequence[Mapping[str, Any]]) -> str:
    """The default caption of the LaTeX table: what was compared, what ± is, what the
    difference, its interval and p are, and which figures are estimated."""
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    grouped = any(r.get("by") != "run" for r in rows)
    if grouped:
        text = (f"Energy and time of {len(rows)} groups of runs, measured with energymeter: "
                f"mean ± half-width of the {level} confidence interval of the mean "
                "(Student's t) over the n runs of each group.")
    else:
        text = f"Energy and time of {len(rows)} runs, measured with energymeter."
    if len(rows) > 1:
        first = rows[0]["label"]
        text += (f" Difference: from {first} (mean / mean of {first} − 1), with its {level} "
                 "confidence interval (delta method on the log ratio) and the p-value of "
                 f"Welch's two-sided t-test (not significant: p ≥ {ALPHA:.2g}).")
    basis = rows[0].get("basis", "machine") if rows else "machine"
    if basis != "machine":
        text += f" Energy basis: {basis}, {BASIS_MEANING[basis]}."
    if any("model" in m for r in rows for m in r.get("methods", {}).values()):
        text += (" Method model: energy estimated from CPU utilisation × TDP, not "
                 "measured.")
    if any("mixed" in m for r in rows for m in r.get("methods", {}).values()):
        text += (" Method mixed: measured for part of a run, estimated by the model for "
                 "the rest.")
    return text


def _transposed(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The comparison with the groups as rows and the figures as columns, each later
    group's difference in its cell (``300.0 ± 9.8 (−40.0 % [−41.2, −38.8], p < 0.001)``)."""
    headers, table = comparison_table(rows, lines=1)
    return ["", *[r[0] for r in table]], [[h, *[r[g] for r in table]]
                                          for g, h in enumerate(headers) if g]


def _comparison_latex(rows: Sequence[Mapping[str, Any]], caption: str | None,
                      label: str | None, width: str = "column") -> str:
    """The LaTeX table of the comparison, fitted to ``width``: the groups side by side (each
    difference under its figure, wrapped where the column is narrow) in the largest size
    that fits; else transposed (a row per group) where that fits; else the groups in blocks
    one under the other (said in a comment). Fitted to the page's height too
    (:data:`~energymeter.report.tables.HEIGHT_PT`): the way with the differences on the
    fewest lines where one float is too tall, then the rows split among floats, each
    difference in the float of its figure (:func:`render_fitted`)."""
    limit = WIDTH_PT[check_width(width)]
    headers, table, text_from = _paper_table(rows, lines=2)
    align = ["l"] + ["r"] * len(rows)
    caption_tex = latex_escape(caption or comparison_caption(rows))
    rules = [text_from]
    fitted = fit_table(headers, table, limit, split=False, height_pt=HEIGHT_PT,
                       caption_tex=caption_tex, rules_before=rules)
    note = None
    keep = [i for i, r in enumerate(table) if r[0] == DIFF_LABEL]
    if fitted is None:
        t_headers, t_table = _transposed(rows)
        text = {i for i, h in enumerate(t_headers) if h in ("methods", "status")}
        t_align = ["l" if i in text or not i else "r" for i in range(len(t_headers))]
        fitted = fit_table(t_headers, t_table, limit, text_columns={0, *text}, split=False,
                           height_pt=HEIGHT_PT, caption_tex=caption_tex)
        if fitted is not None:
            headers, table, align, rules, keep = t_headers, t_table, t_align, [], []
            note = (f"energymeter: {len(rows)} groups side by side do not fit the {width} "
                    "width: transposed (a row per group, each difference in its cell)")
    text = render_fitted(headers, table, align, width=width, fitted=fitted, note=note,
                         caption=caption_tex, raw_caption=True,
                         label=label or "tab:energymeter-compare", rules_before=rules,
                         text_columns=[0], keep_with_previous=keep)
    warnings = comparison_warnings(rows)
    parts = [LATEX_NOTE, text]
    if warnings:
        parts.append(latex_comment("\n".join(f"warning: {w}" for w in warnings)))
    return "\n\n".join(parts) + "\n"


def _plain_table(rows: Sequence[Mapping[str, Any]]) -> str:
    align = ["l"] * (len(rows) + 1)
    for lines in (2, 3):  # the difference on one line under the value, or on two
        headers, table = comparison_table(rows, lines=lines)
        text = render("table", headers, table, align)
        if max(len(line) for line in text.splitlines()) <= WIDTH:
            break
    return text


def format_comparison(rows: Sequence[Mapping[str, Any]], fmt: str = "table", *,
                      caption: str | None = None, label: str | None = None,
                      width: str = "column") -> str:
    """:func:`compare` rows as ``table`` (side by side, with the footer and warnings),
    ``json`` (the rows), ``csv`` (one row per group, every number), ``markdown`` (the table
    with each difference on a line under its figure, the footer and the warnings; ``caption``
    as a heading) or ``latex`` (the same table, booktabs, in a ``table`` float whose caption
    says what ± and the difference are, unless ``caption`` replaces it; ``label`` default
    ``tab:energymeter-compare``; the warnings as comments; fitted to ``width``, ``column``
    or ``page``: :func:`_comparison_latex`). Text columns are left-aligned, numbers
    right-aligned."""
    check_format(fmt)
    check_caption_options(fmt, caption, label)
    check_width(width)
    if fmt == "json":
        return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        flat = [{**r, "warnings": " | ".join(r.get("warnings", ()))} for r in rows]
        return render_csv(comparison_columns(rows), flat)
    if fmt == "latex":
        return _comparison_latex(rows, caption, label, width)
    warnings = comparison_warnings(rows)
    if fmt == "markdown":
        headers, table, _ = _paper_table(rows)
        text = f"**{markdown_escape(caption)}**\n\n" if caption else ""
        text += render("markdown", headers, table)
        text += "\n\n" + "  \n".join(markdown_escape(line)
                                       for line in comparison_footer(rows))
        if warnings:
            text += "\n\n" + "\n".join(f"- warning: {markdown_escape(w)}" for w in warnings)
        return text + "\n"
    text = _plain_table(rows)
    text += "\n" + "\n".join(comparison_footer(rows))
    if warnings:
        text += "\n" + "\n".join(f"warning: {w}" for w in warnings)
    return text + "\n"


# -- energy to target --------------------------------------------------------------------------
TARGET_RUN_COLUMNS = ("label", "run_id", "name", "group", "status", "warmup", "reached",
                      "energy_j", "duration_s", "emissions_g", "source", "note")


def _summary_cell(summary: Mapping[str, Any]) -> str:
    return value_cell(summary.get("mean"), summary.get("ci_low"), summary.get("ci_high"))


def target_tables(result: Mapping[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """The tables of :func:`~energymeter.analysis.target.target_results`: one row per run
    (energy, time and emissions until the target, or why not), and with groups one row per
    group (``k of n`` reached, mean ± half-width of the 95 % CI over the runs that did)."""
    grouped = result.get("groups") is not None
    headers = ["run", *(["group"] if grouped else []), "energy (J)", "time (s)",
               "emissions (gCO2e)", "note"]
    runs = []
    for run in result["runs"]:
        note = run["note"] or ""
        if run["warmup"]:
            note = "warm-up, not in the group figures" + (f"; {note}" if note else "")
        if run["reached"]:
            cells = [format_number(run["energy_j"]), format_number(run["duration_s"]),
                     format_number(run["emissions_g"])]
        else:
            cells = ["not reached" if run["note"] != "metric not logged" else "-", "-", "-"]
        runs.append([run["label"], *([run["group"]] if grouped else []), *cells, note or "-"])
    tables = [(headers, runs)]
    if grouped:
        rows = []
        for g in result["groups"]:
            warmup = f", +{g['warmup']} warm-up" if g["warmup"] else ""
            rows.append([f"{g['label']} (n={g['n']}{warmup})", f"{g['reached']} of {g['n']}",
                         _summary_cell(g["energy_to_target_j"]),
                         _summary_cell(g["time_to_target_s"]),
                         _summary_cell(g["emissions_to_target_g"])])
        tables.append((["group", "reached", "energy (J)", "time (s)", "emissions (gCO2e)"],
                       rows))
    return tables


def format_targets(result: Mapping[str, Any], fmt: str = "table", *,
                   caption: str | None = None, label: str | None = None,
                   width: str = "column") -> str:
    """:func:`~energymeter.analysis.target.target_results` as ``table``, ``markdown`` or
    ``latex`` (:func:`target_tables`; latex: booktabs floats, ``caption`` and ``label``
    default ``tab:energymeter-target``, the group table's label with ``-groups``), ``json``
    (the whole result) or ``csv`` (one row per run, :data:`TARGET_RUN_COLUMNS`). The latex
    tables fit ``width`` (``column`` or ``page``), long notes in lines."""
    check_format(fmt)
    check_caption_options(fmt, caption, label)
    check_width(width)
    if fmt == "json":
        return json.dumps(result, indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        return render_csv(TARGET_RUN_COLUMNS, result["runs"])
    title = f"energy to {result['target']['text']}"
    parts = []
    base = label or "tab:energymeter-target"
    for i, (headers, rows) in enumerate(target_tables(result)):
        # text columns left, figures right
        align = ["l" if h in ("run", "group", "note", "reached") else "r" for h in headers]
        if fmt == "latex":
            what = ("per run" if i == 0 else "per group: mean ± half-width of the 95 % "
                    "confidence interval over the runs that reached it (Student's t; warm-up "
                    "runs left out)")
            parts.append(render_fitted(
                [h[:1].upper() + h[1:] for h in headers], rows, align, width=width,
                label=base + ("-groups" if i else ""),
                caption=f"{caption or title[:1].upper() + title[1:]}, {what}."))
        else:
            parts.append(render(fmt, headers, rows, align))
    if fmt == "latex":
        return "\n\n".join([LATEX_NOTE, *parts]) + "\n"
    footer = ""
    if result.get("groups") is not None:
        footer = ("\n\n" if fmt == "markdown" else "\n") + (
            "± : half-width of the 95 % confidence interval of the mean over the runs that "
            "reached the\ntarget (Student's t; warm-up runs left out)")
    notes = "".join(f"\n{'- ' if fmt == 'markdown' else ''}note: {n}"
                    for n in result.get("notes", ()))
    if notes and fmt == "markdown":
        notes = "\n" + notes
    head = f"**{title}**" if fmt == "markdown" else title
    return head + "\n\n" + "\n\n".join(parts) + footer + notes + "\n"
