"""Run directories on disk: ``samples.csv``, ``events.jsonl``, ``report.json`` and the
``runs.csv`` ledger.

Writers use raw file descriptors and a buffer of our own rather than Python file objects, so a
forked child (DataLoader workers) can drop the parent's unflushed rows without writing them twice.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError, ReportError

log = logging.getLogger("energymeter")

LEDGER_NAME = "runs.csv"
REPORT_NAME = "report.json"
SAMPLES_NAME = "samples.csv"
EVENTS_NAME = "events.jsonl"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-name-safe form of a run name (letters, digits, ``.``, ``_``, ``-``)."""
    cleaned = _SAFE.sub("-", name).strip("-.")
    return cleaned[:60] or "run"


def make_run_dir(out: Path, name: str, run_id: str, started_at: datetime) -> Path:
    """Create ``<out>/<UTC timestamp>-<name>-<short id>/`` and return it.

    Raises :class:`ConfigError` when ``out`` cannot hold it (a file, not writable, full)."""
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    path = Path(out) / f"{stamp}-{safe_name(name)}-{run_id[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as exc:  # a file, not writable, read-only or full file system
        raise ConfigError(
            f"cannot create the run directory {path} ({exc.strerror or exc}); out is {out}; "
            "accepted: a directory this user can write (out=, ENERGYMETER_OUT or --out)"
        ) from exc
    return path


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


def _fmt(value: Any) -> str:
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
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pid = os.getpid()
        self._buf: list[str] = []
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self._lock:
            if self._fd is not None:
                self._buf.append(text)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._fd is None or not self._buf or os.getpid() != self._pid:
            return
        data = "".join(self._buf).encode()
        self._buf.clear()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

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
        with self._lock:
            if self._fd is None:
                return
            self._flush_locked()
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

    def row(self, t_s: float, energy_j: Mapping[str, float],
            gauges: Mapping[str, float] | None) -> None:
        cells = [f"{t_s:.6f}"]
        cells.extend(_fmt(energy_j.get(c)) for c in self.channel_ids)
        if gauges:
            cells.extend(_fmt(gauges.get(g)) for g in self.gauge_names)
        else:
            cells.extend("" for _ in self.gauge_names)
        self._write(",".join(cells) + "\n")


class EventLog(_FdWriter):
    """``events.jsonl``: one JSON object per line (start, phase, log, warning, stop)."""

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, **fields}, default=str) + "\n"
        with self._lock:  # written and flushed together: events stay whole and in order
            if self._fd is not None:
                self._buf.append(line)
                self._flush_locked()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temp file and ``os.replace`` (never a half file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_ledger(out: Path, row: Mapping[str, Any], columns: Sequence[str]) -> Path:
    """Append one row to ``<out>/runs.csv`` under an exclusive ``fcntl`` lock.

    The header is written when the file is new. Parallel jobs never interleave rows: the whole
    row is written with one ``write`` while the lock is held. A file whose header differs
    (another version of energymeter) gets the row under its own columns, matched by name, so no
    value ever lands in another column; columns it lacks are dropped with a logged warning."""
    import fcntl

    path = Path(out) / LEDGER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    with open(path, "a+", encoding="utf-8", newline="") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.seek(0)
            existing = next(csv.reader([fh.readline()]), [])
            fieldnames = existing or list(columns)
            writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore",
                                    lineterminator="\n")
            if not existing:
                writer.writeheader()
            elif existing != list(columns):
                dropped = [c for c in columns if c not in existing and row.get(c) is not None]
                log.warning("%s has other columns than this energymeter writes; the row is "
                            "written under its header%s", path,
                            f" without {', '.join(dropped)}" if dropped else "")
            writer.writerow({k: _fmt(v) for k, v in row.items()})
            fh.write(buf.getvalue())
            fh.flush()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    """Parse ``events.jsonl``; a torn last line (killed writer) is skipped."""
    events: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist: not an energymeter run directory") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ReportError(f"{path}: line {i + 1} is not JSON") from None
    return events


def iter_samples(path: Path) -> tuple[list[str], Iterator[list[str]]]:
    """Header and the complete rows of ``samples.csv``, read as they are iterated (a long run's
    file is never held in memory); a torn last row is dropped."""
    try:
        fh = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by _complete_rows
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist: not an energymeter run directory") from None
    first = fh.readline().rstrip("\n")
    if not first:
        fh.close()
        raise ReportError(f"{path} is empty")
    header = first.split(",")
    return header, _complete_rows(fh, len(header))


def _complete_rows(fh: TextIO, width: int) -> Iterator[list[str]]:
    with fh:
        lines = (line for line in fh if line.endswith("\n"))  # the last may be torn
        for row in csv.reader(lines):
            if len(row) == width:
                yield row


def read_samples(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and complete rows of ``samples.csv`` (a torn last row is dropped)."""
    header, rows = iter_samples(path)
    return header, list(rows)
