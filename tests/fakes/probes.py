"""Scripted probes for sampler tests: energy from a known power and a controllable clock,
and probes that fail on demand."""

from __future__ import annotations

import time
from collections.abc import Callable

from energymeter.errors import ProbeError
from energymeter.probes.base import Channel, Probe


class ConstantPowerProbe(Probe):
    """One channel whose cumulative energy is ``power_w`` × seconds since open."""

    source = "fake"

    def __init__(self, channel_id: str = "cpu0", kind: str = "cpu", power_w: float = 40.0,
                 clock: Callable[[], float] = time.monotonic, part_of: str | None = None,
                 gauges: dict[str, float] | None = None) -> None:
        super().__init__((Channel(channel_id, kind, "fake device", "fake", "counter",
                                  part_of=part_of),), tuple(gauges or {}))
        self.power_w = power_w
        self._clock = clock
        self._t0 = clock()
        self._gauge_values = dict(gauges or {})
        self.reads = 0

    def _read(self) -> dict[str, float]:
        self.reads += 1
        return {self.channels[0].id: self.power_w * (self._clock() - self._t0)}

    def _gauges(self) -> dict[str, float]:
        return dict(self._gauge_values)


class FailingProbe(ConstantPowerProbe):
    """Raises :class:`ProbeError` on reads number ``fail_on`` (1-based) and succeeds otherwise."""

    def __init__(self, fail_on: Callable[[int], bool], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._fail_on = fail_on

    def _read(self) -> dict[str, float]:
        value = super()._read()
        if self._fail_on(self.reads):
            raise ProbeError(f"simulated failure on read {self.reads}")
        return value
