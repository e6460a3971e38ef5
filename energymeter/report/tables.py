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


def _place(value: float) -> int:
    """The power of ten of ``value``'s first significant digit."""
    return math.floor(math.log10(abs(value)))


def _fixed(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals`` (negative: to tens, hundreds...), never ``-0``."""
    text = f"{round(value, decimals):.0f}" if decimals < 0 else f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def ci_decimals(half_width: float) -> int:
    """The decimal place that shows ``half_width`` (> 0) with two significant digits
    (negative: a place left of the point, ``130``)."""
    decimals = 1 - _place(half_width)
    if abs(round(half_width, decimals)) >= 10 ** (2 - decimals):  # 0.0996 -> 0.10, not 0.100
        decimals -= 1
    return decimals


def format_ci(mean: float, half_width: float | None) -> tuple[str, str | None]:
    """``mean`` and the half-width of its confidence interval as shown: the half-width with
    two significant digits, the mean rounded to the same decimal place (``3.10``, ``0.31``);
    a half-width of 0 shows as ``0`` beside the mean's four significant digits. Without a
    half-width (None), the mean alone (:func:`format_number`) and None. A half-width > 0
    never shows as 0."""
    if half_width is None or not math.isfinite(half_width) or not math.isfinite(mean):
        return format_number(mean), None if half_width is None else f"{half_width}"
    half_width = abs(half_width)
    if half_width == 0:
        return format_number(mean), "0"
    decimals = ci_decimals(half_width)
    return _fixed(mean, decimals), _fixed(half_width, decimals)


#: SI prefixes and their factors, for figures scaled to read 0.1 to 999.
_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"),
             (1e-9, "n"))
#: Units that take an SI prefix (seconds only below 1: 3600 s stays in s), the largest
#: factor each takes.
_SCALED_UNITS = {"J": 1e9, "W": 1e6, "gCO2e": 1e3, "s": 1.0, "Wh": 1e6}


def scaled_unit(unit: str, magnitude: float) -> tuple[str, float]:
    """``(unit with an SI prefix, its size in unit)`` so that figures up to ``magnitude``
    read 0.1 to 999 (``mJ``, ``kJ``, ``µs``); ``unit`` unchanged for figures already in that
    range, for units without prefixes (``MiB``, ``%``) and for 0, inf, nan."""
    top = _SCALED_UNITS.get(unit)
    if (top is None or not magnitude or not math.isfinite(magnitude)
            or 0.1 <= abs(magnitude) < 1000):
        return unit, 1.0
    power = 1000.0 ** math.floor(_place(magnitude) / 3)
    for factor, prefix in _PREFIXES:
        if factor <= top and factor <= power * 1.0000001:
            return prefix + unit, factor
    return unit, 1.0


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
                  "µ": r"$\mu$", "Δ": r"$\Delta$", "→": r"$\to$", "†": r"\dag{}"}
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


# -- widths: fitting a LaTeX table to a column or a page ----------------------------------------
#: ``--width``: a table fits one column of a two-column paper, or the whole text width
#: (``table*``).
WIDTHS = ("column", "page")
#: The widths (pt) fitted: the standard ``article`` class in two columns (10 pt, letter
#: paper), the narrowest of the common two-column layouts (ACM's column is 241 pt, IEEE's
#: 252 pt), less 2 % for other fonts' wider figures.
WIDTH_PT = {"column": 229.5 * 0.98, "page": 469.0 * 0.98}

# Computer Modern Roman (cmr10, OT1) advance widths at 10 pt, from its TFM file; characters
# that typeset as a math symbol or another font's glyph are given that glyph's width.
_CHAR_PT: dict[str, float] = {}
for _width, _chars in ((2.78, "!',.:;[]`il"), (3.06, "fj"), (3.33, "- "), (3.61, "I"),
                       (3.89, "()t"), (3.92, "r"), (3.94, "s"), (4.44, "cez"), (4.72, "?"),
                       (5.0, "\"$*/0123456789\\^ago{}~_"), (5.14, "J"), (5.28, "kqvxy"),
                       (5.56, "Sbdhnpu"), (6.11, "Z"), (6.25, "L"), (6.53, "F"),
                       (6.81, "EP"), (7.08, "B"), (7.22, "CTw"), (7.36, "R"),
                       (7.5, "AHNUVXY"), (7.64, "D"), (7.78, "&+=@KOQ<>|±×−≥≤"), (7.85, "G"),
                       (4.44, "†"), (8.33, "#%mΔ…"), (9.17, "M"), (10.0, "→"), (10.28, "W")):
    _CHAR_PT.update(dict.fromkeys(_chars, _width))
_CHAR_PT["µ"] = 6.0


#: The sizes a table may be set in, largest first: (command, scale of a 10 pt font's
#: widths, \tabcolsep in pt). \small is cmr9 at 9 pt, \footnotesize cmr8 at 8 pt.
LATEX_SIZES = (("", 1.0, 6.0), (r"\small", 0.926, 4.0), (r"\footnotesize", 0.85, 3.0))


def text_width_pt(text: str, scale: float = 1.0) -> float:
    """The width (pt) ``text`` takes when typeset by :func:`latex_cell` in Computer Modern
    at 10 pt times ``scale`` (an estimate: exact for ASCII in cmr10, wider for the rest; an
    exponent ``e-06`` as the ``×10⁻⁶`` it becomes, its superscript counted full size)."""
    text = _LATEX_EXPONENT.sub(lambda m: f"{m.group(1)}×10{'−' if m.group(2) == '-' else ''}"
                                         f"{m.group(3)}", text)
    return scale * sum(_CHAR_PT.get(c, 7.0) for c in text)


#: Where a figure's cell may break: after ``;`` ``:``, after ``,`` unless a number follows
#: (an interval ``[−41.2, −38.8]`` stays whole), before ``[`` ``(``.
_FIGURE_BREAK = LazyPattern(r"(?<=[;:]) |(?<=,) (?![−+-]?\d)| (?=[\[(])")


def wrap_text(text: str, limit_pt: float, scale: float = 1.0, *, words: bool = True,
              cut: bool = True) -> list[str]:
    """``text`` in lines no wider than ``limit_pt`` where it can be: broken at spaces
    (``words``) or only where a figure may break (:data:`_FIGURE_BREAK`); a word wider than
    the limit is cut (``cut``; no character is lost)."""
    if text_width_pt(text, scale) <= limit_pt:
        return [text]
    parts = text.split(" ") if words else _FIGURE_BREAK.split(text)
    lines: list[str] = []
    for part in parts:
        if lines and text_width_pt(lines[-1] + " " + part, scale) <= limit_pt:
            lines[-1] += " " + part
            continue
        while words and cut and len(part) > 1 and text_width_pt(part, scale) > limit_pt:
            cut = max(1, max(i for i in range(1, len(part) + 1)
                             if i == 1 or text_width_pt(part[:i], scale) <= limit_pt))
            lines.append(part[:cut])
            part = part[cut:]
        lines.append(part)
    return [line for line in lines if line] or [""]


class Fitted:
    """How a table fits a width: its size command, ``\tabcolsep``, its cells as lines
    (wrapped), and the blocks of columns set one under the other (the first column in each)
    when it is split; ``width_pt`` its estimated width (the widest block)."""

    def __init__(self, size: str, tabcolsep_pt: float, headers: list[list[str]],
                 rows: list[list[list[str]]], blocks: list[list[int]], width_pt: float,
                 units: Sequence[str] = ()) -> None:
        self.size, self.tabcolsep_pt = size, tabcolsep_pt
        self.headers, self.rows, self.blocks, self.width_pt = headers, rows, blocks, width_pt
        self.units = list(units) or [""] * len(headers)

    def row_height_pt(self, cells: Sequence[Sequence[str]], block: Sequence[int]) -> float:
        """The height (pt) of a row of ``cells`` (each a list of lines) in ``block``."""
        return line_height_pt(max(len(cells[i]) for i in block), self.size)

    def tabular_height_pt(self, block: Sequence[int], rows: Sequence[int],
                          rules: int = 0) -> float:
        """The height (pt) of the tabular of ``block`` holding ``rows`` (indices) and
        ``rules`` midrules between them: its header lines, rows and booktabs rules."""
        head = self.row_height_pt(self.headers, block)
        if any(self.units[i] for i in block):
            head += line_height_pt(1, self.size)
        return (_RULES_PT + rules * _MIDRULE_PT + head
                + sum(self.row_height_pt(self.rows[r], block) for r in rows))

    def float_height_pt(self, pieces: Sequence[Piece] | None = None,
                        caption_tex: str | None = None, hsize_pt: float = 0.0,
                        rules_before: Iterable[int] = ()) -> float:
        """The height (pt) of the float holding ``pieces`` (default: every block with every
        row) one under the other, under ``caption_tex`` (LaTeX) set ``hsize_pt`` wide, with a
        midrule before the rows of ``rules_before`` (but a piece's first)."""
        if pieces is None:
            pieces = [(b, list(range(len(self.rows)))) for b in range(len(self.blocks))]
        before = set(rules_before)
        height = sum(self.tabular_height_pt(self.blocks[b], rows,
                                            len(before & set(rows[1:])))
                     for b, rows in pieces)
        height += _BLOCK_SKIP_PT * (len(pieces) - 1)
        if caption_tex:
            height += caption_height_pt(caption_tex, hsize_pt)
        return height


#: Part of a float: a block of columns (its index in :attr:`Fitted.blocks`) and the rows of
#: it shown (indices).
Piece = tuple[int, list[int]]


# -- heights: fitting a LaTeX float to the page's height -----------------------------------------
#: The height (pt) a float may take: the ``\textheight`` of the standard ``article`` class in
#: two columns (10 pt, letter paper: 550 pt, measured with pdflatex; A4's, ACM's and IEEE's
#: are taller), less 5 % for the estimate's error.
HEIGHT_PT = 550.0 * 0.95
#: Per size of :data:`LATEX_SIZES`: its font size and ``\baselineskip`` (pt) in the 10 pt
#: article (normal 10/12, ``\small`` 9/11, ``\footnotesize`` 8/9.5).
_SIZE_PT = {"": (10.0, 12.0), r"\small": (9.0, 11.0), r"\footnotesize": (8.0, 9.5)}
#: booktabs' rules of a tabular (top, mid under the header, bottom, with their separations)
#: and one more midrule between rows; the \par\medskip between blocks; measured.
_RULES_PT, _MIDRULE_PT, _BLOCK_SKIP_PT = 9.0, 5.1, 8.0
#: A caption's \abovecaptionskip and the line's skip to the tabular under it.
_CAPTION_SKIP_PT = 11.0
_TEX_REF = LazyPattern(r"\\(?:ref|pageref)\{[^{}]*\}")
_TEX_COMMAND = LazyPattern(r"\\[A-Za-z]+\*?|\\(?=[^A-Za-z])|[{}$]")


def line_height_pt(lines: int, size: str = "") -> float:
    r"""The height (pt) of a tabular row whose tallest cell has ``lines`` lines in ``size``
    (:data:`LATEX_SIZES`): a line is the size's ``\baselineskip``; a ``\shortstack``'s lines
    are 1 em (a bracket's height and depth) and ``\lineskip`` (3 pt) apart (measured with
    pdflatex, brackets included)."""
    font, skip = _SIZE_PT.get(size, _SIZE_PT[""])
    one = skip + 0.7
    return one if lines <= 1 else max(one, lines * font + (lines - 1) * 3.0 + 1.8)


def caption_height_pt(caption_tex: str, hsize_pt: float) -> float:
    r"""The height (pt) ``\caption{caption_tex}`` takes in a float ``hsize_pt`` wide: its
    skip and its lines (``Table 10: `` and the text, commands left out, wrapped at spaces),
    in the normal size whatever the float's (LaTeX sets a caption ``\normalsize``)."""
    _, skip = _SIZE_PT[""]
    text = "Table 10: " + _TEX_COMMAND.sub("", _TEX_REF.sub("10", caption_tex))
    lines = len(wrap_text(text, hsize_pt or WIDTH_PT["column"]))
    return _CAPTION_SKIP_PT + lines * skip


def _column_widths(headers: list[list[str]], rows: list[list[list[str]]], units: list[str],
                   scale: float) -> list[float]:
    cells = [headers, [[u] for u in units], *rows]
    return [max(text_width_pt(line, scale) for cell in (c[i] for c in cells) for line in cell)
            for i in range(len(units))]


def _wrapped(names: list[str], units: list[str], rows: Sequence[Sequence[str]],
             limit_pt: float, size: str, scale: float, sep: float,
             share: float | str | None, cut: bool, text: set[int]) -> Fitted | None:
    """The table in ``size`` with its cells wrapped to ``share`` of ``limit_pt`` (None: not
    wrapped; ``"fair"``: the first column to 0.4, the others to their share of the rest, a
    column narrower than an even share giving what it leaves to the wider ones; None where
    a share is narrower than 0.12), its width estimated."""
    columns = len(names)
    cap = math.inf if share is None else 0.4 * limit_pt if share == "fair" else (
        float(share) * limit_pt)
    head = [wrap_text(n, cap, scale, cut=False) for n in names]
    body = [[wrap_text(c, cap, scale, words=i in text, cut=cut) for i, c in enumerate(r)]
            for r in rows]
    if share == "fair" and columns > 1:
        first = _column_widths([head[0]], [[r[0]] for r in body], units[:1], scale)[0]
        caps = _fair_caps([[n] for n in names[1:]], [[[c] for c in r[1:]] for r in rows],
                          units[1:], scale, limit_pt - first - 2 * sep * (columns - 1))
        if min(caps) < 0.12 * limit_pt:
            return None
        head = [head[0], *[wrap_text(n, c, scale, cut=False)
                           for n, c in zip(names[1:], caps, strict=True)]]
        body = [[r[0], *[wrap_text(c, caps[i - 1], scale, words=i in text, cut=cut)
                         for i, c in enumerate(row[1:], 1)]]
                for r, row in zip(body, rows, strict=True)]
    widths = _column_widths(head, body, units, scale)
    total = sum(widths) + 2 * sep * (columns - 1)
    return Fitted(size, sep, head, body, [list(range(columns))], total, units)


def _fair_caps(headers: list[list[str]], rows: list[list[list[str]]], units: list[str],
               scale: float, room_pt: float) -> list[float]:
    """Each column's cap out of ``room_pt``: an even share, but a column whose cells are
    narrower (figures unwrapped, text to its longest word) takes only their width and
    leaves the rest to the others."""
    def demand(cell: list[str]) -> list[str]:
        text = cell[0]
        return text.split(" ") if text[:1].isalpha() else cell

    natural = _column_widths([demand(h) for h in headers],
                             [[demand(c) for c in r] for r in rows], units, scale)
    caps = [0.0] * len(natural)
    pending = set(range(len(natural)))
    while pending:
        even = room_pt / len(pending)
        narrow = [i for i in pending if natural[i] <= even]
        if not narrow:
            for i in pending:
                caps[i] = even
            break
        for i in narrow:
            caps[i] = natural[i]
            room_pt -= natural[i]
            pending.discard(i)
    return caps


def fit_table(headers: Sequence[str], rows: Sequence[Sequence[str]], limit_pt: float, *,
              text_columns: Iterable[int] = (0,), split: bool = True,
              height_pt: float | None = None, caption_tex: str | None = None,
              rules_before: Iterable[int] = ()) -> Fitted | None:
    """The largest of :data:`LATEX_SIZES` in which ``headers`` and ``rows`` fit ``limit_pt``
    with long cells wrapped: header names and the cells of ``text_columns`` at any space,
    figures' cells where a figure may break (:func:`wrap_text`), each column to no less than
    its longest word (a text cell's word cut only where nothing else fits). With
    ``height_pt``, the first way that also fits that height (the float under
    ``caption_tex``, :meth:`Fitted.float_height_pt`), else the shortest way that fits the
    width (cells in fewer lines, a smaller size; a word cut only where nothing else fits
    the width): the rows are then split among floats
    (:func:`render_fitted`). If nothing fits the width, the columns after the first split
    into blocks set one under the other (``split``; else None)."""
    names, units = split_headers(headers)
    text = set(text_columns)
    columns = len(headers)
    before = list(rules_before)
    shortest: tuple[bool, float, Fitted] | None = None
    for size, scale, sep in LATEX_SIZES:
        # the widest a wrapped cell may be (a share of the width) and whether a word wider
        # than that is cut; narrowest, and cut at last, in the smallest size; "fair": the
        # figures' columns share what the first leaves (fewer lines where the width allows)
        shares: list[tuple[float | str | None, bool]] = [(None, False), ("fair", False),
                                                          (0.4, False), (0.3, False)]
        if size == LATEX_SIZES[-1][0]:
            shares += [(0.22, False), (0.16, False), (0.12, False), (0.22, True), (0.16, True),
                       (0.12, True)]
        for share, cut in shares:
            fit = _wrapped(names, units, rows, limit_pt, size, scale, sep, share, cut, text)
            if fit is None or fit.width_pt > limit_pt:
                continue
            if height_pt is None:
                return fit
            height = fit.float_height_pt(None, caption_tex, limit_pt, before)
            if height <= height_pt:
                return fit
            if shortest is None or (cut, height) < (shortest[0], shortest[1] - 0.01):
                shortest = (cut, height, fit)  # a word cut only where nothing else fits
    if shortest is not None:
        return shortest[2]
    if not split or columns < 3:
        return None
    size, scale, sep = LATEX_SIZES[-1]
    cap = 0.22 * limit_pt
    head = [wrap_text(n, cap, scale, cut=False) for n in names]
    body = [[wrap_text(c, cap, scale, words=i in text) for i, c in enumerate(r)] for r in rows]
    widths = _column_widths(head, body, units, scale)
    blocks: list[list[int]] = [[0]]
    used = widths[0]
    for i in range(1, columns):
        if len(blocks[-1]) > 1 and used + 2 * sep + widths[i] > limit_pt:
            blocks.append([0])
            used = widths[0]
        blocks[-1].append(i)
        used += 2 * sep + widths[i]

    def block_width(block: list[int]) -> float:
        return sum(widths[i] for i in block) + 2 * sep * (len(block) - 1)

    size_each = -(-(columns - 1) // len(blocks))  # as even as the blocks can be
    even = [[0, *range(start, min(start + size_each, columns))]
            for start in range(1, columns, size_each)]
    if len(even) == len(blocks) and all(block_width(b) <= limit_pt for b in even):
        blocks = even
    width = max(block_width(b) for b in blocks)
    return Fitted(size, sep, head, body, blocks, width, units)


def _stack(lines: Sequence[str], align: str, numeric: bool, header: bool = False) -> str:
    cells = [latex_header(line) if header else latex_cell(line, numeric) for line in lines]
    # a line opening with [ would be read as the optional argument of the \\ before it
    cells = ["{}" + c if c.startswith("[") else c for c in cells]
    if len(cells) == 1:
        return cells[0]
    return r"\shortstack[" + ("r" if align == "r" else "l") + "]{" + r"\\".join(cells) + "}"


def render_fitted(headers: Sequence[str], rows: Sequence[Sequence[str]],
                  align: Sequence[str] | None = None, *, width: str = "column",
                  caption: str | None = None, label: str | None = None,
                  rules_before: Iterable[int] = (), raw_caption: bool = False,
                  text_columns: Iterable[int] | None = None, fitted: Fitted | None = None,
                  note: str | None = None, height_pt: float | None = HEIGHT_PT,
                  keep_with_previous: Iterable[int] = ()) -> str:
    """A booktabs table of escaped cells that fits ``width`` (:data:`WIDTHS`: one column of a
    two-column paper, in a ``table`` float, or the page, in ``table*``): set in the largest
    of :data:`LATEX_SIZES` that fits, long cells in lines (``\\shortstack``), and split into
    blocks of columns one under the other when nothing else fits (said in a comment before
    the float, with ``note``). Headers are a name and its unit (``energy (J)``) on two lines,
    figures right-aligned (``align``: ``l``/``r`` per column, default the first ``l``);
    ``text_columns`` (default: the ``l`` columns) wrap at any space, figures only between
    their parts. A float taller than ``height_pt`` (default :data:`HEIGHT_PT`; None: no
    limit) is first set shorter (:func:`fit_table`), then its rows are split among floats,
    each with the header: the first keeps ``caption`` and ``label``, the next are
    ``LABEL-2``, ``LABEL-3``... captioned ``Table N (continued)`` (said in the comment); no
    row is left out, none of ``keep_with_previous`` opens a float (a figure's difference
    stays under it) and a row that opens a group (``rules_before``) never ends one. Needs
    only booktabs."""
    check_width(width)
    align = list(align or ["l"] + ["r"] * (len(headers) - 1))
    if text_columns is None:
        text_columns = [i for i, a in enumerate(align) if a == "l"]
    before = set(rules_before)
    caption_tex = None
    if caption:
        caption_tex = caption if raw_caption else latex_escape(caption)
    limit = WIDTH_PT[width]
    fit = fitted or fit_table(headers, rows, limit, text_columns=text_columns,
                              height_pt=height_pt, caption_tex=caption_tex,
                              rules_before=before)
    assert fit is not None  # fit_table splits rather than fail
    if label:
        check_label(label)
    floats = _floats(fit, caption_tex, limit, before, height_pt, label,
                     set(keep_with_previous))
    comments = [note] if note else []
    if len(fit.blocks) > 1:
        comments.append(f"energymeter: {len(headers) - 1} columns do not fit the {width} "
                        f"width side by side: set in {len(fit.blocks)} blocks, one under the "
                        "other, each with the first column")
    if len(floats) > 1:
        labels = ", ".join(_continued_label(label, k) for k in range(len(floats))) if label \
            else "unlabelled"
        comments.append(f"energymeter: the {len(rows)} rows do not fit the page height in one "
                        f"float: split among {len(floats)} floats ({labels}), each with the "
                        "header")
    out = [latex_comment("\n".join(comments))] if comments else []
    for k, pieces in enumerate(floats):
        text = caption_tex if k == 0 else _continued_caption(caption_tex, label)
        out.append(_float(fit, align, width, pieces, before, text,
                          _continued_label(label, k) if label else None))
    return "\n".join(out)


def _continued_label(label: str, k: int) -> str:
    """The label of the ``k``-th float (from 0) of a table split among floats."""
    return label if k == 0 else f"{label}-{k + 1}"


def _continued_caption(caption_tex: str | None, label: str | None) -> str:
    """The caption of the floats after the first of a split table: ``Table N (continued).``
    by reference to the first (its caption, continued, without a label)."""
    if label:
        return r"Table \ref{" + label + "} (continued)."
    return (caption_tex or "Table") + " (continued)"


def _floats(fit: Fitted, caption_tex: str | None, limit_pt: float, before: set[int],
            height_pt: float | None, label: str | None, keep: set[int]
            ) -> list[list[Piece]]:
    """The pieces of each float of ``fit``: one float of every block and row where it fits
    ``height_pt`` (the first float under ``caption_tex``, the next under a continued
    caption); else block after block, rows in order, each float filled as far as it fits
    (a block starts in a float only where all of it fits there), every row of every block
    shown once. A row of ``keep`` never opens a piece and a row that opens a group (a rule
    before it) never ends one (where the piece has other rows)."""
    if height_pt is None or fit.float_height_pt(None, caption_tex, limit_pt,
                                                before) <= height_pt:
        return [[(b, list(range(len(fit.rows)))) for b in range(len(fit.blocks))]]
    floats: list[list[Piece]] = []
    last = list(range(len(fit.rows)))

    def fits(pieces: list[Piece]) -> bool:
        caption = caption_tex if len(floats) == 1 else _continued_caption(caption_tex, label)
        return fit.float_height_pt(pieces, caption, limit_pt, before) <= height_pt

    for b in range(len(fit.blocks)):
        if not floats or not fits([*floats[-1], (b, last)]):
            floats.append([])
        floats[-1].append((b, []))
        for r in last:
            rows = floats[-1][-1][1]
            if not rows or fits([*floats[-1][:-1], (b, [*rows, r])]):
                rows.append(r)
                continue
            opening = [r]
            while len(rows) > 1 and (opening[0] in keep or rows[-1] in before):
                opening.insert(0, rows.pop())
            floats.append([(b, opening)])
    return floats


def _float(fit: Fitted, align: Sequence[str], width: str, pieces: Sequence[Piece],
           before: set[int], caption_tex: str | None, label: str | None) -> str:
    """One float of ``fit`` holding ``pieces``, one tabular each, one under the other."""
    env = "table*" if width == "page" else "table"
    out = [r"\begin{" + env + "}[htbp]", r"\centering"]
    if fit.size:
        out.append(fit.size)
    if fit.tabcolsep_pt != LATEX_SIZES[0][2]:
        out.append(r"\setlength{\tabcolsep}{" + f"{fit.tabcolsep_pt:g}pt" + "}")
    if caption_tex:
        out.append(r"\caption{" + caption_tex + "}")
    if label:
        out.append(r"\label{" + label + "}")
    units = fit.units
    for k, (b, rows) in enumerate(pieces):
        block = fit.blocks[b]
        if k:
            out.append(r"\par\medskip")
        out += [r"\begin{tabular}{@{}" + "".join(align[i] for i in block) + "@{}}",
                r"\toprule",
                " & ".join(_stack(fit.headers[i], align[i], False, True) for i in block)
                + r" \\"]
        if any(units[i] for i in block):
            out.append(" & ".join(latex_header(units[i]) for i in block) + r" \\")
        out.append(r"\midrule")
        for n, r in enumerate(rows):
            if r in before and n:
                out.append(r"\midrule")
            cells = [_stack(fit.rows[r][i], align[i], align[i] == "r") for i in block]
            cells[0] = cells[0].replace("CO2e", r"CO\textsubscript{2}e")
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
    out.append(r"\end{" + env + "}")
    return "\n".join(out)


def check_width(width: str) -> str:
    """``width`` if it is one of :data:`WIDTHS`, else :class:`ReportError`."""
    if width not in WIDTHS:
        raise ReportError(f"width {width!r} unknown; accepted: {', '.join(WIDTHS)} (column: "
                          "one column of a two-column paper; page: the text width, table*)")
    return width


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
