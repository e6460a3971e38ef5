"""The parts of a report: per-channel energies, phases, and the schema's fixed words.

Below :mod:`.model` (the whole :class:`~energymeter.report.Report`) so that both the report and
the rebuild of a killed run (:mod:`.rebuild`) are made of the same parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import ReportError
from ..probes.base import KINDS, Channel, energy_summary

SCHEMA = "energymeter.report/1"
STATUSES = ("completed", "failed", "interrupted")

#: The columns of :meth:`Report.to_row` (and of the ``runs.csv`` ledger), in order.
LEDGER_COLUMNS = (
    "run_id", "name", "status", "started_at", "ended_at", "duration_s",
    "energy_total_j", *(f"energy_{k}_j" for k in KINDS), "cpu_method", "gpu_method",
    "mean_power_w",
    "region", "g_per_kwh", "pue", "emissions_g",
    "cpu_time_s", "peak_rss_bytes", "peak_gpu_memory_bytes", "read_bytes", "write_bytes",
    "exit_code", "warnings", "command", "path", "parent_run_id",
)


@dataclass(frozen=True)
class ChannelEnergy:
    channel: Channel
    energy_j: float
    mean_power_w: float
    peak_power_w: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.channel.to_dict(), "energy_j": self.energy_j,
                "mean_power_w": self.mean_power_w, "peak_power_w": self.peak_power_w}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelEnergy:
        return cls(Channel.from_dict(data), float(data["energy_j"]),
                   float(data.get("mean_power_w") or 0.0), data.get("peak_power_w"))


def channel_energies(channels: Iterable[Channel], energy_j: Mapping[str, float],
                     duration_s: float, peak_power_w: Mapping[str, float]
                     ) -> tuple[ChannelEnergy, ...]:
    """Per-channel energy, mean power over the run and peak power."""
    return tuple(
        ChannelEnergy(c, energy_j.get(c.id, 0.0),
                      energy_j.get(c.id, 0.0) / duration_s if duration_s > 0 else 0.0,
                      peak_power_w.get(c.id))
        for c in channels)


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    energy_by_channel: Mapping[str, float]
    parent: str | None = None
    below_resolution: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self, channels: Sequence[Channel]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "parent": self.parent, "start_s": self.start_s,
            "end_s": self.end_s, "duration_s": self.duration_s,
            "energy_j": energy_summary(channels, self.energy_by_channel),
            "energy_by_channel_j": dict(self.energy_by_channel),
        }
        if self.below_resolution:
            out["below_resolution"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Phase:
        return cls(data["name"], float(data["start_s"]), float(data["end_s"]),
                   dict(data.get("energy_by_channel_j", {})), data.get("parent"),
                   bool(data.get("below_resolution", False)))


def parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ReportError(f"timestamp {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise ReportError(f"timestamp {value!r} has no time zone; reports use UTC")
    return parsed
