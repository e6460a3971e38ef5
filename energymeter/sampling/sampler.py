"""The sampler: a daemon thread reading every probe every ``interval_s``.

All probe access of a run goes through one read sequence (:meth:`Sampler.read` and the
thread's ticks, serialised), so boundary reads from the user's thread and periodic reads see one
ordered sequence (which is what lets a probe undo counter wrap-around). A read takes every
probe's energy first and stamps the row at the middle of those reads; gauges (memory,
utilisation...) are read after the stamp, so slow gauges never shift energy in time.

Rows go to ``samples.csv`` (flushed within :data:`FLUSH_EVERY_S` of being taken, whatever the
interval) and to running aggregates; nothing grows with run length. The sampler never raises
into user code:

* faults are per channel: a probe reports a read in which some channels failed as
  :class:`~energymeter.probes.base.PartialRead` (the good values are taken), and a value that
  is not a finite, non-negative number of joules is that channel's error. A channel (or a
  whole probe, when its read fails) failing :data:`MAX_CONSECUTIVE_FAILURES` times in a row
  is suspended (left out of the rows; the probe skips it, :attr:`Probe.skip`) and retried
  after :data:`RETRY_FIRST_S`, then twice as long each time up to :data:`RETRY_MAX_S`, and
  at the final read; it is never dropped for good. While out, a channel's energy stands at
  its last good value; when it reads again, a counter's energy over the gap is counted (a
  polled power's is interpolated). The warnings name the channel, how long it was out and
  whether it recovered; gauges fail apart from energy and only ever lose the gauges;
* a value below the channel's previous one counts nothing for that interval, with a warning;
* warnings are bounded (:class:`~energymeter.notes.WarningBook`): one per kind and subject,
  repeats counted, at most :data:`~energymeter.notes.MAX_WARNINGS` distinct ones;
* a call of a probe that may block (:attr:`Probe.may_block`) is made on a helper thread and,
  once started, waited for at most ``read_timeout_s``: a call still running then is left to
  finish on its own, and the probe's energy (or gauges, for a gauge call) is left out until it
  has returned; its counters are read again after that, so counter probes lose nothing.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .._lazy import LazyLogger
from ..errors import ProbeError
from ..notes import WarningBook
from ..probes.base import PartialRead, Probe
from ..store.readers import NonDecreasing, check_joules
from ..store.writers import IN_REPORT, SamplesWriter
from .aggregate import Aggregator

log = LazyLogger("energymeter")

MAX_CONSECUTIVE_FAILURES = 3
#: A suspended channel or probe is first retried this long after it was suspended, then
#: twice as long after each failed retry, at most :data:`RETRY_MAX_S` apart.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0
#: A row reaches samples.csv at most this long after it was taken.
FLUSH_EVERY_S = 1.0
#: The longest a probe call may run before it is given up (seconds from when it started).
READ_TIMEOUT_S = 1.0
#: Ticks faster than this keep their raw reads and turn them into rows (joules since begin,
#: aggregates, samples.csv, carbon) in one batch per this many seconds, or at once when a
#: boundary read or a flush comes: a tick right after the thread wakes runs on cold caches
#: (~250 µs for the whole row on the development VM, ~10 µs warm), so at 100 Hz the batch
#: halves the sampler's CPU. The rows and their order are the same either way.
BATCH_S = 0.1
#: ...and never more than this many reads at once: turning 100 reads into rows takes longer
#: than a 1 kHz tick, which would then be skipped.
MAX_BATCH = 10


class CallTimeout(Exception):
    """A probe call did not return within the time allowed; ``returned`` is set when it does."""

    def __init__(self, message: str, returned: threading.Event) -> None:
        super().__init__(message)
        self.returned = returned


class _Wake:
    """An auto-resetting event for one waiting thread: ``set()`` wakes the next ``wait()``
    (or the current one). A bare lock's timed ``acquire`` is a single futex wait, where
    ``threading.Event.wait`` builds a Condition and a fresh lock per call: ~25 µs of CPU less
    per tick on the development VM."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held: wait() blocks until set() releases it

    def set(self) -> None:
        try:  # noqa: SIM105 - a bare try costs less than contextlib.suppress here
            self._lock.release()
        except RuntimeError:  # already set and not yet consumed
            pass

    def wait(self, timeout_s: float) -> bool:
        """Whether it was set (and is now reset), else the timeout passed."""
        return self._lock.acquire(timeout=max(0.0, timeout_s))

    def clear(self) -> None:
        self._lock.acquire(blocking=False)


