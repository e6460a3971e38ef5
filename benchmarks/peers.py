"""energymeter against its peers (CodeCarbon, eco2ai), measured in one run.

    python -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install -e . codecarbon eco2ai 'pandas<3'  # eco2ai 0.3.12: pandas<3
    /tmp/peers-venv/bin/python benchmarks/peers.py                     # ~12 min on a 2-vCPU VM
    /tmp/peers-venv/bin/python benchmarks/peers.py --pairs 3 --loop-s 3 --tools energymeter,eco2ai

The peers are not dependencies of energymeter; a peer that does not import is skipped with the
reason. For every tool, at its default sampling interval and at a matched one (``--matched``,
1 s), it measures:

* cold start: a fresh interpreter per sample (``--cold TOOL`` child), timing the tool's import,
  tracker construction, first ``start()`` and ``stop()`` (and the process CPU they took);
* warm start/stop: later trackers in this process, rounds interleaved across tools;
* the CPU time of the tool's own threads and child processes while a pure-Python loop runs on
  the main thread: (process CPU + reaped children's CPU) - (main thread CPU), over the window
  from ``start()`` returning to ``stop()`` being called; and, apart, the CPU of the process and
  its children inside ``start()`` and ``stop()``. The same formula applies to every tool and to
  the bare loop (its noise floor). It counts threads that have already exited, which
  per-thread sampling (psutil ``threads()``) would miss: CodeCarbon's ``threading.Timer`` makes
  a new thread per tick, and eco2ai runs ``top`` in a child process per tick;
* the wall-time slowdown of that loop (timed on the main thread, inside the tracker window),
  against a bare run of the same loop, in pairs whose order alternates (ABBA) and which are
  interleaved across all tools and settings, so drift of a noisy VM hits all alike;
* the CPU energy each tool reports for that loop, and how it says it obtained it.

Prints tables; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workload import calibrate, spin  # noqa: E402

TOOLS = ("energymeter", "codecarbon", "eco2ai")
MODULE = {"energymeter": "energymeter", "codecarbon": "codecarbon", "eco2ai": "eco2ai"}
DEFAULT_INTERVAL_S = {"energymeter": 0.1, "codecarbon": 15.0, "eco2ai": 10.0}
KWH_J = 3.6e6


def quiet() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)


def import_tool(tool: str) -> Any:
    quiet()
    if tool == "energymeter":
        import energymeter

        return energymeter
    if tool == "codecarbon":
        import codecarbon
        from codecarbon import OfflineEmissionsTracker  # noqa: F401

        return codecarbon
    import eco2ai

    return eco2ai


def version(tool: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    for dist in (tool, f"{tool}-ml"):
        try:
            return dist_version(dist)
        except PackageNotFoundError:
            continue
    return getattr(sys.modules.get(MODULE[tool]), "__version__", "?")


class Run:
    """One tracker of one tool: ``start()``, ``stop()``, then ``cpu_energy()``."""

    def __init__(self, tool: str, interval_s: float | None, out: str) -> None:
        self.tool = tool
        if tool == "energymeter":
            from energymeter import measure

            kw = {} if interval_s is None else {"interval_s": interval_s}
            self.obj = measure("peers", out=out, region="SE", **kw)
        elif tool == "codecarbon":
            from codecarbon import OfflineEmissionsTracker

            kw = {} if interval_s is None else {"measure_power_secs": interval_s}
            self.obj = OfflineEmissionsTracker(country_iso_code="SWE", save_to_file=False,
                                               log_level="error", **kw)
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
        else:
            import eco2ai

            kw = {} if interval_s is None else {"measure_period": interval_s}
            self.obj = eco2ai.Tracker(project_name="peers", experiment_description="benchmark",
                                      file_name=str(Path(out) / "eco2ai.csv"),
                                      alpha_2_code="SE", ignore_warnings=True, **kw)

    def start(self) -> None:
        self.obj.start()

    def stop(self) -> None:
        self.obj.stop()

    def sampler_cpu_s(self) -> float | None:
        if self.tool == "energymeter":
            return float(self.obj.report.overhead["sampler_cpu_s"])
        return None

    def cpu_energy(self) -> tuple[float, str]:
        """CPU energy in J as the tool reports it, and how it says it got it."""
        if self.tool == "energymeter":
            report = self.obj.report
            joules, how = 0.0, []
            for ce in report.channels:
                if ce.channel.kind == "cpu":
                    joules += ce.energy_j
                    meta = ce.channel.meta
                    how.append(f"method={ce.channel.method}, TDP {meta.get('tdp_w')} W "
                               f"({meta.get('tdp_source')}), idle {meta.get('idle_w')} W")
            return joules, "; ".join(how) or "no cpu channel"
        if self.tool == "codecarbon":
            data = self.obj.final_emissions_data
            cpus = [h for h in getattr(self.obj, "_hardware", []) if type(h).__name__ == "CPU"]
            how = ", ".join(f"mode={getattr(h, '_mode', '?')}, TDP {getattr(h, '_tdp', '?')} W"
                            for h in cpus)
            return data.cpu_energy * KWH_J, f"{how} (+ RAM {data.ram_energy * KWH_J:.3g} J apart)"
        cpu = self.obj._cpu  # eco2ai keeps the CPU part only on its CPU object
        return cpu._consumption * KWH_J, (f"TDP {cpu.tdp()} W x `top` CPU% of this process "
                                          f"x {cpu.cpu_num()} device(s)")


def cpu_now() -> tuple[float, float, float]:
    """(process CPU incl. exited threads, reaped children's CPU, this thread's CPU)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), ch.ru_utime + ch.ru_stime, time.thread_time()


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has been busy (/proc/stat), for foreign load."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    busy = sum(fields[:8]) - fields[3] - fields[4]  # minus idle, iowait; guest is in user
    return busy / os.sysconf("SC_CLK_TCK")


