"""The NVML probe against what nvidia-ml-py returns across versions and drivers: bytes strings
(nvidia-ml-py before 11.515), architecture codes newer than Blackwell, GA100's instantaneous
nvmlDeviceGetPowerUsage, and the exact error classes and codes of pynvml.py."""

from __future__ import annotations

import pytest

from energymeter.probes.base import DiscoveryContext
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


def test_errors_are_pynvmls_classes_codes_and_strings() -> None:
    err = NVMLError(NVML_ERROR_GPU_IS_LOST)
    assert type(err) is NVMLError_GpuIsLost and err.value == NVML_ERROR_GPU_IS_LOST
    assert str(err) == "GPU is lost"
    assert NVMLError_NotSupported() == NVMLError(NVML_ERROR_NOT_SUPPORTED)
    assert NVMLError_NotSupported("ignored").value == NVML_ERROR_NOT_SUPPORTED


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


@pytest.mark.parametrize(("name", "averaged"), [("NVIDIA A100-SXM4-80GB", False),
                                                ("NVIDIA A30", False),
                                                ("NVIDIA RTX A6000", True)])
def test_power_usage_is_averaged_on_ampere_except_ga100(name: str, averaged: bool) -> None:
    # nvml.h nvmlDeviceGetPowerUsage: "On Ampere (except GA100) or newer GPUs, the API returns
    # power averaged over 1 sec interval. On GA100 and older architectures, instantaneous"
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(name=name, arch="ampere", power_w=steps_trace([100.0, 300.0], 0.5))],
                    clock=clock)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    clock.advance(1.25)  # in the second 100 W step; the last second averaged 200 W
    mw = fake.nvmlDeviceGetPowerUsage(handle)
    assert mw == (200_000 if averaged else 100_000)
    fake.nvmlShutdown()
