"""``energymeter report RUN...``: show runs (rendered by :mod:`energymeter.report.render`);
``--save`` writes the ``report.json`` of rebuilt runs (:func:`energymeter.report.rebuild.
save_rebuilt`); ``--target`` shows the energy to a logged target
(:func:`energymeter.analysis.target_results`), per group with ``--by``."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import BASIS, CONTEXT, FORMAT, echo, err, fail, options
from .compare import CAPTION, LABEL, NESTED, TARGET, WIDTH, check_options, find_runs

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
        except ReportError as exc:  # still running, or it would not load back
            err(f"not saved: {exc}")
        except OSError as exc:
            err(f"error: cannot save the report of {report.path}: {exc}")
            ok = False
        else:
            err(f"saved {saved} and its row in {ledger}")
    return ok


JOB = click.option(
    "--job", default=None, metavar="ID",
    help="Merge the runs of distributed job ID (SLURM job id, torchrun rendezvous id, "
         "ENERGYMETER_JOB_ID) found in RUN... (default: the --out folder) into one report: "
         "the sum over its nodes, each device once, with a per-node breakdown and the nodes "
         "it misses (energymeter.merge).")

BY = click.option(
    "--by", default=None, metavar="auto|name|dir|command|group|job|tag:KEY",
    help="Group runs as `energymeter compare --by` does: with --target, each group's mean "
         "± 95 % CI over the runs that reached it; without, the runs group by group, each "
         "under a heading (table and markdown).")


def _grouped(found: list[Any], by: str, nested: bool) -> list[tuple[str, list[Any]]]:
    """The runs of ``found`` group by group (as compare groups them), warm-up runs last."""
    from ..analysis import group_runs
    from ..analysis.compare import missing_tag

    grouping = group_runs(found, by=by, nested=nested)
    warning = missing_tag(grouping.by, [r for _, r in found])
    if warning:
        err(f"warning: {warning}")
    return [(f"{g.label} ({len(g.runs)} run{'' if len(g.runs) == 1 else 's'}"
             + (f", +{len(g.warmup_runs)} warm-up" if g.warmup_runs else "") + ")",
             [*g.runs, *g.warmup_runs]) for g in grouping.groups]


@click.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=False, metavar="RUN...")
@options(FORMAT, SAVE, TARGET, BY, NESTED, CAPTION, LABEL, WIDTH, JOB, BASIS)
def report(runs: tuple[str, ...], fmt: str, save: bool, target: str | None, by: str | None,
           nested: bool, caption: str | None, label: str | None, width: str | None,
           job: str | None, basis: str) -> None:
    """Show the report of one or more runs.

    RUN is a run directory, its report.json, or a folder of runs (every run in it). A run
    killed without writing report.json (SIGKILL, OOM) is rebuilt from its samples and shown
    as `interrupted`; one still being measured is shown as `running`. Formats: table (summary
    and per-channel table), json (one report, or a list), csv (runs.csv ledger columns, one
    row per run), markdown and latex (for papers: a runs table, then the channels with
    totals and, where runs have them, phases and logged metrics; latex is one booktabs table
    of each kind for all the runs, needing only \\usepackage{booktabs}, with --caption and
    --label, fitted to one column of a two-column paper or with --width page the text
    width).

    Each run's summary shows its energy on every basis it has: the machine's, its own share
    (attributed) and, with an idle baseline, net of idle; markdown and latex add a table of
    them. --basis puts the runs table (markdown, latex) and the csv rows on one basis.

    With --save, each rebuilt run that has no report.json gets one (written atomically) and
    its row in the runs.csv of the folder holding it; an existing report.json is never
    overwritten and a running run is never saved. What was saved is said on stderr.

    With --job ID, the runs of that distributed job (one per rank, from torchrun, srun or
    mpirun) are merged into one report: channels named NODE:CHANNEL, each device once
    (GPUs by UUID and host), phases summed over nodes, a per-node breakdown and a warning
    for each node that left no measuring run. RUN defaults to the --out folder
    (energymeter-runs) here.

    With --target METRIC=VALUE, shows instead for each run the energy (J), time (s) and
    emissions until the metric logged with log() first reached VALUE (interpolated between
    logs), or "not reached"; with --by, also per group "k of n reached" and the mean ± 95 %
    CI over the runs that reached it (warm-up runs left out). A run that logged nothing of
    the metric but holds a nested run that did (measure() inside energymeter run) uses the
    nested run's logs. A run reached twice counts once; nested runs are left out (--nested
    shows them instead of their parents).

    \b
    Examples:
      energymeter report energymeter-runs/20261121T100000Z-train-1a2b3c4d
      energymeter report --format csv energymeter-runs/ > runs.csv
      energymeter report --format markdown run1 run2 >> RESULTS.md
      energymeter report --format latex --caption "Training cost" run1 > table.tex
      energymeter report --format csv --basis attributed energymeter-runs/ > own.csv
      energymeter report --save energymeter-runs/    # keep the rebuilt reports of killed runs
      energymeter report --target val_acc=0.9 --by dir runs/dense/ runs/sparse/
      energymeter report --job 123456 /scratch/$USER/energymeter-runs/
    """
    from ..analysis import format_targets, target_results
    from ..errors import ReportError
    from ..report.render import format_reports
    from ..report.tables import markdown_escape

    check_options(by, target, fmt, caption, label, width)
    width = width or "column"
    if not runs:
        if job is None:
            fail("give at least one RUN (a run directory, its report.json or a folder of "
                 "runs), or --job ID to merge a job's runs from the --out folder")
        from ..settings import resolve_settings

        runs = (str(resolve_settings().out),)
    found = find_runs(runs)
    if job is not None:
        from ..analysis import merge
        from ..errors import ReportError

        try:
            found = [(None, merge(found, job=job))]
        except ReportError as exc:
            fail(str(exc))
    reports = [r for _, r in found]
    saved = save_rebuilt_runs(reports) if save else True
    try:
        if target is not None:
            text = format_targets(target_results(found, target, by=by, nested=nested), fmt,
                                  caption=caption, label=label, width=width)
        elif by is not None and fmt == "table":
            text = "\n".join(f"== {heading}\n\n{format_reports(group, fmt)}"
                             for heading, group in _grouped(found, by, nested))
        elif by is not None and fmt == "markdown":
            text = "\n".join(f"## {markdown_escape(heading)}\n\n"
                              f"{format_reports(group, fmt, caption=caption, basis=basis)}"
                              for heading, group in _grouped(found, by, nested))
        elif by is not None:
            text = format_reports([r for _, group in _grouped(found, by, nested)
                                   for r in group], fmt, caption=caption, label=label,
                                  basis=basis, width=width)
        else:
            text = format_reports(reports, fmt, caption=caption, label=label, basis=basis,
                                  width=width)
    except ReportError as exc:
        fail(str(exc))
    echo(text, nl=False, json=fmt == "json")
    if not saved:
        sys.exit(1)
