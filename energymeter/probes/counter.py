"""Hardware energy accumulators turned into monotone totals (one copy of the wrap logic).

A hardware counter either wraps (RAPL ``energy_uj`` restarts at 0 after
``max_energy_range_uj``: give ``modulus``) or never wraps, so that a drop means it was reset
(NVML's 64-bit millijoule counter after a driver reload: no ``modulus``). A drop that would be
an implausibly large wrap (more energy than the device can draw in the time since the previous
reading, ``max_increase``) is a reset too, never a wrap. After a reset, a counter that
``restarts_from_zero`` (NVML, amdsmi: energy since the driver loaded) counts its new value as
energy since the reset; one that may not (RAPL) counts nothing for that interval.

Glitches. A counter that restarts from zero would add its whole value (energy since boot:
kilojoules to megajoules) on a reading that only looks like a reset, and any counter would add
a spurious jump up in full. Vendor libraries do give such readings (ROCm/amdsmi#115: the
counter steps back without restarting from 0). So where ``max_increase`` is given and
``glitch_reads`` is above 0 (by default for counters that restart from zero), a reading that
is neither a plausible step, a plausible wrap nor a plausible restart (its value at most
``max_increase`` and below half the previous one) is a glitch: ignored, nothing counted, the
previous reading kept, so that the next good reading catches up. One that persists for
``glitch_reads`` readings in a row is the new baseline (counted as a reset: the energy since
the last plausible reading is lost). A restart is counted only once the next reading goes on
from it: one that goes on from before it shows a dip (a counter read near 0 once, as Intel's
Level Zero counter has: intel/compute-runtime#938), a glitch that loses nothing. A total
never goes down.
Probes keep one :class:`CumulativeCounter` per channel and report ``total`` in their own unit.
"""

from __future__ import annotations

#: Implausible readings in a row after which a counter that restarts from zero takes the
#: reading as its new baseline.
GLITCH_READS = 3
#: What a reading was (``CumulativeCounter.outcome``): an increase, a wrap, a would-be restart
#: from 0 not counted yet, a restart (confirmed by the reading after it), an ignored glitch,
#: a glitch that persisted (the new baseline), or the reading after a one-reading dip to near
#: 0, which it showed to be a glitch.
OUTCOMES = ("step", "wrap", "pending", "reset", "glitch", "baseline", "undone")


