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


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[str]],
                    align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)

    def cell(text: str) -> str:
        return text.replace("|", r"\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$"}
_LATEX_SPECIAL = re.compile("|".join(re.escape(k) for k in _LATEX_ESCAPES))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (± and × as math)."""
    return _LATEX_SPECIAL.sub(lambda m: _LATEX_ESCAPES[m.group(0)], text)


def render_latex(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 align: Sequence[str] | None = None) -> str:
    """A ``tabular`` (booktabs-free: ``\\hline`` rules) with escaped cells."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    lines = [r"\begin{tabular}{" + "".join(align) + "}", r"\hline",
             " & ".join(latex_escape(h) for h in headers) + r" \\", r"\hline"]
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


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
