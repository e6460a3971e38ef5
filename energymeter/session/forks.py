"""Fork safety: a forked child (DataLoader workers, multiprocessing) never runs or writes the
running meters of its parent.

Running meters are registered here; ``os.register_at_fork(after_in_child=...)`` marks each of
them inert in the child, which then drops the parent's unflushed rows instead of writing them a
second time.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _abandon_in_child(self) -> None: ...


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_hook_installed = False
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    for meter in list(_live):
        meter._abandon_in_child()


def register(meter: ForkAware) -> None:
    """Abandon ``meter`` in every child forked from now until :func:`unregister`."""
    global _hook_installed
    with _lock:
        if not _hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _hook_installed = True
    _live.add(meter)


def unregister(meter: ForkAware) -> None:
    _live.discard(meter)


def registered(meter: ForkAware) -> bool:
    """Whether ``meter`` is registered (tests)."""
    return meter in _live
