"""The run's share of a shared GPU: ``<channel>_own_share`` of the NVML probe
and :meth:`NvmlProbe.attribution`, against the fake NVML's per-process utilisation samples.

The fake follows nvml.h ``nvmlDeviceGetProcessUtilization``: samples of processes with non-zero
utilisation, newer than ``lastSeenTimeStamp`` (CPU microseconds), NOT_FOUND when there are none,
a finite buffer, NOT_SUPPORTED on MIG-enabled GPUs; and pynvml.py's return type (a list of
``c_nvmlProcessUtilizationSample_t``).

The measured trees are pids above Linux's largest (``/proc/sys/kernel/pid_max`` is at most
2**22): no live process, so ``process_tree_pids`` gives just the root and nothing on this machine
can join a tree. The end-to-end test through ``measure()`` measures this process's own tree
instead (its root is ``os.getpid()``), beside a neighbour's pid that is in no tree.

Whether the probe runs in a PID namespace of its own (a container) is read from a ``/proc``
the tests write (``proc_root``), the host's namespace unless a test says otherwise, so that
the results do not depend on where the tests run; one end-to-end test runs ``measure()`` in a
real PID namespace (``unshare``) where the machine allows it.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energymeter.probes.base import DiscoveryContext
from energymeter.probes.nvml import (
    PROC_PID_INIT_INO,
    SHARE_METHOD_MEMORY,
    SHARE_METHOD_MIG,
    SHARE_METHOD_SM,
    SHARE_RULES,
    NvmlProbe,
    PidNamespace,
    discover,
    pid_namespace,
)
from tests.fakes.nvml import (
    FakeClock,
    FakeGPU,
    FakeMigDevice,
    FakeNVML,
    FakeProcess,
    NVMLError,
    NVMLError_NotFound,
    NVMLError_NotSupported,
    c_nvmlProcessUtilizationSample_t,
    sine_trace,
)
from tests.timing import until

MINE = 4_194_400  # the measured tree's root (no such live process: see the module docstring)
THEIRS = 4_194_500  # a neighbour's
STRANGER = 4_194_600  # in neither tree
MIG_A = "MIG-aaaa1111-2222-3333-4444-555566667777"
MIG_B = "MIG-bbbb1111-2222-3333-4444-555566667777"
H100 = "NVIDIA H100 80GB HBM3"
GiB = 2**30


REPO = Path(__file__).resolve().parent.parent
OFFSET = 1_000_000  # a container's pid + OFFSET = the host's pid
CONTAINER_INO = 4026532176  # a PID namespace's inode other than the host's
_PROC: dict[str, str] = {}  # the host-namespace /proc the tests read by default


def _fake_proc(root: Path, nspid: tuple[int, ...], ns_inode: int,
               others: dict[int, tuple[int, ...]] | None = None) -> str:
    """A /proc as the probe reads it for PID namespaces: ``self/status`` with ``NSpid``,
    ``self/ns/pid`` linking to ``pid:[<inode>]`` (the kernel's form), and a ``<pid>/status``
    for this process and each of ``others`` (pid in that /proc's namespace -> NSpid)."""
    line = "NSpid:\t" + "\t".join(map(str, nspid)) + "\n"
    (root / "self" / "ns").mkdir(parents=True)
    (root / "self" / "status").write_text(f"Name:\tpython3\nPid:\t{nspid[0]}\n{line}")
    (root / "self" / "ns" / "pid").symlink_to(f"pid:[{ns_inode}]")
    for pid, fields in {nspid[0]: nspid, **(others or {})}.items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "status").write_text(
            "NSpid:\t" + "\t".join(map(str, fields)) + "\n")
    return str(root)


@pytest.fixture(autouse=True, scope="module")
def _host_proc(tmp_path_factory: pytest.TempPathFactory) -> None:
    _PROC["host"] = _fake_proc(tmp_path_factory.mktemp("proc"), (MINE,), PROC_PID_INIT_INO)


def _open(fake: FakeNVML, pid: int = MINE, env: dict[str, str] | None = None,
          proc_root: str | None = None) -> NvmlProbe:
    found = discover(DiscoveryContext(pynvml=fake, pid=pid, env=env or {}), start_poller=False,
                     clock=fake.clock, proc_root=proc_root or _PROC["host"])
    [probe] = [p for p in found if isinstance(p, NvmlProbe)]
    return probe


def _counts(probe: NvmlProbe, cid: str = "gpu0") -> dict[str, int]:
    return probe.attribution()[cid]["intervals"]


# -- the fake answers as NVML does ------------------------------------------------------------
def test_fake_returns_samples_since_the_timestamp_and_not_found_when_none() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=30),
                                        FakeProcess(THEIRS, GiB, sm_util=70),
                                        FakeProcess(STRANGER, GiB)])],  # no SM use: no sample
                    clock=clock)
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(NVMLError_NotFound):  # no sampling period has ended yet
        fake.nvmlDeviceGetProcessUtilization(handle, 0)
    clock.advance(1.0)  # six periods of 1/6 s
    samples = fake.nvmlDeviceGetProcessUtilization(handle, 0)
    assert isinstance(samples, list)
    assert all(isinstance(s, c_nvmlProcessUtilizationSample_t) for s in samples)
    assert [f for f, _ in c_nvmlProcessUtilizationSample_t._fields_] == [
        "pid", "timeStamp", "smUtil", "memUtil", "encUtil", "decUtil"]
    assert len(samples) == 12 and {s.pid for s in samples} == {MINE, THEIRS}
    assert {(s.pid, s.smUtil) for s in samples} == {(MINE, 30), (THEIRS, 70)}
    stamps = sorted({s.timeStamp for s in samples})
    assert stamps[-1] == round(clock() * 1e6)  # CPU time in microseconds
    assert stamps[1] - stamps[0] == pytest.approx(1e6 / 6, abs=1)
    with pytest.raises(NVMLError_NotFound) as info:  # nothing newer than the newest seen
        fake.nvmlDeviceGetProcessUtilization(handle, stamps[-1])
    assert str(info.value) == "Not Found" and info.value == NVMLError(6)
    newer = fake.nvmlDeviceGetProcessUtilization(handle, stamps[-3])
    assert sorted({s.timeStamp for s in newer}) == stamps[-2:]


