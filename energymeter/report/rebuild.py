"""Rebuild the report of a run that ended without writing ``report.json`` (SIGKILL, power
loss, OOM killer), or of one still being measured, from its ``events.jsonl`` and
``samples.csv``.

Energy covers everything up to the last flushed sample (the sampler flushes at least once a
second), so at most about a second at the end is lost; the report says so and is marked
``interrupted``, or ``running`` while the process that writes the run is alive on this host and
keeps ``samples.csv`` fresh (see :func:`writer_alive`). A phase still open at the end is shown
as ending at the last flushed sample, marked ``open_at_end``.

The run is rebuilt from what it recorded only: its own settings (never the ``pyproject.toml``
or environment of whoever reads it) and no network. Every value read is checked; what cannot be
used is a :class:`~energymeter.errors.ReportError` naming the file and the line or key.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _ids
from .._lazy import LazyLogger
from ..carbon import CarbonAccount
from ..errors import ConfigError, ReportError
from ..probes.base import Channel, total_energy_j
from ..sampling.aggregate import Aggregator, peak_window_s
from ..sampling.attribute import Attribution
from ..sampling.sampler import FLUSH_EVERY_S
from ..settings import FIELD_NAMES, Settings, default, resolve_settings
from ..store import EVENTS_NAME, REPORT_NAME, SAMPLES_NAME, iter_samples
from ..store.readers import NonDecreasing, check_gauge, check_joules, iter_events
from .fastscan import FAST_SCAN_BYTES
from .fastscan import interpolate as _interpolate
from .fastscan import scan as fast_scan
from .values import (
    LEDGER_COLUMNS,
    MAX_DURATION_S,
    RUNNING,
    STATUSES,
    Fields,
    Phase,
    baseline_block,
    channel_energies,
    channel_from_fields,
    read_log,
    read_tags,
)

if TYPE_CHECKING:
    from .model import Report

log = LazyLogger("energymeter")

#: A run counts as alive while its ``samples.csv`` was written within this many flush periods
#: (the sampler flushes at least every :data:`FLUSH_EVERY_S`, or every sampling interval when
#: that is longer): 10 s by default.
HEARTBEAT_MISSES = 10
LIVE_HEARTBEAT_S = HEARTBEAT_MISSES * FLUSH_EVERY_S
#: How much later than the run's start its writer may seem to have started (the process start
#: time is derived from the boot time, which is rounded): a later one is another process that
#: reuses the pid.
PID_START_SLACK_S = 2.0


def _settings(stored: Mapping[str, Any], region: str | None) -> Settings:
    """The run's settings as recorded, with the region it resolved and no live provider (a
    rebuild never touches the network). Nothing else enters: not the reader's environment, not
    the ``pyproject.toml`` of the directory the reader is in."""
    overrides = {k: v for k, v in stored.items() if k in FIELD_NAMES}
    overrides.update(region=region, carbon_provider="none")
    return resolve_settings(overrides, env={}, pyproject=False)


def _row_values(row: list[str], energy_cols: Mapping[str, int],
                gauge_cols: Mapping[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """The energies and gauges of a ``samples.csv`` row (empty cells left out), checked as
    the sampler checks them (:func:`~energymeter.store.readers.check_joules`,
    :func:`~energymeter.store.readers.check_gauge`); ValueError when one is not."""
    energy = {cid: check_joules(row[i]) for cid, i in energy_cols.items() if row[i] != ""}
    gauges = {g: check_gauge(g, row[i]) for g, i in gauge_cols.items() if row[i] != ""}
    return energy, gauges


def _baseline(f: Fields | None) -> dict[str, Any] | None:
    """A start event's ``baseline`` (measured idle power), its powers checked: watts >= 0."""
    if f is None:
        return None
    for key in ("power_w", "power_std_w"):
        powers = f.obj(key, {})
        for cid in powers.data:
            powers.number(cid, minimum=0.0)
    return f.plain()


