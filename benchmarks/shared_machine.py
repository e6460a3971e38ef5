"""Shared machines: does the attributed energy basis survive a neighbour?

    python benchmarks/shared_machine.py                      # ~3 min on a 2-vCPU VM
    python benchmarks/shared_machine.py --seconds 3 --repeats 3 --json /tmp/shared.json
    python benchmarks/shared_machine.py --n 40000000 --keep /tmp/shared-runs

A small study, run twice with the real CLI: two variants of a single-threaded pure-Python loop
(``workload.spin``'s loop: ``big`` of N iterations, ``small`` of ``--ratio`` x N; N calibrated so
that ``big`` takes about ``--seconds`` of CPU time here, or given with ``--n``), ``--repeats``
runs of each, interleaved (big, small, small, big, ...), each as

    energymeter run --out DIR/<load> --tag variant=<v> --tag load=<load> -q -- python -c ...

(a) ``alone``, then (b) ``hog``: beside a competing CPU hog of known size, a separate process this
script starts and kills that keeps one core busy with a duty cycle drawn at random (seeded) every
``--hog-period`` seconds between ``--hog-min`` and ``--hog-max``, applied in 10 ms slices (busy
for d x 10 ms of its own CPU time, then asleep for (1 - d) x 10 ms). On a machine without RAPL
the CPU energy is the model's (machine-wide utilisation x TDP), so the hog moves the machine's
energy from run to run; the run's own share should not move.
Then, for each load, ``energymeter compare --by tag:variant --format json``
with ``--basis machine`` and ``--basis attributed``: group means, CVs, the relative difference
(small vs big) and its p-value, and the CV differences hog - alone.

The machine may be shared with other work: /proc/loadavg before and after each load, and the
CPU time nobody in the study used (machine busy - the runs' process trees - the hog) are
recorded with the results. Prints a table (``--json PATH`` writes every figure); it asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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

from workload import calibrate  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "ENERGYMETER_REGION": "SE"}
LOADS = ("alone", "hog")
BASES = ("machine", "attributed")
VARIANTS = ("big", "small")

#: The workload: workload.spin, inlined so that the child imports nothing (in a function, as
#: calibrate_cpu() times it: a loop at module level runs on slower global variables).
WORK = ("def spin(n):\n    t = 0\n    for i in range(n):\n        t += i * i % 7\n    return t\n"
        "spin({n})\n")

#: The competing hog: one core, a duty cycle drawn every PERIOD s in [LO, HI], 10 ms slices.
HOG = """
import random, sys, time
seed, period, lo, hi = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rng, slice_s = random.Random(seed), 0.01
print("ready", flush=True)
while True:
    duty, end = rng.uniform(lo, hi), time.monotonic() + period
    while time.monotonic() < end:
        t0 = time.process_time()  # CPU time: the hog's demand is known even when it waits
        while time.process_time() - t0 < duty * slice_s:
            pass
        if duty < 1.0:
            time.sleep((1.0 - duty) * slice_s)