def loop_run(tool: str | None, interval_s: float | None, n: int, out: str) -> dict[str, Any]:
    """The loop, bare (tool None) or inside a tracker.

    bg_cpu_s: CPU of every thread but the main one, plus reaped children, while the loop runs
    (from start() returning to stop() being called). edge_cpu_s: CPU of the whole process and
    its children inside start() and stop(). foreign: CPUs kept busy by other processes.
    """
    run = Run(tool, interval_s, out) if tool else None
    p0, c0, _ = cpu_now()
    if run:
        run.start()
    p1, c1, m1 = cpu_now()
    b1 = machine_busy_s()
    t0 = time.perf_counter()
    spin(n)
    loop_s = time.perf_counter() - t0
    b2 = machine_busy_s()
    p2, c2, m2 = cpu_now()
    if run:
        run.stop()
    p3, c3, _ = cpu_now()
    own = (p2 - p1) + (c2 - c1)
    res = {"loop_s": loop_s, "bg_cpu_s": own - (m2 - m1),
           "edge_cpu_s": (p1 - p0) + (c1 - c0) + (p3 - p2) + (c3 - c2),
           "foreign": max(0.0, (b2 - b1) - own) / loop_s}
    if run:
        res["energy_j"], res["how"] = run.cpu_energy()
        res["sampler_cpu_s"] = run.sampler_cpu_s()
    return res


