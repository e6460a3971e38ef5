"""NVIDIA MIG: the parent GPU's shared counter, a slice's attributed share, and no crash when
the driver refuses per-GPU calls in MIG mode."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import energymeter
from energymeter.probes.base import DiscoveryContext
from energymeter.probes.nvml import MIG_SHARE_SLICES, MIG_SHARE_SMS, discover
from tests.fakes.nvml import FakeGPU, FakeNVML

MIG_A = "MIG-aaaa1111-2222-3333-4444-555566667777"
MIG_B = "MIG-bbbb1111-2222-3333-4444-555566667777"


def _h100_with_two_slices(**kw: object) -> FakeNVML:
    args = {"power_w": 300.0, "counter_period_s": 0.001, "mig_uuids": [MIG_A, MIG_B],
            "multiprocessor_count": 132, "mig_multiprocessors": [66, 16], "mig_slices": [4, 1],
            **kw}
    gpu = FakeGPU(**args)  # type: ignore[arg-type]
    return FakeNVML([gpu])


def _open(nvml: FakeNVML, visible: str) -> object:
    found = discover(DiscoveryContext(pynvml=nvml, env={"CUDA_VISIBLE_DEVICES": visible}),
                     start_poller=False)
    [probe] = [p for p in found if hasattr(p, "channels")]
    return probe


@pytest.mark.parametrize(("visible", "share"), [(MIG_A, 0.5), (MIG_B, 16 / 132),
                                                (f"{MIG_A},{MIG_B}", 82 / 132)])
def test_share_of_the_visible_slices_by_sms(visible: str, share: float) -> None:
    probe = _open(_h100_with_two_slices(), visible)
    [channel] = probe.channels
    assert channel.meta["mig_share"] == pytest.approx(share)
    assert channel.meta["mig_share_method"] == MIG_SHARE_SMS
    probe.close()


def test_slices_when_the_driver_gives_no_sm_counts() -> None:
    nvml = _h100_with_two_slices(multiprocessor_count=0)
    probe = _open(nvml, MIG_A)
    [channel] = probe.channels
    # parent SMs unknown (0): by GPU-instance slices, 4 of 7
    assert channel.meta["mig_share"] == pytest.approx(4 / 7)
    assert channel.meta["mig_share_method"] == MIG_SHARE_SLICES
    probe.close()


def test_report_gives_the_whole_gpu_and_the_attributed_share(tmp_path: Path) -> None:
    nvml = _h100_with_two_slices(unsupported={"nvmlDeviceGetUtilizationRates",
                                              "nvmlDeviceGetMemoryInfo"})
    with energymeter.measure("mig", pynvml=nvml, env={"CUDA_VISIBLE_DEVICES": MIG_A},
                             out=tmp_path / "runs", region="SE", cpu_tdp_w=10.0) as m:
        time.sleep(0.3)
    gpu = next(c for c in m.report.channels if c.channel.kind == "gpu")
    assert gpu.energy_j == pytest.approx(300.0 * m.report.duration_s, rel=0.01)  # whole GPU
    assert gpu.attributed_energy_j == pytest.approx(0.5 * gpu.energy_j)
    data = json.loads(m.report.to_json())
    [channel] = [c for c in data["channels"] if c["kind"] == "gpu"]
    assert channel["attributed_energy_j"] == pytest.approx(0.5 * gpu.energy_j)
    again = energymeter.Report.from_dict(data)
    assert [c.attributed_energy_j for c in again.channels if c.channel.kind == "gpu"] == \
        [pytest.approx(0.5 * gpu.energy_j)]
    assert any("whole GPU" in w for w in m.report.warnings)
