"""The ``energymeter`` command line: ``run``, ``report``, ``compare``, ``probes``, ``monitor``
and ``carbon``.

Thin by design: each command parses its options, calls the library (:mod:`energymeter.runner`,
:mod:`energymeter.compare`, :mod:`energymeter.inspect_probes`, :mod:`energymeter.carbon`) and
prints. Options that mirror :class:`~energymeter.config.Settings` default to ``None`` so that
the usual resolution applies (option > ``ENERGYMETER_*`` > ``pyproject.toml`` > default).
Heavy modules are imported inside the commands, so ``energymeter run`` stays quick to start.

Exit codes: the child's own for ``run`` (``128+N`` when it died of signal ``N``), 126/127 when
the command cannot be executed / is not found, 2 for bad options, settings or runs, 1 for other
errors, 0 otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ._version import __version__
from .compare import FORMATS
from .config import CARBON_TABLES, Settings
from .errors import ConfigError, EnergyMeterError, ReportError
from .runner import MONITOR_REFRESH_S

if TYPE_CHECKING:
    from .meter import Snapshot
    from .report import Report
    from .runner import MonitorRow

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("energymeter")

#: Exit code for bad options, settings or runs (as click's own usage errors).
EXIT_USAGE = 2

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# -- shared options ----------------------------------------------------------------------------
_OUT = click.option("--out", type=click.Path(file_okay=False), default=None,
                    help="Folder of run directories and the runs.csv ledger "
                         f"[env ENERGYMETER_OUT; default {Settings.out}].")
_REGION = click.option("--region", default=None, metavar="CODE",
                       help="Carbon region: country (SE, SWE) or grid zone (SE-SE3); "
                            "see `energymeter carbon --list` [default: from the time zone].")
_PUE = click.option("--pue", type=float, default=None,
                    help="Power usage effectiveness of the facility, >= 1.0 "
                         f"[default {Settings.pue}].")
_TABLE = click.option("--carbon-table", type=click.Choice(CARBON_TABLES), default=None,
                      help=f"Carbon-intensity table [default {Settings.carbon_table}].")
_PRICE = click.option("--price", "price_per_kwh", type=float, default=None, metavar="PRICE",
                      help="Electricity price per kWh, to report the cost.")
_CURRENCY = click.option("--currency", default=None,
                         help=f"Currency of --price [default {Settings.currency}].")
_JSON = click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                     metavar="PATH", help="Also write the report's JSON to PATH.")
_FORMAT = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                       show_default=True, help="Output format.")


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


# -- output helpers ----------------------------------------------------------------------------
def _err(message: str) -> None:
    click.echo(f"energymeter: {message}", err=True)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    _err(f"error: {message}")
    sys.exit(code)


class _StderrHandler(logging.Handler):
    """Library warnings, one line each on stderr (``energymeter: warning: ...``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _err(f"{record.levelname.lower()}: {record.getMessage()}")
        except (OSError, ValueError):  # stderr closed: nothing left to tell
            self.handleError(record)


def _setup_logging(quiet: bool = False) -> None:
    """Show the library's warnings (errors only with ``quiet``) on stderr. The level is the
    handler's: the logger itself is left as the host application configured it."""
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        log.addHandler(handler)
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)


class _LiveLine:
    """The one-line live status of ``energymeter run`` on a terminal's stderr."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, snapshot: Snapshot) -> None:
        from .runner import status_line

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


def _write_json(report: Report, path: str) -> bool:
    from .runner import write_report_json

    try:
        write_report_json(report, path)
    except OSError as exc:
        _err(f"error: cannot write the report JSON to {path}: {exc}")
        return False
    return True


# -- the group ---------------------------------------------------------------------------------
@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="energymeter",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Measure what computation costs: energy (CPU, DRAM, GPU), power, carbon and memory.

    \b
    Examples:
      energymeter run -- python train.py --epochs 3
      energymeter report energymeter-runs/
      energymeter compare runs/*-baseline-* runs/*-pruned-*
      energymeter probes
      energymeter carbon SE

    Settings come from options, then ENERGYMETER_* variables, then [tool.energymeter] in
    pyproject.toml. See docs/cli.md.
    """


# -- run ---------------------------------------------------------------------------------------
@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True,
                               "allow_interspersed_args": False})
@click.option("--name", default=None, help="Run name [default: the program's name].")
@_options(_OUT)
@click.option("--interval", "interval_s", type=float, default=None, metavar="SECONDS",
              help="Sampling interval in seconds "
                   f"[env ENERGYMETER_INTERVAL_S; default {Settings.interval_s}].")
