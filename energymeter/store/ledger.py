"""The ``runs.csv`` ledger: one row per run, appended under a file lock."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger
from .rundir import LEDGER_NAME
from .writers import format_cell, open_file, write_all, write_text_atomic

log = LazyLogger("energymeter")

#: The longest header line read back (a ledger's columns are far shorter).
_MAX_HEADER_BYTES = 1 << 20


def _first_line(fd: int) -> str:
    """The first line of the file open as ``fd`` (read with ``pread``: the offset of an
    ``O_APPEND`` descriptor does not matter)."""
    data = b""
    while b"\n" not in data and len(data) < _MAX_HEADER_BYTES:
        chunk = os.pread(fd, 65536, len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """``runs.csv`` open read-write (appending) and locked exclusively. A ledger replaced by
    :func:`replace_ledger_row` while we waited for the lock is opened again, so that no row is
    ever appended to the file it replaced."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue  # replaced and not yet renamed into place: open it again
            if os.fstat(fd).st_ino != current.st_ino:
                continue
            yield fd
            return
        finally:
            os.close(fd)  # closing releases the lock
    raise OSError(f"{path} kept being replaced while waiting for its lock")


def _row_text(row: Mapping[str, Any], fieldnames: Sequence[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore",
                            lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerow({k: format_cell(v) for k, v in row.items()})
    return buf.getvalue()


def _fieldnames(path: Path, fd: int, columns: Sequence[str], row: Mapping[str, Any]
                ) -> tuple[list[str], bool]:
    """The columns to write under (the file's own, or ``columns`` for a new file) and whether
    the header must be written."""
    existing = next(csv.reader([_first_line(fd)]), [])
    if existing and existing != list(columns):
        dropped = [c for c in columns if c not in existing and row.get(c) is not None]
        log.warning("%s has other columns than this energymeter writes; the row is "
                    "written under its header%s", path,
                    f" without {', '.join(dropped)}" if dropped else "")
    return existing or list(columns), not existing


def append_ledger(out: Path, row: Mapping[str, Any], columns: Sequence[str]) -> Path:
    """Append one row to ``<out>/runs.csv`` under an exclusive ``fcntl`` lock.

    The header is written when the file is new. Parallel jobs never interleave rows: the whole
    row is written with one ``write`` while the lock is held. A file whose header differs
    (another version of energymeter) gets the row under its own columns, matched by name, so no
    value ever lands in another column; columns it lacks are dropped with a logged warning.

    ``runs.csv`` is opened once, for reading its header and appending, without following a
    symbolic link (:func:`.writers.open_file`): a link or anything but a regular file raises
    :class:`~.writers.UnsafePathError` (an ``OSError``) and nothing is written anywhere."""
    path = Path(out) / LEDGER_NAME
    with _locked(path) as fd:
        fieldnames, header = _fieldnames(path, fd, columns, row)
        _append_whole(fd, _row_text(row, fieldnames, header).encode("utf-8"))
    return path


def _append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` (under the lock) or nothing: a write that fails part-way (a full disk
    takes what fits, then ``ENOSPC``) is cut off again, so that no torn row is left for the
    next run's row to be glued to. The write's error is raised."""
    size = os.fstat(fd).st_size
    try:
        write_all(fd, data)
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError as exc:  # the write's error is the one that matters
            log.debug("cannot cut a torn row off the ledger: %r", exc)
        raise


def replace_ledger_row(out: Path, row: Mapping[str, Any], columns: Sequence[str]) -> Path:
    """Replace the row of ``row["run_id"]`` in ``<out>/runs.csv`` (the last one, if several),
    or append it when there is none. The new ledger is written beside the old one and renamed
    over it under the lock, so a crash leaves one or the other whole."""
    path = Path(out) / LEDGER_NAME
    with _locked(path) as fd:
        fieldnames, header = _fieldnames(path, fd, columns, row)
        if header:
            _append_whole(fd, _row_text(row, fieldnames, True).encode("utf-8"))
            return path
        lines = _read_all(fd).decode("utf-8", errors="replace").splitlines(keepends=True)
        records = list(csv.reader(lines))
        id_column = fieldnames.index("run_id") if "run_id" in fieldnames else None
        new = _row_text(row, fieldnames, False)
        target = None
        if id_column is not None:
            target = next((i for i in range(len(records) - 1, 0, -1)
                           if len(records[i]) > id_column
                           and records[i][id_column] == row.get("run_id")), None)
        if target is None or len(lines) != len(records):  # no row, or quoted newlines
            _append_whole(fd, new.encode("utf-8"))
            return path
        lines[target] = new
        write_text_atomic(path, "".join(lines), follow_dir=True)
    return path


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
