"""The run's own share of each channel's energy, interval by interval (the ``attributed``
energy basis).

A machine's meters see every process: a RAPL package, the CPU model, a GPU's counter. The run's
share of each is taken per interval between two gauge reads (every ``gauge_interval_s``, 1 s by
default), never as one ratio for the whole run, so a neighbour that is busy for half the run
takes its share of that half only:

* **CPU-side channels** (``cpu``, ``dram``, ``soc``, ``psys``, their sub-zones): the share of
  an interval is the process tree's CPU time over the machine's busy CPU time in it
  (``cpu_time_s`` and ``machine_busy_cpu_s`` gauges of the process probe), at most 1. An
  interval in which the machine was not busy at all goes to the run whole: nothing else used
  it. ``dram``, ``soc`` and ``psys`` follow the CPU share as the best proxy available (memory
  traffic and the platform's other engines are not accounted per process).
* **GPU channels**: the share the probe reports for the interval (``<channel>_own_share``:
  NVML's per-process SM utilisation samples, else the processes' memory, else whole when no
  other process is on the device); a MIG channel's is within its instance, times the
  instance's share of the GPU (``meta.mig_share``).

Energy outside the covered intervals (before the first gauge read, a channel suspended over a
read) takes the run-wide share. Sampling sees live processes only: CPU time of processes born
and gone between two reads (the kernel's ``getrusage`` counts them) is spread over the run like
the time that was seen (``cpu_time_scale``, at least 1).

One implementation serves the live sampler and the rebuild of a killed run, as the aggregator
does. Memory is O(channels).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Gauges of the process probe that the CPU share is taken from.
TREE_CPU = "cpu_time_s"
MACHINE_BUSY = "machine_busy_cpu_s"
#: The suffix of a GPU channel's own-share gauge.
OWN_SHARE = "_own_share"
CPU_SIDE_KINDS = frozenset({"cpu", "dram", "soc", "psys"})
#: With fewer CPU intervals than this (a run of a few seconds), the run-wide share is used for
#: all of the CPU-side energy: the kernel's account of the tree's CPU time is exact, while
#: sampling misses what a process did after its last read.
MIN_CPU_INTERVALS = 3

_CPU_METHOD = ("process-tree CPU time / machine busy CPU time per interval "
               "(/proc/<pid>/stat, /proc/stat)")
_PROXY_METHOD = _CPU_METHOD + ", as a proxy (not accounted per process)"
_GPU_METHOD = "the GPU probe's per-interval share of the device (<channel>_own_share)"


def _rule(kind: str) -> str | None:
    if kind in ("cpu",):
        return "cpu"
    if kind in CPU_SIDE_KINDS:
        return "cpu-proxy"
    if kind == "gpu":
        return "gpu"
    return None


class _Sums:
    __slots__ = ("attributed_j", "covered_j", "intervals", "last_j")

    def __init__(self) -> None:
        self.last_j: float | None = None  # the channel's energy at its last share read
        self.covered_j = 0.0
        self.attributed_j = 0.0
        self.intervals = 0


class Attribution:
    """Accumulates each channel's attributed energy over the gauge reads of a run.

    ``channels``: ``(id, kind, meta)`` of each channel. Call :meth:`add` with the cumulative
    energy and the gauges of every read that has gauges (in order), then :meth:`result`."""

    def __init__(self, channels: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        self._channels = list(channels)
        self._rules: dict[str, str] = {}
        self._mig: dict[str, float] = {}
        for cid, kind, meta in self._channels:
            rule = _rule(kind)
            if rule is not None:
                self._rules[cid] = rule
            share = meta.get("mig_share")
            if isinstance(share, (int, float)) and not isinstance(share, bool):
                self._mig[cid] = float(share)
        self._sums = {cid: _Sums() for cid in self._rules}
        self._last_cpu: tuple[float, float] | None = None  # (tree, machine busy) seconds
        self.sampled_tree_cpu_s = 0.0  # the tree's CPU time over the covered intervals
        self.sampled_busy_cpu_s = 0.0
        self._cpu_intervals = 0
        # (tree s, busy s, {channel: (J, share applied)}) of the latest CPU interval
        self._tail: tuple[float, float, dict[str, tuple[float, float]]] | None = None

    def reset(self) -> None:
        """Forget what was added (a new run on the same channels)."""
        self.__init__(self._channels)  # type: ignore[misc]

    def _cpu_share(self, gauges: Mapping[str, float]) -> float | None:
        """The CPU share of the interval that ends at this read (None: not known)."""
        tree, busy = gauges.get(TREE_CPU), gauges.get(MACHINE_BUSY)
        if tree is None or busy is None:
            return None
        last, self._last_cpu = self._last_cpu, (tree, busy)
        if last is None:
            return None
        d_tree, d_busy = max(0.0, tree - last[0]), busy - last[1]
        if d_busy < 0:  # /proc/stat went back (a VM migrated): this interval says nothing
            return None
        self.sampled_tree_cpu_s += d_tree
        self.sampled_busy_cpu_s += d_busy
        self._cpu_intervals += 1
        self._tail = (d_tree, d_busy, {})  # the latest interval, for the end's correction
        return 1.0 if d_busy == 0 else min(1.0, d_tree / d_busy)

    def add(self, energy_j: Mapping[str, float], gauges: Mapping[str, float]) -> None:
        """One read: ``energy_j`` cumulative joules per channel (those read), ``gauges``."""
        cpu = self._cpu_share(gauges)
        for cid, rule in self._rules.items():
            joules = energy_j.get(cid)
            if joules is None:
                continue
            share = gauges.get(cid + OWN_SHARE) if rule == "gpu" else cpu
            sums = self._sums[cid]
            last, sums.last_j = sums.last_j, joules
            if last is None or share is None or share != share:  # NaN: unknown
                continue  # this interval's energy takes the run-wide share
            delta = max(0.0, joules - last)
            applied = min(1.0, max(0.0, float(share)))
            sums.covered_j += delta
            sums.attributed_j += applied * delta
            sums.intervals += 1
            if rule != "gpu" and self._tail is not None:
                self._tail[2][cid] = (delta, applied)

    def _place_missing_at_end(self, missing_s: float) -> float:
        """Put up to ``missing_s`` of CPU time sampling missed into the latest interval (a
        command that ended after the last read before stop: its last stretch was never
        sampled), as far as that interval's busy time allows; re-share its energy. Returns
        the CPU time placed."""
        if self._tail is None or missing_s <= 0:
            return 0.0
        d_tree, d_busy, shares = self._tail
        placed = min(missing_s, max(0.0, d_busy - d_tree))
        if placed <= 0 or d_busy <= 0:
            return 0.0
        new = min(1.0, (d_tree + placed) / d_busy)
        for cid, (delta, applied) in shares.items():
            self._sums[cid].attributed_j += (new - applied) * delta
        self.sampled_tree_cpu_s += placed
        self._tail = None
        return placed

    def result(self, energy_j: Mapping[str, float], tree_cpu_s: float | None,
               machine_busy_cpu_s: float | None, *, missed_at_end: bool = False
               ) -> dict[str, Any]:
        """The attributed energy of each channel with a rule, given the run's final energy
        per channel and its run-wide CPU time (``tree_cpu_s``, the larger of sampling and the
        kernel's account) over the machine's busy CPU time. ``missed_at_end``: the CPU time
        sampling missed is first placed in the last interval (``energymeter run``: the
        command ends, and is reaped, before the stop read), the rest spread over the run."""
        placed = 0.0
        if missed_at_end and tree_cpu_s is not None \
                and self._cpu_intervals >= MIN_CPU_INTERVALS:
            placed = self._place_missing_at_end(tree_cpu_s - self.sampled_tree_cpu_s)
        run_share = None
        if tree_cpu_s is not None and machine_busy_cpu_s:
            run_share = min(1.0, tree_cpu_s / machine_busy_cpu_s)
        elif tree_cpu_s is not None and machine_busy_cpu_s == 0:
            run_share = 1.0
        scale = 1.0
        few = self._cpu_intervals < MIN_CPU_INTERVALS
        if tree_cpu_s is not None and self.sampled_tree_cpu_s > 0:
            scale = max(1.0, tree_cpu_s / self.sampled_tree_cpu_s)
        channels = {cid: self._channel(cid, rule, float(energy_j[cid]), run_share, scale, few)
                    for cid, rule in self._rules.items() if cid in energy_j}
        return {"channels": channels, "run_share": run_share, "cpu_time_scale": scale,
                "cpu_time_placed_at_end_s": placed,
                "cpu_intervals": self._cpu_intervals,
                "cpu_rule": ("run-wide share (fewer than "
                             f"{MIN_CPU_INTERVALS} intervals)" if few else "per interval"),
                "sampled_tree_cpu_s": self.sampled_tree_cpu_s,
                "sampled_busy_cpu_s": self.sampled_busy_cpu_s}

    def _channel(self, cid: str, rule: str, total: float, run_share: float | None,
                 scale: float, few: bool) -> dict[str, Any]:
        """One channel's attributed energy: its covered intervals (CPU ones scaled for the
        CPU time sampling missed), the rest at the run-wide share (CPU) or the covered
        intervals' share (GPU); a MIG instance without figures keeps its capacity share; a
        channel with energy no share can be given for has none (``energy_j`` None)."""
        sums = self._sums[cid]
        if few and rule != "gpu" and run_share is not None:
            sums = _Sums()  # all of it at the run-wide share
        covered = min(sums.covered_j, total)
        attributed = min(covered, sums.attributed_j * (scale if rule != "gpu" else 1.0))
        rest = total - covered
        rest_share = (run_share if rule != "gpu" else
                      (sums.attributed_j / sums.covered_j if sums.covered_j > 0 else None))
        if rest > 0 and rest_share is None and cid in self._mig and not sums.intervals:
            return {"energy_j": total * self._mig[cid], "share": self._mig[cid],
                    "intervals": 0, "method": "the MIG instance's share of the GPU's "
                    "capacity (no per-process figure)"}
        if rest > 0 and rest_share is None:
            return {"energy_j": None, "share": None, "intervals": sums.intervals,
                    "method": _method(rule),
                    "why": ("no per-process figure for this device" if rule == "gpu" else
                            "the machine's busy CPU time was not read")}
        attributed = (attributed + rest * (rest_share or 0.0)) * self._mig.get(cid, 1.0)
        return {"energy_j": attributed, "share": attributed / total if total > 0 else None,
                "intervals": sums.intervals,
                "method": (_method(rule) if sums.intervals or rule == "gpu" else
                           "process-tree CPU time / machine busy CPU time over the whole run")}


def _method(rule: str) -> str:
    return {"cpu": _CPU_METHOD, "cpu-proxy": _PROXY_METHOD, "gpu": _GPU_METHOD}[rule]
