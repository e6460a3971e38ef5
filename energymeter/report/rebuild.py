"""Rebuild the report of a run that ended without writing ``report.json`` (SIGKILL, power
loss, OOM killer) from its ``events.jsonl`` and ``samples.csv``.

Energy covers everything up to the last flushed sample (the sampler flushes at least once a
second), so at most about a second at the end is lost; the report says so and is marked
``interrupted``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from ..carbon import CarbonAccount
from ..errors import ConfigError, ReportError
from ..probes.base import Channel, total_energy_j
from ..sampling.aggregate import Aggregator, peak_window_s
from ..settings import FIELD_NAMES, Settings, default, resolve_settings
from ..store import EVENTS_NAME, SAMPLES_NAME, iter_samples, read_events
from .values import Phase, channel_energies, parse_timestamp


def _settings(stored: dict[str, Any], region: str | None) -> Settings:
    """The run's settings as recorded, with the region it resolved and no live provider (a
    rebuild never touches the network)."""
    overrides = {k: v for k, v in stored.items() if k in FIELD_NAMES}
    overrides.update(region=region, carbon_provider="none")
    return resolve_settings(overrides, env={})


def _floats(row: list[str], columns: dict[str, int]) -> dict[str, float]:
    return {name: float(row[i]) for name, i in columns.items() if row[i] != ""}


def rebuild_fields(run_dir: Path) -> dict[str, Any]:
    """The fields of the :class:`~energymeter.report.Report` of ``run_dir`` rebuilt from its
    ``events.jsonl`` and ``samples.csv`` (``Report(**rebuild_fields(run_dir))``).

    Raises :class:`~energymeter.errors.ReportError` when they cannot be read."""
    run_dir = Path(run_dir)
    events = read_events(run_dir / EVENTS_NAME)
    start = next((e for e in events if e.get("event") == "start"), None)
    if start is None:
        raise ReportError(f"{run_dir / EVENTS_NAME} has no start event; cannot rebuild the run")
    stop = next((e for e in events if e.get("event") == "stop"), None)
    channels = [Channel.from_dict(c) for c in start.get("channels", [])]
    stored_settings = dict(start.get("settings", {}))
    header, rows = iter_samples(run_dir / SAMPLES_NAME)
    index = {name: i for i, name in enumerate(header)}
    energy_cols = {c.id: index[f"{c.id}_j"] for c in channels if f"{c.id}_j" in index}
    gauge_cols = {g: index[g] for g in start.get("gauges", []) if g in index}

    interval_s = float(stored_settings.get("interval_s", default("interval_s")))
    aggregator = Aggregator([c.id for c in channels],
                            peak_window_s(interval_s, [c.resolution_s for c in channels]))
    t_s, energy, samples, unreadable = 0.0, {}, 0, 0
    for row in rows:  # streamed: a long run's samples are never all in memory
        try:  # a crash or power loss can leave garbage in the file
            row_t_s = float(row[0])
            row_energy = _floats(row, energy_cols)
            gauges = _floats(row, gauge_cols)
        except ValueError:
            unreadable += 1
            continue
        samples += 1
        t_s, energy = row_t_s, row_energy
        aggregator.add_energy(t_s, energy)
        if gauges:
            aggregator.add_gauges(gauges)

    warnings = list(start.get("notes", []))
    if unreadable:
        warnings.append(f"{unreadable} unreadable row(s) of {SAMPLES_NAME} skipped")
    if stop is None:
        status = "interrupted"
        warnings.append(
            f"rebuilt from {SAMPLES_NAME}: the run ended without writing report.json (killed?); "
            f"energy and duration cover up to the last flushed sample at {t_s:.2f} s")
    else:
        status = stop.get("status", "interrupted")
        warnings.append(f"rebuilt from {SAMPLES_NAME}: report.json was missing")

    carbon = None
    try:
        account = CarbonAccount.start(_settings(stored_settings, start.get("carbon_region")),
                                      env={})
        carbon = account.finish(total_energy_j(channels, energy))
        carbon["region_source"] = start.get("region_source", carbon.get("region_source"))
        warnings += account.warnings
    except ConfigError as exc:
        warnings.append(f"carbon not recomputed: {exc}")

    begun = parse_timestamp(start["started_at"])
    command = start.get("command")
    return dict(
        run_id=start["run_id"], name=start["name"], status=status, started_at=begun,
        ended_at=begun + timedelta(seconds=t_s), duration_s=t_s,
        channels=channel_energies(channels, energy, t_s, aggregator.peak_power_w),
        phases=tuple(sorted((Phase.from_dict(e) for e in events if e.get("event") == "phase"),
                            key=lambda p: p.start_s)),
        logs=tuple({k: v for k, v in e.items() if k != "event"}
                   for e in events if e.get("event") == "log"),
        carbon=carbon, resources=aggregator.resources(),
        overhead={"rebuilt_from_samples": True, "samples": samples},
        settings=stored_settings,
        unavailable=tuple(start.get("unavailable", [])),
        warnings=tuple(dict.fromkeys(warnings)),
        command=tuple(command) if command else None,
        exit_code=stop.get("exit_code") if stop else None,
        parent_run_id=start.get("parent_run_id"),
        path=run_dir,
    )