def test_fake_buffer_keeps_only_the_recent_samples() -> None:
    clock = FakeClock()
    gpu = FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=50)], process_sample_buffer=10)
    fake = FakeNVML([gpu], clock=clock)
    fake.nvmlInit()
    clock.advance(3600.0)
    samples = fake.nvmlDeviceGetProcessUtilization(fake.nvmlDeviceGetHandleByIndex(0), 0)
    assert len(samples) == 10
    assert samples[-1].timeStamp == round(clock() * 1e6)  # the newest ones are kept


def test_fake_refuses_process_utilization_in_mig_mode_and_before_maxwell() -> None:
    fake = FakeNVML([FakeGPU(name=H100, mig_devices=[FakeMigDevice(MIG_A, "3g.40gb", gi_id=1)]),
                     FakeGPU(name="Tesla K80", arch="kepler")], clock=FakeClock())
    fake.nvmlInit()
    parent = fake.nvmlDeviceGetHandleByIndex(0)
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    for handle in (parent, mig, fake.nvmlDeviceGetHandleByIndex(1)):
        with pytest.raises(NVMLError_NotSupported):
            fake.nvmlDeviceGetProcessUtilization(handle, 0)


def test_fake_mig_handle_lists_its_own_instance_only() -> None:
    gpu = FakeGPU(name=H100, mig_devices=[FakeMigDevice(MIG_A, "3g.40gb", gi_id=1),
                                          FakeMigDevice(MIG_B, "1g.10gb", gi_id=2)],
                  processes=[FakeProcess(MINE, GiB, mig_uuid=MIG_A),
                             FakeProcess(THEIRS, 3 * GiB, mig_uuid=MIG_B)])
    fake = FakeNVML([gpu], clock=FakeClock())
    fake.nvmlInit()
    parent = fake.nvmlDeviceGetHandleByIndex(0)
    [mine] = fake.nvmlDeviceGetComputeRunningProcesses(
        fake.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0))
    assert (mine.pid, mine.usedGpuMemory, mine.gpuInstanceId) == (MINE, GiB, 1)
    with pytest.raises(NVMLError):  # the parent's aggregate: privileged callers only
        fake.nvmlDeviceGetComputeRunningProcesses(parent)


# -- the share --------------------------------------------------------------------------------
def _truth(power, share_of, t0_s: float, t1_s: float, steps: int = 20_000) -> float:
    """The exact attributed energy: integral of power x share over [t0, t1]."""
    h = (t1_s - t0_s) / steps
    return sum(power(t0_s + (i + 0.5) * h) * share_of(t0_s + (i + 0.5) * h) * h
               for i in range(steps))


def _run(probes: list[NvmlProbe], clock: FakeClock, seconds: float, step_s: float,
         cid: str = "gpu0") -> tuple[list[float], float]:
    """Read every probe's energy and gauges every ``step_s`` as a sampler would; each probe's
    attributed energy (per-interval energy delta x that interval's share) and the GPU's."""
    for p in probes:
        p.begin_run()
    last = [p.read()[cid] for p in probes]
    start = last[0]
    attributed = [0.0] * len(probes)
    for _ in range(round(seconds / step_s)):
        clock.advance(step_s)
        for i, p in enumerate(probes):
            joules = p.read()[cid]
            share = p.gauges()[f"{cid}_own_share"]
            assert 0.0 <= share <= 1.0
            attributed[i] += (joules - last[i]) * share
            last[i] = joules
    for p in probes:
        p.end_run()
    return attributed, last[0] - start


