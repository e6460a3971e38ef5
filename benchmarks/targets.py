"""energymeter's own performance targets, measured here (no peers): import + first start(), later
start(), stop(), phase enter+exit, sampler CPU share at 10 and 100 Hz, and the sustained
sampler rate with 16 channels.

    python benchmarks/targets.py           # about a minute

Each start figure is the median of fresh interpreters (bytecode compiled first); the others
are medians in one process. Prints a table; it asserts nothing.
"""

from __future__ import annotations

import compileall
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLD = """
import json, sys, time
t0 = time.perf_counter()
import energymeter
m = energymeter.measure("t", out=sys.argv[1], region="SE")
m.start()
t1 = time.perf_counter()
m.stop()
t2 = time.perf_counter()
later = []
stops = []
for _ in range(20):
    a = time.perf_counter(); n = energymeter.measure("t", out=sys.argv[1], region="SE").start()
    b = time.perf_counter(); n.stop(); c = time.perf_counter()
    later.append(b - a); stops.append(c - b)
print(json.dumps({"first": t1 - t0, "first_stop": t2 - t1, "later": later, "stops": stops}))
"""


def cold(out: str, n: int = 7) -> dict[str, float]:
    runs = [json.loads(subprocess.run([sys.executable, "-c", COLD, out], capture_output=True,
                                      text=True, check=True, cwd=REPO).stdout)
            for _ in range(n)]
    return {"first_ms": 1000 * statistics.median(r["first"] for r in runs),
            "first_stop_ms": 1000 * statistics.median(r["first_stop"] for r in runs),
            "later_ms": 1000 * statistics.median(x for r in runs for x in r["later"]),
            "stop_ms": 1000 * statistics.median(x for r in runs for x in r["stops"])}


AFTER_TORCH = """
import gc, json, sys, time
import torch  # noqa: F401 - what a training script has imported before it measures
gc.collect()  # the heap as it is once the program runs, not torch's import aftermath
t0 = time.perf_counter()
import energymeter
m = energymeter.measure("t", out=sys.argv[1], region="SE")
m.start()
t1 = time.perf_counter()
m.stop()
print(json.dumps({"first": t1 - t0}))
"""


def cold_after_torch(out: str, n: int = 5) -> float | None:
    """Median ms of import + first start() in fresh interpreters that imported torch first
    (None where torch is not installed). torch brings logging, dataclasses, inspect, json and
    the rest of what energymeter would import: this is the marginal cost in a training
    script. Right after ``import torch`` the first allocations of any code set off a full
    garbage collection of torch's objects (~90 ms here), whoever makes them; the script
    collects first so as to measure energymeter, not that."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    runs = [json.loads(subprocess.run([sys.executable, "-c", AFTER_TORCH, out],
                                      capture_output=True, text=True, check=True,
                                      cwd=REPO).stdout.strip().splitlines()[-1])
            for _ in range(n)]
    return 1000 * statistics.median(r["first"] for r in runs)


def phase_us(out: str) -> float:
    import energymeter

    with energymeter.measure("p", out=out, region="SE") as m:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(1000):
                with m.phase("p"):
                    pass
            times.append((time.perf_counter() - t) / 1000)
    return 1e6 * statistics.median(times)


def sampler_share(out: str, interval_s: float, seconds: float = 10.0) -> float:
    import energymeter

    with energymeter.measure("s", out=out, region="SE", interval_s=interval_s) as m:
        time.sleep(seconds)
    return 100 * m.report.overhead["sampler_cpu_fraction"]


def throughput(channels: int = 16, seconds: float = 5.0) -> tuple[float, float]:
    """Sustained rows per second and CPU µs per channel-sample of the sampler at 1 kHz."""
    from energymeter.sampling import Aggregator, Sampler
    from tests.fakes.probes import ConstantPowerProbe

    probes = [ConstantPowerProbe(f"c{i}", "cpu", 10.0) for i in range(channels)]
    for p in probes:
        p.may_block = False
    agg = Aggregator([p.channels[0].id for p in probes], 0.01)
    sampler = Sampler(probes, interval_s=0.001, gauge_interval_s=1.0, aggregator=agg)
    sampler.begin()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    rate = sampler.ticks / seconds
    cpu_per = sampler.thread_cpu_s / max(1, sampler.ticks) / channels * 1e6
    return rate, cpu_per


def main() -> None:
    compileall.compile_dir(str(REPO / "energymeter"), quiet=1)
    out = tempfile.mkdtemp()
    c = cold(out)
    torch_ms = cold_after_torch(out)
    rows = [
        ("import + first start()", f"{c['first_ms']:.1f} ms", "≤ 50 ms"),
        ("  ... after import torch", "no torch" if torch_ms is None else f"{torch_ms:.1f} ms",
         "≤ 50 ms"),
        ("later start()", f"{c['later_ms']:.2f} ms", "≤ 2 ms"),
        ("stop()", f"{c['stop_ms']:.2f} ms", "≤ 5 ms"),
        ("phase enter+exit (no GPU)", f"{phase_us(out):.0f} µs", "≤ 50 µs"),
        ("sampler CPU at 10 Hz", f"{sampler_share(out, 0.1):.2f} %", "≤ 0.5 %"),
        ("sampler CPU at 100 Hz", f"{sampler_share(out, 0.01):.2f} %", "≤ 2 %"),
    ]
    rate, cpu_per = throughput()
    rows.append(("sampler, 16 channels at 1 kHz", f"{rate:.0f} rows/s, {cpu_per:.1f} µs CPU "
                 "per channel-sample", "≥ 1 kHz, ≤ 20 µs"))
    print(f"energymeter targets, Python {sys.version.split()[0]}\n")
    print("| measure | median | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
