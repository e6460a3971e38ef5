"""How late this machine runs a thread, for tests that compare times with energies.

CI machines are shared and busy: a thread that asked to wake now may run milliseconds later,
and a span measured by two clock reads then differs from the span the energy was read over.
Tests derive their tolerances from :class:`Lateness` (measured while the test runs) instead of
sleeps or margins tuned on a quiet machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: How often the watcher thread asks to wake.
TICK_S = 0.001


class Lateness:
    """A thread that sleeps :data:`TICK_S` again and again while the ``with`` block runs and
    keeps the longest overshoot (:attr:`max_s`): how long a runnable thread of this process
    can wait for a core (and the GIL)."""

    def __init__(self) -> None:
        self.max_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lateness", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            time.sleep(TICK_S)
            self.max_s = max(self.max_s, time.monotonic() - t0 - TICK_S)

    def start(self) -> Lateness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> Lateness:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def until(predicate: Any, timeout_s: float = 30.0, every_s: float = 0.02) -> bool:
    """Whether ``predicate()`` became true within ``timeout_s`` (polled): a wait that is as
    short as the machine allows and as long as it needs, instead of a tuned sleep."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return bool(predicate())


class SimClock:
    """A simulated monotonic clock shared by a sampler (``ns``, its ``clock_ns``) and fake
    probes (``s``): time moves only when a test says so."""

    def __init__(self, t_s: float = 1.0) -> None:
        self.t_ns = round(t_s * 1e9)

    def ns(self) -> int:
        return self.t_ns

    def s(self) -> float:
        return self.t_ns / 1e9

    def advance(self, seconds: float) -> None:
        self.t_ns += round(seconds * 1e9)
