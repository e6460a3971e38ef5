"""What probes read from ``/proc`` and the kernel's process accounting, one copy each:
``/proc/cpuinfo`` (CPU model per socket, package count), the process tree under a pid, and
``getrusage`` figures (CPU seconds, peak RSS).

psutil is imported only inside the functions that need it, never at module import.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("energymeter")

CPUINFO = Path("/proc/cpuinfo")


# -- /proc/cpuinfo ---------------------------------------------------------------------------------
def read_cpuinfo(path: Path | str = CPUINFO) -> str:
    """The text of ``/proc/cpuinfo`` (or ``path``); empty when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        log.debug("cannot read %s: %r", path, exc)
        return ""


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
    import platform

    return model_name_from_cpuinfo(cpuinfo_text) or platform.processor() or "unknown CPU"


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


def descendants(root: Any, *, proc_root: str = "/proc", children_files: bool | None = None,
                exclude: Collection[int] = ()) -> list[Any]:
    """Every live descendant of the ``psutil.Process`` ``root``, as ``psutil.Process`` objects,
    but the processes in ``exclude`` and their own descendants.

    Where the kernel has ``/proc/<pid>/task/<tid>/children`` only the tree itself is read;
    psutil's ``children(recursive=True)`` reads ``/proc/<pid>/stat`` of every process on the
    machine, which costs milliseconds on a busy server."""
    import psutil

    if children_files is None:
        children_files = has_children_files(root.pid, proc_root)
    if not children_files:
        found = list(root.children(recursive=True))
        if not exclude:
            return found
        left_out, grew = set(exclude), True
        while grew:  # the excluded processes' subtrees, whatever order they were listed in
            grew = False
            for proc in found:
                if proc.pid not in left_out and _ppid(proc) in left_out:
                    left_out.add(proc.pid)
                    grew = True
        return [proc for proc in found if proc.pid not in left_out]
    found: list[Any] = []
    stack = [root.pid]
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"{proc_root}/{pid}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in tids:
            try:
                with open(f"{proc_root}/{pid}/task/{tid}/children", "rb") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (FileNotFoundError, ProcessLookupError):  # thread or process ended
                continue
            for kid in kids:
                if kid in exclude:
                    continue
                try:
                    found.append(psutil.Process(kid))
                except psutil.NoSuchProcess:
                    continue
                stack.append(kid)
    return found


def _ppid(proc: Any) -> int | None:
    import psutil

    try:
        return int(proc.ppid())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_tree_pids(pid: int = 0, *, include_root: bool = True) -> set[int]:
    """``pid`` (0: this process; left out with ``include_root=False``) and the pids of its live
    descendants; just the root when the tree cannot be read."""
    pid = pid or os.getpid()
    root = {pid} if include_root else set()
    try:
        import psutil
    except ImportError:
        return root
    try:
        return root | {p.pid for p in descendants(psutil.Process(pid))}
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

    def __call__(self) -> Any:
        head = os.pread(self._fd, 512, 0).split(b"\n", 1)[0].split()
        if not head or head[0] != b"cpu":
            raise OSError(f"/proc/stat does not start with the cpu line: {head[:1]!r}")
        values = [int(v) * self._tick_s for v in head[1:1 + len(PROC_STAT_FIELDS)]]
        return _Times(dict(zip(PROC_STAT_FIELDS, values, strict=False)))

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
