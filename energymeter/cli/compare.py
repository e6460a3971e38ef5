"""``energymeter compare RUN...``: groups side by side (:mod:`energymeter.analysis`)."""

from __future__ import annotations

import click

from .common import CONTEXT, FORMAT, echo, load_runs, options


@click.command(context_settings=CONTEXT,
               short_help="Compare runs side by side (mean ± std, ratios).")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(FORMAT)
@click.option("--group/--no-group", default=True, show_default=True,
              help="Group runs that share a name (mean ± std, n).")
def compare(runs: tuple[str, ...], fmt: str, group: bool) -> None:
    """Compare runs side by side, with ratios to the first run (or group).

    Shows energy (total and per kind), duration, mean power, emissions, peak RSS and peak GPU
    memory. Runs sharing a name are grouped and shown as mean ± standard deviation with n;
    ratios are each mean over the first column's. RUN is as for `energymeter report`.

    \b
    Examples:
      energymeter compare runs/*-fp32-* runs/*-bf16-*
      energymeter compare --format markdown energymeter-runs/
      energymeter compare --no-group --format csv run1 run2 run3
    """
    from ..analysis import compare as compare_runs
    from ..analysis import format_comparison

    rows = compare_runs(load_runs(runs), group=group)
    echo(format_comparison(rows, fmt), nl=False, json=fmt == "json")