@dataclass(frozen=True)
class _Start:
    """What the start event of a run says, checked."""

    run_id: str
    name: str
    started_at: datetime
    channels: tuple[Channel, ...]
    gauges: tuple[str, ...]
    settings: dict[str, Any]
    carbon_region: str | None
    region_source: str | None
    notes: tuple[str, ...]
    unavailable: tuple[dict[str, Any], ...]
    command: tuple[str, ...] | None
    parent_run_id: str | None
    tags: dict[str, Any]
    group_id: str | None
    warmup: bool
    baseline: dict[str, Any] | None
    job: dict[str, Any] | None
    pid: Any
    hostname: Any

    @classmethod
    def read(cls, f: Fields) -> _Start:
        return cls(
            run_id=f.text("run_id"), name=f.text("name"),
            started_at=f.timestamp("started_at"),
            channels=tuple(channel_from_fields(c) for c in f.objects("channels", [])),
            gauges=f.texts("gauges", ()), settings=f.obj("settings", {}).plain(),
            carbon_region=f.text("carbon_region", None, optional=True),
            region_source=f.text("region_source", None, optional=True),
            notes=f.texts("notes", ()),
            unavailable=tuple(u.plain() for u in f.objects("unavailable", [])),
            command=f.texts("command", None, optional=True),
            parent_run_id=f.text("parent_run_id", None, optional=True),
            tags=read_tags(f.obj("tags", {})),
            group_id=f.text("group_id", None, optional=True),
            warmup=f.flag("warmup", False),
            baseline=_baseline(f.optional_obj("baseline")),
            job=j.plain() if (j := f.optional_obj("job")) is not None else None,
            # Recorded since 0.1.0 to tell a live run from a killed one; older runs lack them.
            pid=f.data.get("pid"), hostname=f.data.get("hostname"))


def writer_alive(pid: Any, hostname: Any, started_at: datetime, samples: Path,
                 interval_s: float) -> bool:
    """Whether the process that writes a run is still measuring it: it runs on this host
    (``hostname``), its ``pid`` is alive, not a zombie, and started before the run did (not a
    reused pid), and ``samples.csv`` was written within :data:`LIVE_HEARTBEAT_S` (or
    :data:`HEARTBEAT_MISSES` sampling intervals, when longer). Missing or odd values (a run
    from before 0.1.0, another host) mean not alive."""
    import psutil

    if not isinstance(hostname, str) or hostname != _ids.hostname():
        return False
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31:
        return False
    try:
        age_s = time.time() - samples.stat().st_mtime
    except OSError:
        return False
    if age_s > max(LIVE_HEARTBEAT_S, HEARTBEAT_MISSES * interval_s):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
            return False
        created = process.create_time()
    except psutil.Error:  # no such process, or not ours to inspect
        return False
    return created <= started_at.timestamp() + PID_START_SLACK_S


@dataclass
class _OpenPhase:
    """A ``phase_start`` without its ``phase``: still open when the run ended."""

    name: str
    start_s: float
    parent: str | None
    start_energy: dict[str, float] | None = None


def _open_phases(starts: Sequence[tuple[str, float, str | None]],
                 ended: Sequence[Phase]) -> list[_OpenPhase]:
    """The phases started and never ended: each ``phase`` event ends the ``phase_start`` of
    the same name and start time; of the rest, each one's parent (unless recorded) is the
    latest one opened before it (the nesting at the end)."""
    done = Counter((p.name, p.start_s) for p in ended)
    still: list[_OpenPhase] = []
    for name, t_s, parent in starts:
        if done[(name, t_s)] > 0:
            done[(name, t_s)] -= 1
            continue
        if parent is None and still:
            parent = still[-1].name
        still.append(_OpenPhase(name, t_s, parent))
    return sorted(still, key=lambda p: p.start_s)


