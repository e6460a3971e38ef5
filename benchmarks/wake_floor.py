"""What a sampling thread costs before it does any work: CPU of a bare Python thread that wakes
N times a second (a timed ``Lock.acquire``, as energymeter's sampler waits), with nothing to do
or with one ``pread`` of ``/proc/stat`` (what the estimated CPU model reads per tick).

    python benchmarks/wake_floor.py            # 4 s per line

The floor under energymeter's own sampler figures (docs/performance.md): on a VM a thread that
wakes runs its first microseconds on cold caches. Prints a table; it asserts nothing.
"""

from __future__ import annotations

import os
import threading
import time


def share(interval_s: float, seconds: float, read_stat: bool) -> tuple[float, float]:
    """(% of one core, µs of CPU per wake) of a thread waking every ``interval_s``."""
    lock = threading.Lock()
    lock.acquire()  # never released: every wait times out, as a sampler's between ticks
    fd = os.open("/proc/stat", os.O_RDONLY)
    out: dict[str, float] = {}

    def loop() -> None:
        wakes, next_t = 0, time.monotonic() + interval_s
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            lock.acquire(timeout=max(0.0, next_t - time.monotonic()))
            next_t += interval_s
            if read_stat:
                os.pread(fd, 512, 0).split(b"\n", 1)[0].split()
            wakes += 1
        out["cpu_s"], out["wakes"] = time.thread_time(), wakes

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    os.close(fd)
    return 100 * out["cpu_s"] / seconds, 1e6 * out["cpu_s"] / out["wakes"]


def main() -> None:
    print("| wakes per second | work per wake | % of one core | µs CPU per wake |")
    print("|---|---|---|---|")
    for interval_s in (0.1, 0.01):
        for read_stat in (False, True):
            pct, per = share(interval_s, 4.0, read_stat)
            work = "one pread of /proc/stat" if read_stat else "nothing"
            print(f"| {1 / interval_s:.0f} | {work} | {pct:.2f} | {per:.0f} |")


if __name__ == "__main__":
    main()
