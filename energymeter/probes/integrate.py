"""Polled power turned into cumulative energy: the trapezoid rule between a probe's own polls.

Probes whose hardware gives watts (NVML power before Volta, hwmon ``powerN_input``, Jetson rails)
feed every poll to a :class:`TrapezoidIntegrator` and report its ``energy_j`` as their
cumulative joules (method ``integrated``).
"""

from __future__ import annotations


class TrapezoidIntegrator:
    """Cumulative joules of a power signal sampled at irregular times.

    Between two polls the power is taken to move linearly; a poll whose time is not after the
    previous one is ignored (a clock that did not move adds nothing). Not thread-safe: the probe
    that owns it serialises its polls."""

    __slots__ = ("energy_j", "last_power_w", "last_t_s")

    def __init__(self) -> None:
        self.energy_j = 0.0
        self.last_t_s: float | None = None
        self.last_power_w: float | None = None

    def add(self, t_s: float, power_w: float) -> None:
        """Take a poll: ``power_w`` watts at ``t_s`` seconds (any monotonic origin)."""
        if self.last_t_s is not None and self.last_power_w is not None:
            if t_s <= self.last_t_s:
                return
            self.energy_j += 0.5 * (power_w + self.last_power_w) * (t_s - self.last_t_s)
        self.last_t_s, self.last_power_w = t_s, power_w
