"""Idle baseline: the power a machine draws doing nothing of ours, measured before a run
(``baseline_s``), so that a report can give gross, idle-over-the-same-duration and net energy.

The baseline is measured with the run's own probes over ``baseline_s`` seconds cut into
:data:`WINDOWS` windows: the mean power per channel, and its spread between windows. It is
recorded in ``<out>/baselines.jsonl``; a later run on the same host with the same channels
reuses one measured within :data:`REUSE_WITHIN_S` (and at least as long as asked) instead of
idling again, and says so.

Honest baselines: the machine's busy CPU share over the baseline (``/proc/stat``) is recorded
(``busy_cpu_share``); above :data:`MAX_IDLE_BUSY_SHARE` the baseline is flagged
(``under_load``) and the run warned, measured or reused.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
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


def _measure(probes: Sequence[Probe], channels: Sequence[Channel],
             seconds: float) -> dict[str, Any]:
    ids = [c.id for c in channels]
    sampler = Sampler(probes, interval_s=seconds, gauge_interval_s=seconds,
                      aggregator=Aggregator(ids, seconds))
    cpu_before = _cpu_now()
    reads = [sampler.begin()]
    window_s = seconds / WINDOWS
    try:
        for i in range(1, WINDOWS + 1):
            time.sleep(max(0.0, i * window_s - reads[-1][0]))
            reads.append(sampler.read())
    finally:
        end = sampler.stop()
    share = busy_share(cpu_before, _cpu_now())
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
        "warnings": sampler.warnings,
    }


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def idle_baseline(probes: Sequence[Probe], channels: Sequence[Channel], seconds: float,
                  out: Path) -> dict[str, Any]:
    """This host's idle power per channel: reused from ``<out>/baselines.jsonl`` when recent
    enough, else measured now for ``seconds`` and recorded there."""
    hostname = _ids.hostname()
    now = datetime.now(timezone.utc)
    ids = [c.id for c in channels]
    found = _recent(out, hostname, ids, seconds, now)
    if found is not None:
        return _flagged({**found, "source": "reused"}, [])
    entry = {"hostname": hostname, "channels": ids, "measured_at": now.isoformat(),
             **_measure(probes, channels, seconds)}
    warnings = entry.pop("warnings")
    entry = _flagged(entry, warnings)
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


def _flagged(entry: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """``entry`` with ``under_load`` set, and a warning, when its ``busy_cpu_share`` is above
    :data:`MAX_IDLE_BUSY_SHARE` (a baseline recorded before that was measured is unknown)."""
    share = entry.get("busy_cpu_share")
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        return {**entry, "warnings": warnings}
    under_load = share > MAX_IDLE_BUSY_SHARE
    if under_load:
        reused = " (reused)" if entry.get("source") == "reused" else ""
        warnings = [*warnings,
                    f"the idle baseline{reused} was measured while other processes kept "
                    f"{share:.0%} of this machine's CPU time busy (above "
                    f"{MAX_IDLE_BUSY_SHARE:.0%}): its idle power is overstated and the net "
                    "energy understated; measure the baseline on an idle machine, or compare "
                    "gross (or attributed) energy instead of net"]
    return {**entry, "under_load": under_load, "warnings": warnings}
