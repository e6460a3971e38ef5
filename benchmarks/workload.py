"""The CPU-bound pure-Python loop every benchmark measures, and its calibration."""

from __future__ import annotations

import time


def spin(n: int) -> int:
    """``n`` iterations of integer arithmetic: holds the GIL, allocates nothing lasting."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate(seconds: float, probe_s: float = 0.2, clock=time.perf_counter) -> int:
    """Iterations of :func:`spin` that take about ``seconds`` here, timed on ``clock`` (wall
    time by default; ``time.process_time`` for CPU time) over a run of at least ``probe_s``
    (doubling until then)."""
    n = 200_000
    while True:
        t0 = clock()
        spin(n)
        dt = clock() - t0
        if dt > probe_s:
            return int(n * seconds / dt)
        n *= 2
