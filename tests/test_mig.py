"""NVIDIA MIG: the parent GPU's shared counter, a slice's attributed share (from what NVML
gives: per-MIG-device attributes and the GPU's GPU-instance profiles, never a constant), and no
crash when the driver refuses per-GPU calls in MIG mode.

The fake follows nvml.h: nvmlDeviceGetAttributes answers MIG device handles only (NOT_SUPPORTED
on the physical GPU's), so the GPU's SMs come from its largest GPU-instance profile
(nvmlDeviceGetGpuInstanceProfileInfo): 98 SMs in 7 slices on A100-40GB, 132 in 7 on H100,
56 in 4 on A30 (NVIDIA MIG User Guide, "Supported MIG Profiles").
"""

from __future__ import annotations

import ctypes
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energymeter
from energymeter.probes.base import DiscoveryContext
from energymeter.probes.nvml import MIG_SHARE_SLICES, MIG_SHARE_SMS, NvmlProbe, discover
from tests.fakes.nvml import (
    A30_PROFILES,
    A100_40GB_PROFILES,
    H100_80GB_PROFILES,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    FakeGPU,
    FakeMigDevice,
    FakeNVML,
    NVMLError,
    NVMLError_NotFound,
    NVMLError_NotSupported,
)

MIG_A = "MIG-aaaa1111-2222-3333-4444-555566667777"
MIG_B = "MIG-bbbb1111-2222-3333-4444-555566667777"
MIG_C = "MIG-cccc1111-2222-3333-4444-555566667777"
A30 = "NVIDIA A30"
A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"


def _gpu(name: str, devices: list[FakeMigDevice | None], **kw: object) -> FakeGPU:
    args = {"name": name, "arch": "hopper" if "H100" in name else "ampere", "power_w": 300.0,
            "counter_period_s": 0.001, "mig_devices": devices, **kw}
    return FakeGPU(**args)  # type: ignore[arg-type]


def _h100_with_two_slices(**kw: object) -> FakeNVML:
    return FakeNVML([_gpu(H100, [FakeMigDevice(MIG_A, "4g.40gb", gi_id=1),
                                 FakeMigDevice(MIG_B, "1g.10gb", gi_id=2)], **kw)])


def _open(nvml: FakeNVML, visible: str) -> NvmlProbe:
    found = discover(DiscoveryContext(pynvml=nvml, env={"CUDA_VISIBLE_DEVICES": visible}),
                     start_poller=False)
    [probe] = [p for p in found if isinstance(p, NvmlProbe)]
    return probe


def _channel_meta(nvml: FakeNVML, visible: str) -> tuple[dict, list[str]]:
    probe = _open(nvml, visible)
    [channel] = probe.channels
    notes = probe.drain_warnings()
    probe.close()
    return dict(channel.meta), notes


# -- the fake answers as NVML does ------------------------------------------------------------
def test_fake_refuses_attributes_of_the_physical_gpu_as_nvml_does() -> None:
    nvml = _h100_with_two_slices()
    nvml.nvmlInit()
    parent = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(NVMLError_NotSupported) as info:
        nvml.nvmlDeviceGetAttributes(parent)
    assert info.value.value == NVML_ERROR_NOT_SUPPORTED and str(info.value) == "Not Supported"
    assert type(NVMLError(NVML_ERROR_NOT_FOUND)) is NVMLError_NotFound
    mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 1)
    assert mig != parent
    attrs = nvml.nvmlDeviceGetAttributes(mig)
    assert isinstance(attrs, ctypes.Structure)
    assert (attrs.multiprocessorCount, attrs.gpuInstanceSliceCount) == (16, 1)
    assert nvml.nvmlDeviceGetMigMode(parent) == [1, 1]
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(parent) == 7
    with pytest.raises(NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 2)  # an empty MIG index
    assert nvml.nvmlDeviceIsMigDeviceHandle(mig).value == 1  # pynvml returns the c_uint
    full = nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, nvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE)
    assert (full.sliceCount, full.multiprocessorCount, full.name) == (7, 132, b"MIG 7g.80gb")
    with pytest.raises(NVMLError_NotSupported):  # power is the physical GPU's only
        nvml.nvmlDeviceGetTotalEnergyConsumption(mig)
    with pytest.raises(NVMLError_NotSupported):  # nvml.h: not on MIG-enabled GPUs
        nvml.nvmlDeviceGetUtilizationRates(parent)
    nvml.nvmlShutdown()


