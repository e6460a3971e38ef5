"""A run's timeline from its ``samples.csv``: cumulative joules per channel over time, and the
power per channel derived from them (what plots and ``Report.to_dataframe("samples")`` show).

Rows are streamed (:func:`iter_energy`) and checked as the rebuild checks them: a damaged row
(a time out of order or range, energy that is not cumulative joules) is skipped, and energy
that goes back counts nothing for that interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ReportError
from ..store import SAMPLES_NAME, iter_samples
from ..store.readers import MAX_DURATION_S, NonDecreasing, check_joules

if TYPE_CHECKING:
    from .model import Report


def _columns(report: Report, channel_ids: Sequence[str] | None,
             header: Sequence[str]) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    wanted = ([c.channel.id for c in report.channels] if channel_ids is None
              else list(channel_ids))
    missing = [c for c in wanted if f"{c}_j" not in index]
    if missing:
        raise ReportError(f"{report.path}/{SAMPLES_NAME} has no column for channel(s) "
                          f"{', '.join(missing)}")
    return {c: index[f"{c}_j"] for c in wanted}


def iter_energy(report: Report, channel_ids: Sequence[str] | None = None
                ) -> Iterator[tuple[float, dict[str, float]]]:
    """``(t_s, {channel: joules since the run began})`` for each readable row of the run's
    ``samples.csv`` (all channels by default). Raises :class:`ReportError` when the run has no
    samples to read."""
    if report.path is None:
        raise ReportError(f"run {report.run_id} has no run directory to read samples from")
    header, rows = iter_samples(report.path / SAMPLES_NAME)
    try:
        columns = _columns(report, channel_ids, header)
        last_t = -math.inf
        cumulative = NonDecreasing(relative=False)
        for row in rows:
            try:
                t_s = float(row[0])
                if not (last_t <= t_s <= MAX_DURATION_S and t_s >= 0.0):  # NaN fails too
                    continue
                energy, _ = cumulative.add({c: check_joules(row[i])
                                            for c, i in columns.items() if row[i] != ""})
            except ValueError:
                continue  # a damaged row: the next ones still tell
            last_t = t_s
            yield t_s, energy
    finally:
        rows.close()


@dataclass(frozen=True)
class Timeline:
    """A run's power over time: ``t_s`` (the middle of each interval between two samples),
    ``power_w`` per channel (its energy over the interval's length), and ``energy_j`` per
    channel at the interval's end (cumulative since the run began)."""

    t_s: tuple[float, ...]
    power_w: dict[str, tuple[float, ...]]
    energy_j: dict[str, tuple[float, ...]]


def timeline(report: Report, channel_ids: Sequence[str] | None = None,
             min_interval_s: float = 0.0) -> Timeline:
    """The power of each channel over time, from consecutive samples at least
    ``min_interval_s`` apart (0: every sample; a counter that updates every 100 ms read every
    10 ms alternates between 0 W and ten times the power: give its update period)."""
    ids = [c.channel.id for c in report.channels] if channel_ids is None else list(channel_ids)
    times: list[float] = []
    power: dict[str, list[float]] = {c: [] for c in ids}
    energy: dict[str, list[float]] = {c: [] for c in ids}
    previous: tuple[float, dict[str, float]] | None = None
    for t_s, joules in iter_energy(report, ids):
        if previous is None:
            previous = (t_s, joules)
            continue
        dt = t_s - previous[0]
        if dt <= 0 or dt < min_interval_s:
            continue
        times.append((t_s + previous[0]) / 2)
        for cid in ids:  # a channel missing from a row is NaN there, never a shifted list
            value, before = joules.get(cid, math.nan), previous[1].get(cid, math.nan)
            power[cid].append((value - before) / dt)
            energy[cid].append(value)
        previous = (t_s, joules)
    return Timeline(tuple(times), {c: tuple(v) for c, v in power.items()},
                    {c: tuple(v) for c, v in energy.items()})
