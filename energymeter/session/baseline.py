"""Idle baseline: the power a machine draws doing nothing of ours, measured before a run
(``baseline_s``), so that a report can give gross, idle-over-the-same-duration and net energy.

The baseline is measured with the run's own probes over ``baseline_s`` seconds cut into
:data:`WINDOWS` windows: the mean power per channel, and its spread between windows. It is
recorded in ``<out>/baselines.jsonl``; a later run on the same host with the same channels
reuses one measured within :data:`REUSE_WITHIN_S` (and at least as long as asked) instead of
idling again, and says so.

Honest baselines: the machine's busy CPU share over the baseline (``/proc/stat``) is recorded
(``busy_cpu_share``), and so is each GPU's utilisation, the mean of its
``<channel>_utilization_pct`` gauge read at the end of every window (``gpu_utilization_pct``);
a busy share above :data:`MAX_IDLE_BUSY_SHARE`, or a GPU above :data:`MAX_IDLE_GPU_UTIL_PCT`,
flags the baseline (``under_load``) and the run is warned, measured or reused.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import _ids
from .._lazy import LazyLogger
from ..errors import ReportError
from ..probes.base import Channel, Probe
from ..probes.proc import CpuSeconds, cpu_seconds
from ..sampling import Aggregator, Sampler
from ..store.readers import parse_json
from ..store.writers import open_file, write_all

log = LazyLogger("energymeter")

BASELINES_NAME = "baselines.jsonl"
#: A baseline of this host younger than this is reused (seconds).
REUSE_WITHIN_S = 3600.0
#: The baseline is cut into this many windows; their spread is the baseline's.
WINDOWS = 10
#: A baseline measured while more than this share of the machine's CPU time was busy (other
#: processes) is flagged: its "idle" power is overstated, the net energy understated.
MAX_IDLE_BUSY_SHARE = 0.10
#: A baseline during which a GPU's mean utilisation (NVML ``utilization.gpu``: the percentage
#: of its sampling period, 1/6 s to 1 s, in which a kernel ran, read at the end of every
#: window) was above this is flagged. An idle GPU reads 0; one driving a desktop's display
#: reads a few per cent, which changes its power little. Kernels running more than 1/20 of the
#: time keep the GPU out of its idle power state, so its "idle" power is overstated.
MAX_IDLE_GPU_UTIL_PCT = 5.0
#: The suffix of the GPU probes' utilisation gauge (``<channel>_utilization_pct``).
GPU_UTIL_GAUGE = "_utilization_pct"


def _recent(out: Path, hostname: str, channel_ids: Sequence[str], seconds: float,
            now: datetime) -> dict[str, Any] | None:
    path = out / BASELINES_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s (%s): measuring a new baseline", path, exc)
        return None
    for line in reversed(lines[-1000:]):
        try:
            entry = parse_json(line, str(path))
        except ReportError as exc:  # a damaged line is skipped
            log.debug("skipping a line of %s: %s", path, exc)
            continue
        if not isinstance(entry, dict) or entry.get("hostname") != hostname \
                or entry.get("channels") != list(channel_ids):
            continue
        try:
            age_s = (now - datetime.fromisoformat(entry["measured_at"])).total_seconds()
            long_enough = float(entry["duration_s"]) >= seconds
        except (KeyError, TypeError, ValueError):
            continue
        if entry.get("under_load") is True:  # never reused: the next run measures again
            continue
        if 0 <= age_s <= REUSE_WITHIN_S and long_enough and isinstance(entry.get("power_w"),
                                                                       dict):
            return entry
    return None


def _cpu_now() -> CpuSeconds | None:
    try:
        return cpu_seconds()
    except (OSError, ValueError, ImportError) as exc:  # no /proc/stat, no psutil
        log.debug("no machine CPU times for the baseline: %r", exc)
        return None


def busy_share(before: CpuSeconds | None, after: CpuSeconds | None) -> float | None:
    """The share of the machine's CPU time that was busy between two readings (None when
    either is missing or no time passed)."""
    if before is None or after is None or after.total_s <= before.total_s:
        return None
    busy = (after.busy_s + after.steal_s) - (before.busy_s + before.steal_s)
    return min(1.0, max(0.0, busy / (after.total_s - before.total_s)))


class _WindowGauges(Aggregator):
    """The baseline's aggregator: also keeps each GPU's utilisation at every window's read
    (while :attr:`collecting`: not the first and final boundary reads)."""

    def __init__(self, channel_ids: Sequence[str], window_s: float,
                 gauges: Mapping[str, str]) -> None:
        super().__init__(channel_ids, window_s)
        self._gauges = dict(gauges)  # gauge name -> channel id
        self.collecting = False
        self.utilization_pct: dict[str, list[float]] = {cid: [] for cid in gauges.values()}

    def add_gauges(self, gauges: Mapping[str, float]) -> None:
        super().add_gauges(gauges)
        if not self.collecting:
            return
        for name, cid in self._gauges.items():
            value = gauges.get(name)
            if value is not None and math.isfinite(value):  # absent: not read this window
                self.utilization_pct[cid].append(float(value))


def _measure(probes: Sequence[Probe], channels: Sequence[Channel], seconds: float,
             cpu_now: Callable[[], CpuSeconds | None]) -> dict[str, Any]:
    ids = [c.id for c in channels]
    gpu_gauges = {c.id + GPU_UTIL_GAUGE: c.id for c in channels if c.kind == "gpu"}
    aggregator = _WindowGauges(ids, seconds, gpu_gauges)
    sampler = Sampler(probes, interval_s=seconds, gauge_interval_s=seconds,
                      aggregator=aggregator)
    cpu_before = cpu_now()
    reads = [sampler.begin()]
    window_s = seconds / WINDOWS
    try:
        aggregator.collecting = True
        for i in range(1, WINDOWS + 1):
            time.sleep(max(0.0, i * window_s - reads[-1][0]))
            # The gauges too where there are GPUs (after the energy is stamped: the windows'
            # energy is not shifted), so each window has its utilisation.
            reads.append(sampler.read(gauges=bool(gpu_gauges)))
        aggregator.collecting = False
    finally:
        end = sampler.stop()
    share = busy_share(cpu_before, cpu_now())
    gpu_util = {cid: sum(v) / len(v) for cid, v in aggregator.utilization_pct.items() if v}
    powers: dict[str, list[float]] = {cid: [] for cid in ids}
    for (t0, e0), (t1, e1) in zip(reads, reads[1:], strict=False):
        for cid in ids:
            if t1 > t0 and cid in e0 and cid in e1:
                powers[cid].append((e1[cid] - e0[cid]) / (t1 - t0))
    return {
        "duration_s": end[0],
        "windows": WINDOWS,
        "power_w": {cid: sum(p) / len(p) for cid, p in powers.items() if p},
        "power_std_w": {cid: _std(p) for cid, p in powers.items() if p},
        **({"busy_cpu_share": share} if share is not None else {}),
        **({"gpu_utilization_pct": gpu_util} if gpu_util else {}),
        "warnings": sampler.warnings,
    }


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def idle_baseline(probes: Sequence[Probe], channels: Sequence[Channel], seconds: float,
                  out: Path, *, cpu_now: Callable[[], CpuSeconds | None] = _cpu_now
                  ) -> dict[str, Any]:
    """This host's idle power per channel: reused from ``<out>/baselines.jsonl`` when recent
    enough, else measured now for ``seconds`` and recorded there. ``cpu_now``: the machine's
    CPU times (``/proc/stat``; tests pass their own)."""
    hostname = _ids.hostname()
    now = datetime.now(timezone.utc)
    ids = [c.id for c in channels]
    devices = {c.id: c.device for c in channels}
    found = _recent(out, hostname, ids, seconds, now)
    if found is not None:
        return _flagged({**found, "source": "reused"}, [], devices)
    entry = {"hostname": hostname, "channels": ids, "measured_at": now.isoformat(),
             **_measure(probes, channels, seconds, cpu_now)}
    warnings = entry.pop("warnings")
    entry = _flagged(entry, warnings, devices)
    warnings = entry.pop("warnings")
    try:
        fd = open_file(out / BASELINES_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            write_all(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:  # the run goes on; the next one measures again
        warnings = [*warnings, f"the baseline could not be recorded in {out}: {exc}"]
    return {**entry, "source": "measured", "warnings": warnings}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        return None
    return float(value)


def _flagged(entry: dict[str, Any], warnings: list[str],
             devices: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``entry`` with ``under_load`` set, and a warning for each cause, when its
    ``busy_cpu_share`` is above :data:`MAX_IDLE_BUSY_SHARE` or a GPU's mean utilisation
    (``gpu_utilization_pct``) above :data:`MAX_IDLE_GPU_UTIL_PCT`. Neither recorded (a
    baseline recorded before they were measured): unknown, no ``under_load``. ``devices``:
    channel id -> device name, to name the GPUs."""
    share = _number(entry.get("busy_cpu_share"))
    recorded = entry.get("gpu_utilization_pct")
    gpus = {str(cid): pct for cid, value in recorded.items()
            if (pct := _number(value)) is not None} if isinstance(recorded, dict) else {}
    if share is None and not gpus:
        return {**entry, "warnings": warnings}
    reused = " (reused)" if entry.get("source") == "reused" else ""
    cpu_loaded = share is not None and share > MAX_IDLE_BUSY_SHARE
    if cpu_loaded:
        warnings = [*warnings,
                    f"the idle baseline{reused} was measured while other processes kept "
                    f"{share:.0%} of this machine's CPU time busy (above "
                    f"{MAX_IDLE_BUSY_SHARE:.0%}): its idle power is overstated and the net "
                    "energy understated; measure the baseline on an idle machine (a baseline "
                    "flagged so is not reused: the next run with --baseline measures again), "
                    "or compare gross (or attributed) energy instead of net"]
    busy = {cid: pct for cid, pct in gpus.items() if pct > MAX_IDLE_GPU_UTIL_PCT}
    if busy:
        named = ", ".join(
            f"{cid}{f' ({devices[cid]})' if devices and devices.get(cid) else ''} "
            f"{pct:.3g} %" for cid, pct in sorted(busy.items()))
        again = " (a baseline flagged so is not reused: the next run measures again)"
        warnings = [*warnings,
                    f"the idle baseline{reused} was measured while a GPU was running kernels: "
                    f"{named} of the time (NVML utilisation, mean over the baseline's "
                    f"windows; above {MAX_IDLE_GPU_UTIL_PCT:g} %): its idle power "
                    "is overstated and the net energy understated; wait until the GPU is idle "
                    "(`nvidia-smi` lists the processes using it) and measure the baseline "
                    f"again{again}, or compare gross (or attributed) energy instead of net"]
    return {**entry, "under_load": cpu_loaded or bool(busy), "warnings": warnings}
