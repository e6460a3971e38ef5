"""Writing a run's files: ``samples.csv`` and ``events.jsonl`` (appended while it runs) and
``report.json`` (atomically, at the end); values made plain JSON first (:func:`json_safe`).

Writers use raw file descriptors and a buffer of our own rather than Python file objects, so a
forked child (DataLoader workers) can drop the parent's unflushed rows without writing them twice.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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
        cells.extend(format_cell(energy_j.get(c)) for c in self.channel_ids)
        if gauges:
            cells.extend(format_cell(gauges.get(g)) for g in self.gauge_names)
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