class _Job:
    __slots__ = ("done", "error", "fn", "result", "started")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class TimedCaller:
    """Makes calls on a helper thread and waits for each at most ``timeout_s`` once it has
    started (a call that waits for the GIL behind the user's code is not timed).

    A call that does not return in time raises :class:`CallTimeout` in the caller; its thread
    finishes it and then ends (it may stay blocked forever: it is a daemon), and the next call
    starts a new one. Calls are made one at a time by the sampler (under its read lock)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread_cpu_s = 0.0  # CPU time of helper threads that ended

    def call(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None or not self._thread.is_alive():
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._serve, args=(self._jobs,),
                                            name="energymeter-probe-call", daemon=True)
            self._thread.start()
        job = _Job(fn)
        self._jobs.put(job)
        job.started.wait()
        if not job.done.wait(self.timeout_s):
            self._jobs.put(None)  # the thread ends once the call returns
            self._thread = None  # a new thread serves the next call
            raise CallTimeout(f"no answer within {self.timeout_s:g} s", job.done)
        if job.error is not None:
            raise job.error
        return job.result

    def _serve(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                break
            job.started.set()
            try:
                job.result = job.fn()
            # Handed to the caller, which treats it as the probe's error.
            except BaseException as exc:  # noqa: BLE001
                job.error = exc
            job.done.set()
        self.thread_cpu_s += time.thread_time()

    def close(self, join_timeout_s: float = 0.5) -> None:
        """End the helper thread (waiting a little for its CPU time to be recorded)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join(join_timeout_s)


class _Fault:
    """One channel (or a whole probe) that failed: the outage under way, if any, and the
    outages of the run so far (for the warning that sums them up)."""

    __slots__ = ("backoff_s", "channel", "failures", "first_error", "longest_s", "open",
                 "out_s", "outages", "probe", "retry_at_ns", "since_ns", "subject",
                 "suspended")

    def __init__(self, probe: Probe, channel: str | None, subject: str) -> None:
        self.probe = probe
        self.channel = channel  # None: the whole probe
        self.subject = subject
        self.open = False
        self.since_ns = 0
        self.failures = 0  # in a row, in the outage under way
        self.first_error = ""
        self.suspended = False
        self.retry_at_ns = 0
        self.backoff_s = 0.0
        self.outages = 0  # ended ones
        self.out_s = 0.0
        self.longest_s = 0.0


