"""The file layer: run directories, the writers of a running measurement, the ``runs.csv``
ledger, and the readers of a run's files. Plain data in and out: nothing here knows a Report.
"""

from __future__ import annotations

from .ledger import append_ledger, replace_ledger_row
from .readers import iter_samples, read_events, read_samples
from .rundir import (
    EVENTS_NAME,
    LEDGER_NAME,
    REPORT_NAME,
    SAMPLES_NAME,
    make_run_dir,
    run_dir_started_at,
    safe_name,
)
from .writers import EventLog, SamplesWriter, UnsafePathError, json_safe, write_json_atomic

__all__ = [
    "EVENTS_NAME",
    "LEDGER_NAME",
    "REPORT_NAME",
    "SAMPLES_NAME",
    "EventLog",
    "SamplesWriter",
    "UnsafePathError",
    "append_ledger",
    "iter_samples",
    "json_safe",
    "make_run_dir",
    "run_dir_started_at",
    "read_events",
    "read_samples",
    "replace_ledger_row",
    "safe_name",
    "write_json_atomic",
]
