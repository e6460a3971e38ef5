"""Listeners told of every report a meter of this process finishes (``mlflow.autolog()``-style
integrations register here; the session knows nothing of them).

A listener that raises is logged and the report kept: logging elsewhere must never break
the measurement or the user's program.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._lazy import LazyLogger

log = LazyLogger("energymeter")

_listeners: list[Callable[[Any], None]] = []
_lock = threading.Lock()


def add_report_listener(fn: Callable[[Any], None]) -> None:
    """Call ``fn(report)`` after every meter of this process stops (once per ``fn``)."""
    with _lock:
        if fn not in _listeners:
            _listeners.append(fn)


def remove_report_listener(fn: Callable[[Any], None]) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def notify(report: Any) -> list[str]:
    """Tell every listener of ``report``; returns a warning for each that failed."""
    with _lock:
        listeners = list(_listeners)
    failures = []
    for fn in listeners:
        try:
            fn(report)
        except Exception as exc:  # another tool's logging must not break the run
            name = getattr(fn, "__qualname__", repr(fn))
            log.warning("report listener %s failed: %r", name, exc)
            failures.append(f"report listener {name} failed: {type(exc).__name__}: {exc}")
    return failures
