"""Gauges of the measured process tree: memory, CPU time, disk I/O (and the host's used
memory). No energy channels. On Linux they are read from ``/proc`` directly; elsewhere through
psutil.

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

Reading ``/proc`` directly rather than through psutil makes the probe's opening free of
psutil's import (~13 ms of the first ``start()``) and a gauge read about half as costly;
psutil is imported only where there is no ``/proc``, when a probe is created.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

from .._lazy import LazyLogger
from ..errors import ProbeError
from .base import DiscoveryContext, Probe, Unavailable
from .proc import (
    ProcStatTimes,
    RusagePeaks,
    cpu_seconds,
    descendant_stats,
    has_children_files,
    peak_rss_bytes_from_rusage,
    read_pid_io,
    read_pid_stat,
    system_memory_used_bytes,
)

log = LazyLogger("energymeter")

GAUGE_NAMES: tuple[str, ...] = (
    "rss_bytes",
    "pss_bytes",
    "memory_bytes",
    "cpu_time_s",
    "machine_busy_cpu_s",
    "read_bytes",
    "write_bytes",
    "system_memory_used_bytes",
    "children",
)


class _Track:
    """Per-process counters: value at the baseline and last value seen. (A plain class: a
    dataclass costs ~0.6 ms to create at import, on the first start's path.)"""

    __slots__ = ("base_cpu_s", "base_read", "base_write", "counts_from_zero", "last_cpu_s",
                 "last_read", "last_write")

    def __init__(self, counts_from_zero: bool) -> None:
        self.counts_from_zero = counts_from_zero
        self.base_cpu_s = self.last_cpu_s = 0.0
        self.base_read: int | None = None
        self.base_write: int | None = None
        self.last_read = self.last_write = 0

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


class _Seen(NamedTuple):
    """One process of the tree as read now."""

    key: tuple[int, float]  # (pid, start time): a recycled pid is another process
    rss_bytes: int
    cpu_s: float
    io: tuple[int, int] | None
    zombie: bool


class _ProcfsTree:
    """The tree read from ``/proc`` (Linux)."""

    def __init__(self, pid: int, proc_root: str, children_files: bool) -> None:
        self.pid, self.proc, self.children_files = pid, proc_root, children_files
        stat = read_pid_stat(pid, proc_root)
        if stat is None:
            raise ProbeError(f"host probe: cannot open process {pid}: no such process")
        self._start = stat.start_ticks

    def _seen(self, stat: Any) -> _Seen:
        io = None if stat.zombie else read_pid_io(stat.pid, self.proc)
        return _Seen((stat.pid, stat.start_ticks), stat.rss_bytes, stat.cpu_s, io, stat.zombie)

    def read(self, exclude: frozenset[int]) -> tuple[_Seen, list[_Seen]]:
        root = read_pid_stat(self.pid, self.proc)
        if root is None or root.start_ticks != self._start:
            raise ProbeError(f"host probe: cannot read root process {self.pid}: process ended "
                             "or its pid was reused")
        kids = descendant_stats(self.pid, proc_root=self.proc,
                                children_files=self.children_files, exclude=exclude)
        return self._seen(root), [self._seen(k) for k in kids]

    def memory_used_bytes(self) -> int:
        return system_memory_used_bytes(self.proc)

    def machine_busy_cpu_s(self) -> float:
        stat = ProcStatTimes(f"{self.proc}/stat")
        try:
            return cpu_seconds(stat()).busy_s
        finally:
            stat.close()


class _PsutilTree:
    """The tree read through psutil (where there is no ``/proc``)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.ps = psutil
        self.has_io = hasattr(psutil.Process, "io_counters")
        try:
            self.root = psutil.Process(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
            raise ProbeError(f"host probe: cannot open process {pid}: {exc}") from exc

    def _seen(self, proc: Any) -> _Seen:
        ps = self.ps
        with proc.oneshot():
            rss = int(proc.memory_info().rss)
            times = proc.cpu_times()
            zombie = proc.status() == ps.STATUS_ZOMBIE
            io = None
            if self.has_io and not zombie:
                try:
                    counters = proc.io_counters()
                    io = int(counters.read_bytes), int(counters.write_bytes)
                except (ps.AccessDenied, NotImplementedError):
                    io = None
        return _Seen((proc.pid, proc.create_time()), rss, float(times.user + times.system),
                     io, zombie)

    def read(self, exclude: frozenset[int]) -> tuple[_Seen, list[_Seen]]:
        ps = self.ps
        try:
            if not self.root.is_running():
                raise ps.NoSuchProcess(self.root.pid, msg="process ended or its pid was reused")
            root = self._seen(self.root)
            procs = self.root.children(recursive=True)
        except (ps.NoSuchProcess, ps.AccessDenied) as exc:
            raise ProbeError(f"host probe: cannot read root process {self.root.pid}: "
                             f"{exc}") from exc
        kids, left_out = [], set(exclude)
        for proc in procs:
            try:
                if proc.pid in left_out or proc.ppid() in left_out:
                    left_out.add(proc.pid)  # psutil lists parents before their children
                    continue
                kids.append(self._seen(proc))
            except (ps.NoSuchProcess, ps.AccessDenied):  # gone, or not ours: not counted
                continue
        return root, kids

    def memory_used_bytes(self) -> int:
        return int(self.ps.virtual_memory().used)

    def machine_busy_cpu_s(self) -> float:
        return cpu_seconds(self.ps.cpu_times()).busy_s


class ProcessTreeProbe(Probe):
    """Gauges of the process tree rooted at ``pid`` (0: this process) and of the host.

    ``gauges()`` returns ``rss_bytes`` (live tree now), ``pss_bytes`` and ``memory_bytes`` (see
    the module docstring), ``cpu_time_s`` (user + system seconds of
    the tree since open), ``machine_busy_cpu_s`` (the whole machine's busy CPU seconds since
    boot, ``/proc/stat`` as :func:`~energymeter.probes.proc.cpu_seconds` counts them: what the
    attributed energy basis divides the tree's CPU time by, interval by interval),
    ``read_bytes``/``write_bytes`` (storage I/O of the tree since open; left out while no
    process's I/O counters could be read), ``system_memory_used_bytes``
    and ``children`` (live, non-zombie processes of the tree besides the root).
    Raises :class:`~energymeter.errors.ProbeError` when the root itself cannot be read.
    """

    source = "host"

    def __init__(self, pid: int = 0, *, proc_root: str = "/proc",
                 include_root: bool = True) -> None:
        super().__init__((), GAUGE_NAMES)
        self.pid = pid or os.getpid()
        self.include_root = include_root
        self._next_pss_s = 0.0
        self._several = False  # whether the last read saw more than one process in the tree
        self._pss_readable = True
        self._excluded: set[int] = set()
        self._proc = proc_root
        self._children_files = has_children_files(self.pid, proc_root)
        self._io_seen = False
        self._tracks: dict[tuple[int, float], _Track] = {}
        self._ended = [0.0, 0, 0]  # cpu_s, read_bytes, write_bytes of processes that ended
        self.sampled_peak_rss_bytes = 0
        self._tree: _ProcfsTree | _PsutilTree
        if os.path.exists(f"{proc_root}/self/stat") or os.path.isdir(f"{proc_root}/{self.pid}"):
            self._tree = _ProcfsTree(self.pid, proc_root, self._children_files)
        else:
            self._tree = _PsutilTree(self.pid)
            self._pss_readable = False  # PSS comes from /proc/<pid>/smaps_rollup only
        self._collect(opening=True)

    @property
    def may_block(self) -> bool:  # type: ignore[override]
        """Whether a gauge read may wait on another process: psutil's reads are opaque, and
        ``smaps_rollup`` (PSS, read only where the tree has several processes) takes the
        target's memory-map lock. A lone process read from ``/proc`` (``stat``, ``io``: no
        such lock) is read inline by the sampler, without a helper thread, but only when that
        process is the sampler's own (another's ``io`` waits out its ``execve``). PSS is read
        only in a read that began with this already True, so an inline read never takes it."""
        return (not self.reads_procfs or self._several or not self.include_root
                or self.pid != os.getpid())

    @property
    def reads_procfs(self) -> bool:
        return isinstance(self._tree, _ProcfsTree)

    def _observe(self, seen: _Seen, opening: bool) -> None:
        track = self._tracks.get(seen.key)
        if track is None:
            track = _Track(counts_from_zero=not opening)
            if opening:
                track.base_cpu_s = track.last_cpu_s = seen.cpu_s
            self._tracks[seen.key] = track
        if seen.io is not None:
            self._io_seen = True
        track.update(seen.cpu_s, seen.io)

    def _collect(self, opening: bool = False) -> dict[str, float]:
        several = self._several  # what may_block said when this read was called
        root, kids = self._tree.read(frozenset(self._excluded))
        seen: set[tuple[int, float]] = set()
        measured: list[int] = []  # pids of the live processes whose figures count
        rss_total = 0
        if self.include_root:
            seen.add(root.key)
            self._observe(root, opening)
            measured.append(root.key[0])
            rss_total = root.rss_bytes
        live = 0
        for child in kids:
            seen.add(child.key)
            self._observe(child, opening)
            if not child.zombie:
                rss_total += child.rss_bytes
                live += 1
                measured.append(child.key[0])

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
            "system_memory_used_bytes": self._tree.memory_used_bytes(),
            "children": live,
        }
        try:  # what the attributed energy basis divides the tree's CPU time by
            out["machine_busy_cpu_s"] = self._tree.machine_busy_cpu_s()
        except (OSError, ValueError) as exc:
            log.debug("machine busy CPU time unreadable: %r", exc)
        if self._io_seen:
            out["read_bytes"] = read_total
            out["write_bytes"] = write_total
        if len(measured) == 1:
            out["memory_bytes"] = rss_total  # nothing in the tree shares its pages
        elif len(measured) > 1 and not opening and several:
            pss = self._pss_bytes(measured)
            if pss is not None:
                out["pss_bytes"] = out["memory_bytes"] = pss
        self._several = len(measured) > 1
        return out

    def _pss_bytes(self, pids: list[int]) -> int | None:
        """Sum of ``Pss`` over ``processes`` from smaps_rollup, or None when not due (cost
        budget) or not readable here (no smaps_rollup before Linux 4.14, or not ours)."""
        now = time.monotonic()
        if not self._pss_readable or now < self._next_pss_s:
            return None
        began = time.perf_counter()
        total = 0
        for pid in pids:
            try:
                with open(f"{self._proc}/{pid}/smaps_rollup", "rb") as fh:
                    for line in fh:
                        if line.startswith(b"Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except (FileNotFoundError, ProcessLookupError):
                if os.path.isdir(f"{self._proc}/{pid}"):  # the process is there, the file
                    self._pss_readable = False                # is not: the kernel lacks it
                    return None
                continue  # the process ended meanwhile
            except (PermissionError, ValueError, IndexError) as exc:
                log.debug("smaps_rollup of %s unreadable, PSS given up: %r", pid, exc)
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
                    "reads": "/proc" if self.reads_procfs else "psutil",
                    "pss_readable": self._pss_readable})
        return out


def discover(ctx: DiscoveryContext) -> list[Probe | Unavailable]:
    """The host probe for the tree rooted at ``ctx.pid`` (0: this process)."""
    if not os.path.exists("/proc/self/stat"):
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
