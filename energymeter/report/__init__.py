"""The report of a run: the :class:`Report` value and its JSON schema (:mod:`.values`,
:mod:`.model`), its rebuild from a killed run's files (:mod:`.rebuild`), and its renderings for
people (:mod:`.render`, generic tables in :mod:`.tables`).

The names below load on first use, so that importing a light part (``report.tables``, as the
CLI does at start) does not import the whole report and its rebuild.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .model import Report
    from .values import LEDGER_COLUMNS, SCHEMA, STATUSES, ChannelEnergy, Phase, channel_energies

__all__ = [
    "LEDGER_COLUMNS",
    "SCHEMA",
    "STATUSES",
    "ChannelEnergy",
    "Phase",
    "Report",
    "channel_energies",
]

__getattr__ = lazy_getattr(
    __name__, {"Report": "model", **{name: "values" for name in __all__ if name != "Report"}})
