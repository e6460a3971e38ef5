"""Text tables shared by reports, comparisons and the CLI: plain, Markdown, LaTeX and CSV
renderers and number formatting. Knows nothing of reports: headers and rows of strings in,
text out."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._lazy import LazyPattern
from ..errors import ReportError

#: The forms a report is printed in (``--format``).
FORMATS = ("table", "json", "csv", "markdown", "latex")


# -- number formatting -------------------------------------------------------------------------
def decimals_for(value: float) -> int:
    """Decimals that show about four significant digits of ``value`` (0 to 6)."""
    if value == 0 or not math.isfinite(value):
        return 0
    return min(6, max(0, 3 - math.floor(math.log10(abs(value)))))


def format_number(value: float | None, decimals: int | None = None) -> str:
    """``value`` with about four significant digits and no exponent; ``-`` for None."""
    if value is None:
        return "-"
    if decimals is None:
        decimals = decimals_for(value)
    if value != 0 and abs(value) < 1e-6:
        return f"{value:.3g}"
    return f"{value:.{decimals}f}"


# -- text tables -------------------------------------------------------------------------------
def energy_unit(max_j: float) -> tuple[str, float]:
    """``(unit, joules per unit)`` for energies up to ``max_j``: J below 1 Wh, Wh below 1 kWh,
    then kWh."""
    if max_j >= 3.6e6:
        return "kWh", 3.6e6
    if max_j >= 3600:
        return "Wh", 3600.0
    return "J", 1.0


def _is_numeric(text: str) -> bool:
    head = text.split(" ", 1)[0].replace(",", "").lstrip("x×~")
    try:
        float(head)
    except ValueError:
        return False
    return True


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 align: Sequence[str] | None = None) -> str:
    """A plain-text table with a dashed rule under the header. ``align``: one ``"l"`` or
    ``"r"`` per column (default: right for columns whose cells are all numbers)."""
    columns = len(headers)
    if align is None:
        align = ["r" if rows and all(_is_numeric(r[i]) or r[i] in ("", "-") for r in rows)
                 else "l" for i in range(columns)]
        align = ["l", *align[1:]]
    widths = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                         for c, w, a in zip(cells, widths, align, strict=True)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths),
                      *[line(r) for r in rows]])


#: Characters of data that Markdown (GitHub's) would act on in a table cell or in prose:
#: escaped with a backslash. ``](`` (a link) and ``<`` (HTML, autolinks) included.
_MARKDOWN_SPECIAL = LazyPattern(r"[\\`*_|~]|<(?=[A-Za-z/!?])|\](?=\()")
_NEWLINES = LazyPattern(r"\r\n|[\r\n]")
# C0 and C1 controls (newlines and tabs included: a cell is one line): shown as their Python
# escape (``\x1b``, as the CLI shows them), never passed to TeX or a Markdown renderer.
_CONTROLS = LazyPattern("[\x00-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    return _CONTROLS.sub(lambda m: repr(m.group(0))[1:-1], text)


def markdown_escape(text: str) -> str:
    """``text`` as Markdown text that shows as written: ``\\ ` * _ | ~``, the ``<`` of a tag
    or autolink and the ``]`` of ``](`` backslash-escaped, line breaks as spaces (a table row
    is one line), other control characters as their escape (``\\x1b``)."""
    text = _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), _NEWLINES.sub(" ", text))
    return _visible(text)


def markdown_code(text: str) -> str:
    """``text`` as a Markdown code span, fenced with more backticks than it holds."""
    text = _visible(_NEWLINES.sub(" ", text))
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def column_align(rows: Sequence[Sequence[str]], columns: int) -> list[str]:
    """``"r"`` for the columns whose cells are all numbers (or empty, ``-``), else ``"l"``; the
    first column (the row's name) is always ``"l"``."""
    align = ["r" if rows and all(_is_numeric(r[i]) or r[i] in ("", "-") for r in rows)
             and any(_is_numeric(r[i]) for r in rows) else "l" for i in range(columns)]
    return ["l", *align[1:]] if align else align


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[str]],
                    align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table: text columns left-aligned (``---``), numbers right
    (``---:``); ``align`` one ``"l"``/``"r"`` per column (default: the first ``l``, the rest
    ``r``). Cells are :func:`markdown_escape`-d."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    lines = ["| " + " | ".join(markdown_escape(h) for h in headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(markdown_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$",
                  "−": "$-$", "≥": r"$\geq$", "≤": r"$\leq$", "<": r"\textless{}",
                  ">": r"\textgreater{}", "|": r"\textbar{}", "…": r"\ldots{}",
                  "µ": r"$\mu$", "Δ": r"$\Delta$", "→": r"$\to$"}
_LATEX_SPECIAL = LazyPattern("|".join(re.escape(k) for k in _LATEX_ESCAPES))
# A number's leading minus (``-1.5``, not ``epoch-1``), typeset as a minus sign.
_LATEX_MINUS = LazyPattern(r"(?<![\w.)\]])-(?=\d)")
_LATEX_EXPONENT = LazyPattern(r"(\d)e([+-]?)0*(\d+)\b")


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (± × − ≥ ≤ as math, ``< > |`` as text
    symbols, which the default font encoding would otherwise typeset as other glyphs) and
    control characters written as their escape (``\\x1b``), so that data typesets as itself."""
    return _LATEX_SPECIAL.sub(lambda m: _LATEX_ESCAPES[m.group(0)], _visible(text))


def latex_cell(text: str, numeric: bool = False) -> str:
    """One escaped cell; in a ``numeric`` column a number's leading ``-`` is a minus sign and
    an exponent (``8.7e-05``) a power of ten."""
    escaped = latex_escape(text)
    if not numeric:
        return escaped
    escaped = _LATEX_MINUS.sub("$-$", escaped)
    return _LATEX_EXPONENT.sub(lambda m: f"{m.group(1)}$\\times 10^{{{m.group(2).lstrip('+')}"
                                         f"{m.group(3)}}}$", escaped)


def latex_header(text: str) -> str:
    """A header cell: escaped, ``CO2e`` with a subscript 2."""
    return latex_escape(text).replace("CO2e", r"CO\textsubscript{2}e")


#: What every LaTeX output of energymeter needs in the preamble (said in its first line).
LATEX_PACKAGES = ("booktabs",)
LATEX_NOTE = (r"% energymeter: needs \usepackage{booktabs} in the preamble "
              r"(plain tabular, no siunitx)")

_LABEL = LazyPattern(r"[A-Za-z0-9:._/+-]+")


def check_label(label: str) -> str:
    """``label`` if it can be a LaTeX ``\\label`` as is, else :class:`ReportError` saying
    what is accepted."""
    if not _LABEL.fullmatch(label):
        raise ReportError(f"label {label!r} cannot be a LaTeX label; accepted: letters, digits "
                          "and : . _ / + - (e.g. tab:energy)")
    return label


_TRAILING_PARENS = LazyPattern(r"^(.*\S) (\([^()]*\))$")


def split_headers(headers: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each header's name and its trailing parenthesis (the unit, ``(J)``, or a group's size)
    apart, for a two-line header that keeps columns narrow; ``""`` where there is none."""
    names, units = [], []
    for h in headers:
        m = _TRAILING_PARENS.match(h)
        names.append(m.group(1) if m else h)
        units.append(m.group(2) if m else "")
    return names, units


def render_booktabs(headers: Sequence[str], rows: Sequence[Sequence[str]],
                    align: Sequence[str] | None = None, *, caption: str | None = None,
                    label: str | None = None, rules_before: Iterable[int] = (),
                    float_env: bool = True, raw_caption: bool = False) -> str:
    """A booktabs table (``\\toprule``, ``\\midrule``, ``\\bottomrule``, no vertical
    rules) of escaped cells, in a ``table`` float with ``caption`` (escaped unless
    ``raw_caption``) and ``label`` when ``float_env``. ``rules_before``: indices of rows
    preceded by a ``\\midrule`` (a total, a block of text rows). Needs ``booktabs``."""
    align = list(align or ["l"] + ["r"] * (len(headers) - 1))
    before = set(rules_before)
    names, units = split_headers(headers)
    body = [r"\begin{tabular}{" + "".join(align) + "}", r"\toprule",
            " & ".join(latex_header(h) for h in names) + r" \\"]
    if any(units):
        body.append(" & ".join(latex_header(u) for u in units) + r" \\")
    body.append(r"\midrule")
    for i, row in enumerate(rows):
        if i in before and i:
            body.append(r"\midrule")
        cells = [latex_cell(c, a == "r") for c, a in zip(row, align, strict=True)]
        cells[0] = cells[0].replace("CO2e", r"CO\textsubscript{2}e")  # a figure's unit
        body.append(" & ".join(cells) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}"]
    if not float_env:
        return "\n".join(body)
    head = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        head.append(r"\caption{" + (caption if raw_caption else latex_escape(caption)) + "}")
    if label:
        head.append(r"\label{" + check_label(label) + "}")
    return "\n".join([*head, *body, r"\end{table}"])


def render_latex(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 align: Sequence[str] | None = None) -> str:
    """A bare booktabs ``tabular`` (no float) with escaped cells."""
    return render_booktabs(headers, rows, align, float_env=False)


def latex_comment(text: str) -> str:
    """``text`` as LaTeX comment lines (``% ...``), control characters escaped."""
    return "\n".join("% " + _visible(line) for line in _NEWLINES.split(text))



def render_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header of ``columns``; None is empty, mappings ``k=v;...``, lists ``a;b``."""
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


def render(fmt: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
           align: Sequence[str] | None = None) -> str:
    """``headers`` and ``rows`` as a ``table``, ``markdown`` or ``latex`` table."""
    if fmt == "markdown":
        return render_markdown(headers, rows, align)
    if fmt == "latex":
        return render_latex(headers, rows, align)
    return render_table(headers, rows, align)