class CumulativeCounter:
    """Raw readings of one accumulator in, the increase since the first reading out.

    ``modulus``: the number of distinct raw values (the counter goes from ``modulus - 1`` back
    to 0), or ``None`` for a counter that does not wrap. ``glitch_reads``: see the module
    docstring (None: :data:`GLITCH_READS` for a counter that ``restarts_from_zero``, else 0,
    no glitch handling). ``resets``, ``wraps``, ``glitches``: how many of each were seen;
    ``outcome``: what the last reading was (:data:`OUTCOMES`), for the probe's warning. Not
    thread-safe: the probe that owns it serialises its reads."""

    __slots__ = ("_implausible", "_pending", "glitch_reads", "glitches", "last", "modulus",
                 "outcome", "resets", "restarts_from_zero", "total", "wraps")

    def __init__(self, first: int, modulus: int | None = None, *,
                 restarts_from_zero: bool = False, glitch_reads: int | None = None) -> None:
        self.last = first
        self.modulus = modulus
        self.restarts_from_zero = restarts_from_zero
        self.glitch_reads = (GLITCH_READS if restarts_from_zero else 0) \
            if glitch_reads is None else glitch_reads
        self.total = 0
        self.wraps = 0
        self.resets = 0
        self.glitches = 0
        self.outcome = "step"
        self._implausible = 0  # glitches in a row
        # A reading that looks like a restart from 0 (with glitch handling), and the bound it
        # was read under: counted once the next reading goes on from it.
        self._pending: tuple[int, int | float] | None = None

    def rebase(self, raw: int) -> None:
        """Continue from ``raw`` without counting anything (what happened while no run read
        the counter belongs to no run); a pending glitch or restart is forgotten."""
        self.last = raw
        self._implausible = 0
        self._pending = None

    def advance(self, raw: int, max_increase: float | None = None) -> int:
        """Take a reading; return the increase it shows (also added to ``total``).

        A reading below the previous one is a wrap when the counter has a ``modulus`` and the
        increase over the top is at most ``max_increase``; else a reset (counted in
        ``resets``): the energy between the previous reading and the reset is unknown. With
        glitch handling (see the module docstring), an implausible reading counts 0 and is
        counted in ``glitches``."""
        if self.glitch_reads > 0 and max_increase is not None:
            return self._advance_checked(raw, max_increase)
        if raw >= self.last:
            delta = raw - self.last
            self.outcome = "step"
        else:
            wrapped = self._wrapped(raw)
            if wrapped is not None and (max_increase is None or wrapped <= max_increase):
                delta = wrapped
                self.wraps += 1
                self.outcome = "wrap"
            else:
                delta = raw if self.restarts_from_zero else 0
                self.resets += 1
                self.outcome = "reset"
        self.total += delta
        self.last = raw
        return delta

    def _advance_checked(self, raw: int, max_increase: float) -> int:
        if self._pending is not None:
            return self._confirm(raw, max_increase)
        if raw >= self.last:
            delta = raw - self.last
            plausible = delta <= max_increase
            outcome = "step"
        else:
            wrapped = self._wrapped(raw)
            if wrapped is not None and wrapped <= max_increase:
                delta, plausible, outcome = wrapped, True, "wrap"
                self.wraps += 1
            elif raw <= max_increase and raw < self.last // 2:
                # Counting again from (near) 0, most of its value lost: a restart, counted
                # once the next reading confirms it (goes on from here, not from before).
                self._pending = (raw, max_increase)
                self._implausible = 0
                self.outcome = "pending"
                return 0
            else:
                delta, plausible, outcome = 0, False, "glitch"
        return self._take(raw, delta, plausible, outcome)

    def _take(self, raw: int, delta: int, plausible: bool, outcome: str) -> int:
        if not plausible:
            self.glitches += 1
            self._implausible += 1
            if self._implausible < self.glitch_reads:
                self.outcome = "glitch"
                return 0  # ignored: the next good reading catches up
            delta = 0  # it persisted: the new baseline, the energy since the last good one lost
            self.resets += 1
            outcome = "baseline"
        self._implausible = 0
        self.total += delta
        self.last = raw
        self.outcome = outcome
        return delta

    def _confirm(self, raw: int, max_increase: float) -> int:
        """The reading after a would-be restart to ``low``: it goes on from ``low`` (a restart:
        counted now), or from before it (``low`` was a dip: a glitch, nothing lost; the bound
        spans both intervals), or neither (taken by the usual rules, from before)."""
        assert self._pending is not None
        low, low_bound = self._pending
        self._pending = None
        if low <= raw <= low + max_increase:
            self.resets += 1
            counted = (low if self.restarts_from_zero else 0) + raw - low
            self.total += counted
            self.last = raw
            self.outcome = "reset"
            return counted
        if self.last <= raw <= self.last + low_bound + max_increase:
            self.glitches += 1
            return self._take(raw, raw - self.last, True, "undone")
        return self._advance_checked(raw, low_bound + max_increase)

    def _wrapped(self, raw: int) -> int | None:
        """The increase if ``raw`` (below the last reading) followed a wrap: None without a
        modulus, or one too small to have held the last reading."""
        if self.modulus is None or self.modulus <= self.last:
            return None
        return raw + self.modulus - self.last


def outcome_warning(outcome: str, where: str, previous: int, raw: int, unit: str,
                    elapsed_s: float, max_w: float) -> tuple[str, str] | None:
    """The run's warning for a reading of ``outcome`` (:data:`OUTCOMES`) and its key (one per
    kind of event: a baseline's lost energy is never folded into "ignored" glitches); None
    for a step, a wrap or a restart not confirmed yet. ``where``: "<channel>: the ... energy
    counter"."""
    if outcome == "glitch":
        return (f"{where} gave an implausible reading ({previous} -> {raw} {unit} in "
                f"{elapsed_s:.3g} s: more than {max_w:g} W, or backwards without counting from "
                "0 again): ignored, the next good reading catches up", "glitch")
    if outcome == "baseline":
        return (f"{where} jumped ({previous} -> {raw} {unit}) and stayed there: taken as the "
                "new baseline; the energy since the last plausible reading is lost", "baseline")
    if outcome == "undone":
        return (f"{where} read near 0 once and then went on from before (a glitch, not a "
                "reset): that reading was ignored, nothing lost", "dip")
    if outcome == "reset":
        return (f"{where} went back to near 0 ({previous} -> {raw} {unit}; GPU reset or driver "
                "reload?): it counts from 0 again, so its new value is counted as energy since "
                "the reset; the energy between the previous read and the reset is lost", "reset")
    return None
