"""The amdsmi probe against the fake amdsmi module (no GPU, no ROCm needed)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energymeter.errors import ConfigError, ProbeError
from energymeter.probes.amdsmi import (
    COUNTER_UPDATE_PERIOD_S,
    GAUGES,
    GLITCH_READS,
    AmdSmiProbe,
    discover,
)
from energymeter.probes.base import DiscoveryContext, Unavailable
from tests.fakes.amdsmi import FakeAmdGpu, FakeAmdSmi, float32, mi250x, mi300x_cpx
from tests.fakes.nvml import FakeClock, sine_trace, steps_trace

ROOT = Path(__file__).resolve().parents[1]
PERIOD = 0.001  # the fake counter's update period


def open_probe(fake: FakeAmdSmi, env: dict[str, str] | None = None, **kw: Any
               ) -> tuple[AmdSmiProbe | None, list[Unavailable]]:
    """discover() with the fake (and its clock); returns (probe or None, Unavailables)."""
    kw.setdefault("clock", fake.clock)
    kw.setdefault("start_poller", False)
    found = discover(DiscoveryContext(amdsmi=fake, env=env or {}), **kw)
    probes = [r for r in found if isinstance(r, AmdSmiProbe)]
    missing = [r for r in found if isinstance(r, Unavailable)]
    assert len(probes) <= 1 and len(probes) + len(missing) == len(found)
    return (probes[0] if probes else None), missing


def ticks_j(fake: FakeAmdSmi, index: int, ticks: int) -> float:
    """Joules of ``ticks`` counts, computed as the probe does."""
    return ticks * fake.resolution(index) / 1e6


def indices(probe: AmdSmiProbe) -> list[int]:
    return [c.meta["amdsmi_index"] for c in probe.channels]


# -- import, driver, initialisation ----------------------------------------------------------------
def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_import_neither_imports_amdsmi_nor_touches_hardware() -> None:
    result = run_python("import sys, energymeter.probes.amdsmi; "
                        "assert 'amdsmi' not in sys.modules, 'amdsmi imported'")
    assert result.returncode == 0, result.stderr


def test_missing_amdsmi_is_unavailable_with_install_hint() -> None:
    result = run_python(
        "import sys; sys.modules['amdsmi'] = None\n"
        "from energymeter.probes.base import DiscoveryContext\n"
        "from energymeter.probes.amdsmi import discover\n"
        "[u] = discover(DiscoveryContext(), driver_paths=(sys.executable,))\n"
        "print(u.source, '|', u.reason, '|', u.hint)")
    assert result.returncode == 0, result.stderr
    source, reason, hint = result.stdout.strip().split(" | ")
    assert source == "amdsmi" and "not installed" in reason
    assert "pip install amdsmi" in hint and "ROCm" in hint


def test_broken_amdsmi_install_is_unavailable() -> None:
    result = run_python(
        "import sys, types\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'amdsmi':\n"
        "            raise OSError('libamd_smi.so: cannot open shared object file')\n"
        "sys.meta_path.insert(0, Finder())\n"
        "from energymeter.probes.base import DiscoveryContext\n"
        "from energymeter.probes.amdsmi import discover\n"
        "[u] = discover(DiscoveryContext(), driver_paths=(sys.executable,))\n"
        "print(u.reason, '|', u.hint)")
    assert result.returncode == 0, result.stderr
    assert "could not be loaded" in result.stdout and "libamd_smi.so" in result.stdout


def test_no_driver_skips_importing_amdsmi(tmp_path: Path) -> None:
    result = run_python(
        "import sys\n"
        "from pathlib import Path\n"
        "from energymeter.probes.base import DiscoveryContext\n"
        "from energymeter.probes.amdsmi import discover\n"
        f"ctx = DiscoveryContext(sysfs_root=Path({str(tmp_path)!r}))\n"
        f"[u] = discover(ctx, driver_paths=({str(tmp_path / 'kfd')!r},))\n"
        "print(u.source, '|', u.reason, '|', u.hint, '|', 'amdsmi' in sys.modules)")
    assert result.returncode == 0, result.stderr
    source, reason, hint, imported = result.stdout.strip().split(" | ")
    assert source == "amdsmi" and "no AMD GPU driver" in reason
    assert "ROCm" in hint and "/dev/kfd" in hint and imported == "False"


def test_default_driver_paths_read_sysfs_root(tmp_path: Path) -> None:
    """The amdgpu module is looked for under ctx.sysfs_root; its presence makes discovery try
    amdsmi (here not importable)."""
    (tmp_path / "module" / "amdgpu").mkdir(parents=True)
    result = run_python(
        "import sys; sys.modules['amdsmi'] = None\n"
        "from pathlib import Path\n"
        "from energymeter.probes.base import DiscoveryContext\n"
        "from energymeter.probes.amdsmi import discover\n"
        f"[u] = discover(DiscoveryContext(sysfs_root=Path({str(tmp_path)!r})))\n"
        "print(u.reason)")
    assert result.returncode == 0, result.stderr
    assert "not installed" in result.stdout


@pytest.mark.parametrize(("status", "reason_word", "hint_word"), [
    ("NO_PERM", "permission", "render"),
    ("DRIVER_NOT_LOADED", "not loaded", "modprobe amdgpu"),
    ("INIT_ERROR", "amdsmi_init failed", "amd-smi list"),
    ("FAIL_LOAD_MODULE", "amdsmi_init failed", "matches the installed ROCm"),
])
def test_init_failures_are_unavailable_with_hint(status: str, reason_word: str,
                                                 hint_word: str) -> None:
    fake = FakeAmdSmi([FakeAmdGpu()], init_error=status)
    probe, [u] = open_probe(fake)
    assert probe is None and u.source == "amdsmi"
    assert reason_word in u.reason and hint_word in u.hint
    assert fake.shutdown_count == 0  # never initialised, never shut down


def test_no_gpu_is_unavailable_and_amdsmi_is_shut_down() -> None:
    fake = FakeAmdSmi([])
    probe, [u] = open_probe(fake)
    assert probe is None and "no AMD GPU" in u.reason and "amd-smi list" in u.hint
    assert fake.init_count == fake.shutdown_count == 1


def test_listing_failure_is_unavailable() -> None:
    fake = FakeAmdSmi([FakeAmdGpu()])
    fake.fail(None, "amdsmi_get_processor_handles", "DRM_ERROR")
    probe, [u] = open_probe(fake)
    assert probe is None and "could not list" in u.reason
    assert fake.shutdown_count == 1


def test_bad_arguments_are_config_errors() -> None:
    fake = FakeAmdSmi([FakeAmdGpu()])
    with pytest.raises(ConfigError, match="at least 20"):
        discover(DiscoveryContext(amdsmi=fake), poll_hz=5)
    with pytest.raises(ConfigError, match="first_index"):
        discover(DiscoveryContext(amdsmi=fake), first_index=-1)


def test_gpu_without_counter_or_power_is_unavailable() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(energy="unsupported", power="none"), FakeAmdGpu()],
                      clock=FakeClock())
    probe, [u] = open_probe(fake)
    assert "neither an energy counter nor socket power" in u.reason and u.hint
    assert indices(probe) == [1]
    probe.close()
    probe, [u] = open_probe(fake, {"HIP_VISIBLE_DEVICES": "0"})
    assert probe is None and fake.shutdown_count == fake.init_count == 2


# -- channels --------------------------------------------------------------------------------------
def test_channels_meta_and_first_index() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(), FakeAmdGpu(name="AMD Radeon PRO W7900", energy="unsupported",
                                                power="average")], clock=FakeClock())
    probe, missing = open_probe(fake)
    assert not missing and probe.drain_warnings() == []
    mi300, w7900 = probe.channels
    assert [c.id for c in probe.channels] == ["gpu0", "gpu1"]
    assert all(c.kind == "gpu" and c.source == "amdsmi" for c in probe.channels)
    assert mi300.device == "AMD Instinct MI300X" and mi300.method == "counter"
    assert mi300.resolution_s == COUNTER_UPDATE_PERIOD_S
    assert mi300.meta["uuid"] == fake.uuid(0) and mi300.meta["bdf"] == fake.gpus[0].bdf
    assert mi300.meta["rocm_uuid"] == fake.rocm_uuid(0)
    assert mi300.meta["counter_resolution_uj"] == float32(15.3)
    assert mi300.meta["amdsmi_index"] == 0 and mi300.meta["hip_index"] == 0
    assert w7900.device == "AMD Radeon PRO W7900" and w7900.method == "integrated"
    assert w7900.meta["power_source"] == "average_socket_power"
    assert w7900.resolution_s == pytest.approx(1 / 50)
    assert set(probe.gauge_names) == {f"gpu{i}_{g}" for i in (0, 1) for g in GAUGES}
    described = probe.describe()
    assert described["driver_version"] == "6.8.5" and described["poll_hz"] == 50.0
    assert described["amdsmi_version"] == "24.7.1"
    probe.close()
    probe, _ = open_probe(fake, first_index=4)  # after four NVIDIA GPUs
    assert [c.id for c in probe.channels] == ["gpu4", "gpu5"]
    assert all(name.startswith(("gpu4_", "gpu5_")) for name in probe.gauge_names)
    probe.close()


# -- energy: the counter ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(watts=st.floats(1.0, 1500.0),
       resolution=st.sampled_from([15.3, 15.259, 1.0, 0.5, 61.0]),
       offset=st.integers(0, 2**62),
       opened_at=st.floats(0.0, 0.01),
       steps=st.lists(st.floats(0.0001, 3.0), min_size=1, max_size=12))
def test_counter_energy_is_exact_to_its_resolution(watts: float, resolution: float, offset: int,
                                                   opened_at: float, steps: list[float]) -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=watts, resolution_uj=resolution,
                                  counter_offset=offset)], clock=clock)
    clock.advance(opened_at)  # open anywhere between two counter updates
    probe, _ = open_probe(fake)
    assert probe.read() == {"gpu0": 0.0}
    raw0, t0 = fake.counter_raw(0), fake.elapsed_s()
    for step in steps:
        clock.advance(step)
        got = probe.read()["gpu0"]
        # exactly the counter's increase, times its resolution
        assert got == ticks_j(fake, 0, fake.counter_raw(0) - raw0)
        # and the truth to within one update period and one count at either end
        truth = fake.energy_j(0, t0, fake.elapsed_s())
        assert abs(got - truth) <= watts * PERIOD + 2 * fake.resolution(0) / 1e6 + 1e-9 * truth
    assert probe.drain_warnings() == []
    probe.close()


def test_counter_of_a_varying_trace_follows_the_truth() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=sine_trace(400.0, 250.0, 1.7)),
                       FakeAmdGpu(power_w=steps_trace([90.0, 650.0, 300.0], 0.237))],
                      clock=clock)
    probe, _ = open_probe(fake)
    raw0 = [fake.counter_raw(0), fake.counter_raw(1)]
    for _ in range(5):
        clock.advance(0.6173)
        energy = probe.read()
        t = fake.elapsed_s()
        for i in (0, 1):
            assert energy[f"gpu{i}"] == ticks_j(fake, i, fake.counter_raw(i) - raw0[i])
            assert energy[f"gpu{i}"] == pytest.approx(fake.energy_j(i, 0.0, t), abs=0.7)
    # between two updates of the counter a read changes nothing
    clock.advance(PERIOD - (fake.elapsed_s() % PERIOD) + PERIOD / 10)  # just after an update
    energy = probe.read()
    clock.advance(PERIOD / 2)
    assert probe.read() == energy
    probe.close()


@settings(max_examples=60, deadline=None)
@given(before_wrap_j=st.floats(0.001, 500.0), watts=st.floats(10.0, 1500.0),
       steps=st.lists(st.floats(0.01, 2.0), min_size=2, max_size=10))
def test_counter_wrap_at_2_64_is_undone_exactly(before_wrap_j: float, watts: float,
                                               steps: list[float]) -> None:
    clock = FakeClock()
    res = float32(15.3)
    offset = 2**64 - max(1, int(before_wrap_j * 1e6 / res))
    fake = FakeAmdSmi([FakeAmdGpu(power_w=watts, counter_offset=offset)], clock=clock)
    probe, _ = open_probe(fake)
    raw0 = fake.counter_raw(0)
    for step in steps:
        clock.advance(step)
        got = probe.read()["gpu0"]
        assert got == ticks_j(fake, 0, (fake.counter_raw(0) - raw0) % 2**64)
    if watts * sum(steps) > before_wrap_j + 1:
        assert fake.counter_raw(0) < raw0  # it did wrap
    assert probe.drain_warnings() == []  # a wrap is not a reset
    probe.close()


@settings(max_examples=50, deadline=None)
@given(watts=st.floats(10.0, 1500.0), reset_at=st.floats(0.01, 4.0),
       steps=st.lists(st.floats(0.01, 1.5), min_size=1, max_size=10))
def test_counter_reset_counts_the_energy_after_it(watts: float, reset_at: float,
                                                  steps: list[float]) -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=watts, counter_offset=10**12, reset_at_s=reset_at)],
                      clock=clock)
    probe, _ = open_probe(fake)
    raw0 = fake.counter_raw(0)
    before_reset = 0  # counts read before the reset
    after_reset = False
    for step in steps:
        clock.advance(step)
        got = probe.read()["gpu0"]
        t = fake.elapsed_s()
        raw = fake.counter_raw(0)
        if t < reset_at:
            before_reset = raw - raw0
            assert got == ticks_j(fake, 0, before_reset)
        else:
            after_reset = True
            # what was read before the reset, plus everything since the reset
            assert got == pytest.approx(ticks_j(fake, 0, before_reset) + ticks_j(fake, 0, raw),
                                        rel=1e-12)
    warnings = probe.drain_warnings()
    if after_reset:
        [warning] = warnings
        assert "went backwards" in warning and "since the reset" in warning
    else:
        assert warnings == []
    probe.close()


def test_glitch_backwards_is_ignored_and_caught_up() -> None:
    """A counter that steps back by 14e6 counts once (ROCm/amdsmi#115) is neither a reset nor
    energy: the next good reading catches up, nothing is counted twice."""
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=300.0, counter_offset=4_750_000_000)], clock=clock)
    probe, _ = open_probe(fake)
    raw0 = fake.counter_raw(0)
    clock.advance(1.0)
    probe.read()
    glitch = fake.amdsmi_get_energy_count(fake.amdsmi_get_processor_handles()[0])
    glitch["energy_accumulator"] -= 14_000_000
    fake.override(0, "amdsmi_get_energy_count", glitch)
    clock.advance(0.5)
    assert probe.read()["gpu0"] == pytest.approx(300.0, abs=0.01)  # unchanged
    fake.clear()
    clock.advance(0.5)
    assert probe.read()["gpu0"] == ticks_j(fake, 0, fake.counter_raw(0) - raw0)
    assert probe.read()["gpu0"] == pytest.approx(600.0, abs=0.01)
    [warning] = probe.drain_warnings()
    assert "implausible" in warning and "glitch" in warning
    probe.close()


def test_persistent_jump_becomes_the_new_baseline() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=100.0)], clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(1.0)
    assert probe.read()["gpu0"] == pytest.approx(100.0, abs=0.01)
    jump = 10**12  # 15 MJ in 0.1 s
    fake.override(0, "amdsmi_get_energy_count", lambda: {
        "energy_accumulator": fake.counter_raw(0) + jump,
        "counter_resolution": fake.resolution(0), "timestamp": 0})
    for _ in range(GLITCH_READS - 1):
        clock.advance(0.1)
        assert probe.read()["gpu0"] == pytest.approx(100.0, abs=0.01)  # ignored
    clock.advance(0.1)
    assert probe.read()["gpu0"] == pytest.approx(100.0, abs=0.01)  # re-based, nothing counted
    clock.advance(1.0)
    assert probe.read()["gpu0"] == pytest.approx(200.0, abs=0.01)  # counting again
    warnings = probe.drain_warnings()
    assert any("new baseline" in w for w in warnings)
    probe.close()


def test_failed_and_odd_reads_lose_nothing_of_a_cumulative_counter() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=250.0), FakeAmdGpu(power_w=100.0),
                       FakeAmdGpu(power_w=50.0)], clock=clock)
    probe, _ = open_probe(fake)
    raw0 = fake.counter_raw(0)
    fake.fail(0, "amdsmi_get_energy_count", "BUSY", times=2)
    fake.override(1, "amdsmi_get_energy_count", {"energy_accumulator": "N/A"})
    for _ in range(2):
        clock.advance(0.5)
        energy = probe.read()
        assert energy["gpu0"] == 0.0 and energy["gpu1"] == 0.0
        assert energy["gpu2"] > 0.0
    fake.clear()
    clock.advance(0.5)
    energy = probe.read()
    assert energy["gpu0"] == ticks_j(fake, 0, fake.counter_raw(0) - raw0)
    assert energy["gpu0"] == pytest.approx(375.0, abs=0.01)
    assert energy["gpu1"] == pytest.approx(150.0, abs=0.01)
    warnings = probe.drain_warnings()
    assert any("failed" in w and "caught up" in w for w in warnings)
    assert any("odd answer" in w for w in warnings)
    fake.fail(None, "amdsmi_get_energy_count", "DRM_ERROR")
    with pytest.raises(ProbeError, match="no GPU energy could be read"):
        probe.read()
    probe.close()


def test_energy_while_no_run_uses_the_probe_is_not_counted() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=200.0),
                       FakeAmdGpu(power_w=100.0, energy="unsupported")], clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(5.0)  # cached between runs: not counted
    probe.begin_run()
    start = probe.read()
    assert start == pytest.approx({"gpu0": 0.0, "gpu1": 0.0}, abs=0.01)
    clock.advance(1.0)
    probe.poll()
    energy = probe.read()
    assert energy["gpu0"] == pytest.approx(200.0, abs=0.01)
    assert energy["gpu1"] == pytest.approx(100.0)
    probe.end_run()
    probe.close()


def test_legacy_power_key_is_read() -> None:
    """ROCm <= 6.1 returns the accumulator under ``power`` only."""
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=80.0, legacy_energy_key=True)], clock=clock)
    probe, _ = open_probe(fake)
    assert probe.channels[0].method == "counter"
    clock.advance(2.0)
    assert probe.read()["gpu0"] == pytest.approx(160.0, abs=0.01)
    probe.close()


# -- energy: polled power --------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mean=st.floats(100.0, 700.0), swing=st.floats(0.0, 0.9), freq=st.floats(0.05, 2.0),
       power=st.sampled_from(["current", "average"]), tail=st.floats(0.0, 0.02))
def test_polled_power_integrates_within_one_percent(mean: float, swing: float, freq: float,
                                                    power: str, tail: float) -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=sine_trace(mean, swing * mean, freq),
                                  energy="unsupported", power=power)], clock=clock)
    probe, _ = open_probe(fake)
    [channel] = probe.channels
    assert channel.method == "integrated"
    assert channel.meta["power_source"] == f"{power}_socket_power"
    t0 = fake.elapsed_s()
    for _ in range(4 * 50):  # 4 s polled at 50 Hz
        clock.advance(0.02)
        probe.poll()
    clock.advance(tail)  # a boundary read between polls integrates up to its own time
    energy = probe.read()["gpu0"]
    assert energy == pytest.approx(fake.energy_j(0, t0, fake.elapsed_s()), rel=0.01)
    probe.close()


def test_stepped_power_integrates_within_one_percent() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=steps_trace([60.0, 250.0, 120.0, 300.0], 0.413),
                                  energy="unsupported")], clock=clock)
    probe, _ = open_probe(fake)
    for _ in range(4 * 50):
        clock.advance(0.02)
        probe.poll()
    assert probe.read()["gpu0"] == pytest.approx(fake.energy_j(0, 0.0, 4.0), rel=0.01)
    probe.close()


def test_failed_power_polls_are_bridged() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=200.0, energy="unsupported")], clock=clock)
    probe, _ = open_probe(fake)
    clock.advance(0.5)
    probe.poll()
    fake.fail(0, "amdsmi_get_power_info", "BUSY", times=3)
    for _ in range(3):
        clock.advance(0.1)
        probe.poll()
    fake.override(0, "amdsmi_get_power_info", {"current_socket_power": "N/A"})
    clock.advance(0.1)
    probe.poll()
    fake.clear()
    clock.advance(0.4)
    assert probe.read()["gpu0"] == pytest.approx(200.0 * 1.3)  # bridged from 0.5 to 1.3 s
    assert any("interpolated" in w for w in probe.drain_warnings())
    probe.close()


def test_polling_thread_runs_at_the_requested_rate() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(power_w=200.0, energy="unsupported")])
    [probe] = discover(DiscoveryContext(amdsmi=fake), poll_hz=50)
    probe.begin_run()  # the poller runs while a run uses the probe
    t0 = time.monotonic()
    time.sleep(0.5)
    energy = probe.read()["gpu0"]
    elapsed = time.monotonic() - t0
    polls = fake.calls["amdsmi_get_power_info"]
    probe.close()
    assert 15 <= polls <= 40  # ~25 in 0.5 s at 50 Hz
    assert energy == pytest.approx(200.0 * elapsed, rel=0.1)
    after = fake.calls["amdsmi_get_power_info"]
    time.sleep(0.1)
    assert fake.calls["amdsmi_get_power_info"] == after  # the thread stopped
    assert fake.shutdown_count == 1


# -- which GPUs ------------------------------------------------------------------------------------
def four() -> FakeAmdSmi:
    return FakeAmdSmi([FakeAmdGpu(power_w=100.0 + 10 * i) for i in range(4)], clock=FakeClock())


@pytest.mark.parametrize("variable", ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                      "CUDA_VISIBLE_DEVICES"])
@pytest.mark.parametrize(("value", "expected"), [
    ("2", [2]), ("3,1", [3, 1]), (" 0 , 2 ", [0, 2]), ("1,-1,2", [1]),
])
def test_visible_devices_by_index(variable: str, value: str, expected: list[int]) -> None:
    probe, missing = open_probe(four(), {variable: value})
    assert not missing and indices(probe) == expected
    assert [c.id for c in probe.channels] == [f"gpu{i}" for i in range(len(expected))]
    assert [c.meta["hip_index"] for c in probe.channels] == list(range(len(expected)))
    probe.close()


@pytest.mark.parametrize("variable", ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"])
def test_visible_devices_by_uuid(variable: str) -> None:
    fake = four()
    for value, expected in [
        (fake.rocm_uuid(2), [2]),  # GPU-<unique id>, as rocminfo shows
        (fake.rocm_uuid(2).upper(), [2]),
        (fake.rocm_uuid(3)[:14], [3]),  # a unique prefix
        (f"GPU-{fake.uuid(1)}", [1]),  # the amdsmi UUID, as `amd-smi list` shows
        (f"{fake.uuid(1)},0", [1, 0]),
    ]:
        probe, missing = open_probe(fake, {variable: value})
        assert not missing and indices(probe) == expected, value
        probe.close()


@settings(max_examples=80, deadline=None)
@given(rocr=st.one_of(st.none(), st.permutations(range(4)).flatmap(
           lambda p: st.integers(1, 4).map(lambda n: list(p[:n])))),
       hip=st.one_of(st.none(), st.permutations(range(4)).flatmap(
           lambda p: st.integers(1, 4).map(lambda n: list(p[:n])))),
       inner=st.sampled_from(["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"]))
def test_rocr_then_hip_compose_like_rocm(rocr: list[int] | None, hip: list[int] | None,
                                         inner: str) -> None:
    """ROCr applies ROCR_VISIBLE_DEVICES to the physical GPUs; HIP (or CUDA) indices then
    select among what ROCr left."""
    env = {}
    if rocr is not None:
        env["ROCR_VISIBLE_DEVICES"] = ",".join(map(str, rocr))
    if hip is not None:
        env[inner] = ",".join(map(str, hip))
    after_rocr = rocr if rocr is not None else [0, 1, 2, 3]
    same = rocr is not None and hip is not None and rocr == hip  # one list set twice: once
    if hip is None or same:
        expected = after_rocr
    else:
        expected = []
        for h in hip:
            if h >= len(after_rocr):
                break  # HIP stops at the first invalid entry
            expected.append(after_rocr[h])
    probe, missing = open_probe(four(), env)
    if not expected:
        assert probe is None
        [u] = missing
        assert inner in u.reason and inner in u.hint
        return
    assert not missing and indices(probe) == expected
    if not same and hip is not None and len(expected) < len(hip):
        assert any(inner in w and "ignores it" in w for w in probe.drain_warnings())
    probe.close()


def test_hip_wins_over_cuda() -> None:
    probe, _ = open_probe(four(), {"HIP_VISIBLE_DEVICES": "3", "CUDA_VISIBLE_DEVICES": "1"})
    assert indices(probe) == [3]
    probe.close()


@pytest.mark.parametrize("variable", ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                      "CUDA_VISIBLE_DEVICES"])
@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles"])
def test_values_hiding_every_gpu(variable: str, value: str) -> None:
    fake = four()
    probe, [u] = open_probe(fake, {variable: value})
    assert probe is None and u.reason == f"{variable} hides every GPU"
    assert variable in u.hint
    assert fake.init_count == fake.shutdown_count == 1


@pytest.mark.parametrize("variable", ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"])
@pytest.mark.parametrize(("value", "why"), [
    ("abc", "not a GPU index"), ("7", "no GPU with index 7"), ("GPU-ffff", "matches no GPU"),
])
def test_invalid_first_entry_is_unavailable_naming_the_variable(variable: str, value: str,
                                                                why: str) -> None:
    fake = four()
    probe, [u] = open_probe(fake, {variable: value})
    assert probe is None and why in u.reason and variable in u.reason
    assert "CUDA_VISIBLE_DEVICES" not in u.reason and "NVML" not in u.reason
    assert variable in u.hint and "accepted:" in u.reason
    assert fake.shutdown_count == 1


# -- packages: MI250/MI250X, MI300X partitions -----------------------------------------------------
def test_mi250x_energy_is_reported_once_per_package() -> None:
    clock = FakeClock()
    traces = [300.0, sine_trace(200.0, 80.0, 0.9), 150.0, 90.0]
    fake = FakeAmdSmi(mi250x(2, power_w=traces), clock=clock)
    probe, missing = open_probe(fake)
    assert not missing
    assert [c.id for c in probe.channels] == ["gpu0", "gpu1"]  # two packages, not 4 GCDs
    pkg0, pkg1 = probe.channels
    assert pkg0.method == "counter" and pkg0.device == "AMD Instinct MI250X"
    assert [g["amdsmi_index"] for g in pkg0.meta["gcds"]] == [0, 1]
    assert [g["reports_energy"] for g in pkg0.meta["gcds"]] == [True, False]
    assert pkg0.meta["silent_gcds"] == [1] and pkg1.meta["silent_gcds"] == [3]
    assert pkg0.meta["package_share"] == 1.0
    warnings = probe.drain_warnings()
    assert len(warnings) == 2 and all("never shown at 0 W" in w for w in warnings)
    raw0 = [fake.counter_raw(0), fake.counter_raw(2)]
    for _ in range(4):
        clock.advance(0.75)
        energy = probe.read()
        t = fake.elapsed_s()
        assert energy["gpu0"] == ticks_j(fake, 0, fake.counter_raw(0) - raw0[0])
        truth0 = fake.energy_j(0, 0.0, t) + fake.energy_j(1, 0.0, t)
        truth1 = fake.energy_j(2, 0.0, t) + fake.energy_j(3, 0.0, t)
        assert energy["gpu0"] == pytest.approx(truth0, abs=1.0)  # both GCDs, once
        assert energy["gpu1"] == pytest.approx(truth1, abs=0.5)
        # nothing attributed twice: the channels add up to the four GCDs
        assert sum(energy.values()) == pytest.approx(truth0 + truth1, abs=1.5)
    gauges = probe.gauges()
    assert gauges["gpu0_memory_used_bytes"] == 2 * 2048 * 2**20  # both GCDs
    power = fake.amdsmi_get_power_info(fake.amdsmi_get_processor_handles()[0])
    assert gauges["gpu0_power_w"] == power["average_socket_power"]  # the package's power
    probe.close()


@settings(max_examples=30, deadline=None)
@given(visible=st.sampled_from(["0", "1", "1,0", "2,1"]), watts=st.floats(50.0, 500.0))
def test_a_silent_gcd_alone_reports_its_package_not_zero(visible: str, watts: float) -> None:
    """A job given only the second GCD of an MI250 sees the package's energy (shared, said
    so), never a flat 0 J for a busy GPU."""
    clock = FakeClock()
    fake = FakeAmdSmi(mi250x(2, power_w=[watts, watts, 80.0, 80.0]), clock=clock)
    probe, _ = open_probe(fake, {"HIP_VISIBLE_DEVICES": visible})
    shown = [int(v) for v in visible.split(",")]
    packages = list(dict.fromkeys(i // 2 for i in shown))
    assert [c.meta["package"] for c in probe.channels] == [f"board:PKG{p:04d}" for p in packages]
    clock.advance(2.0)
    energy = probe.read()
    for cid, p in zip(energy, packages, strict=True):
        truth = fake.energy_j(2 * p, 0.0, 2.0) + fake.energy_j(2 * p + 1, 0.0, 2.0)
        assert energy[cid] == pytest.approx(truth, abs=0.1) and energy[cid] > 0
    warnings = probe.drain_warnings()
    for c in probe.channels:
        visible_here = [g for g in c.meta["gcds"] if g["visible"]]
        assert c.meta["package_share"] == len(visible_here) / 2
        if len(visible_here) == 1:
            assert any(c.id in w and "not visible to this process" in w for w in warnings)
    probe.close()


def test_mi300x_partitions_are_one_package() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi(mi300x_cpx(4, power_w=sine_trace(600.0, 150.0, 0.5))
                      + [FakeAmdGpu(power_w=300.0)], clock=clock)
    probe, missing = open_probe(fake, {"HIP_VISIBLE_DEVICES": "1,2,4"})
    assert not missing
    socket, other = probe.channels
    assert socket.meta["package"] == "pci:0000:0c:00"  # no board serial: the PCI device
    assert [g["visible"] for g in socket.meta["gcds"]] == [False, True, True, False]
    assert socket.meta["package_share"] == 0.5
    assert socket.meta["silent_gcds"] == [1, 2, 3]
    assert other.meta["amdsmi_index"] == 4 and "gcds" not in other.meta
    clock.advance(3.0)
    energy = probe.read()
    assert energy[socket.id] == pytest.approx(fake.energy_j(0, 0.0, 3.0), abs=1.0)
    assert energy[other.id] == pytest.approx(900.0, abs=0.01)
    warnings = probe.drain_warnings()
    assert any("GCD(s) 0, 3 of this" in w and "package_share = 2/4" in w for w in warnings)
    # the visible silent partitions are named (hidden partition 3 is in meta only)
    assert any("GCD/partition 1 (0000:0c:00.1), 2 (0000:0c:00.2) of this" in w for w in warnings)
    probe.close()


def test_devices_that_all_report_the_package_counter_are_counted_once() -> None:
    clock = FakeClock()
    gpus = [FakeAmdGpu(power_w=200.0, board_serial="OAM7", counts_for=[0, 1]),
            FakeAmdGpu(power_w=100.0, board_serial="OAM7", counts_for=[0, 1])]
    fake = FakeAmdSmi(gpus, clock=clock)
    probe, _ = open_probe(fake)
    [channel] = probe.channels
    assert channel.meta["duplicate_gcds"] == [1]
    clock.advance(2.0)
    assert probe.read()[channel.id] == pytest.approx(600.0, abs=0.01)  # not 1200
    probe.close()


def test_unidentified_silent_gcd_is_warned_about() -> None:
    """No board serial and different PCI buses: the package cannot be found; a lone counter
    at 0 with no power is said to be suspicious."""
    gpus = mi250x(1)
    for g in gpus:
        g.board_serial = "N/A"
    fake = FakeAmdSmi(gpus, clock=FakeClock())
    probe, _ = open_probe(fake, {"ROCR_VISIBLE_DEVICES": "1"})
    [channel] = probe.channels
    [warning] = probe.drain_warnings()
    assert "reads 0" in warning and "MI250" in warning and "0 J for a busy GPU" in warning
    assert channel.meta["package"].startswith("pci:")
    probe.close()


def test_placeholder_board_serial_does_not_merge_gpus() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(board_serial="123456") for _ in range(9)], clock=FakeClock())
    probe, _ = open_probe(fake)
    assert len(probe.channels) == 9
    assert any("placeholder" in w for w in probe.drain_warnings())
    probe.close()


# -- gauges ----------------------------------------------------------------------------------------
def test_gauges_with_units_and_absent_values() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(vram_used_mb=1024, gfx_activity=55,
                                  temperatures={"HOTSPOT": 61, "EDGE": 40}),
                       FakeAmdGpu(gfx_activity="N/A", temperatures={"EDGE": 45},
                                  energy="unsupported", power="current", power_w=123.0)],
                      clock=clock)
    probe, _ = open_probe(fake)
    gauges = probe.gauges()
    assert gauges["gpu0_memory_used_bytes"] == 1024 * 2**20
    assert gauges["gpu0_utilization_pct"] == 55.0
    assert gauges["gpu0_temperature_c"] == 61.0  # hotspot first
    assert gauges["gpu0_power_w"] == 300.0
    assert "gpu1_utilization_pct" not in gauges  # "N/A" is left out
    assert gauges["gpu1_temperature_c"] == 45.0  # no hotspot sensor: edge
    assert gauges["gpu1_power_w"] == 123.0
    assert set(gauges) <= set(probe.gauge_names)
    assert probe.drain_warnings() == []
    fake.fail(0, "amdsmi_get_gpu_vram_usage", "NOT_SUPPORTED")
    fake.fail(0, "amdsmi_get_gpu_activity", "IO")
    for _ in range(3):
        gauges = probe.gauges()
    assert "gpu0_memory_used_bytes" not in gauges and "gpu0_utilization_pct" not in gauges
    [warning] = probe.drain_warnings()  # an error is said once; "not supported" is not said
    assert "utilization_pct" in warning
    # GPU 0's unsupported VRAM is not asked again: 2 (first call) + 1 (GPU 0) + 3 (GPU 1)
    assert fake.calls["amdsmi_get_gpu_vram_usage"] == 2 + 1 + 3
    probe.close()
    assert probe.gauges() == {}


# -- odd answers -----------------------------------------------------------------------------------
ODD = st.one_of(
    st.none(), st.just("N/A"), st.just([]), st.just(7), st.booleans(),
    st.dictionaries(st.sampled_from(["energy_accumulator", "power", "counter_resolution",
                                     "timestamp", "current_socket_power",
                                     "average_socket_power", "vram_used", "gfx_activity"]),
                    st.one_of(st.none(), st.just("N/A"), st.integers(-5, 2**65),
                              st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                              st.text(max_size=5)),
                    max_size=4),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at_open=st.dictionaries(st.sampled_from(["amdsmi_get_energy_count",
                                                "amdsmi_get_power_info",
                                                "amdsmi_get_gpu_asic_info",
                                                "amdsmi_get_gpu_device_uuid"]), ODD, max_size=3),
       later=st.lists(st.tuples(st.sampled_from(["amdsmi_get_energy_count",
                                                 "amdsmi_get_power_info",
                                                 "amdsmi_get_gpu_vram_usage",
                                                 "amdsmi_get_gpu_activity"]), ODD),
                      max_size=6))
def test_odd_answers_never_crash(at_open: dict[str, Any], later: list[tuple[str, Any]]) -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=200.0), FakeAmdGpu(power_w=100.0)], clock=clock)
    for function, value in at_open.items():
        fake.override(0, function, value)
    probe, missing = open_probe(fake, {"HIP_VISIBLE_DEVICES": "0,1"})
    assert probe is not None  # GPU 1 answers normally
    fake.clear()
    last = probe.read()
    for function, value in later:
        fake.override(0, function, value)
        clock.advance(0.05)
        try:
            energy = probe.read()
        except ProbeError:
            continue  # nothing could be read: the sampler's error path
        probe.gauges()
        assert all(energy[k] >= last[k] for k in energy)  # monotone, whatever came back
        assert all(math.isfinite(v) for v in energy.values())
        last = energy
        fake.clear()
    clock.advance(1.0)
    energy = probe.read()
    [gpu1] = [c.id for c in probe.channels if c.meta["amdsmi_index"] == 1]
    assert energy[gpu1] == pytest.approx(100.0 * fake.elapsed_s(), abs=0.5)
    probe.close()


def test_close_is_idempotent_and_shuts_down_once() -> None:
    fake = FakeAmdSmi([FakeAmdGpu()], clock=FakeClock())
    probe, _ = open_probe(fake)
    probe.close()
    probe.close()
    assert fake.shutdown_count == 1
    assert probe.read() == {"gpu0": 0.0}  # the last values, no call after close
