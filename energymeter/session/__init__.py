"""A measurement session: the :class:`Meter` lifecycle (:mod:`.meter`) with its phases, sync
and fork safety, the facts it records about the host and software, and the sessions around a
command (:mod:`.command`, with :mod:`.signals`) or the whole machine (:mod:`.monitor`).

The names below load on first use (the CLI imports light parts of this package at start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .meter import Meter, Snapshot, measure

__all__ = ["Meter", "Snapshot", "measure"]

__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "meter"))
