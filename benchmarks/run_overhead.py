"""Wall time that ``energymeter run -- true`` adds over ``true`` itself.

Runs both commands in interleaved pairs (order alternating, after a warm-up) and prints the
min / median / max of each, and the added time: the median of the per-pair differences. The
target is <= 100 ms added. For context it also times the Python interpreter's start and the
import of ``energymeter.cli`` (``--no-context`` skips them).

    python benchmarks/run_overhead.py            # 20 pairs
    python benchmarks/run_overhead.py -n 50 --energymeter energymeter

Bytecode is written during the warm-up (``PYTHONDONTWRITEBYTECODE`` is dropped for the timed
commands), as for an installed package. The run directories go to a temporary folder
(ENERGYMETER_OUT), deleted at the end. By default energymeter is started as
``<this python> -m energymeter`` with the repository on PYTHONPATH, which works without
installing; ``--energymeter energymeter`` uses the console script instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 100.0


def timed(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall milliseconds of one run of ``argv`` (stdout and stderr discarded)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited with {proc.returncode}")
    return elapsed


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--pairs", type=int, default=20, help="interleaved pairs (>= 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded pairs first")
    parser.add_argument("--energymeter", default=None,
                        help="how to start energymeter (default: python -m energymeter)")
    parser.add_argument("--no-context", action="store_true",
                        help="skip timing interpreter start and imports")
    opts = parser.parse_args(args)
    if opts.pairs < 10:
        parser.error("--pairs must be at least 10")

    em = shlex.split(opts.energymeter) if opts.energymeter else [sys.executable, "-m",
                                                                  "energymeter"]
    true = ["true"]
    wrapped = [*em, "run", "--", "true"]
    with tempfile.TemporaryDirectory(prefix="energymeter-bench-") as out:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
        # An installed package has its bytecode compiled (pip does it at install): let the
        # warm-up write it rather than time the compilation of every module on every run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["ENERGYMETER_OUT"] = out
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        # Keep the carbon region lookup the same on every machine (no time-zone inference).
        env["ENERGYMETER_REGION"] = "WLD"

        for _ in range(opts.warmup):
            timed(true, env)
            timed(wrapped, env)
        plain: list[float] = []
        measured: list[float] = []
        for i in range(opts.pairs):
            order = [(true, plain), (wrapped, measured)]
            for argv, into in order if i % 2 == 0 else reversed(order):
                into.append(timed(argv, env))
        context: list[tuple[str, list[float]]] = []
        if not opts.no_context:
            for label, argv in (
                ("python -c pass", [sys.executable, "-c", "pass"]),
                ("python -c 'import energymeter.cli'",
                 [sys.executable, "-c", "import energymeter.cli"]),
                ("python -c 'import energymeter.session'",
                 [sys.executable, "-c", "import energymeter.session"]),
            ):
                context.append((label, [timed(argv, env) for _ in range(opts.pairs)]))
        runs = len([p for p in Path(out).iterdir() if p.is_dir()])

    diffs = [m - p for m, p in zip(measured, plain, strict=True)]
    rows = [("true", plain), ("energymeter run -- true", measured), *context]
    width = max(len(label) for label, _ in rows) + 2
    print(f"energymeter run overhead: {opts.pairs} interleaved pairs, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, energymeter started as `{shlex.join(em)}`")
    print()
    print(f"{'command':<{width}}{'n':>4}{'min ms':>10}{'median ms':>11}{'max ms':>10}")
    print("-" * (width + 35))
    for label, values in rows:
        lo, mid, hi = stats(values)
        print(f"{label:<{width}}{len(values):>4}{lo:>10.1f}{mid:>11.1f}{hi:>10.1f}")
    print("-" * (width + 35))
    lo, mid, hi = stats(diffs)
    print(f"{'added (per-pair difference)':<{width}}{len(diffs):>4}{lo:>10.1f}{mid:>11.1f}"
          f"{hi:>10.1f}")
    verdict = "within" if mid <= TARGET_MS else "OVER"
    print(f"\nmedian added {mid:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target "
          f"({runs} run directories written)")
    return 0 if mid <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
