"""A study page: one self-contained HTML file to send to supervisors and co-authors, who open
neither ``report.json`` nor a terminal (``energymeter page RUN... -o study.html``).

:func:`study_page` returns the page: what was compared (groups, n), the energy basis, the
comparison table of :func:`~energymeter.analysis.render.comparison_table` with what ± and the
differences mean, the figures (group means of the energy total, energy by kind, and with a
target the energy-to-target curves) as inline SVG, the per-run table of
:func:`~energymeter.report.render.runs_table`, the comparison's warnings and the methods
paragraph of :func:`~energymeter.analysis.cite.methods_paragraph` with the reference under it.

Self-contained: no network, no external script, style sheet, font or image, and no
JavaScript. Text is set in the reader's system fonts; the figures' text is drawn as SVG paths
(matplotlib's ``svg.fonttype = "path"``), so no font is loaded. Everything that comes from the
runs (names, tags, commands, warnings) is HTML-escaped. The page reads in greyscale (nothing
is told by colour alone: differences are a line of their own, warnings are marked in words)
and prints (``@media print``); its tables scroll sideways on a narrow screen instead of
widening the page.

Figures need matplotlib (the ``plot`` extra); without it the page says so where the figures
would be, and has everything else.
"""

from __future__ import annotations

import io
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import ReportError
from ..report.bases import BASIS_MEANING, check_basis
from ..report.render import ESTIMATED_NOTE, runs_table
from ..report.target import parse_target
from ..stats import CONFIDENCE
from .cite import methods_paragraph
from .compare import compare, comparison_warnings
from .find import find_runs
from .groups import check_by, group_runs
from .render import DIFF_LABEL, comparison_footer, comparison_table

if TYPE_CHECKING:
    from ..report import Report

Target = tuple[str, float, str]

#: The figures' size in the page (inches at 72 pt; the page scales them to its width).
FIGURE_WIDTH_IN = 5.6
FIGURE_HEIGHT_IN = 3.0
#: The most groups whose command the page's header lists.
MAX_COMMANDS = 8
#: What ``by`` groups runs by, in words (``tag:KEY`` is "the value of tag KEY").
_BY_WORDS = {
    "name": "run name", "dir": "the folder or path (RUN argument) they came from",
    "command": "command", "group": "repeat group", "job": "distributed job (merged)",
    "run": "run (each run apart)",
}


@dataclass(frozen=True)
class PageFigure:
    """One figure of the page: its caption, and its SVG (None when it could not be drawn:
    ``note`` says why)."""

    title: str
    caption: str
    svg: str | None
    note: str | None = None


