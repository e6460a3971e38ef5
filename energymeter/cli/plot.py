"""``energymeter plot RUN... -o FILE``: a figure of runs (:func:`energymeter.analysis.plots.
plot`; matplotlib, from the ``plot`` extra, is imported only when the command runs)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import BASIS, CONTEXT, err, fail, options, setup_logging
from .compare import BY

#: The figures, as ``energymeter.analysis.plots.KINDS_OF_FIGURE`` (not imported here: the
#: CLI starts without loading the analysis).
KINDS = ("timeline", "breakdown", "compare", "energy-to-target")

OUTPUT = click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE",
    help="The figure's file: .png, .pdf or .svg (the format follows the extension).")
KIND = click.option(
    "--kind", type=click.Choice(KINDS), default="timeline", show_default=True,
    help="timeline: power per channel over time, one panel per run, phases shaded; "
         "breakdown: energy by kind, a stacked bar per group (--no-group: per run); "
         "compare: group means of --metric with 95 % CI, runs as dots, difference and p-value "
         "against the first group; energy-to-target: a logged metric against cumulative "
         "energy, runs and group means with a 95 % CI band.")
METRIC = click.option(
    "--metric", default=None, metavar="NAME",
    help="compare: the figure compared (default energy_total_j; also duration_s, "
         "mean_power_w, emissions_g, energy_per_item_j, energy_<kind>_j, energy_to_target_j "
         "with --target, ...). energy-to-target: the logged metric drawn (default the "
         "target's, else the first logged that is not a counter such as epoch or step).")
TARGET = click.option(
    "--target", default=None, metavar="METRIC=VALUE",
    help="energy-to-target: draw METRIC=VALUE (or METRIC>=VALUE, METRIC<=VALUE) as a line "
         "and mark each group's mean energy to it; compare: allows the *_to_target metrics.")
NESTED = click.option(
    "--nested", is_flag=True, default=False,
    help="Draw runs measured inside other runs (measure() under energymeter run) instead of "
         "the runs they are part of (by default their phases and logs are drawn with those).")
GROUP = click.option(
    "--group/--no-group", default=True, show_default=True,
    help="Group runs (see --by); --no-group: each run apart.")
SIZE = (click.option("--width", type=click.FloatRange(0.5, 50), default=None, metavar="IN",
                     help="Figure width in inches [default: 3.4, a paper's column]."),
        click.option("--height", type=click.FloatRange(0.5, 50), default=None, metavar="IN",
                     help="Figure height in inches [default: 2.5; a timeline adds a panel "
                          "per run]."),
        click.option("--dpi", type=click.IntRange(30, 2400), default=200, show_default=True,
                     help="Resolution of a PNG (PDF and SVG are vector)."))
WINDOW = click.option(
    "--window", "window_s", type=click.FloatRange(min=0), default=None, metavar="S",
    help="timeline: average power over at least S seconds [default: per channel, ten "
         "updates of its counter, and at least the run's duration / 800].")


def check_output(output: str) -> None:
    """Exit 2 unless ``output`` has a figure extension and its folder exists and is
    writable."""
    from ..errors import ReportError
    from ..report.plot import check_output as check_format

    try:
        check_format(output)
    except ReportError as exc:
        fail(str(exc))
    folder = Path(output).parent
    if not folder.is_dir():
        fail(f"-o {output}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"-o {output}: the directory {folder} is not writable")


@click.command(context_settings=CONTEXT, short_help="Draw a figure of runs (PNG, PDF, SVG).")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(OUTPUT, KIND, BY, GROUP, NESTED, METRIC, TARGET, *SIZE, WINDOW, BASIS)
def plot(runs: tuple[str, ...], output: str, kind: str, by: str, group: bool, nested: bool,
         metric: str | None, target: str | None, width: float | None, height: float | None,
         dpi: int, window_s: float | None, basis: str) -> None:
    """Draw a figure of runs, sized for a paper's column, in colour-blind-safe colours.

    RUN is as for `energymeter report`: run directories, report.json files or folders of runs.
    Runs are grouped as `energymeter compare` groups them (--by; --no-group: each apart);
    runs nested in another (measure() under energymeter run) are part of it: their phases and
    logs are drawn with it (--nested draws them instead). Needs matplotlib:
    pip install 'energymeter-ml[plot]'. Estimated energy (a model, not a counter) is dashed
    in timelines and hatched in bars. --basis (breakdown, compare) draws the runs' own
    share (attributed) or net energy instead of the machine's, named on the axis. See
    docs/plots.md.

    \b
    Examples:
      energymeter plot RUN_DIR -o timeline.pdf
      energymeter plot runs/ --kind breakdown --by tag:method -o breakdown.png
      energymeter plot runs/dense runs/pruned --kind compare --metric energy_total_j -o cmp.pdf
      energymeter plot runs/ --kind compare --by tag:method --basis attributed -o own.pdf
      energymeter plot runs/ --kind energy-to-target --by tag:method --target val_acc=0.9 \\
          -o energy-to-target.svg
    """
    from ..analysis import check_by
    from ..errors import ReportError
    from ..report.plot import PlotDependencyError, require_matplotlib
    from ..report.target import parse_target

    try:
        require_matplotlib()
    except PlotDependencyError as exc:
        fail(str(exc))
    check_output(output)
    try:
        check_by(by)
        parsed = parse_target(target) if target is not None else None
        if kind == "compare":
            from ..analysis.plots import DEFAULT_COMPARE_METRIC, check_compare_metric

            check_compare_metric(metric or DEFAULT_COMPARE_METRIC, parsed)
    except ReportError as exc:
        fail(str(exc))
    setup_logging()
    from ..analysis.plots import plot as draw

    try:
        draw(list(runs), kind, output, by=by, group=group, nested=nested, metric=metric,
             target=parsed, width=width, height=height, dpi=dpi, window_s=window_s,
             basis=basis)
    except ReportError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", code=1)
    err(f"wrote {output}")
