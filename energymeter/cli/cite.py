"""``energymeter cite RUN...``: a methods paragraph describing how the runs were measured,
with a citation of energymeter (:func:`energymeter.analysis.cite.methods_paragraph`)."""

from __future__ import annotations

import click

from .common import BASIS, CONTEXT, echo, fail, options
from .compare import NESTED, TARGET, check_options, find_runs

CITE_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(("text", "markdown", "latex", "bibtex")),
    default="text", show_default=True,
    help="text (with a reference under it), markdown (a footnote), latex (\\cite{energymeter} "
         "and the BibTeX entry as comments), bibtex (the entry alone).")
BY = click.option(
    "--by", default="auto", show_default=True, metavar="auto|name|dir|command|group|job|tag:KEY",
    help="Group runs as `energymeter compare` does: the groups and their sizes are "
         "described, and with several groups the statistics used to compare them.")


@click.command(context_settings=CONTEXT,
               short_help="A methods paragraph for a paper: how the runs were measured.")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(CITE_FORMAT, BY, NESTED, BASIS, TARGET)
def cite(runs: tuple[str, ...], fmt: str, by: str, nested: bool, basis: str,
         target: str | None) -> None:
    """Write a methods paragraph describing how RUN... were measured, to paste into a paper.

    It says, from the runs' reports alone (never from this machine): the hardware (CPU and
    GPU models and counts), how each energy figure was obtained (hardware counter: RAPL,
    NVML; polled power integrated over time; or ESTIMATED by a model from CPU utilisation ×
    TDP, with the TDP and its source), the sampling interval, the carbon region, intensity,
    basis, source and year, the PUE, the measurement's own CPU overhead, the number of runs
    per group (warm-up runs excluded), the statistics used when several groups are compared
    (mean ± 95 % CI, Welch's t-test), and the energymeter version, with a citation of
    energymeter. Where runs differ (methods, hardware, carbon settings) it says so. --basis
    says which energy the figures are (the whole machine's, the runs' own share, or net of
    the idle baseline) and how it was obtained: give the one your tables use. --target
    METRIC=VALUE describes the energy-to-target figures (how they are interpolated, how many
    runs reached the target). The spread observed (each group's coefficient of variation) is
    stated, and whether the energy was measured or estimated, kind by kind.

    RUN is as for `energymeter report`: a run directory, its report.json or a folder of runs.

    \b
    Examples:
      energymeter cite energymeter-runs/
      energymeter cite --format latex runs/dense/ runs/sparse/ > methods.tex
      energymeter cite --format bibtex runs/dense/ >> references.bib
      energymeter cite --basis attributed --by tag:method energymeter-runs/
    """
    from ..analysis.cite import methods_paragraph
    from ..errors import ReportError

    check_options(by, target)
    found = find_runs(runs)
    try:
        text = methods_paragraph(found, fmt, by=by, nested=nested, basis=basis,
                                 target=target)
    except ReportError as exc:
        fail(str(exc))
    echo(text, nl=False)