def rebuild_fields(run_dir: Path, *, fast_scan_bytes: float = FAST_SCAN_BYTES
                   ) -> dict[str, Any]:
    """The fields of the :class:`~energymeter.report.Report` of ``run_dir`` rebuilt from its
    ``events.jsonl`` and ``samples.csv`` (``Report(**rebuild_fields(run_dir))``).

    Raises :class:`~energymeter.errors.ReportError` when they cannot be read, naming the file
    and the line or key. A ``samples.csv`` of ``fast_scan_bytes`` or more is read in vectorised
    chunks (:mod:`.fastscan`), with the same results."""
    run_dir = Path(run_dir)
    events_path, samples_path = run_dir / EVENTS_NAME, run_dir / SAMPLES_NAME
    events = _read_events(events_path)
    start = events.start
    settings, settings_notes = _run_settings(start)
    interval_s = settings.interval_s if settings is not None else default("interval_s")
    open_phases = _open_phases(events.starts, events.ended)
    scanned = _scan_samples(samples_path, start, interval_s, open_phases, fast_scan_bytes)
    status, status_note = _status(events.stop, start, samples_path, interval_s, scanned.t_s)
    resources, gauge_notes = _drop_negative_gauges(scanned.aggregator.resources())
    phases, phase_notes = _phases(
        events.ended, open_phases, scanned.energy, scanned.t_s,
        max((c.resolution_s for c in start.channels), default=0.0), status == RUNNING)
    carbon, carbon_notes = _carbon_block(settings, start, scanned.energy)
    warnings = [*start.notes, *events.skipped, *settings_notes, *scanned.warnings(),
                status_note, *gauge_notes, *phase_notes, *carbon_notes]
    ended_at = _ended_at(events_path, start.started_at, scanned.t_s)
    return _report_fields(run_dir, events, scanned, status, ended_at, resources, phases,
                          carbon, warnings)


@dataclass
class _Events:
    """What ``events.jsonl`` says: the start (checked), the stop (status and exit code, or
    ``None`` when the run never stopped), the phases ended and those started (name, time,
    parent), user logs, values set, items counted, and the lines skipped (damaged)."""

    start: _Start
    stop: tuple[str, int | None] | None
    ended: list[Phase]
    starts: list[tuple[str, float, str | None]]
    logs: list[dict[str, Any]]
    values: dict[str, Any]
    items: float | None
    skipped: list[str]


def _read_events(events_path: Path) -> _Events:
    """The events of a run, checked; the first ``start`` and ``stop`` count. ReportError when
    a value cannot be used or there is no start event."""
    skipped: list[str] = []
    start: _Start | None = None
    stop: tuple[str, int | None] | None = None
    ended: list[Phase] = []
    starts: list[tuple[str, float, str | None]] = []
    logs: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    items: float | None = None
    for number, event in iter_events(events_path, skipped=skipped):
        f = Fields(event, f"{events_path} line {number}")
        kind = event.get("event")
        if kind == "start" and start is None:
            start = _Start.read(f)
        elif kind == "stop" and stop is None:
            stop = (f.choice("status", STATUSES, "interrupted"),
                    f.integer("exit_code", None, optional=True))
        elif kind == "phase":
            ended.append(Phase.from_dict(event, f.where, ""))
        elif kind == "phase_start":
            starts.append((f.text("name"), f.seconds("t_s", signed=True),
                           f.text("parent", None, optional=True)))
        elif kind == "log":
            logs.append(read_log(f))
        elif kind == "set":
            values.update(f.obj("values").plain())
        elif kind == "count":
            items = f.number("items", minimum=0.0)  # as Meter.count() accepts
    if start is None:
        raise ReportError(f"{events_path} has no start event; cannot rebuild the run")
    return _Events(start, stop, ended, starts, logs, values, items, skipped)


