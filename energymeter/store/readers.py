"""Reading a run directory's files back: ``events.jsonl`` and ``samples.csv``, tolerating the
torn last line a killed writer leaves."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import ReportError


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
