"""Honest baselines on GPUs: each GPU's utilisation over the idle baseline's
windows is recorded (``gpu_utilization_pct``) and a baseline taken while a GPU was busy is
flagged (``under_load``) with a warning that names the GPU and says what to do.

Through ``measure()`` with the fake NVML (its ``utilization_pct`` is what
``nvmlDeviceGetUtilizationRates(...).gpu`` answers), and through :func:`idle_baseline` with
scripted probes where the machine's CPU times and each window's gauge must be exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from energymeter import Report, measure
from energymeter._ids import hostname
from energymeter.probes.base import Channel, Probe
from energymeter.probes.proc import CpuSeconds
from energymeter.session.baseline import (
    BASELINES_NAME,
    MAX_IDLE_BUSY_SHARE,
    MAX_IDLE_GPU_UTIL_PCT,
    WINDOWS,
    idle_baseline,
)
from tests.fakes.nvml import FakeGPU, FakeMigDevice, FakeNVML

H100 = "NVIDIA H100 80GB HBM3"
GPU_WARNING = "was measured while a GPU was running kernels"


def _idle_cpu() -> Callable[[], CpuSeconds]:
    """The machine's CPU times as /proc/stat would give them: 2 % busy over the baseline."""
    times = iter([CpuSeconds(100.0, 0.0, 1000.0), CpuSeconds(102.0, 0.0, 1100.0)])
    return lambda: next(times)


class ScriptedProbe(Probe):
    """One channel drawing 50 W; a GPU's ``gpu0_utilization_pct`` gauge answers ``script`` in
    turn (None: absent from that read). Counts its gauge reads."""

    source = "fake"

    def __init__(self, script: list[float | None], kind: str = "gpu",
                 device: str = H100) -> None:
        cid = f"{kind}0"
        gauge = f"{cid}_utilization_pct" if kind == "gpu" else "cpu_time_s"
        super().__init__((Channel(cid, kind, device, "fake", "counter"),), (gauge,))
        self._gauge = gauge
        self._script: Iterator[float | None] = iter(script)
        self.gauge_reads = 0
        self._t0 = time.monotonic()

    def _read(self) -> dict[str, float]:
        return {self.channels[0].id: 50.0 * (time.monotonic() - self._t0)}

    def _gauges(self) -> dict[str, float]:
        self.gauge_reads += 1
        value = next(self._script, None)
        return {} if value is None else {self._gauge: value}


def _baseline(probe: Probe, out: Path, cpu: Callable[[], CpuSeconds | None] | None = None
              ) -> dict:
    return idle_baseline([probe], probe.channels, 0.05, out, cpu_now=cpu or _idle_cpu())


# -- through measure() with the fake NVML ----------------------------------------------------
def test_a_baseline_taken_while_the_gpu_is_busy_is_flagged(tmp_path: Path) -> None:
    fake = FakeNVML([FakeGPU(name=H100, power_w=120.0, utilization_pct=42)])
    out = tmp_path / "runs"
    with measure("busy-gpu", pynvml=fake, env={}, out=out, powercap_root=tmp_path / "absent",
                 cpu_tdp_w=10.0, region="SE", baseline_s=0.3) as m:
        pass
    b = m.report.baseline
    assert b["source"] == "measured"
    assert b["gpu_utilization_pct"] == {"gpu0": 42.0}  # every window read 42 %
    assert b["under_load"] is True
    [warning] = [w for w in m.report.warnings if GPU_WARNING in w]
    assert f"gpu0 ({H100}) 42 % of the time" in warning
    assert f"above {MAX_IDLE_GPU_UTIL_PCT:g} %" in warning
    assert "wait until the GPU is idle" in warning and "nvidia-smi" in warning
    assert "compare gross (or attributed) energy instead of net" in warning
    # recorded as measured, and carried through report.json
    [line] = (out / BASELINES_NAME).read_text().splitlines()
    entry = json.loads(line)
    assert entry["gpu_utilization_pct"] == {"gpu0": 42.0} and entry["under_load"] is True
    assert "warnings" not in entry and "source" not in entry
    loaded = Report.load(m.report.path)
    assert loaded.baseline["gpu_utilization_pct"] == {"gpu0": 42.0}
    assert loaded.baseline["under_load"] is True
    [warning] = [w for w in m.report.warnings if GPU_WARNING in w]
    assert "the next run measures again" in warning
    # the GPU went idle: a flagged baseline is never reused, the next run measures anew
    fake.gpus[0].utilization_pct = 0
    with measure("again", pynvml=fake, env={}, out=out, powercap_root=tmp_path / "absent",
                 cpu_tdp_w=10.0, region="SE", baseline_s=0.3) as m2:
        pass
    b2 = m2.report.baseline
    assert b2["source"] == "measured" and b2["gpu_utilization_pct"] == {"gpu0": 0.0}
    assert not [w for w in m2.report.warnings if GPU_WARNING in w]


def test_a_baseline_taken_while_the_gpu_is_idle_is_not_flagged_for_it(tmp_path: Path) -> None:
    fake = FakeNVML([FakeGPU(name=H100, power_w=60.0, utilization_pct=0)])
    with measure("idle-gpu", pynvml=fake, env={}, out=tmp_path,
                 powercap_root=tmp_path / "absent", cpu_tdp_w=10.0, region="SE",
                 baseline_s=0.3) as m:
        pass
    b = m.report.baseline
    assert b["gpu_utilization_pct"] == {"gpu0": 0.0}
    assert not any(GPU_WARNING in w for w in m.report.warnings)
    # this machine's own CPU load may still flag it; the GPU does not
    assert b["under_load"] is (b["busy_cpu_share"] > MAX_IDLE_BUSY_SHARE)


