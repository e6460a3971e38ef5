"""Run directories: their names and the names of the files in them.

A run directory is ``<out>/<UTC timestamp>-<name>-<short id>/`` holding ``report.json``,
``samples.csv`` and ``events.jsonl``; ``<out>/runs.csv`` is the ledger of every run.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import EnergyMeterError, OutputError

LEDGER_NAME = "runs.csv"
REPORT_NAME = "report.json"
SAMPLES_NAME = "samples.csv"
EVENTS_NAME = "events.jsonl"

#: The UTC start stamp that begins a run directory's name.
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-name-safe form of a run name (letters, digits, ``.``, ``_``, ``-``)."""
    cleaned = _SAFE.sub("-", name).strip("-.")
    return cleaned[:60] or "run"


def make_run_dir(out: Path, name: str, run_id: str, started_at: datetime) -> Path:
    """Create ``<out>/<UTC timestamp>-<name>-<short id>/`` and return it.

    Raises :class:`OutputError` (a :class:`ConfigError` and an ``OSError``) when ``out`` cannot
    hold it (a file, not writable, read-only or full file system)."""
    stamp = started_at.strftime(STAMP_FORMAT)
    path = Path(out) / f"{stamp}-{safe_name(name)}-{run_id[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=False)
    except OSError as exc:  # a file, not writable, read-only or full file system
        raise output_error(f"cannot create the run directory {path}", out, exc) from exc
    return path


def output_error(what: str, out: Path, exc: OSError) -> OutputError:
    """The :class:`OutputError` for ``what`` (e.g. "cannot create the run directory X") that
    failed with ``exc``: which path, why (the system's words) and what is accepted."""
    if isinstance(exc, OutputError):
        return exc
    why = exc.strerror or str(exc)
    if isinstance(exc, EnergyMeterError):  # a refused link: its own message says why
        why = str(exc)
    return OutputError(
        f"{what} ({why}); out is {out}; accepted: a directory this user can write, on a file "
        "system with free space (out=, ENERGYMETER_OUT or --out)",
        exc.errno, exc.filename if exc.filename is not None else str(out))


def run_dir_started_at(name: str) -> datetime | None:
    """The start (to the second, UTC) stamped on a run directory's ``name``, or None when
    the name does not begin with one."""
    try:
        return datetime.strptime(name[:16], STAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
