"""``energymeter monitor``: live power per channel, one line per refresh
(:func:`energymeter.session.monitor.monitor`, rendered here like ``nvidia-smi dmon``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from ..errors import EnergyMeterError
from ..probes.base import Channel
from ..session.monitor import MONITOR_REFRESH_S
from .common import (
    CARBON_OPTIONS,
    CONTEXT,
    JSON_OUT,
    check_json_path,
    echo,
    err,
    fail,
    options,
    setting_option,
    setup_logging,
    silence_stdout,
    write_report_json,
)

if TYPE_CHECKING:
    from ..session.monitor import MonitorRow


def _w(value: float) -> str:
    return f"{value:.1f}"


def _column_names(channels: Sequence[Channel]) -> list[str]:
    # "~": estimated by a model; "*": a sub-zone, already inside its parent's column.
    return (["time", "total"]
            + [c.id + ("~" if c.method == "model" else "") + ("*" if c.is_subzone else "")
               for c in channels]
            + ["energy"])


def _aligned(cells: Sequence[str], names: Sequence[str]) -> str:
    return " ".join(cell.rjust(max(len(name), 8)) for cell, name in zip(cells, names, strict=True))


def monitor_header(channels: Sequence[Channel]) -> list[str]:
    """The two header lines of the monitor table (names, then units), ``nvidia-smi dmon``
    style. A channel estimated by a model is marked ``~``, a sub-zone ``*``."""
    names = _column_names(channels)
    units = ["s", *["W"] * (len(channels) + 1), "J"]
    return ["#" + _aligned(names, names)[1:], "#" + _aligned(units, names)[1:]]


def monitor_line(row: MonitorRow) -> str:
    """One line of the monitor table for ``row`` (columns as :func:`monitor_header`)."""
    snap = row.snapshot
    cells = [f"{snap.t_s:.1f}", _w(snap.power_w),
             *[_w(snap.power_by_channel_w.get(c.id, 0.0)) for c in row.channels],
             f"{snap.energy_j:.1f}"]
    return _aligned(cells, _column_names(row.channels))


@click.command(context_settings=CONTEXT,
               short_help="Live power per channel, one line per refresh.")
@click.option("--refresh", "refresh_s", type=float, default=None, metavar="SECONDS",
              help=f"Seconds between lines [default {MONITOR_REFRESH_S:g}].")
@click.option("--duration", "duration_s", type=float, default=None, metavar="SECONDS",
              help="Stop after this many seconds [default: until Ctrl-C].")
@options(setting_option("out"), setting_option("interval_s"), *CARBON_OPTIONS, JSON_OUT)
@click.option("--quiet", "-q", is_flag=True, help="No summary at the end.")
def monitor(refresh_s: float | None, duration_s: float | None, json_path: str | None,
            quiet: bool, **settings: Any) -> None:
    """Print the power of every channel, one line per refresh, until Ctrl-C.

    Like `nvidia-smi dmon`: a header, then one line per refresh with the mean power of each
    channel since the previous line (a channel marked ~ is estimated by a model, * is a
    sub-zone already counted in its parent) and the energy so far. At the end the whole
    session is written as a run named `monitor` (like `energymeter run`) and its path printed.
    --interval is the sampling interval, as for `energymeter run`; --refresh the print period.

    \b
    Examples:
      energymeter monitor
      energymeter monitor --refresh 5 --duration 3600 --out ~/power-log
    """
    from ..session.monitor import monitor as run_monitor

    setup_logging(quiet)
    check_json_path(json_path)  # before measuring: a run is never made for a bad path

    def on_start(meter: Any) -> None:
        for line in monitor_header(meter.channels):
            echo(line)

    def on_row(row: MonitorRow) -> None:
        try:
            echo(monitor_line(row))
        except BrokenPipeError:
            silence_stdout()  # so that the exit flush does not fail again
            raise

    try:
        report = run_monitor(refresh_s=refresh_s, duration_s=duration_s, on_row=on_row,
                             on_start=on_start, **settings)
    except EnergyMeterError as exc:
        fail(str(exc))
    if not quiet:
        echo(report.summary(), err=True)
    else:
        err(f"monitor run written to {report.path}")
    if json_path is not None and not write_report_json(report, json_path):
        sys.exit(1)