def _run_settings(start: _Start) -> tuple[Settings | None, list[str]]:
    """The run's settings (:func:`_settings`), or ``None`` and a warning when they no longer
    resolve (the carbon block is then not recomputed)."""
    try:
        return _settings(start.settings, start.carbon_region), []
    except ConfigError as exc:
        return None, [f"carbon not recomputed: {exc}"]


@dataclass
class _Samples:
    """What ``samples.csv`` gives: the last readable row's time, each channel's energy then
    (its last readable value), the rows read and those skipped, the energies' drops
    (``cumulative``) and the aggregator holding peaks, gauges and attribution."""

    t_s: float
    samples: int
    unreadable: int
    cumulative: NonDecreasing
    aggregator: Aggregator
    energy: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        # A cumulative channel's energy is its last readable value, even where the last
        # readable row left its cell empty.
        self.energy = dict(self.cumulative.energy)

    def warnings(self) -> list[str]:
        """The rows skipped and the energies that went back, as warnings."""
        notes = ([f"{self.unreadable} unreadable row(s) of {SAMPLES_NAME} skipped"]
                 if self.unreadable else [])
        return notes + self.cumulative.warnings(SAMPLES_NAME)


def _scan_samples(samples_path: Path, start: _Start, interval_s: float,
                  open_phases: Sequence[_OpenPhase], fast_scan_bytes: float) -> _Samples:
    """Read ``samples.csv`` into an aggregator for the run's channels and gauges, giving each
    open phase its start energy: in vectorised chunks from ``fast_scan_bytes`` on (a long run),
    row by row otherwise or where the chunks cannot give the same figures."""
    channels = start.channels
    header, rows = iter_samples(samples_path)
    index = {name: i for i, name in enumerate(header)}
    energy_cols = {c.id: index[f"{c.id}_j"] for c in channels if f"{c.id}_j" in index}
    gauge_cols = {g: index[g] for g in start.gauges if g in index}
    aggregator = Aggregator([c.id for c in channels],
                            peak_window_s(interval_s, [c.resolution_s for c in channels]),
                            Attribution((c.id, c.kind, c.meta) for c in channels))
    waiting = list(open_phases)  # those whose start energy is still to be found
    fast = None
    if samples_path.stat().st_size >= fast_scan_bytes:  # a long run: vectorised chunks
        fast = fast_scan(samples_path, header, energy_cols, gauge_cols,
                         [p.start_s for p in waiting], aggregator)
    if fast is not None:
        rows.close()
        for position, begun in fast.start_energies.items():
            waiting[position].start_energy = begun
        return _Samples(fast.t_s, fast.samples, fast.unreadable, fast.cumulative, aggregator)
    # Energies that go back count nothing for that interval, as the live sampler counts them.
    cumulative = NonDecreasing(relative=False)
    t_s, samples, unreadable = _read_rows(rows, energy_cols, gauge_cols, cumulative,
                                          aggregator, waiting)
    return _Samples(t_s, samples, unreadable + getattr(rows, "skipped", 0), cumulative,
                    aggregator)


def _row_time(cell: str, previous_t_s: float | None) -> float:
    """The time of a ``samples.csv`` row: seconds from 0 to ``MAX_DURATION_S``, not before
    the previous readable row's (``previous_t_s``); ValueError when it is not."""
    row_t_s = float(cell)
    if not (previous_t_s is None or previous_t_s <= row_t_s) or not (
            0.0 <= row_t_s <= MAX_DURATION_S):
        raise ValueError(f"t_s {cell!r} out of order or range")
    return row_t_s