def cold(tool: str, interval_s: float | None) -> None:
    """Child mode: one fresh interpreter, first tracker of the process."""
    out = tempfile.mkdtemp(prefix="peers-cold-")
    p0, c0, _ = cpu_now()
    t0 = time.perf_counter()
    import_tool(tool)
    t1 = time.perf_counter()
    run = Run(tool, interval_s, out)
    t2 = time.perf_counter()
    run.start()
    t3 = time.perf_counter()
    run.stop()
    t4 = time.perf_counter()
    p1, c1, _ = cpu_now()
    print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "start_s": t3 - t2,
                      "stop_s": t4 - t3, "cpu_s": (p1 - p0) + (c1 - c0)}))


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], scale: float = 1.0, fmt: str = ".3g") -> str:
    return (f"{med(values) * scale:{fmt}} ({min(values) * scale:{fmt}}–"
            f"{max(values) * scale:{fmt}})")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}" if b > 0 and a >= 0 else "n/a"


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description="energymeter against its peers, one run")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--pairs", type=int, default=5, help="ABBA pairs per tool and setting")
    ap.add_argument("--loop-s", type=float, default=10.0)
    ap.add_argument("--matched", type=float, default=1.0, help="matched interval for all tools")
    ap.add_argument("--cold-repeats", type=int, default=5)
    ap.add_argument("--latency-repeats", type=int, default=20)
    ap.add_argument("--cold", metavar="TOOL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    quiet()
    if args.cold:
        cold(args.cold, None)
        return

    tools = []
    for tool in args.tools.split(","):
        if tool not in TOOLS:
            print(f"skipping {tool}: no adapter in this script (known: {', '.join(TOOLS)})")
            continue
        try:
            import_tool(tool)
        except Exception as exc:  # noqa: BLE001 - any import failure means: skip this peer
            print(f"skipping {tool}: {type(exc).__name__}: {exc}")
            continue
        tools.append(tool)
    if "energymeter" not in tools:
        sys.exit("energymeter does not import; nothing to compare")
    out = tempfile.mkdtemp(prefix="peers-bench-")
    os.chdir(out)  # whatever a tool writes by default lands here
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"RAPL {'present' if Path('/sys/class/powercap/intel-rapl').exists() else 'absent'}; "
          + ", ".join(f"{t} {version(t)}" for t in tools))

    # Cold start: fresh interpreters, tools alternating.
    cold_res: dict[str, list[dict[str, float]]] = {t: [] for t in tools}
    for i in range(args.cold_repeats):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--cold", tool],
                                  capture_output=True, text=True, cwd=out)
            try:
                cold_res[tool].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                print(f"cold {tool} failed: {proc.stderr.strip()[-500:]}")

    # Warm start/stop: this process, after a first tracker of each tool.
    warm: dict[str, dict[str, list[float]]] = {t: {"start": [], "stop": []} for t in tools}
    for i in range(args.latency_repeats + 1):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            run = Run(tool, None, out)
            t0 = time.perf_counter()
            run.start()
            t1 = time.perf_counter()
            run.stop()
            t2 = time.perf_counter()
            if i:  # round 0 only warms caches
                warm[tool]["start"].append(t1 - t0)
                warm[tool]["stop"].append(t2 - t1)

    # Loop runs: ABBA pairs, interleaved over every (tool, setting).
    configs = [(t, s) for t in tools for s in ("default", "matched")]
    n = calibrate(args.loop_s, probe_s=0.5)
    res: dict[tuple[str, str], dict[str, list[Any]]] = {
        c: {"slow": [], "bg": [], "bare_bg": [], "edge": [], "energy": [], "sampler": [],
            "how": [], "foreign": []}
        for c in configs}
    for i in range(args.pairs):
        for tool, setting in configs[i % len(configs):] + configs[:i % len(configs)]:
            interval = None if setting == "default" else args.matched
            if i % 2:
                m = loop_run(tool, interval, n, out)
                b = loop_run(None, None, n, out)
            else:
                b = loop_run(None, None, n, out)
                m = loop_run(tool, interval, n, out)
            r = res[(tool, setting)]
            r["slow"].append(m["loop_s"] / b["loop_s"] - 1)
            r["bg"].append(m["bg_cpu_s"] / m["loop_s"])
            r["bare_bg"].append(b["bg_cpu_s"] / b["loop_s"])
            r["edge"].append(m["edge_cpu_s"])
            r["foreign"].extend([m["foreign"], b["foreign"]])
            r["energy"].append(m["energy_j"])
            r["how"].append(m["how"])
            if m["sampler_cpu_s"] is not None:
                r["sampler"].append(m["sampler_cpu_s"] / m["loop_s"])

    print(f"\nStart/stop latency, ms: cold = first tracker in a fresh interpreter, median of "
          f"{args.cold_repeats} (min–max); warm = later trackers in one process, median of "
          f"{args.latency_repeats} (min–max); default intervals")
    rows = [["tool", "import", "construct", "cold start()", "cold stop()",
             "cold CPU (import..stop)", "warm start()", "warm stop()"]]
    for t in tools:
        c = cold_res[t]
        if not c:
            rows.append([t] + ["failed"] * 5 + [spread(warm[t]["start"], 1e3, ".1f"),
                                                spread(warm[t]["stop"], 1e3, ".1f")])
            continue
        rows.append([t] + [spread([x[k] for x in c], 1e3, ".1f")
                           for k in ("import_s", "init_s", "start_s", "stop_s", "cpu_s")]
                    + [spread(warm[t]["start"], 1e3, ".1f"),
                       spread(warm[t]["stop"], 1e3, ".1f")])
    table(rows)

    print(f"Loop of {args.loop_s:g} s (n={n}), {args.pairs} ABBA pairs per row, median "
          "(min–max). tool CPU = CPU of the tool's threads and child processes while the loop "
          "runs, % of the loop's wall time (bare: same formula on the bare loop); start+stop = "
          "CPU of the process and children inside start() and stop(); foreign = CPUs busy "
          "with other processes during the loops (median, max)")
    rows = [["tool", "interval", "tool CPU %", "bare %", "self-reported %", "start+stop CPU ms",
             "loop slowdown %", "CPU energy J", "how the tool says it got it", "foreign"]]
    for tool, setting in configs:
        r = res[(tool, setting)]
        interval = DEFAULT_INTERVAL_S[tool] if setting == "default" else args.matched
        hows = sorted(set(r["how"]))
        rows.append([tool, f"{interval:g} s ({setting})", spread(r["bg"], 100, ".3f"),
                     f"{med(r['bare_bg']) * 100:.3f}",
                     spread(r["sampler"], 100, ".3f") if r["sampler"] else "—",
                     spread(r["edge"], 1e3, ".1f"), spread(r["slow"], 100, "+.2f"),
                     spread(r["energy"]), " / ".join(hows),
                     f"{med(r['foreign']):.2f} ({max(r['foreign']):.2f})"])
    table(rows)

    em = "energymeter"
    rows = [["quantity", *[f"energymeter / {p}" for p in tools if p != em]]]
    peers = [p for p in tools if p != em]
    if peers:
        def cold_med(t: str, k: str) -> float:
            return med([x[k] for x in cold_res[t]]) if cold_res[t] else float("nan")

        rows.append(["cold import + construct + start()", *[
            ratio(sum(cold_med(em, k) for k in ("import_s", "init_s", "start_s")),
                  sum(cold_med(p, k) for k in ("import_s", "init_s", "start_s")))
            for p in peers]])
        rows.append(["cold start()", *[ratio(cold_med(em, "start_s"), cold_med(p, "start_s"))
                                       for p in peers]])
        rows.append(["warm start()", *[ratio(med(warm[em]["start"]), med(warm[p]["start"]))
                                       for p in peers]])
        rows.append(["warm stop()", *[ratio(med(warm[em]["stop"]), med(warm[p]["stop"]))
                                      for p in peers]])
        for setting in ("default", "matched"):
            rows.append([f"tool CPU during the loop, {setting} intervals", *[
                ratio(med(res[(em, setting)]["bg"]), med(res[(p, setting)]["bg"]))
                for p in peers]])
            rows.append([f"CPU in start() + stop(), {setting} intervals", *[
                ratio(med(res[(em, setting)]["edge"]), med(res[(p, setting)]["edge"]))
                for p in peers]])
            rows.append([f"loop slowdown, {setting} intervals (difference, points)", *[
                f"{(med(res[(em, setting)]['slow']) - med(res[(p, setting)]['slow'])) * 100:+.2f}"
                for p in peers]])
            rows.append([f"CPU energy reported, {setting} intervals", *[
                ratio(med(res[(em, setting)]["energy"]), med(res[(p, setting)]["energy"]))
                for p in peers]])
        print("Ratios energymeter / peer (below 1: energymeter lower); slowdowns as differences")
        table(rows)


if __name__ == "__main__":
    main()
