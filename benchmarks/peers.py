"""energymeter against its peers, measured in one run: CodeCarbon, Zeus, carbontracker, eco2ai,
perun and pyJoules.

    python benchmarks/peers.py                          # makes a venv in a temp dir (~9 min)
    python benchmarks/peers.py --venv /tmp/peers-venv   # makes or reuses that venv
    python benchmarks/peers.py --quick --tools energymeter,zeus   # a short smoke run
    python benchmarks/peers.py --json results.json      # also write every figure as JSON

The peers are never dependencies of energymeter: the script makes a virtual environment (a temp
dir, or ``--venv PATH``), installs energymeter from this checkout (``-e``) and the pinned peers
there (``PINS``, with ``EXTRA_REQS``: what eco2ai 0.3.12 and Zeus need), and runs itself again
with that environment's Python. A pin that does not install is reported and the nearest
release that does is used; a peer that does not install, import or run degrades to a row saying
why.

Every figure comes from child processes (one fresh interpreter per sample), tools interleaved
(their order rotates from one round to the next), so drift of a noisy VM hits all alike:

* **latency**: import, first ``start()`` (construction included), ``stop()``, later starts and
  stops in the same process, and the CPU of that cold sequence;
* **phases**: the tool's own region API inside a running tracker (energymeter ``phase()``,
  CodeCarbon ``start_task``/``stop_task``, Zeus ``begin_window``/``end_window``,
  carbontracker ``epoch_start``/``epoch_end``, perun ``@monitor`` regions, pyJoules
  ``record()`` twice); eco2ai has none;
* **sampler CPU**: the CPU of the tool's threads and child processes (process CPU - main
  thread CPU + descendants' CPU, live ones through /proc and reaped ones through
  ``RUSAGE_CHILDREN``) while the main thread sleeps, at the tool's default interval and at
  100 Hz where the tool takes an interval;
* **wrapper**: wall time a command-line wrapper adds to ``true`` (``energymeter run``,
  ``codecarbon monitor --offline``, ``perun monitor --binary``, ``carbontracker``), in
  ABBA-ordered pairs with a bare ``true``;
* **accuracy, RAPL**: a simulated powercap tree (``tests/fakes/powercap.py``) bind-mounted *at the
  real path* ``/sys/class/powercap`` in a private mount namespace (``unshare --mount``; needs
  root), so every tool reads it where it reads real RAPL, whatever it allows configuring:
  steady power, 10 ms bursts, and counters that wrap every 3 s. The truth is the fake's exact
  integral, bracketed by the window the tool could have measured: from the end of ``start()``
  to the call of ``stop()`` (inner) and from the call of ``start()`` to the end of ``stop()``
  (outer);
* **accuracy, NVML**: a module named ``pynvml`` put first on ``sys.path`` for the child,
  backed by ``tests.fakes.nvml.FakeNVML`` (one simulated H100; the calls the fake lacks
  answer NotSupported), steady power and 10 ms bursts. Every tool imports ``pynvml``.

``--slowdown`` adds the older measurement: the wall-time slowdown of a pure-Python loop under
each tool, in ABBA pairs against the bare loop (long; not part of ``run_all.py``).

Prints tables; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from workload import calibrate, spin  # noqa: E402

TOOLS = ("energymeter", "codecarbon", "zeus", "carbontracker", "eco2ai", "perun", "pyjoules")
PINS = {"codecarbon": "codecarbon==3.3.2", "zeus": "zeus==0.16.0",
        "carbontracker": "carbontracker==2.4.7", "eco2ai": "eco2ai==0.3.12",
        "perun": "perun==1.0.0", "pyjoules": "pyJoules==0.5.1"}
# eco2ai 0.3.12: its stop() fails with pandas 3 ('N/A' in a float column), and it imports
# pkg_resources (gone from setuptools 81). torch: Zeus's monitor imports it wherever it sees a
# GPU (the simulated NVML), and then refuses a build without CUDA, so Zeus has no NVML figure
# here; the CPU build keeps the venv small. No tool imports torch otherwise.
EXTRA_REQS = ["pandas<3", "setuptools<81", "torch==2.13.0"]
DIST = {"energymeter": "energymeter-ml", "codecarbon": "codecarbon", "zeus": "zeus",
        "carbontracker": "carbontracker", "eco2ai": "eco2ai", "perun": "perun",
        "pyjoules": "pyJoules"}
MODULE = {"energymeter": "energymeter", "codecarbon": "codecarbon", "zeus": "zeus.monitor",
          "carbontracker": "carbontracker.tracker", "eco2ai": "eco2ai", "perun": "perun",
          "pyjoules": "pyJoules.energy_meter"}
# The interval each tool samples at by default (None: it has no sampler; it reads counters at
# the window's edges), and whether it takes an interval at all.
DEFAULT_INTERVAL_S: dict[str, float | None] = {
    "energymeter": 0.1, "codecarbon": 15.0, "zeus": None, "carbontracker": 1.0,
    "eco2ai": 10.0, "perun": 1.0, "pyjoules": None}
FAST_S = 0.01  # "100 Hz"
KWH_J = 3.6e6
PHASE_API = {"energymeter": "phase()", "codecarbon": "start_task()/stop_task()",
             "zeus": "begin_window()/end_window()", "carbontracker": "epoch_start()/epoch_end()",
             "eco2ai": None, "perun": "@perun.monitor region", "pyjoules": "record() x2"}
NO_WRAPPER = {"zeus": "none: `python -m zeus.monitor energy` measures until Ctrl-C, runs no "
                      "command",
              "eco2ai": "none (library only)", "pyjoules": "none (library only)"}
SCENARIOS = ("steady", "bursts", "wraps")
NVML_SCENARIOS = ("steady", "bursts")


def quiet() -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    for name in ("codecarbon", "perun", "zeus", "carbontracker", "eco2ai"):
        logging.getLogger(name).setLevel(logging.ERROR)


def version(tool: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DIST[tool])
    except PackageNotFoundError:
        return "not installed"


# -- the tools ----------------------------------------------------------------------------------
class Adapter:
    """One tracker of one tool: ``run(body)`` measures ``body`` and times the edges; then
    ``energy()``. ``interval_s`` None: the tool's default."""

    tool = ""

    def __init__(self, out: str, interval_s: float | None = None) -> None:
        self.out = out
        self.interval_s = interval_s

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def run(self, body: Callable[[], None]) -> tuple[float, float, float, float]:
        """(call of start, start returned, body returned, stop returned), perf_counter s."""
        t0 = time.perf_counter()
        self.start()
        t1 = time.perf_counter()
        body()
        t2 = time.perf_counter()
        self.stop()
        return t0, t1, t2, time.perf_counter()

    def phase(self) -> None:
        """One region entered and left, inside a running tracker."""
        raise NotImplementedError

    def energy(self) -> dict[str, Any]:
        """J by kind (cpu = CPU package, dram, gpu; None: not reported) and how it says."""
        raise NotImplementedError


