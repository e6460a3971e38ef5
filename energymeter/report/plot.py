"""Figures of one run, and the style every energymeter figure shares.

* :func:`draw_timeline`: the run's power over time per channel (W against s, from
  ``samples.csv``), its phases shaded and labelled; estimated channels dashed and marked
  ``(estimated)`` (a ``mixed`` channel only where it was estimated: solid before, dashed after),
  sub-zones and ``psys`` dotted and marked as not in the total.
* :func:`draw_breakdown`: energy by kind as stacked bars (J, Wh or kWh by magnitude); energy a
  model estimated is hatched (of a ``mixed`` channel, the part estimated).
* :func:`draw_energy_curves`: a logged metric against cumulative energy.
* :func:`plot_report` (what :meth:`Report.plot` calls) puts one of them on a figure;
  :func:`save_figure` writes PNG, PDF or SVG by the file's extension.

matplotlib (the ``plot`` extra) is imported only inside these functions, never when the
package is. Figures are sized for a paper's column (3.4 in wide, 8-9 pt text) in the
Okabe-Ito colour-blind-safe palette. A figure is a :class:`matplotlib.figure.Figure` that
pyplot does not manage (no global state, no display needed; Jupyter shows it as the cell's
value), unless a script (not IPython) has imported ``matplotlib.pyplot``: then it is made with
pyplot, so that ``plt.show()`` shows it.
Figures of many runs (a panel per run, groups, comparisons) are drawn by
:mod:`energymeter.analysis.plots`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EnergyMeterError, ReportError
from ..probes.base import KINDS
from ..store import SAMPLES_NAME
from .bases import BASIS_LABEL
from .render import estimated_in_total
from .samples import timeline
from .tables import energy_unit
from .target import parse_target

if TYPE_CHECKING:
    from .model import Report
    from .values import Phase

#: What installs matplotlib for energymeter.
PLOT_INSTALL = "pip install 'energymeter-ml[plot]'"
#: The oldest matplotlib the figures are drawn with (legends placed "outside" the axes).
MIN_MATPLOTLIB = (3, 7)

#: The figures of one run (:meth:`Report.plot`).
REPORT_KINDS = ("timeline", "breakdown", "energy-to-target")
#: The file formats written, by extension.
FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 200

#: A single panel's size: a two-column paper's column width, and a height that keeps the
#: plot area readable with a legend above it.
COLUMN_WIDTH_IN = 3.4
HEIGHT_IN = 2.5

#: Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2008).
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
#: Colours of groups and runs, in order (yellow last: it is faint on white).
SERIES_COLOURS = tuple(OKABE_ITO[c] for c in ("blue", "orange", "green", "vermillion",
                                              "purple", "sky", "black", "yellow"))
#: The colour of each energy kind (the same in every figure).
KIND_COLOURS = {"cpu": OKABE_ITO["blue"], "dram": OKABE_ITO["green"],
                "gpu": OKABE_ITO["vermillion"], "soc": OKABE_ITO["purple"],
                "psys": "#555555"}
GREY = "#777777"
#: Hatching of energy a model estimated (breakdown bars).
ESTIMATED_HATCH = "////"

#: A channel's power is averaged over at least this many updates of its counter (its
#: ``resolution_s``), as the peak power is (``sampling.aggregate.PEAK_WINDOW_RESOLUTIONS``): a
#: counter that updates every 100 ms read every 10 ms would otherwise alternate between 0 W and
#: ten times its power (a comb), and one update more or less in a window moves it by at most
#: a tenth. The plotted maximum is then comparable with the report's ``peak_power_w``.
TIMELINE_RESOLUTIONS = 10
#: At most about this many points per channel: longer runs are averaged over longer windows
#: (energy-conserving; a 3.4 in wide figure shows no more).
MAX_POINTS = 800

#: Every figure's style (matplotlib rcParams), applied while it is drawn and saved.
STYLE: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9,
    "axes.linewidth": 0.6, "lines.linewidth": 1.1, "patch.linewidth": 0.5,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5,
    "ytick.major.size": 2.5, "xtick.minor.visible": False, "ytick.minor.visible": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False,
    "legend.frameon": False, "legend.handlelength": 2.2, "legend.columnspacing": 1.2,
    "legend.borderaxespad": 0.2, "hatch.linewidth": 0.6, "errorbar.capsize": 2.0,
    "savefig.dpi": DEFAULT_DPI, "figure.dpi": 100,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in PDF: no Type 3 fonts (publishers)
    "figure.constrained_layout.h_pad": 0.02, "figure.constrained_layout.w_pad": 0.02,
}


class PlotDependencyError(EnergyMeterError, ImportError):
    """matplotlib, which figures need, is not installed (or too old)."""


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, or :class:`PlotDependencyError` saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PlotDependencyError(
            f"figures need matplotlib, which is not installed: {PLOT_INSTALL}") from None
    version = tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_MATPLOTLIB:
        raise PlotDependencyError(
            f"figures need matplotlib >= {'.'.join(map(str, MIN_MATPLOTLIB))}, found "
            f"{matplotlib.__version__}: pip install -U 'energymeter-ml[plot]'")
    return matplotlib


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Draw (and save) in energymeter's figure style."""
    mpl = require_matplotlib()
    with mpl.rc_context(STYLE):
        yield


