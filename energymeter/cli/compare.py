"""``energymeter compare RUN...``: groups side by side, with their statistics
(:mod:`energymeter.analysis`)."""

from __future__ import annotations

from typing import Any

import click

from .common import BASIS, CONTEXT, FORMAT, echo, fail, options

BY = click.option(
    "--by", default="auto", show_default=True, metavar="auto|name|dir|command|group|job|tag:KEY",
    help="Group runs by: the RUN argument they came from (dir; what auto does when several "
         "RUN arguments are given), their name (auto with one RUN), their command, their "
         "repeat group, their distributed job (job: each job's runs merged into one, every "
         "device once), or the value of tag KEY (runs without it: KEY=(none)).")
NESTED = click.option(
    "--nested", is_flag=True, default=False,
    help="Compare runs measured inside other runs (measure() under energymeter run) instead "
         "of the runs they are part of (left out by default).")
CAPTION = click.option(
    "--caption", default=None, metavar="TEXT",
    help="The caption of the latex tables (plain text, escaped; the default says what the "
         "figures are) or the heading of the markdown output.")
LABEL = click.option(
    "--label", default=None, metavar="LABEL",
    help="The \\label of the latex table (letters, digits, : . _ / + -); default "
         "tab:energymeter-compare for compare, tab:energymeter-<run id> for report.")
WIDTH = click.option(
    "--width", default=None, type=click.Choice(["column", "page"]),
    help="What the latex tables fit: column (default), one column of a two-column paper "
         "(a table float, 229.5 pt), or page, the text width (table*, 469 pt); a table set "
         "smaller, wrapped, transposed or split in blocks as it needs (said in a comment).")
TARGET = click.option(
    "--target", default=None, metavar="METRIC=VALUE",
    help="Also the energy and time until a logged metric first reached VALUE: METRIC=VALUE "
         "or METRIC>=VALUE (at or above, e.g. val_acc=0.9), METRIC<=VALUE (e.g. loss<=0.1).")


def find_runs(runs: tuple[str, ...]) -> list[Any]:
    """The ``(source, report)`` pairs of ``runs`` (:func:`energymeter.analysis.find_runs`),
    or exit 2 naming the run that could not be read."""
    from ..analysis import find_runs as find
    from ..errors import ReportError

    try:
        return find(runs)
    except ReportError as exc:
        fail(str(exc))


def check_options(by: str | None, target: str | None, fmt: str | None = None,
                  caption: str | None = None, label: str | None = None,
                  width: str | None = None) -> None:
    """Exit 2 (before any run is read) for a --by or --target that is not understood, or a
    --caption, --label or --width the format ``fmt`` does not take."""
    if width is not None and fmt != "latex":
        fail(f"--width is for the latex format, not {fmt}")
    from ..analysis import check_by
    from ..errors import ReportError
    from ..report.render import check_caption_options
    from ..report.target import parse_target

    try:
        if by is not None:
            check_by(by)
        if target is not None:
            parse_target(target)
        if fmt is not None:
            check_caption_options(fmt, caption, label)
    except ReportError as exc:
        fail(str(exc))


@click.command(context_settings=CONTEXT,
               short_help="Compare groups of runs (mean ± 95 % CI, differences, p-values).")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(FORMAT, BY, TARGET, NESTED)
@click.option("--group/--no-group", default=True, show_default=True,
              help="Group runs (see --by); --no-group: one column per run.")
@options(CAPTION, LABEL, WIDTH, BASIS)
@click.option("--phase", default=None, metavar="NAME",
              help="Compare phase NAME of each run (its energy, duration and mean power; every "
                   "occurrence summed) instead of whole runs.")
def compare(runs: tuple[str, ...], fmt: str, by: str, target: str | None, nested: bool,
            group: bool, caption: str | None, label: str | None, width: str | None,
            basis: str, phase: str | None) -> None:
    """Compare groups of runs side by side, each against the first.

    Shows energy (total, per kind, per item where counted), duration, mean power, emissions,
    peak memory and peak GPU memory. Each cell is the mean ± the half-width of its 95 %
    confidence interval (Student's t); under each later column, its difference from the
    first column: mean / first mean − 1 in %, its 95 % confidence interval, and Welch's
    t-test p-value ("not significant" when p ≥ 0.05). RUN is as for `energymeter report`.

    Runs are grouped by the RUN argument they came from when several are given (a folder
    stands for its runs), else by name; --by chooses. A run reached twice counts once;
    warm-up runs are counted, not compared; runs nested in another run are left out
    (--nested compares them instead). Warnings under the table: too few runs, noisy energy
    (CV > 10 %), runs of a group that differ in region, PUE, carbon basis or hardware,
    unlike measurement methods, unfinished runs.

    --basis chooses the energy the energy, power and emissions figures are of: the whole
    machine's (default), the runs' own share (attributed: on a shared machine, steadier),
    or net of the idle baseline (runs measured with --baseline). A run without the basis
    asked gives its machine energy, and the comparison warns that it mixes bases.

    --phase NAME compares one phase of each run (m.phase("NAME") in the script, or a phase
    of the measure() nested in the run) with the same statistics; runs without it are left
    out and named.

    For papers: --format latex gives a booktabs table (needs \\usepackage{booktabs}) in a
    table float, each difference on a line under its figure, with --caption and --label
    (the warnings as % comments), fitted to one column of a two-column paper (--width page:
    the text width, table*): set smaller, long cells in lines, and with many groups
    transposed (a row per group) or in blocks one under the other; --format markdown the
    same table.

    \b
    Examples:
      energymeter compare runs/dense/ runs/sparse/
      energymeter compare --by tag:method --format markdown energymeter-runs/
      energymeter compare --target val_acc=0.9 runs/dense/ runs/sparse/
      energymeter compare --no-group --format csv run1 run2 run3
      energymeter compare --basis attributed --by tag:method energymeter-runs/
      energymeter compare --phase selection --by tag:method energymeter-runs/
      energymeter compare --format latex --label tab:prune runs/dense/ runs/sparse/ > t.tex
    """
    from ..analysis import compare as compare_runs
    from ..analysis import format_comparison
    from ..errors import ReportError

    check_options(by, target, fmt, caption, label, width)
    found = find_runs(runs)
    try:
        rows = compare_runs(found, by=by, group=group, nested=nested, target=target,
                            basis=basis, phase=phase)
    except ReportError as exc:
        fail(str(exc))
    echo(format_comparison(rows, fmt, caption=caption, label=label, width=width or "column"),
         nl=False,
         json=fmt == "json")
