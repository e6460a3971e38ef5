"""Every performance measurement in one go: the peers comparison and energymeter's targets.

    python benchmarks/run_all.py                       # < 15 min on a 2-vCPU VM
    python benchmarks/run_all.py --venv /tmp/peers-venv --json all.json

1. ``peers.py`` (which makes or reuses its own venv with the pinned peers): latency, phases,
   sampler CPU, wrappers, accuracy on fake RAPL and NVML, ratios energymeter / peer.
2. energymeter alone, with this interpreter: ``targets.py``'s measurements (import + first
   ``start()`` and later starts/stops in fresh interpreters, phase enter+exit, sampler CPU at 10
   and 100 Hz, the sampler with 16 constant-power probes at 1 kHz), ``run_overhead.py``
   (``energymeter run -- true`` against ``true``, 20 ABBA pairs) and ``rebuild.py`` (a 10 M-row
   ``samples.csv``: ``Report.load`` time and peak RSS in a fresh interpreter).
3. A table of every target with the measured value and met / missed.

Prints; it asserts nothing (exit status 0 whatever is missed).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))


def run_peers(args: argparse.Namespace, json_path: Path) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "peers.py"), "--json", str(json_path)]
    if args.venv:
        argv += ["--venv", args.venv]
    if args.quick:
        argv.append("--quick")
    proc = subprocess.run(argv, cwd=REPO, check=False)
    if proc.returncode or not json_path.exists():
        return {"error": f"peers.py exited with {proc.returncode}"}
    return json.loads(json_path.read_text())


def run_targets(quick: bool) -> dict[str, Any]:
    import targets

    out = tempfile.mkdtemp(prefix="run-all-targets-")
    import compileall

    compileall.compile_dir(str(REPO / "energymeter"), quiet=1)
    res: dict[str, Any] = {}
    res.update(targets.cold(out, n=3 if quick else 9))
    res["first_after_torch_ms"] = targets.cold_after_torch(out, n=3 if quick else 5)
    res["phase_us"] = targets.phase_us(out)
    seconds = 2.0 if quick else 5.0
    for key, interval_s in (("sampler_10hz_pct", 0.1), ("sampler_100hz_pct", 0.01)):
        shares = [targets.sampler_share(out, interval_s, seconds) for _ in range(3)]
        res[key], res[key + "_runs"] = statistics.median(shares), shares
    rate, cpu_per = targets.throughput(seconds=2.0 if quick else 5.0)
    res["rate_hz"], res["cpu_us_per_channel_sample"] = rate, cpu_per
    return res


def run_wrapper(quick: bool) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(BENCH / "run_overhead.py"), "-n",
                           "10" if quick else "20"], capture_output=True, text=True, cwd=REPO)
    print(proc.stdout, flush=True)
    m = re.search(r"^added \(per-pair difference\)\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)",
                  proc.stdout, re.M)
    if not m:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}
    lo, mid, hi = (float(x) for x in m.groups())
    return {"added_ms": mid, "min_ms": lo, "max_ms": hi}


def run_rebuild(quick: bool) -> dict[str, Any]:
    rows = "1000000" if quick else "10000000"
    proc = subprocess.run([sys.executable, str(BENCH / "rebuild.py"), "--rows", rows],
                          capture_output=True, text=True, cwd=REPO)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": proc.stderr.strip()[-300:]}


def peer_first_ms(peers: dict[str, Any], tool: str) -> float | None:
    runs = [r for r in peers.get("latency", {}).get(tool, []) if "error" not in r]
    if not runs:
        return None
    return 1e3 * statistics.median(r["import_s"] + r["first_start_s"] for r in runs)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", help="the peers' venv to make or reuse (default: a temp dir)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="run-all-"))
    print(f"# run_all.py, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", flush=True)

    peers: dict[str, Any] = {}
    if not args.skip_peers:
        print("\n## Peers (benchmarks/peers.py)\n", flush=True)
        peers = run_peers(args, tmp / "peers.json")
    t_peers = time.perf_counter() - t0

    print("\n## energymeter alone: targets.py measurements\n", flush=True)
    tg = run_targets(args.quick)
    print(json.dumps(tg), flush=True)
    print("\n## energymeter run -- true (run_overhead.py)\n", flush=True)
    wr = run_wrapper(args.quick)
    print("\n## 10 M-row samples.csv rebuild (rebuild.py)\n", flush=True)
    rb = run_rebuild(args.quick)
    print(json.dumps(rb), flush=True)

    em_first = peer_first_ms(peers, "energymeter")
    pj_first = peer_first_ms(peers, "pyjoules")
    rows = []
    first = tg["first_ms"]
    rows.append(("import + first start() (targets.py, 9 interpreters)", f"{first:.1f} ms",
                 "≤ 50 ms", verdict(first <= 50)))
    if tg.get("first_after_torch_ms") is not None:
        t_ms = tg["first_after_torch_ms"]
        rows.append(("  ... in a program that imported torch (marginal)", f"{t_ms:.1f} ms",
                     "≤ 50 ms", verdict(t_ms <= 50)))
    if em_first is not None and pj_first is not None:
        rows.append(("  ... below pyJoules' (peers.py, same venv, same run)",
                     f"energymeter {em_first:.1f} ms vs pyJoules {pj_first:.1f} ms "
                     f"(ratio {em_first / pj_first:.2f})", "< pyJoules",
                     verdict(em_first < pj_first)))
    rows.append(("later start()", f"{tg['later_ms']:.2f} ms", "≤ 2 ms",
                 verdict(tg["later_ms"] <= 2)))
    rows.append(("stop() (later runs)", f"{tg['stop_ms']:.2f} ms", "≤ 5 ms",
                 verdict(tg["stop_ms"] <= 5)))
    rows.append(("first stop() in a process", f"{tg['first_stop_ms']:.2f} ms", "≤ 5 ms",
                 verdict(tg["first_stop_ms"] <= 5)))
    rows.append(("phase enter+exit, no GPU", f"{tg['phase_us']:.0f} µs", "≤ 50 µs",
                 verdict(tg["phase_us"] <= 50)))
    if "added_ms" in wr:
        rows.append(("`energymeter run -- true` added", f"{wr['added_ms']:.1f} ms "
                     f"({wr['min_ms']:.1f}–{wr['max_ms']:.1f})", "≤ 100 ms",
                     verdict(wr["added_ms"] <= 100)))
    else:
        rows.append(("`energymeter run -- true` added", "failed: " + wr["error"], "≤ 100 ms",
                     "—"))
    rows.append(("sampler CPU at 10 Hz (median of 3 × 5 s)",
                 f"{tg['sampler_10hz_pct']:.2f} % of a core", "≤ 0.5 %",
                 verdict(tg["sampler_10hz_pct"] <= 0.5)))
    rows.append(("sampler CPU at 100 Hz", f"{tg['sampler_100hz_pct']:.2f} % of a core",
                 "≤ 2 %", verdict(tg["sampler_100hz_pct"] <= 2)))
    rows.append(("16 channels at 1 kHz", f"{tg['rate_hz']:.0f} rows/s, "
                 f"{tg['cpu_us_per_channel_sample']:.1f} µs CPU per channel-sample",
                 "≥ 1 kHz (≥ 990 rows/s), ≤ 20 µs",
                 verdict(tg["rate_hz"] >= 990 and tg["cpu_us_per_channel_sample"] <= 20)))
    if "load_s" in rb:
        rows.append((f"{rb['rows'] / 1e6:g} M-row samples.csv rebuild "
                     f"({rb['csv_mib']:.0f} MiB CSV)",
                     f"{rb['load_s']:.2f} s, peak RSS {rb['peak_rss_mib']:.0f} MiB",
                     "≤ 5 s, ≤ 1 GiB",
                     verdict(rb["load_s"] <= 5 and rb["peak_rss_mib"] <= 1024)))
    else:
        rows.append(("samples.csv rebuild", "failed: " + rb.get("error", "?"), "≤ 5 s", "—"))

    print("\n## Targets\n")
    print("| measure | measured (median) | target | |\n|---|---|---|---|")
    for name, value, target, ok in rows:
        print(f"| {name} | {value} | {target} | {ok} |")
    wall = time.perf_counter() - t0
    print(f"\nrun_all.py wall time: {wall:.0f} s (peers.py {t_peers:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"peers": peers, "targets": tg, "wrapper": wr,
                                               "rebuild": rb, "rows": rows, "wall_s": wall},
                                              indent=1, default=str))


if __name__ == "__main__":
    main()