class Sampler:
    def __init__(
        self,
        probes: Sequence[Probe],
        *,
        interval_s: float,
        gauge_interval_s: float,
        aggregator: Aggregator,
        writer: SamplesWriter | None = None,
        also_flush: Sequence[Any] = (),
        counted_ids: Sequence[str] = (),
        on_energy: Callable[[float], None] | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """A sampler of ``probes`` every ``interval_s`` (gauges every ``gauge_interval_s``,
        never more often), its rows going to ``aggregator`` and ``writer``; ``clock_ns`` is
        the monotonic clock of stamps, ticks and retries (tests pass a simulated one)."""
        self.interval_s = interval_s
        self.gauge_interval_s = max(gauge_interval_s, interval_s)
        self.aggregator = aggregator
        self._writer = writer
        # Other buffered files (events.jsonl) written whenever samples.csv is; their flush()
        # handles its own errors.
        self._also_flush = tuple(also_flush)
        self._counted_ids = tuple(counted_ids)
        self._on_energy = on_energy
        #: The monotonic clock of stamps, ticks and retries (tests pass a simulated one).
        self._clock_ns = clock_ns
        self._init_probe_state(probes)
        self._init_read_state(read_timeout_s)
        self._init_thread_state(interval_s)
        self._init_statistics()

    def _init_probe_state(self, probes: Sequence[Probe]) -> None:
        """The probes read, and what failed of them (nothing yet)."""
        self._active: list[Probe] = list(probes)
        self._begun: list[Probe] = []  # probes told a run began (told it ended at stop)
        # Channels and probes that failed (key: channel id, or the probe's id), and those of
        # them failing now: empty while all is well, so the hot path tests one dict.
        self._faults: dict[Hashable, _Fault] = {}
        self._open: dict[Hashable, _Fault] = {}
        # Per probe: its channels this sampler has suspended (given to each read; a cached
        # probe serves other meters too, whose suspensions are their own).
        self._skip: dict[int, frozenset[str]] = {}
        self._gauge_failures: dict[int, int] = {}
        self._no_gauges: set[int] = set()
        self._declared: dict[int, frozenset[str]] = {
            id(p): frozenset(c.id for c in p.channels) for p in probes}

    def _init_read_state(self, read_timeout_s: float) -> None:
        """What the read sequence keeps: the joules counted per channel, the warnings, the
        lock that serialises reads and the helper thread that bounds blocking calls."""
        # Per channel: joules since begin from the probe's values (a value that went
        # backwards counts nothing for that interval): the rule every reader of a run uses.
        self._counted = NonDecreasing(relative=True)
        self._warnings = WarningBook()
        self._lock = threading.Lock()  # one read at a time, and the state it updates
        self._caller = TimedCaller(read_timeout_s)
        self._stuck: dict[tuple[int, str], float] = {}  # (probe, kind) -> when it was given up

    def _init_thread_state(self, interval_s: float) -> None:
        """The sampling thread (not started) and its schedule: ticks batched, rows flushed."""
        self._stopping = False
        self._wake = _Wake()  # stop, or a row that must be flushed in time
        # Ticks read but not yet turned into rows: (t_s, raw energy, gauges or None).
        self._pending: list[tuple[float, dict[str, float], dict[str, float] | None]] = []
        self._batch = (min(MAX_BATCH, max(1, round(BATCH_S / interval_s))) if interval_s > 0
                       else 1)
        self._thread: threading.Thread | None = None
        self._t0_ns: int | None = None
        self._last_ns = 0  # when the last read began
        self._next_gauges_s = 0.0
        self._unflushed_since_s: float | None = None

    def _init_statistics(self) -> None:
        """What the report tells of the sampling itself (all zero before the first read)."""
        #: Wall-clock nanoseconds (``time.time_ns()``) at the first read's stamp, t = 0.
        self.started_wall_ns = 0
        self.ticks = 0
        self.skipped_ticks = 0
        #: The longest one read of every probe's energy took (ns): a row is stamped at the
        #: middle of its read, so its energy may belong to up to half this earlier or later
        #: (a busy machine, a slow driver call).
        self.max_read_span_ns = 0
        self.thread_cpu_s = 0.0

    # -- probe calls ---------------------------------------------------------------------
    def _call(self, probe: Probe, kind: str, fn: Callable[[], Any]) -> Any:
        """``fn`` (a call of ``probe`` of ``kind``): inline for probes that do not block,
        else on the helper thread, bounded; a call left running marks the probe stuck for
        that kind until it returns."""
        if not probe.may_block:
            return fn()
        try:
            return self._caller.call(fn)
        except CallTimeout as exc:
            probe.mark_stuck(kind, exc.returned)
            self._stuck[(id(probe), kind)] = time.monotonic()
            what = "its gauges are" if kind == "gauges" else "its energy is"
            self._warn(f"probe {probe.source}: a {kind} call did not return ({exc}); {what} "
                       "left out until it does", ("stuck", id(probe), kind))
            raise

    def _available(self, probe: Probe, kind: str) -> bool:
        """Whether ``probe`` can be called for ``kind`` now: no earlier call of it is still
        stuck. A probe whose stuck call has returned is back (and says so once)."""
        if probe.may_be_stuck and (probe.stuck(kind) or (kind != "gauges" and probe.hung)):
            return False
        if not self._stuck:
            return True
        since = self._stuck.pop((id(probe), kind), None)
        if since is not None:
            self._warn(f"probe {probe.source}: the {kind} call answered after "
                       f"{time.monotonic() - since:.1f} s more; it is read again (a counter's "
                       "energy over the gap is counted)", ("answered", id(probe), kind))
        return True

    def _run_hook(self, probe: Probe, kind: str) -> bool:
        """``probe.begin_run()`` or ``end_run()``; whether it returned (a failure is a
        warning: the run goes on without it)."""
        try:
            if probe.has_run_hooks:
                self._call(probe, kind, getattr(probe, kind))
            else:  # only counts runs: nothing that could block
                getattr(probe, kind)()
        except CallTimeout:
            return False
        except Exception as exc:
            self._warn(f"probe {probe.source}: {kind}() failed: {type(exc).__name__}: {exc}")
            return False
        return True

    def _fail(self, probe: Probe, counts: dict[int, int], what: str,
              exc: BaseException) -> bool:
        """Record a gauge failure; whether it was the last one tolerated in a row."""
        key = id(probe)
        counts[key] = counts.get(key, 0) + 1
        self._warn(f"probe {probe.source}: {what} failed: {type(exc).__name__}: {exc}",
                   (what, key))
        return counts[key] >= MAX_CONSECUTIVE_FAILURES

    def _warn(self, message: str, key: Hashable | None = None) -> None:
        """Record a warning about ``key`` (see :class:`WarningBook`): logged when new (or
        past the cap, where the log is the only record), else only counted."""
        book = self._warnings
        left_out = book.left_out
        if book.add(message, key):  # the report carries it: a summary need not repeat it
            log.warning("%s", message, extra=IN_REPORT)
        elif book.left_out > left_out:  # past the cap: the log is its only record
            log.warning("%s", message)

    def _checked(self, probe: Probe, energy: Any, now_ns: int) -> dict[str, float]:
        """A probe's read as finite, non-negative floats of the channels it declared. A value
        that is not is that channel's failure (left out); an undeclared channel is a warning;
        a read that is not a dict at all is the probe's error (raised)."""
        if not isinstance(energy, dict):
            raise ProbeError(f"read() returned {type(energy).__name__}, not a dict of joules "
                             "per channel")
        declared = self._declared[id(probe)]
        out: dict[str, float] = {}
        for cid, joules in energy.items():
            if cid not in declared:
                self._warn(f"probe {probe.source}: returned channel {cid!r} it does not "
                           "declare; ignored", ("undeclared", id(probe), cid))
                continue
            try:
                out[cid] = check_joules(joules)  # as every reader of the run checks it
            except ValueError as exc:
                self._channel_failed(probe, cid, f"read {exc}", now_ns)
        return out

    # -- faults: per channel, suspended and retried, never dropped for good ---------------
    def _fault(self, probe: Probe, key: Hashable, channel: str | None) -> _Fault:
        fault = self._faults.get(key)
        if fault is None:
            subject = (f"channel {channel} ({probe.source})" if channel is not None else
                       f"probe {probe.source} (channels "
                       f"{', '.join(c.id for c in probe.channels)})")
            fault = self._faults[key] = _Fault(probe, channel, subject)
        return fault

    def _failed(self, fault: _Fault, key: Hashable, why: str, now_ns: int) -> None:
        """One more failed read of ``fault``'s channel (or probe): warn (repeats counted),
        suspend it after :data:`MAX_CONSECUTIVE_FAILURES` in a row, back off after a failed
        retry."""
        if not fault.open:
            fault.open, fault.since_ns, fault.failures = True, now_ns, 0
            fault.first_error, fault.suspended, fault.backoff_s = why, False, 0.0
            self._open[key] = fault
        fault.failures += 1
        self._warn(f"{fault.subject}: read failed: {why}", ("read failed", key))
        retried = fault.suspended and now_ns >= fault.retry_at_ns
        if retried or (not fault.suspended and fault.failures >= MAX_CONSECUTIVE_FAILURES):
            fault.backoff_s = (RETRY_FIRST_S if not fault.suspended
                               else min(RETRY_MAX_S, fault.backoff_s * 2))
            fault.suspended = True
            fault.retry_at_ns = now_ns + int(fault.backoff_s * 1e9)
            if fault.channel is not None:
                key_p = id(fault.probe)
                self._skip[key_p] = self._skip.get(key_p, frozenset()) | {fault.channel}
            self._warn(f"{fault.subject}: {fault.failures} reads in a row failed: suspended "
                       f"(dropped from the readings) and retried after {RETRY_FIRST_S:g} s, "
                       f"then twice as long each time up to {RETRY_MAX_S:g} s; "
                       + ("the probe's other channels are read as usual" if fault.channel
                          is not None else "its channels stand at their last good values"),
                       ("suspended", key))
        self._warnings.put(("out", key), self._fault_text(fault, now_ns))

    def _channel_failed(self, probe: Probe, cid: str, why: str, now_ns: int) -> None:
        self._failed(self._fault(probe, cid, cid), cid, why, now_ns)

    def _retry_due(self, now_ns: int, force: bool) -> None:
        """Give suspended channels whose retry is due back to their probes (all of them at
        the final read: a counter that answers then has its whole gap counted)."""
        for fault in self._open.values():
            key = id(fault.probe)
            if (fault.suspended and fault.channel is not None
                    and (force or now_ns >= fault.retry_at_ns)
                    and fault.channel in self._skip.get(key, ())):
                self._skip[key] = self._skip[key] - {fault.channel}

    def _recovered(self, probe: Probe, values: dict[str, float], now_ns: int) -> None:
        """End the outages of ``probe`` (read at all) and of its channels in ``values``."""
        for key, fault in tuple(self._open.items()):
            if fault.probe is not probe or (fault.channel is not None
                                            and fault.channel not in values):
                continue
            del self._open[key]
            out_s = (now_ns - fault.since_ns) / 1e9
            fault.open, fault.outages = False, fault.outages + 1
            fault.out_s += out_s
            fault.longest_s = max(fault.longest_s, out_s)
            log.warning("%s recovered after %.2f s out", fault.subject, out_s)
            self._warnings.put(("out", key), self._fault_text(fault, now_ns))

    def _fault_text(self, fault: _Fault, now_ns: int) -> str:
        """The warning that sums up ``fault`` as of ``now_ns``: which channel, how long it
        was out, whether it recovered."""
        if fault.channel is None:
            gap = "a counter's energy over the gap is counted"
        else:
            method = next((c.method for c in fault.probe.channels
                           if c.id == fault.channel), "counter")
            gap = {"counter": "its counter's energy over the gap is counted",
                   "integrated": "its power over the gap is interpolated"}.get(
                       method, "its modelled energy over the gap is estimated")
        text = fault.subject
        if fault.outages:
            times = "" if fault.outages == 1 else f" {fault.outages} times"
            text += (f" was out{times} for {fault.out_s:.2f} s"
                     + ("" if fault.outages == 1 else f" in all (longest {fault.longest_s:.2f} s)")
                     + f" and recovered{'' if fault.outages == 1 else ' each time'}: {gap}")
            if not fault.open:
                return text + f" (first error: {fault.first_error})"
            text += "; then it"
        t0 = self._t0_ns if self._t0_ns is not None else fault.since_ns
        return (text + f" went out at t = {(fault.since_ns - t0) / 1e9:.2f} s "
                f"({fault.first_error}) and had not recovered at t = {(now_ns - t0) / 1e9:.2f}"
                " s: its energy since then is not counted (it stands at its last good value)")

    def _read_energy(self, now_ns: int, retry_all: bool = False) -> dict[str, float]:
        raw: dict[str, float] = {}
        faults = self._open
        if faults:
            self._retry_due(now_ns, retry_all)
        for probe in self._active:
            if not probe.channels:  # gauges only (the process tree): nothing to read here
                continue
            if faults:
                fault = faults.get(id(probe))
                if (fault is not None and fault.suspended and not retry_all
                        and now_ns < fault.retry_at_ns):
                    continue  # the whole probe is suspended until its retry
                skip = self._skip.get(id(probe))
                if skip and len(skip) >= len(probe.channels) and not retry_all:
                    continue  # every channel suspended: nothing to call it for
            else:
                skip = None
            if not self._available(probe, "read"):
                continue
            try:
                read = probe.read if not skip else functools.partial(probe.read, skip)
                values = self._checked(probe, self._call(probe, "read", read), now_ns)
            except CallTimeout:
                continue
            except PartialRead as exc:  # some channels failed alone
                values = self._checked(probe, exc.values, now_ns)
                declared = self._declared[id(probe)]
                for cid, why in exc.errors.items():
                    if cid in declared:
                        self._channel_failed(probe, cid, why, now_ns)
            # The sampler is the boundary between hardware and the user's program: any
            # probe error is recorded on the run and never propagates.
            except Exception as exc:
                key = id(probe)
                self._failed(self._fault(probe, key, None), key,
                             f"{type(exc).__name__}: {exc}", now_ns)
                continue
            if faults:
                self._recovered(probe, values, now_ns)
            raw.update(values)
        return raw

    def _read_gauges(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for probe in self._active:
            key = id(probe)
            if not probe.gauge_names or key in self._no_gauges \
                    or not self._available(probe, "gauges"):
                continue
            try:
                values.update(self._call(probe, "gauges", probe.gauges))
            except CallTimeout:
                continue
            except Exception as exc:  # a gauge never costs energy: only the gauges are lost
                if self._fail(probe, self._gauge_failures, "gauges", exc):
                    self._no_gauges.add(key)
                    self._warn(f"probe {probe.source}: gauges given up after "
                               f"{MAX_CONSECUTIVE_FAILURES} consecutive errors (its energy "
                               "is still measured)", ("gauges given up", key))
            else:
                self._gauge_failures[key] = 0
        return values

    def _accumulate(self, raw: dict[str, float]) -> dict[str, float]:
        try:
            _, drops = self._counted.add(raw)
        except ValueError as exc:  # values that keep dropping and rising: no real counter
            self._warn(f"{exc}; that read is not counted", ("beyond bound",))
            drops = []
        for cid, last, joules in drops:
            self._warn(f"channel {cid} went backwards ({last!r} -> {joules!r} J): "
                       "cumulative energy never decreases, so that interval counts 0 J",
                       ("went backwards", cid))
        return dict(self._counted.energy)

    def _take(self, gauges: bool, final: bool = False
              ) -> tuple[float, dict[str, float], dict[str, float] | None]:
        """Read the probes now: (seconds since begin, raw energy, gauges or None); ``final``:
        the last read, which retries every suspended channel and probe."""
        clock_ns = self._clock_ns
        before_ns = self._last_ns = clock_ns()
        raw = self._read_energy(before_ns, final)
        after_ns = clock_ns()
        stamp_ns = (before_ns + after_ns) // 2  # when the energy was read
        if after_ns - before_ns > self.max_read_span_ns:  # how unsure that is
            self.max_read_span_ns = after_ns - before_ns
        if self._t0_ns is None:  # the first read of the run is t = 0
            self._t0_ns = stamp_ns
            self.started_wall_ns = time.time_ns() - (clock_ns() - stamp_ns)
        t_s = (stamp_ns - self._t0_ns) / 1e9
        return t_s, raw, (self._read_gauges() if gauges else None)

    def _row(self, t_s: float, raw: dict[str, float],
             values: dict[str, float] | None) -> dict[str, float]:
        """Turn one read into a row: joules since begin, aggregates, ``samples.csv``."""
        energy = self._accumulate(raw)
        # Peaks only from channels read in this row: one out (suspended, stuck) stands at its
        # last value, and the gap's energy arriving in one interval is no power peak.
        self.aggregator.add_energy(t_s, energy if len(raw) == len(energy)
                                   else {cid: energy[cid] for cid in raw if cid in energy})
        if values is not None:
            self.aggregator.add_gauges(values)
        if self._writer is not None:
            self._writer.row(t_s, energy, values)
        if (self._writer is not None or self._also_flush) and self._unflushed_since_s is None:
            # The thread must flush it within FLUSH_EVERY_S (and the events buffered with it,
            # even after samples.csv was given up).
            self._unflushed_since_s = t_s
            self._wake.set()
        return energy

    def _drain(self) -> None:
        """Rows of the ticks read but not processed yet, in order; the carbon account is told
        the last one's energy."""
        if self._pending:
            pending, self._pending = self._pending, []
            for t_s, raw, values in pending:
                energy = self._row(t_s, raw, values)
            self._report_energy(energy)

    def _report_energy(self, energy: dict[str, float]) -> None:
        if self._on_energy is not None:
            self._on_energy(sum(energy.get(c, 0.0) for c in self._counted_ids))

    def _read_locked(self, gauges: bool, final: bool = False
                     ) -> tuple[float, dict[str, float]]:
        """A boundary read: every pending tick first, then this read, as rows."""
        self._drain()
        t_s, raw, values = self._take(gauges, final)
        energy = self._row(t_s, raw, values)
        self._report_energy(energy)
        return t_s, energy

    def _tick_locked(self, gauges: bool) -> None:
        """A periodic read: kept raw until a batch is full (see :data:`BATCH_S`)."""
        self._pending.append(self._take(gauges))
        if len(self._pending) >= self._batch:
            self._drain()

    def read(self, gauges: bool = False) -> tuple[float, dict[str, float]]:
        """Read every active probe now: (seconds since begin, joules since begin per channel)."""
        with self._lock:
            return self._read_locked(gauges)

    def begin(self) -> tuple[float, dict[str, float]]:
        """Tell the probes a run begins, then the first boundary read: energy baseline and
        first gauges, t = 0 (its stamp; :attr:`started_wall_ns` is its wall-clock time)."""
        with self._lock:
            for probe in self._active:
                if self._available(probe, "begin_run") and self._run_hook(probe, "begin_run"):
                    self._begun.append(probe)
            self._t0_ns = None
            # The first tick reads gauges too: a command started just after begin (energymeter
            # run) is seen at once, however short it is.
            self._next_gauges_s = self.interval_s
            return self._read_locked(gauges=True)

    @property
    def begun(self) -> bool:
        """Whether :meth:`begin` told the probes a run began (:meth:`stop` tells them it ended)."""
        return self._t0_ns is not None

    # -- thread --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="energymeter-sampler",
                                        daemon=True)
        self._thread.start()

    def _now_s(self) -> float:
        return (self._clock_ns() - (self._t0_ns or 0)) / 1e9

    def _loop(self) -> None:
        interval = self.interval_s
        next_s = self._now_s() + interval
        wake = self._wake
        while True:
            # Read without the lock: whoever sets it next also sets the wake.
            unflushed = self._unflushed_since_s
            wake_s = next_s if unflushed is None else min(next_s, unflushed + FLUSH_EVERY_S)
            wake.wait(wake_s - self._now_s())  # a set() since the last wait ends it at once
            if self._stopping:
                break
            flush_due, writer = False, None
            with self._lock:
                now_s = self._now_s()
                if now_s >= next_s:
                    gauges = now_s >= self._next_gauges_s
                    if gauges:
                        self._next_gauges_s = now_s + self.gauge_interval_s
                    self._tick_locked(gauges)
                    self.ticks += 1
                    next_s += interval
                    now_s = self._now_s()
                    if next_s < now_s:  # fell behind (suspended, overloaded): skip, count
                        missed = int((now_s - next_s) / interval) + 1
                        self.skipped_ticks += missed
                        next_s += missed * interval
                if (self._unflushed_since_s is not None
                        and now_s - self._unflushed_since_s >= FLUSH_EVERY_S):
                    self._drain()  # every row taken so far goes to this flush
                    self._unflushed_since_s = None
                    flush_due, writer = True, self._writer
            if flush_due:  # the disk writes hold up no read
                self._flush(writer)
        self.thread_cpu_s = time.thread_time()

    def _flush(self, writer: SamplesWriter | None, close: bool = False) -> None:
        for other in self._also_flush:
            other.flush()
        if writer is None:  # samples.csv was given up; the events were still due
            return
        try:
            if close:
                writer.close()
            else:
                writer.flush()
        except OSError as exc:  # disk full etc.: keep measuring, say so
            with self._lock:
                self._warn(f"samples.csv could not be written: {exc}")
                if self._writer is writer:
                    self._writer = None
            writer.abandon()  # drop the rows, close the fd

    def stop(self) -> tuple[float, dict[str, float]]:
        """Final boundary read (with gauges), stop the thread, flush and close ``samples.csv``,
        tell the probes the run ended. Returns the final read."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            final = self._read_locked(gauges=True, final=True)
            writer, self._writer = self._writer, None
            self._unflushed_since_s = None
        if writer is not None:
            self._flush(writer, close=True)
        for probe in self._begun:
            if probe.hung:  # its lock may be held: end its run once its call returns
                _end_run_later(probe)
            else:
                with self._lock:
                    self._run_hook(probe, "end_run")
        self._caller.close()
        self.thread_cpu_s += self._caller.thread_cpu_s
        return final

    def abandon(self) -> None:
        """In a forked child: never write the parent's files."""
        self._stopping = True
        self._wake.set()
        if self._writer is not None:
            self._writer.abandon()
            self._writer = None

    @property
    def warnings(self) -> list[str]:
        """The run's warnings so far, bounded (repeats counted); a channel still out is
        stated as of now."""
        with self._lock:
            for key, fault in self._open.items():  # as of the last read
                self._warnings.put(("out", key), self._fault_text(fault, self._last_ns))
            return self._warnings.messages()


def _end_run_later(probe: Probe, poll_s: float = 0.5) -> None:
    """Tell ``probe`` the run ended once its stuck call has returned (a daemon thread that
    waits for it; forever, if it never returns)."""
    def wait_then_end() -> None:
        while probe.hung:
            time.sleep(poll_s)
        try:
            probe.end_run()
        except Exception as exc:  # nobody is left to tell but the log
            log.warning("probe %s: end_run() after a stuck call failed: %r", probe.source, exc)

    threading.Thread(target=wait_then_end, name="energymeter-end-run", daemon=True).start()
