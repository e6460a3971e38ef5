"""The sampler: a daemon thread reading every probe every ``interval_s``.

All probe access of a run goes through :meth:`Sampler.read` under one lock, so boundary reads
from the user's thread and periodic reads from the sampler thread see one consistent sequence
(which is what lets a probe undo counter wrap-around). Rows go to ``samples.csv`` (flushed at
least once a second) and to running aggregates; nothing grows with run length. The sampler never
raises into user code: a probe error becomes a warning, and a probe failing
:data:`MAX_CONSECUTIVE_FAILURES` times in a row is dropped from the run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import ProbeError
from ..probes.base import Probe
from ..store.writers import SamplesWriter
from .aggregate import Aggregator

log = logging.getLogger("energymeter")

MAX_CONSECUTIVE_FAILURES = 3
FLUSH_EVERY_S = 1.0


class Sampler:
    def __init__(
        self,
        probes: Sequence[Probe],
        *,
        interval_s: float,
        gauge_interval_s: float,
        aggregator: Aggregator,
        writer: SamplesWriter | None = None,
        counted_ids: Sequence[str] = (),
        on_energy: Callable[[float], None] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.gauge_interval_s = max(gauge_interval_s, interval_s)
        self.aggregator = aggregator
        self._writer = writer
        self._counted_ids = tuple(counted_ids)
        self._on_energy = on_energy
        self._active: list[Probe] = list(probes)
        self._failures: dict[int, int] = {id(p): 0 for p in probes}
        self._declared: dict[int, frozenset[str]] = {
            id(p): frozenset(c.id for c in p.channels) for p in probes}
        self._base: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._warnings: dict[str, None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0_ns = 0
        self._next_gauges_s = 0.0
        self._last_flush_s = 0.0
        self.ticks = 0
        self.thread_cpu_s = 0.0

    # -- reads ---------------------------------------------------------------------------
    def _fail(self, probe: Probe, what: str, exc: BaseException) -> None:
        key = id(probe)
        self._failures[key] = self._failures.get(key, 0) + 1
        self._warn(f"probe {probe.source}: {what} failed: {type(exc).__name__}: {exc}")
        if self._failures[key] >= MAX_CONSECUTIVE_FAILURES and probe in self._active:
            self._active.remove(probe)
            ids = ", ".join(c.id for c in probe.channels) or "gauges"
            self._warn(f"probe {probe.source} dropped after {MAX_CONSECUTIVE_FAILURES} "
                       f"consecutive errors; its channels ({ids}) stop at their last good value")

    def _warn(self, message: str) -> None:
        if message not in self._warnings:
            log.warning("%s", message)
            self._warnings[message] = None

    def _checked(self, probe: Probe, energy: dict[str, float]) -> dict[str, float]:
        """A probe's read as finite floats of the channels it declared; anything else is that
        probe's error (raised) or, for an undeclared channel, a warning."""
        declared = self._declared[id(probe)]
        out: dict[str, float] = {}
        for cid, joules in energy.items():
            if cid not in declared:
                self._warn(f"probe {probe.source}: returned channel {cid!r} it does not "
                           "declare; ignored")
                continue
            value = float(joules)
            if not math.isfinite(value):
                raise ProbeError(f"channel {cid} read {joules!r}, not a finite number of joules")
            out[cid] = value
        return out

    def _read_locked(self, gauges: bool) -> tuple[float, dict[str, float]]:
        raw: dict[str, float] = {}
        values: dict[str, float] = {}
        for probe in tuple(self._active):
            try:
                raw.update(self._checked(probe, probe.read()))
                if gauges and probe.gauge_names:
                    values.update(probe.gauges())
            # The sampler is the boundary between hardware and the user's program: any
            # probe error is recorded on the run and never propagates.
            except Exception as exc:
                self._fail(probe, "read", exc)
            else:
                self._failures[id(probe)] = 0
        t_s = (time.monotonic_ns() - self._t0_ns) / 1e9
        base = self._base
        for cid, joules in raw.items():
            if cid not in base:
                base[cid] = joules
            self._last[cid] = joules - base[cid]
        energy = dict(self._last)
        self.aggregator.add_energy(t_s, energy)
        if gauges:
            self.aggregator.add_gauges(values)
        if self._writer is not None:
            self._writer.row(t_s, energy, values if gauges else None)
        if self._on_energy is not None:
            self._on_energy(sum(energy.get(c, 0.0) for c in self._counted_ids))
        return t_s, energy

    def read(self, gauges: bool = False) -> tuple[float, dict[str, float]]:
        """Read every active probe now: (seconds since begin, joules since begin per channel)."""
        with self._lock:
            return self._read_locked(gauges)

    def begin(self) -> tuple[float, dict[str, float]]:
        """The first boundary read: energy baseline and first gauges, t = 0."""
        with self._lock:
            self._t0_ns = time.monotonic_ns()
            self._next_gauges_s = self.gauge_interval_s
            return self._read_locked(gauges=True)

    # -- thread --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="energymeter-sampler",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval_ns = int(self.interval_s * 1e9)
        next_ns = time.monotonic_ns() + interval_ns
        while not self._stop.wait(max(0.0, (next_ns - time.monotonic_ns()) / 1e9)):
            with self._lock:
                t_s = (time.monotonic_ns() - self._t0_ns) / 1e9
                gauges = t_s >= self._next_gauges_s
                if gauges:
                    self._next_gauges_s = t_s + self.gauge_interval_s
                self._read_locked(gauges)
                self.ticks += 1
                if self._writer is not None and t_s - self._last_flush_s >= FLUSH_EVERY_S:
                    self._flush_locked(t_s)
            next_ns += interval_ns
            now_ns = time.monotonic_ns()
            if next_ns < now_ns:  # fell behind (suspended, overloaded): skip, don't burst
                next_ns = now_ns + interval_ns
        self.thread_cpu_s = time.thread_time()

    def _flush_locked(self, t_s: float) -> None:
        try:
            self._writer.flush()  # type: ignore[union-attr]
        except OSError as exc:  # disk full etc.: keep measuring, say so
            self._warn(f"samples.csv could not be written: {exc}")
            self._writer.abandon()  # type: ignore[union-attr]  # drop the rows, close the fd
            self._writer = None
        self._last_flush_s = t_s

    def stop(self) -> tuple[float, dict[str, float]]:
        """Final boundary read (with gauges), stop the thread, flush and close ``samples.csv``.
        Returns the final read."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            final = self._read_locked(gauges=True)
            if self._writer is not None:
                self._flush_locked(final[0])
            if self._writer is not None:
                try:
                    self._writer.close()
                except OSError as exc:
                    self._warn(f"samples.csv could not be closed: {exc}")
                self._writer = None
        return final

    def abandon(self) -> None:
        """In a forked child: never write the parent's files."""
        self._stop.set()
        if self._writer is not None:
            self._writer.abandon()
            self._writer = None

    @property
    def warnings(self) -> list[str]:
        with self._lock:
            return list(self._warnings)