def _read_rows(rows: Any, energy_cols: Mapping[str, int], gauge_cols: Mapping[str, int],
               cumulative: NonDecreasing, aggregator: Aggregator,
               waiting: list[_OpenPhase]) -> tuple[float, int, int]:
    """The rows of ``samples.csv``, streamed (a long run's samples are never all in memory),
    into ``cumulative`` and ``aggregator``; each phase in ``waiting`` gets its start energy,
    interpolated between the readable rows around its start. Returns the last readable row's
    time, the rows read and the rows skipped (a crash or power loss can leave garbage)."""
    t_s, samples, unreadable = 0.0, 0, 0
    previous: tuple[float, dict[str, float]] | None = None
    for row in rows:
        try:
            row_t_s = _row_time(row[0], previous[0] if previous is not None else None)
            raw, gauges = _row_values(row, energy_cols, gauge_cols)
            energy, _ = cumulative.add(raw)
        except ValueError:
            unreadable += 1
            continue
        samples += 1
        t_s = row_t_s
        while waiting and waiting[0].start_s <= t_s:
            opened = waiting.pop(0)
            opened.start_energy = _interpolate(previous, (t_s, energy), opened.start_s)
        previous = (t_s, energy)
        aggregator.add_energy(t_s, energy)
        if gauges:
            aggregator.add_gauges(gauges)
    return t_s, samples, unreadable


def _status(stop: tuple[str, int | None] | None, start: _Start, samples_path: Path,
            interval_s: float, t_s: float) -> tuple[str, str]:
    """The run's status and the warning that says how it was rebuilt: as its stop event says;
    ``running`` while its writer is alive (:func:`writer_alive`); else ``interrupted``."""
    if stop is not None:
        return stop[0], f"rebuilt from {SAMPLES_NAME}: report.json was missing"
    if writer_alive(start.pid, start.hostname, start.started_at, samples_path, interval_s):
        return RUNNING, (
            f"still running (pid {start.pid} on {start.hostname}): figures cover up to the "
            f"last flushed sample at {t_s:.2f} s")
    return "interrupted", (
        f"rebuilt from {SAMPLES_NAME}: the run ended without writing report.json (killed?); "
        f"energy and duration cover up to the last flushed sample at {t_s:.2f} s")


