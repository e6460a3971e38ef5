"""Writing a run's files: ``samples.csv`` and ``events.jsonl`` (appended while it runs) and
``report.json`` (atomically, at the end); values made plain JSON first (:func:`json_safe`).

Writers use raw file descriptors and a buffer of our own rather than Python file objects, so a
forked child (DataLoader workers) can drop the parent's unflushed rows without writing them twice.

Every file energymeter writes is opened by :func:`open_file` (and its run directory by
:func:`open_dir`): created with mode ``0o666`` so that the kernel applies the umask (and a default
ACL) as for any other tool, never through a symbolic link (``O_NOFOLLOW``), never anything but a
regular file, and not inherited by child processes (``O_CLOEXEC``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger
from ..errors import EnergyMeterError

#: The mode files are created with; the kernel takes the umask off (0o644 under umask 022).
FILE_MODE = 0o666


class UnsafePathError(EnergyMeterError, OSError):
    """energymeter refused to write through a symbolic link, into a run directory that is a
    link, or into something that is not a regular file. An :class:`OSError` (``ELOOP``), so
    code that handles a file that cannot be written handles this too."""

    def __init__(self, message: str, path: str | Path) -> None:
        OSError.__init__(self, errno.ELOOP, message, str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (multiprocessing), like OSError
        return (type(self), (self.message, self.filename))


def _kind_of(name: str | Path, dir_fd: int | None) -> int | None:
    """The file type bits of ``name`` itself (a link is not followed), None if absent."""
    try:
        return stat.S_IFMT(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return None


def open_dir(path: str | Path, *, follow: bool = False) -> int:
    """A file descriptor of the directory ``path`` to open files in (``dir_fd``), so that it
    cannot be swapped for a link between checks and writes. With ``follow=False`` (a run
    directory: energymeter created it) a symbolic link there raises :class:`UnsafePathError`;
    with ``follow=True`` (a folder the user named) links are followed as usual."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(path, flags)
    except OSError as exc:
        if not follow and _kind_of(path, None) == stat.S_IFLNK:
            raise UnsafePathError(
                f"{path} is a symbolic link, not a run directory energymeter created; it never "
                "writes a run's files through a link (it could point anywhere); accepted: a "
                "real directory", path) from exc
        raise


def open_file(path: str | Path, flags: int, *, dir_fd: int | None = None) -> int:
    """Open ``path`` (its name in ``dir_fd`` when given) with ``flags`` plus ``O_NOFOLLOW``,
    ``O_CLOEXEC`` and mode :data:`FILE_MODE` (the umask applies). A symbolic link, or anything
    but a regular file, raises :class:`UnsafePathError`; other failures their own ``OSError``."""
    path = Path(path)
    name: str | Path = path.name if dir_fd is not None else path
    try:
        # O_NONBLOCK: opening a FIFO planted in place of the file must not hang (no effect on
        # regular files, the only kind accepted below).
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, FILE_MODE,
                     dir_fd=dir_fd)
    except OSError as exc:
        kind = _kind_of(name, dir_fd)
        if kind == stat.S_IFLNK:
            raise UnsafePathError(
                f"{path} is a symbolic link; energymeter never writes through a link (it could "
                "point anywhere, e.g. at a file of another user); accepted: a regular file, or "
                "no file (energymeter creates it)", path) from exc
        if kind is not None and kind != stat.S_IFREG:
            raise UnsafePathError(f"{path} is not a regular file; accepted: a regular file, or "
                                  "no file (energymeter creates it)", path) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file; accepted: a regular file, or no "
                              "file (energymeter creates it)", path)
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write part of it)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


log = LazyLogger("energymeter")

#: The ``extra`` of a log record whose message the run's report carries as a warning too: a
#: front end that shows the report's warnings (``energymeter run``'s summary) leaves it out.
IN_REPORT = {"in_report": True}


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/torch scalars and arrays become Python numbers and
    lists (through their ``tolist()``), NaN and infinities become ``None`` (strict JSON has no
    such numbers), mapping keys become strings, anything else unknown becomes its ``str()``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            plain = tolist()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
        if plain is not value:
            return json_safe(plain)
    return str(value)


def format_cell(value: Any) -> str:
    """A CSV cell: empty for None and NaN, ``repr`` for floats (exact round trip)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if value == value else ""
    return str(value)


class _FdWriter:
    """Append-only writer over a raw fd with a private buffer; safe to abandon in a fork child.

    Thread-safe: the user's threads log phases and metrics concurrently."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # A run's file, in the run directory energymeter created: neither may be a link.
        dir_fd = open_dir(Path(path).parent)
        try:
            self._fd: int | None = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                             dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        self._pid = os.getpid()
        self._buf: list[str] = []
        self._lock = threading.Lock()  # the buffer
        self._write_lock = threading.Lock()  # the disk: one flush at a time, in order

    def _write(self, text: str) -> None:
        with self._lock:
            if self._fd is not None:
                self._buf.append(text)

    def flush(self) -> None:
        """Write the buffered text. The buffer is taken under its lock and written outside it,
        so rows keep being buffered (a sampler's reads go on) while a slow disk writes."""
        with self._write_lock:
            with self._lock:
                fd = self._fd
                if fd is None or not self._buf or os.getpid() != self._pid:
                    return
                data = "".join(self._buf).encode()
                self._buf.clear()
            write_all(fd, data)

    def _flush_locked(self) -> None:
        if self._fd is None or not self._buf or os.getpid() != self._pid:
            return
        data = "".join(self._buf).encode()
        self._buf.clear()
        write_all(self._fd, data)

    def abandon(self) -> None:
        """Forget the buffered data and close the fd without writing (in a forked child, which
        must not write its parent's rows; or after a write failed).

        Takes no lock: in a forked child a parent's thread may have held it at the fork."""
        self._buf.clear()
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def close(self) -> None:
        if os.getpid() != self._pid:
            self.abandon()
            return
        self.flush()
        with self._write_lock, self._lock:
            if self._fd is None:
                return
            self._flush_locked()  # rows buffered since the flush above
            os.close(self._fd)
            self._fd = None


