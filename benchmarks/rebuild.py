"""Rebuilding a report from a 10 M-row ``samples.csv``: wall time and peak memory.

    python benchmarks/rebuild.py               # 10 M rows (~1 GB of CSV in a temp dir)
    python benchmarks/rebuild.py --rows 1000000 --keep /tmp/big-run

Makes a real run directory with ``measure()`` (so the header, the ``events.jsonl`` start event
and the channels are what energymeter writes), removes its ``report.json`` and stop event (a
run killed with SIGKILL), and rewrites ``samples.csv`` with ``--rows`` rows in the format of
``energymeter/store/writers.py`` ``SamplesWriter``: ``t_s`` every 0.1 s, cumulative joules per
channel, gauges on every tenth row (the default gauge interval is ten sampler ticks). Then a
fresh interpreter times ``energymeter.Report.load(run_dir)`` and reports its peak RSS
(``resource.getrusage``), and the RSS it had before the call. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "ENERGYMETER_REGION": "SE"}

CHILD = """
import json, resource, sys, time
import energymeter
from energymeter.report import model  # noqa: F401 - imported before the baseline RSS
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
r = energymeter.Report.load(sys.argv[1])
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"load_s": dt, "peak_rss_mib": rss / 1024, "rss_before_mib": rss0 / 1024,
                  "status": r.status, "energy_j": r.energy_j, "duration_s": r.duration_s}))
"""


MAKE = """
import sys, time
import energymeter
with energymeter.measure("rebuild", out=sys.argv[1], region="SE", interval_s=0.05) as m:
    time.sleep(0.2)
print(m.report.path)
"""


def make_run(base: Path) -> Path:
    """A run directory written by a process that has exited since (as after SIGKILL)."""
    proc = subprocess.run([sys.executable, "-c", MAKE, str(base)], capture_output=True,
                          text=True, check=True, cwd=REPO, env=ENV)
    run = Path(proc.stdout.strip().splitlines()[-1])
    (run / "report.json").unlink()
    lines = (run / "events.jsonl").read_text().splitlines()
    keep = [ln for ln in lines if '"event": "stop"' not in ln]
    (run / "events.jsonl").write_text("\n".join(keep) + "\n")
    return run


def write_samples(run: Path, rows: int, chunk: int = 200_000) -> float:
    """Rewrite samples.csv with ``rows`` rows; returns its size in bytes."""
    path = run / "samples.csv"
    header = path.read_text().splitlines()[0].split(",")
    energy_cols = [i for i, h in enumerate(header) if h.endswith("_j") and i > 0]
    gauge_cols = [i for i in range(1, len(header)) if i not in energy_cols]
    width = len(header)
    with path.open("w") as fh:
        fh.write(",".join(header) + "\n")
        for start in range(0, rows, chunk):
            out = []
            for k in range(start, min(rows, start + chunk)):
                cells = [""] * width
                t = k * 0.1
                cells[0] = f"{t:.6f}"
                for n, i in enumerate(energy_cols):
                    cells[i] = f"{t * (20.0 + 5 * n):.6f}"
                if k % 10 == 0:
                    for i in gauge_cols:
                        cells[i] = str(50_000_000 + k % 1000)
                out.append(",".join(cells))
            fh.write("\n".join(out) + "\n")
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--keep", help="make the run directory here and keep it")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rebuild-bench-"))
    try:
        run = make_run(base)
        t0 = time.perf_counter()
        size = write_samples(run, args.rows)
        write_s = time.perf_counter() - t0
        proc = subprocess.run([sys.executable, "-c", CHILD, str(run)], capture_output=True,
                              text=True, cwd=REPO, env=ENV)
        if proc.returncode:
            res = {"error": proc.stderr.strip().splitlines()[-1]}
        else:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        res.update(rows=args.rows, csv_mib=size / 2**20, write_s=write_s)
        print(json.dumps(res))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