def _drop_negative_gauges(resources: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``resources`` with each negative number made ``None``, and a warning for each: a
    cumulative gauge (cpu_time_s, read_bytes) that went back over the run is a damaged file,
    and not an amount a report may hold."""
    out: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in resources.items():
        if isinstance(value, (int, float)) and value < 0:
            out[key] = None
            warnings.append(f"gauge {key} went backwards over {SAMPLES_NAME} ({value!r}); "
                            "not reported")
        else:
            out[key] = value
    return out, warnings


def _phases(ended: Sequence[Phase], open_phases: Sequence[_OpenPhase],
            energy: Mapping[str, float], t_s: float, resolution_s: float, running: bool
            ) -> tuple[tuple[Phase, ...], list[str]]:
    """The run's phases in order of start: those ended, and those still open shown as ending
    at the last flushed sample (``t_s``, or their start if later), marked ``open_at_end``,
    each with a warning (``running``: the run is still measured)."""
    phases = list(ended)
    warnings: list[str] = []
    for p in open_phases:
        begin = p.start_energy if p.start_energy is not None else energy
        end_s = max(t_s, p.start_s)
        phases.append(Phase(
            p.name, p.start_s, end_s,
            {cid: e - begin[cid] for cid, e in energy.items() if cid in begin},
            parent=p.parent, below_resolution=end_s - p.start_s < resolution_s,
            open_at_end=True))
        warnings.append(
            f"phase {p.name!r} was still open when the run "
            f"{'was last flushed' if running else 'ended'}; it is shown as ending "
            f"at the last flushed sample ({end_s:.2f} s)")
    return tuple(sorted(phases, key=lambda p: p.start_s)), warnings


def _carbon_block(settings: Settings | None, start: _Start, energy: Mapping[str, float]
                  ) -> tuple[dict[str, Any] | None, list[str]]:
    """The carbon block recomputed from the run's settings (no live provider) and its
    warnings; ``None`` without settings, or with a warning when they do not resolve."""
    if settings is None:
        return None, []
    try:
        account = CarbonAccount.start(settings, env={}, live=False)
        carbon = account.finish(total_energy_j(start.channels, energy))
        carbon["region_source"] = start.region_source or carbon.get("region_source")
        return carbon, account.warnings
    except ConfigError as exc:
        return None, [f"carbon not recomputed: {exc}"]


def _ended_at(events_path: Path, started_at: datetime, t_s: float) -> datetime:
    """When the run ended: ``t_s`` after its start. ReportError past the year 9999."""
    try:
        return started_at + timedelta(seconds=t_s)
    except OverflowError:
        raise ReportError(f"{events_path}: started_at {started_at.isoformat()} plus "
                          f"{t_s} s is past the year 9999") from None


def _report_fields(run_dir: Path, events: _Events, scanned: _Samples, status: str,
                   ended_at: datetime, resources: dict[str, Any], phases: tuple[Phase, ...],
                   carbon: dict[str, Any] | None, warnings: Sequence[str]) -> dict[str, Any]:
    """The rebuilt report's fields, each warning once."""
    start, energy, t_s, aggregator = (events.start, scanned.energy, scanned.t_s,
                                      scanned.aggregator)
    channels = list(start.channels)
    return dict(
        run_id=start.run_id, name=start.name, status=status, started_at=start.started_at,
        ended_at=ended_at, duration_s=t_s,
        channels=channel_energies(channels, energy, t_s, aggregator.peak_power_w),
        phases=phases,
        logs=tuple(events.logs),
        carbon=carbon, resources=resources,
        attribution=aggregator.attribution.result(  # type: ignore[union-attr]
            energy, resources.get("cpu_time_s"),  # type: ignore[arg-type]
            aggregator.gauge_delta("machine_busy_cpu_s")),
        overhead={"rebuilt_from_samples": True, "samples": scanned.samples},
        settings=start.settings,
        unavailable=start.unavailable,
        warnings=tuple(dict.fromkeys(warnings)),
        command=start.command or None,
        exit_code=events.stop[1] if events.stop else None,
        parent_run_id=start.parent_run_id,
        tags=start.tags, values=events.values, items=events.items, group_id=start.group_id,
        warmup=start.warmup,
        baseline=(baseline_block(start.baseline, channels, energy, t_s)
                  if start.baseline is not None else None),
        job=start.job,
        path=run_dir,
    )


def save_rebuilt(report: Report) -> tuple[Path, Path]:
    """Write the ``report.json`` of a rebuilt run (atomically) and append its row to the
    ledger ``runs.csv`` of the folder holding the run directory. Returns both paths.

    Raises :class:`ReportError` (saving nothing) when the report was not rebuilt, its run
    directory already has a ``report.json`` (never overwritten), the run is still
    ``running``, or what would be written would not load back (``Report.load`` checks every
    key of it); :class:`OSError` when the files cannot be written."""
    from ..store import append_ledger, write_json_atomic

    run_dir = report.path
    if run_dir is None or not report.overhead.get("rebuilt_from_samples"):
        raise ReportError(f"run {report.run_id} was not rebuilt from its samples; nothing to "
                          "save")
    target = run_dir / REPORT_NAME
    if target.exists():
        raise ReportError(f"{target} exists; it is never overwritten")
    if report.status == RUNNING:
        raise ReportError(f"{run_dir} is still running; it writes its own report.json when it "
                          "ends")
    data = report.to_dict()
    try:  # what is saved is read back by Report.load: never save what it would refuse
        type(report).from_dict(data, path=run_dir, source=target)
    except ReportError as exc:
        raise ReportError(f"the rebuilt report of {run_dir} would not load back, so it is not "
                          f"saved: {exc}") from None
    write_json_atomic(target, data)
    ledger = append_ledger(run_dir.parent, report.to_row(), LEDGER_COLUMNS)
    log.debug("saved %s and its row in %s", target, ledger)
    return target, ledger
