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
from dataclasses import dataclass
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
    channels = list(start.channels)
    warnings = [*start.notes, *skipped]

    settings: Settings | None = None
    try:
        settings = _settings(start.settings, start.carbon_region)
    except ConfigError as exc:
        warnings.append(f"carbon not recomputed: {exc}")
    interval_s = settings.interval_s if settings is not None else default("interval_s")

    header, rows = iter_samples(samples_path)
    index = {name: i for i, name in enumerate(header)}
    energy_cols = {c.id: index[f"{c.id}_j"] for c in channels if f"{c.id}_j" in index}
    gauge_cols = {g: index[g] for g in start.gauges if g in index}
    aggregator = Aggregator([c.id for c in channels],
                            peak_window_s(interval_s, [c.resolution_s for c in channels]),
                            Attribution((c.id, c.kind, c.meta) for c in channels))
    open_phases = _open_phases(starts, ended)
    waiting = list(open_phases)  # those whose start energy is still to be found
    t_s, energy, samples, unreadable = 0.0, {}, 0, 0
    previous: tuple[float, dict[str, float]] | None = None
    fast = None
    if samples_path.stat().st_size >= fast_scan_bytes:  # a long run: vectorised chunks
        fast = fast_scan(samples_path, header, energy_cols, gauge_cols,
                         [p.start_s for p in waiting], aggregator)
    # Energies that go back count nothing for that interval, as the live sampler counts them.
    cumulative = NonDecreasing(relative=False)
    if fast is not None:
        rows.close()
        t_s, samples, unreadable = fast.t_s, fast.samples, fast.unreadable
        cumulative = fast.cumulative
        for index, begun in fast.start_energies.items():
            waiting[index].start_energy = begun
        rows = iter(())  # type: ignore[assignment]
    for row in rows:  # streamed: a long run's samples are never all in memory
        try:  # a crash or power loss can leave garbage in the file
            row_t_s = float(row[0])
            if not (previous is None or previous[0] <= row_t_s) or not (
                    0.0 <= row_t_s <= MAX_DURATION_S):
                raise ValueError(f"t_s {row[0]!r} out of order or range")
            raw, gauges = _row_values(row, energy_cols, gauge_cols)
            row_energy, _ = cumulative.add(raw)
        except ValueError:
            unreadable += 1
            continue
        samples += 1
        t_s, energy = row_t_s, row_energy
        while waiting and waiting[0].start_s <= t_s:
            opened = waiting.pop(0)
            opened.start_energy = _interpolate(previous, (t_s, energy), opened.start_s)
        previous = (t_s, energy)
        aggregator.add_energy(t_s, energy)
        if gauges:
            aggregator.add_gauges(gauges)
    unreadable += getattr(rows, "skipped", 0)
    # A cumulative channel's energy is its last readable value, even where the last readable
    # row left its cell empty.
    energy = dict(cumulative.energy)

    if unreadable:
        warnings.append(f"{unreadable} unreadable row(s) of {SAMPLES_NAME} skipped")
    warnings += cumulative.warnings(SAMPLES_NAME)
    if stop is not None:
        status = stop[0]
        warnings.append(f"rebuilt from {SAMPLES_NAME}: report.json was missing")
    elif writer_alive(start.pid, start.hostname, start.started_at, samples_path, interval_s):
        status = RUNNING
        warnings.append(
            f"still running (pid {start.pid} on {start.hostname}): figures cover up to the "
            f"last flushed sample at {t_s:.2f} s")
    else:
        status = "interrupted"
        warnings.append(
            f"rebuilt from {SAMPLES_NAME}: the run ended without writing report.json (killed?); "
            f"energy and duration cover up to the last flushed sample at {t_s:.2f} s")

    resources = aggregator.resources()
    for key, value in resources.items():  # a cumulative gauge (cpu_time_s, read_bytes) that
        # went back over the run: a damaged file, and not an amount a report may hold
        if isinstance(value, (int, float)) and value < 0:
            resources[key] = None
            warnings.append(f"gauge {key} went backwards over {SAMPLES_NAME} ({value!r}); "
                            "not reported")

    resolution_s = max((c.resolution_s for c in channels), default=0.0)
    phases = list(ended)
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
            f"{'was last flushed' if status == RUNNING else 'ended'}; it is shown as ending "
            f"at the last flushed sample ({end_s:.2f} s)")

    carbon = None
    if settings is not None:
        try:
            account = CarbonAccount.start(settings, env={}, live=False)
            carbon = account.finish(total_energy_j(channels, energy))
            carbon["region_source"] = start.region_source or carbon.get("region_source")
            warnings += account.warnings
        except ConfigError as exc:
            warnings.append(f"carbon not recomputed: {exc}")

    try:
        ended_at = start.started_at + timedelta(seconds=t_s)
    except OverflowError:
        raise ReportError(f"{events_path}: started_at {start.started_at.isoformat()} plus "
                          f"{t_s} s is past the year 9999") from None
    return dict(
        run_id=start.run_id, name=start.name, status=status, started_at=start.started_at,
        ended_at=ended_at, duration_s=t_s,
        channels=channel_energies(channels, energy, t_s, aggregator.peak_power_w),
        phases=tuple(sorted(phases, key=lambda p: p.start_s)),
        logs=tuple(logs),
        carbon=carbon, resources=resources,
        attribution=aggregator.attribution.result(  # type: ignore[union-attr]
            energy, resources.get("cpu_time_s"),  # type: ignore[arg-type]
            aggregator.gauge_delta("machine_busy_cpu_s")),
        overhead={"rebuilt_from_samples": True, "samples": samples},
        settings=start.settings,
        unavailable=start.unavailable,
        warnings=tuple(dict.fromkeys(warnings)),
        command=start.command or None,
        exit_code=stop[1] if stop else None,
        parent_run_id=start.parent_run_id,
        tags=start.tags, values=values, items=items, group_id=start.group_id,
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
