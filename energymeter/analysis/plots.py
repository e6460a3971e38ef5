"""Figures of many runs (extra ``plot``; matplotlib is imported only while drawing), grouped
as ``energymeter compare`` groups them (:func:`~energymeter.analysis.groups.group_runs`):

* ``timeline``: one panel per run, power per channel over time (:func:`~energymeter.report.
  plot.draw_timeline`; a run of ``energymeter run`` shows the phases of the run nested in it).
* ``breakdown``: energy by kind, one stacked bar per group (its mean, with the 95 % CI of the
  total) or per run (``group=False``); estimated energy hatched.
* ``compare``: each group's mean of one figure of :func:`~energymeter.analysis.compare` with
  its 95 % CI, each run a dot, and against the first group the relative difference and
  Welch's p-value, as ``compare`` computed them.
* ``energy-to-target``: a logged metric against cumulative energy, each run a thin line, each
  group's mean curve in a band (:func:`level_band`: the mean and 95 % CI of the energy at
  which the runs first reach each level of the metric), the target a dashed line with each
  group's mean energy to it (:func:`~energymeter.analysis.target.target_results`).

:func:`plot` (``energymeter.plot``) returns the matplotlib Figure, saved when ``output`` is
given; ``energymeter plot`` is its command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lazy import LazyLogger
from ..errors import ReportError
from ..probes.base import KINDS
from ..report.bases import check_basis
from ..report.plot import (
    DEFAULT_DPI,
    HEIGHT_IN,
    Bar,
    CurveSeries,
    as_target,
    check_kind,
    check_output,
    choose_metric,
    draw_breakdown,
    draw_energy_curves,
    draw_timeline,
    grow_for_legend,
    infer_direction,
    legend_above,
    logged_metrics,
    metric_points,
    new_figure,
    run_label,
    save_figure,
    series_colour,
    set_bar_labels,
    style,
    time_unit,
)
from ..report.render import estimated_in_total, run_labels
from ..report.tables import energy_unit
from ..stats import summarize
from ..store import run_dir_started_at
from .compare import compare, comparison_warnings, metric_list, p_text, percent
from .find import find_runs
from .groups import Grouping, group_runs
from .target import energy_before, target_results

if TYPE_CHECKING:
    from ..report import Report

log = LazyLogger("energymeter")

#: The figures :func:`plot` draws.
KINDS_OF_FIGURE = ("timeline", "breakdown", "compare", "energy-to-target")
#: A timeline draws one panel per run, at most this many.
MAX_PANELS = 12
#: The height of each timeline panel when there are several (inches).
PANEL_HEIGHT_IN = 1.35
#: The levels of the metric at which a group's mean curve and band are computed.
LEVELS = 120
#: The figure ``compare`` draws by default.
DEFAULT_COMPARE_METRIC = "energy_total_j"

Target = tuple[str, float, str]


def compare_metrics(target: bool = True) -> list[str]:
    """The figures ``kind="compare"`` accepts as ``metric`` (those of
    :func:`~energymeter.analysis.compare`; the ``*_to_target_*`` ones with a target)."""
    return [key for key, *_ in metric_list(KINDS, per_item=True, baseline=True,
                                           target=("metric", 0.0, ">=") if target else None)]


def _pairs(runs: Any) -> list[tuple[str | None, Report]]:
    from ..report import Report

    items = [runs] if isinstance(runs, (str, Path, Report)) else list(runs)
    pairs: list[tuple[str | None, Report]] = []
    for item in items:
        if isinstance(item, Report):
            pairs.append((None, item))
        elif isinstance(item, (str, Path)):
            pairs += find_runs([item])
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Report)
              and (item[0] is None or isinstance(item[0], str))):
            pairs.append(item)  # (source, report), as find_runs gives them
        else:
            raise ReportError(f"cannot plot {type(item).__name__} {item!r}; accepted: run "
                              "directories, report.json files, folders of runs (paths), "
                              "Report objects or (source, Report) pairs from find_runs")
    if not pairs:
        raise ReportError("no run given; pass run directories, report.json files, an out "
                          "folder or Report objects")
    return pairs


def nested_runs(report: Report, grouping: Grouping) -> tuple[Report, ...]:
    """The runs nested in ``report`` (a ``measure()`` inside ``energymeter run``): those
    loaded with it, else, for a run of ``energymeter run``, those beside it in its folder (run
    directories whose name stamps a start within the run, and whose ``parent_run_id`` is this
    run's)."""
    loaded = grouping.nested.get(report.run_id, ())
    # Only a run of `energymeter run` (it has a command) holds nested runs.
    if loaded or report.command is None or report.path is None \
            or not report.path.parent.is_dir():
        return loaded
    from ..report import Report

    begin = report.started_at.replace(microsecond=0) - timedelta(seconds=1)
    end = report.ended_at + timedelta(seconds=1)
    found = []
    for path in sorted(report.path.parent.iterdir()):
        stamp = run_dir_started_at(path.name)
        if stamp is None or not begin <= stamp <= end or path == report.path \
                or not path.is_dir():
            continue
        try:
            child = Report.load(path)
        except (ReportError, OSError) as exc:
            log.debug("not a run nested in %s: %s (%s)", report.run_id[:8], path, exc)
            continue
        if child.parent_run_id == report.run_id:
            found.append(child)
    return tuple(found)


# -- timeline ----------------------------------------------------------------------------------
def _timeline(grouping: Grouping, width: float | None, height: float | None,
              window_s: float | None) -> Any:
    runs = [(g, r) for g in grouping.groups for r in (*g.runs, *g.warmup_runs)]
    if len(runs) > MAX_PANELS:
        raise ReportError(f"a timeline draws one panel per run: {len(runs)} runs given, at "
                          f"most {MAX_PANELS}; give fewer runs (run directories rather than a "
                          "folder of runs)")
    n = len(runs)
    fig, axes = new_figure(width, height or (HEIGHT_IN if n == 1 else 0.6 + PANEL_HEIGHT_IN * n),
                           nrows=n, sharex=n > 1)
    longest = max(r.duration_s for _, r in runs)
    divisor = time_unit(longest)[1]
    labels: dict[str, Any] = {}
    titles = run_labels([r for _, r in runs], warmup=False)
    for ax, (g, report), title in zip(axes, runs, titles, strict=True):
        draw_timeline(ax, report, nested=nested_runs(report, grouping),
                      window_s=window_s, time_divisor=divisor, x_max_s=longest)
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
        if n > 1:
            if grouping.by not in ("name", "run") and (grouping.by != "dir"
                                                       or len(g.runs) > 1) \
                    and not all(part in title for part in g.label.split()):
                title += f" · {g.label}"  # the group, where the run's tags do not say it
            ax.set_title(title + (" (warm-up)" if report.warmup else ""), loc="left",
                         fontsize=7.5, pad=2)
            ax.set_ylabel("")
            if ax is not axes[-1]:
                ax.set_xlabel("")
    if n > 1:  # one power scale for all panels
        top = max(ax.get_ylim()[1] for ax in axes)
        for ax in axes:
            ax.set_ylim(0, top)
        fig.supylabel("power, machine (W)", fontsize=8)
    rows = legend_above(axes[0], list(labels.values()), figure=n > 1)
    grow_for_legend(fig, rows, height is not None)
    return fig


# -- breakdown ---------------------------------------------------------------------------------
def _kinds_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [k for k in KINDS if any(row.get(f"energy_{k}_j") is not None for row in rows)]


def _breakdown(pairs: list[tuple[str | None, Report]], by: str, group: bool, nested: bool,
               width: float | None, height: float | None, basis: str = "machine") -> Any:
    rows = compare(pairs, by=by, group=group, nested=nested, basis=basis)
    by_id = {r.run_id: r for _, r in pairs}
    _warn([{**row, "warnings": [w for w in row["warnings"] if "energy basis" in w
                                or "different bases" in w]} for row in rows])
    kinds = _kinds_of(rows)
    bars = []
    for row in rows:
        if not row["n"]:
            log.warning("%s: no run to draw (only warm-up runs)", row["label"])
            continue
        ci = None
        if row["n"] >= 2 and row["energy_total_j_ci_low"] is not None:
            ci = (row["energy_total_j_ci_low"], row["energy_total_j_ci_high"])
        label = row["label"] if row["by"] == "run" else f"{row['label']}\nn={row['n']}"
        bars.append(Bar(label, {k: row[f"energy_{k}_j"] for k in kinds
                                if row.get(f"energy_{k}_j") is not None},
                        row["methods"], ci,
                        _estimated_in_part([by_id[i] for i in row["run_ids"]], kinds,
                                           basis)))
    fig, (ax,) = new_figure(width, height)
    grow_for_legend(fig, draw_breakdown(ax, bars, basis=basis), height is not None)
    return fig


def _estimated_in_part(runs: Sequence[Report], kinds: Sequence[str], basis: str
                       ) -> dict[str, float]:
    """The mean joules per kind a model estimated in channels measured in part (``mixed``),
    on ``basis`` (each run's estimate scaled by its basis' share of the kind's energy)."""
    out: dict[str, float] = {}
    for kind in kinds:
        total = 0.0
        seen = False
        for r in runs:
            part = sum(c.estimated_j for c in r.channels if c.channel.kind == kind
                       and c.channel.method == "mixed" and not c.channel.is_subzone)
            if not part:
                continue
            seen = True
            machine = r.energy_j["by_kind"].get(kind) or 0.0
            on = (r.energy_on(basis) or r.energy_on("machine")).by_kind.get(kind) or 0.0
            total += part * (on / machine if machine > 0 else 1.0)
        if seen and runs:
            out[kind] = total / len(runs)
    return out


# -- compare -----------------------------------------------------------------------------------
def _warn(rows: Sequence[dict[str, Any]]) -> None:
    for warning in comparison_warnings(rows):
        log.warning("%s", warning)


def check_compare_metric(metric: str, target: Target | None) -> str:
    """``metric`` if ``kind="compare"`` can draw it, else a :class:`ReportError` saying what
    is accepted."""
    if metric not in compare_metrics():
        raise ReportError(f"metric {metric!r} unknown for the compare figure; accepted: "
                          f"{', '.join(compare_metrics())}")
    if "to_target" in metric and target is None:
        raise ReportError(f"metric {metric} needs a target (target='val_acc=0.9', "
                          "--target METRIC=VALUE)")
    return metric


def _compare(pairs: list[tuple[str | None, Report]], by: str, group: bool, nested: bool,
             metric: str | None, target: Target | None, width: float | None,
             height: float | None, basis: str = "machine") -> Any:
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    metric = metric or DEFAULT_COMPARE_METRIC
    check_compare_metric(metric, target)
    rows = compare(pairs, by=by, group=group, nested=nested, target=target, basis=basis)
    _warn(rows)
    kinds = _kinds_of(rows)
    info = {key: (label, unit, div) for key, label, unit, div in
            metric_list(kinds, per_item=True, target=target, baseline=True,
                        memory_basis=rows[0].get("memory_basis"), basis=basis)}
    present = [k for k in info if f"{k}_ci_low" in rows[0]]
    if metric not in present or all(row[metric] is None for row in rows):
        have = [k for k in present if any(row[k] is not None for row in rows)]
        raise ReportError(f"no run has a value of {metric}; accepted for these runs: "
                          f"{', '.join(have)}")
    label, unit, div = info[metric]
    # Each run's own value, as compare computes it (one group per run).
    singles = compare(pairs, by=by, group=False, nested=nested, target=target, basis=basis)
    per_run = {row["run_ids"][0]: row[metric] for row in singles if row["run_ids"]}
    shown = [row for row in rows if row[metric] is not None]
    highs = [row[f"{metric}_ci_high"] or row[metric] for row in shown]
    highs += [v for row in shown for v in (per_run.get(i) for i in row["run_ids"])
              if v is not None]
    if unit == "J":
        unit, div = energy_unit(max(highs))
    estimated = (metric.startswith("energy") and "to_target" not in metric) or metric in (
        "baseline_idle_j", "baseline_net_j")
    fig, (ax,) = new_figure(width, height)
    hatched = False
    for i, row in enumerate(shown):
        colour = series_colour(i)
        mean = row[metric] / div
        model = estimated and any(("model" in m or "mixed" in m)
                                  for k, m in row["methods"].items()
                                  if metric in ("energy_total_j", "energy_per_item_j",
                                                "baseline_idle_j", "baseline_net_j")
                                  or metric == f"energy_{k}_j")
        hatched |= model
        ax.bar(i, mean, 0.6, color=to_rgba(colour, 0.45), edgecolor=colour, lw=0.8, zorder=1)
        if model:  # drawn apart, in grey: a hatch in the bar's own colour vanishes in SVG
            ax.bar(i, mean, 0.6, fill=False, hatch="////", edgecolor=to_rgba("black", 0.45),
                   lw=0, zorder=1.5)
        low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        top = mean
        if low is not None and high is not None:
            ax.errorbar(i, mean, yerr=[[mean - low / div], [high / div - mean]], fmt="none",
                        ecolor="black", elinewidth=0.8, capsize=2.5, zorder=3)
            top = high / div
        values = [per_run[r] for r in row["run_ids"] if per_run.get(r) is not None]
        for j, value in enumerate(values):
            offset = (j - (len(values) - 1) / 2) * min(0.08, 0.4 / max(len(values), 1))
            ax.plot(i + offset, value / div, "o", ms=2.6, color="black", alpha=0.75,
                    mew=0, zorder=4)
        top = max([top, *(v / div for v in values)])
        if i == 0:
            note = "reference"
        else:
            rel, p = row[f"{metric}_rel_diff"], row[f"{metric}_p_value"]
            note = "" if rel is None else percent(rel)
            note += "" if p is None else f"\n{p_text(p)}"
        ax.annotate(note, (i, top), xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", fontsize=6.5, linespacing=1.1)
    set_bar_labels(ax, [row["label"] if row["by"] == "run"
                        else f"{row['label']}\nn={row[metric + '_n']}" for row in shown])
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylim(0, max(highs) / div * 1.3)
    ax.set_ylabel(f"{label} ({unit})")
    ci = ax.errorbar([math.nan], [math.nan], yerr=[[0.0], [0.0]], fmt="none", ecolor="black",
                     elinewidth=0.8, capsize=2.5, label="mean, 95 % CI")
    handles = [ci, Line2D([], [], marker="o", ls="none", ms=2.6, color="black", alpha=0.75,
                          mew=0, label="run")]
    if hatched:
        handles.append(Patch(facecolor="#cccccc", edgecolor="#777777", hatch="////",
                             label="estimated (model)"))
    grow_for_legend(fig, legend_above(ax, handles), height is not None)
    return fig


# -- energy to target --------------------------------------------------------------------------
class _Curve:
    """One run's metric against cumulative energy: from its own logs, or from those of the run
    nested in it that logged the metric, its energy offset by what the run spent before."""

    def __init__(self, report: Report, source: Report, offset_j: float, metric: str) -> None:
        self.report, self.source, self.offset_j = report, source, offset_j
        self.xs, self.ys = metric_points(source, metric, offset_j)
        self.metric = metric

    def energy_at(self, level: float, direction: str) -> float | None:
        """The energy at which the run first reached ``level`` (as ``energy_to`` finds it)."""
        result = self.source.energy_to(self.metric, level, direction)
        return result["energy_j"] + self.offset_j if result["reached"] else None


def _curve(report: Report, nested: Sequence[Report], metric: str) -> _Curve | None:
    if metric in logged_metrics(report):
        return _Curve(report, report, 0.0, metric)
    for child in sorted(nested, key=lambda r: r.started_at):
        if metric in logged_metrics(child):
            offset_s = (child.started_at - report.started_at).total_seconds()
            try:
                before = energy_before(report, offset_s)
            except ReportError as exc:
                log.warning("run %s: the energy before its nested run %s started is unknown "
                            "(%s); its curve starts from the nested run's own energy",
                            run_label(report), child.run_id[:8], exc)
                before = 0.0
            return _Curve(report, child, before, metric)
    return None


def level_band(curves: Sequence[_Curve], direction: str, levels: int = LEVELS
               ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...],
                          tuple[float, ...]] | None:
    """A group's mean curve and band: at each of ``levels`` levels of the metric, from the
    highest first logged value to the lowest best value of the runs (every run reached every
    level), the mean of the energies at which the runs first reached it and the 95 % CI of that
    mean (Student's t, :func:`energymeter.stats.summarize`). Returns ``(levels, mean, ci_low,
    ci_high)``, or None with fewer than two runs or no level all reached."""
    if len(curves) < 2 or any(not c.ys for c in curves):
        return None
    if direction == ">=":
        low, high = max(c.ys[0] for c in curves), min(max(c.ys) for c in curves)
    else:
        low, high = max(min(c.ys) for c in curves), min(c.ys[0] for c in curves)
    if not low < high:
        return None
    ys, means, lows, highs = [], [], [], []
    for i in range(levels):
        level = low + (high - low) * i / (levels - 1)
        energies = [c.energy_at(level, direction) for c in curves]
        summary = summarize(e for e in energies if e is not None)
        if summary.n < len(curves) or summary.mean is None or summary.ci_low is None:
            continue
        ys.append(level)
        means.append(summary.mean)
        lows.append(summary.ci_low)
        highs.append(summary.ci_high)
    return (tuple(ys), tuple(means), tuple(lows), tuple(highs)) if ys else None


def _energy_to_target(pairs: list[tuple[str | None, Report]], by: str, group: bool,
                      nested: bool, metric: str | None, target: Target | None,
                      width: float | None, height: float | None) -> Any:
    grouping = group_runs(pairs, by=by, group=group, nested=nested)
    logged: dict[str, None] = {}
    for g in grouping.groups:
        for r in g.runs:
            for source in (r, *nested_runs(r, grouping)):
                logged.update(dict.fromkeys(logged_metrics(source)))
    metric = choose_metric(metric, target, list(logged), "the runs given")
    per_group: list[tuple[Any, list[_Curve]]] = []
    for g in grouping.groups:
        curves = [c for r in g.runs
                  if (c := _curve(r, nested_runs(r, grouping), metric)) is not None]
        missing = len(g.runs) - len(curves)
        if missing:
            log.warning("%s: %d of %d run(s) logged no %s (left out)", g.label, missing,
                        len(g.runs), metric)
        if curves:
            per_group.append((g, curves))
    direction = target[2] if target is not None else infer_direction(
        [(c.xs, c.ys) for _, curves in per_group for c in curves])
    at_target: dict[str, tuple[float, float | None, float | None]] = {}
    reached: dict[str, int] = {}
    if target is not None:
        results = target_results(pairs, target, by=by if group else None, nested=nested)
        if group:
            for row in results["groups"]:
                stats = row["energy_to_target_j"]
                reached[row["label"]] = row["reached"]
                if stats["mean"] is not None:
                    at_target[row["label"]] = (stats["mean"], stats["ci_low"], stats["ci_high"])
        else:
            for entry in results["runs"]:
                reached[entry["run_id"]] = int(entry["reached"])
                if entry["reached"]:
                    at_target[entry["run_id"]] = (entry["energy_j"], None, None)
    series = []
    index = 0
    for g, curves in per_group:
        if group:
            band = level_band(curves, direction)
            label = f"{g.label} (n={len(curves)})"
            if target is not None and reached.get(g.label, 0) < len(curves):
                label += f", {reached.get(g.label, 0)} reached"
            series.append(CurveSeries(
                label, series_colour(index), tuple((tuple(c.xs), tuple(c.ys)) for c in curves),
                mean=(band[1], band[0]) if band else None,
                band=(band[0], band[2], band[3]) if band else None,
                at_target=at_target.get(g.label),
                estimated=any(estimated_in_total(c.report) for c in curves)))
            index += 1
        else:
            names = dict(zip([c.report.run_id for c in curves],
                             run_labels([c.report for c in curves]), strict=True))
            for c in curves:
                series.append(CurveSeries(names[c.report.run_id], series_colour(index),
                                          ((tuple(c.xs), tuple(c.ys)),),
                                          at_target=at_target.get(c.report.run_id),
                                          estimated=estimated_in_total(c.report)))
                index += 1
    fig, (ax,) = new_figure(width, height)
    rows = draw_energy_curves(ax, series, metric, target,
                              band_label="95 % CI of the energy at each level")
    grow_for_legend(fig, rows, height is not None)
    return fig


# -- entry point -------------------------------------------------------------------------------
def plot(runs_or_reports: Any, kind: str = "timeline", output: str | Path | None = None, *,
         by: str | None = None, group: bool = True, nested: bool = False,
         metric: str | None = None, target: str | Target | None = None,
         width: float | None = None, height: float | None = None, dpi: int = DEFAULT_DPI,
         window_s: float | None = None, basis: str = "machine") -> Any:
    """A matplotlib Figure of runs (extra ``plot``), saved to ``output`` when given (PNG at
    ``dpi``, PDF or SVG, by its extension).

    ``runs_or_reports``: a run directory, ``report.json``, folder of runs or
    :class:`~energymeter.Report`, or a list of them (or of ``(source, report)`` pairs from
    :func:`~energymeter.analysis.find_runs`, grouped by source with ``by="dir"``). ``kind``:
    ``timeline`` (one panel per run), ``breakdown`` (energy by kind per group), ``compare``
    (group means of ``metric``, default ``energy_total_j``, with 95 % CIs, differences and
    p-values), ``energy-to-target`` (``metric`` against cumulative energy;
    ``target="val_acc=0.9"`` draws the target and each group's mean energy to it). Runs are
    grouped as ``energymeter compare`` groups them: ``by`` ``auto`` (default), ``name``,
    ``dir``, ``command``, ``group``, ``tag:KEY``; ``group=False``: each run apart; runs nested
    in another are left out (``nested=True`` draws them instead). ``width``/``height``: inches
    (default 3.4 wide); ``window_s``: the timeline's shortest averaging interval. ``basis``
    (breakdown and compare): the energy basis, ``machine`` (default), ``attributed`` or ``net``
    (:mod:`energymeter.report.bases`), named on the axis; timelines and energy-to-target curves
    are the machine's, and say so.

    Raises :class:`~energymeter.errors.ReportError` (bad arguments, unreadable runs, a
    timeline of a run without ``samples.csv``) or
    :class:`~energymeter.report.plot.PlotDependencyError` (no matplotlib)."""
    check_kind(kind, KINDS_OF_FIGURE)
    if output is not None:
        check_output(output)
    parsed = as_target(target)
    if kind in ("timeline", "breakdown") and (metric is not None or parsed is not None):
        raise ReportError(f"metric and target apply to the compare and energy-to-target "
                          f"figures, not {kind}")
    if kind != "timeline" and window_s is not None:
        raise ReportError("window_s applies to the timeline only")
    if kind == "compare":
        check_compare_metric(metric or DEFAULT_COMPARE_METRIC, parsed)
    check_basis(basis)
    if basis != "machine" and kind in ("timeline", "energy-to-target"):
        raise ReportError(f"basis {basis!r} applies to the breakdown and compare figures; a "
                          f"{kind} is drawn from the machine's counters over time (basis "
                          "machine)")
    by = by or "auto"
    pairs = _pairs(runs_or_reports)
    draw: dict[str, Callable[[], Any]] = {
        "timeline": lambda: _timeline(group_runs(pairs, by=by, group=group, nested=nested),
                                      width, height, window_s),
        "breakdown": lambda: _breakdown(pairs, by, group, nested, width, height, basis),
        "compare": lambda: _compare(pairs, by, group, nested, metric, parsed, width, height,
                                    basis),
        "energy-to-target": lambda: _energy_to_target(pairs, by, group, nested, metric, parsed,
                                                      width, height),
    }
    with style():
        fig = draw[kind]()
    if output is not None:
        save_figure(fig, output, dpi)
    return fig