class SamplesWriter(_FdWriter):
    """``samples.csv``: ``t_s``, one cumulative-joules column per channel (``<id>_j``), gauges."""

    def __init__(self, path: Path, channel_ids: Sequence[str], gauge_names: Sequence[str]) -> None:
        super().__init__(path)
        self.channel_ids = tuple(channel_ids)
        self.gauge_names = tuple(gauge_names)
        header = ["t_s", *(f"{c}_j" for c in self.channel_ids), *self.gauge_names]
        self._write(",".join(header) + "\n")
        self.flush()
        self._no_gauges = "," * len(self.gauge_names) + "\n"  # a row without gauges ends so

    def row(self, t_s: float, energy_j: Mapping[str, float],
            gauges: Mapping[str, float] | None) -> None:
        cells = [f"{t_s:.6f}"]
        cells.extend([format_cell(energy_j.get(c)) for c in self.channel_ids])
        if gauges:
            cells.extend([format_cell(gauges.get(g)) for g in self.gauge_names])
            self._write(",".join(cells) + "\n")
        else:
            self._write(",".join(cells) + self._no_gauges)


class EventLog(_FdWriter):
    """``events.jsonl``: one JSON object per line (start, phase, log, warning, stop).

    Events are written from the user's code (``phase()``, ``log()``), so a write that fails
    (full disk, vanished directory) never raises: the first error is kept in :attr:`error`,
    the file is given up, and the run goes on in memory."""

    error: OSError | None = None

    def event(self, kind: str, **fields: Any) -> None:
        """Write the event now (with every event buffered before it, in order)."""
        line = _EVENT_ENCODER.encode({"event": kind, **fields}) + "\n"
        with self._lock:  # written and flushed together: events stay whole and in order
            if self._fd is not None:
                self._buf.append(line)
                try:
                    self._flush_locked()
                except OSError as exc:
                    self._give_up(exc)

    def event_later(self, kind: str, **fields: Any) -> None:
        """Buffer the event for the next :meth:`flush` (the sampler's, within about a second;
        any :meth:`event`'s, at once): what ``phase()`` and ``log()`` write, so that they cost
        the user's thread no system call."""
        line = _EVENT_ENCODER.encode({"event": kind, **fields}) + "\n"
        with self._lock:
            if self._fd is not None:
                self._buf.append(line)

    def flush(self) -> None:
        with self._lock:
            try:
                self._flush_locked()
            except OSError as exc:
                self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        """After a failed write (under the lock): keep the error, close the file."""
        self.error = exc
        log.warning("events.jsonl could not be written (%s); later phases and logs are kept "
                    "in the report only", exc, extra=IN_REPORT)
        self._buf.clear()
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)
        except OSError as close_exc:  # the error above is the one that matters
            log.debug("closing events.jsonl: %r", close_exc)


class NoEventLog:
    """The :class:`EventLog` of a run measured in memory only (its ``out`` could not be
    written): it writes nothing."""

    error: OSError | None = None

    def event(self, kind: str, **fields: Any) -> None:
        """Nothing: there is no file."""

    event_later = event

    def flush(self) -> None:
        """Nothing to flush."""

    close = abandon = flush


#: One encoder for every event: ``json.dumps(..., default=str)`` builds a new one per call.
_EVENT_ENCODER = json.JSONEncoder(default=str)


def write_json_atomic(path: Path, data: Any, *, follow_dir: bool = False) -> None:
    """Write JSON to ``path`` through a temp file and ``os.replace`` (never a half file); see
    :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n",
                      follow_dir=follow_dir)


def write_text_atomic(path: Path, text: str, *, follow_dir: bool = False) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace`` (never a half file).

    Files go through :func:`open_file` (umask, no links); a link at ``path`` itself is
    replaced, never written through. The folder of ``path`` must not be a symbolic link
    (:class:`UnsafePathError`: a run directory is one energymeter created) unless
    ``follow_dir`` (a path the user named, e.g. ``--json``)."""
    path = Path(path)
    dir_fd = open_dir(path.parent, follow=follow_dir)
    try:
        for _ in range(100):
            tmp = f".{path.name}.{os.urandom(6).hex()}"
            try:
                fd = open_file(path.parent / tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                               dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 random names taken
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)
