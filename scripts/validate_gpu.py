#!/usr/bin/env python3
"""Validate energymeter's GPU energy (NVML probe) against independent power readings.

Run on a machine with an NVIDIA GPU, PyTorch (or CuPy) and nvidia-smi:

    PYTHONPATH=. python3 scripts/validate_gpu.py [--gpu 0] [--out validation_gpu.json]

It runs a known load (matrix products) in three phases, steady (~8 s), bursty (50 ms on /
50 ms off, ~6 s) and idle (~4 s), and measures each phase's energy four ways:

* ``energymeter``: the NVML probe as the library uses it (the energy counter on Volta+);
* ``power_instant``: ``NVML_FI_DEV_POWER_INSTANT`` polled in a thread (>= 50 Hz) and
  integrated with the trapezoid rule (falls back to ``nvmlDeviceGetPowerUsage`` when the
  field is unsupported);
* ``power_usage``: ``nvmlDeviceGetPowerUsage`` polled and integrated the same way (a 1 s
  average on Ampere and newer: it smears bursts);
* ``nvidia_smi``: ``nvidia-smi --query-gpu=timestamp,power.draw -lms 100`` (10 Hz) in a
  subprocess, integrated.

It also measures the energy counter's update period (polling it at ~1 kHz for 1 s under load),
prints a table and writes every number, with GPU name, driver and NVML versions and the date, to
``--out``. Exit codes: 0 done, 2 no PyTorch/CuPy with a GPU, 3 NVML unusable.

The core (:func:`run_validation`) takes the ``pynvml`` module and the load as arguments, so the
tests run it with the fake NVML and a fake load; ``main(argv, nvml=..., load=...)`` likewise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

EXIT_NO_LOAD = 2
EXIT_NO_NVML = 3
MIN_POLL_HZ = 50.0
FI_DEV_POWER_INSTANT = 186  # nvml.h, in case this pynvml lacks the constant
VALUE_ATTRS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
               6: "usVal"}  # nvmlValueType_t -> c_nvmlValue_t member
METHODS = ("energymeter", "power_instant", "power_usage", "nvidia_smi")
BURST_ON_S = 0.05
BURST_OFF_S = 0.05

Samples = list[tuple[float, float]]  # (monotonic s, W)


class Load(Protocol):
    """A GPU load: ``busy(s)`` keeps the GPU computing for about ``s`` seconds and returns
    when that work has finished."""

    name: str

    def busy(self, duration_s: float) -> None: ...


# -- loads ---------------------------------------------------------------------------------
class TorchLoad:
    def __init__(self, torch: Any, n: int = 8192) -> None:
        self.torch = torch
        self.device = torch.device("cuda", 0)
        self.a = torch.randn(n, n, device=self.device, dtype=torch.float16)
        self.b = torch.randn(n, n, device=self.device, dtype=torch.float16)
        self.c = torch.empty_like(self.a)
        self.name = f"torch {torch.__version__}: {n}x{n} fp16 matmul"

    def busy(self, duration_s: float) -> None:
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            self.torch.mm(self.a, self.b, out=self.c)
            self.torch.cuda.synchronize(self.device)


class CupyLoad:
    def __init__(self, cupy: Any, n: int = 8192) -> None:
        self.cupy = cupy
        self.a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(cupy.float16)
        self.b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(cupy.float16)
        self.c = cupy.empty_like(self.a)
        self.name = f"cupy {cupy.__version__}: {n}x{n} fp16 matmul"

    def busy(self, duration_s: float) -> None:
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            self.cupy.matmul(self.a, self.b, out=self.c)
            self.cupy.cuda.Device().synchronize()


def make_load() -> tuple[Load | None, str]:
    """A matmul load on cuda:0 from PyTorch, else CuPy; (None, why) when neither works."""
    problems = []
    try:
        import torch

        if torch.cuda.is_available():
            return TorchLoad(torch), ""
        problems.append("PyTorch is installed but sees no CUDA GPU")
    except ImportError:
        problems.append("PyTorch is not installed")
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return CupyLoad(cupy), ""
        problems.append("CuPy sees no CUDA GPU")
    except ImportError:
        problems.append("CuPy is not installed")
    except RuntimeError as exc:  # cupy's CUDARuntimeError subclasses RuntimeError
        problems.append(f"CuPy cannot use the GPU: {exc}")
    return None, "; ".join(problems)


# -- independent power readings --------------------------------------------------------------
def _field_power_w(nvml: Any, handle: Any) -> float | None:
    fid = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", FI_DEV_POWER_INSTANT)
    [value] = nvml.nvmlDeviceGetFieldValues(handle, [fid])
    if value.nvmlReturn != 0:
        return None
    attr = VALUE_ATTRS.get(int(value.valueType), "uiVal")
    return float(getattr(value.value, attr)) / 1000


class PowerPoller:
    """Polls instantaneous power and ``nvmlDeviceGetPowerUsage`` in its own thread."""

    def __init__(self, nvml: Any, handle: Any, hz: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nvml = nvml
        self.handle = handle
        self.period_s = 1.0 / hz
        self.clock = clock
        self.instant: Samples = []
        self.usage: Samples = []
        self.instant_source = "NVML_FI_DEV_POWER_INSTANT"
        self.errors = 0
        self._use_field = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="validate-power-poll",
                                        daemon=True)
        try:
            if _field_power_w(nvml, handle) is None:
                self._use_field = False
        except nvml.NVMLError:
            self._use_field = False
        if not self._use_field:
            self.instant_source = "nvmlDeviceGetPowerUsage (POWER_INSTANT unsupported)"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            try:
                usage_w = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000
                instant_w = _field_power_w(self.nvml, self.handle) if self._use_field else None
                t = self.clock()
                self.usage.append((t, usage_w))
                self.instant.append((t, usage_w if instant_w is None else instant_w))
            except self.nvml.NVMLError:
                self.errors += 1
            next_s += self.period_s
            delay = next_s - time.monotonic()
            if delay < 0:
                next_s, delay = time.monotonic(), 0.0
            self._stop.wait(delay)


def smi_command(gpu_index: int) -> list[str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, "-i", str(gpu_index), "--query-gpu=timestamp,power.draw",
           "--format=csv,noheader,nounits", "-lms", "100"]
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL", *cmd] if stdbuf else cmd


class SmiSampler:
    """Reads ``nvidia-smi`` power lines (``timestamp, watts`` or ``watts``) from a subprocess.
    Lines with a timestamp are placed at that time (robust to pipe buffering); others at
    their arrival."""

    def __init__(self, cmd: Sequence[str]) -> None:
        self.cmd = list(cmd)
        self.samples: Samples = []
        self.bad_lines = 0
        # wall clock -> monotonic, for nvidia-smi's local-time timestamps
        self._wall_minus_mono = time.time() - time.monotonic()
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="validate-smi", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            arrival = time.monotonic()
            parts = [p.strip() for p in line.split(",")]
            try:
                watts = float(parts[-1])
            except ValueError:
                self.bad_lines += 1  # "[N/A]", a header...
                continue
            t = arrival
            if len(parts) >= 2:
                try:
                    stamp = dt.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f")
                    t = stamp.timestamp() - self._wall_minus_mono
                except ValueError:
                    t = arrival
            self.samples.append((t, watts))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(2)  # SIGINT: nvidia-smi exits cleanly, flushing its output
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._thread.join(timeout=3)
        self.samples.sort()


def integrate_j(samples: Samples, t0: float, t1: float) -> float | None:
    """Trapezoid integral of a power trace over [t0, t1], interpolating at the ends (held flat
    beyond the first/last sample). None when no sample falls within a period of the window."""
    if not samples or t1 <= t0:
        return None
    if not any(t0 - 1.0 <= t <= t1 + 1.0 for t, _ in samples):
        return None  # the reading stopped (or never started) around this window
    inside = [(t, w) for t, w in samples if t0 < t < t1]

    def at(t: float) -> float:
        before = [s for s in samples if s[0] <= t]
        after = [s for s in samples if s[0] >= t]
        if not before:
            return after[0][1]
        if not after:
            return before[-1][1]
        (ta, wa), (tb, wb) = before[-1], after[0]
        return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)

    points = [(t0, at(t0)), *inside, (t1, at(t1))]
    return sum(0.5 * (wa + wb) * (tb - ta) for (ta, wa), (tb, wb) in pairwise(points))


def detect_counter_period(nvml: Any, handle: Any, duration_s: float, rate_hz: float = 1000.0,
                          clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the energy counter at ~``rate_hz`` for ``duration_s``; the median time between
    changes of its value is its update period."""
    changes: list[float] = []
    polls = 0
    last = None
    end = clock() + duration_s
    while clock() < end:
        value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        t = clock()
        polls += 1
        if last is not None and value != last:
            changes.append(t)
        last = value
        time.sleep(1.0 / rate_hz)
    gaps = [b - a for a, b in pairwise(changes)]
    return {
        "median_s": statistics.median(gaps) if gaps else None,
        "min_s": min(gaps) if gaps else None,
        "max_s": max(gaps) if gaps else None,
        "changes": len(changes),
        "polls": polls,
        "poll_rate_hz": polls / duration_s if duration_s else None,
    }


