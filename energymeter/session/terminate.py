"""A run ended by SIGTERM (``scancel``, preemption, ``kill``, torchrun stopping its workers)
still writes its report, marked ``interrupted``, with everything measured until then.

While a meter runs in the main thread of a program that left SIGTERM at its default action
(which would kill the process without running ``finally`` blocks or ``with`` exits), a handler
is installed. On SIGTERM it does no work itself (the signal may arrive while the main thread
holds a meter's locks, in the middle of a boundary read): it starts a thread that stops the
running meters (innermost first, without ``sync``: after preemption the devices' peers may be
gone and a synchronize could block until SIGKILL) with status ``interrupted``. When they are
written, SIGTERM is sent again; the handler then puts the default action back and the program
dies of SIGTERM as it would have, with the exit status its parent (a scheduler, torchrun)
expects. Further SIGTERMs meanwhile (slurmstepd and torchrun both signal a worker) are
ignored, and if the main thread cannot run the handler again within
:data:`EXIT_GRACE_S` (stuck in native code), the process exits with status 143.

A program with its own SIGTERM handler is left alone: installed before the meter starts, ours
is never installed; installed after (Lightning chains to the previous handler), ours still
writes the reports when called but leaves ending the process to the program.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Protocol

from .._lazy import LazyLogger

log = LazyLogger("energymeter")

#: How long after the reports are written the main thread has to end the process by the
#: default action of SIGTERM before it is ended with status 128 + 15.
EXIT_GRACE_S = 5.0
#: The longest the reports may take to write before the process is ended anyway (SLURM sends
#: SIGKILL 30 s after SIGTERM by default).
STOP_TIMEOUT_S = 20.0


class Stoppable(Protocol):
    def _stop_on_signal(self) -> Any: ...


_running: list[Stoppable] = []
_lock = threading.Lock()
_state = {"installed": False, "stopping": False, "done": False, "chained": False}


def _stop_all() -> None:
    with _lock:
        meters = list(reversed(_running))
        _running.clear()
    for meter in meters:  # innermost first
        try:
            meter._stop_on_signal()
        except Exception as exc:  # a report that cannot be built must not keep us alive
            log.error("the report of a run ended by SIGTERM could not be written: %r", exc)


def _finish(signum: int, chained: bool) -> None:
    """On a thread of its own: write the reports, then have the process end."""
    worker = threading.Thread(target=_stop_all, name="energymeter-sigterm-stop", daemon=True)
    worker.start()
    worker.join(STOP_TIMEOUT_S)
    if chained:
        return  # the program's own handler decides how it ends
    _state["done"] = True
    os.kill(os.getpid(), signum)  # the main thread's handler: default action, die of it
    time.sleep(EXIT_GRACE_S)
    os._exit(128 + signum)  # the main thread never got back to Python


def _handler(signum: int, frame: Any) -> None:
    if _state["done"]:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _state["stopping"]:
        return  # a second SIGTERM while the reports are written
    _state["stopping"] = True
    # Another handler installed after ours calls us as its predecessor: it ends the process.
    chained = signal.getsignal(signum) is not _handler
    threading.Thread(target=_finish, args=(signum, chained), name="energymeter-sigterm",
                     daemon=True).start()


def arm(meter: Stoppable) -> None:
    """Write ``meter``'s report as ``interrupted`` if SIGTERM arrives while it runs (only in
    the main thread, and only where SIGTERM has its default action or our handler)."""
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        current = signal.getsignal(signal.SIGTERM)
        if current is not _handler:
            if current is not signal.SIG_DFL:
                return  # the program (or energymeter run) handles SIGTERM itself
            signal.signal(signal.SIGTERM, _handler)
            _state.update(stopping=False, done=False)
        _state["installed"] = True
        _running.append(meter)


def disarm(meter: Stoppable) -> None:
    """``meter`` stopped: forget it; the last one puts SIGTERM's default action back (unless
    the program installed its own handler meanwhile, or SIGTERM is being handled)."""
    with _lock:
        if meter in _running:
            _running.remove(meter)
        if _running or _state["stopping"]:
            return
        _state["installed"] = False
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is _handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
