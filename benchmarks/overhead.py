"""What measuring costs: slowdown of a CPU-bound pure-Python loop under ``measure()``, the
sampler thread's own CPU time, and ``measure()`` start/stop latency.

    python benchmarks/overhead.py                 # defaults: 9 pairs of 3 s loops + one 10 s run
    python benchmarks/overhead.py --pairs 15 --loop-s 5 --interval 0.01
    python benchmarks/overhead.py --fake-rapl      # against a simulated RAPL tree

Pairs are interleaved, alternating which side runs first (bare-measured, measured-bare, ...),
so drift of this noisy VM hits both sides alike; the table gives median and spread.
Prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workload import calibrate, spin  # noqa: E402

from energymeter import measure  # noqa: E402


def bare(n: int) -> float:
    t0 = time.perf_counter()
    spin(n)
    return time.perf_counter() - t0


def measured(n: int, out: str, interval_s: float | None) -> tuple[float, object]:
    t0 = time.perf_counter()
    with measure("overhead", out=out, interval_s=interval_s) as m:
        spin(n)
    return time.perf_counter() - t0, m.report


def latency(out: str, repeats: int) -> tuple[list[float], list[float]]:
    starts, stops = [], []
    for _ in range(repeats):
        meter = measure("latency", out=out)
        t0 = time.perf_counter()
        meter.start()
        t1 = time.perf_counter()
        meter.stop()
        t2 = time.perf_counter()
        starts.append((t1 - t0) * 1000)
        stops.append((t2 - t1) * 1000)
    return starts, stops


def fmt(values: list[float], unit: str = "s") -> str:
    return (f"median {statistics.median(values):.4g} {unit} "
            f"(min {min(values):.4g}, max {max(values):.4g})")


def main() -> None:
    ap = argparse.ArgumentParser(description="measurement overhead of energymeter")
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--loop-s", type=float, default=3.0)
    ap.add_argument("--long-s", type=float, default=10.0, help="loop for the sampler-CPU run")
    ap.add_argument("--interval", type=float, default=None, help="sampler interval (s)")
    ap.add_argument("--latency-repeats", type=int, default=20)
    ap.add_argument("--fake-rapl", action="store_true",
                    help="measure against a simulated RAPL tree (tests/fakes/powercap.py)")
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="energymeter-bench-")
    fake = None
    if args.fake_rapl:
        import os

        from tests.fakes.powercap import FakePowercap

        fake = FakePowercap(Path(out) / "powercap", max_energy_range_uj=120_000_000).start()
        os.environ["ENERGYMETER_POWERCAP_ROOT"] = str(fake.root)

    starts, stops = latency(out, args.latency_repeats)
    n = calibrate(args.loop_s)
    measured(n // 10, out, args.interval)  # warm discovery cache
    bare_s, meas_s, ratios = [], [], []
    for i in range(args.pairs):
        # Alternate which side runs first (ABBA), so an effect of position cancels.
        if i % 2:
            m, _ = measured(n, out, args.interval)
            b = bare(n)
        else:
            b = bare(n)
            m, _ = measured(n, out, args.interval)
        bare_s.append(b)
        meas_s.append(m)
        ratios.append(m / b - 1)
    long_s, report = measured(calibrate(args.long_s), out, args.interval)
    ov = report.overhead  # type: ignore[attr-defined]

    print(f"energymeter overhead benchmark (python {sys.version.split()[0]}, "
          f"interval {ov['interval_s']} s, CPU channel method "
          f"{report.methods('cpu') or 'none'})")  # type: ignore[attr-defined]
    print(f"{'quantity':<44} value")
    print(f"{'measure() first start in a process (cold)':<44} {starts[0]:.4g} ms "
          "(imports psutil, discovers probes)")
    print(f"{'measure() start latency, later runs':<44} {fmt(starts[1:], 'ms')}")
    print(f"{'measure() stop latency':<44} {fmt(stops, 'ms')}")
    print(f"{f'bare loop ({args.pairs} runs)':<44} {fmt(bare_s)}")
    print(f"{f'measured loop ({args.pairs} runs)':<44} {fmt(meas_s)}")
    print(f"{'slowdown per interleaved pair':<44} median "
          f"{statistics.median(ratios) * 100:+.2f} % (min {min(ratios) * 100:+.2f} %, "
          f"max {max(ratios) * 100:+.2f} %)")
    print(f"{f'sampler CPU over a {long_s:.1f} s run':<44} {ov['sampler_cpu_s']:.4f} s = "
          f"{ov['sampler_cpu_fraction'] * 100:.3f} % of one core, {ov['ticks']} ticks")
    if fake is not None:
        fake.stop()


if __name__ == "__main__":
    main()