def new_figure(width_in: float | None, height_in: float | None, nrows: int = 1,
               ncols: int = 1, **subplots: Any) -> tuple[Any, list[Any]]:
    """A constrained-layout figure (``width_in`` × ``height_in``, defaults: a column's width
    and :data:`HEIGHT_IN` per row of panels) and its axes, row by row. Call inside
    :func:`style`."""
    require_matplotlib()
    size = (width_in or COLUMN_WIDTH_IN, height_in or HEIGHT_IN)
    for name, value in (("width", size[0]), ("height", size[1])):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.5 <= value <= 50):
            raise ReportError(f"figure {name} {value!r} in is not accepted; accepted: inches "
                              "from 0.5 to 50 (a column is about 3.4, a page 7)")
    if "matplotlib.pyplot" in sys.modules and not _in_ipython():
        # A script that uses pyplot: a pyplot figure, so that plt.show() shows it.
        fig = sys.modules["matplotlib.pyplot"].figure(figsize=size, layout="constrained")
    else:  # no global state; in Jupyter shown once, as the cell's value (_repr_png_)
        fig = _figure_class()(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, [ax for row in axes for ax in row]


#: The resolution of a figure shown in Jupyter.
NOTEBOOK_DPI = 150


def _in_ipython() -> bool:
    """Whether this runs under IPython (Jupyter): a pyplot figure would be shown twice there
    (by the inline backend, and as the cell's value)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return get is not None and get() is not None


@functools.lru_cache(maxsize=1)
def _figure_class() -> type:
    from matplotlib.figure import Figure

    class ReportFigure(Figure):
        """A matplotlib Figure that Jupyter shows without pyplot (as a PNG)."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            with style():
                self.savefig(buffer, format="png", dpi=NOTEBOOK_DPI)
            return buffer.getvalue()

    return ReportFigure


def check_output(output: str | Path) -> str:
    """The format of ``output`` by its extension (``png``, ``pdf``, ``svg``), or a
    :class:`ReportError` saying what is accepted."""
    suffix = Path(output).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ReportError(f"cannot tell the figure format of {output}: accepted file "
                          f"extensions: {', '.join('.' + f for f in FORMATS)}")
    return suffix


def save_figure(fig: Any, output: str | Path, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` to ``output`` (PNG at ``dpi``, PDF or SVG, by the extension) at its own
    size (a column-wide figure stays column-wide: no tight bounding box)."""
    fmt = check_output(output)
    if not (isinstance(dpi, int) and 30 <= dpi <= 2400):
        raise ReportError(f"dpi {dpi!r} is not accepted; accepted: a whole number from 30 to "
                          "2400 (default 200; 300 or more for print)")
    metadata: dict[str, Any] = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt, {})
    path = Path(output)
    with style():
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
    return path


# -- units -------------------------------------------------------------------------------------
def time_unit(max_s: float) -> tuple[str, float]:
    """``(unit, seconds per unit)``: s below 10 min, min below 2 h, then h."""
    if max_s >= 7200:
        return "h", 3600.0
    if max_s >= 600:
        return "min", 60.0
    return "s", 1.0


def kind_colours(kinds: Sequence[str]) -> dict[str, str]:
    return {k: KIND_COLOURS.get(k, SERIES_COLOURS[i % len(SERIES_COLOURS)])
            for i, k in enumerate(kinds)}


def series_colour(index: int) -> str:
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]


def run_label(report: Report) -> str:
    return f"{report.name} ({report.run_id[:8]})"



#: The height one more row of a legend takes (7 pt text, 1.3 line spacing), in inches.
LEGEND_ROW_IN = 0.135


def legend_above(ax: Any, handles: Sequence[Any] | None = None, *, most: int = 3,
                 figure: bool = False) -> int:
    """A legend above ``ax`` (``figure``: above all panels of its figure) in as many columns
    (at most ``most``) as fit the figure's width; returns its number of rows."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        labels = [h.get_label() for h in handles]
    room_in = ax.figure.get_figwidth() - 0.45  # less the y axis' labels
    longest = max((len(label) for label in labels), default=0)
    ncol = next((n for n in range(most, 0, -1)
                 if n * (0.056 * longest + 0.42) <= room_in), 1)
    ncol = min(ncol, max(len(labels), 1))
    if figure:
        ax.figure.legend(handles, labels, loc="outside upper left", ncol=ncol)
    else:
        ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=ncol)
    return math.ceil(len(labels) / ncol)


def grow_for_legend(fig: Any, rows: int, height_given: bool, base_rows: int = 2) -> None:
    """Make room for a legend of more than ``base_rows`` rows by making the figure taller
    (never when the caller chose its height)."""
    if not height_given and rows > base_rows:
        fig.set_figheight(fig.get_figheight() + (rows - base_rows) * LEGEND_ROW_IN)


# -- timeline ----------------------------------------------------------------------------------
def timeline_window_s(report: Report, resolution_s: float) -> float:
    """The shortest interval a channel's power is averaged over in a timeline: at least
    :data:`TIMELINE_RESOLUTIONS` updates of its counter, and at least the run's duration over
    :data:`MAX_POINTS` (0: every sample)."""
    return max(TIMELINE_RESOLUTIONS * resolution_s, report.duration_s / MAX_POINTS)


def top_phases(report: Report, nested: Sequence[Report] = ()) -> list[Phase]:
    """The run's top-level phases, or, when it has none, those of the runs ``nested`` in it
    (a ``measure()`` inside ``energymeter run``), moved to the run's clock."""
    from dataclasses import replace

    own = [p for p in report.phases if p.parent is None]
    if own or not nested:
        return own
    out = []
    for child in sorted(nested, key=lambda r: r.started_at):
        offset = (child.started_at - report.started_at).total_seconds()
        out += [replace(p, start_s=p.start_s + offset, end_s=p.end_s + offset)
                for p in child.phases if p.parent is None]
    return out


def _channel_label(report: Report, cid: str) -> tuple[str, str]:
    """(legend label, line style) of channel ``cid``."""
    channel = next(c.channel for c in report.channels if c.channel.id == cid)
    label = cid if cid.startswith(channel.kind) else f"{cid} ({channel.kind})"
    notes = []
    if channel.method == "model":
        notes.append("estimated")
    if channel.is_subzone:
        notes.append(f"part of {channel.part_of}, not in total")
    elif not channel.in_total:
        notes.append("platform, not in total")
    style_ = ":" if not channel.in_total else "--" if channel.method == "model" else "-"
    return (f"{label} ({'; '.join(notes)})" if notes else label), style_


def _plot_mixed(ax: Any, x: Sequence[float], power: Sequence[float], from_x: float,
                until_x: float | None, label: str, *, unit: str, colour: str,
                linestyle: str, width: float) -> None:
    """A ``mixed`` channel's power: solid where measured, dashed and marked ``(estimated)``
    from ``from_x`` (until ``until_x``, else to the end; in the axis' ``unit``), a thin mark
    where estimation began. The dashed part joins the measured points either side of it, so
    the line is unbroken."""
    nan = float("nan")
    estimated = [from_x <= t and (until_x is None or t <= until_x) for t in x]
    last = len(x) - 1
    dashed = [e or (i < last and estimated[i + 1]) or (i > 0 and estimated[i - 1])
              for i, e in enumerate(estimated)]
    ax.plot(x, [nan if e else p for p, e in zip(power, estimated, strict=True)],
            color=colour, ls=linestyle, label=label, zorder=2, lw=width)
    window = (f"after {from_x:.3g} {unit}" if until_x is None
              else f"{from_x:.3g}–{until_x:.3g} {unit}")
    note = f"estimated {window}"
    # Above the total (which it may equal once the other channels stop): the part to notice.
    ax.plot(x, [p if keep else nan for p, keep in zip(power, dashed, strict=True)],
            color=colour, ls="--", zorder=4, lw=width,
            label=f"{label[:-1]}; {note})" if label.endswith(")") else f"{label} ({note})")
    ax.axvline(from_x, color=colour, ls=":", lw=0.6, zorder=1)


def _phase_labels(phases: Sequence[Phase]) -> list[str]:
    """Phase names, a prefix all share (``epoch-``) kept on the first only: ``epoch-1``,
    ``2``, ``3``."""
    names = [p.name for p in phases]
    if len(names) < 2:
        return names
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    cut = max((i + 1 for i, ch in enumerate(prefix) if not ch.isalnum()), default=0)
    if cut == 0 or any(len(n) == cut for n in names):
        return names
    return [names[0], *(n[cut:] for n in names[1:])]


def draw_phases(ax: Any, phases: Sequence[Phase], divisor: float, width_in: float) -> bool:
    """Shade each phase (alternating greys, so that adjacent phases stay apart) and label it at
    the top of the axes where its name fits. True if any label was drawn."""
    from matplotlib.transforms import blended_transform_factory

    if not phases:
        return False
    left, right = ax.get_xlim()
    span = (right - left) or 1.0
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    labelled = False
    names = [p.name for p in phases]
    ax.axvspan(0, 0, color="#000000", alpha=0.10, lw=0, zorder=0,
               label=f"phases ({names[0]} … {names[-1]})" if len(names) > 1
               else f"phase {names[0]}")  # the legend's entry (zero width)
    for i, (phase, text) in enumerate(zip(phases, _phase_labels(phases), strict=True)):
        start, end = phase.start_s / divisor, phase.end_s / divisor
        ax.axvspan(start, end, color="#000000", alpha=0.10 if i % 2 == 0 else 0.05, lw=0,
                   zorder=0)
        room_in = (end - start) / span * width_in
        if room_in >= 0.05 * len(text) + 0.03:  # ~0.05 in a character at 6.5 pt
            ax.text((start + end) / 2, 0.98, text, transform=trans, ha="center", va="top",
                    fontsize=6.5, color="#333333", clip_on=True)
            labelled = True
    return labelled


def draw_timeline(ax: Any, report: Report, *, nested: Sequence[Report] = (),
                  window_s: float | None = None, time_divisor: float | None = None,
                  x_max_s: float | None = None) -> None:
    """Draw ``report``'s power per channel over time on ``ax`` (see the module's doc).

    ``window_s``: the shortest averaging interval for every channel (default: per channel,
    :func:`timeline_window_s`); ``nested``: runs nested in it, whose phases are shown when it
    has none; ``time_divisor``: seconds per unit of the x axis (default: by duration);
    ``x_max_s``: the end of the x axis (default: the run's end; panels share the longest). Raises
    :class:`ReportError` naming the missing ``samples.csv`` of a run that has none."""
    if report.path is None or not (report.path / SAMPLES_NAME).is_file():
        where = f"{report.path}/{SAMPLES_NAME}" if report.path is not None else SAMPLES_NAME
        raise ReportError(f"run {run_label(report)} has no {where}: a timeline is drawn from "
                          "a run directory's samples (its report.json alone has totals, not "
                          "power over time)")
    if not report.channels:
        raise ReportError(f"run {run_label(report)} measured no channel: no timeline to draw")
    if window_s is not None and not (math.isfinite(window_s) and window_s >= 0):
        raise ReportError(f"window {window_s!r} s is not accepted; accepted: 0 (every sample) "
                          "or more seconds")
    if time_divisor is None:
        time_divisor = time_unit(report.duration_s)[1]
    channels = [c.channel for c in report.channels]
    windows: dict[float, list[str]] = {}
    for ch in channels:
        w = window_s if window_s is not None else timeline_window_s(report, ch.resolution_s)
        windows.setdefault(w, []).append(ch.id)
    series: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    for w, ids in windows.items():
        tl = timeline(report, ids, min_interval_s=w)
        for cid in ids:
            series[cid] = (tl.t_s, tl.power_w[cid])
    colours: dict[str, str] = {}
    used: set[str] = set()
    for ch in channels:  # the kind's colour first, then unused palette colours
        colour = KIND_COLOURS.get(ch.kind, GREY)
        if colour in used:
            colour = next((c for c in SERIES_COLOURS if c not in used), GREY)
        colours[ch.id] = colour
        used.add(colour)
    peak = 0.0
    in_total = [c.id for c in channels if c.in_total]
    if len(in_total) >= 2:
        w = max(w for w, ids in windows.items() if set(ids) & set(in_total))
        tl = timeline(report, in_total, min_interval_s=w)
        total = [sum(vals) for vals in zip(*(tl.power_w[c] for c in in_total), strict=True)]
        estimated = any(c.method in ("model", "mixed") for c in channels if c.in_total)
        ax.plot([t / time_divisor for t in tl.t_s], total, color=OKABE_ITO["black"], lw=1.3,
                label="total" + (" (partly estimated)" if estimated else ""), zorder=3)
        peak = max((p for p in total if math.isfinite(p)), default=0.0)
    parts = {c.channel.id: c.estimated for c in report.channels
             if c.channel.method == "mixed" and c.estimated is not None}
    for ch in channels:
        t_s, power = series[ch.id]
        label, linestyle = _channel_label(report, ch.id)
        x = [t / time_divisor for t in t_s]
        width = 1.1 if ch.in_total else 0.9
        part = parts.get(ch.id)
        if part is None:
            ax.plot(x, power, color=colours[ch.id], ls=linestyle, label=label, zorder=2,
                    lw=width)
        else:
            _plot_mixed(ax, x, power, part.from_s / time_divisor,
                        None if part.until_s is None else part.until_s / time_divisor,
                        label, unit={1.0: "s", 60.0: "min", 3600.0: "h"}.get(time_divisor, "s"),
                        colour=colours[ch.id], linestyle=linestyle, width=width)
        peak = max(peak, max((p for p in power if math.isfinite(p)), default=0.0))
    ax.set_xlim(0, (x_max_s or report.duration_s) / time_divisor or 1.0)
    unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(time_divisor, "s")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("power, machine (W)")
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    labelled = draw_phases(ax, top_phases(report, nested), time_divisor, width_in)
    ax.set_ylim(0, (peak or 1.0) * (1.22 if labelled else 1.05))


def set_bar_labels(ax: Any, labels: Sequence[str]) -> None:
    """Label bars 0, 1, ...; turned by 30° when the longest line of a label is wider than a
    bar's share of the axes (about 0.055 in a character at 7 pt)."""
    ax.set_xticks(range(len(labels)), labels)
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    if labels and longest * 0.055 > 0.92 * width_in / len(labels):
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_ha("right")
            tick.set_rotation_mode("anchor")


# -- breakdown ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    """One stacked bar of a breakdown: energy (J) by kind, how each kind was obtained, and the
    95 % CI of the total (``ci``) when the bar is a group's mean."""

    label: str
    energy_j: Mapping[str, float]
    methods: Mapping[str, str] = field(default_factory=dict)
    ci: tuple[float, float] | None = None
    #: Joules of a kind a model estimated where it was measured in part only (``mixed``):
    #: that part of its bar is hatched. A kind absent here is hatched whole when its methods
    #: say ``model``.
    estimated_j: Mapping[str, float] = field(default_factory=dict)


def report_bar(report: Report, label: str | None = None) -> Bar:
    by_kind = report.energy_j["by_kind"]
    methods = {k: report.methods(k) for k in by_kind}
    estimated = {k: sum(c.estimated_j for c in report.channels
                        if c.channel.kind == k and not c.channel.is_subzone)
                 for k, m in methods.items() if "mixed" in m}
    return Bar(label or report.name, dict(by_kind), methods, estimated_j=estimated)


def draw_breakdown(ax: Any, bars: Sequence[Bar], *, basis: str = "machine") -> int:
    """Stacked bars of energy by kind (in the order of ``probes.base.KINDS``), the total over
    each (with its CI as an error bar where given); kinds a model estimated are hatched,
    ``psys`` (which already contains the others) is an outline beside the stack; the axis
    names the energy ``basis`` the bars are on. Returns the rows of its legend."""
    from matplotlib.patches import Patch

    if not bars:
        raise ReportError("no run to draw: give at least one run")
    present = [k for k in KINDS if any(b.energy_j.get(k) for b in bars)]
    present += sorted({k for b in bars for k in b.energy_j} - set(KINDS) - set(present))
    stacked = [k for k in present if k != "psys"]
    tops = [max(sum(b.energy_j.get(k, 0.0) or 0.0 for k in stacked),
                b.ci[1] if b.ci else 0.0, b.energy_j.get("psys") or 0.0) for b in bars]
    unit, div = energy_unit(max(tops, default=0.0))
    colours = kind_colours(present)
    x = list(range(len(bars)))
    width = 0.6 if "psys" not in present else 0.45
    estimated_any = False
    for kind in stacked:
        heights = [(b.energy_j.get(kind) or 0.0) / div for b in bars]
        bottoms = [sum((b.energy_j.get(k) or 0.0) for k in stacked[:stacked.index(kind)]) / div
                   for b in bars]
        for xi, h, bottom, b in zip(x, heights, bottoms, bars, strict=True):
            if h <= 0:
                continue
            # The estimated part on top of the measured one (all of it for a model).
            if kind in b.estimated_j:
                estimated_h = min(max((b.estimated_j[kind] or 0.0) / div, 0.0), h)
            else:
                estimated_h = h if "model" in b.methods.get(kind, "") else 0.0
            estimated_any |= estimated_h > 0
            if h - estimated_h > 0:
                ax.bar(xi, h - estimated_h, width, bottom=bottom, color=colours[kind],
                       edgecolor=colours[kind], lw=0.4, zorder=2)
            if estimated_h > 0:
                ax.bar(xi, estimated_h, width, bottom=bottom + h - estimated_h,
                       color=colours[kind], edgecolor="white", lw=0.4, hatch=ESTIMATED_HATCH,
                       zorder=2)
    totals = [sum((b.energy_j.get(k) or 0.0) for k in stacked) / div for b in bars]
    for xi, total, b in zip(x, totals, bars, strict=True):
        top = total
        if b.ci is not None and b.ci[0] is not None and b.ci[1] is not None:
            ax.errorbar(xi, total, yerr=[[total - b.ci[0] / div], [b.ci[1] / div - total]],
                        fmt="none", ecolor="black", elinewidth=0.7, zorder=4)
            top = b.ci[1] / div
        ax.annotate(f"{total:.3g}", (xi, top), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=6.5)
    if "psys" in present:
        psys = [(b.energy_j.get("psys") or 0.0) / div for b in bars]
        ax.bar([xi + width * 0.75 for xi in x], psys, width * 0.45, fill=False,
               edgecolor=KIND_COLOURS["psys"], lw=0.8, ls="--", zorder=2)
    set_bar_labels(ax, [b.label for b in bars])
    ax.set_xlim(-0.7, len(bars) - 0.3)
    ax.set_ylabel(f"energy, {BASIS_LABEL[basis]} ({unit})")
    ax.set_ylim(0, max(max(tops, default=0.0) / div, 1e-12) * 1.15)
    handles = [Patch(facecolor=colours[k], edgecolor=colours[k], label=k) for k in stacked]
    if "psys" in present:
        handles.append(Patch(fill=False, edgecolor=KIND_COLOURS["psys"], ls="--",
                             label="psys (platform, not in total)"))
    if estimated_any:
        handles.append(Patch(facecolor="#bbbbbb", edgecolor="white", hatch=ESTIMATED_HATCH,
                             label="estimated (model)"))
    return legend_above(ax, handles, most=4)


# -- metric against energy ---------------------------------------------------------------------
#: Metrics that count progress rather than measure it: not the default metric of a curve.
COUNTERS = frozenset({"epoch", "step", "steps", "iteration", "iter", "batch", "global_step",
                      "samples", "tokens"})


def logged_metrics(report: Report) -> list[str]:
    """The numeric metrics ``report`` logged, in the order first logged."""
    out: dict[str, None] = {}
    for entry in report.logs:
        for name, value in entry.get("metrics", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(name, None)
    return list(out)


def default_metric(names: Sequence[str]) -> str | None:
    """The first of ``names`` that is not a progress counter (``epoch``, ``step``...), else
    the first."""
    return next((n for n in names if n not in COUNTERS), names[0] if names else None)


def metric_points(report: Report, metric: str, offset_j: float = 0.0
                  ) -> tuple[list[float], list[float]]:
    """(cumulative energy J + ``offset_j``, value) of every finite ``metric`` ``report``
    logged."""
    xs, ys = [], []
    for entry in report.logs:
        value = entry.get("metrics", {}).get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            continue
        xs.append(float(entry["energy_j"]) + offset_j)
        ys.append(float(value))
    return xs, ys


def infer_direction(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> str:
    """``">="`` when the metric mostly rises (accuracy), ``"<="`` when it falls (loss)."""
    rise = sum(ys[-1] - ys[0] for _, ys in curves if len(ys) >= 2)
    return "<=" if rise < 0 else ">="


@dataclass(frozen=True)
class CurveSeries:
    """What :func:`draw_energy_curves` draws for one run or group: each run's points (thin
    lines, or the line itself when there is one run), the mean curve and its band (x: mean
    energy, CI low, CI high; y: levels), and the mean energy to the target with its CI."""

    label: str
    colour: str
    runs: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    mean: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    band: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = None
    at_target: tuple[float, float | None, float | None] | None = None
    #: Whether a model estimated part of the energy (the x axis says so).
    estimated: bool = False


#: Line styles of the curves and markers of the marks at the target, by series, so that
#: series are told apart in greyscale too.
SERIES_MARKERS = ("D", "s", "^", "v", "P", "X", "<", ">")
SERIES_LINESTYLES = ("-", "--", "-.", ":")


def draw_energy_curves(ax: Any, series: Sequence[CurveSeries], metric: str,
                       target: tuple[str, float, str] | None = None,
                       band_label: str | None = None) -> int:
    """A metric (y) against cumulative energy (x): each run a thin line with its log points
    (a single run: a full line), each group's mean a thick line in a band, the target a dashed
    line with each series' mean energy to it marked (with its 95 % CI, in the series' colour
    and marker, offset vertically so that they never hide one another). Series differ in
    line style and marker as well as colour (greyscale). The x axis says when part of the
    energy was estimated by a model. Returns the rows of its legend."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import offset_copy

    xmax = max((x for s in series for xs, _ in s.runs for x in xs), default=0.0)
    xmax = max([xmax, *(max(s.band[2]) for s in series if s.band is not None and s.band[2])])
    unit, div = energy_unit(xmax)
    handles: list[Any] = []
    for i, s in enumerate(series):
        alone = len(s.runs) == 1 and s.mean is None
        style = SERIES_LINESTYLES[i % len(SERIES_LINESTYLES)]
        for xs, ys in s.runs:
            ax.plot([x / div for x in xs], ys, color=s.colour, lw=1.1 if alone else 0.6,
                    alpha=1.0 if alone else 0.45, marker="o", ms=2.5 if alone else 1.6,
                    ls=style, zorder=2)
        if s.band is not None:
            ys, low, high = s.band
            ax.fill_betweenx(ys, [v / div for v in low], [v / div for v in high],
                             color=s.colour, alpha=0.2, lw=0, zorder=1)
        if s.mean is not None:
            xs, ys = s.mean
            ax.plot([x / div for x in xs], ys, color=s.colour, lw=1.7, ls=style, zorder=3)
        handles.append(Line2D([], [], color=s.colour, lw=1.7 if s.mean else 1.1, ls=style,
                              marker=None if s.mean else "o", ms=2.5, label=s.label))
    if any(s.band is not None for s in series):
        handles.append(Patch(facecolor=GREY, alpha=0.35, lw=0,
                             label=band_label or "95 % CI"))
    if target is not None:
        name, value, direction = target
        ax.axhline(value, color=GREY, ls="--", lw=0.8, zorder=1)
        marked = False
        shown = [(i, s) for i, s in enumerate(series) if s.at_target is not None]
        for k, (i, s) in enumerate(shown):
            mean, low, high = s.at_target  # type: ignore[misc]
            xerr = None
            if low is not None and high is not None:
                xerr = [[(mean - low) / div], [(high - mean) / div]]
            lift = offset_copy(ax.transData, fig=ax.figure, units="points",
                               y=(k - (len(shown) - 1) / 2) * 4.5)
            ax.errorbar(mean / div, value, xerr=xerr, fmt=SERIES_MARKERS[i % len(SERIES_MARKERS)],
                        ms=4, color=s.colour, mec="black", mew=0.6, ecolor=s.colour,
                        elinewidth=1.1, capsize=2, zorder=5, transform=lift)
            marked = True
        text = f"{name} {'≥' if direction == '>=' else '≤'} {value:g}"
        handles.append(Line2D([], [], color=GREY, ls="--", lw=0.8,
                              marker="D" if marked else None, ms=4, mfc="white", mec="black",
                              label=text + (": mean energy, 95 % CI" if marked else "")))
    ax.set_xlim(left=0)
    estimated = ", incl. estimated" if any(s.estimated for s in series) else ""
    ax.set_xlabel(f"cumulative energy, machine{estimated} ({unit})")
    ax.set_ylabel(metric)
    return legend_above(ax, handles, most=2)


# -- one run -----------------------------------------------------------------------------------
def check_kind(kind: str, kinds: Sequence[str] = REPORT_KINDS) -> str:
    if kind not in kinds:
        raise ReportError(f"figure kind {kind!r} unknown; accepted: {', '.join(kinds)}")
    return kind


def as_target(target: str | tuple[str, float, str] | None) -> tuple[str, float, str] | None:
    """``(metric, value, direction)`` of ``"val_acc=0.9"`` (see
    :func:`~energymeter.report.target.parse_target`), a tuple, or None."""
    return parse_target(target) if isinstance(target, str) else target


def choose_metric(metric: str | None, target: tuple[str, float, str] | None,
                  logged: Sequence[str], runs: str) -> str:
    """The metric to draw: ``metric``, else the target's, else :func:`default_metric` of
    ``logged``; a :class:`ReportError` when it was not logged (saying what was) or
    disagrees with the target."""
    if metric is not None and target is not None and metric != target[0]:
        raise ReportError(f"metric {metric!r} and target metric {target[0]!r} differ; give one "
                          "metric (the target's is drawn by default)")
    chosen = metric or (target[0] if target is not None else default_metric(logged))
    if chosen is None:
        raise ReportError(f"{runs} logged no numeric metric (Meter.log(val_acc=...)): no "
                          "curve to draw")
    if chosen not in logged:
        raise ReportError(f"{runs} logged no {chosen!r}; accepted: "
                          f"{', '.join(logged) or '(none logged)'}")
    return chosen


def plot_report(report: Report, kind: str = "timeline", ax: Any = None, *,
                width: float | None = None, height: float | None = None,
                window_s: float | None = None, metric: str | None = None,
                target: str | tuple[str, float, str] | None = None) -> Any:
    """A figure of ``report`` (see :meth:`Report.plot`): ``timeline``, ``breakdown`` or
    ``energy-to-target``; drawn on ``ax`` when given (its figure is returned)."""
    check_kind(kind)
    if kind != "timeline" and window_s is not None:
        raise ReportError("window_s applies to the timeline only")
    if kind != "energy-to-target" and (metric is not None or target is not None):
        raise ReportError("metric and target apply to the energy-to-target figure only")
    with style():
        own = ax is None
        if ax is None:
            fig, (ax,) = new_figure(width, height)
        else:
            fig = ax.figure
        if kind == "timeline":
            draw_timeline(ax, report, window_s=window_s)
            rows = legend_above(ax)
        elif kind == "breakdown":
            rows = draw_breakdown(ax, [report_bar(report)])
        else:
            parsed = as_target(target)
            logged = logged_metrics(report)
            hint = ("" if logged else "; a run measured inside it (measure() under energymeter "
                    "run) may have logged it: energymeter.plot([its run directory or folder], "
                    "kind='energy-to-target') reads such runs' logs")
            try:
                name = choose_metric(metric, parsed, logged, f"run {run_label(report)}")
            except ReportError as exc:
                raise ReportError(f"{exc}{hint}") from None
            at = None
            if parsed is not None:
                result = report.energy_to(*parsed)
                at = (result["energy_j"], None, None) if result["reached"] else None
            points = tuple(map(tuple, metric_points(report, name)))
            rows = draw_energy_curves(ax, [CurveSeries(run_label(report), series_colour(0),
                                                       (points,), at_target=at,
                                                       estimated=estimated_in_total(report))],
                                      name, parsed)
        grow_for_legend(fig, rows, height is not None or not own)
    return fig