@pytest.mark.parametrize("step_s", [1.0, 0.37])
def test_two_processes_sharing_a_gpu_each_get_their_share(step_s: float) -> None:
    clock = FakeClock()
    power = sine_trace(300.0, 120.0, 0.05)
    mine = FakeProcess(MINE, 4 * GiB, sm_util=30)
    theirs = FakeProcess(THEIRS, 12 * GiB, sm_util=70)
    fake = FakeNVML([FakeGPU(power_w=power, processes=[mine, theirs])], clock=clock)
    ours, neighbours = _open(fake, MINE), _open(fake, THEIRS)
    t0 = fake.elapsed_s()
    (a_mine, a_theirs), total = _run([ours, neighbours], clock, 30.0, step_s)
    t1 = fake.elapsed_s()
    assert total == pytest.approx(fake.energy_j(0, t0, t1), rel=0.01)
    assert a_mine / total == pytest.approx(0.30, abs=0.02)
    assert a_theirs / total == pytest.approx(0.70, abs=0.02)
    assert a_mine + a_theirs == pytest.approx(total, rel=1e-9)
    counts = _counts(ours)
    assert counts["sm"] == round(30.0 / step_s) and counts["unknown"] == 0
    assert ours.attribution()["gpu0"]["method"] == SHARE_METHOD_SM
    assert ours.drain_warnings() == []
    ours.close()
    neighbours.close()


def test_shares_that_change_over_time_follow_the_power_they_drew() -> None:
    # the neighbour works lightly while the GPU draws most, hard after: the run's share of the
    # energy (~0.68) is far from its share of all SM time over the run (40 / 90 = 0.44)
    clock = FakeClock()
    fake_t0 = 1.0

    def power(t: float) -> float:
        return 450.0 if t < fake_t0 + 20.0 else 150.0

    def theirs_util(t: float) -> float:
        return 10.0 if t < fake_t0 + 20.0 else 90.0

    mine = FakeProcess(MINE, 4 * GiB, sm_util=40)
    theirs = FakeProcess(THEIRS, 4 * GiB, sm_util=theirs_util)
    fake = FakeNVML([FakeGPU(power_w=power, processes=[mine, theirs])], clock=clock)
    clock.advance(fake_t0)
    probe = _open(fake, MINE)
    t0 = fake.elapsed_s()
    [attributed], total = _run([probe], clock, 40.0, 1.0)
    truth = _truth(power, lambda t: 40 / (40 + theirs_util(t)), t0, fake.elapsed_s())
    assert attributed == pytest.approx(truth, rel=0.02)
    assert attributed / total > 0.65  # per interval, not one ratio for the run
    probe.close()


def test_the_first_read_of_a_run_leaves_out_what_came_before_it() -> None:
    clock = FakeClock()

    def mine_util(t: float) -> float:  # busy before the run, idle during it
        return 100.0 if t < 5.0 else 0.0

    gpu = FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=mine_util),
                             FakeProcess(THEIRS, GiB, sm_util=50)])
    fake = FakeNVML([gpu], clock=clock)
    probe = _open(fake, MINE)
    clock.advance(5.05)
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == 0.0
    assert _counts(probe)["sm"] == 1
    probe.end_run()
    probe.close()


def test_outside_a_run_the_first_read_only_takes_the_timestamp() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=25),
                                        FakeProcess(THEIRS, GiB, sm_util=75)])], clock=clock)
    probe = _open(fake, MINE)
    clock.advance(2.0)
    assert "gpu0_own_share" not in probe.gauges()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.25)
    assert probe.drain_warnings() == []
    probe.close()


def test_no_new_samples_falls_back_to_the_memory_share() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=[FakeProcess(MINE, 1 * GiB, sm_util=50),
                                        FakeProcess(THEIRS, 3 * GiB, sm_util=50),
                                        FakeProcess(MINE, 1 * GiB, kind="graphics")])],
                    clock=clock)
    probe = _open(fake, MINE)
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.5)  # SM: 50 of 100
    calls = fake.calls["nvmlDeviceGetProcessUtilization"]
    # the same instant again: NOT_FOUND (no sample newer than the last seen): memory,
    # the pid listed for compute and graphics counted once
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.25)
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == calls + 1  # one call per read
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses"] == 2  # shared with the gauge
    assert _counts(probe) == {"sm": 1, "memory": 1, "idle": 0, "unknown": 0}
    probe.end_run()
    probe.close()


@pytest.mark.parametrize(("processes", "share", "rule"), [
    ([FakeProcess(MINE, 1 * GiB), FakeProcess(THEIRS, 3 * GiB)], 0.25, "memory"),
    ([FakeProcess(MINE, None), FakeProcess(MINE, 2 * GiB, kind="graphics")], 1.0, "memory"),
    ([FakeProcess(THEIRS, 5 * GiB)], 0.0, "memory"),
    ([FakeProcess(MINE, GiB), FakeProcess(THEIRS, None)], None, "unknown"),
    ([], 1.0, "idle"),
], ids=["by-memory", "only-mine", "only-theirs", "memory-not-available", "idle"])
def test_without_sm_samples(processes: list[FakeProcess], share: float | None,
                            rule: str) -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=processes)], clock=clock)  # no SM use: NOT_FOUND
    probe = _open(fake, MINE)
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges().get("gpu0_own_share") == share
    counts = _counts(probe)
    assert counts[rule] == 1 and sum(counts.values()) == 1
    warnings = probe.drain_warnings()
    if rule == "unknown":
        [warning] = warnings
        assert "gpu0" in warning and "usedGpuMemory" in warning
    else:
        assert warnings == []
    probe.end_run()
    probe.close()


