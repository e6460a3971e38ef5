"""``energymeter report RUN...``: show runs (rendered by :mod:`energymeter.report.render`);
``--save`` writes the ``report.json`` of rebuilt runs (:func:`energymeter.report.rebuild.
save_rebuilt`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import CONTEXT, FORMAT, echo, err, load_runs, options

SAVE = click.option(
    "--save", is_flag=True, default=False,
    help="Write the report.json of each rebuilt run that has none, and its row in the runs.csv "
         "ledger of the folder holding it (never overwrites; never saves a running run).")


def save_rebuilt_runs(reports: list[Any]) -> bool:
    """Save each rebuilt report that has no ``report.json`` yet, saying on stderr what was
    saved or why not. False if a file could not be written."""
    from ..errors import ReportError
    from ..report.rebuild import save_rebuilt
    from ..store import REPORT_NAME

    ok = True
    for report in reports:
        if (report.path is None or not report.overhead.get("rebuilt_from_samples")
                or (report.path / REPORT_NAME).exists()):
            continue  # it has its report.json
        try:
            saved, ledger = save_rebuilt(report)
        except ReportError as exc:  # still running
            err(f"not saved: {exc}")
        except OSError as exc:
            err(f"error: cannot save the report of {report.path}: {exc}")
            ok = False
        else:
            err(f"saved {saved} and its row in {ledger}")
    return ok


@click.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(FORMAT, SAVE)
def report(runs: tuple[str, ...], fmt: str, save: bool) -> None:
    """Show the report of one or more runs.

    RUN is a run directory, its report.json, or a folder of runs (every run in it). A run
    killed without writing report.json (SIGKILL, OOM) is rebuilt from its samples and shown
    as `interrupted`; one still being measured is shown as `running`. Formats: table (summary
    and per-channel table), json (one report, or a list), csv (runs.csv ledger columns, one
    row per run), markdown, latex.

    With --save, each rebuilt run that has no report.json gets one (written atomically) and
    its row in the runs.csv of the folder holding it; an existing report.json is never
    overwritten and a running run is never saved. What was saved is said on stderr.

    \b
    Examples:
      energymeter report energymeter-runs/20261121T100000Z-train-1a2b3c4d
      energymeter report --format csv energymeter-runs/ > runs.csv
      energymeter report --format markdown run1 run2 >> RESULTS.md
      energymeter report --save energymeter-runs/    # keep the rebuilt reports of killed runs
    """
    from ..report.render import format_reports

    reports = load_runs(runs)
    saved = save_rebuilt_runs(reports) if save else True
    echo(format_reports(reports, fmt), nl=False, json=fmt == "json")
    if not saved:
        sys.exit(1)
