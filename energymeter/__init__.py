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

from ._lazy import lazy_getattr
from ._version import __version__
from .errors import ConfigError, EnergyMeterError, ProbeError, ReportError, UsageError

if TYPE_CHECKING:
    from .analysis.merge import merge
    from .analysis.plots import plot
    from .report import Report
    from .session import Meter, measure
    from .session.repeat import repeat
    from .session.sweep import sweep
    from .settings import Settings

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
    "merge",
    "plot",
    "repeat",
    "sweep",
]

__getattr__ = lazy_getattr(__name__, {"measure": "session", "Meter": "session",
                                       "repeat": "session.repeat", "Report": "report",
                                       "sweep": "session.sweep",
                                       "plot": "analysis.plots",
                                       "merge": "analysis.merge",
                                       "Settings": "settings"})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext energymeter``: the ``%%measure`` cell magic (:mod:`energymeter.notebook`)."""
    from .notebook import load_ipython_extension as load

    load(ipython)