"""


def calibrate_cpu(seconds: float, probe_s: float = 0.3) -> int:
    """Iterations of ``workload.spin`` that take about ``seconds`` of CPU time here (timed on
    the process's CPU clock, so that a busy machine does not shrink N as wall time would)."""
    return calibrate(seconds, probe_s, clock=time.process_time)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine_busy_s() -> tuple[float, float]:
    """The machine's busy CPU seconds (/proc/stat cpu: user nice system irq softirq), as
    energymeter counts them (steal excluded), and its steal seconds (the hypervisor's)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    hz = os.sysconf("SC_CLK_TCK")
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hz, ticks[7] / hz


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def start_hog(args: argparse.Namespace) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOG, str(args.seed), str(args.hog_period),
                             str(args.hog_min), str(args.hog_max)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the hog did not start (exit status {proc.wait()})")
    return proc


def stop_hog(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(out: Path, variant: str, load: str, n: int) -> dict[str, Any]:
    """One ``energymeter run`` of the workload; its report's figures."""
    json_path = out / f".last-{os.getpid()}.json"
    argv = [sys.executable, "-m", "energymeter", "run", "--out", str(out), "--tag",
            f"variant={variant}", "--tag", f"load={load}", "-q", "--json", str(json_path),
            "--", sys.executable, "-c", WORK.format(n=n)]
    proc = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"energymeter run exited with {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}")
    report = json.loads(json_path.read_text())
    json_path.unlink()
    bases = report.get("energy_bases") or {}
    attribution = report.get("attribution") or {}
    cpu = report.get("cpu_attribution") or {}
    channels = [f"{c['id']} {c['source']}/{c['method']}"
                + (f" (TDP {c['meta']['tdp_w']} W, idle {c['meta']['idle_w']} W)"
                   if "tdp_w" in (c.get("meta") or {}) else "")
                for c in report.get("channels", []) if c.get("kind") == "cpu"]
    return {"channels": "; ".join(channels), "variant": variant, "load": load,
            "run_id": report["run_id"],
            "duration_s": report["duration_s"],
            "machine_j": (bases.get("machine") or {}).get("total_j"),
            "attributed_j": (bases.get("attributed") or {}).get("total_j"),
            "tree_cpu_s": cpu.get("tree_cpu_s"),
            "machine_busy_cpu_s": cpu.get("machine_busy_cpu_s"),
            "run_share": attribution.get("run_share"),
            "cpu_intervals": attribution.get("cpu_intervals"),
            "cpu_rule": attribution.get("cpu_rule"),
            "cpu_time_scale": attribution.get("cpu_time_scale")}


def compare(out: Path, basis: str) -> dict[str, dict[str, Any]]:
    """``energymeter compare --by tag:variant --format json --basis <basis>`` of one load."""
    argv = [sys.executable, "-m", "energymeter", "compare", "--by", "tag:variant",
            "--format", "json", "--basis", basis, str(out)]
    proc = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"energymeter compare exited with {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}")
    groups = {}
    for g in json.loads(proc.stdout):
        variant = g["key"].split("=", 1)[1]
        groups[variant] = {
            "n": g["energy_total_j_n"], "basis": g.get("basis"),
            "mean_j": g["energy_total_j"], "cv": g["energy_total_j_cv"],
            "rel_diff": g["energy_total_j_rel_diff"],
            "rel_diff_ci": [g["energy_total_j_rel_diff_ci_low"],
                            g["energy_total_j_rel_diff_ci_high"]],
            "p_value": g["energy_total_j_p_value"],
            "duration_s": g["duration_s"], "duration_cv": g["duration_s_cv"],
            "warnings": [w for w in g.get("warnings", []) if "estimated by a model" not in w]}
    return groups


def study(load: str, out: Path, n_big: int, args: argparse.Namespace) -> dict[str, Any]:
    """R interleaved repeats of both variants under one load; the load's figures."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"big": n_big, "small": int(round(n_big * args.ratio))}
    hog = start_hog(args) if load == "hog" else None
    try:
        before = {"loadavg": loadavg(), "busy_s": machine_busy_s(), "t": time.monotonic()}
        hog_cpu0 = proc_cpu_s(hog.pid) if hog else 0.0
        time.sleep(0.5 if hog else 0.0)  # the hog under way before the first run
        runs = []
        for r in range(args.repeats):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                runs.append(one_run(out, variant, load, sizes[variant]))
                print(f"  {load:5} {variant:5} #{r + 1}: {runs[-1]['duration_s']:.2f} s, "
                      f"machine {runs[-1]['machine_j']:.2f} J, attributed "
                      f"{runs[-1]['attributed_j']:.2f} J (share {runs[-1]['run_share']:.2f})",
                      flush=True)
        hog_cpu = (proc_cpu_s(hog.pid) - hog_cpu0) if hog else 0.0
        after = {"loadavg": loadavg(), "busy_s": machine_busy_s(), "t": time.monotonic()}
    finally:
        if hog is not None:
            stop_hog(hog)
    wall = after["t"] - before["t"]
    busy = after["busy_s"][0] - before["busy_s"][0]
    steal = after["busy_s"][1] - before["busy_s"][1]
    tree = sum(r["tree_cpu_s"] or 0.0 for r in runs)
    other = busy - tree - hog_cpu  # energymeter's own start-up and whoever else was running
    return {"sizes": sizes, "runs": runs, "wall_s": wall,
            "loadavg_before": before["loadavg"], "loadavg_after": after["loadavg"],
            "machine_busy_cores": busy / wall, "runs_cores": tree / wall,
            "hog_cores": hog_cpu / wall, "other_cores": other / wall,
            "steal_cores": steal / wall,
            "others_share_during_runs": statistics.fmean(
                1.0 - r["run_share"] for r in runs if r["run_share"] is not None),
            "by_variant": run_stats(runs),
            "compare": {basis: compare(out, basis) for basis in BASES}}


def cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else None


def run_stats(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant, from the reports: the workload's own CPU time (mean, CV) and the attributed
    energy per CPU second of it (mean, CV): how much of the attributed CV is the work's."""
    out = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant and r["tree_cpu_s"]]
        cpu = [r["tree_cpu_s"] for r in mine]
        per = [r["attributed_j"] / r["tree_cpu_s"] for r in mine]
        out[variant] = {"cpu_s": statistics.fmean(cpu), "cpu_cv": cv(cpu),
                        "attributed_w_per_cpu": statistics.fmean(per),
                        "attributed_w_per_cpu_cv": cv(per),
                        "share": statistics.fmean(r["run_share"] for r in mine)}
    return out


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x * 100:.{digits}f} %"


