"""Hardware energy accumulators turned into monotone totals (one copy of the wrap logic).

A hardware counter either wraps (RAPL ``energy_uj`` restarts at 0 after
``max_energy_range_uj``: give ``modulus``) or never wraps, so that a drop means it was reset
(NVML's 64-bit millijoule counter after a driver reload: no ``modulus``). A drop that would be
an implausibly large wrap (more energy than the device can draw in the time since the previous
reading, ``max_increase``) is a reset too, never a wrap. After a reset, a counter that
``restarts_from_zero`` (NVML: energy since the driver loaded) counts its new value as energy
since the reset; one that may not (RAPL) counts nothing for that interval. Probes keep one
:class:`CumulativeCounter` per channel and report ``total`` in their own unit.
"""

from __future__ import annotations


class CumulativeCounter:
    """Raw readings of one accumulator in, the increase since the first reading out.

    ``modulus``: the number of distinct raw values (the counter goes from ``modulus - 1`` back
    to 0), or ``None`` for a counter that does not wrap. Not thread-safe: the probe that owns
    it serialises its reads."""

    __slots__ = ("last", "modulus", "resets", "restarts_from_zero", "total", "wraps")

    def __init__(self, first: int, modulus: int | None = None, *,
                 restarts_from_zero: bool = False) -> None:
        self.last = first
        self.modulus = modulus
        self.restarts_from_zero = restarts_from_zero
        self.total = 0
        self.wraps = 0
        self.resets = 0

    def advance(self, raw: int, max_increase: float | None = None) -> int:
        """Take a reading; return the increase it shows (also added to ``total``).

        A reading below the previous one is a wrap when the counter has a ``modulus`` and the
        increase over the top is at most ``max_increase``; else a reset (counted in
        ``resets``): the energy between the previous reading and the reset is unknown."""
        if raw >= self.last:
            delta = raw - self.last
        else:
            wrapped = None if self.modulus is None else raw + self.modulus - self.last
            if wrapped is not None and (max_increase is None or wrapped <= max_increase):
                delta = wrapped
                self.wraps += 1
            else:
                delta = raw if self.restarts_from_zero else 0
                self.resets += 1
        self.total += delta
        self.last = raw
        return delta