def test_an_idle_gpu_goes_to_the_run_whole() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(power_w=60.0)], clock=clock)
    probe = _open(fake, MINE)
    [attributed], total = _run([probe], clock, 5.0, 1.0)
    assert attributed == pytest.approx(total) and total == pytest.approx(300.0, rel=0.01)
    assert _counts(probe) == {"sm": 0, "memory": 0, "idle": 5, "unknown": 0}
    probe.close()


# -- MIG ----------------------------------------------------------------------------------------
def _mig_gpu(processes: list[FakeProcess]) -> FakeGPU:
    return FakeGPU(name=H100, power_w=300.0, counter_period_s=0.001,
                   mig_devices=[FakeMigDevice(MIG_A, "4g.40gb", gi_id=1),
                                FakeMigDevice(MIG_B, "1g.10gb", gi_id=2)],
                   processes=processes)


def test_mig_share_is_within_the_instance_by_memory() -> None:
    clock = FakeClock()
    processes = [FakeProcess(MINE, 2 * GiB, sm_util=90, mig_uuid=MIG_A),
                 FakeProcess(THEIRS, 6 * GiB, sm_util=10, mig_uuid=MIG_A),
                 FakeProcess(STRANGER, 9 * GiB, sm_util=100, mig_uuid=MIG_B)]  # other slice
    fake = FakeNVML([_mig_gpu(processes)], clock=clock)
    probe = _open(fake, MINE, env={"CUDA_VISIBLE_DEVICES": MIG_A})
    probe.begin_run()
    clock.advance(1.0)
    gauges = probe.gauges()
    assert gauges["gpu0_own_share"] == pytest.approx(2 / 8)  # within MIG_A; not x mig_share
    assert gauges["gpu0_process_memory_bytes"] == 2 * GiB  # from the MIG handle: no refusal
    assert probe.channels[0].meta["mig_share"] == pytest.approx(64 / 132)
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 0  # not asked: NVML has none
    info = probe.attribution()["gpu0"]
    assert info["method"] == SHARE_METHOD_MIG and "mig_share" in info["method"]
    assert info["intervals"] == {"sm": 0, "memory": 1, "idle": 0, "unknown": 0}
    assert not any("could not be determined" in w for w in probe.drain_warnings())
    probe.end_run()
    probe.close()


def test_an_idle_mig_instance_goes_to_the_run_whole() -> None:
    clock = FakeClock()
    fake = FakeNVML([_mig_gpu([FakeProcess(THEIRS, 6 * GiB, mig_uuid=MIG_B)])], clock=clock)
    probe = _open(fake, MINE, env={"CUDA_VISIBLE_DEVICES": MIG_A})
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == 1.0
    assert _counts(probe)["idle"] == 1
    probe.end_run()
    probe.close()


def test_a_mig_mode_gpu_named_whole_asks_its_processes_not_utilisation() -> None:
    clock = FakeClock()
    processes = [FakeProcess(MINE, 2 * GiB, mig_uuid=MIG_A),
                 FakeProcess(THEIRS, 6 * GiB, mig_uuid=MIG_B)]
    gpu = _mig_gpu(processes)
    gpu.privileged = True  # the parent's aggregate process list
    fake = FakeNVML([gpu], clock=clock)
    probe = _open(fake, MINE, env={"CUDA_VISIBLE_DEVICES": "0"})
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.25)
    assert probe.attribution()["gpu0"]["method"] == SHARE_METHOD_MEMORY
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 0
    probe.end_run()
    probe.close()


# -- what cannot be said ------------------------------------------------------------------------
def test_unsupported_calls_leave_the_gauge_out_with_one_warning_and_energy_intact() -> None:
    clock = FakeClock()
    gpu = FakeGPU(power_w=200.0, processes=[FakeProcess(THEIRS, GiB, sm_util=60)],
                  unsupported={"nvmlDeviceGetProcessUtilization",
                               "nvmlDeviceGetComputeRunningProcesses",
                               "nvmlDeviceGetGraphicsRunningProcesses"})
    fake = FakeNVML([gpu], clock=clock)
    probe = _open(fake, MINE)
    probe.begin_run()
    start = probe.read()["gpu0"]
    for _ in range(20):
        clock.advance(0.5)
        assert "gpu0_own_share" not in probe.gauges()
    assert probe.read()["gpu0"] - start == pytest.approx(200.0 * 10.0, rel=1e-6)
    assert _counts(probe) == {"sm": 0, "memory": 0, "idle": 0, "unknown": 20}
    [warning] = probe.drain_warnings()
    assert "gpu0" in warning and "unknown" in warning
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 1  # asked once, then not again
    assert probe.attribution()["gpu0"]["method"] == SHARE_METHOD_MEMORY
    probe.end_run()
    probe.close()


def test_without_process_utilisation_the_memory_share_serves_quietly() -> None:
    clock = FakeClock()
    gpu = FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=10),
                             FakeProcess(THEIRS, GiB, sm_util=90)],
                  unsupported={"nvmlDeviceGetProcessUtilization"})
    fake = FakeNVML([gpu], clock=clock)
    probe = _open(fake, MINE)
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.5)
    assert probe.drain_warnings() == []
    probe.end_run()
    probe.close()


