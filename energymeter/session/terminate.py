"""A run ended by SIGTERM (``scancel``, preemption, ``kill``, torchrun stopping its workers)
still writes its report, marked ``interrupted``, with everything measured until then.

While a meter runs in the main thread of a program that left SIGTERM at its default action
(which would kill the process without running ``finally`` blocks or ``with`` exits), a handler
is installed that stops the running meters (innermost first) with status ``interrupted``, puts
the default action back and sends SIGTERM to the process again: the program still dies of
SIGTERM, as it would have, with the same exit status seen by its parent (a scheduler, torchrun),
but after its reports are written. A program with its own SIGTERM handler is left alone (it
decides how to end; a ``with measure()`` block it unwinds is reported as usual). The handler is
removed when the last meter stops.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Protocol

log = logging.getLogger("energymeter")


class Stoppable(Protocol):
    def stop(self, status: str = ..., exit_code: int | None = ...) -> Any: ...


_running: list[Stoppable] = []
_lock = threading.Lock()
_installed = False


def _handler(signum: int, frame: Any) -> None:
    global _installed
    with _lock:
        meters = list(reversed(_running))
        _running.clear()
        _installed = False
    for meter in meters:  # innermost first
        try:
            meter.stop("interrupted")
        except Exception as exc:  # a report that cannot be built must not keep us alive
            log.error("energymeter: the report of a run ended by SIGTERM could not be "
                      "written: %r", exc)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def arm(meter: Stoppable) -> None:
    """Write ``meter``'s report as ``interrupted`` if SIGTERM arrives while it runs (only in
    the main thread, and only where SIGTERM has its default action)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if not _installed:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return  # the program (or energymeter run) handles SIGTERM itself
            signal.signal(signal.SIGTERM, _handler)
            _installed = True
        _running.append(meter)


def disarm(meter: Stoppable) -> None:
    """``meter`` stopped: forget it; the last one puts SIGTERM's default action back (unless
    the program installed its own handler meanwhile)."""
    global _installed
    with _lock:
        if meter in _running:
            _running.remove(meter)
        if _installed and not _running:
            _installed = False
            if threading.current_thread() is threading.main_thread() \
                    and signal.getsignal(signal.SIGTERM) is _handler:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
