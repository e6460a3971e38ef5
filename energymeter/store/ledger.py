"""The ``runs.csv`` ledger: one row per run, appended under a file lock."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .rundir import LEDGER_NAME
from .writers import format_cell

log = logging.getLogger("energymeter")


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
            writer.writerow({k: format_cell(v) for k, v in row.items()})
            fh.write(buf.getvalue())
            fh.flush()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return path