def test_a_mig_gpu_has_no_utilisation_and_is_not_judged_by_it(tmp_path: Path) -> None:
    # nvml.h: "On MIG-enabled GPUs, querying device utilization rates is not currently
    # supported": the gauge is absent, so nothing is recorded for that GPU
    mig = "MIG-aaaa1111-2222-3333-4444-555566667777"
    fake = FakeNVML([FakeGPU(name=H100, utilization_pct=90,
                             mig_devices=[FakeMigDevice(mig, "3g.40gb", gi_id=1)])])
    with measure("mig", pynvml=fake, env={"CUDA_VISIBLE_DEVICES": mig}, out=tmp_path,
                 powercap_root=tmp_path / "absent", cpu_tdp_w=10.0, region="SE",
                 baseline_s=0.2) as m:
        pass
    assert "gpu_utilization_pct" not in m.report.baseline
    assert not any(GPU_WARNING in w for w in m.report.warnings)


# -- the rule, with scripted gauges ----------------------------------------------------------
def test_the_mean_is_over_the_windows_reads_only(tmp_path: Path) -> None:
    # begin's and stop's boundary reads (100 %) are not windows; a window without the gauge
    # is left out of the mean: 9 windows of 0 and one of 45 -> 5 %, not above the threshold
    windows: list[float | None] = [0.0] * 8 + [None, 45.0]
    probe = ScriptedProbe([100.0, *windows, 100.0])
    entry = _baseline(probe, tmp_path)
    assert probe.gauge_reads == WINDOWS + 2
    assert entry["gpu_utilization_pct"] == {"gpu0": pytest.approx(5.0)}
    assert entry["under_load"] is False and entry["warnings"] == []
    assert entry["busy_cpu_share"] == pytest.approx(0.02)


def test_above_the_threshold_is_flagged_and_named(tmp_path: Path) -> None:
    probe = ScriptedProbe([0.0, *([0.0] * 9), 60.0, 0.0], device="NVIDIA A100-SXM4-40GB")
    entry = _baseline(probe, tmp_path)
    assert entry["gpu_utilization_pct"] == {"gpu0": pytest.approx(6.0)}
    assert entry["under_load"] is True
    [warning] = entry["warnings"]
    assert "gpu0 (NVIDIA A100-SXM4-40GB) 6 % of the time" in warning
    assert "(reused)" not in warning


def test_a_machine_without_gpus_reads_no_gauges_during_the_windows(tmp_path: Path) -> None:
    probe = ScriptedProbe([1.0] * 20, kind="cpu", device="fake cpu")
    entry = _baseline(probe, tmp_path)
    assert probe.gauge_reads == 2  # begin and stop only, as before
    assert "gpu_utilization_pct" not in entry and entry["under_load"] is False


def test_nothing_measured_means_no_flag(tmp_path: Path) -> None:
    entry = _baseline(ScriptedProbe([]), tmp_path, cpu=lambda: None)  # no /proc/stat, no gauge
    assert "gpu_utilization_pct" not in entry and "busy_cpu_share" not in entry
    assert "under_load" not in entry and entry["warnings"] == []


# -- baselines.jsonl ---------------------------------------------------------------------------
def _record(out: Path, **fields: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    line = {"hostname": hostname(), "channels": ["gpu0"],
            "measured_at": datetime.now(timezone.utc).isoformat(), "duration_s": 10.0,
            "windows": WINDOWS, "power_w": {"gpu0": 70.0}, "power_std_w": {"gpu0": 0.5},
            **fields}
    with (out / BASELINES_NAME).open("a") as f:
        f.write(json.dumps(line) + "\n")


def test_an_old_line_without_gpu_utilisation_still_loads(tmp_path: Path) -> None:
    _record(tmp_path, busy_cpu_share=0.02, under_load=False)
    entry = _baseline(ScriptedProbe([]), tmp_path)
    assert entry["source"] == "reused" and entry["power_w"] == {"gpu0": 70.0}
    assert "gpu_utilization_pct" not in entry
    assert entry["under_load"] is False and entry["warnings"] == []


def test_an_older_line_without_either_is_not_judged(tmp_path: Path) -> None:
    _record(tmp_path)
    entry = _baseline(ScriptedProbe([]), tmp_path)
    assert entry["source"] == "reused" and "under_load" not in entry


@pytest.mark.parametrize("recorded", [{"gpu0": "busy"}, {"gpu0": None}, ["gpu0", 42], True])
def test_a_damaged_gpu_figure_is_not_judged(tmp_path: Path, recorded: object) -> None:
    _record(tmp_path, gpu_utilization_pct=recorded)
    entry = _baseline(ScriptedProbe([]), tmp_path)
    assert entry["source"] == "reused" and "under_load" not in entry


def test_a_recorded_busy_line_is_not_reused(tmp_path: Path) -> None:
    _record(tmp_path, busy_cpu_share=0.5, gpu_utilization_pct={"gpu0": 30.0}, under_load=True)
    entry = _baseline(ScriptedProbe([]), tmp_path)
    assert entry["source"] == "measured"  # measured again, on the idle machine of the script
    assert not entry.get("under_load") and not entry["warnings"]


def test_a_busy_baseline_warns_with_both_causes(tmp_path: Path) -> None:
    from energymeter.session.baseline import _flagged

    entry = _flagged({"busy_cpu_share": 0.5, "gpu_utilization_pct": {"gpu0": 30.0}}, [],
                     {"gpu0": H100})
    assert entry["under_load"] is True
    cpu, gpu = entry["warnings"]
    assert cpu.startswith("the idle baseline was measured while other processes")
    assert f"gpu0 ({H100}) 30 % of the time" in gpu and "measures again" in gpu
