"""Gauges of the measured process tree through psutil: memory, CPU time, disk I/O (and the
host's used memory). No energy channels.

The probe watches the process tree rooted at ``pid`` (the measuring process by default): the root,
its children and their descendants, so that ``energymeter run -- cmd`` (which runs ``cmd`` as a
child) and DataLoader-style worker processes are counted.

Cumulative gauges (``cpu_time_s``, ``read_bytes``, ``write_bytes``) are *since the probe opened*
and never go down: every process is tracked by ``(pid, create_time)`` (so a recycled pid is a new
process); processes present at opening count from their first observation, processes born later
count from zero, and a process that ends keeps the last value seen for it. The root's
``children_user``/``children_system`` times are deliberately not used: they would count reaped
children a second time. What a process does between its last sample and its exit is missed; the
kernel's own accounting for reaped children (``proc.peak_rss_bytes_from_rusage``) lets the meter
bound peaks that sampling did not see. A grandchild reparented to init when its parent dies leaves
the tree and is counted up to its last observation.

``rss_bytes`` sums the resident set sizes of the live tree: pages shared between processes (a
forked worker's copy-on-write pages) are counted once per process, as ``ps`` would, so the sum
can be several times the memory really used. ``pss_bytes`` sums the proportional set sizes
(``Pss`` of ``/proc/<pid>/smaps_rollup``: each shared page divided among its sharers), which add
up correctly. The kernel walks a process's page tables to answer (about 14 ms per GB resident
here), so PSS is read only when the tree has several processes (a lone process shares its pages
with nothing in the tree: its RSS is the figure) and at most :data:`PSS_CPU_BUDGET` of the
time. ``memory_bytes`` is the best figure of each read: the PSS sum when it was read, the RSS
of a lone process, absent otherwise.

With ``include_root=False`` only the descendants of ``pid`` are measured: what ``energymeter
run`` wants, whose own process is not the command's.

psutil is imported only when a probe is created, never at module import.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ProbeError
from .base import DiscoveryContext, Probe, Unavailable
from .proc import RusagePeaks, descendants, has_children_files, peak_rss_bytes_from_rusage

log = logging.getLogger("energymeter")

GAUGE_NAMES: tuple[str, ...] = (
    "rss_bytes",
    "pss_bytes",
    "memory_bytes",
    "cpu_time_s",
    "read_bytes",
    "write_bytes",
    "system_memory_used_bytes",
    "children",
)


@dataclass
class _Track:
    """Per-process counters: value at the baseline and last value seen."""

    counts_from_zero: bool
    base_cpu_s: float = 0.0
    last_cpu_s: float = 0.0
    base_read: int | None = None
    last_read: int = 0
    base_write: int | None = None
    last_write: int = 0

    def update(self, cpu_s: float, io: tuple[int, int] | None) -> None:
        self.last_cpu_s = max(self.last_cpu_s, cpu_s)
        if io is not None:
            read, write = io
            if self.base_read is None or self.base_write is None:
                self.base_read = 0 if self.counts_from_zero else read
                self.base_write = 0 if self.counts_from_zero else write
            self.last_read = max(self.last_read, read)
            self.last_write = max(self.last_write, write)

    def totals(self) -> tuple[float, int, int]:
        read = self.last_read - self.base_read if self.base_read is not None else 0
        write = self.last_write - self.base_write if self.base_write is not None else 0
        return self.last_cpu_s - self.base_cpu_s, read, write


#: The largest share of wall time spent reading smaps_rollup for PSS.
PSS_CPU_BUDGET = 0.02


class ProcessTreeProbe(Probe):
    """Gauges of the process tree rooted at ``pid`` (0: this process) and of the host.

    ``gauges()`` returns ``rss_bytes`` (live tree now), ``pss_bytes`` and ``memory_bytes`` (see
    the module docstring), ``cpu_time_s`` (user + system seconds of
    the tree since open), ``read_bytes``/``write_bytes`` (storage I/O of the tree since open;
    left out while no process's ``io_counters`` could be read), ``system_memory_used_bytes``
    and ``children`` (live, non-zombie processes of the tree besides the root).
    Raises :class:`~energymeter.errors.ProbeError` when the root itself cannot be read.
    """

    source = "host"

    def __init__(self, pid: int = 0, *, proc_root: str = "/proc",
                 include_root: bool = True) -> None:
        import psutil

        super().__init__((), GAUGE_NAMES)
        self._ps = psutil
        self.pid = pid or os.getpid()
        self.include_root = include_root
        self._next_pss_s = 0.0
        self._pss_readable = True
        self._excluded: set[int] = set()
        self._proc = proc_root
        self._children_files = has_children_files(self.pid, proc_root)
        self._has_io = hasattr(psutil.Process, "io_counters")
        self._io_seen = False
        self._tracks: dict[tuple[int, float], _Track] = {}
        self._ended = [0.0, 0, 0]  # cpu_s, read_bytes, write_bytes of processes that ended
        self.sampled_peak_rss_bytes = 0
        try:
            self._root = psutil.Process(self.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
            raise ProbeError(f"host probe: cannot open process {self.pid}: {exc}") from exc
        self._collect(opening=True)

    # -- psutil access -------------------------------------------------------------------
    def _io(self, proc: Any) -> tuple[int, int] | None:
        if not self._has_io:
            return None
        try:
            io = proc.io_counters()
        except (self._ps.AccessDenied, NotImplementedError):  # no /proc/<pid>/io, or not ours
            return None
        self._io_seen = True
        return int(io.read_bytes), int(io.write_bytes)

    def _stats(self, proc: Any) -> tuple[int, float, tuple[int, int] | None, bool]:
        """(rss_bytes, cpu_s, (read, write) or None, is_zombie); psutil errors propagate."""
        with proc.oneshot():
            rss = int(proc.memory_info().rss)
            times = proc.cpu_times()
            zombie = proc.status() == self._ps.STATUS_ZOMBIE
            io = None if zombie else self._io(proc)
        return rss, float(times.user + times.system), io, zombie

    def _observe(self, key: tuple[int, float], cpu_s: float, io: tuple[int, int] | None,
                 opening: bool) -> None:
        track = self._tracks.get(key)
        if track is None:
            track = _Track(counts_from_zero=not opening)
            if opening:
                track.base_cpu_s = track.last_cpu_s = cpu_s
            self._tracks[key] = track
        track.update(cpu_s, io)

    def _collect(self, opening: bool = False) -> dict[str, float]:
        ps = self._ps
        root = self._root
        try:
            if not root.is_running():
                raise ps.NoSuchProcess(self.pid, msg="process ended or its pid was reused")
            rss_total, cpu_s, io, _ = self._stats(root)
            kids = descendants(root, proc_root=self._proc,
                               children_files=self._children_files,
                               exclude=frozenset(self._excluded))
        except (ps.NoSuchProcess, ps.AccessDenied) as exc:
            raise ProbeError(f"host probe: cannot read root process {self.pid}: {exc}") from exc
        seen: set[tuple[int, float]] = set()
        measured: list[Any] = []  # live processes whose figures count
        if self.include_root:
            seen.add((root.pid, root.create_time()))
            self._observe((root.pid, root.create_time()), cpu_s, io, opening)
            measured.append(root)
        else:
            rss_total = 0

        live = 0
        for child in kids:
            try:
                key = (child.pid, child.create_time())
            except (ps.NoSuchProcess, ps.AccessDenied):
                continue
            try:
                rss, cpu_s, io, zombie = self._stats(child)
            except ps.AccessDenied:
                seen.add(key)  # alive but unreadable: keep what we had
                continue
            except ps.NoSuchProcess:  # includes ZombieProcess: gone between walk and read
                continue
            seen.add(key)
            self._observe(key, cpu_s, io, opening)
            if not zombie:
                rss_total += rss
                live += 1
                measured.append(child)

        # Fold processes that ended into a running total, so memory stays O(live processes).
        for key in [k for k in self._tracks if k not in seen]:
            cpu_d, read_d, write_d = self._tracks.pop(key).totals()
            self._ended[0] += cpu_d
            self._ended[1] += read_d
            self._ended[2] += write_d

        cpu_total, read_total, write_total = self._ended
        for track in self._tracks.values():
            cpu_d, read_d, write_d = track.totals()
            cpu_total += cpu_d
            read_total += read_d
            write_total += write_d

        self.sampled_peak_rss_bytes = max(self.sampled_peak_rss_bytes, rss_total)
        out: dict[str, float] = {
            "rss_bytes": rss_total,
            "cpu_time_s": cpu_total,
            "system_memory_used_bytes": int(ps.virtual_memory().used),
            "children": live,
        }
        if self._io_seen:
            out["read_bytes"] = read_total
            out["write_bytes"] = write_total
        if len(measured) == 1:
            out["memory_bytes"] = rss_total  # nothing in the tree shares its pages
        elif len(measured) > 1 and not opening:
            pss = self._pss_bytes(measured)
            if pss is not None:
                out["pss_bytes"] = out["memory_bytes"] = pss
        return out

    def _pss_bytes(self, processes: list[Any]) -> int | None:
        """Sum of ``Pss`` over ``processes`` from smaps_rollup, or None when not due (cost
        budget) or not readable here (no smaps_rollup before Linux 4.14, or not ours)."""
        now = time.monotonic()
        if not self._pss_readable or now < self._next_pss_s:
            return None
        began = time.perf_counter()
        total = 0
        for proc in processes:
            try:
                with open(f"{self._proc}/{proc.pid}/smaps_rollup", "rb") as fh:
                    for line in fh:
                        if line.startswith(b"Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except (FileNotFoundError, ProcessLookupError):
                if os.path.isdir(f"{self._proc}/{proc.pid}"):  # the process is there, the file
                    self._pss_readable = False                # is not: the kernel lacks it
                    return None
                continue  # the process ended meanwhile
            except (PermissionError, ValueError, IndexError) as exc:
                log.debug("smaps_rollup of %s unreadable, PSS given up: %r", proc.pid, exc)
                self._pss_readable = False
                return None
        self._next_pss_s = now + (time.perf_counter() - began) / PSS_CPU_BUDGET
        return total

    # -- Probe interface -----------------------------------------------------------------
    def _read(self) -> dict[str, float]:
        return {}

    def _gauges(self) -> dict[str, float]:
        return self._collect()

    def exclude_process(self, pid: int) -> None:
        self._excluded.add(pid)

    def include_process(self, pid: int) -> None:
        self._excluded.discard(pid)

    def peak_rss_bytes_from_rusage(self) -> RusagePeaks | None:
        """:func:`~energymeter.probes.proc.peak_rss_bytes_from_rusage` when the root is this
        process, else ``None`` (the kernel's marks describe the calling process only)."""
        if self.pid != os.getpid():
            return None
        return peak_rss_bytes_from_rusage()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({"pid": self.pid, "include_root": self.include_root,
                    "gauges": list(self.gauge_names), "io_counters": self._io_seen,
                    "pss_readable": self._pss_readable})
        return out


def discover(ctx: DiscoveryContext) -> list[Probe | Unavailable]:
    """The host probe for the tree rooted at ``ctx.pid`` (0: this process)."""
    try:
        import psutil  # noqa: F401 - availability check
    except ImportError:
        return [Unavailable("host", "psutil is not installed",
                            "pip install psutil (a dependency of energymeter)")]
    pid = ctx.pid or os.getpid()
    try:
        return [ProcessTreeProbe(pid, include_root=ctx.include_root)]
    except ProbeError as exc:
        return [Unavailable("host", str(exc),
                            f"check that process {pid} exists and belongs to this user")]
