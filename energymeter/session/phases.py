"""The phases of a run: named parts with their own energy and duration, nested per thread or
asyncio task.

Each :meth:`Phases.open` returns its own entry and :meth:`Phases.end` ends that entry, not the
innermost open one, so phases of concurrent threads or tasks never swap times; a phase's parent
is the innermost phase of the same run open in its own thread or task (a ``ContextVar``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token

from .._lazy import LazyLogger
from ..probes.base import Channel
from ..report import Phase

log = LazyLogger("energymeter")


class OpenPhase:
    """A phase begun and not yet ended (compared by identity: two phases may share a name)."""

    __slots__ = ("energy", "name", "parent", "start_s")

    def __init__(self, name: str, start_s: float, energy: Mapping[str, float],
                 parent: str | None) -> None:
        self.name = name
        self.start_s = start_s
        self.energy = energy
        self.parent = parent

    def __repr__(self) -> str:
        return (f"OpenPhase(name={self.name!r}, start_s={self.start_s!r}, "
                f"parent={self.parent!r})")


# The phases open in the current thread or asyncio task, innermost last (contextvars keep
# concurrent threads and tasks apart): a new phase's parent is the innermost one of its run.
_flow: ContextVar[tuple[OpenPhase, ...]] = ContextVar("energymeter_phases", default=())


class Phases:
    """Open and ended phases of one run. Thread-safe."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self._open: list[OpenPhase] = []
        self._ended: list[Phase] = []
        self._lock = threading.Lock()
        # A phase shorter than the slowest counter's update period is below its resolution.
        self.resolution_s = max((c.resolution_s for c in channels), default=0.0)

    def open(self, name: str, t_s: float, energy: Mapping[str, float]
             ) -> tuple[OpenPhase, Token[tuple[OpenPhase, ...]]]:
        """Open phase ``name`` at the boundary read ``(t_s, energy)`` in this thread or task;
        give the token back to :meth:`leave` when its block ends."""
        flow = _flow.get()
        with self._lock:
            parent = next((p.name for p in reversed(flow) if p in self._open), None)
            entry = OpenPhase(str(name), t_s, energy, parent)
            self._open.append(entry)
        return entry, _flow.set((*flow, entry))

    @staticmethod
    def forget(entry: OpenPhase) -> None:
        """Remove ``entry`` from this thread's or task's open phases wherever it is in them
        (an imperatively ended phase need not be the innermost one)."""
        flow = _flow.get()
        if entry in flow:
            _flow.set(tuple(p for p in flow if p is not entry))

    def is_open(self, entry: OpenPhase) -> bool:
        with self._lock:
            return entry in self._open

    @staticmethod
    def leave(entry: OpenPhase, token: Token[tuple[OpenPhase, ...]]) -> None:
        """Forget ``entry`` as the innermost phase of this thread or task."""
        try:
            _flow.reset(token)
        except ValueError:  # closed in another thread than it was opened in
            log.debug("phase %r closed outside the context it was opened in", entry.name)

    def end(self, entry: OpenPhase, t_s: float, energy: Mapping[str, float]) -> Phase | None:
        """End ``entry`` at the boundary read ``(t_s, energy)``; None if it had already ended
        (with the run)."""
        with self._lock:
            if entry not in self._open:
                return None
            self._open.remove(entry)
            phase = Phase(entry.name, entry.start_s, t_s,
                          {cid: energy.get(cid, 0.0) - entry.energy.get(cid, 0.0)
                           for cid in energy},
                          parent=entry.parent,
                          below_resolution=(t_s - entry.start_s) < self.resolution_s)
            self._ended.append(phase)
        return phase

    def end_all(self, t_s: float, energy: Mapping[str, float]) -> list[Phase]:
        """End every phase still open (innermost first), e.g. when an exception ends the run."""
        ended = []
        while True:
            with self._lock:
                if not self._open:
                    return ended
                entry = self._open[-1]
            phase = self.end(entry, t_s, energy)
            if phase is not None:
                ended.append(phase)

    @property
    def ended(self) -> tuple[Phase, ...]:
        """The ended phases, by start time."""
        with self._lock:
            return tuple(sorted(self._ended, key=lambda p: p.start_s))