def test_a30_has_four_slices_and_no_7g_profile() -> None:
    nvml = FakeNVML([_gpu(A30, [FakeMigDevice(MIG_A, "1g.6gb", gi_id=1)])])
    nvml.nvmlInit()
    parent = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(parent) == 4
    with pytest.raises(NVMLError_NotSupported):
        nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, nvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE)
    full = nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, nvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE)
    assert (full.sliceCount, full.multiprocessorCount) == (4, 56)
    nvml.nvmlShutdown()


# -- the share ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("visible", "share"), [(MIG_A, 64 / 132), (MIG_B, 16 / 132),
                                                (f"{MIG_A},{MIG_B}", 80 / 132)])
def test_h100_share_of_the_visible_slices_by_sms(visible: str, share: float) -> None:
    meta, notes = _channel_meta(_h100_with_two_slices(), visible)
    assert meta["mig_share"] == pytest.approx(share)
    assert meta["mig_share_method"] == MIG_SHARE_SMS
    assert "of 132 SMs" in meta["mig_share_basis"] and "7g.80gb" in meta["mig_share_basis"]
    assert any("MIG" in n and f"{share:.1%}" in n for n in notes)


@pytest.mark.parametrize(("profile", "share"), [("1g.6gb", 0.25), ("2g.12gb", 0.5),
                                                ("4g.24gb", 1.0)])
def test_a30_share_is_of_four_slices_not_seven(profile: str, share: float) -> None:
    meta, _ = _channel_meta(FakeNVML([_gpu(A30, [FakeMigDevice(MIG_A, profile, gi_id=1)])]),
                            MIG_A)
    assert meta["mig_share"] == pytest.approx(share)
    assert meta["mig_share_method"] == MIG_SHARE_SMS
    assert "of 56 SMs" in meta["mig_share_basis"]


@pytest.mark.parametrize(("profile", "share"), [("1g.5gb", 1 / 7), ("3g.20gb", 3 / 7),
                                                ("7g.40gb", 1.0)])
def test_a100_share_by_sms_of_the_mig_mode_gpu(profile: str, share: float) -> None:
    meta, _ = _channel_meta(FakeNVML([_gpu(A100, [FakeMigDevice(MIG_A, profile, gi_id=1)])]),
                            MIG_A)
    assert meta["mig_share"] == pytest.approx(share)  # 14 SMs per slice, 98 in MIG mode


def test_slices_when_the_profiles_are_refused() -> None:
    # nvml.h: nvmlDeviceGetGpuInstanceProfileInfo may answer NO_PERMISSION; the total is
    # then nvmlDeviceGetMaxMigDeviceCount (4 on A30): the share is 1 of 4, not 1 of 7.
    nvml = FakeNVML([_gpu(A30, [FakeMigDevice(MIG_A, "1g.6gb", gi_id=1)])])
    nvml.fail(0, "nvmlDeviceGetGpuInstanceProfileInfo", "NoPermission")
    meta, _ = _channel_meta(nvml, MIG_A)
    assert meta["mig_share"] == pytest.approx(1 / 4)
    assert meta["mig_share_method"] == MIG_SHARE_SLICES
    assert "nvmlDeviceGetMaxMigDeviceCount" in meta["mig_share_basis"]


def test_profile_info_v1_when_the_driver_lacks_the_v2_call() -> None:
    nvml = FakeNVML([_gpu(A30, [FakeMigDevice(MIG_A, "2g.12gb", gi_id=1)])],
                    profile_info_v2=False)
    meta, _ = _channel_meta(nvml, MIG_A)
    assert meta["mig_share"] == pytest.approx(0.5)
    assert meta["mig_share_method"] == MIG_SHARE_SMS