def pval(p: float | None) -> str:
    return "—" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def summarise(res: dict[str, Any], target_pp: float) -> dict[str, Any]:
    """CV differences: attributed under the hog against alone (and machine, for scale)."""
    loads = res["loads"]
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        cv = {(load, basis): loads[load]["compare"][basis][variant]["cv"]
              for load in LOADS for basis in BASES}
        row = {f"{basis}_{load}_cv": cv[(load, basis)] for load in LOADS for basis in BASES}
        row["attributed_hog_minus_alone_pp"] = (
            100 * (cv[("hog", "attributed")] - cv[("alone", "attributed")]))
        row["attributed_hog_minus_machine_alone_pp"] = (
            100 * (cv[("hog", "attributed")] - cv[("alone", "machine")]))
        row["machine_hog_minus_alone_pp"] = (
            100 * (cv[("hog", "machine")] - cv[("alone", "machine")]))
        row["within_target"] = abs(row["attributed_hog_minus_alone_pp"]) <= target_pp
        out[variant] = row
    return out


def print_tables(res: dict[str, Any]) -> None:
    loads = res["loads"]
    print(f"\nshared_machine.py, {res['date']}: {res['cpus']} CPUs ({res['cpu_model']}), "
          f"cpu channel {res['cpu_channel']}; N = {res['n_big']:,} (big), "
          f"{res['n_small']:,} (small); {res['repeats']} repeats each")
    print("\n| load | basis | variant | n | mean J | CV | vs big | p | mean s | s CV |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for load in LOADS:
        for basis in BASES:
            for variant in VARIANTS:
                g = loads[load]["compare"][basis][variant]
                diff = "—" if variant == "big" else f"{g['rel_diff'] * 100:+.1f} %"
                p = "—" if variant == "big" else pval(g["p_value"])
                print(f"| {load} | {basis} | {variant} | {g['n']} | {g['mean_j']:.2f} | "
                      f"{pct(g['cv'])} | {diff} | {p} | {g['duration_s']:.2f} | "
                      f"{pct(g['duration_cv'])} |")
    print("\nBackground: busy cores = the machine's busy CPU time / wall time over the load's "
          "runs; runs = their process trees'; other = the rest (energymeter itself and anyone "
          "else); others' share = mean over the runs of 1 − the run's share of busy CPU time")
    print("| load | wall s | loadavg before → after | busy cores | runs | hog | other | "
          "others' share | steal cores |")
    print("|---|---|---|---|---|---|---|---|---|")
    for load in LOADS:
        x = loads[load]
        print(f"| {load} | {x['wall_s']:.0f} | {' '.join(map(str, x['loadavg_before']))} → "
              f"{' '.join(map(str, x['loadavg_after']))} | {x['machine_busy_cores']:.2f} | "
              f"{x['runs_cores']:.2f} | {x['hog_cores']:.2f} | {x['other_cores']:.2f} | "
              f"{pct(x['others_share_during_runs'], 0)} | {x['steal_cores']:.2f} |")
    hog = res["hog"]
    print(f"hog: duty cycle {hog['duty_min']:g}–{hog['duty_max']:g} of a core, redrawn every "
          f"{hog['period_s']:g} s (seed {res['seed']}): {hog['expected_cores']:.2f} cores asked, "
          f"{loads['hog']['hog_cores']:.2f} used")
    print(f"\nCV differences, percentage points (target: attributed under the hog within "
          f"{res['target_pp']:g} points of alone)")
    print("| variant | attributed: hog − alone | attributed hog − machine alone | "
          "machine: hog − alone | within target |")
    print("|---|---|---|---|---|")
    for variant, row in res["cv_differences"].items():
        print(f"| {variant} | {row['attributed_hog_minus_alone_pp']:+.1f} | "
              f"{row['attributed_hog_minus_machine_alone_pp']:+.1f} | "
              f"{row['machine_hog_minus_alone_pp']:+.1f} | "
              f"{'yes' if row['within_target'] else 'NO'} |")
    print("\nThe work itself: its process tree's CPU time (the attributed basis follows it) and "
          "the attributed energy per CPU second (J/s: the attribution's own spread)")
    print("| load | variant | CPU s | CPU s CV | share of busy CPU | attributed J per CPU s | "
          "its CV |")
    print("|---|---|---|---|---|---|---|")
    for load in LOADS:
        for variant, x in loads[load]["by_variant"].items():
            print(f"| {load} | {variant} | {x['cpu_s']:.2f} | {pct(x['cpu_cv'])} | "
                  f"{pct(x['share'], 0)} | {x['attributed_w_per_cpu']:.2f} | "
                  f"{pct(x['attributed_w_per_cpu_cv'])} |")
    rules = sorted({r["cpu_rule"] for load in LOADS for r in loads[load]["runs"]})
    print(f"\nattribution rules used: {'; '.join(str(r) for r in rules)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="calibrate N so that the big variant takes about this much CPU time")
    ap.add_argument("--n", type=int, help="iterations of the big variant (skips calibration)")
    ap.add_argument("--ratio", type=float, default=0.6, help="small variant = ratio x N")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each variant per load")
    ap.add_argument("--hog-min", type=float, default=0.2, help="lowest duty cycle of the hog")
    ap.add_argument("--hog-max", type=float, default=1.0, help="highest duty cycle of the hog")
    ap.add_argument("--hog-period", type=float, default=0.5,
                    help="seconds between the hog's duty cycle changes")
    ap.add_argument("--seed", type=int, default=25, help="the hog's random seed")
    ap.add_argument("--target-pp", type=float, default=3.0,
                    help="'within a few points': CV difference allowed, percentage points")
    ap.add_argument("--keep", help="write the run directories here and keep them")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (a CV needs two runs)")
    if not 0.0 <= args.hog_min <= args.hog_max <= 1.0:
        ap.error("need 0 <= --hog-min <= --hog-max <= 1")
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="shared-bench-"))
    n_big = args.n or calibrate_cpu(args.seconds)
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
        "cpu_model": cpu_model(), "python": sys.version.split()[0],
        "n_big": n_big, "n_small": int(round(n_big * args.ratio)), "ratio": args.ratio,
        "repeats": args.repeats, "seed": args.seed, "target_pp": args.target_pp,
        "hog": {"duty_min": args.hog_min, "duty_max": args.hog_max,
                "period_s": args.hog_period, "slice_s": 0.01,
                "expected_cores": (args.hog_min + args.hog_max) / 2},
        "loads": {}}
    t0 = time.monotonic()
    try:
        for load in LOADS:
            print(f"{load}:", flush=True)
            res["loads"][load] = study(load, base / load, n_big, args)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    res["total_s"] = time.monotonic() - t0
    res["cpu_channel"] = res["loads"]["alone"]["runs"][0]["channels"]
    res["cv_differences"] = summarise(res, args.target_pp)
    print_tables(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