@_options(_REGION, _PUE, _TABLE, _PRICE, _CURRENCY, _JSON)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing of ours (no summary, no live "
                                                  "status); errors still go to stderr.")
@click.option("--shell", is_flag=True,
              help="Run the command through `sh -c` (pipes, globs, &&), its words joined by "
                   "spaces.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], name: str | None, json_path: str | None, quiet: bool,
        shell: bool, **settings: Any) -> None:
    """Run COMMAND and measure its energy, power, carbon and memory.

    The command's stdin, stdout and stderr are its own (nothing is piped); energymeter's
    summary goes to stderr. The exit code is the command's, 128+N if it died of signal N,
    127 if it was not found, 126 if it cannot be executed, 2 for bad settings. SIGINT,
    SIGTERM, SIGHUP and SIGQUIT are forwarded to it (the run is then `interrupted`),
    SIGUSR1/SIGUSR2 too. The run directory goes to --out; the command sees its id and path
    in ENERGYMETER_RUN_ID and ENERGYMETER_RUN_DIR.

    \b
    Examples:
      energymeter run -- python train.py --epochs 3
      energymeter run --name bert-base --region SE --pue 1.2 -- python train.py
      energymeter run --json cost.json --quiet -- ./bench.sh
      energymeter run --shell -- 'make -j8 && ./test'
    """
    from .runner import RunError, run_command

    _setup_logging(quiet)
    live = None
    if not quiet and sys.stderr.isatty():
        live = _LiveLine(sys.stderr)
    try:
        result = run_command(list(command), shell=shell, name=name, on_status=live, **settings)
    except RunError as exc:
        if live is not None:
            live.clear()
        _err(str(exc))
        sys.exit(exc.exit_code)
    except EnergyMeterError as exc:
        _fail(str(exc))
    if live is not None:
        live.clear()
    report = result.report
    if not quiet:
        try:
            click.echo(report.summary(), err=True)
        except OSError as exc:  # stderr is gone (closed pipe, hung-up terminal)
            log.debug("cannot print the summary (the report is in %s): %r", report.path, exc)
    if json_path is not None and not _write_json(report, json_path) and result.exit_code == 0:
        sys.exit(1)
    sys.exit(result.exit_code)


# -- report ------------------------------------------------------------------------------------
def _load(runs: tuple[str, ...]) -> list[Report]:
    from .compare import load_reports

    try:
        return load_reports(runs)
    except ReportError as exc:
        _fail(str(exc))


@cli.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@_options(_FORMAT)
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
    from .compare import format_reports

    click.echo(format_reports(_load(runs), fmt), nl=False)


# -- compare -----------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT, short_help="Compare runs side by side (mean ± std, ratios).")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@_options(_FORMAT)
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
    from .compare import compare as compare_runs
    from .compare import format_comparison

    rows = compare_runs(_load(runs), group=group)
    click.echo(format_comparison(rows, fmt), nl=False)


# -- probes ------------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT, short_help="What can be measured here, how, and fixes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def probes(as_json: bool) -> None:
    """Show what can be measured here, how, and how to fix what cannot.

    Lists the CPU, RAPL zones and GPUs found, the channels a run would measure with their
    method (counter: hardware energy counter; integrated: power readings over time; model:
    estimated), and for every unavailable source the reason and the fix. Reads the powercap
    root from ENERGYMETER_POWERCAP_ROOT (or pyproject.toml).

    \b
    Examples:
      energymeter probes
      ENERGYMETER_POWERCAP_ROOT=/host/sys/class/powercap energymeter probes --json
    """
    import json

    from .inspect_probes import format_probes, inspect_probes

    _setup_logging()
    try:
        info = inspect_probes()
    except ConfigError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        click.echo(format_probes(info), nl=False)


# -- monitor -----------------------------------------------------------------------------------
@cli.command(context_settings=CONTEXT, short_help="Live power per channel, one line per interval.")
@click.option("--interval", "refresh_s", type=float, default=None, metavar="SECONDS",
              help=f"Seconds between lines [default {MONITOR_REFRESH_S:g}].")
@click.option("--duration", "duration_s", type=float, default=None, metavar="SECONDS",
              help="Stop after this many seconds [default: until Ctrl-C].")