def test_two_compute_instances_of_one_gpu_instance_are_not_counted_twice() -> None:
    # a 4g GPU instance split into two 2-slice compute instances (both MIG devices)
    devices = [FakeMigDevice(MIG_A, "4g.20gb", gi_id=1, ci_id=0, ci_slices=2),
               FakeMigDevice(MIG_B, "4g.20gb", gi_id=1, ci_id=1, ci_slices=2)]
    nvml = FakeNVML([_gpu(A100, devices)])
    meta, _ = _channel_meta(nvml, f"{MIG_A},{MIG_B}")
    assert meta["mig_share"] == pytest.approx(56 / 98)
    nvml = FakeNVML([_gpu(A100, devices)])
    nvml.fail(0, "nvmlDeviceGetGpuInstanceProfileInfo", "NoPermission")
    meta, _ = _channel_meta(nvml, f"{MIG_A},{MIG_B}")
    assert meta["mig_share"] == pytest.approx(4 / 7)  # compute slices, not 4 + 4 GI slices


@pytest.mark.parametrize("driver", ["460.106.00", "550.54.15"])
def test_legacy_mig_names_in_cuda_visible_devices(driver: str) -> None:
    # MIG-GPU-<gpu uuid>/<gi>/<ci>: CUDA's form before R470 (and what NVML names MIG
    # devices there); matched by the GPU- and compute-instance ids
    gpu = _gpu(H100, [FakeMigDevice(MIG_A, "1g.10gb", gi_id=7, ci_id=0),
                      FakeMigDevice(MIG_B, "3g.40gb", gi_id=2, ci_id=0)])
    nvml = FakeNVML([gpu], driver_version=driver)
    meta, _ = _channel_meta(nvml, f"MIG-{gpu.uuid}/2/0")
    assert meta["mig_share"] == pytest.approx(60 / 132)


def test_empty_mig_indices_are_skipped() -> None:
    nvml = FakeNVML([_gpu(H100, [None, FakeMigDevice(MIG_A, "2g.20gb", gi_id=3), None,
                                 FakeMigDevice(MIG_B, "1g.10gb", gi_id=9)])])
    meta, _ = _channel_meta(nvml, MIG_B)
    assert meta["mig_share"] == pytest.approx(16 / 132)


def test_no_share_says_why() -> None:
    nvml = _h100_with_two_slices()
    nvml.fail(0, "nvmlDeviceGetAttributes", "NoPermission")
    meta, notes = _channel_meta(nvml, MIG_A)
    assert "mig_share" not in meta
    assert "neither SM nor slice counts" in meta["mig_share_unavailable"]
    assert any("no share" in n and "nvmlDeviceGetAttributes" in n for n in notes)


def test_mig_mode_gpu_named_by_index_is_whole_and_says_so() -> None:
    meta, notes = _channel_meta(_h100_with_two_slices(), "0")
    assert meta["mig_mode"] == {"current": "enabled", "pending": "enabled"}
    assert "mig_share" not in meta
    assert any("in MIG mode" in n and "MIG-<uuid>" in n for n in notes)


def test_probes_command_shows_the_share_and_its_basis(tmp_path: Path) -> None:
    from energymeter.probes.inspect import inspect_probes

    info = inspect_probes(env={"CUDA_VISIBLE_DEVICES": MIG_B}, pynvml=_h100_with_two_slices(),
                          powercap_root=str(tmp_path))
    [gpu] = info["gpus"]
    assert gpu["mig_share"] == pytest.approx(16 / 132)
    assert gpu["mig_share_method"] == MIG_SHARE_SMS
    assert any("16 of 132 SMs" in n for n in info["notes"])


# -- every partition layout --------------------------------------------------------------------
def _layouts(profiles: tuple, names: list[str]) -> st.SearchStrategy:
    """GPU instances of the given profiles that the GPU can hold together, some MIG indices
    empty, and a non-empty subset of the devices made visible. A set of GPU instances fits
    when their compute slices, their memory and each profile's instance count fit (a 3g
    instance takes half the memory: 3g + 3g + 1g does not exist, though it is 7 slices)."""
    by_name = {p.name: p for p in profiles}
    full = max(profiles, key=lambda p: p.slice_count)
    total = full.slice_count

    @st.composite
    def layout(draw: st.DrawFn) -> tuple[list[FakeMigDevice | None], list[int]]:
        chosen: list[str] = []
        free, memory_mb = total, full.memory_size_mb
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=total)):
            p = by_name[name]
            if (p.slice_count <= free and p.memory_size_mb <= memory_mb
                    and chosen.count(name) < p.instance_count):
                chosen.append(name)
                free -= p.slice_count
                memory_mb -= p.memory_size_mb
        slots: list[FakeMigDevice | None] = []
        for i, name in enumerate(chosen):
            if draw(st.booleans()) and len(slots) + 1 < total:
                slots.append(None)  # an empty MIG index
            slots.append(FakeMigDevice(f"MIG-{i:08x}-0000-4000-8000-{i:012x}", name,
                                       gi_id=i + 1))
        slots = slots[:total]
        devices = [d for d in slots if d is not None]
        visible = draw(st.lists(st.integers(0, len(devices) - 1), min_size=1, unique=True))
        return slots, visible

    return layout()