def test_an_nvidia_ml_py_without_the_call_uses_the_memory_share() -> None:
    class OldNVML(FakeNVML):
        def __getattribute__(self, name: str):
            if name == "nvmlDeviceGetProcessUtilization":
                raise AttributeError(name)
            return super().__getattribute__(name)

    clock = FakeClock()
    fake = OldNVML([FakeGPU(processes=[FakeProcess(MINE, GiB), FakeProcess(THEIRS, 3 * GiB)])],
                   clock=clock)
    probe = _open(fake, MINE)
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.25)
    assert probe.attribution()["gpu0"]["method"] == SHARE_METHOD_MEMORY
    probe.end_run()
    probe.close()


@pytest.mark.parametrize("code", [0, 6])
def test_pynvml_error_codes_of_no_samples(code: int) -> None:
    # pynvml.py nvmlDeviceGetProcessUtilization raises NVMLError(ret) when its sizing call
    # does not answer INSUFFICIENT_SIZE, NVML_SUCCESS included; an old pynvml may raise the
    # base NVMLError for NOT_FOUND (6), without the subclass
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=[FakeProcess(MINE, GiB), FakeProcess(THEIRS, GiB)])],
                    clock=clock)
    probe = _open(fake, MINE)
    probe.begin_run()

    def success_as_error(handle: object, stamp: int) -> list:
        error = Exception.__new__(NVMLError)
        error.value = code
        raise error

    fake.nvmlDeviceGetProcessUtilization = success_as_error  # type: ignore[method-assign]
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.5)
    assert _counts(probe)["memory"] == 1
    probe.end_run()
    probe.close()


def test_a_failing_call_is_unknown_once_warned_and_the_run_goes_on() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=50)])], clock=clock)
    probe = _open(fake, MINE)
    probe.begin_run()
    fake.fail(0, "nvmlDeviceGetProcessUtilization", "NoPermission")
    for _ in range(3):
        clock.advance(1.0)
        gauges = probe.gauges()
        assert "gpu0_own_share" not in gauges and "gpu0_power_w" in gauges
    [warning] = probe.drain_warnings()
    assert "NoPermission" in warning
    fake.clear_failures()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == 1.0
    assert _counts(probe) == {"sm": 1, "memory": 0, "idle": 0, "unknown": 3}
    probe.end_run()
    probe.close()


def test_attribution_counts_restart_with_each_run_and_are_json() -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=[FakeProcess(MINE, GiB, sm_util=50)]), FakeGPU()],
                    clock=clock)
    probe = _open(fake, MINE)
    _run([probe], clock, 3.0, 1.0)
    assert _counts(probe, "gpu0")["sm"] == 3 and _counts(probe, "gpu1")["idle"] == 3
    probe.begin_run()
    info = probe.attribution()
    assert set(info) == {"gpu0", "gpu1"}
    assert all(v["intervals"] == dict.fromkeys(SHARE_RULES, 0) for v in info.values())
    assert json.loads(json.dumps(info)) == info
    assert all(f"{cid}_own_share" in probe.gauge_names for cid in info)
    probe.end_run()
    probe.close()


# -- complementary trees ------------------------------------------------------------------------
_utils = st.lists(st.integers(0, 100), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mine=_utils, theirs=_utils, stranger=st.one_of(st.none(), _utils),
       memory=st.tuples(st.one_of(st.none(), st.integers(0, 8)), st.integers(0, 8)),
       steps=st.lists(st.sampled_from([0.1, 0.25, 0.5, 1.0, 3.0]), min_size=1, max_size=8))
def test_complementary_trees_never_share_more_than_the_gpu(
        mine: list[int], theirs: list[int], stranger: list[int] | None,
        memory: tuple[int | None, int], steps: list[float]) -> None:
    """Two meters whose trees split the GPU's processes get shares that sum to 1 (at most 1
    with a third process in neither); both get 1 only when no process is on the GPU (the idle
    rule: each run holds the idle GPU)."""
    def trace(levels: list[int]):
        return lambda t: levels[int(t) % len(levels)]

    mem_mine, mem_theirs = memory
    processes = [FakeProcess(MINE, None if mem_mine is None else mem_mine * GiB,
                             sm_util=trace(mine)),
                 FakeProcess(THEIRS, mem_theirs * GiB, sm_util=trace(theirs))]
    if stranger is not None:
        processes.append(FakeProcess(STRANGER, GiB, sm_util=trace(stranger)))
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(processes=processes)], clock=clock)
    a, b = _open(fake, MINE), _open(fake, THEIRS)
    a.begin_run()
    b.begin_run()
    for step in steps:
        clock.advance(step)
        sa, sb = a.gauges().get("gpu0_own_share"), b.gauges().get("gpu0_own_share")
        for s in (sa, sb):
            assert s is None or 0.0 <= s <= 1.0
        assert (sa is None) == (sb is None)  # the same facts on both sides
        if sa is not None and sb is not None:
            assert sa + sb <= 1.0 + 1e-9
            if stranger is None:
                assert math.isclose(sa + sb, 1.0, abs_tol=1e-9)
    assert a.attribution()["gpu0"]["intervals"]["idle"] == 0  # processes were always there
    for p in (a, b):
        p.end_run()
        p.close()


