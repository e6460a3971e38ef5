"""Hardware energy accumulators turned into monotone totals (one copy of the wrap logic).

A hardware counter either wraps (RAPL ``energy_uj`` restarts at 0 after
``max_energy_range_uj``: give ``modulus``) or never wraps, so that a drop means it was reset
(NVML's 64-bit millijoule counter after a driver reload: no ``modulus``). Probes keep one
:class:`CumulativeCounter` per channel and report ``total`` in their own unit.
"""

from __future__ import annotations


class CumulativeCounter:
    """Raw readings of one accumulator in, the increase since the first reading out.

    ``modulus``: the number of distinct raw values (the counter goes from ``modulus - 1`` back
    to 0), or ``None`` for a counter that does not wrap. Not thread-safe: the probe that owns
    it serialises its reads."""

    __slots__ = ("last", "modulus", "resets", "total", "wraps")

    def __init__(self, first: int, modulus: int | None = None) -> None:
        self.last = first
        self.modulus = modulus
        self.total = 0
        self.wraps = 0
        self.resets = 0

    def advance(self, raw: int) -> int:
        """Take a reading; return the increase it shows (also added to ``total``).

        A reading below the previous one is a wrap when the counter has a ``modulus`` (the
        increase goes over the top), else a reset (counted in ``resets``; the energy between
        the previous reading and the reset is unknown and adds nothing)."""
        if raw >= self.last:
            delta = raw - self.last
        elif self.modulus is not None:
            delta = raw + self.modulus - self.last
            self.wraps += 1
        else:
            delta = 0
            self.resets += 1
        self.total += delta
        self.last = raw
        return delta