LAYOUTS = [
    (A100, A100_40GB_PROFILES, ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]),
    (H100, H100_80GB_PROFILES, ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    (A30, A30_PROFILES, ["1g.6gb", "2g.12gb", "4g.24gb"]),
]


@pytest.mark.parametrize(("name", "profiles", "names"), LAYOUTS, ids=["A100", "H100", "A30"])
@pytest.mark.parametrize("fallback", [False, True], ids=["sms", "slices"])
def test_share_over_partition_layouts(name: str, profiles: tuple, names: list[str],
                                      fallback: bool) -> None:
    full = max(profiles, key=lambda p: p.slice_count)

    @settings(max_examples=15, deadline=None)
    @given(_layouts(profiles, names))
    def check(drawn: tuple[list[FakeMigDevice | None], list[int]]) -> None:
        slots, visible = drawn
        gpu = _gpu(name, slots)
        nvml = FakeNVML([gpu])
        if fallback:
            nvml.fail(0, "nvmlDeviceGetGpuInstanceProfileInfo", "NoPermission")
        devices = [d for d in slots if d is not None]
        shown = [devices[i] for i in visible]
        meta, _ = _channel_meta(nvml, ",".join(d.uuid for d in shown))
        if fallback:
            slices = sum(gpu.profile(d.profile).slice_count for d in shown)
            assert meta["mig_share_method"] == MIG_SHARE_SLICES
            assert meta["mig_share"] == pytest.approx(slices / full.slice_count)
        else:
            sms = sum(gpu.mig_sms(d) for d in shown)
            assert meta["mig_share_method"] == MIG_SHARE_SMS
            assert meta["mig_share"] == pytest.approx(sms / full.multiprocessor_count)
        assert 0 < meta["mig_share"] <= 1

    check()


# -- a run -------------------------------------------------------------------------------------
def test_report_gives_the_whole_gpu_and_the_attributed_share(tmp_path: Path) -> None:
    nvml = _h100_with_two_slices(unsupported={"nvmlDeviceGetUtilizationRates",
                                              "nvmlDeviceGetMemoryInfo"})
    with energymeter.measure("mig", pynvml=nvml, env={"CUDA_VISIBLE_DEVICES": MIG_A},
                             out=tmp_path / "runs", region="SE", cpu_tdp_w=10.0) as m:
        time.sleep(0.3)
    share = 64 / 132
    gpu = next(c for c in m.report.channels if c.channel.kind == "gpu")
    assert gpu.energy_j == pytest.approx(300.0 * m.report.duration_s, rel=0.01)  # whole GPU
    assert gpu.attributed_energy_j == pytest.approx(share * gpu.energy_j)
    data = json.loads(m.report.to_json())
    [channel] = [c for c in data["channels"] if c["kind"] == "gpu"]
    assert channel["attributed_energy_j"] == pytest.approx(share * gpu.energy_j)
    again = energymeter.Report.from_dict(data)
    assert [c.attributed_energy_j for c in again.channels if c.channel.kind == "gpu"] == \
        [pytest.approx(share * gpu.energy_j)]
    assert any("whole GPU" in w for w in m.report.warnings)


def test_probes_text_shows_the_share_under_its_gpu(tmp_path: Path) -> None:
    from energymeter.cli.probes import format_probes
    from energymeter.probes.inspect import inspect_probes

    info = inspect_probes(env={"CUDA_VISIBLE_DEVICES": MIG_B}, pynvml=_h100_with_two_slices(),
                          powercap_root=str(tmp_path))
    text = format_probes(info)
    gpu_line = text.index("gpu0:")
    assert ("MIG: 12.1% of the GPU's energy attributed to the visible slices: 16 of 132 SMs"
            in text[gpu_line:])