def test_ctypes_structure_matches_nvml_h_layout() -> None:
    # nvml.h nvmlProcessUtilizationSample_t: unsigned int pid; unsigned long long timeStamp;
    # four unsigned ints
    s = c_nvmlProcessUtilizationSample_t
    assert ctypes.sizeof(s) == 32 and s.timeStamp.offset == 8 and s.smUtil.offset == 16


# -- end to end: measure() on a shared GPU -------------------------------------------------------
class _RecordingNVML(FakeNVML):
    """The fake, recording whether each ``nvmlDeviceGetProcessUtilization`` call found
    samples (True) or raised NOT_FOUND (False), in order."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.found: list[bool] = []

    def nvmlDeviceGetProcessUtilization(self, handle, timeStamp):  # type: ignore[no-untyped-def]
        try:
            samples = super().nvmlDeviceGetProcessUtilization(handle, timeStamp)
        except NVMLError_NotFound:
            self.found.append(False)
            raise
        self.found.append(True)
        return samples


def test_measure_gives_a_shared_gpus_share_to_the_run_end_to_end(tmp_path: Path) -> None:
    """Two processes on one GPU at 30 % and 70 % of its SM time: this process (the measured
    tree's root) and a neighbour outside the tree. Their memory is in the same proportion, so
    the share is 0.3 exactly whichever rule an interval takes (SM samples, or memory when a
    gauge read comes before the driver's next sample); the rules' counts must match what NVML
    answered. Real time: gauges every 0.2 s, the driver's period 1/6 s (nvml.h)."""
    from energymeter import Report, measure

    fake = _RecordingNVML([FakeGPU(name=H100, power_w=250.0,
                                   processes=[FakeProcess(os.getpid(), 3 * GiB, sm_util=30),
                                              FakeProcess(THEIRS, 7 * GiB, sm_util=70)])])
    period_s = fake.gpus[0].process_sample_period_s
    gauge_interval_s = 0.2
    assert gauge_interval_s >= period_s
    with measure("shared-gpu", pynvml=fake, env={}, out=tmp_path,
                 powercap_root=tmp_path / "absent", cpu_tdp_w=10.0, region="SE",
                 interval_s=0.05, gauge_interval_s=gauge_interval_s) as m:
        # a few gauge intervals with SM samples (the first call primes the timestamp)
        assert until(lambda: sum(fake.found[1:]) >= 4)
    report = m.report
    gpu_j = report.energy_j["by_kind"]["gpu"]
    attributed = report.energy_on("attributed")
    assert gpu_j > 0 and "gpu0" not in attributed.whole
    assert attributed.by_kind["gpu"] / gpu_j == pytest.approx(0.30, abs=0.02)
    assert attributed.by_kind["gpu"] == pytest.approx(0.30 * gpu_j, rel=1e-9)  # exact shares
    entry = report.attribution["channels"]["gpu0"]
    assert entry["method"] == SHARE_METHOD_SM
    rules = entry["rules"]
    answered = fake.found[1:]  # every gauge read of the run, after begin_run's priming call
    assert rules["sm"] == sum(answered) >= 4
    assert rules["memory"] == len(answered) - sum(answered)
    assert rules["idle"] == 0 and rules["unknown"] == 0
    # report.json round trip
    on_disk = json.loads((report.path / "report.json").read_text())
    assert on_disk["attribution"]["channels"]["gpu0"]["rules"] == rules
    loaded = Report.load(report.path)
    assert loaded.energy_on("attributed").by_kind["gpu"] == pytest.approx(
        attributed.by_kind["gpu"], rel=1e-12)
    assert loaded.energy_j["by_kind"]["gpu"] == pytest.approx(gpu_j, rel=1e-12)
    assert loaded.attribution["channels"]["gpu0"]["rules"] == rules


# -- PID namespaces (containers) ----------------------------------------------------------------
@pytest.mark.parametrize(("nspid", "inode", "nested", "procfs_pid"), [
    ((MINE,), PROC_PID_INIT_INO, False, None),  # the host's namespace
    ((7,), CONTAINER_INO, True, None),  # a container with its own /proc: one NSpid field
    ((MINE + OFFSET, 7), CONTAINER_INO, True, MINE + OFFSET),  # the host's /proc: two
], ids=["host", "container-proc", "ancestor-proc"])
def test_pid_namespace_is_read_from_nspid_and_the_namespace_inode(
        tmp_path: Path, nspid: tuple[int, ...], inode: int, nested: bool,
        procfs_pid: int | None) -> None:
    found = pid_namespace(_fake_proc(tmp_path, nspid, inode))
    assert (found.nested, found.procfs_pid) == (nested, procfs_pid)
    assert str(inode) in found.evidence or "NSpid" in found.evidence


def test_pid_namespace_unreadable_is_unknown(tmp_path: Path) -> None:
    assert pid_namespace(str(tmp_path / "absent")) == PidNamespace(
        None, None, "unknown (/proc/self/ns/pid unreadable)")


def test_pid_namespace_of_this_process_is_read_from_the_real_proc() -> None:
    link = os.readlink("/proc/self/ns/pid")
    assert pid_namespace().nested is (link != f"pid:[{PROC_PID_INIT_INO}]")


def _shared_gpus(n: int = 1) -> list[FakeGPU]:
    return [FakeGPU(power_w=200.0, processes=[FakeProcess(MINE, 3 * GiB, sm_util=30),
                                              FakeProcess(THEIRS, 7 * GiB, sm_util=70)])
            for _ in range(n)]


def test_in_a_container_host_pids_leave_the_share_unknown_with_one_warning(
        tmp_path: Path) -> None:
    """A driver that gives host pids (no translation), a container with its own /proc: the
    tree is never found while a neighbour is, so every read is unknown (not 0), once
    warned for both GPUs, energy untouched."""
    clock = FakeClock()
    fake = FakeNVML(_shared_gpus(2), clock=clock, host_pid_offset=OFFSET)
    probe = _open(fake, MINE, proc_root=_fake_proc(tmp_path, (MINE,), CONTAINER_INO))
    assert probe.describe()["pid_namespace"].startswith("nested: pid:[4026532176]")
    probe.begin_run()
    start = probe.read()
    for _ in range(6):
        clock.advance(0.5)
        gauges = probe.gauges()
        assert "gpu0_own_share" not in gauges and "gpu1_own_share" not in gauges
        assert "gpu0_process_memory_bytes" not in gauges  # the tree's memory: unknown too
    end = probe.read()
    assert end["gpu0"] - start["gpu0"] == pytest.approx(200.0 * 3.0, rel=1e-6)
    for cid in ("gpu0", "gpu1"):
        assert _counts(probe, cid) == {"sm": 0, "memory": 0, "idle": 0, "unknown": 6}
    [warning] = probe.drain_warnings()
    assert "PID namespace" in warning and f"{MINE + OFFSET}" in warning
    assert "--pid=host" in warning and "hostPID" in warning and "unknown, not 0" in warning
    probe.end_run()
    probe.begin_run()  # the next run is warned again, once
    clock.advance(0.5)
    probe.gauges()
    assert len(probe.drain_warnings()) == 1
    probe.end_run()
    probe.close()


def test_outside_a_namespace_host_pids_are_taken_at_their_word(tmp_path: Path) -> None:
    """Not namespaced: unchanged. Pids that are not the tree's are others', so the share is 0
    and nothing is said (the same fake, the host's /proc)."""
    clock = FakeClock()
    fake = FakeNVML(_shared_gpus(), clock=clock, host_pid_offset=OFFSET)
    probe = _open(fake, MINE)
    assert "pid_namespace" not in probe.describe()
    probe.begin_run()
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == 0.0
    assert _counts(probe)["sm"] == 1 and probe.drain_warnings() == []
    probe.end_run()
    probe.close()


@pytest.mark.parametrize(("translates", "rule", "share"), [
    ({"nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses",
      "nvmlDeviceGetProcessUtilization"}, "sm", 0.3),
    # lists translated, samples in host pids (HAMi-core#112): the samples never show the
    # tree, so not 0 from them: the memory share of the lists that do
    ({"nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"},
     "memory", 0.3),
], ids=["all-translated", "lists-translated"])
def test_in_a_container_pids_in_its_namespace_give_the_normal_share(
        tmp_path: Path, translates: set[str], rule: str, share: float) -> None:
    clock = FakeClock()
    fake = FakeNVML(_shared_gpus(), clock=clock, host_pid_offset=OFFSET, translates=translates)
    probe = _open(fake, MINE, proc_root=_fake_proc(tmp_path, (MINE,), CONTAINER_INO))
    probe.begin_run()
    for _ in range(3):
        clock.advance(1.0)
        assert probe.gauges()["gpu0_own_share"] == pytest.approx(share)
    assert _counts(probe)[rule] == 3 and probe.drain_warnings() == []
    probe.end_run()
    probe.close()


def test_a_neighbour_in_another_container_is_counted_from_its_samples(tmp_path: Path) -> None:
    """Open kernel modules: the lists leave out a process of another namespace, its samples
    keep its host pid; the SM share still counts it."""
    clock = FakeClock()
    gpu = FakeGPU(processes=[FakeProcess(MINE, 3 * GiB, sm_util=40),
                             FakeProcess(THEIRS, 7 * GiB, sm_util=60, foreign=True)])
    fake = FakeNVML([gpu], clock=clock, host_pid_offset=OFFSET,
                    translates={"nvmlDeviceGetComputeRunningProcesses",
                                "nvmlDeviceGetProcessUtilization"})
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert [p.pid for p in fake.nvmlDeviceGetComputeRunningProcesses(handle)] == [MINE]
    probe = _open(fake, MINE, proc_root=_fake_proc(tmp_path, (MINE,), CONTAINER_INO))
    probe.begin_run()
    clock.advance(1.0)
    assert {s.pid for s in fake.nvmlDeviceGetProcessUtilization(handle, 0)} == {
        MINE, THEIRS + OFFSET}
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.4)
    probe.end_run()
    probe.close()
    fake.nvmlShutdown()


def test_the_host_proc_translates_the_tree_to_host_pids(tmp_path: Path) -> None:
    """/proc is an ancestor namespace's (NSpid has two fields): the tree is read there and
    matches NVML's host pids; its memory gauge too."""
    clock = FakeClock()
    fake = FakeNVML(_shared_gpus(), clock=clock, host_pid_offset=OFFSET)
    proc = _fake_proc(tmp_path, (MINE + OFFSET, MINE), CONTAINER_INO)
    probe = _open(fake, 0, proc_root=proc)
    probe.begin_run()
    clock.advance(1.0)
    gauges = probe.gauges()
    assert gauges["gpu0_own_share"] == pytest.approx(0.3)
    assert gauges["gpu0_process_memory_bytes"] == 3 * GiB
    assert probe.drain_warnings() == []
    probe.end_run()
    probe.close()


def test_in_a_container_the_share_is_known_from_when_the_tree_shows(tmp_path: Path) -> None:
    """Before the run's process is on the GPU only the neighbour is: unknown (it might be
    there under a pid we cannot see). Once it has been seen, a read without it is 0."""
    clock = FakeClock()
    gpu = FakeGPU(processes=[FakeProcess(THEIRS, 7 * GiB, sm_util=70)])
    fake = FakeNVML([gpu], clock=clock, host_pid_offset=OFFSET,
                    translates={"nvmlDeviceGetComputeRunningProcesses",
                                "nvmlDeviceGetGraphicsRunningProcesses",
                                "nvmlDeviceGetProcessUtilization"})
    probe = _open(fake, MINE, proc_root=_fake_proc(tmp_path, (MINE,), CONTAINER_INO))
    probe.begin_run()
    clock.advance(1.0)
    assert "gpu0_own_share" not in probe.gauges()
    mine = FakeProcess(MINE, 3 * GiB, sm_util=30)
    with fake.lock:
        gpu.processes.append(mine)
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == pytest.approx(0.3)
    with fake.lock:
        gpu.processes.remove(mine)
    clock.advance(1.0)
    assert probe.gauges()["gpu0_own_share"] == 0.0
    assert _counts(probe) == {"sm": 2, "memory": 0, "idle": 0, "unknown": 1}
    [warning] = probe.drain_warnings()
    assert "PID namespace" in warning
    probe.end_run()
    probe.close()


_IN_NAMESPACE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from energymeter import measure
    from tests.fakes.nvml import FakeGPU, FakeNVML, FakeProcess
    from tests.timing import until
    GiB = 2**30
    out = Path(sys.argv[1])
    fake = FakeNVML([FakeGPU(name="NVIDIA H100 80GB HBM3", power_w=250.0, processes=[
        FakeProcess(os.getpid(), 3 * GiB, sm_util=30),
        FakeProcess(4_194_500, 7 * GiB, sm_util=70)])], host_pid_offset=int(sys.argv[2]))
    with measure("in-a-container", pynvml=fake, env={}, out=out,
                 powercap_root=out / "absent", cpu_tdp_w=10.0, region="SE",
                 interval_s=0.05, gauge_interval_s=0.2) as m:
        assert until(lambda: fake.calls["nvmlDeviceGetProcessUtilization"] >= 6)
    r = m.report
    print(json.dumps({"pid": os.getpid(), "ns": os.readlink("/proc/self/ns/pid"),
                      "status": open("/proc/self/status").read(),
                      "gpu_j": r.energy_j["by_kind"]["gpu"],
                      "attributed_gpu_j": r.energy_on("attributed").by_kind["gpu"],
                      "whole": list(r.energy_on("attributed").whole),
                      "rules": r.attribution["channels"]["gpu0"]["rules"],
                      "warnings": list(r.warnings)}))
""")


def test_measure_in_a_real_pid_namespace_counts_the_gpu_whole(tmp_path: Path) -> None:
    """measure() in a new PID namespace with its own /proc (as Docker and Kubernetes make
    one: ``unshare --pid --fork --mount-proc``, in a user namespace so that no privilege is
    needed), on a fake NVML that gives host pids: the run's share is unknown at every read,
    the GPU counted whole on the attributed basis, one warning in the report."""
    unshare = shutil.which("unshare")
    cmd = [unshare or "unshare", "--user", "--map-root-user", "--pid", "--fork",
           "--mount-proc"]
    if unshare is None or subprocess.run([*cmd, "true"], capture_output=True,
                                         timeout=30).returncode != 0:
        pytest.skip("unprivileged PID namespaces (unshare --user --pid) are not available here")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*cmd, sys.executable, "-c", _IN_NAMESPACE, str(tmp_path), str(OFFSET)],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["pid"] == 1 and got["ns"] != f"pid:[{PROC_PID_INIT_INO}]"
    assert "NSpid:\t1\n" in got["status"]  # one field: NSpid alone would not tell
    rules = got["rules"]
    assert rules["unknown"] >= 6 and rules["sm"] == rules["memory"] == rules["idle"] == 0
    assert got["gpu_j"] > 0 and got["whole"] == ["gpu0"]
    assert got["attributed_gpu_j"] == pytest.approx(got["gpu_j"], rel=1e-12)
    said = [w for w in got["warnings"] if "PID namespace" in w]
    assert len(said) == 1 and "--pid=host" in said[0]
