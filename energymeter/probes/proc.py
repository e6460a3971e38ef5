"""What probes read from ``/proc`` and the kernel's process accounting, one copy each:
``/proc/cpuinfo`` (CPU model per socket, package count), the process tree under a pid, and
``getrusage`` figures (CPU seconds, peak RSS).

On Linux everything is read from ``/proc`` directly (no psutil: cheaper per read, and nothing
to import at start); psutil serves where there is no ``/proc``, imported only inside the
functions that need it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

from .._lazy import LazyLogger

log = LazyLogger("energymeter")

CPUINFO = Path("/proc/cpuinfo")


# -- /proc/cpuinfo ---------------------------------------------------------------------------------
def read_text(path: Path | str) -> str:
    """The text of a ``/proc`` (or ``/sys``) file; empty when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        log.debug("cannot read %s: %r", path, exc)
        return ""


def read_cpuinfo(path: Path | str = CPUINFO) -> str:
    """The text of ``/proc/cpuinfo`` (or ``path``); empty when it cannot be read."""
    return read_text(path)


def cpuinfo_processors(cpuinfo_text: str) -> list[dict[str, str]]:
    """One ``{key: value}`` per processor block of ``/proc/cpuinfo`` text (keys lower case;
    the first value of a key repeated within a block wins)."""
    blocks: list[dict[str, str]] = []
    for block in cpuinfo_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def model_name_from_cpuinfo(cpuinfo_text: str) -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo`` text (``None`` if there is none)."""
    return next((p["model name"] for p in cpuinfo_processors(cpuinfo_text)
                 if p.get("model name")), None)


def cpu_model_name(cpuinfo_text: str) -> str:
    """The CPU's model name: ``/proc/cpuinfo``'s, else the platform's, else ``unknown CPU``."""
    name = model_name_from_cpuinfo(cpuinfo_text)
    if name:
        return name
    import platform  # ~3 ms to import: only where /proc/cpuinfo names no model

    return platform.processor() or "unknown CPU"


def under_hypervisor(cpuinfo_text: str) -> bool:
    """Whether the CPU flags carry ``hypervisor`` (a virtual machine)."""
    flags = next((p.get("flags", "") for p in cpuinfo_processors(cpuinfo_text)), "")
    return "hypervisor" in flags.split()


def count_packages(cpuinfo_text: str) -> int:
    """Number of physical packages (sockets): distinct ``physical id`` values, 1 if absent."""
    ids = {p["physical id"] for p in cpuinfo_processors(cpuinfo_text) if "physical id" in p}
    return max(1, len(ids))


def cpu_models_by_socket(cpuinfo_text: str) -> dict[int, str]:
    """``{physical id: model name}``; key -1 holds the first model seen (VMs often have no
    ``physical id``, and then it serves every socket)."""
    models: dict[int, str] = {}
    for p in cpuinfo_processors(cpuinfo_text):
        model = p.get("model name")
        if not model:
            continue
        models.setdefault(-1, model)
        socket = p.get("physical id", "")
        if socket.isdigit():
            models.setdefault(int(socket), model)
    return models


# -- the process tree ------------------------------------------------------------------------------
def has_children_files(pid: int, proc_root: str = "/proc") -> bool:
    """Whether the kernel lists children in ``/proc/<pid>/task/<tid>/children``
    (CONFIG_PROC_CHILDREN)."""
    return os.path.exists(f"{proc_root}/{pid}/task/{pid}/children")


