"""The user-facing session: :class:`Meter` and :func:`measure`.

``start()`` discovers probes (cached per process), takes a boundary read and starts the sampler;
``stop()`` takes a boundary read, stops the sampler and builds the :class:`Report`. Totals and
phases come from boundary reads (exact for counters); the sampled stream gives the timeline,
peaks and wrap protection.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from .. import _ids
from .._lazy import LazyLogger
from ..carbon import CarbonAccount
from ..errors import EnergyMeterError, UsageError
from ..probes import Channel, DiscoveryContext, discover_cached
from ..probes.base import energy_summary, total_energy_j
from ..probes.proc import CpuSeconds, cpu_seconds, peak_rss_bytes_from_rusage, rusage_cpu_s
from ..redact import redact_command
from ..report import LEDGER_COLUMNS, STATUSES, Report, channel_energies
from ..report.values import baseline_block, estimated_parts_s
from ..sampling import Aggregator, Sampler, peak_window_s
from ..sampling.attribute import Attribution
from ..settings import resolve_settings, settings_dict
from ..store import (
    EVENTS_NAME,
    REPORT_NAME,
    SAMPLES_NAME,
    EventLog,
    SamplesWriter,
    append_ledger,
    json_safe,
    make_run_dir,
    replace_ledger_row,
    write_json_atomic,
)
from ..store.rundir import LEDGER_NAME, output_error
from ..store.writers import IN_REPORT, NoEventLog
from . import facts, forks, hooks, terminate
from .baseline import idle_baseline
from .experiment import Estimate, Progress, check_tags, inherited
from .launch import detect_launch, job_block, plan_ranks
from .phases import OpenPhase, Phases
from .sync import resolve_sync

log = LazyLogger("energymeter")

F = TypeVar("F", bound=Callable[..., Any])

#: ``count()`` records its running total in events.jsonl at most this often (for a rebuild).
COUNT_EVENT_EVERY_S = 1.0
#: Above this share of skipped sampling ticks a report says so in a warning.
SKIPPED_TICKS_WARN_FRACTION = 0.1
#: Above this share of the machine's busy CPU time used by other processes (over at least
#: ATTRIBUTION_MIN_BUSY_S of it), a report warns that its CPU energy is the whole machine's.
OTHER_CPU_WARN_SHARE = 0.25
ATTRIBUTION_MIN_BUSY_S = 0.5

#: The variable through which ``energymeter run`` tells a measured command its run id (a meter
#: started inside records it as ``parent_run_id``).
RUN_ID_ENV = "ENERGYMETER_RUN_ID"

def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Snapshot:
    """A live view of a running measurement: seconds since start, joules so far (total and
    per channel, total excluding psys and sub-zones) and mean watts since the last snapshot."""

    t_s: float
    energy_j: float
    power_w: float
    energy_by_channel_j: Mapping[str, float]
    power_by_channel_w: Mapping[str, float]


class Meter:
    """One measurement session. Use :func:`measure` to make one.

    As a context manager it measures the block; as a decorator each call is its own run.
    ``report`` holds the :class:`Report` once stopped. ``children_only``: the resources
    (memory, CPU time, I/O) are those of the processes this one starts, not its own (what
    ``energymeter run`` measures: the command, not the wrapper).

    An ``out`` that cannot hold the run (not a directory, not writable, read-only or full file
    system) makes ``start()`` raise :class:`~energymeter.errors.OutputError`, leaving nothing
    behind. ``fallback_to_memory=True`` measures such a run in memory instead (what
    ``energymeter run`` does: measuring never refuses the user's work): no run directory
    (``path`` is None), no files, no ledger row, and a warning on the report saying why.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        sync: Any = None,
        command: list[str] | tuple[str, ...] | None = None,
        pynvml: Any = None,
        env: Mapping[str, str] | None = None,
        ledger: bool = True,
        children_only: bool = False,
        tags: Mapping[str, Any] | None = None,
        group_id: str | None = None,
        warmup: bool = False,
        fallback_to_memory: bool = False,
        **settings: Any,
    ) -> None:
        self.name = name or "run"
        self._fallback_to_memory = fallback_to_memory
        self._settings_args = settings
        self.settings = resolve_settings(settings, env=env)
        self._sync_arg = sync
        # Secrets (--token x, API_KEY=y) in the command are never recorded.
        self.command = (redact_command(command, self.settings.redact)
                        if command is not None else None)
        self._pynvml = pynvml
        self._children_only = children_only
        self._env = dict(os.environ if env is None else env)
        # A run nested in another (measure() under `energymeter run`) inherits its metadata.
        outer_tags, outer_group, outer_warmup = inherited(self._env)
        self.tags = {**outer_tags, **check_tags(tags)}
        self.group_id = group_id or outer_group
        self.warmup = bool(warmup) or outer_warmup
        self._values: dict[str, Any] = {}
        self._items: float | None = None
        self._counted_at = 0.0  # monotonic time of the last "count" event
        self._progress = Progress()
        self._excluded_pids: list[int] = []
        self._command_rusage: Any = None
        self._ledger = ledger
        self.report: Report | None = None
        self.path: Path | None = None
        self._state = "new"
        self._owner_pid = os.getpid()
        self.job: dict[str, Any] | None = None  # the launcher's job and rank, once started
        self._begun: list[OpenPhase] = []  # phases begun with begin_phase(), still open
        self._signalled = False  # stopped by SIGTERM (session/terminate.py)
        self._logs: list[dict[str, Any]] = []
        self._warnings: list[str] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        if self._state == "running":
            return f"<Meter {self.name!r} running since {self.started_at:%H:%M:%S} UTC>"
        if self._state == "stopped" and self.report is not None:
            r = self.report
            return (f"<Meter {self.name!r} stopped: {r.status}, {r.duration_s:.3g} s, "
                    f"{r.total_energy_j:.4g} J>")
        return f"<Meter {self.name!r} {self._state}>"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Meter:
        """Discover probes, take the first boundary read and start sampling."""
        if self._state != "new":
            raise UsageError(f"meter {self.name!r} was already started; make a new one "
                             "with measure() for another run")
        self._sync = resolve_sync(self._sync_arg)
        # Region errors surface here, before anything is measured or written.
        self._carbon = CarbonAccount.start(self.settings, env=self._env)
        try:
            self._start()
        except BaseException:  # e.g. the sync raised: no run, nothing left open or on disk
            self._undo_start()
            raise
        self._state = "running"
        terminate.arm(self)  # SIGTERM (scancel, preemption) still writes the report
        return self

    def _start(self) -> None:
        s = self.settings
        # Under torchrun/SLURM/MPI, what this rank measures (no device counted twice per job).
        launch = detect_launch(self._env)
        plan = plan_ranks(launch, s.ranks, self._env)
        self.job = job_block(launch, plan)
        env = (self._env if plan.visible is None
               else {**self._env, "CUDA_VISIBLE_DEVICES": plan.visible})
        self._discovery = discover_cached(DiscoveryContext(
            powercap_root=s.powercap_root, pid=os.getpid(), include_root=not self._children_only,
            cpu_tdp_w=s.cpu_tdp_w, pynvml=self._pynvml, env=env, nvml_module=s.nvml_module,
            daemon=s.daemon, energy=plan.measures != "nothing", gpus_only=plan.gpus_only))
        # A probe whose call never returned in an earlier run of this process stays out.
        probes = tuple(p for p in self._discovery.probes if not p.hung)
        self._notes = list(self._discovery.notes) + [
            f"probe {p.source} stopped answering in an earlier run of this process and is not "
            "used" for p in self._discovery.probes if p.hung]
        if plan.measures == "nothing":
            self._notes.append(f"this run measured no energy: {plan.reason}; `energymeter "
                               f"report --job {launch.job_id}` gives the job's energy")
        self._channels = tuple(c for p in probes for c in p.channels)
        self._phases = Phases(self._channels)
        gauge_names = tuple(dict.fromkeys(g for p in probes for g in p.gauge_names))
        self.run_id = _ids.random_id()
        self.parent_run_id = self._env.get(RUN_ID_ENV) or None
        # Absolute now: a program that changes directory during the run (Hydra does) must not
        # send report.json and the ledger somewhere else.
        self._out = Path(s.out).absolute()
        writer = self._open_files(gauge_names)
        self._aggregator = Aggregator(
            [c.id for c in self._channels],
            peak_window_s(s.interval_s, [c.resolution_s for c in self._channels]),
            Attribution((c.id, c.kind, c.meta) for c in self._channels))
        self._sampler = Sampler(
            probes, interval_s=s.interval_s,
            gauge_interval_s=s.gauge_interval_s, aggregator=self._aggregator, writer=writer,
            also_flush=(self._events,) if writer is not None else (),
            counted_ids=[c.id for c in self._channels if c.in_total],
            on_energy=self._carbon.update)
        self._interval_warnings = [w for p in probes for w in p.check_interval(s.interval_s)]
        self._baseline = (idle_baseline(probes, self._channels, s.baseline_s, self._out)
                          if s.baseline_s else None)
        if self._baseline is not None:
            self._warnings += self._baseline.pop("warnings", [])
        forks.register(self)
        self._run_sync()
        self._rusage_cpu_s = rusage_cpu_s(include_self=not self._children_only)
        self._last_snapshot = self._sampler.begin()
        # t = 0 on time.monotonic_ns() (probes stamp estimates with it): the sampler stamped
        # it, and its wall-clock time, microseconds ago.
        self._t0_ns = time.monotonic_ns() - (time.time_ns() - self._sampler.started_wall_ns)
        self._machine_cpu = _machine_cpu_seconds()
        # Duration and energy come from the same boundary reads, and so does the start time.
        self.started_at = datetime.fromtimestamp(self._sampler.started_wall_ns / 1e9,
                                                 timezone.utc)
        self._events.event(
            "start", run_id=self.run_id, name=self.name, started_at=self.started_at.isoformat(),
            parent_run_id=self.parent_run_id,
            command=list(self.command) if self.command else None,
            channels=[c.to_dict() for c in self._channels], gauges=list(gauge_names),
            settings=settings_dict(s), carbon_region=self._carbon.region,
            region_source=self._carbon.region_source,
            notes=self._notes,
            unavailable=[u.to_dict() for u in self._discovery.unavailable],
            tags=self.tags, group_id=self.group_id, warmup=self.warmup,
            baseline=self._baseline, job=self.job,
            # Who writes this run: a reader tells a run in progress from a killed one by them
            # (and by samples.csv being flushed at least once a second while it runs).
            pid=os.getpid(), hostname=_ids.hostname())
        self._sampler.start()

    def _open_files(self, gauge_names: tuple[str, ...]) -> SamplesWriter | None:
        """Create the run directory, ``events.jsonl`` and ``samples.csv`` (its header written)
        and return the samples' writer; None for a run measured in memory only. An ``out``
        that cannot hold them raises :class:`~energymeter.errors.OutputError` (``start()``
        removes what was made), or with ``fallback_to_memory`` leaves the run in memory, with
        a warning."""
        try:
            # The directory is named at this second; started_at is the first read's own time.
            self.path = make_run_dir(self._out, self.name, self.run_id, _utcnow())
            self._events = EventLog(self.path / EVENTS_NAME)
            self._writer = SamplesWriter(self.path / SAMPLES_NAME,
                                         [c.id for c in self._channels], gauge_names)
            return self._writer
        except OSError as exc:  # full, read-only or not writable (or a link planted there)
            error = output_error(f"cannot write the run directory {self.path}", self._out, exc)
            if not self._fallback_to_memory:
                raise error from exc
        self._drop_files()
        self._events, self._writer = NoEventLog(), None
        message = ("this run is measured in memory only, nothing of it is saved (no run "
                   f"directory, no ledger row): {error}")
        self._warnings.append(message)
        log.error("%s", message, extra=IN_REPORT)
        return None

    def _drop_files(self) -> None:
        """Close the run's files without writing and remove its run directory."""
        for name in ("_events", "_writer"):
            writer = self.__dict__.pop(name, None)
            if writer is not None:
                writer.abandon()
        path, self.path = self.path, None
        if path is not None:
            try:
                for name in (EVENTS_NAME, SAMPLES_NAME):
                    (path / name).unlink(missing_ok=True)
                path.rmdir()
            except OSError as exc:
                log.warning("could not remove the run directory %s of a start that failed: %s",
                            path, exc)

    def _undo_start(self) -> None:
        """Forget a start that failed part-way: stop what it started (the carbon poller, the
        probes' run), close its files, remove its run directory."""
        forks.unregister(self)
        sampler = self.__dict__.pop("_sampler", None)
        if sampler is not None and sampler.begun:
            sampler.stop()
        self._drop_files()
        self._carbon.finish(0.0)  # stops a live carbon poller

    def stop(self, status: str = "completed", exit_code: int | None = None, *,
             sync: bool = True) -> Report | None:
        """Take the final boundary read, stop sampling, build, write and return the report.
        ``sync=False`` skips the user's ``sync`` before the final read (a run ended by
        SIGTERM: the devices' peers may be gone).

        In a forked child this does nothing and returns ``None``: only the process that
        started a meter writes its run."""
        if os.getpid() != self._owner_pid:
            return None
        if self._state != "running":
            raise UsageError(f"meter {self.name!r} is {self._state}; stop() needs a started, "
                             "running meter")
        if status not in STATUSES:
            raise UsageError(f"stop() status {status!r} is unknown; accepted: "
                             f"{', '.join(STATUSES)}")
        with self._lock:  # one stop wins (SIGTERM's thread and the main thread may race)
            if self._state != "running":
                raise UsageError(f"meter {self.name!r} is {self._state}; stop() needs a "
                                 "started, running meter")
            self._state = "stopping"
        if sync:
            self._run_sync("the final read")
        t_s, energy = self._sampler.stop()
        ended_at = self.started_at + timedelta(seconds=t_s)
        for probe in self._discovery.probes:
            for pid in self._excluded_pids:
                probe.include_process(pid)
        self._state = "stopped"
        forks.unregister(self)
        terminate.disarm(self)
        for phase in self._phases.end_all(t_s, energy):  # left open by an exception
            self._events.event("phase", **phase.to_dict(self._channels))
        report = self._build_report(status, exit_code, t_s, energy, ended_at)
        self.report = report  # kept whatever happens to the disk below
        if self.path is not None:  # else measured in memory only (fallback_to_memory)
            self.report = self._save(report, self.path, status, exit_code, t_s, ended_at)
        failures = hooks.notify(self.report)  # e.g. integrations.mlflow.autolog()
        if failures:
            self.report = dataclasses.replace(
                self.report, warnings=(*self.report.warnings, *failures))
        return self.report

    def _save(self, report: Report, path: Path, status: str, exit_code: int | None,
              t_s: float, ended_at: datetime) -> Report:
        """Write the stopped run's ledger row, ``report.json`` and last event; return the
        report with a warning for each that could not be written (full disk, read-only or
        vanished directory, a link): the program goes on, the report stays in memory. The
        row goes first, so that ``report.json`` can say when the row is missing."""
        report = self._write(
            report, path, append_ledger,
            lambda why: f"the ledger row was not written to {self._out / LEDGER_NAME} ({why}): "
                        "this run is not in the ledger",
            lambda why: f"report.json could not be written ({why}): the report is kept in "
                        f"memory only; {path} has samples.csv and events.jsonl as far as they "
                        "were written", error=True)
        self._events.event("stop", status=status, ended_at=ended_at.isoformat(),
                           duration_s=t_s, exit_code=exit_code)
        try:
            self._events.close()
        except OSError as exc:  # its last rows: the report has them
            self._events.abandon()
            log.debug("closing events.jsonl: %r", exc)
        return report

    def snapshot(self) -> Snapshot:
        """Energy so far and power since the previous snapshot (for live displays).

        Reads the probes now (no ``sync``); cheap enough to call once a second."""
        if self._state != "running":
            raise UsageError(f"meter {self.name!r} is {self._state}; snapshot() needs a "
                             "running measurement")
        t_s, energy = self._sampler.read()
        with self._lock:
            prev_t, prev = self._last_snapshot
            self._last_snapshot = (t_s, energy)
        dt = t_s - prev_t
        power = {cid: (e - prev.get(cid, 0.0)) / dt if dt > 0 else 0.0
                 for cid, e in energy.items()}
        return Snapshot(t_s, total_energy_j(self._channels, energy),
                        total_energy_j(self._channels, power), energy, power)

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The channels this run measures (known once started)."""
        return getattr(self, "_channels", ())

    def _abandon_in_child(self) -> None:
        if self._state == "running":
            self._sampler.abandon()
            self._events.abandon()
            self._state = "forked"

    # -- phases and logs -----------------------------------------------------------------
    def _run_sync(self, before: str | None = None) -> None:
        """The user's ``sync``. At start (``before`` None) an error is raised: no run begins.
        Before a boundary read it becomes a warning: the run must go on and be reported
        whatever the sync does (a CUDA error raised again by synchronize() in a phase's end
        while the user's own exception is on its way out, typically), and never replace the
        user's exception."""
        if self._sync is None:
            return
        if before is None:
            self._sync()
            return
        try:
            self._sync()
        except Exception as exc:
            self.warn(f"sync before {before} failed ({type(exc).__name__}: {exc}); energy of "
                      "device work still queued then may be missing")

    def warn(self, message: str) -> None:
        """Add ``message`` to the warnings of this run's report (once; logged too). For what
        drives a run and knows something the probes cannot (``energymeter run``: processes the
        command left running), or a caveat the program wants on record. In a forked child it
        does nothing; once the run has stopped it is a :class:`UsageError`."""
        if os.getpid() != self._owner_pid:
            return
        if self._state not in ("running", "stopping"):
            raise UsageError(f"meter {self.name!r} is {self._state}; warn() works only while "
                             "it runs")
        with self._lock:
            if message in self._warnings:
                return
            self._warnings.append(message)
        log.warning("%s", message, extra=IN_REPORT)

    @property
    def _ending(self) -> bool:
        """The run is being stopped from another thread, or was by SIGTERM: phases and logs
        the program still records until it dies are dropped quietly instead of raising."""
        return self._state == "stopping" or self._signalled

    def _stop_on_signal(self) -> None:
        """Stop as ``interrupted`` without ``sync`` (SIGTERM: see :mod:`.terminate`)."""
        self._signalled = True
        self.stop("interrupted", sync=False)

    def _boundary(self, what: str = "a boundary read") -> tuple[float, dict[str, float]] | None:
        """A boundary read, or None when the run is ending: stopped by another thread or by
        SIGTERM between the caller's look at :attr:`_ending` and now (the program's phases
        and logs are then dropped quietly, never raised into it)."""
        if self._state != "running":
            if self._ending:
                return None
            raise UsageError(f"meter {self.name!r} is {self._state}; phase() and log() work "
                             "only inside a running measurement")
        self._run_sync(what)
        return self._sampler.read()

    @contextmanager
    def phase(self, name: str) -> Iterator[Meter]:
        """Measure a named part of the run; phases nest. Phases of concurrent threads or asyncio
        tasks are measured apart; a phase's parent is the one enclosing it in its thread or task.
        In a forked child (a DataLoader worker) it measures nothing."""
        if os.getpid() != self._owner_pid or self._ending:  # a forked child measures nothing
            yield self
            return
        read = self._boundary(f"phase {name!r}")
        if read is None:
            yield self
            return
        t_s, energy = read
        entry, token = self._phases.open(name, t_s, energy)
        # The parent too: a rebuild of a killed run closes this phase under the right one.
        self._events.event_later("phase_start", name=entry.name, t_s=t_s, parent=entry.parent)
        try:
            yield self
        finally:
            self._phases.leave(entry, token)
            if self._state == "running":
                self._end_phase(entry, self._boundary(f"the end of phase {entry.name!r}"))

    def begin_phase(self, name: str) -> OpenPhase | None:
        """Begin phase ``name`` without a ``with`` block (for callbacks: a training loop's
        ``on_epoch_start``); end it with :meth:`end_phase`, given the returned handle or the
        name. Phases begun this way nest like ``phase()``'s (the parent is the innermost phase
        open in this thread or task) and may end in any order; one still open when the run
        stops ends with it. In a forked child it does nothing and returns ``None``."""
        if os.getpid() != self._owner_pid or self._ending:
            return None
        read = self._boundary(f"phase {name!r}")
        if read is None:
            return None
        entry, _token = self._phases.open(name, *read)
        t_s = read[0]
        self._events.event_later("phase_start", name=entry.name, t_s=t_s, parent=entry.parent)
        with self._lock:
            self._begun.append(entry)
        return entry

    def end_phase(self, phase: OpenPhase | str | None) -> None:
        """End a phase begun with :meth:`begin_phase`: its handle, or its name (the most
        recently begun open phase of that name). ``None`` (what a forked child got) does
        nothing. A name with no open phase is a :class:`UsageError` naming the open ones."""
        if phase is None or os.getpid() != self._owner_pid or self._ending:
            return
        with self._lock:
            if isinstance(phase, str):
                entry = next((e for e in reversed(self._begun) if e.name == phase), None)
            else:
                entry = phase if phase in self._begun else None
            if entry is not None:
                self._begun.remove(entry)
        if entry is None:
            with self._lock:
                names = [e.name for e in self._begun]
            raise UsageError(f"end_phase({getattr(phase, 'name', phase)!r}): no such phase "
                             "is open (already ended, or not begun with begin_phase); open: "
                             + (", ".join(repr(n) for n in names) or "none"))
        self._phases.forget(entry)
        if self._state == "running" and self._phases.is_open(entry):
            self._end_phase(entry, self._boundary(f"the end of phase {entry.name!r}"))

    def _end_phase(self, entry: OpenPhase,
                   read: tuple[float, Mapping[str, float]] | None) -> None:
        if read is None:  # the run is ending: the stop ends open phases itself
            return
        phase = self._phases.end(entry, *read)
        if phase is not None:
            self._events.event_later("phase", **phase.to_dict(self._channels))

    def log(self, **metrics: Any) -> None:
        """Record user metrics stamped with run time and cumulative energy (joules).

        Values are stored as JSON: numpy/torch scalars and arrays as numbers and lists, NaN and
        infinities as ``None``, other objects as their ``str()``. In a forked child (a
        DataLoader worker) it does nothing: only the process that started the run records."""
        if os.getpid() != self._owner_pid or self._ending:
            return
        read = self._boundary("log()")
        if read is None:
            return
        t_s, energy = read
        entry = {"t_s": t_s, "energy_j": total_energy_j(self._channels, energy),
                 "metrics": json_safe(metrics)}
        self._logs.append(entry)
        self._events.event_later("log", **entry)

    def record_command_rusage(self, usage: Any) -> None:
        """The kernel's account of the command a ``children_only`` run measured (``os.wait4``):
        its own peak RSS and CPU time, exact even for a command too short to be sampled."""
        self._command_rusage = usage

    def exclude_process(self, pid: int) -> None:
        """Leave process ``pid`` (a helper of energymeter's own) and its descendants out of the
        run's per-process figures (memory, CPU time, I/O), until the run stops."""
        self._excluded_pids.append(pid)
        for probe in self._discovery.probes:
            probe.exclude_process(pid)

    # -- experiment values ---------------------------------------------------------------
    def set(self, **values: Any) -> None:
        """Record values of the run (``final_acc=0.91``, ``dataset="filtered"``), before it
        stops or after: written into ``report.json`` and the ledger (an update after stop
        rewrites both). Values are stored as JSON like :meth:`log`'s. Does nothing in a
        forked child."""
        if os.getpid() != self._owner_pid:
            return
        plain = json_safe(values)
        if self._state == "stopped" and self.report is not None:
            self._update_report(dataclasses.replace(
                self.report, values={**self.report.values, **plain}))
            return
        with self._lock:
            self._values.update(plain)
        if self._state == "running":
            self._events.event("set", values=plain)

    def count(self, n: float = 1) -> None:
        """Count ``n`` items processed (samples, tokens, inferences): the report gives the
        energy per item (``energy_per_item_j``). Cheap enough to call every batch."""
        if os.getpid() != self._owner_pid:
            return
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) \
                or n < 0:
            raise UsageError(f"count(n={n!r}); accepted: a number of items >= 0")
        with self._lock:
            self._items = (self._items or 0.0) + n
            items = self._items
            now = time.monotonic()
            due = now - self._counted_at >= COUNT_EVENT_EVERY_S
            if due:
                self._counted_at = now
        if due and self._state == "running":  # kept for a rebuild, at most once a second
            self._events.event_later("count", items=items)

    def estimate_total(self, done: float, total: float) -> Estimate:
        """Project the run's energy, duration and emissions at ``total`` units of work
        (epochs, steps) from ``done`` so far, assuming the rest costs what the work so far
        cost per unit; with a 95 % interval from the variation between successive calls
        (from the second interval on). A boundary read (with ``sync``)."""
        read = self._boundary("estimate_total()")
        if read is None:
            raise UsageError(f"meter {self.name!r} is {self._state}; estimate_total() works "
                             "only inside a running measurement")
        t_s, energy = read
        joules = total_energy_j(self._channels, energy)
        g_per_j = self._carbon.g_per_kwh_now * self._carbon.pue / 3.6e6
        with self._lock:
            return self._progress.estimate(done, total, t_s, joules, g_per_j)

    def _update_report(self, report: Report) -> None:
        """Replace the stopped run's report, on disk too (report.json, its ledger row)."""
        self.report = report
        if report.path is None or not (report.path / REPORT_NAME).exists():
            return  # it could not be written at stop: it lives in memory only
        self.report = self._write(
            report, report.path, replace_ledger_row,
            lambda why: f"the ledger row could not be updated in {self._out / LEDGER_NAME} "
                        f"({why}): it has the run's values from before",
            lambda why: f"report.json could not be updated ({why}): it has the run's values "
                        "from before; the updated report is kept in memory only")

    def _write(self, report: Report, path: Path, ledger: Callable[..., None],
               ledger_failed: Callable[[str], str], json_failed: Callable[[str], str], *,
               error: bool = False) -> Report:
        """Write ``report``'s ledger row (with ``ledger``: append or replace) and then its
        ``report.json`` in ``path``; return it with a warning for each that could not be
        (the row first, so that ``report.json`` can say when the row is missing)."""
        if self._ledger:
            try:
                ledger(self._out, report.to_row(), LEDGER_COLUMNS)
            except OSError as exc:
                report = _warned(report, ledger_failed(_why(exc)))
        try:
            write_json_atomic(path / REPORT_NAME, report.to_dict())
        except OSError as exc:
            report = _warned(report, json_failed(_why(exc)), error=error)
        return report

    # -- report --------------------------------------------------------------------------
    def _build_report(self, status: str, exit_code: int | None, duration_s: float,
                      energy: Mapping[str, float], ended_at: datetime) -> Report:
        agg = self._aggregator
        estimated = {cid: part for p in self._discovery.probes
                     for cid, part in p.estimated_parts().items()}  # never waits on a read
        channels = channel_energies(self._channels, energy, duration_s, agg.peak_power_w,
                                    estimated_parts_s(estimated, self._t0_ns))

        carbon = self._carbon.finish(total_energy_j(self._channels, energy))
        from ..notes import bounded  # each source's warnings are bounded; so is their sum

        warnings = list(self._notes) + self._interval_warnings
        warnings += self._sampler.warnings
        for probe in self._discovery.probes:
            warnings += probe.drain_warnings()
        warnings += self._carbon.warnings
        warnings += self._warnings
        if self._events.error is not None:
            warnings.append(f"events.jsonl could not be written ({self._events.error}): the "
                            "phases and logs after that are in this report only")
        resolution = self._phases.resolution_s  # of the slowest counter
        if duration_s < resolution:
            warnings.append(f"the run lasted {duration_s * 1000:.0f} ms, shorter than the "
                            f"{resolution * 1000:.0f} ms update period of an energy counter: "
                            "its energy is below the counter's resolution")
        phases = self._phases.ended
        short = [p.name for p in phases if p.below_resolution]
        if short:
            warnings.append(f"phases shorter than the energy counters' {resolution * 1000:.0f}"
                            f" ms update period (below resolution): {', '.join(short)}")
        skipped = self._sampler.skipped_ticks
        if skipped > SKIPPED_TICKS_WARN_FRACTION * (skipped + self._sampler.ticks):
            warnings.append(
                f"{skipped} of {skipped + self._sampler.ticks} sampling ticks were skipped (the "
                "process was suspended or overloaded): totals and phases come from boundary "
                "reads and are unaffected; the timeline and peaks have gaps")
        # The kernel's RSS high-water mark of this process and its reaped children catches
        # spikes between samples, but covers their whole lifetime, so it is reported beside
        # the sampled peak rather than merged into it.
        resources = agg.resources()
        usage = self._command_rusage
        if usage is not None:  # the command's own account (energymeter run): this run's only
            # (its peak counts the forking parent's image too, between fork and exec).
            rusage_rss = int(usage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
            cpu_s = usage.ru_utime + usage.ru_stime
        else:
            peaks = peak_rss_bytes_from_rusage()
            rusage_rss = peaks.children_bytes if self._children_only else peaks.max_bytes
            cpu_s = rusage_cpu_s(include_self=not self._children_only) - self._rusage_cpu_s
        resources["max_rss_bytes_rusage"] = rusage_rss
        # Sampling sees live processes; the kernel's accounting sees every child reaped during
        # the run, including ones too short-lived to be sampled (the usual case for
        # `energymeter run -- short-command`). Both are lower bounds: take the larger.
        resources["cpu_time_s"] = max(resources["cpu_time_s"] or 0.0, cpu_s)
        attribution = self._cpu_attribution(resources["cpu_time_s"],
                                            energy_summary(self._channels, energy))
        shares = self._attribution(energy, attribution)
        if (attribution["other_share"] or 0) > OTHER_CPU_WARN_SHARE \
                and attribution["machine_busy_cpu_s"] >= ATTRIBUTION_MIN_BUSY_S:
            own = [c["energy_j"] for cid, c in (shares or {}).get("channels", {}).items()
                   if any(ch.id == cid and ch.kind == "cpu" and ch.in_total
                          for ch in self._channels) and c.get("energy_j") is not None]
            cpu_j = attribution["cpu_energy_j"]
            shown = "" if cpu_j is None or not own else (
                f" ({cpu_j:.1f} J; this run's own share, per interval, is {sum(own):.1f} J: "
                "the attributed energy basis, e.g. compare --basis attributed)")
            warnings.append(
                f"other processes used {attribution['other_share']:.0%} of this machine's busy "
                f"CPU time during the run: its CPU energy is the whole machine's{shown}")
        overhead = {
            "sampler_cpu_s": self._sampler.thread_cpu_s,
            "sampler_cpu_fraction": (self._sampler.thread_cpu_s / duration_s
                                     if duration_s > 0 else 0.0),
            "ticks": self._sampler.ticks,
            "skipped_ticks": self._sampler.skipped_ticks,
            "max_read_span_s": self._sampler.max_read_span_ns / 1e9,
            "interval_s": self.settings.interval_s,
            "gauge_interval_s": self.settings.gauge_interval_s,
            "peak_window_s": agg.window_s,
        }
        return Report(
            run_id=self.run_id, name=self.name, status=status, started_at=self.started_at,
            ended_at=ended_at, duration_s=duration_s, channels=channels,
            phases=phases,
            logs=tuple(self._logs), carbon=carbon, resources=resources,
            cpu_attribution=attribution, overhead=overhead,
            attribution=shares,
            tags=self.tags, values=dict(self._values), items=self._items,
            group_id=self.group_id, warmup=self.warmup,
            baseline=(baseline_block(self._baseline, self._channels, energy, duration_s)
                      if self._baseline is not None else None),
            host=facts.host(self._discovery), software=facts.software(),
            settings=settings_dict(self.settings),
            unavailable=tuple(u.to_dict() for u in self._discovery.unavailable),
            warnings=tuple(bounded(warnings)), command=self.command,
            exit_code=exit_code, parent_run_id=self.parent_run_id,
            job=_with_own_energy(self.job, channels, attribution), path=self.path)

    def _attribution(self, energy: Mapping[str, float], cpu: Mapping[str, Any]
                     ) -> dict[str, Any] | None:
        """Each channel's attributed energy (the ``attributed`` basis), from the per-interval
        shares the aggregator collected and the run-wide CPU time."""
        collected = self._aggregator.attribution
        if collected is None:
            return None
        out = collected.result(energy, cpu["tree_cpu_s"], cpu["machine_busy_cpu_s"],
                               missed_at_end=self._command_rusage is not None)
        for probe in self._discovery.probes:  # how a device probe took its shares (GPUs)
            for cid, info in probe.attribution().items():
                entry = out["channels"].get(cid)
                if entry is not None:
                    entry["method"] = info.get("method", entry["method"])
                    entry["rules"] = info.get("intervals", {})
        return out

    def _cpu_attribution(self, tree_cpu_s: float, summary: Mapping[str, Any]
                         ) -> dict[str, Any]:
        """The process tree's share of the machine's busy CPU time, and that share of the CPU
        energy (machine-wide: RAPL packages and the model see every process)."""
        end = _machine_cpu_seconds()
        begun = self._machine_cpu
        busy = None if end is None or begun is None else max(0.0, end.busy_s - begun.busy_s)
        share = None if not busy else min(1.0, tree_cpu_s / busy)
        cpu_j = summary["by_kind"].get("cpu")
        return {
            "method": "process-tree CPU time over the machine's busy CPU time (/proc/stat: "
                      "user, nice, system, irq, softirq; steal excluded) times CPU energy",
            "tree_cpu_s": tree_cpu_s,
            "machine_busy_cpu_s": busy,
            "tree_share": share,
            "other_share": None if share is None else 1.0 - share,
            "cpu_energy_j": cpu_j,
            "attributed_cpu_energy_j": (None if share is None or cpu_j is None
                                        else share * cpu_j),
        }

    # -- context manager and decorator ---------------------------------------------------
    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._state in ("stopping", "stopped") and os.getpid() == self._owner_pid:
            return  # already stopped: by SIGTERM (its report says interrupted), or by hand
        if exc_type is None or (issubclass(exc_type, SystemExit)
                                and getattr(exc, "code", None) in (None, 0)):
            status = "completed"  # sys.exit(0) is a normal end
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "failed"
        self.stop(status)

    async def __aenter__(self) -> Meter:
        return self.start()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fresh(self) -> Meter:
        return Meter(self.name, sync=self._sync_arg, command=self.command,
                     pynvml=self._pynvml, env=self._env, ledger=self._ledger,
                     children_only=self._children_only, tags=self.tags,
                     group_id=self.group_id, warmup=self.warmup,
                     fallback_to_memory=self._fallback_to_memory, **self._settings_args)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn`` (sync or async): every call is measured as its own run; the latest
        report is ``fn.last_report``."""
        if self.name == "run":
            self.name = getattr(fn, "__qualname__", "run")
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                meter = self._fresh()
                try:
                    async with meter:
                        return await fn(*args, **kwargs)
                finally:
                    async_wrapper.last_report = meter.report  # type: ignore[attr-defined]

            async_wrapper.last_report = None  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            meter = self._fresh()
            try:
                with meter:
                    return fn(*args, **kwargs)
            finally:
                wrapper.last_report = meter.report  # type: ignore[attr-defined]

        wrapper.last_report = None  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]


def _why(exc: OSError) -> str:
    """Why a file could not be written, in a few words: the system's reason (``No space left
    on device``), or the whole message of an error of ours (a refused link)."""
    if isinstance(exc, EnergyMeterError) or not exc.strerror:
        return str(exc)
    return exc.strerror


def _warned(report: Report, message: str, *, error: bool = False) -> Report:
    """``report`` with the warning ``message`` (once), which is logged too (marked as carried
    by the report: ``energymeter run`` shows it in its summary)."""
    (log.error if error else log.warning)("%s", message, extra=IN_REPORT)
    if message in report.warnings:
        return report
    return dataclasses.replace(report, warnings=(*report.warnings, message))


def _with_own_energy(job: Mapping[str, Any] | None, channels: Any,
                     attribution: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``job`` with, under ``ranks=own``, ``own_energy_j``: this rank's GPUs plus its process
    tree's share of the node's CPU and DRAM energy (the per-rank figure; the channels keep the
    node's whole CPU energy, which a merge counts once)."""
    if job is None or job.get("measures") != "own":
        return job
    share = attribution.get("tree_share")
    if share is None and attribution.get("machine_busy_cpu_s") == 0:
        share = 0.0  # the machine's CPUs were idle: no CPU time to attribute to this rank
    gpu_j = sum(c.energy_j for c in channels if c.channel.kind == "gpu" and c.channel.in_total)
    cpu_j = sum(c.energy_j for c in channels
                if c.channel.kind in ("cpu", "dram") and c.channel.in_total)
    return {**job, "own_energy_j": None if share is None else gpu_j + share * cpu_j,
            "own_energy_method": "own GPUs + process-tree CPU share x (CPU + DRAM energy)"}


def _machine_cpu_seconds() -> CpuSeconds | None:
    try:
        return cpu_seconds()
    except (ImportError, OSError) as exc:  # no psutil, or no /proc/stat
        log.debug("machine CPU time unreadable: %r", exc)
        return None


def measure(name: str | Callable[..., Any] | None = None, *, sync: Any = None,
            **settings: Any) -> Any:
    """Measure a block or a function.

    ``with measure("train") as m: ...`` then ``m.report``; ``@measure("infer")`` on sync or
    async functions (``fn.last_report``); ``@measure`` without arguments uses the function's
    name. Keyword arguments are :class:`energymeter.Settings` fields (``out``,
    ``interval_s``, ``region``, ``pue``...) plus ``sync`` (``"torch"``, ``"jax"``, ``"cupy"`` or a
    callable run before every boundary read, because GPU work is asynchronous).
    """
    if callable(name):
        return Meter(None, sync=sync, **settings)(name)
    return Meter(name, sync=sync, **settings)
