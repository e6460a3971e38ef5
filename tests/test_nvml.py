"""The NVML probe against the fake NVML module (no GPU, no driver needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energymeter.errors import ConfigError, ProbeError
from energymeter.probes.base import DiscoveryContext, Unavailable
from energymeter.probes.nvml import COUNTER_UPDATE_PERIOD_S, NvmlProbe, discover
from energymeter.probes.visible import (
    ACCEPTED_VISIBLE_DEVICES,
    HIDES_EVERY_GPU,
    GpuIdentity,
    select_visible,
)
from tests.fakes.nvml import (
    FakeClock,
    FakeGPU,
    FakeNVML,
    FakeProcess,
    sine_trace,
    steps_trace,
)
from tests.timing import Lateness

ROOT = Path(__file__).resolve().parents[1]

UUIDS = [
    "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6",
    "GPU-8932aaaa-0000-1111-2222-333344445555",
    "GPU-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718",
    "GPU-77777777-8888-9999-aaaa-bbbbccccdddd",
]
MIGS = ["MIG-0aa11bb2-cc33-5d44-8e55-ff6677889900", "MIG-1bb22cc3-dd44-5e55-8f66-007788990011"]


def four_gpus(**kw: object) -> list[FakeGPU]:
    return [FakeGPU(name="NVIDIA A100-SXM4-80GB", arch="ampere", uuid=u, power_w=100.0 + 10 * i,
                    **kw) for i, u in enumerate(UUIDS)]


def open_probe(fake: FakeNVML, env: dict[str, str] | None = None, **kw: object):
    """discover() with the fake (and its clock); returns (probe or None, Unavailables)."""
    kw.setdefault("clock", fake.clock)
    found = discover(DiscoveryContext(pynvml=fake, env=env or {}), start_poller=False, **kw)
    probes = [r for r in found if isinstance(r, NvmlProbe)]
    missing = [r for r in found if isinstance(r, Unavailable)]
    assert len(probes) <= 1
    return (probes[0] if probes else None), missing


def nvml_indices(probe: NvmlProbe) -> list[int]:
    return [c.meta["nvml_index"] for c in probe.channels]


# -- import and initialisation ---------------------------------------------------------------
def test_import_neither_imports_pynvml_nor_initialises_nvml() -> None:
    code = ("import sys, energymeter.probes.nvml, energymeter.session.sync; "
            "assert 'pynvml' not in sys.modules, 'pynvml imported'; "
            "assert 'psutil' not in sys.modules, 'psutil imported'")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_missing_pynvml_is_unavailable_with_install_hint() -> None:
    code = ("import sys; sys.modules['pynvml'] = None\n"
            "from energymeter.probes.base import DiscoveryContext\n"
            "from energymeter.probes.nvml import discover\n"
            "[u] = discover(DiscoveryContext(), driver_paths=(sys.executable,))\n"
            "print(u.source, '|', u.reason, '|', u.hint)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nvml |")
    assert "pip install nvidia-ml-py" in result.stdout


def test_no_driver_device_skips_importing_pynvml(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from energymeter.probes.base import DiscoveryContext\n"
            "from energymeter.probes.nvml import discover\n"
            f"[u] = discover(DiscoveryContext(), driver_paths=({str(tmp_path / 'none')!r},))\n"
            "print(u.source, '|', u.reason, '|', 'pynvml' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    source, reason, imported = result.stdout.strip().split(" | ")
    assert source == "nvml" and "no NVIDIA driver" in reason and imported == "False"


@pytest.mark.parametrize(("error", "reason_word", "hint_word"), [
    ("LibraryNotFound", "libnvidia-ml.so.1", "--gpus all"),
    ("DriverNotLoaded", "driver is not loaded", "modprobe"),
    ("NoPermission", "permission", "video"),
    ("LibRmVersionMismatch", "versions", "reboot"),
    ("Unknown", "nvmlInit failed", "nvidia-smi"),
])
def test_init_failures_are_unavailable_with_hint(error: str, reason_word: str,
                                                 hint_word: str) -> None:
    fake = FakeNVML(four_gpus(), init_error=error)
    probe, missing = open_probe(fake)
    assert probe is None
    [u] = missing
    assert u.source == "nvml"
    assert reason_word in u.reason
    assert hint_word in u.hint
    assert fake.shutdown_count == 0  # never initialised, never shut down


def test_no_gpu_is_unavailable_and_nvml_is_shut_down() -> None:
    fake = FakeNVML([])
    probe, [u] = open_probe(fake)
    assert probe is None and "no NVIDIA GPU" in u.reason
    assert fake.init_count == fake.shutdown_count == 1


def test_poll_rate_below_minimum_is_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 20"):
        discover(DiscoveryContext(pynvml=FakeNVML(four_gpus())), poll_hz=5)


# -- CUDA_VISIBLE_DEVICES ------------------------------------------------------------------------
def test_unset_means_every_gpu_in_nvml_order() -> None:
    probe, missing = open_probe(FakeNVML(four_gpus()))
    assert not missing
    assert [c.id for c in probe.channels] == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert nvml_indices(probe) == [0, 1, 2, 3]
    probe.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("0,2", [0, 2]),
    ("2,0", [2, 0]),  # reordering: gpu0 is NVML device 2, as cuda:0 would be
    (" 3 , 1 ", [3, 1]),
    ("0,2,-1,1", [0, 2]),  # CUDA's terminator, no warning
    (UUIDS[2], [2]),
    (UUIDS[2].upper(), [2]),
    ("GPU-1f2e", [2]),  # unique prefix
    (f"GPU-7777,{UUIDS[0]}", [3, 0]),
    ("1,GPU-1f2e3d4c", [1, 2]),
])
def test_visible_devices_forms(value: str, expected: list[int]) -> None:
    probe, missing = open_probe(FakeNVML(four_gpus()), {"CUDA_VISIBLE_DEVICES": value})
    assert not missing
    assert nvml_indices(probe) == expected
    assert [c.id for c in probe.channels] == [f"gpu{i}" for i in range(len(expected))]
    assert [c.meta["cuda_index"] for c in probe.channels] == list(range(len(expected)))
    assert probe.drain_warnings() == []
    probe.close()


@pytest.mark.parametrize("value", ["", "  ", "-1", "NoDevFiles", "nodevfiles", "-1,0"])
def test_values_hiding_every_gpu(value: str) -> None:
    fake = FakeNVML(four_gpus())
    probe, [u] = open_probe(fake, {"CUDA_VISIBLE_DEVICES": value})
    assert probe is None
    assert u.reason == HIDES_EVERY_GPU
    assert fake.init_count == fake.shutdown_count == 1


@pytest.mark.parametrize(("value", "why"), [
    ("abc", "not a GPU index"),
    ("cuda:0", "not a GPU index"),
    ("7", "no GPU with index 7"),
    ("GPU-ffff", "matches no GPU"),
    ("GPU-8932", "ambiguous"),  # prefix of UUIDS[0] and UUIDS[1]
    ("MIG-0aa1", "matches no MIG device"),
    (",0", "not a GPU index"),
])
def test_invalid_first_entry_is_unavailable_with_accepted_forms(value: str, why: str) -> None:
    fake = FakeNVML(four_gpus())
    probe, [u] = open_probe(fake, {"CUDA_VISIBLE_DEVICES": value})
    assert probe is None
    assert why in u.reason
    assert "accepted:" in u.reason and "GPU-" in u.reason and "MIG-" in u.reason
    assert "CUDA_VISIBLE_DEVICES" in u.hint
    assert fake.shutdown_count == 1
    gpus = [GpuIdentity(i, u_) for i, u_ in enumerate(UUIDS)]
    with pytest.raises(ConfigError, match="accepted:"):
        select_visible(value, gpus)


@pytest.mark.parametrize(("value", "expected", "why"), [
    ("0,abc,1", [0], "'abc'"),
    ("1,9,2", [1], "no GPU with index 9"),
    ("0,0,1", [0], "listed twice"),
    (f"2,{UUIDS[2]}", [2], "listed twice"),
])
def test_invalid_later_entry_stops_the_list_like_cuda(value: str, expected: list[int],
                                                      why: str) -> None:
    probe, missing = open_probe(FakeNVML(four_gpus()), {"CUDA_VISIBLE_DEVICES": value})
    assert not missing
    assert nvml_indices(probe) == expected
    [warning] = probe.drain_warnings()
    assert why in warning and "ignores it and everything after it" in warning
    probe.close()


def mig_gpus() -> list[FakeGPU]:
    gpus = four_gpus()
    gpus[1].mig_uuids = [MIGS[0], "MIG-5555aaaa-0000-1111-2222-333344445555"]
    gpus[3].mig_uuids = [MIGS[1]]
    return gpus


@pytest.mark.parametrize(("value", "mig"), [(MIGS[0], MIGS[0]), (MIGS[0][:12], MIGS[0]),
                                            (f"MIG-{UUIDS[1]}/1/0", f"MIG-{UUIDS[1]}/1/0")])
def test_mig_device_maps_to_its_parent_gpu_with_a_warning(value: str, mig: str) -> None:
    probe, missing = open_probe(FakeNVML(mig_gpus()), {"CUDA_VISIBLE_DEVICES": value})
    assert not missing
    [channel] = probe.channels
    assert channel.meta["nvml_index"] == 1 and channel.meta["uuid"] == UUIDS[1]
    assert channel.meta["mig_uuids"] == [mig]
    # one 1-slice MIG device of an A100-80GB in MIG mode: 14 of its 98 SMs
    assert channel.meta["mig_share"] == pytest.approx(14 / 98)
    warning, share = probe.drain_warnings()
    assert "whole GPU" in warning and "not this slice" in warning
    assert "14 of 98 SMs" in share and "7g.80gb" in share
    probe.close()


def test_two_mig_slices_of_one_gpu_are_one_channel() -> None:
    value = f"{MIGS[1]},{MIGS[0]},MIG-5555"
    probe, _ = open_probe(FakeNVML(mig_gpus()), {"CUDA_VISIBLE_DEVICES": value})
    assert nvml_indices(probe) == [3, 1]
    assert probe.channels[1].meta["mig_uuids"] == [MIGS[0],
                                                   "MIG-5555aaaa-0000-1111-2222-333344445555"]
    warnings = probe.drain_warnings()  # per parent GPU: the whole GPU's, and the share
    assert len([w for w in warnings if "whole GPU's, shared" in w]) == 2
    assert len([w for w in warnings if "SMs (largest GPU-instance profile" in w]) == 2
    probe.close()


def test_mixed_models_warn_when_cuda_order_is_not_pci_bus() -> None:
    gpus = four_gpus()
    gpus[3].name = "NVIDIA RTX A6000"
    probe, _ = open_probe(FakeNVML(gpus), {"CUDA_VISIBLE_DEVICES": "0,3"})
    [warning] = probe.drain_warnings()
    assert "CUDA_DEVICE_ORDER" in warning
    probe.close()
    probe, _ = open_probe(FakeNVML(gpus), {"CUDA_VISIBLE_DEVICES": "0,3",
                                           "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert probe.drain_warnings() == []
    probe.close()
    probe, _ = open_probe(FakeNVML(gpus), {"CUDA_VISIBLE_DEVICES": UUIDS[3]})
    assert probe.drain_warnings() == []
    probe.close()


def test_select_visible_accepted_forms_text() -> None:
    assert "'-1'" in ACCEPTED_VISIBLE_DEVICES and "prefix" in ACCEPTED_VISIBLE_DEVICES
    assert select_visible(None, []).gpus == ()


# -- channels and methods ----------------------------------------------------------------------
def test_channel_meta_and_methods_by_architecture() -> None:
    gpus = [
        FakeGPU(name="Tesla P100-PCIE-16GB", arch="pascal", power_limit_w=250.0),
        FakeGPU(name="Tesla V100-SXM2-32GB", arch="volta", power_limit_w=300.0),
        FakeGPU(name="NVIDIA A100-SXM4-80GB", arch="ampere", power_limit_w=400.0),
        FakeGPU(name="NVIDIA H100 80GB HBM3", arch="hopper", power_limit_w=700.0),
        FakeGPU(name="Mystery GPU", arch=None, power_limit_w=None),  # arch NotSupported
        FakeGPU(name="Odd V100", arch="volta", energy_counter=False, power_instant=False),
    ]
    fake = FakeNVML(gpus, clock=FakeClock())
    probe, missing = open_probe(fake)
    assert not missing
    methods = [c.method for c in probe.channels]
    assert methods == ["integrated", "counter", "counter", "counter", "integrated",
                       "integrated"]
    for c in probe.channels:
        assert c.kind == "gpu" and c.source == "nvml"
        expected_resolution = COUNTER_UPDATE_PERIOD_S if c.method == "counter" else 1 / 50
        assert c.resolution_s == pytest.approx(expected_resolution)
    p100, v100, _, h100, mystery, odd = probe.channels
    assert h100.device == "NVIDIA H100 80GB HBM3"
    assert h100.meta["architecture"] == "hopper" and h100.meta["power_limit_w"] == 700.0
    assert h100.meta["uuid"] == gpus[3].uuid and h100.meta["nvml_index"] == 3
    assert h100.meta["pci_bus_id"] == gpus[3].pci_bus_id
    assert h100.meta["name"] == "NVIDIA H100 80GB HBM3"
    assert p100.meta["architecture"] == "pascal"
    assert p100.meta["power_source"] == "power_usage"  # no POWER_INSTANT field before Volta
    assert v100.meta["power_source"] == "power_instant"
    assert mystery.meta["architecture"] == "unknown" and "power_limit_w" not in mystery.meta
    assert odd.meta["power_source"] == "power_usage"
    assert probe.describe()["driver_version"] == "550.54.15"
    assert probe.describe()["poll_hz"] == 50.0
    probe.close()


def test_gpu_without_any_power_reading_is_unavailable() -> None:
    gpus = [FakeGPU(arch="pascal", unsupported={"nvmlDeviceGetPowerUsage"}),
            FakeGPU(arch="hopper")]
    probe, [u] = open_probe(FakeNVML(gpus, clock=FakeClock()))
    assert "neither an energy counter nor power readings" in u.reason
    assert [c.meta["nvml_index"] for c in probe.channels] == [1]
    probe.close()


# -- energy ---------------------------------------------------------------------------------------
def test_two_volta_gpus_counter_energy_is_exact() -> None:
    clock = FakeClock()
    gpus = [FakeGPU(name="Tesla V100-SXM2-16GB", arch="volta", power_w=250.0),
            FakeGPU(name="Tesla V100-SXM2-16GB", arch="volta",
                    power_w=sine_trace(180.0, 60.0, 1.3))]
    fake = FakeNVML(gpus, clock=clock)
    clock.advance(0.05)  # open between two counter updates
    probe, _ = open_probe(fake)
    assert probe.read() == {"gpu0": 0.0, "gpu1": 0.0}
    start = [fake.counter_mj(0), fake.counter_mj(1)]
    clock.advance(2.0)
    energy = probe.read()
    assert energy["gpu0"] == 500.0  # 250 W x 2.0 s, exactly
    assert energy["gpu1"] == (fake.counter_mj(1) - start[1]) / 1000
    assert energy["gpu1"] == pytest.approx(fake.energy_j(1, 0.05, 2.05), rel=0.02)
    clock.advance(1.234)
    energy = probe.read()
    assert energy["gpu0"] == (fake.counter_mj(0) - start[0]) / 1000 == 250.0 * 3.2
    assert energy["gpu1"] == (fake.counter_mj(1) - start[1]) / 1000
    # the counter only moves every 100 ms: reads in between change nothing
    clock.advance(0.01)
    assert probe.read() == energy
    probe.close()
    assert fake.shutdown_count == 1
    probe.close()
    assert fake.shutdown_count == 1  # idempotent


@pytest.mark.parametrize("trace", [sine_trace(150.0, 100.0, 0.7),
                                   steps_trace([60.0, 250.0, 120.0, 300.0], 0.413)],
                         ids=["sine", "steps"])
def test_pre_volta_polled_power_integrates_within_one_percent(trace) -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(name="Tesla P100-PCIE-16GB", arch="pascal", power_w=trace)],
                    clock=clock)
    probe, _ = open_probe(fake)
    t0 = fake.elapsed_s()
    for _ in range(4 * 50):  # 4 s polled at 50 Hz
        clock.advance(0.02)
        probe.poll()
    clock.advance(0.007)  # a boundary read between polls integrates up to its own time
    energy = probe.read()["gpu0"]
    exact = fake.energy_j(0, t0, fake.elapsed_s())
    assert energy == pytest.approx(exact, rel=0.01)
    probe.close()


def test_polling_thread_runs_at_the_requested_rate() -> None:
    fake = FakeNVML([FakeGPU(arch="pascal", power_w=200.0)])
    [probe] = discover(DiscoveryContext(pynvml=fake), poll_hz=50)
    before = fake.calls["nvmlDeviceGetPowerUsage"]  # discovery's
    with Lateness() as late:  # how late this machine runs a thread meanwhile (CI is busy)
        probe.begin_run()  # the poller runs while a run uses the probe
        t0 = time.monotonic()
        time.sleep(0.5)
        energy = probe.read()["gpu0"]
        elapsed = time.monotonic() - t0
        polls = fake.calls["nvmlDeviceGetPowerUsage"] - before
    probe.close()
    period_s = 1 / 50
    # Never faster than asked; slower only by how late a thread ran (each poll at most).
    # Besides the poller's: begin_run's and read()'s own samples, and the power gauge's.
    assert elapsed / (period_s + late.max_s) - 2 <= polls <= elapsed / period_s + 2 + 3
    # The energy of the polled span: what precedes the first poll and follows the last is
    # at most one period each, plus lateness.
    assert energy == pytest.approx(200.0 * elapsed, abs=200.0 * 2 * (period_s + late.max_s))
    after = fake.calls["nvmlDeviceGetPowerUsage"]
    time.sleep(0.1)
    assert fake.calls["nvmlDeviceGetPowerUsage"] == after  # the thread stopped
    assert fake.shutdown_count == 1


def test_counter_reset_counts_the_energy_after_it() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="ampere", power_w=100.0, counter_reset_at_s=1.0)],
                    clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(0.5)
    assert probe.read()["gpu0"] == 50.0
    clock.advance(1.0)  # reset at 1.0 s: the counter restarts from 0 and reads 50 J at 1.5 s
    # Counted once the next reading confirms it is a restart (not a one-reading dip).
    assert probe.read()["gpu0"] == 50.0
    assert probe.drain_warnings() == []
    clock.advance(1.0)
    # 50 J before the first read, 150 J since the reset: only 0.5..1.0 s is lost
    assert probe.read()["gpu0"] == 200.0
    [warning] = probe.drain_warnings()
    assert "went back to near 0" in warning and "since the reset" in warning
    probe.close()


def test_a_dip_to_near_zero_for_one_reading_loses_nothing() -> None:
    """intel/compute-runtime#938 saw an energy counter read ~0 once and then its true value;
    through the probe, such a dip counts nothing while it lasts and nothing is lost after."""
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=500.0, counter_offset_mj=10**10)],
                    clock=clock)
    probe, _ = open_probe(fake)
    real = fake.nvmlDeviceGetTotalEnergyConsumption
    dips = [3_000_000]  # 3 kJ: under the 5 kW x (1 s + 1 s) bound, so it looks like a restart
    fake.nvmlDeviceGetTotalEnergyConsumption = (  # type: ignore[method-assign]
        lambda handle: dips.pop() if dips else real(handle))
    values = []
    for _ in range(3):
        clock.advance(1.0)
        values.append(probe.read()["gpu0"])
    assert values == [0.0, pytest.approx(1000.0), pytest.approx(1500.0)]
    [warning] = probe.drain_warnings()
    assert "read near 0 once" in warning and "nothing lost" in warning
    probe.close()


@pytest.mark.parametrize("glitch_mj", [-918_000, 10**10])
def test_one_implausible_counter_reading_is_ignored(glitch_mj: int) -> None:
    """A reading that steps back without restarting from 0, or jumps up by more than a GPU
    can draw, would add the counter's whole since-boot value (or the jump) to the run: it
    is ignored with a warning, and the next good reading catches up."""
    clock = FakeClock()
    # the counter holds the energy since the driver loaded: ~10 MJ after 8 h at 350 W
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=500.0, counter_offset_mj=10**10)],
                    clock=clock)
    probe, _ = open_probe(fake)
    real = fake.nvmlDeviceGetTotalEnergyConsumption
    glitches = [glitch_mj]

    def reading(handle: object) -> int:
        value = real(handle)
        return value + glitches.pop() if glitches else value

    fake.nvmlDeviceGetTotalEnergyConsumption = reading  # type: ignore[method-assign]
    clock.advance(1.0)
    assert probe.read()["gpu0"] == 0.0  # the glitch: nothing counted
    [warning] = probe.drain_warnings()
    assert "implausible reading" in warning and "ignored" in warning
    clock.advance(1.0)
    assert probe.read()["gpu0"] == pytest.approx(1000.0)  # 2 s at 500 W: nothing lost
    probe.close()


@pytest.mark.parametrize("glitch_mj", [-918_000, 10**9])
def test_a_glitch_after_an_hour_of_a_cached_probe_is_still_ignored(glitch_mj: int) -> None:
    """A probe cached between runs: its bound on the first read of a run starts at the run's
    resync, not an hour earlier (11.8 MJ were once counted for a 1 s run)."""
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=500.0, counter_offset_mj=10**10)],
                    clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(3600.0)  # no run meanwhile
    probe.begin_run()
    base = probe.read()["gpu0"]
    real = fake.nvmlDeviceGetTotalEnergyConsumption
    glitches = [glitch_mj]
    fake.nvmlDeviceGetTotalEnergyConsumption = (  # type: ignore[method-assign]
        lambda handle: real(handle) + (glitches.pop() if glitches else 0))
    clock.advance(1.0)
    assert probe.read()["gpu0"] - base == 0.0
    clock.advance(1.0)
    assert probe.read()["gpu0"] - base == pytest.approx(1000.0)
    probe.end_run()
    probe.close()


def test_a_jump_that_stays_is_the_new_baseline_and_says_energy_was_lost() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=500.0, counter_offset_mj=10**10)],
                    clock=clock)
    probe, _ = open_probe(fake)
    real = fake.nvmlDeviceGetTotalEnergyConsumption
    fake.nvmlDeviceGetTotalEnergyConsumption = (  # type: ignore[method-assign]
        lambda handle: real(handle) + 10**9)
    for _ in range(3):
        clock.advance(1.0)
        probe.read()
    warnings = probe.drain_warnings()
    assert any("ignored" in w for w in warnings)
    assert any("new baseline" in w and "lost" in w for w in warnings)  # not folded into "ignored"
    clock.advance(1.0)
    assert probe.read()["gpu0"] == pytest.approx(500.0)  # the second after the new baseline
    probe.close()


def test_lost_gpu_freezes_its_channel_and_others_continue() -> None:
    clock = FakeClock()
    gpus = [FakeGPU(arch="hopper", power_w=300.0),
            FakeGPU(arch="hopper", power_w=200.0, lost_at_s=1.0),
            FakeGPU(arch="pascal", power_w=100.0, lost_at_s=1.5)]
    fake = FakeNVML(gpus, clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(0.5)
    probe.poll()
    first = probe.read()
    assert first == pytest.approx({"gpu0": 150.0, "gpu1": 100.0, "gpu2": 50.0})
    for _ in range(3):
        clock.advance(0.5)
        probe.poll()
        energy = probe.read()
    assert energy["gpu0"] == pytest.approx(600.0)
    assert energy["gpu1"] == first["gpu1"]  # frozen at the last good reading
    assert energy["gpu2"] == pytest.approx(100.0)  # lost at 1.5 s, after the 1.0 s read
    warnings = probe.drain_warnings()
    assert len(warnings) == 2
    assert all("was lost" in w for w in warnings)
    assert "gpu1" in warnings[0] and gpus[1].uuid in warnings[0]
    clock.advance(0.5)
    assert probe.read()["gpu1"] == first["gpu1"]
    assert probe.drain_warnings() == []  # recorded once
    assert "gpu1_power_w" not in probe.gauges()
    probe.close()


def test_nvml_unknown_error_also_means_lost() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=300.0)], clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(1.0)
    assert probe.read()["gpu0"] == 300.0
    fake.fail(0, "nvmlDeviceGetTotalEnergyConsumption", "Unknown")
    clock.advance(1.0)
    assert probe.read()["gpu0"] == 300.0
    assert "was lost" in probe.drain_warnings()[0]
    probe.close()


def test_other_nvml_errors_during_read_raise_probe_error() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=300.0)], clock=clock)
    probe, _ = open_probe(fake)
    fake.fail(0, "nvmlDeviceGetTotalEnergyConsumption", "Timeout")
    clock.advance(1.0)
    with pytest.raises(ProbeError, match="gpu0"):
        probe.read()
    fake.clear_failures()
    assert probe.read()["gpu0"] == 300.0  # nothing lost: the counter kept counting
    probe.close()


def test_failed_power_polls_are_bridged_and_warned() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="pascal", power_w=100.0)], clock=clock)
    probe, _ = open_probe(fake)
    fake.fail(0, "nvmlDeviceGetPowerUsage", "Timeout")
    for _ in range(5):
        clock.advance(0.02)
        probe.poll()
    fake.clear_failures()
    clock.advance(0.02)
    assert probe.read()["gpu0"] == pytest.approx(12.0)
    assert "power polls failed" in probe.drain_warnings()[0]
    probe.close()


def test_closed_probe_keeps_its_last_values() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(arch="hopper", power_w=300.0)], clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(1.0)
    assert probe.read()["gpu0"] == 300.0
    probe.close()
    clock.advance(1.0)
    assert probe.read()["gpu0"] == 300.0
    assert probe.gauges() == {}


def test_check_interval_warns_below_counter_period() -> None:
    probe, _ = open_probe(FakeNVML([FakeGPU(arch="hopper")], clock=FakeClock()))
    assert probe.check_interval(0.1) == []
    [warning] = probe.check_interval(0.02)
    assert "100 ms" in warning
    probe.close()


# -- gauges ----------------------------------------------------------------------------------------
def test_gauges_including_process_tree_memory() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me = os.getpid()
        gpus = [
            FakeGPU(arch="hopper", power_w=321.0, memory_used_bytes=5 * 2**30,
                    utilization_pct=87, temperature_c=61, sm_clock_mhz=1755,
                    processes=[FakeProcess(me, 2**30), FakeProcess(child.pid, 512 * 2**20),
                               FakeProcess(999_999_999, 4 * 2**30),  # someone else's
                               FakeProcess(me, 2**30, kind="graphics"),  # same process again
                               FakeProcess(child.pid, None, kind="graphics")]),
            FakeGPU(arch="pascal", power_w=55.0, unsupported={"nvmlDeviceGetTemperature"},
                    processes=[FakeProcess(child.pid, 256 * 2**20)]),
            FakeGPU(arch="volta", unsupported={"nvmlDeviceGetComputeRunningProcesses",
                                               "nvmlDeviceGetGraphicsRunningProcesses"}),
        ]
        probe, _ = open_probe(FakeNVML(gpus, clock=FakeClock()))
        assert probe.gauge_names == (
            "gpu0_memory_used_bytes", "gpu0_process_memory_bytes", "gpu0_utilization_pct",
            "gpu0_temperature_c", "gpu0_sm_clock_mhz", "gpu0_power_w", "gpu0_own_share",
            "gpu1_memory_used_bytes", "gpu1_process_memory_bytes", "gpu1_utilization_pct",
            "gpu1_temperature_c", "gpu1_sm_clock_mhz", "gpu1_power_w", "gpu1_own_share",
            "gpu2_memory_used_bytes", "gpu2_process_memory_bytes", "gpu2_utilization_pct",
            "gpu2_temperature_c", "gpu2_sm_clock_mhz", "gpu2_power_w", "gpu2_own_share",
            "gpu_process_memory_bytes")
        gauges = probe.gauges()
        assert set(gauges) <= set(probe.gauge_names)
        assert gauges["gpu0_memory_used_bytes"] == 5 * 2**30
        assert gauges["gpu0_process_memory_bytes"] == 2**30 + 512 * 2**20
        assert gauges["gpu0_utilization_pct"] == 87
        assert gauges["gpu0_temperature_c"] == 61
        assert gauges["gpu0_sm_clock_mhz"] == 1755
        assert gauges["gpu0_power_w"] == 321.0
        assert "gpu1_temperature_c" not in gauges  # NotSupported: simply absent
        assert gauges["gpu1_power_w"] == 55.0
        assert gauges["gpu1_process_memory_bytes"] == 256 * 2**20
        assert "gpu2_process_memory_bytes" not in gauges
        assert gauges["gpu_process_memory_bytes"] == 2**30 + 768 * 2**20
        assert probe.drain_warnings() == []
        probe.close()
    finally:
        child.kill()
        child.wait()


def test_gauges_for_another_measured_pid() -> None:
    gpus = [FakeGPU(arch="hopper", processes=[FakeProcess(os.getpid(), 2**30),
                                              FakeProcess(4242, 3 * 2**30)])]
    found = discover(DiscoveryContext(pynvml=FakeNVML(gpus, clock=FakeClock()), pid=4242),
                     start_poller=False)
    [probe] = found
    assert probe.gauges()["gpu_process_memory_bytes"] == 3 * 2**30
    probe.close()


def test_failing_gauge_is_omitted_and_warned_once() -> None:
    fake = FakeNVML([FakeGPU(arch="hopper")], clock=FakeClock())
    probe, _ = open_probe(fake)
    fake.fail(0, "nvmlDeviceGetUtilizationRates", "NoPermission")
    assert "gpu0_utilization_pct" not in probe.gauges()
    assert "gpu0_utilization_pct" not in probe.gauges()
    [warning] = probe.drain_warnings()
    assert "utilization_pct" in warning
    assert "gpu0_memory_used_bytes" in probe.gauges()
    probe.close()


# -- through the whole library -----------------------------------------------------------------
def test_measure_reports_gpu_energy_and_peak_process_memory(tmp_path: Path) -> None:
    from energymeter import measure

    gpus = [FakeGPU(arch="hopper", power_w=250.0,
                    processes=[FakeProcess(os.getpid(), 3 * 2**30)]),
            FakeGPU(arch="pascal", power_w=80.0)]
    fake = FakeNVML(gpus)
    with measure("gpu", pynvml=fake, env={"CUDA_VISIBLE_DEVICES": "1,0"}, out=tmp_path,
                 powercap_root=tmp_path / "absent", region="SE") as m:
        time.sleep(0.6)
    r = m.report
    by_id = {c.channel.id: c for c in r.channels}
    assert by_id["gpu0"].channel.method == "integrated"  # NVML 1, the Pascal
    assert by_id["gpu1"].channel.method == "counter"  # NVML 0, the Hopper
    assert by_id["gpu0"].energy_j == pytest.approx(80.0 * r.duration_s, rel=0.05)
    # the counter moves in 100 ms steps: within one step of 250 W x duration
    assert abs(by_id["gpu1"].energy_j - 250.0 * r.duration_s) <= 25.0 + 1e-6
    assert r.energy_j["by_kind"]["gpu"] == pytest.approx(
        by_id["gpu0"].energy_j + by_id["gpu1"].energy_j)
    assert r.to_dict()["resources"]["peak_gpu_memory_bytes"] == 3 * 2**30


def test_report_of_two_volta_gpus_equals_simulated_energy_exactly(tmp_path: Path) -> None:
    """The whole chain — probe, sampler, boundary reads, report — adds no error to counters."""
    from energymeter import measure

    clock = FakeClock()
    gpus = [FakeGPU(name="Tesla V100-SXM2-16GB", arch="volta", power_w=250.0),
            FakeGPU(name="Tesla V100-SXM2-16GB", arch="volta", power_w=120.0)]
    fake = FakeNVML(gpus, clock=clock)
    clock.advance(0.05)  # between two counter updates
    m = measure("volta", pynvml=fake, env={}, out=tmp_path, powercap_root=tmp_path / "absent",
                region="SE", interval_s=0.01)
    m.start()
    start_mj = [fake.counter_mj(0), fake.counter_mj(1)]
    with m.phase("half"):
        clock.advance(1.5)
        time.sleep(0.05)  # let the sampler tick on the frozen clock
    clock.advance(1.5)
    report = m.stop()
    by_id = {c.channel.id: c for c in report.channels}
    simulated = [(fake.counter_mj(i) - start_mj[i]) / 1000 for i in (0, 1)]
    assert simulated == [750.0, 360.0]  # 250 W and 120 W for 3.0 s
    assert [by_id["gpu0"].energy_j, by_id["gpu1"].energy_j] == simulated
    assert report.energy_j["by_kind"]["gpu"] == 1110.0
    assert report.phases[0].energy_by_channel["gpu0"] == 375.0
    assert all(c.channel.method == "counter" for c in by_id.values() if c.channel.kind == "gpu")


def test_power_poller_runs_only_while_a_run_uses_the_probe(tmp_path: Path) -> None:
    from energymeter import measure

    fake = FakeNVML([FakeGPU(arch="pascal", power_w=80.0)])
    for name in ("first", "second"):  # the cached probe serves both runs
        with measure(name, pynvml=fake, env={}, out=tmp_path,
                     powercap_root=tmp_path / "absent", region="SE") as m:
            time.sleep(0.3)
        assert m.report.channels[0].energy_j == pytest.approx(80.0 * m.report.duration_s,
                                                               rel=0.05)
        polls = fake.calls["nvmlDeviceGetPowerUsage"]
        time.sleep(0.3)
        assert fake.calls["nvmlDeviceGetPowerUsage"] == polls  # 50 Hz between runs, no more


def test_a_wedged_driver_never_hangs_the_program_and_the_gpu_comes_back(tmp_path: Path) -> None:
    """An NVML call that blocks (a wedged driver) must not hang phase() or stop(); once it
    returns the GPU is measured again, its counter covering the gap."""
    import threading

    from energymeter import measure

    fake = FakeNVML([FakeGPU(arch="hopper", power_w=100.0)])
    release = threading.Event()
    kwargs = dict(pynvml=fake, env={}, out=tmp_path, powercap_root=tmp_path / "absent",
                  region="SE")
    before = set(threading.enumerate())  # other tests' threads are not this one's business
    m = measure("wedged", **kwargs)
    with m:
        time.sleep(0.3)
        fake.hang(0, "nvmlDeviceGetTotalEnergyConsumption", release)
        begun = time.monotonic()
        with m.phase("during"):
            time.sleep(0.1)
        phase_s = time.monotonic() - begun
        stop_begun = time.monotonic()
    stop_s = time.monotonic() - stop_begun
    assert phase_s < 3.5 and stop_s < 4.0  # bounded waits (1 s per stuck call), no hang
    assert m.report.status == "completed"
    assert any("did not return" in w for w in m.report.warnings)
    release.set()  # the driver answers again
    time.sleep(0.3)
    with measure("after", **kwargs) as m2:
        time.sleep(0.4)
    gpu = next(c for c in m2.report.channels if c.channel.kind == "gpu")
    assert gpu.energy_j == pytest.approx(100.0 * m2.report.duration_s, abs=15.0)
    time.sleep(0.3)
    names = [t.name for t in set(threading.enumerate()) - before]
    assert "energymeter-nvml-poll" not in names and names.count("energymeter-probe-call") <= 1
