"""The ``runs.csv`` ledger: one row per run, appended under a file lock."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .rundir import LEDGER_NAME
from .writers import format_cell, open_file, write_all

log = logging.getLogger("energymeter")

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


def append_ledger(out: Path, row: Mapping[str, Any], columns: Sequence[str]) -> Path:
    """Append one row to ``<out>/runs.csv`` under an exclusive ``fcntl`` lock.

    The header is written when the file is new. Parallel jobs never interleave rows: the whole
    row is written with one ``write`` while the lock is held. A file whose header differs
    (another version of energymeter) gets the row under its own columns, matched by name, so no
    value ever lands in another column; columns it lacks are dropped with a logged warning.

    ``runs.csv`` is opened once, for reading its header and appending, without following a
    symbolic link (:func:`.writers.open_file`): a link or anything but a regular file raises
    :class:`~.writers.UnsafePathError` (an ``OSError``) and nothing is written anywhere."""
    import fcntl

    path = Path(out) / LEDGER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            existing = next(csv.reader([_first_line(fd)]), [])
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
            writer.writerow({k: format_cell(v) for k, v in row.items()})
            write_all(fd, buf.getvalue().encode("utf-8"))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return path
