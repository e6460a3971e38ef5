"""Measure the whole machine until stopped, with a row of power per channel at every refresh
(what ``energymeter monitor`` does)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._lazy import LazyLogger
from ..errors import ConfigError
from .signals import INTERRUPTING, SignalGate

if TYPE_CHECKING:
    from ..probes import Channel
    from ..report import Report
    from .meter import Meter, Snapshot

#: Default refresh period of :func:`monitor`.
MONITOR_REFRESH_S = 1.0

log = LazyLogger("energymeter")


def _seconds(what: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number == number and 0 < number < float("inf")):
        raise ConfigError(f"{what} is {value!r}; accepted: a number of seconds > 0, e.g. 1.0")
    return number


@dataclass(frozen=True)
class MonitorRow:
    """One refresh of :func:`monitor`: the snapshot and the channels it covers."""

    snapshot: Snapshot
    channels: tuple[Channel, ...]


def monitor(
    *,
    refresh_s: float | None = None,
    duration_s: float | None = None,
    on_row: Callable[[MonitorRow], None] | None = None,
    on_start: Callable[[Meter], None] | None = None,
    name: str = "monitor",
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Report:
    """Measure the machine until SIGINT (Ctrl-C), SIGTERM, SIGHUP or ``duration_s``, calling
    ``on_row`` every ``refresh_s`` seconds (default :data:`MONITOR_REFRESH_S`) with the power of
    every channel since the previous row. Returns the report of the run (named ``monitor``).

    Ending with Ctrl-C or ``duration_s`` is the normal end (``completed``); SIGTERM or SIGHUP
    mark the run ``interrupted``. ``on_start`` is called with the started meter.
    """
    from .meter import Meter  # here: the CLI reads MONITOR_REFRESH_S at start, cheaply

    refresh = MONITOR_REFRESH_S if refresh_s is None else _seconds("refresh_s", refresh_s)
    if duration_s is not None:
        duration_s = _seconds("duration_s", duration_s)
    settings = {k: v for k, v in settings.items() if v is not None}
    status = "completed"
    with SignalGate(INTERRUPTING) as gate:
        meter = Meter(name, command=["energymeter", "monitor"],
                      env=dict(os.environ if env is None else env), **settings).start()
        if on_start is not None:
            on_start(meter)
        begun = time.monotonic()
        end = begun + duration_s if duration_s is not None else None
        next_row = begun + refresh
        while True:
            now = time.monotonic()
            wake = next_row if end is None else min(next_row, end)
            got = gate.wait(wake - now)
            if got is not None:
                if got.signum == signal.SIGCHLD:
                    continue
                if got.signum != signal.SIGINT:
                    status = "interrupted"
                break
            now = time.monotonic()
            if now >= next_row:
                if on_row is not None:
                    try:
                        on_row(MonitorRow(meter.snapshot(), meter.channels))
                    except BrokenPipeError:  # `energymeter monitor | head`: the reader left
                        log.debug("monitor output closed; ending the monitor run")
                        break
                next_row += refresh * max(1, int((now - next_row) / refresh) + 1)
            if end is not None and now >= end:
                break
        report = meter.stop(status)
    assert report is not None
    return report