class Energymeter(Adapter):
    tool = "energymeter"

    def start(self) -> None:
        from energymeter import measure

        kw = {} if self.interval_s is None else {"interval_s": self.interval_s}
        self.m = measure("peers", out=self.out, region="SE", **kw)
        self.m.start()

    def stop(self) -> None:
        self.m.stop()

    def phase(self) -> None:
        with self.m.phase("p"):
            pass

    def energy(self) -> dict[str, Any]:
        res: dict[str, Any] = {"cpu": None, "dram": None, "gpu": None}
        how = set()
        for ce in self.m.report.channels:
            kind = ce.channel.kind
            if kind in res and ce.channel.part_of is None:
                res[kind] = (res[kind] or 0.0) + ce.energy_j
                how.add(f"{kind}: {ce.channel.source}/{ce.channel.method}")
        res["how"] = ", ".join(sorted(how)) or "no channel"
        res["sampler_cpu_s"] = self.m.report.overhead["sampler_cpu_s"]
        return res


class CodeCarbon(Adapter):
    tool = "codecarbon"

    def start(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        kw = {} if self.interval_s is None else {"measure_power_secs": self.interval_s}
        self.t = OfflineEmissionsTracker(country_iso_code="SWE", save_to_file=False,
                                         log_level="error", **kw)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.t.start()

    def stop(self) -> None:
        self.t.stop()

    def phase(self) -> None:
        self.t.start_task("p")
        self.t.stop_task()

    def energy(self) -> dict[str, Any]:
        d = self.t.final_emissions_data
        cpus = [h for h in getattr(self.t, "_hardware", []) if type(h).__name__ == "CPU"]
        how = ", ".join(f"cpu mode={getattr(h, '_mode', '?')}" for h in cpus)
        return {"cpu": d.cpu_energy * KWH_J, "dram": None,
                "gpu": d.gpu_energy * KWH_J if d.gpu_energy else None,
                "how": f"{how}; RAM {d.ram_energy * KWH_J:.3g} J (modelled) apart"}


class Zeus(Adapter):
    tool = "zeus"

    def start(self) -> None:
        from zeus.monitor import ZeusMonitor

        self.m = ZeusMonitor()
        self.m.begin_window("run")

    def stop(self) -> None:
        self.meas = self.m.end_window("run")

    def phase(self) -> None:
        self.m.begin_window("p")
        self.m.end_window("p")

    def energy(self) -> dict[str, Any]:
        m = self.meas

        def total(d: dict[int, float] | None) -> float | None:
            return None if not d else float(sum(d.values()))

        return {"cpu": total(m.cpu_energy), "dram": total(m.dram_energy),
                "gpu": total(m.gpu_energy),
                "how": "RAPL / NVML counters at the window's edges (+ a wrap-polling process)"}


class CarbonTracker(Adapter):
    tool = "carbontracker"

    def start(self) -> None:
        from carbontracker.tracker import CarbonTracker as CT

        kw = {} if self.interval_s is None else {"update_interval": self.interval_s}
        self.t = CT(epochs=10**6, epochs_before_pred=0, log_dir=self.out, verbose=0, **kw)
        self.t.epoch_start()

    def stop(self) -> None:
        self.t.epoch_end()
        thread = self.t.tracker
        self.per = {c.name: float(c.energy_usage(thread.epoch_times)[-1]) * KWH_J
                    for c in thread.components}
        self.t.stop()

    def phase(self) -> None:
        self.t.epoch_end()
        self.t.epoch_start()

    def energy(self) -> dict[str, Any]:
        # components: "cpu" (RAPL package and DRAM zones together) and "gpu"; without PUE
        return {"cpu": self.per.get("cpu"), "dram": None, "gpu": self.per.get("gpu"),
                "how": "mean of 1 s power samples x epoch time; components "
                       + ", ".join(sorted(self.per))}


class Eco2ai(Adapter):
    tool = "eco2ai"

    def start(self) -> None:
        import eco2ai

        kw = {} if self.interval_s is None else {"measure_period": self.interval_s}
        self.t = eco2ai.Tracker(project_name="peers", experiment_description="benchmark",
                                file_name=str(Path(self.out) / "eco2ai.csv"),
                                alpha_2_code="SE", ignore_warnings=True, **kw)
        self.t.start()

    def stop(self) -> None:
        self.t.stop()

    def energy(self) -> dict[str, Any]:
        cpu, gpu = self.t._cpu, self.t._gpu
        return {"cpu": cpu._consumption * KWH_J, "dram": None,
                "gpu": gpu._consumption * KWH_J if gpu.is_gpu_available else None,
                "how": f"TDP {cpu.tdp()} W x `top` CPU% of this process"}


class Perun(Adapter):
    tool = "perun"

    def run(self, body: Callable[[], None]) -> tuple[float, float, float, float]:
        import perun

        marks: list[float] = []
        self.node = None

        def keep(node: Any) -> None:
            self.node = node

        def app() -> None:
            marks.append(time.perf_counter())
            body()
            marks.append(time.perf_counter())
            perun.register_callback(keep)

        kw = {} if self.interval_s is None else {"sampling_period": self.interval_s}
        t0 = time.perf_counter()
        perun.perun(data_out=str(Path(self.out) / "perun"), **kw)(app)()
        t3 = time.perf_counter()
        if len(marks) != 2:
            raise RuntimeError("perun did not run the function")
        return t0, marks[0], marks[1], t3

    def phase(self) -> None:
        import perun

        perun.monitor("p")(_noop)()

    def energy(self) -> dict[str, Any]:
        from perun.data_model.data import MetricType

        if self.node is None:
            raise RuntimeError("perun called no callback with its data")
        found: dict[str, float] = {}

        def walk(node: Any) -> None:
            for key, kind in ((MetricType.CPU_ENERGY, "cpu"), (MetricType.DRAM_ENERGY, "dram"),
                              (MetricType.GPU_ENERGY, "gpu")):
                metric = (node.metrics or {}).get(key)
                if metric is not None and kind not in found:
                    found[kind] = float(metric.value)
            for child in (node.nodes or {}).values():
                walk(child)

        walk(self.node)
        return {**{k: found.get(k) for k in ("cpu", "dram", "gpu")},
                "how": "sampled counters (powercap, NVML) in a monitoring subprocess"}


class PyJoules(Adapter):
    tool = "pyjoules"

    def start(self) -> None:
        from pyJoules.device.device_factory import DeviceFactory
        from pyJoules.energy_meter import EnergyMeter

        self.m = EnergyMeter(DeviceFactory.create_devices())
        self.m.start("run")

    def stop(self) -> None:
        self.m.stop()

    def phase(self) -> None:
        self.m.record("p")
        self.m.record("run")

    def energy(self) -> dict[str, Any]:
        res: dict[str, Any] = {"cpu": None, "dram": None, "gpu": None}
        for sample in self.m.get_trace():
            for domain, value in sample.energy.items():
                kind = ("cpu" if domain.startswith("package") else "dram"
                        if domain.startswith("dram") else "gpu"
                        if domain.startswith("nvidia") else None)
                if kind:  # RAPL domains in uJ, NVIDIA in mJ
                    res[kind] = (res[kind] or 0.0) + value / (1e3 if kind == "gpu" else 1e6)
        res["how"] = "counter difference start..stop (no wrap handling)"
        return res


ADAPTERS: dict[str, type[Adapter]] = {a.tool: a for a in (
    Energymeter, CodeCarbon, Zeus, CarbonTracker, Eco2ai, Perun, PyJoules)}


def _noop() -> None:
    return None


def load_fake(name: str) -> Any:
    """``tests/fakes/<name>.py`` of this checkout, loaded by path: a peer (Zeus) installs a
    top-level package named ``tests`` that would shadow the repository's."""
    import importlib.util

    modname = f"peers_fake_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, REPO / "tests" / "fakes" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


def import_tool(tool: str) -> None:
    quiet()
    __import__(MODULE[tool])
    if tool == "codecarbon":
        from codecarbon import OfflineEmissionsTracker  # noqa: F401
    if tool == "pyjoules":
        from pyJoules.device.device_factory import DeviceFactory  # noqa: F401


# -- CPU accounting -----------------------------------------------------------------------------
def _proc_cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_now() -> dict[str, float]:
    """Process CPU (all threads, exited ones too), this thread's CPU, and the CPU of every
    descendant process: live ones from /proc (with what they reaped), reaped ones from
    RUSAGE_CHILDREN."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids = sum(_proc_cpu_s(p) for p in _descendants(os.getpid()))
    return {"proc": time.process_time(), "main": time.thread_time(),
            "children": ch.ru_utime + ch.ru_stime + kids}


def bg_cpu_s(a: dict[str, float], b: dict[str, float]) -> float:
    """CPU of every thread but the main one, and of descendant processes, between a and b."""
    return (b["proc"] - a["proc"]) - (b["main"] - a["main"]) + (b["children"] - a["children"])


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has been busy (/proc/stat), for foreign load."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    busy = sum(fields[:8]) - fields[3] - fields[4]  # minus idle, iowait; guest is in user
    return busy / os.sysconf("SC_CLK_TCK")


# -- child modes (one fresh interpreter each) ---------------------------------------------------
def child_latency(spec: dict[str, Any]) -> dict[str, Any]:
    tool, out = spec["tool"], spec["out"]
    c0 = cpu_now()
    t0 = time.perf_counter()
    import_tool(tool)
    t_import = time.perf_counter() - t0
    a = ADAPTERS[tool](out)
    s0, s1, s2, s3 = a.run(_noop)
    c1 = cpu_now()
    res: dict[str, Any] = {
        "import_s": t_import, "first_start_s": s1 - s0, "first_stop_s": s3 - s2,
        "cold_cpu_s": (c1["proc"] - c0["proc"]) + (c1["children"] - c0["children"])}
    try:
        e = a.energy()
        res["energy_ok"] = True
    except Exception as exc:  # noqa: BLE001 - the tool's own failure is the result
        e = {}
        res["energy_error"] = f"{type(exc).__name__}: {exc}"
    res["how"] = e.get("how")
    starts, stops = [], []
    for _ in range(spec.get("later", 3)):
        b = ADAPTERS[tool](out)
        s0, s1, s2, s3 = b.run(_noop)
        starts.append(s1 - s0)
        stops.append(s3 - s2)
    res["later_start_s"], res["later_stop_s"] = starts, stops
    if spec.get("phases") and PHASE_API[tool]:
        res["phase_s"] = phase_cost(tool, out, spec["phases"])
    return res


def phase_cost(tool: str, out: str, n: int) -> float:
    """Median seconds per enter+exit over blocks of ``n`` phases (a block stops after 1 s)."""
    a = ADAPTERS[tool](out)
    per: list[float] = []

    def body() -> None:
        for _ in range(5):
            t0 = time.perf_counter()
            k = 0
            while k < n and (k < 3 or time.perf_counter() - t0 < 1.0):
                a.phase()
                k += 1
            per.append((time.perf_counter() - t0) / k)

    a.run(body)
    return statistics.median(per)


def child_share(spec: dict[str, Any]) -> dict[str, Any]:
    """The tool's own CPU while the main thread sleeps for ``window_s``."""
    tool, out = spec["tool"], spec["out"]
    import_tool(tool)
    a = ADAPTERS[tool](out, spec.get("interval_s"))
    marks: dict[str, Any] = {}

    def body() -> None:
        marks["c0"], marks["w0"] = cpu_now(), time.perf_counter()
        time.sleep(spec["window_s"])
        marks["c1"], marks["w1"] = cpu_now(), time.perf_counter()

    a.run(body)
    wall = marks["w1"] - marks["w0"]
    res = {"share": bg_cpu_s(marks["c0"], marks["c1"]) / wall, "window_s": wall}
    if tool == "energymeter":
        e = a.energy()
        res["self_reported"] = e["sampler_cpu_s"] / wall
    return res


def child_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """The older slowdown measure: the loop, bare (tool None) or inside a tracker."""
    tool, n = spec["tool"], spec["n"]
    marks: dict[str, Any] = {}

    def body() -> None:
        marks["c0"], marks["b0"], marks["w0"] = cpu_now(), machine_busy_s(), time.perf_counter()
        spin(n)
        marks["w1"], marks["b1"], marks["c1"] = time.perf_counter(), machine_busy_s(), cpu_now()

    if tool:
        import_tool(tool)
        ADAPTERS[tool](spec["out"], spec.get("interval_s")).run(body)
    else:
        body()
    loop_s = marks["w1"] - marks["w0"]
    own = bg_cpu_s(marks["c0"], marks["c1"]) + (marks["c1"]["main"] - marks["c0"]["main"])
    return {"loop_s": loop_s, "bg": bg_cpu_s(marks["c0"], marks["c1"]) / loop_s,
            "foreign": max(0.0, (marks["b1"] - marks["b0"]) - own) / loop_s}


def _mount_fake_powercap(root: Path, scratch: Path) -> None:
    """Inside a private mount namespace: /sys/class becomes a tmpfs holding bind mounts of its
    former entries, plus ``powercap`` = ``root``; /sys/devices/virtual/powercap (where a real
    tree lives) is hidden."""
    orig = scratch / "orig-class"
    orig.mkdir()
    script = f"""set -e
mount --make-rprivate /
mount --bind /sys/class {orig}
mount -t tmpfs tmpfs /sys/class
for e in $(ls {orig}); do
  [ "$e" = powercap ] && continue
  mkdir /sys/class/$e && mount --bind {orig}/$e /sys/class/$e
done
mkdir /sys/class/powercap && mount --bind {root} /sys/class/powercap
if [ -d /sys/devices/virtual/powercap ]; then mount -t tmpfs tmpfs /sys/devices/virtual/powercap; fi
"""
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"cannot mount the fake tree at /sys/class/powercap: "
                           f"{proc.stderr.strip()}")


