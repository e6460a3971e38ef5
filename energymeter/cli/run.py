"""``energymeter run -- COMMAND``: measure a command (:func:`..session.command.run_command`)
with a live status line on a terminal and the summary on stderr."""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any

import click

from ..errors import EnergyMeterError
from .common import (
    CARBON_OPTIONS,
    CONTEXT,
    JSON_OUT,
    check_json_path,
    echo,
    err,
    fail,
    log,
    options,
    setting_option,
    setup_logging,
    shown_warnings,
    write_report_json,
)

if TYPE_CHECKING:
    from ..report import Report
    from ..session.meter import Snapshot


def status_line(snapshot: Snapshot) -> str:
    """The one-line live status of ``energymeter run``: elapsed, energy so far, power now."""
    t = snapshot.t_s
    elapsed = f"{int(t // 3600)}:{int(t % 3600 // 60):02d}:{int(t % 60):02d}" if t >= 3600 \
        else f"{int(t // 60)}:{int(t % 60):02d}"
    energy = snapshot.energy_j
    shown = f"{energy / 3600:.3f} Wh" if energy >= 3600 else f"{energy:.1f} J"
    return f"energymeter: {elapsed} elapsed, {shown}, {snapshot.power_w:.1f} W"


def summary_text(report: Report, json_path: str | None = None) -> str:
    """The summary of a run for ``energymeter run``: the report's own (which ends with where
    the run is on disk, if anywhere), less the warnings already said on stderr when they
    happened; for a run measured in memory, that nothing was saved."""
    import dataclasses

    shown = shown_warnings()
    text = dataclasses.replace(
        report, warnings=tuple(w for w in report.warnings if w not in shown)).summary()
    tail = (f"the report goes to --json {json_path} only" if json_path
            else "this summary is all there is")
    if report.path is None:  # measured in memory: the summary names no place
        return f"{text}\n  nothing was saved: {tail}"
    if not report.path.is_dir():  # its last line says the run directory is gone
        return f"{text}: {tail}"
    return text


class LiveLine:
    """The one-line live status of ``energymeter run`` on a terminal's stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, snapshot: Snapshot) -> None:
        self.stream.write("\r\x1b[2K" + status_line(snapshot))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            try:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
            except OSError as exc:  # the terminal is gone: no line is left to clear
                log.debug("cannot clear the live status line: %r", exc)
            self.shown = False


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option("--name", default=None, help="Run name [default: the program's name].")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Tag the run (repeatable), e.g. --tag method=sparse --tag lr=3e-4; "
                   "compare groups by them with --by tag:KEY.")
@click.option("--repeat", "repeat", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="N", help="Run the command N times, as one repeat group.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="K", help="Run it K more times first, recorded as warm-up runs and "
                                "left out of comparisons.")
@click.option("--cooldown", "cooldown_s", type=click.FloatRange(min=0, max=86400),
              default=0.0, show_default=True, metavar="SECONDS",
              help="Seconds to wait, unmeasured, between repeated runs.")
@click.option("--items", type=click.FloatRange(min=0), default=None, metavar="N",
              help="Items the command processes (samples, tokens): the report gives J per item.")
@options(setting_option("out"), setting_option("interval_s"), setting_option("baseline_s"),
         *CARBON_OPTIONS, setting_option("ranks"), setting_option("daemon"),
         setting_option("wait_orphans"), JSON_OUT)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing of ours (no summary, no live "
                                                  "status); errors still go to stderr.")
@click.option("--shell", is_flag=True,
              help="Run the command through `sh -c` (pipes, globs, &&), its words joined by "
                   "spaces.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], name: str | None, tags: tuple[str, ...], repeat: int,
        warmup: int, cooldown_s: float, items: float | None, json_path: str | None,
        quiet: bool, shell: bool, **settings: Any) -> None:
    """Run COMMAND and measure its energy, power, carbon and memory.

    The command's stdin, stdout and stderr are its own (nothing is piped); energymeter's
    summary goes to stderr. The exit code is the command's, 128+N if it died of signal N,
    127 if it was not found, 126 if it cannot be executed, 2 for bad settings. SIGINT,
    SIGTERM, SIGHUP and SIGQUIT are forwarded to it (the run is then `interrupted`),
    SIGUSR1/SIGUSR2 too. The run directory goes to --out; the command sees its id and path
    in ENERGYMETER_RUN_ID and ENERGYMETER_RUN_DIR.

    Under srun, torchrun or mpirun (one energymeter run per task), local rank 0 of each node
    measures the node and the other ranks record their command's resources only (--ranks);
    `energymeter report --job ID` merges the job (docs/distributed.md).

    With --repeat N (and --warmup K) the command runs K + N times as one repeat group; the
    repeats stop at the first run that does not complete, whose exit code is returned.

    \b
    Examples:
      energymeter run -- python train.py --epochs 3
      energymeter run --name bert-base --region SE --pue 1.2 -- python train.py
      energymeter run --repeat 5 --warmup 1 --tag method=sparse -- python train.py
      energymeter run --baseline 30 --items 60000 -- python infer.py
      energymeter run --json cost.json --quiet -- ./bench.sh
      energymeter run --shell -- 'make -j8 && ./test'
      srun -N 2 --ntasks-per-node 4 energymeter run -- python train.py
    """
    from ..session.command import RunError, repeat_command
    from ..session.experiment import parse_tag

    setup_logging(quiet)
    check_json_path(json_path)  # before the command runs: nothing measured on a bad path
    live = None
    if not quiet and sys.stderr.isatty():
        live = LiveLine(sys.stderr)
    reports = []

    def done(index: int, result: Any) -> None:
        if live is not None:
            live.clear()
        reports.append(result.report)
        if not quiet:
            try:
                echo(summary_text(result.report, json_path), err=True)
            except OSError as exc:  # stderr is gone (closed pipe, hung-up terminal)
                log.debug("cannot print the summary (the report is in %s): %r",
                          result.report.path, exc)
        shown_warnings().clear()  # said for this run

    try:
        run_tags = dict(parse_tag(t) for t in tags)
        results = repeat_command(list(command), repeat, warmup=warmup, cooldown_s=cooldown_s,
                                 on_run=done, shell=shell, name=name, on_status=live,
                                 tags=run_tags, items=items, **settings)
    except RunError as exc:
        if live is not None:
            live.clear()
        err(str(exc))
        sys.exit(exc.exit_code)
    except EnergyMeterError as exc:
        fail(str(exc))
    result = results[-1]
    if (repeat > 1 or warmup) and not quiet:
        measured = sum(1 for r in reports if not r.warmup)
        saved = result.report.path
        err(f"{measured} of {repeat} run(s)" + (f" (+{warmup} warm-up)" if warmup else "")
            + f" in group {result.report.group_id}; "
            + (f"compare them with `energymeter compare {saved.parent}`" if saved is not None
               else "not saved: nothing to compare them with later"))
    data = reports if (repeat > 1 or warmup) else result.report
    if json_path is not None and not write_report_json(data, json_path) and \
            result.exit_code == 0:
        sys.exit(1)
    sys.exit(result.exit_code)
