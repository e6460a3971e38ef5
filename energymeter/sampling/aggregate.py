"""Running aggregates over the sample stream: peak power per channel, first/last/peak gauges.

One implementation serves both the live sampler and the rebuild of a killed run from
``samples.csv``, so a rebuilt report is computed exactly as a live one. Memory is O(1) in run
length: only the rows inside the peak-power window are kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from .attribute import Attribution

# Gauges that are cumulative since the probe opened: the run's value is last - first.
CUMULATIVE_GAUGES = frozenset({"cpu_time_s", "read_bytes", "write_bytes"})

# Peak power is the highest mean power over any window at least this many times the counter's
# update period (and at least one sampling interval): a counter that updates every 100 ms
# sampled every 100 ms would otherwise show 0 W and 2x power alternately.
PEAK_WINDOW_RESOLUTIONS = 10


def peak_window_s(interval_s: float, resolutions_s: Sequence[float]) -> float:
    """The window over which peak power is taken for a set of channels."""
    return max([interval_s, *(PEAK_WINDOW_RESOLUTIONS * r for r in resolutions_s)])


class Aggregator:
    """Peaks and gauges of a run; with ``attribution``, each gauge read also goes to it with
    the energy of the same read (the run's own share, :mod:`.attribute`)."""

    def __init__(self, channel_ids: Sequence[str], window_s: float,
                 attribution: Attribution | None = None) -> None:
        self.channel_ids = tuple(channel_ids)
        self.attribution = attribution
        self._last_energy: Mapping[str, float] = {}
        self.window_s = window_s
        self._rows: deque[tuple[float, Mapping[str, float]]] = deque()
        self.peak_power_w: dict[str, float] = {}
        self.gauge_first: dict[str, float] = {}
        self.gauge_last: dict[str, float] = {}
        self.gauge_peak: dict[str, float] = {}

    def add_energy(self, t_s: float, energy_j: Mapping[str, float]) -> None:
        rows = self._rows
        while len(rows) >= 2 and t_s - rows[1][0] >= self.window_s:
            rows.popleft()
        if rows and t_s - rows[0][0] >= self.window_s:
            t0, e0 = rows[0]
            dt = t_s - t0
            peaks = self.peak_power_w
            for cid in self.channel_ids:
                if cid in energy_j and cid in e0:
                    power_w = (energy_j[cid] - e0[cid]) / dt
                    if power_w > peaks.get(cid, float("-inf")):
                        peaks[cid] = power_w
        rows.append((t_s, energy_j))
        self._last_energy = energy_j

    def add_gauges(self, gauges: Mapping[str, float]) -> None:
        if self.attribution is not None:
            self.attribution.add(self._last_energy, gauges)
        first, last, peak = self.gauge_first, self.gauge_last, self.gauge_peak
        for name, value in gauges.items():
            if value is None:
                continue
            if name not in first:
                first[name] = value
            last[name] = value
            if value > peak.get(name, float("-inf")):
                peak[name] = value

    def gauge_delta(self, name: str) -> float | None:
        """last - first of a cumulative gauge (``None`` when never seen)."""
        if name not in self.gauge_last:
            return None
        return self.gauge_last[name] - self.gauge_first[name]

    def resources(self) -> dict[str, float | int | str | None]:
        """The report's resource figures from the gauges seen (process and GPU probes).

        ``peak_memory_bytes`` is the peak of the best memory figure of each gauge read (the PSS
        sum where several processes ran, a lone process's RSS): ``memory_basis`` is ``"pss"``
        when PSS was read, else ``"rss"``. ``peak_rss_bytes`` is the peak summed RSS, which
        counts pages shared between processes once per process."""
        peak_rss = int(self.gauge_peak.get("rss_bytes", 0))
        peak_pss = self.gauge_peak.get("pss_bytes")
        return {
            "cpu_time_s": self.gauge_delta("cpu_time_s"),
            "peak_rss_bytes": peak_rss,
            "peak_pss_bytes": None if peak_pss is None else int(peak_pss),
            "peak_memory_bytes": int(self.gauge_peak.get("memory_bytes", peak_rss)),
            "memory_basis": "rss" if peak_pss is None else "pss",
            "peak_gpu_memory_bytes": int(self.gauge_peak.get("gpu_process_memory_bytes", 0)),
            "read_bytes": self.gauge_delta("read_bytes"),
            "write_bytes": self.gauge_delta("write_bytes"),
        }