# -- the validation ---------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    t0: float
    t1: float
    energymeter_j: float
    extra: dict[str, Any] = field(default_factory=dict)


def _rel(x: float | None, base: float | None) -> float | None:
    if x is None or base is None or base == 0:
        return None
    return (x - base) / base


def run_validation(
    nvml: Any,
    load: Load,
    *,
    gpu_index: int = 0,
    steady_s: float = 8.0,
    bursty_s: float = 6.0,
    idle_s: float = 4.0,
    warmup_s: float = 2.0,
    period_probe_s: float = 1.0,
    poll_hz: float = 100.0,
    smi_cmd: Sequence[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run the phases and return every number (see the module docstring)."""
    from energymeter import __version__ as energymeter_version
    from energymeter.probes.base import DiscoveryContext
    from energymeter.probes.nvml import NvmlProbe, discover

    if poll_hz < MIN_POLL_HZ:
        raise ValueError(f"poll_hz must be >= {MIN_POLL_HZ:g}, got {poll_hz!r}")
    env = {"CUDA_VISIBLE_DEVICES": str(gpu_index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    found = discover(DiscoveryContext(pynvml=nvml, env=env))
    probes = [p for p in found if isinstance(p, NvmlProbe)]
    if not probes:
        reasons = "; ".join(f"{u.reason} ({u.hint})" for u in found)  # type: ignore[union-attr]
        raise RuntimeError(f"energymeter cannot measure GPU {gpu_index}: {reasons}")
    probe = probes[0]
    channel = probe.channels[0]
    nvml.nvmlInit()  # our own reference for the independent readings (NVML refcounts)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
        poller = PowerPoller(nvml, handle, poll_hz, clock)
        smi = SmiSampler(smi_cmd) if smi_cmd else None
        poller.start()
        phases: list[Phase] = []
        try:
            load.busy(warmup_s)  # clocks and power settle before the steady phase

            def measure(name: str, action: Callable[[float], None], duration_s: float) -> None:
                e0 = probe.read()[channel.id]
                t0 = clock()
                action(duration_s)
                t1 = clock()
                e1 = probe.read()[channel.id]
                phases.append(Phase(name, t0, t1, e1 - e0))

            def bursty(duration_s: float) -> None:
                end = clock() + duration_s
                while clock() < end:
                    load.busy(BURST_ON_S)
                    time.sleep(BURST_OFF_S)

            measure("steady", load.busy, steady_s)
            measure("bursty", bursty, bursty_s)
            measure("idle", time.sleep, idle_s)

            period: dict[str, Any] = {}
            if channel.method == "counter":
                worker = threading.Thread(target=lambda: period.update(
                    detect_counter_period(nvml, handle, period_probe_s, clock=clock)))
                worker.start()
                load.busy(period_probe_s + 0.1)
                worker.join()
        finally:
            poller.stop()
            if smi is not None:
                smi.stop()
    finally:
        nvml.nvmlShutdown()
        probe.close()

    rows = []
    for ph in phases:
        duration = ph.t1 - ph.t0
        energy = {
            "energymeter": ph.energymeter_j,
            "power_instant": integrate_j(poller.instant, ph.t0, ph.t1),
            "power_usage": integrate_j(poller.usage, ph.t0, ph.t1),
            "nvidia_smi": integrate_j(smi.samples, ph.t0, ph.t1) if smi else None,
        }
        rows.append({
            "phase": ph.name,
            "duration_s": duration,
            "energy_j": energy,
            "rel_diff_vs_energymeter": {k: _rel(v, ph.energymeter_j) for k, v in energy.items()
                                        if k != "energymeter"},
            "mean_power_w": ph.energymeter_j / duration if duration > 0 else None,
            "samples": {
                "poll": sum(1 for t, _ in poller.instant if ph.t0 <= t <= ph.t1),
                "nvidia_smi": (sum(1 for t, _ in smi.samples if ph.t0 <= t <= ph.t1)
                               if smi else 0),
            },
        })

    return {
        "schema": "energymeter.validation.gpu/1",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "energymeter_version": energymeter_version,
        "gpu": {"index": gpu_index, "name": channel.device, **dict(channel.meta)},
        "driver_version": probe.describe().get("driver_version"),
        "nvml_version": probe.describe().get("nvml_version"),
        "energymeter_method": channel.method,
        "load": load.name,
        "poll_hz": poll_hz,
        "instant_source": poller.instant_source,
        "poll_errors": poller.errors,
        "nvidia_smi": {"command": list(smi.cmd) if smi else None,
                       "samples": len(smi.samples) if smi else 0,
                       "bad_lines": smi.bad_lines if smi else 0},
        "counter_update_period_s": period or None,
        "phases": rows,
        "methods": {
            "energymeter": f"energymeter NVML probe ({channel.method})",
            "power_instant": f"{poller.instant_source} polled at {poll_hz:g} Hz, trapezoid",
            "power_usage": f"nvmlDeviceGetPowerUsage polled at {poll_hz:g} Hz, trapezoid",
            "nvidia_smi": "nvidia-smi power.draw every 100 ms, trapezoid",
        },
        "host": " ".join(os.uname()),
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as a plain-text table: energies in J; ``rel%`` is each method's difference
    from energymeter's energy, in percent."""
    head = (f"{'phase':<8} {'dur_s':>6} {'energymeter_J':>13} {'instant_J':>10} {'rel%':>6} "
            f"{'usage_J':>10} {'rel%':>6} {'smi_J':>10} {'rel%':>6} {'mean_W':>8}")
    lines = [head, "-" * len(head)]

    def num(x: float | None, width: int, digits: int = 1) -> str:
        return f"{x:>{width}.{digits}f}" if x is not None else f"{'n/a':>{width}}"

    def pct(x: float | None) -> str:
        return f"{100 * x:>+6.1f}" if x is not None else f"{'n/a':>6}"

    for row in result["phases"]:
        e, d = row["energy_j"], row["rel_diff_vs_energymeter"]
        lines.append(
            f"{row['phase']:<8} {row['duration_s']:>6.2f} {num(e['energymeter'], 13)} "
            f"{num(e['power_instant'], 10)} {pct(d['power_instant'])} "
            f"{num(e['power_usage'], 10)} {pct(d['power_usage'])} "
            f"{num(e['nvidia_smi'], 10)} {pct(d['nvidia_smi'])} {num(row['mean_power_w'], 8)}")
    period = result.get("counter_update_period_s") or {}
    median = period.get("median_s")
    lines.append("")
    lines.append(f"GPU {result['gpu']['index']}: {result['gpu']['name']}, driver "
                 f"{result['driver_version']}, NVML {result['nvml_version']}, "
                 f"energymeter method: {result['energymeter_method']}")
    lines.append("energy counter update period: "
                 + (f"{median * 1000:.1f} ms median over {period['changes']} changes"
                    if median is not None else "not measured"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, nvml: Any = None, load: Load | None = None,
         smi_cmd: Sequence[str] | None = None) -> int:
    """The command line. ``nvml``, ``load`` and ``smi_cmd`` replace the real pynvml, the
    PyTorch/CuPy load and the nvidia-smi command (tests pass fakes)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU (default 0)")
    parser.add_argument("--steady-s", type=float, default=8.0)
    parser.add_argument("--bursty-s", type=float, default=6.0)
    parser.add_argument("--idle-s", type=float, default=4.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--period-s", type=float, default=1.0,
                        help="how long to poll the energy counter to find its update period")
    parser.add_argument("--poll-hz", type=float, default=100.0,
                        help=f"power polling rate (>= {MIN_POLL_HZ:g})")
    parser.add_argument("--no-smi", action="store_true", help="skip the nvidia-smi reading")
    parser.add_argument("--out", type=Path, default=Path("validation_gpu.json"))
    args = parser.parse_args(argv)
    if args.poll_hz < MIN_POLL_HZ:
        parser.error(f"--poll-hz must be >= {MIN_POLL_HZ:g}")

    if load is None:
        # The load runs on cuda:0 = the chosen GPU, whatever CUDA's own numbering would be.
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
        load, why = make_load()
        if load is None:
            print(f"validate_gpu: needs PyTorch or CuPy with a CUDA GPU to generate a load "
                  f"({why}); install one, e.g. `pip install torch`", file=sys.stderr)
            return EXIT_NO_LOAD
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            print("validate_gpu: needs nvidia-ml-py (`pip install nvidia-ml-py`)",
                  file=sys.stderr)
            return EXIT_NO_NVML
    if args.no_smi:
        smi_cmd = None
    elif smi_cmd is None:
        smi_cmd = smi_command(args.gpu)
    try:
        result = run_validation(
            nvml, load, gpu_index=args.gpu, steady_s=args.steady_s, bursty_s=args.bursty_s,
            idle_s=args.idle_s, warmup_s=args.warmup_s, period_probe_s=args.period_s,
            poll_hz=args.poll_hz, smi_cmd=smi_cmd)
    except RuntimeError as exc:
        print(f"validate_gpu: {exc}", file=sys.stderr)
        return EXIT_NO_NVML
    print(format_table(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