def _burst_w(high: float, low: float) -> Callable[[float], float]:
    """``high`` W for 10 ms at the start of every 100 ms, ``low`` W otherwise."""
    return lambda t: high if (t % 0.1) < 0.01 else low


def child_accuracy(spec: dict[str, Any]) -> dict[str, Any]:
    """One tool, one scenario, on the fake powercap tree at /sys/class/powercap (RAPL) or on
    the fake NVML (``source`` nvml). Runs in its own mount namespace."""
    tool, out, scenario, window = spec["tool"], spec["out"], spec["scenario"], spec["window_s"]
    FakePowercap = load_fake("powercap").FakePowercap

    scratch = Path(tempfile.mkdtemp(prefix="peers-acc-"))
    res: dict[str, Any] = {}
    fake = None
    truth: Callable[[], dict[str, float]]
    if spec["source"] == "rapl":
        kw: dict[str, Any] = {}
        if scenario == "bursts":
            kw["power_w"] = {"package-0": _burst_w(100.0, 10.0)}
        elif scenario == "wraps":  # 120 J range: at 40 W a wrap every 3 s, the first at 0.5 s
            kw["max_energy_range_uj"] = {"package-0": 120_000_000}
            kw["initial_energy_uj"] = {"package-0": 100_000_000}
        fake = FakePowercap(scratch / "powercap", **kw)
        # Real sysfs has <control type>/subsystem -> /sys/class/powercap; CodeCarbon needs it.
        ctl = fake.root / ".sysfs-devices" / "intel-rapl"
        os.symlink(os.path.relpath(fake.root, ctl), ctl / "subsystem")
        _mount_fake_powercap(fake.root, scratch)
        fake.start(period_s=0.002)
        f = fake

        def truth() -> dict[str, float]:
            return {"cpu": f.true_energy_j("package-0"), "dram": f.true_energy_j("dram")}
    else:
        import pynvml  # the shim: first on sys.path

        nv = pynvml._FAKE

        def truth() -> dict[str, float]:
            t = nv.elapsed_s()
            return {"gpu": nv.energy_j(0, 0.0, t, steps=max(2000, int(t * 2000)))}

    t_imp = time.perf_counter()
    import_tool(tool)
    res["import_s"] = time.perf_counter() - t_imp
    a = ADAPTERS[tool](out)
    marks: dict[str, Any] = {}

    def body() -> None:
        marks["in"] = truth()
        time.sleep(window)
        marks["out"] = truth()

    marks["call"] = truth()
    s0, s1, s2, s3 = a.run(body)
    marks["ret"] = truth()
    if fake is not None:
        fake.stop()
    res["first_start_s"], res["stop_s"] = s1 - s0, s3 - s2
    e = a.energy()
    res["how"] = e.get("how")
    for kind in (("cpu", "dram") if spec["source"] == "rapl" else ("gpu",)):
        res[kind] = {"reported": e.get(kind),
                     "inner": marks["out"][kind] - marks["in"][kind],
                     "outer": marks["ret"][kind] - marks["call"][kind]}
    return res


