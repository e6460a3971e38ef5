"""The NVML probe against what nvidia-ml-py returns across versions and drivers: bytes strings
(nvidia-ml-py before 11.515), architecture codes newer than Blackwell, GA100's instantaneous
nvmlDeviceGetPowerUsage, and the exact error classes and codes of pynvml.py."""

from __future__ import annotations

import pytest

from energymeter.probes.base import DiscoveryContext, PartialRead
from energymeter.probes.nvml import NvmlProbe, discover
from tests.fakes.nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NOT_SUPPORTED,
    FakeClock,
    FakeGPU,
    FakeNVML,
    NVMLError,
    NVMLError_GpuIsLost,
    NVMLError_NotSupported,
    steps_trace,
)


def _probe(fake: FakeNVML, env: dict[str, str] | None = None) -> NvmlProbe:
    found = discover(DiscoveryContext(pynvml=fake, env=env or {}), start_poller=False,
                     clock=fake.clock)
    [probe] = [p for p in found if isinstance(p, NvmlProbe)]
    return probe


def test_pynvml_errors_reach_the_probe_as_lost_gpus_and_partial_reads() -> None:
    """pynvml.py's error classes (NVMLError(code) builds the subclass; str() is nvmlErrorString)
    through the probe: GPU_IS_LOST marks that GPU lost for the run (its energy frozen, one
    warning, no error for the others); NOT_SUPPORTED on a read is a PartialRead of that GPU
    alone, and its counter catches up when it answers again."""
    err = NVMLError(NVML_ERROR_GPU_IS_LOST)
    assert type(err) is NVMLError_GpuIsLost and err.value == NVML_ERROR_GPU_IS_LOST
    assert str(err) == "GPU is lost"
    assert NVMLError_NotSupported() == NVMLError(NVML_ERROR_NOT_SUPPORTED)
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(power_w=200.0), FakeGPU(power_w=100.0)], clock=clock)
    probe = _probe(fake)
    assert [c.method for c in probe.channels] == ["counter", "counter"]
    clock.advance(1.0)
    assert probe.read() == pytest.approx({"gpu0": 200.0, "gpu1": 100.0})
    fake.fail(0, "nvmlDeviceGetTotalEnergyConsumption", "GpuIsLost")
    fake.fail(1, "nvmlDeviceGetTotalEnergyConsumption", "NotSupported")
    clock.advance(1.0)
    with pytest.raises(PartialRead) as info:
        probe.read()
    assert set(info.value.errors) == {"gpu1"}  # the lost GPU is no error: it is frozen
    assert "NVMLError_NotSupported: Not Supported" in info.value.errors["gpu1"]
    assert info.value.values["gpu0"] == pytest.approx(200.0)
    [lost] = [w for w in probe.drain_warnings() if "was lost" in w]
    assert "gpu0" in lost and "GPU is lost" in lost
    fake.clear_failures()
    clock.advance(1.0)
    energy = probe.read()
    assert energy["gpu0"] == pytest.approx(200.0)  # lost for the rest of the run
    assert energy["gpu1"] == pytest.approx(300.0)  # the gap is counted
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] > 0
    probe.close()


def test_bytes_strings_of_old_nvidia_ml_py() -> None:
    fake = FakeNVML([FakeGPU(uuid="GPU-8932f937-d72c-4106-c12f-20bd9faed9f6")],
                    bytes_strings=True)
    probe = _probe(fake, {"CUDA_VISIBLE_DEVICES": "GPU-8932f937"})
    [channel] = probe.channels
    assert channel.device == "NVIDIA H100 80GB HBM3"
    assert channel.meta["uuid"] == "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
    assert channel.meta["pci_bus_id"] == "00000000:18:00.0"
    assert probe.describe()["driver_version"] == "550.54.15"
    probe.close()


def test_architecture_after_blackwell_is_named() -> None:
    probe = _probe(FakeNVML([FakeGPU(name="NVIDIA Rubin", arch="rubin")]))
    [channel] = probe.channels
    assert channel.meta["architecture"] == "rubin" and channel.method == "counter"
    probe.close()


@pytest.mark.parametrize("instant_field", [True, False])
@pytest.mark.parametrize(("name", "averaged"), [("NVIDIA A100-SXM4-80GB", False),
                                                ("NVIDIA A30", False),
                                                ("NVIDIA RTX A6000", True)])
def test_integrated_ampere_channel_follows_steps_except_where_nvml_averages(
        name: str, averaged: bool, instant_field: bool) -> None:
    """nvml.h nvmlDeviceGetPowerUsage: "On Ampere (except GA100) or newer GPUs, the API returns
    power averaged over 1 sec interval. On GA100 and older architectures, instantaneous".
    The probe integrates NVML_FI_DEV_POWER_INSTANT where the driver has it (every GPU then
    follows the steps), else nvmlDeviceGetPowerUsage: a GA100 channel still follows
    100 W / 300 W steps of 0.5 s, an RTX A6000's follows their 1 s average (200 W)."""
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(name=name, arch="ampere", energy_counter=False,
                             power_instant=instant_field,
                             power_w=steps_trace([100.0, 300.0], 0.5))], clock=clock)
    probe = _probe(fake)
    [channel] = probe.channels
    assert channel.method == "integrated"
    assert channel.meta["power_source"] == ("power_instant" if instant_field else "power_usage")
    for _ in range(40):  # 2 s of polls at 20 Hz
        clock.advance(0.05)
        probe.poll()
    start = probe.read()["gpu0"]
    for _ in range(10):  # 2.0 .. 2.5 s after the start: a 100 W step
        clock.advance(0.05)
        probe.poll()
    step_j = probe.read()["gpu0"] - start
    follows = instant_field or not averaged
    # 0.5 s at 100 W, with at most one 0.05 s trapezoid over the edge to 300 W.
    assert step_j == (pytest.approx(50.0, abs=6.0) if follows else pytest.approx(100.0, abs=1.0))
    probe.close()