# -- runs --------------------------------------------------------------------------------------
def _pairs(runs: Any) -> list[tuple[str | None, Report]]:
    """``(source, report)`` pairs of ``runs``: reports, such pairs (from
    :func:`~energymeter.analysis.find_runs`), run directories, report.json files or folders of
    runs, or one of them."""
    from ..report import Report

    items = [runs] if isinstance(runs, (str, Path, Report)) else list(runs)
    pairs: list[tuple[str | None, Report]] = []
    for item in items:
        if isinstance(item, Report):
            pairs.append((None, item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Report):
            pairs.append((item[0], item[1]))
        elif isinstance(item, (str, Path)):
            pairs += find_runs([item])
        else:
            raise ReportError(f"cannot make a page of {type(item).__name__} {item!r}; "
                              "accepted: run directories, report.json files, folders of runs "
                              "(paths), Report objects or (source, Report) pairs")
    if not pairs:
        raise ReportError("no run given; pass run directories, report.json files, an out "
                          "folder or Report objects")
    return pairs


# -- figures -----------------------------------------------------------------------------------
_PROLOG = re.compile(r"\A.*?(?=<svg[\s>])", re.S)
_DROP = re.compile(r"<metadata>.*?</metadata>|<style[^>]*>.*?</style>|<!--.*?-->", re.S)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_ID = re.compile(r'\bid="([^"]+)"')
_HREF = re.compile(r'\b(xlink:href|href)="#([^"]+)"')
_URL = re.compile(r"url\(#([^)]+)\)")
_EMPTY_DEFS = re.compile(r"<defs>\s*</defs>")


def inline_svg(svg: str, prefix: str, label: str = "") -> str:
    """An SVG file's text made an element of an HTML page: the XML prolog, DOCTYPE,
    metadata, comments and matplotlib's document-wide ``<style>`` dropped, the namespace
    declarations dropped (HTML parses inline SVG into its namespaces itself), every ``id``
    and reference to one prefixed with ``prefix`` (several figures on one page keep their
    clip paths, hatches and glyphs apart), ``role="img"`` and ``aria-label`` added."""
    text = _PROLOG.sub("", svg, count=1)
    if not text.startswith("<svg"):
        raise ReportError("the figure's SVG has no <svg> element")
    text = _DROP.sub("", text)
    text = _XMLNS.sub("", text)
    text = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = _HREF.sub(lambda m: f'{m.group(1)}="#{prefix}{m.group(2)}"', text)
    text = _URL.sub(lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = _EMPTY_DEFS.sub("", text)
    return text.replace("<svg", f'<svg role="img" aria-label="{escape(label)}"', 1).strip()


def figure_svg(fig: Any, prefix: str, label: str = "") -> str:
    """``fig`` (a matplotlib Figure) as an inline SVG element (:func:`inline_svg`), its text
    drawn as paths: the page loads no font."""
    import matplotlib

    from ..report.plot import style

    buffer = io.StringIO()
    with style(), matplotlib.rc_context({"svg.fonttype": "path",
                                         "svg.hashsalt": "energymeter"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # a pyplot figure (new_figure in a script): not kept open
        pyplot.close(fig)
    return inline_svg(buffer.getvalue(), prefix, label)


def _figure_specs(basis: str, target: Target | None, level: str, estimated: bool
                  ) -> list[tuple[str, str, Callable[..., Any]]]:
    from . import plots

    on = "" if basis == "machine" else f" ({basis} basis)"
    hatched = " Hatched: energy estimated by a model, not measured." if estimated else ""
    specs: list[tuple[str, str, Callable[..., Any]]] = [
        ("Energy total per group",
         f"Energy total{on}: each bar is a group's mean, its whisker the {level} confidence "
         "interval of the mean (Student's t), each dot one run; above each later group, its "
         "difference from the first group and Welch's p-value (as in the table)." + hatched,
         lambda pairs, by, nested, w, h: plots.plot(
             pairs, "compare", by=by, nested=nested, target=target, width=w, height=h,
             basis=basis)),
        ("Energy by kind",
         f"Energy by kind{on} (CPU package, DRAM, GPU...): each bar a group's mean, stacked; "
         f"the whisker is the {level} confidence interval of the mean total." + hatched,
         lambda pairs, by, nested, w, h: plots.plot(
             pairs, "breakdown", by=by, nested=nested, width=w, height=h, basis=basis)),
    ]
    if target is not None:
        name, value, direction = target
        sign = "≥" if direction == ">=" else "≤"
        specs.append((
            f"Energy to {name} {sign} {value:g}",
            f"{name} against the machine's cumulative energy: each run a thin line, each "
            f"group's mean energy to reach each level a thick line in its {level} confidence "
            f"band; the dashed line is the target {name} {sign} {value:g}, with each group's "
            "mean energy to reach it and its confidence interval.",
            lambda pairs, by, nested, w, h: plots.plot(
                pairs, "energy-to-target", by=by, nested=nested, target=target, width=w,
                height=h)))
    return specs


def _figures(pairs: list[tuple[str | None, Report]], by: str, nested: bool, basis: str,
             target: Target | None, estimated: bool
             ) -> tuple[list[PageFigure], str | None]:
    """The page's figures, and a note when none could be drawn (no matplotlib). A figure
    these runs cannot give (e.g. no run logged the target's metric) is kept with the
    reason as its note. ``estimated``: whether a model estimated some energy (the
    captions then say what hatching means)."""
    from ..report.plot import PlotDependencyError, require_matplotlib, style

    try:
        require_matplotlib()
    except PlotDependencyError as exc:
        return [], f"No figures: {exc}"
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    out = []
    specs = _figure_specs(basis, target, level, estimated)
    for i, (title, caption, draw) in enumerate(specs, 1):
        try:
            with style(), _quiet():  # the figures' warnings are the page's own section
                fig = draw(pairs, by, nested, FIGURE_WIDTH_IN, FIGURE_HEIGHT_IN)
        except ReportError as exc:
            out.append(PageFigure(title, caption, None, f"Not drawn: {exc}"))
            continue
        out.append(PageFigure(title, caption, figure_svg(fig, f"fig{i}-", title)))
    return out, None


@contextmanager
def _quiet() -> Iterator[None]:
    """energymeter's log warnings held back while a figure is drawn: the comparison's warnings
    are on the page, once, instead of on stderr once per figure."""
    import logging

    logger = logging.getLogger("energymeter")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- HTML --------------------------------------------------------------------------------------
STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #111; line-height: 1.45; font-size: 15px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 62rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.6rem; line-height: 1.2; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; padding-bottom: .2rem;
  border-bottom: 1px solid #888; }
p { max-width: 46rem; }
.meta { color: #444; margin: 0 0 1rem; }
dl.facts { display: grid; grid-template-columns: max-content minmax(0, 1fr);
  gap: .25rem 1rem; margin: 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; min-width: 0; }
dl.facts ul { margin: 0; padding-left: 1.1rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: .85em; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .65rem; text-align: left; vertical-align: top;
  border-bottom: 1px solid #bbb; }
thead th { border-bottom: 2px solid #222; vertical-align: bottom; }
tbody th { font-weight: 600; min-width: 9rem; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.with-diff > * { border-bottom: none; padding-bottom: 0; }
tr.diff > * { font-size: .82rem; font-style: italic; color: #333; padding-top: .05rem; }
tr.diff > td.num, thead th.num { white-space: normal; min-width: 8rem; } /* may wrap */
tr.diff th { font-weight: normal; }
tr.text-start > * { border-top: 2px solid #222; }
ul.notes { font-size: .85rem; color: #333; padding-left: 1.1rem; max-width: 46rem; }
figure { margin: 1.2rem 0 1.8rem; break-inside: avoid; page-break-inside: avoid; }
figure svg { display: block; width: 100%; max-width: 40rem; height: auto; }
figure svg * { stroke-linejoin: round; stroke-linecap: butt; }
figcaption { font-size: .9rem; max-width: 40rem; margin-top: .4rem; }
.not-drawn { border: 1px dashed #666; padding: .6rem .8rem; max-width: 38rem; }
ul.warnings { padding: 0; max-width: 46rem; }
ul.warnings li { list-style: none; margin: .35rem 0; padding-left: .6rem;
  border-left: 3px solid #222; }
.reference { font-size: .9rem; color: #333; }
footer { margin-top: 2.5rem; font-size: .8rem; color: #555; }
@media (max-width: 40rem) {
  body { font-size: 14px; }
  main { padding: 1rem .6rem 2rem; }
  dl.facts { grid-template-columns: minmax(0, 1fr); }
  dl.facts dd { margin-bottom: .4rem; }
}
@media print {
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, tr, figure, ul.warnings li { break-inside: avoid; page-break-inside: avoid; }
  .scroll { overflow: visible; }
  figure svg { max-width: 15cm; }
}
""".strip()


def _cell(tag: str, text: str, cls: str = "", scope: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' scope="{scope}"' if scope else "")
    return f"<{tag}{attrs}>{escape(text)}</{tag}>"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                align: Sequence[str], *, row_classes: Sequence[str] = (),
                words_from: int | None = None) -> str:
    """A table: ``align`` ``l``/``r`` per column (``r``: numbers, right-aligned), the rows
    from ``words_from`` on all left-aligned (words, not numbers); the first cell of each row
    a row header; ``row_classes`` one per row."""
    def cls(i: int, n: int = -1) -> str:
        words = words_from is not None and n >= words_from
        return "num" if align[i] == "r" and not words else ""

    head = "".join(_cell("th", h, cls(i), "col") for i, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        extra = row_classes[n] if n < len(row_classes) else ""
        cells = "".join(_cell("th", c, cls(i, n), "row") if i == 0
                        else _cell("td", c, cls(i, n)) for i, c in enumerate(row))
        body.append(f'<tr class="{extra}">{cells}</tr>' if extra else f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _comparison(rows: Sequence[Mapping[str, Any]]) -> str:
    headers, table = comparison_table(rows, lines=2, diff_label=DIFF_LABEL)
    text_from = next((i for i, r in enumerate(table)
                      if r[0] == "methods" or r[0].startswith("reached ")), len(table))
    classes = []
    for i, row in enumerate(table):
        parts = []
        if row[0] == DIFF_LABEL:
            parts.append("diff")
        elif i + 1 < len(table) and table[i + 1][0] == DIFF_LABEL:
            parts.append("with-diff")
        if i == text_from:
            parts.append("text-start")
        classes.append(" ".join(parts))
    # the rows from "methods" (or "reached") on are words: left-aligned
    return _html_table(headers, table, ["l", *["r"] * (len(headers) - 1)],
                       row_classes=classes, words_from=text_from)


def _footer_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The comparison's footer, its continued lines (indented, for a terminal) joined."""
    lines: list[str] = []
    for line in comparison_footer(rows):
        if line.startswith("  ") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def _by_words(by: str) -> str:
    if by.startswith("tag:"):
        return f"the value of tag {by[4:]}"
    if by.startswith("tags:"):  # one study of energymeter sweep, by its axes
        axes = [a for a in by[5:].split(",") if a]
        return (f"the sweep's axis {axes[0]}" if len(axes) == 1 else
                f"the sweep's axes {', '.join(axes[:-1])} and {axes[-1]}")
    return _BY_WORDS.get(by, by)


def _compared(rows: Sequence[Mapping[str, Any]], by: str) -> str:
    groups = []
    for row in rows:
        extra = f", +{row['warmup']} warm-up" if row.get("warmup") else ""
        groups.append(f"<li>{escape(str(row['label']))} (n = {row['n']}{extra})</li>")
    runs = sum(r["n"] for r in rows)
    warmup = sum(r.get("warmup") or 0 for r in rows)
    head = (f"{len(rows)} run{'s' if len(rows) != 1 else ''}, each apart" if by == "run" else
            f"{len(rows)} group{'s' if len(rows) != 1 else ''} of runs, by "
            f"{escape(_by_words(by))}")
    total = (f"{runs} run{'s' if runs != 1 else ''} compared"
             + (f", {warmup} warm-up run{'s' if warmup != 1 else ''} counted, not compared"
                if warmup else ""))
    return f"{head}; {total}:<ul>{''.join(groups)}</ul>"


def _commands(groups: Sequence[Any]) -> str | None:
    """Each group's first command, and how many other commands its runs had (seeds...)."""
    items = []
    for g in groups:
        seen: dict[str, None] = {}
        for r in (*g.runs, *g.warmup_runs):
            if r.command:
                seen.setdefault(shlex.join(str(a) for a in r.command), None)
        if not seen:
            continue
        first, *others = seen
        note = [str(g.label)] if len(groups) > 1 else []
        if others:
            note.append(f"and {len(others)} other command{'s' if len(others) > 1 else ''}")
        items.append(f"<li><code>{escape(first)}</code>"
                     + (f" ({escape(', '.join(note))})" if note else "") + "</li>")
    if not items:
        return None
    more = len(items) - MAX_COMMANDS
    shown = items[:MAX_COMMANDS] + ([f"<li>… and {more} more groups</li>"] if more > 0 else [])
    return f"<ul>{''.join(shown)}</ul>"


def _when(reports: Sequence[Report]) -> str:
    first = min(r.started_at for r in reports).astimezone(timezone.utc)
    last = max(r.ended_at for r in reports).astimezone(timezone.utc)
    if first.date() == last.date():
        return f"{first:%Y-%m-%d}, {first:%H:%M}–{last:%H:%M} UTC"
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"


def _default_title(rows: Sequence[Mapping[str, Any]]) -> str:
    labels = [str(r["label"]) for r in rows]
    if len(labels) == 1:
        return f"Energy study: {labels[0]}"
    if len(labels) <= 4:
        return "Energy study: " + " vs ".join(labels)
    return f"Energy study: {len(labels)} groups"


def _runs(reports: Sequence[Report], group_of: Mapping[str, str], basis: str,
          grouped: bool) -> str:
    headers, rows, align = runs_table(reports, basis)
    # which group each run is in, where the run's label does not say (it names the tags)
    if grouped and any(group_of.get(r.run_id, "-") not in row[0]
                       for row, r in zip(rows, reports, strict=True)):
        headers = [headers[0], "group", *headers[1:]]
        rows = [[row[0], group_of.get(r.run_id, "-"), *row[1:]]
                for row, r in zip(rows, reports, strict=True)]
        align = [align[0], "l", *align[1:]]
    notes = []
    if any("est." in c for row in rows for c in row):
        notes.append(ESTIMATED_NOTE)
    if any(c.endswith("machine)") for row in rows for c in row[1:]):
        notes.append(f"machine: the run has no {basis} figure; its machine energy is shown")
    text = _html_table(headers, rows, align)
    if notes:
        text += '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
    return text


def _methods(pairs: list[tuple[str | None, Report]], by: str, nested: bool,
             basis: str) -> str:
    text = methods_paragraph(pairs, "text", by=by, nested=nested, basis=basis)
    paragraph, _, ref = text.strip().partition("\n\n[1] ")
    out = f"<p>{escape(paragraph)}</p>"
    if ref:
        out += f'<p class="reference">[1] {escape(ref.strip())}</p>'
    return out


def study_page(runs: Any, *, by: str = "auto", basis: str = "machine",
               title: str | None = None, target: str | Target | None = None,
               nested: bool = False, generated_at: datetime | None = None) -> str:
    """The study page of ``runs`` (see the module docstring): one self-contained HTML
    document, as text.

    ``runs``: reports, ``(source, report)`` pairs from :func:`~energymeter.analysis.
    find_runs`, or run directories, report.json files and folders of runs. They are grouped
    as ``energymeter compare`` groups them (``by``: ``auto``, ``name``, ``dir``,
    ``command``, ``group``, ``job``, ``tag:KEY``; runs nested in another left out unless
    ``nested``). ``basis``: the energy basis of the table and figures (``machine``,
    ``attributed``, ``net``). ``title``: the page's heading (default: the groups compared).
    ``target`` (``"val_acc=0.9"``): the energy and time to it in the table, and the
    energy-to-target figure. ``generated_at``: the time the page says it was made (default:
    now).

    Raises :class:`~energymeter.errors.ReportError` (no runs, a bad ``by`` or ``target``,
    unreadable runs) or :class:`~energymeter.errors.ConfigError` (an unknown ``basis``)."""
    check_basis(basis)
    check_by(by)
    parsed = parse_target(target) if isinstance(target, str) else target
    pairs = _pairs(runs)
    rows = compare(pairs, by=by, nested=nested, target=parsed, basis=basis)
    grouping = group_runs(pairs, by=by, nested=nested)
    reports = [r for g in grouping.groups for r in (*g.runs, *g.warmup_runs)]
    if not rows or not reports:
        raise ReportError("no run to show: every run given was left out (nested runs: "
                          "nested=True, --nested, compares them)")
    group_of = {r.run_id: g.label for g in grouping.groups for r in (*g.runs, *g.warmup_runs)}
    warnings = comparison_warnings(rows)
    estimated = any("model" in m or "mixed" in m for r in rows
                    for m in r.get("methods", {}).values())
    figures, no_figures = _figures(pairs, by, nested, basis, parsed, estimated)
    now = (generated_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    heading = title if title is not None and title.strip() else _default_title(rows)

    facts = [("Compared", _compared(rows, grouping.by)),
             ("Runs from", escape(_when(reports))),
             ("Energy basis", escape(f"{basis}: {BASIS_MEANING[basis]}"))]
    if parsed is not None:
        name, value, direction = parsed
        facts.append(("Target", escape(f"{name} {'≥' if direction == '>=' else '≤'} "
                                       f"{value:g} (the energy and time until a run's logged "
                                       f"{name} first reached it)")))
    commands = _commands(grouping.groups)
    if commands:
        facts.append(("Commands", commands))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="energymeter {escape(__version__)}">',
        f"<title>{escape(heading)}</title>",
        f"<style>\n{STYLE}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f"<h1>{escape(heading)}</h1>",
        f'<p class="meta">Made {now:%Y-%m-%d %H:%M} UTC by energymeter '
        f"{escape(__version__)} from the runs' reports.</p>",
        '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in facts)
        + "</dl>",
        "</header>",
        '<section id="comparison">',
        "<h2>Comparison</h2>",
        _comparison(rows),
        '<ul class="notes">' + "".join(f"<li>{escape(line)}</li>"
                                       for line in _footer_lines(rows)) + "</ul>",
        "</section>",
        '<section id="figures">',
        "<h2>Figures</h2>",
    ]
    if no_figures:
        parts.append(f'<p class="not-drawn">{escape(no_figures)}</p>')
    for i, fig in enumerate(figures, 1):
        body = fig.svg if fig.svg is not None else \
            f'<p class="not-drawn">{escape(fig.note or "Not drawn.")}</p>'
        parts.append(f'<figure id="figure-{i}">{body}<figcaption><strong>Figure {i}. '
                     f"{escape(fig.title)}.</strong> {escape(fig.caption)}</figcaption>"
                     "</figure>")
    parts += [
        "</section>",
        '<section id="runs">',
        "<h2>Runs</h2>",
        _runs(reports, group_of, basis, grouping.by != "run"),
        "</section>",
        '<section id="warnings">',
        "<h2>Warnings</h2>",
        ('<ul class="warnings">' + "".join(f"<li><strong>Warning:</strong> {escape(w)}</li>"
                                           for w in warnings) + "</ul>")
        if warnings else "<p>None: the comparison raised no warning.</p>",
        "</section>",
        '<section id="methods">',
        "<h2>Methods</h2>",
        _methods(pairs, by, nested, basis),
        "</section>",
        f"<footer>energymeter {escape(__version__)} · energymeter page</footer>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
