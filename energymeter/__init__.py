"""energymeter: measure what computation costs — energy (CPU, DRAM, GPU), power over time,
carbon, memory and storage.

    from energymeter import measure

    with measure("train") as m:
        train()
    print(m.report.summary())

Importing this package is cheap: no hardware access, no pandas, no NVML; the heavy parts load
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ConfigError, EnergyMeterError, ProbeError, ReportError, UsageError

if TYPE_CHECKING:
    from .config import Settings
    from .meter import Meter, measure
    from .report import Report

__all__ = [
    "ConfigError",
    "EnergyMeterError",
    "Meter",
    "ProbeError",
    "Report",
    "ReportError",
    "Settings",
    "UsageError",
    "__version__",
    "measure",
]

_LAZY = {"measure": "meter", "Meter": "meter", "Report": "report", "Settings": "config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'energymeter' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