@_options(_OUT, _REGION, _PUE, _TABLE, _PRICE, _CURRENCY, _JSON)
@click.option("--quiet", "-q", is_flag=True, help="No summary at the end.")
def monitor(refresh_s: float | None, duration_s: float | None, json_path: str | None,
            quiet: bool, **settings: Any) -> None:
    """Print the power of every channel, one line per interval, until Ctrl-C.

    Like `nvidia-smi dmon`: a header, then one line per refresh with the mean power of each
    channel since the previous line (a channel marked ~ is estimated by a model, * is a
    sub-zone already counted in its parent) and the energy so far. At the end the whole
    session is written as a run named `monitor` (like `energymeter run`) and its path printed.

    \b
    Examples:
      energymeter monitor
      energymeter monitor --interval 5 --duration 3600 --out ~/power-log
    """
    from .runner import monitor as run_monitor
    from .runner import monitor_header, monitor_line

    _setup_logging(quiet)

    def on_start(meter: Any) -> None:
        for line in monitor_header(meter.channels):
            click.echo(line)

    def on_row(row: MonitorRow) -> None:
        try:
            click.echo(monitor_line(row))
        except BrokenPipeError:
            _silence_stdout()  # so that the exit flush does not fail again
            raise

    try:
        report = run_monitor(refresh_s=refresh_s, duration_s=duration_s, on_row=on_row,
                             on_start=on_start, **settings)
    except EnergyMeterError as exc:
        _fail(str(exc))
    if not quiet:
        click.echo(report.summary(), err=True)
    else:
        _err(f"monitor run written to {report.path}")
    if json_path is not None and not _write_json(report, json_path):
        sys.exit(1)


# -- carbon ------------------------------------------------------------------------------------
_REGION_SOURCES = {
    "argument": "given", "env": "from $ENERGYMETER_REGION",
    "pyproject": "from [tool.energymeter] in pyproject.toml",
    "timezone": "inferred from the time zone", "default": "not set: world average",
}


@cli.command(context_settings=CONTEXT, short_help="Carbon intensity of a region, or --list.")
@click.argument("region", required=False)
@click.option("--list", "list_all", is_flag=True, help="List every region code and intensity.")
@_options(_TABLE)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def carbon(region: str | None, list_all: bool, carbon_table: str | None, as_json: bool) -> None:
    """Show the carbon intensity of electricity used for REGION (or for this machine).

    Without REGION, the region a run would use: ENERGYMETER_REGION, pyproject.toml, else
    inferred from the time zone, else the world average. Intensities come from tables shipped
    with energymeter (no network): Ember (countries, generation-based) and Electricity Maps
    2025 (grid zones, consumption-based).

    \b
    Examples:
      energymeter carbon
      energymeter carbon SE-SE3
      energymeter carbon --list --carbon-table electricitymaps
      energymeter carbon FR --json
    """
    import json
    from dataclasses import asdict

    from .carbon import intensity, list_regions, resolve_region
    from .config import resolve_settings
    from .tables import format_number, render_table

    try:
        settings = resolve_settings({"carbon_table": carbon_table, "region": region})
        table = settings.carbon_table
        if list_all:
            if region is not None:
                raise ConfigError("give either REGION or --list, not both")
            regions = list_regions(table)
            if as_json:
                click.echo(json.dumps([r._asdict() for r in regions], indent=2))
                return
            rows = [[r.code, r.name, format_number(r.g_per_kwh, 1), r.basis, r.source]
                    for r in regions]
            click.echo(render_table(("code", "name", "gCO2e/kWh", "basis", "source"), rows,
                                    ["l", "l", "r", "l", "l"]))
            return
        code, source, warnings = resolve_region(settings)
        found = intensity(code, table)
    except ConfigError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({**asdict(found), "region_source": source,
                               "warnings": warnings}, indent=2))
        return
    lines = [
        f"region:     {found.region} ({found.name}), {_REGION_SOURCES.get(source, source)}",
        f"intensity:  {format_number(found.g_per_kwh, 1)} gCO2e/kWh (annual average, "
        "lifecycle)",
        f"basis:      {found.basis}",
        f"source:     {found.source}",
        f"year:       {found.year}",
        f"table:      {found.table}",
    ]
    lines += [f"warning:    {w}" for w in warnings]
    click.echo("\n".join(lines))


# -- entry point -------------------------------------------------------------------------------
def _silence_stdout() -> None:
    """Point stdout at /dev/null (its reader has gone), so that no later flush fails."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> None:
    """The ``energymeter`` console script."""
    try:
        cli.main(args=argv, prog_name="energymeter")
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other Unix tools do.
        _silence_stdout()
        sys.exit(1)


if __name__ == "__main__":
    main()