class PidStat(NamedTuple):
    """What ``/proc/<pid>/stat`` says of one process."""

    pid: int
    ppid: int
    zombie: bool
    cpu_s: float  # user + system of the process itself (reaped children not included)
    start_ticks: int  # since boot, in clock ticks: (pid, start_ticks) names a process
    rss_bytes: int  # resident pages (statm) x page size


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_pid_stat(pid: int, proc_root: str = "/proc") -> PidStat | None:
    """``/proc/<pid>/stat`` of ``pid``; None when there is no such process (any more)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as fh:
            text = fh.read()
        # Resident pages from statm, as psutil: stat's rss is the kernel's approximate
        # per-CPU sum, statm's exact on recent kernels (27 pages apart here for a `sleep`).
        with open(f"{proc_root}/{pid}/statm", "rb") as fh:
            resident_pages = int(fh.read().split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses
    return PidStat(pid, int(fields[1]), fields[0] == b"Z",
                   (int(fields[11]) + int(fields[12])) * _TICK_S, int(fields[19]),
                   resident_pages * _PAGE_BYTES)


def read_pid_io(pid: int, proc_root: str = "/proc") -> tuple[int, int] | None:
    """(read_bytes, write_bytes) of storage I/O from ``/proc/<pid>/io``; None where it cannot
    be read (another user's process, or a kernel without task I/O accounting)."""
    try:
        with open(f"{proc_root}/{pid}/io", "rb") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    read = write = None
    for line in text.splitlines():
        if line.startswith(b"read_bytes:"):
            read = int(line.split()[1])
        elif line.startswith(b"write_bytes:"):
            write = int(line.split()[1])
    return None if read is None or write is None else (read, write)


def system_memory_used_bytes(proc_root: str = "/proc") -> int:
    """Memory in use on the machine, from ``/proc/meminfo``, as psutil's
    ``virtual_memory().used`` is on Linux: total - ``MemAvailable`` (before Linux 3.14, which
    lacks it: total - free - buffers - page cache, reclaimable slab included)."""
    with open(f"{proc_root}/meminfo", "rb") as fh:
        info = {}
        for line in fh:
            key, _, rest = line.partition(b":")
            info[key] = int(rest.split()[0]) * 1024
    total = info[b"MemTotal"]
    available = info.get(b"MemAvailable")
    if available is None:
        available = (info[b"MemFree"] + info.get(b"Buffers", 0) + info.get(b"Cached", 0)
                     + info.get(b"SReclaimable", 0))
    return max(0, total - available)


def _children_from_files(pid: int, proc_root: str) -> list[int]:
    kids: list[int] = []
    try:
        tids = os.listdir(f"{proc_root}/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return kids
    for tid in tids:
        try:
            with open(f"{proc_root}/{pid}/task/{tid}/children", "rb") as fh:
                kids.extend(int(k) for k in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):  # thread or process ended
            continue
    return kids


def child_pids(pid: int, proc_root: str = "/proc") -> list[int]:
    """The pids of the children of ``pid`` (those of every thread), live or zombie: from
    ``/proc/<pid>/task/<tid>/children`` where the kernel has it, else from the ``stat`` of
    every process on the machine."""
    if has_children_files(pid, proc_root):
        return _children_from_files(pid, proc_root)
    kids: list[int] = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            stat = read_pid_stat(int(entry), proc_root)
        except (OSError, ValueError, IndexError):  # unreadable or torn: not ours to see
            continue
        if stat is not None and stat.ppid == pid:
            kids.append(stat.pid)
    return kids


def descendant_stats(pid: int, *, proc_root: str = "/proc", children_files: bool | None = None,
                     exclude: Collection[int] = ()) -> list[PidStat]:
    """``/proc/<pid>/stat`` of every live descendant of ``pid``, but the processes in
    ``exclude`` and their own descendants.

    Where the kernel has ``/proc/<pid>/task/<tid>/children`` only the tree itself is read;
    otherwise the ``stat`` of every process on the machine (as psutil's
    ``children(recursive=True)`` does), once per call."""
    if children_files is None:
        children_files = has_children_files(pid, proc_root)
    found: list[PidStat] = []
    if children_files:
        stack = [pid]
        while stack:
            for kid in _children_from_files(stack.pop(), proc_root):
                if kid in exclude:
                    continue
                try:
                    stat = read_pid_stat(kid, proc_root)
                except (OSError, ValueError, IndexError):  # unreadable (hidepid) or torn
                    continue
                if stat is not None:
                    found.append(stat)
                    stack.append(kid)
        return found
    by_parent: dict[int, list[PidStat]] = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            stat = read_pid_stat(int(entry), proc_root)
        except (OSError, ValueError, IndexError):  # unreadable or torn: not in our tree
            continue
        if stat is not None:
            by_parent.setdefault(stat.ppid, []).append(stat)
    stack = [pid]
    while stack:
        for stat in by_parent.get(stack.pop(), ()):
            if stat.pid in exclude:
                continue
            found.append(stat)
            stack.append(stat.pid)
    return found


def process_tree_pids(pid: int = 0, *, include_root: bool = True,
                      proc_root: str = "/proc") -> set[int]:
    """``pid`` (0: this process; left out with ``include_root=False``) and the pids of its live
    descendants; just the root when the tree cannot be read."""
    pid = pid or os.getpid()
    root = {pid} if include_root else set()
    if os.path.isdir(f"{proc_root}/{pid}"):
        return root | {s.pid for s in descendant_stats(pid, proc_root=proc_root)}
    try:
        import psutil
    except ImportError:
        return root
    try:
        return root | {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return root


# -- the kernel's accounting -----------------------------------------------------------------------
class RusagePeaks(NamedTuple):
    """Peak resident set sizes the kernel recorded (``getrusage``), in bytes.

    ``self_bytes``: this process, over its whole life (not only since a probe opened).
    ``children_bytes``: the largest single reaped descendant (children waited for, and their
    own reaped descendants), over this process's whole life. Not a sum over children.
    """

    self_bytes: int
    children_bytes: int

    @property
    def max_bytes(self) -> int:
        return max(self.self_bytes, self.children_bytes)


def peak_rss_bytes_from_rusage() -> RusagePeaks:
    """The kernel's peak RSS of this process and of its reaped children, in bytes.

    Sampling the tree every interval misses a spike that comes and goes between two samples;
    the kernel's high-water marks do not. The meter reports
    ``max(sampled tree peak, rusage peaks)``. ``ru_maxrss`` is in KiB on Linux (bytes on macOS).
    Caveat: the marks cover the whole life of the process, so for a block measured inside a
    long-lived process (a notebook) ``self_bytes`` may predate the measurement; for
    ``energymeter run -- cmd`` ``children_bytes`` is exactly the command's peak. Returns zeros
    where ``resource`` does not exist (Windows).
    """
    try:
        import resource
    except ImportError:
        return RusagePeaks(0, 0)
    scale = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return RusagePeaks(int(own) * scale, int(kids) * scale)


def rusage_cpu_s(*, include_self: bool = True) -> float:
    """User + system CPU seconds of this process (unless ``include_self`` is False) and of its
    reaped children."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = kids.ru_utime + kids.ru_stime
    if include_self:
        me = resource.getrusage(resource.RUSAGE_SELF)
        total += me.ru_utime + me.ru_stime
    return total


class CpuSeconds(NamedTuple):
    """CPU time of the whole machine (every CPU this kernel sees) since boot, from
    ``/proc/stat``. ``busy_s``: user, nice, system, irq, softirq (guest time is inside user and
    nice); ``steal_s``: time a hypervisor gave to other guests; ``total_s``: everything (guest
    not counted twice)."""

    busy_s: float
    steal_s: float
    total_s: float


def cpu_seconds(times: Any = None) -> CpuSeconds:
    """:class:`CpuSeconds` from a ``psutil.cpu_times()``-like named tuple (default: now)."""
    if times is None:
        if os.path.exists("/proc/stat"):
            stat = ProcStatTimes()
            try:
                times = stat()
            finally:
                stat.close()
        else:
            import psutil

            times = psutil.cpu_times()
    fields: dict[str, float] = times._asdict()
    total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
    steal = fields.get("steal", 0.0)
    busy = total - fields.get("idle", 0.0) - fields.get("iowait", 0.0) - steal
    return CpuSeconds(busy, steal, total)


#: The fields of the ``cpu`` line of /proc/stat, in order (psutil.cpu_times' names on Linux).
PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
                    "guest", "guest_nice")


class ProcStatTimes:
    """``psutil.cpu_times()`` for the whole machine, from the first line of /proc/stat read
    with one ``pread`` on a descriptor kept open (about 10 µs instead of psutil's ~40 µs of
    open, read, close): what a boundary read of the estimated CPU model costs. Call it; it
    returns an object with ``_asdict()`` like psutil's named tuple (seconds)."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK")

    def _ticks(self) -> list[int]:
        """The ``cpu`` line's counters, in clock ticks, in :data:`PROC_STAT_FIELDS` order."""
        head = os.pread(self._fd, 512, 0).split(b"\n", 1)[0].split()
        if not head or head[0] != b"cpu":
            raise OSError(f"/proc/stat does not start with the cpu line: {head[:1]!r}")
        return [int(v) for v in head[1:1 + len(PROC_STAT_FIELDS)]]

    def __call__(self) -> Any:
        values = [t * self._tick_s for t in self._ticks()]
        return _Times(dict(zip(PROC_STAT_FIELDS, values, strict=False)))

    def busy_total_s(self) -> tuple[float, float]:
        """(busy + steal, total) CPU seconds of the machine now, as
        :func:`cpu_seconds` gives them, without building the named fields (a sampler tick)."""
        ticks = self._ticks()[:8]  # user .. steal; guest is inside user and nice
        total = sum(ticks)
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return (total - idle) * self._tick_s, total * self._tick_s

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Times:
    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, float]) -> None:
        self._fields = fields

    def _asdict(self) -> dict[str, float]:
        return self._fields