CHILD = {"latency": child_latency, "share": child_share, "loop": child_loop,
         "accuracy": child_accuracy}


def child_main(spec: dict[str, Any]) -> None:
    quiet()
    os.chdir(spec["out"])  # whatever a tool writes by default lands there
    res = CHILD[spec["mode"]](spec)
    sys.stdout.flush()
    os.write(1, ("\nPEERS-RESULT " + json.dumps(res) + "\n").encode())
    os._exit(0)  # some tools leave non-daemon threads or atexit hooks behind


# -- the parent ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, out: Path, shim_dir: Path | None, timeout_s: float) -> None:
        self.out = out
        self.shim_dir = shim_dir
        self.timeout_s = timeout_s
        self.log: list[str] = []

    def child(self, spec: dict[str, Any], unshare: bool = False,
              nvml: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one child; its result, or {"error": why}."""
        work = Path(tempfile.mkdtemp(prefix="peers-run-", dir=self.out))
        spec = {**spec, "out": str(work)}
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        if unshare:
            argv = ["unshare", "--mount", "--propagation", "private", *argv]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPATH"] = str(REPO)
        if nvml is not None and self.shim_dir is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.shim_dir), str(REPO)])
            env.update(nvml)
        try:
            stdout, stderr, code, _ = run_isolated(argv, cwd=work, env=env,
                                                   timeout_s=self.timeout_s)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if code is None:
            return {"error": f"timed out after {self.timeout_s:g} s"}
        for line in reversed(stdout.splitlines()):
            if line.startswith("PEERS-RESULT "):
                return json.loads(line[len("PEERS-RESULT "):])
        why = _last_error(stderr + stdout) or f"exit status {code}"
        self.log.append(f"{spec['mode']} {spec['tool']}: {why}")
        return {"error": why}


def run_isolated(argv: list[str], *, cwd: Path | str, env: dict[str, str] | None = None,
                 timeout_s: float = 120.0) -> tuple[str, str, int | None, float]:
    """Run ``argv`` in its own process group with its output in files, then kill whatever the
    group left behind: perun's multiprocessing workers (and other tools' helpers) outlive a
    child that ends with ``os._exit``, and would both hold a pipe open (hanging
    ``subprocess.run``) and burn CPU during later measurements. (stdout, stderr, exit status
    or None when it timed out, seconds from the start to the exit of ``argv``.)"""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd,
                                env=env, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        wall_s = time.perf_counter() - t0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), code, wall_s


def _last_error(text: str) -> str:
    """The exception line of a traceback (or the last non-empty line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Exit")) or head.startswith("NVMLError"):
            return ln[:300]
    return lines[-1][:300] if lines else ""


def rotate(items: list[Any], i: int) -> list[Any]:
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_ms(values: list[float], digits: int = 1) -> str:
    if not values:
        return "—"
    return (f"{med(values) * 1e3:.{digits}f} ({min(values) * 1e3:.{digits}f}–"
            f"{max(values) * 1e3:.{digits}f})")


def ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b <= 0 or a < 0:  # NaN or nothing to divide by
        return "n/a"
    return f"{a / b:.3g}"


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(flush=True)


SHIM = '''"""pynvml for the peers benchmark: tests.fakes.nvml.FakeNVML with one simulated GPU whose
power PEERS_NVML_WATTS gives (watts, or "burst:HIGH:LOW": HIGH for 10 ms of every 100 ms).
Calls the fake lacks answer NVMLError_NotSupported; NVML_* constants it lacks come from
nvidia-ml-py."""
import importlib.util
import os
import sys

_spec = importlib.util.spec_from_file_location(
    "peers_fake_nvml", os.path.join({repo!r}, "tests", "fakes", "nvml.py"))
_nvml = importlib.util.module_from_spec(_spec)
sys.modules["peers_fake_nvml"] = _nvml
_spec.loader.exec_module(_nvml)

_watts = os.environ.get("PEERS_NVML_WATTS", "200")
if _watts.startswith("burst:"):
    _hi, _lo = (float(x) for x in _watts.split(":")[1:])
    _power = lambda t: _hi if (t % 0.1) < 0.01 else _lo  # noqa: E731
else:
    _power = float(_watts)
_FAKE = _nvml.FakeNVML([_nvml.FakeGPU(power_w=_power, counter_period_s=0.001)])

for _path in sys.path[1:]:
    _real = os.path.join(_path, "pynvml.py")
    if _path and os.path.abspath(_path) != os.path.dirname(os.path.abspath(__file__)) \\
            and os.path.isfile(_real):
        _s = importlib.util.spec_from_file_location("_real_pynvml", _real)
        _m = importlib.util.module_from_spec(_s)
        sys.modules["_real_pynvml"] = _m  # it looks itself up there
        try:
            _s.loader.exec_module(_m)
        except Exception:
            break
        for _k, _v in vars(_m).items():
            if _k.startswith("NVML_") and isinstance(_v, int):
                globals().setdefault(_k, _v)
        break

for _k in dir(_FAKE):
    if _k.startswith(("nvml", "NVML")):
        globals()[_k] = getattr(_FAKE, _k)
for _k in dir(_nvml):
    if _k.startswith("NVMLError"):
        globals()[_k] = getattr(_nvml, _k)
NVMLError = _nvml.NVMLError


def nvmlSystemGetCudaDriverVersion():
    return 12040


nvmlSystemGetCudaDriverVersion_v2 = nvmlSystemGetCudaDriverVersion


def nvmlDeviceGetPowerManagementLimit(handle):
    return nvmlDeviceGetEnforcedPowerLimit(handle)


nvmlDeviceGetPowerManagementDefaultLimit = nvmlDeviceGetPowerManagementLimit


def nvmlDeviceGetPowerManagementLimitConstraints(handle):
    return (100_000, nvmlDeviceGetEnforcedPowerLimit(handle))


def nvmlDeviceGetIndex(handle):
    return handle.index


def nvmlDeviceGetCudaComputeCapability(handle):
    return (9, 0)


def _nvmlGetFunctionPointer(name):  # Zeus tells nvidia-ml-py from look-alikes by this
    raise _nvml.NVMLError_NotSupported()


def __getattr__(name):
    if name.startswith("nvml"):
        def unsupported(*args, **kwargs):
            raise _nvml.NVMLError_NotSupported()
        return unsupported
    raise AttributeError(name)
'''


def install(venv: Path, tools: list[str]) -> dict[str, str]:
    """Install energymeter (-e) and the pinned peers; {tool: what was installed or why not}."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    marker = venv / "peers-installed.json"
    wanted = sorted(PINS[t] for t in tools if t in PINS) + EXTRA_REQS
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("wanted") == wanted:
            return done["status"]
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    status: dict[str, str] = {}
    t0 = time.perf_counter()
    proc = subprocess.run([*pip, "-e", str(REPO), *wanted], capture_output=True, text=True)
    if proc.returncode == 0:
        status = {t: PINS[t] for t in tools if t in PINS}
    else:  # one at a time, falling back from the pin to the nearest release that installs
        subprocess.run([*pip, "-e", str(REPO), *EXTRA_REQS], capture_output=True, check=True)
        for t in tools:
            if t not in PINS:
                continue
            name, pin = PINS[t].split("==")
            for req in (PINS[t], f"{name}<{pin}", name):
                p = subprocess.run([*pip, req], capture_output=True, text=True)
                if p.returncode == 0:
                    status[t] = req if req == PINS[t] else f"{req} (pin {pin} failed: " \
                        f"{_last_error(p.stderr) or 'pip error'})"
                    break
            else:
                status[t] = f"not installed: {_last_error(p.stderr)}"
    print(f"installed into {venv} in {time.perf_counter() - t0:.0f} s", flush=True)
    marker.write_text(json.dumps({"wanted": wanted, "status": status}))
    return status


def bootstrap(args: argparse.Namespace) -> None:
    """Make or reuse the venv and run this script again with its Python."""
    tools = [t for t in args.tools.split(",") if t in TOOLS]
    venv = Path(args.venv) if args.venv else Path(tempfile.mkdtemp(prefix="peers-venv-"))
    status = install(venv, tools)
    env = {**os.environ, "PEERS_VENV": str(venv), "PEERS_INSTALL": json.dumps(status),
           "PYTHONPATH": str(REPO)}
    py = str(venv / "bin" / "python")
    os.execve(py, [py, str(Path(__file__).resolve()), *sys.argv[1:]], env)


def main() -> None:
    ap = argparse.ArgumentParser(description="energymeter against its peers, one run")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--venv", help="virtual environment to make or reuse (default: a temp dir)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--rounds", type=int, default=5, help="cold interpreters per tool")
    ap.add_argument("--share-s", type=float, default=12.0,
                    help="window of the sampler-CPU runs at default intervals")
    ap.add_argument("--fast-share-s", type=float, default=5.0, help="window at 100 Hz")
    ap.add_argument("--wrapper-pairs", type=int, default=5)
    ap.add_argument("--acc-s", type=float, default=3.0, help="window of the accuracy runs")
    ap.add_argument("--wrap-s", type=float, default=7.0, help="window of the wrap scenario")
    ap.add_argument("--phases", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="short windows, 2 rounds (smoke test)")
    ap.add_argument("--slowdown", action="store_true",
                    help="also the loop-slowdown pairs (long)")
    ap.add_argument("--pairs", type=int, default=3, help="ABBA pairs per tool (--slowdown)")
    ap.add_argument("--loop-s", type=float, default=5.0, help="loop length (--slowdown)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per child process")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    if "PEERS_VENV" not in os.environ:
        bootstrap(args)
        return
    quiet()
    # Bytecode for every tool (the peers' site-packages and this checkout): a user's second
    # run has it, and PYTHONDONTWRITEBYTECODE in the caller's environment must not tilt it.
    for tree in (REPO / "energymeter", Path(sys.prefix) / "lib"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)],
                       capture_output=True, check=False)
    if args.quick:
        args.rounds, args.share_s, args.fast_share_s = 2, 4.0, 2.0
        args.wrapper_pairs, args.acc_s, args.wrap_s, args.phases = 2, 1.5, 4.0, 200
    t_begin = time.perf_counter()
    status = json.loads(os.environ.get("PEERS_INSTALL", "{}"))
    out = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    shim = out / "nvml-shim"
    shim.mkdir()
    (shim / "pynvml.py").write_text(SHIM.format(repo=str(REPO)))
    # energymeter imports NVML only where the driver's device files exist; a simulator is
    # named by its nvml_module setting instead (ENERGYMETER_NVML_MODULE), as its tests do.
    (shim / "peers_nvml.py").write_text("import sys\nimport pynvml\n\n"
                                        "sys.modules[__name__] = pynvml\n")
    bench = Bench(out, shim, args.timeout)

    requested = [t for t in args.tools.split(",") if t]
    tools: list[str] = []
    broken: dict[str, str] = {}
    for tool in requested:
        if tool not in TOOLS:
            print(f"skipping {tool}: no adapter (known: {', '.join(TOOLS)})")
            continue
        if tool != "energymeter" and not status.get(tool, "").startswith(PINS[tool].split("=")[0]):
            broken[tool] = status.get(tool, "not installed")
            continue
        proc = subprocess.run([sys.executable, "-c", f"import {MODULE[tool]}"],
                              capture_output=True, text=True)
        if proc.returncode:
            broken[tool] = "does not import: " + _last_error(proc.stderr)
            continue
        tools.append(tool)
    versions = {t: version(t) for t in TOOLS}
    rapl = Path("/sys/class/powercap/intel-rapl").exists()
    head = (f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
            f"RAPL {'present' if rapl else 'absent'}, "
            f"{'NVML present' if shutil.which('nvidia-smi') else 'no NVIDIA GPU'}; "
            + ", ".join(f"{t} {versions[t]}" for t in TOOLS))
    print(head, flush=True)
    for t, why in broken.items():
        print(f"{t}: {why}")
    results: dict[str, Any] = {"header": head, "versions": versions, "install": status,
                               "broken": broken, "tools": tools}

    # 1. Latency (cold interpreters, later starts) and, in round 0, phase cost.
    lat: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    for i in range(args.rounds):
        for tool in rotate(tools, i):
            r = bench.child({"mode": "latency", "tool": tool,
                             "phases": args.phases if i == 0 else 0})
            lat[tool].append(r)
    results["latency"] = lat
    print(f"[latency done at {time.perf_counter() - t_begin:.0f} s]", flush=True)

    # 2. Sampler CPU while the main thread sleeps: default interval, then 100 Hz.
    share: dict[str, dict[str, Any]] = {t: {} for t in tools}
    configs = [(t, "default") for t in tools]
    configs += [(t, "100 Hz") for t in tools if t in DEFAULT_INTERVAL_S
                and DEFAULT_INTERVAL_S[t] is not None]
    for tool, setting in rotate(configs, 1):
        fast = setting != "default"
        share[tool][setting] = bench.child({
            "mode": "share", "tool": tool, "interval_s": FAST_S if fast else None,
            "window_s": args.fast_share_s if fast else args.share_s})
    results["share"] = share
    print(f"[sampler CPU done at {time.perf_counter() - t_begin:.0f} s]", flush=True)

    # 3. Wrappers around `true`.
    results["wrapper"] = wrappers(tools, args.wrapper_pairs, out)
    print(f"[wrappers done at {time.perf_counter() - t_begin:.0f} s]", flush=True)

    # 4. Accuracy: fake RAPL at the real path, fake NVML through a pynvml shim.
    acc: dict[str, dict[str, Any]] = {t: {} for t in tools}
    runs = [(t, "rapl", s) for s in SCENARIOS for t in tools]
    runs += [(t, "nvml", s) for s in NVML_SCENARIOS for t in tools]
    for tool, source, scenario in runs:
        window = args.wrap_s if scenario == "wraps" else args.acc_s
        spec = {"mode": "accuracy", "tool": tool, "source": source, "scenario": scenario,
                "window_s": window}
        if source == "rapl":
            r = bench.child(spec, unshare=True)
        else:
            watts = "200" if scenario == "steady" else "burst:400:100"
            r = bench.child(spec, nvml={"PEERS_NVML_WATTS": watts,
                                        "ENERGYMETER_NVML_MODULE": "peers_nvml"})
        acc[tool][f"{source} {scenario}"] = r
    results["accuracy"] = acc
    print(f"[accuracy done at {time.perf_counter() - t_begin:.0f} s]", flush=True)

    if args.slowdown:
        results["slowdown"] = slowdown(bench, tools, args)

    results["wall_s"] = time.perf_counter() - t_begin
    report(results, args)
    if bench.log:
        print("Child failures (last error line):")
        for line in bench.log:
            print(f"- {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    shutil.rmtree(out, ignore_errors=True)


def wrappers(tools: list[str], pairs: int, out: Path) -> dict[str, Any]:
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENERGYMETER_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(ENERGYMETER_OUT=str(out / "em-runs"), ENERGYMETER_REGION="WLD")
    cmds = {"energymeter": [sys.executable, "-m", "energymeter", "run", "--", "true"],
            "codecarbon": [str(bindir / "codecarbon"), "monitor", "--offline",
                           "--country-iso-code", "SWE", "--", "true"],
            "perun": [str(bindir / "perun"), "monitor", "--data-out", str(out / "perun"),
                      "--binary", "true"],
            "carbontracker": [str(bindir / "carbontracker"), "--log_dir",
                              str(out / "ct-logs"), "true"]}
    res: dict[str, Any] = {}
    live = [t for t in tools if t in cmds]
    for t in live:  # warm-up: bytecode, caches
        run_isolated(cmds[t], env=env, cwd=out)
    added: dict[str, list[float]] = {t: [] for t in live}
    errors: dict[str, str] = {}
    for i in range(pairs):
        for t in rotate(live, i):
            if t in errors:
                continue
            order = [("bare", ["true"]), ("tool", cmds[t])]
            times = {}
            for label, argv in order if i % 2 == 0 else reversed(order):
                stdout, stderr, code, times[label] = run_isolated(argv, env=env, cwd=out)
                if code != 0:
                    errors[t] = f"exit {code}: {_last_error(stderr + stdout)}"
            added[t].append(times["tool"] - times["bare"])
    for t in tools:
        if t in errors:
            res[t] = {"error": errors[t]}
        elif t in added:
            res[t] = {"added_s": added[t], "command": " ".join(Path(cmds[t][0]).name
                                                               if k == 0 else c
                                                               for k, c in enumerate(cmds[t]))}
        else:
            res[t] = {"none": NO_WRAPPER.get(t, "none")}
    return res


def slowdown(bench: Bench, tools: list[str], args: argparse.Namespace) -> dict[str, Any]:
    n = calibrate(args.loop_s, probe_s=0.5)
    res: dict[str, Any] = {t: {"slow": [], "bg": [], "foreign": []} for t in tools}
    for i in range(args.pairs):
        for tool in rotate(tools, i):
            m_spec = {"mode": "loop", "tool": tool, "n": n}
            b_spec = {"mode": "loop", "tool": None, "n": n}
            if i % 2:
                m, b = bench.child(m_spec), bench.child(b_spec)
            else:
                b, m = bench.child(b_spec), bench.child(m_spec)
            if "error" in m or "error" in b:
                continue
            res[tool]["slow"].append(m["loop_s"] / b["loop_s"] - 1)
            res[tool]["bg"].append(m["bg"])
            res[tool]["foreign"].append(m["foreign"])
    return res


def _err(r: dict[str, Any]) -> str:
    return "failed: " + r["error"] if "error" in r else ""


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    tools: list[str] = res["tools"]
    em = "energymeter"
    lat = res["latency"]
    print("\nInstalled: " + "; ".join(f"{t}: {s}" for t, s in res["install"].items()))
    for t, why in res["broken"].items():
        print(f"Left out: {t}: {why}")

    def ok(t: str) -> list[dict[str, Any]]:
        return [r for r in lat.get(t, []) if "error" not in r]

    def m_of(t: str, key: str) -> float:
        vals = [r[key] for r in ok(t)]
        return med(vals)

    def first(t: str) -> float:
        return med([r["import_s"] + r["first_start_s"] for r in ok(t)])

    def later(t: str, key: str) -> float:
        return med([x for r in ok(t) for x in r[key]])

    print(f"\nLatency, ms: median of {args.rounds} fresh interpreters (min–max); later = 3 more "
          "trackers in each of them; default intervals; no RAPL, no GPU")
    rows = [["tool", "import", "first start()", "import + first start", "first stop()",
             "later start()", "later stop()", "cold CPU (import..stop)", "phase enter+exit",
             "result"]]
    for t in tools:
        good = ok(t)
        if not good:
            rows.append([t, *["—"] * 8, _err(lat[t][0]) if lat.get(t) else "no data"])
            continue
        phase = [r["phase_s"] for r in good if "phase_s" in r]
        phase_txt = (f"{phase[0] * 1e6:.0f} µs" if phase else
                     "no API" if not PHASE_API[t] else "—")
        result = ("ok" if all(r.get("energy_ok") for r in good) else
                  "stop ok, result fails: " + next(r["energy_error"] for r in good
                                                    if "energy_error" in r))
        rows.append([t, fmt_ms([r["import_s"] for r in good]),
                     fmt_ms([r["first_start_s"] for r in good]),
                     fmt_ms([r["import_s"] + r["first_start_s"] for r in good]),
                     fmt_ms([r["first_stop_s"] for r in good]),
                     fmt_ms([x for r in good for x in r["later_start_s"]], 2),
                     fmt_ms([x for r in good for x in r["later_stop_s"]], 2),
                     fmt_ms([r["cold_cpu_s"] for r in good]), phase_txt, result])
    table(rows)

    share = res["share"]
    print(f"Sampler CPU, % of one core: the tool's threads and child processes while the main "
          f"thread sleeps {args.share_s:g} s (default interval) or {args.fast_share_s:g} s "
          "(100 Hz); one run each")
    rows = [["tool", "default interval", "CPU % at default", "CPU % at 100 Hz",
             "energymeter's own figure"]]
    for t in tools:
        d, f = share[t].get("default", {}), share[t].get("100 Hz")
        iv = DEFAULT_INTERVAL_S[t]

        def pct(r: dict[str, Any] | None) -> str:
            if r is None:
                return "n/a (no interval)"
            return _err(r) or f"{r['share'] * 100:.3f}"

        own = (f"{d['self_reported'] * 100:.3f} / {f['self_reported'] * 100:.3f}"
               if t == em and "self_reported" in d and f and "self_reported" in f else "")
        rows.append([t, "none (edges only)" if iv is None else f"{iv:g} s", pct(d), pct(f), own])
    table(rows)

    wr = res["wrapper"]
    print(f"Wrapper: wall time added to `true`, ms, median of {args.wrapper_pairs} ABBA pairs "
          "(min–max), run from the venv")
    rows = [["tool", "command", "added ms"]]
    for t in tools:
        r = wr.get(t, {})
        if "added_s" in r:
            rows.append([t, f"`{r['command']}`", fmt_ms(r["added_s"])])
        else:
            rows.append([t, r.get("none", ""), _err(r)])
    table(rows)

    acc = res["accuracy"]
    print("Accuracy: reported J vs the fake's exact J, bracketed by the inner window (start() "
          "returned .. stop() called) and the outer one (start() called .. stop() returned); "
          "error = distance to the nearer bound, % of the inner truth (0 inside the bracket). "
          f"RAPL on /sys/class/powercap: package-0 40 W + DRAM 5 W ({args.acc_s:g} s); bursts: "
          "100 W for 10 ms of every 100 ms, 10 W otherwise; wraps: 120 J counter range "
          f"(a wrap every 3 s at 40 W), {args.wrap_s:g} s. NVML: one H100, 200 W; bursts 400 W "
          "for 10 ms of every 100 ms, 100 W otherwise")
    rows = [["tool", *[f"{k} {s}" for k, ss in (("rapl", SCENARIOS), ("nvml", NVML_SCENARIOS))
                       for s in ss]]]
    for t in tools:
        cells = []
        for key in [f"rapl {s}" for s in SCENARIOS] + [f"nvml {s}" for s in NVML_SCENARIOS]:
            cells.append(acc_cell(acc[t].get(key, {}), "gpu" if key.startswith("nvml")
                                  else "cpu"))
        rows.append([t, *cells])
    table(rows)
    hows = {t: sorted({r.get("how") or "" for r in acc[t].values() if "how" in r})
            for t in tools}
    print("How each tool says it got its figure (accuracy runs): " + "; ".join(
        f"{t}: {' / '.join(h)}" for t, h in hows.items() if h))
    print("RAPL-present latency (first start / stop on the fake tree, steady scenario, ms): "
          + ", ".join(f"{t} {r['first_start_s'] * 1e3:.1f} / {r['stop_s'] * 1e3:.1f}"
                      for t in tools if "error" not in (r := acc[t].get("rapl steady", {}))
                      and r))
    print()

    peers = [t for t in tools if t != em]
    if em in tools and peers:
        print("Ratios energymeter / peer (below 1: energymeter lower)")
        rows = [["quantity", *peers]]
        rows.append(["import + first start()", *[ratio(first(em), first(p)) for p in peers]])
        rows.append(["later start()", *[ratio(later(em, "later_start_s"),
                                              later(p, "later_start_s")) for p in peers]])
        rows.append(["later stop()", *[ratio(later(em, "later_stop_s"),
                                             later(p, "later_stop_s")) for p in peers]])
        rows.append(["first stop()", *[ratio(m_of(em, "first_stop_s"), m_of(p, "first_stop_s"))
                                       for p in peers]])

        def phase_of(t: str) -> float:
            v = [r["phase_s"] for r in ok(t) if "phase_s" in r]
            return v[0] if v else float("nan")

        rows.append(["phase enter+exit", *[ratio(phase_of(em), phase_of(p)) for p in peers]])
        for setting in ("default", "100 Hz"):
            def sh(t: str, s: str = setting) -> float:
                r = share[t].get(s)
                return r["share"] if r and "share" in r else float("nan")

            rows.append([f"sampler CPU, {setting}", *[ratio(sh(em), sh(p)) for p in peers]])

        def wr_of(t: str) -> float:
            return med(wr.get(t, {}).get("added_s", []))

        rows.append(["wrapper added time", *[ratio(wr_of(em), wr_of(p)) for p in peers]])
        table(rows)
    if "slowdown" in res:
        print("Loop slowdown under each tool (default interval), % median (min–max)")
        rows = [["tool", "slowdown %", "tool CPU %", "foreign CPUs"]]
        for t, r in res["slowdown"].items():
            if r["slow"]:
                rows.append([t, f"{med(r['slow']) * 100:+.2f} ({min(r['slow']) * 100:+.2f}–"
                             f"{max(r['slow']) * 100:+.2f})", f"{med(r['bg']) * 100:.3f}",
                             f"{med(r['foreign']):.2f}"])
        table(rows)
    print(f"peers.py wall time: {res['wall_s']:.0f} s")


def acc_cell(r: dict[str, Any], kind: str) -> str:
    if not r:
        return "—"
    if "error" in r:
        return "failed: " + r["error"][:120]
    c = r.get(kind) or {}
    rep, inner, outer = c.get("reported"), c.get("inner"), c.get("outer")
    if rep is None:
        return f"no {kind} figure (truth {inner:.1f} J)" if inner is not None else "—"
    lo, hi = min(inner, outer), max(inner, outer)
    err = 0.0 if lo <= rep <= hi else (rep - lo if rep < lo else rep - hi)
    return f"{rep:.1f} J vs {inner:.1f}–{outer:.1f} ({err / inner * 100:+.1f} %)"


if __name__ == "__main__":
    main()
