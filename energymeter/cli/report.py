"""``energymeter report RUN...``: show runs (rendered by :mod:`energymeter.report.render`)."""

from __future__ import annotations

import click

from .common import CONTEXT, FORMAT, load_runs, options


@click.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(FORMAT)
def report(runs: tuple[str, ...], fmt: str) -> None:
    """Show the report of one or more runs.

    RUN is a run directory, its report.json, or a folder of runs (every run in it). A run
    killed without writing report.json (SIGKILL, OOM) is rebuilt from its samples and shown
    as `interrupted`. Formats: table (summary and per-channel table), json (one report, or a
    list), csv (runs.csv ledger columns, one row per run), markdown, latex.

    \b
    Examples:
      energymeter report energymeter-runs/20261121T100000Z-train-1a2b3c4d
      energymeter report --format csv energymeter-runs/ > runs.csv
      energymeter report --format markdown run1 run2 >> RESULTS.md
    """
    from ..report.render import format_reports

    click.echo(format_reports(load_runs(runs), fmt), nl=False)
