"""AMD GPUs through a fake amdsmi: energy counters with their resolution, the power fallback,
HIP/ROCR visibility, MI250 packages counted once, unavailable cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes.amdsmi import AmdSmiProbe, discover
from energymeter.probes.base import DiscoveryContext
from tests.fakes.amd import FakeAmdGpu, FakeAmdSmi
from tests.fakes.nvml import FakeClock


def _open(fake: FakeAmdSmi, env: dict[str, str] | None = None) -> tuple[AmdSmiProbe, list]:
    found = discover(DiscoveryContext(amdsmi=fake, env=env or {}), clock=fake.clock)
    probes = [p for p in found if isinstance(p, AmdSmiProbe)]
    return (probes[0] if probes else None), [u for u in found if u not in probes]


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.floats(0.001, 5.0), min_size=1, max_size=20),
       watts=st.floats(1, 700))
def test_counter_is_exact_to_its_resolution(steps: list[float], watts: float) -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=watts)], clock=clock)
    probe, _ = _open(fake)
    [channel] = probe.channels
    assert channel.method == "counter" and channel.id == "rocm0"
    start = clock()
    for step in steps:
        clock.advance(step)
        got = probe.read()["rocm0"]
        truth = fake.energy_j(0, start, clock())
        # counter ticks of 1 ms and a 15.3 uJ unit: below one tick and one unit of the truth
        assert got == pytest.approx(truth, abs=watts * 0.001 + 2 * 15.3e-6)
    probe.close()


def test_power_fallback_is_integrated() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=200.0, energy=False)], clock=clock)
    probe, _ = _open(fake)
    [channel] = probe.channels
    assert channel.method == "integrated"
    clock.advance(3.0)
    assert probe.read()["rocm0"] == pytest.approx(600.0)
    probe.close()


def test_mi250_gcds_are_one_package_not_zero_and_not_twice() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=500.0, serial="PKG0"),
                       FakeAmdGpu(power_w=500.0, serial="PKG0", reports_energy=False),
                       FakeAmdGpu(power_w=300.0, serial="PKG1")], clock=clock)
    probe, _ = _open(fake)
    assert [c.id for c in probe.channels] == ["rocm0", "rocm1"]
    assert probe.channels[0].meta["gcds"] == 2
    clock.advance(2.0)
    energy = probe.read()
    assert energy["rocm0"] == pytest.approx(1000.0, rel=1e-3)  # the package, once
    assert energy["rocm1"] == pytest.approx(600.0, rel=1e-3)
    probe.close()


@pytest.mark.parametrize("variable", ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                      "CUDA_VISIBLE_DEVICES"])
def test_visible_devices(variable: str) -> None:
    fake = FakeAmdSmi([FakeAmdGpu(serial=f"S{i}") for i in range(3)])
    probe, _ = _open(fake, {variable: "2"})
    assert [c.meta["indices"] for c in probe.channels] == [[2]]
    probe.close()
    # ROCr takes GPU-<16 hex> in any case; HIP compares rocminfo's lower-case form.
    uuid = fake.hip_uuid(1) if variable != "ROCR_VISIBLE_DEVICES" else fake.rocr_uuid(1).lower()
    probe, _ = _open(fake, {variable: uuid})
    assert [c.meta["indices"] for c in probe.channels] == [[1]]
    probe.close()


def test_amdsmi_uuid_is_not_a_runtime_uuid_and_the_message_gives_the_right_one() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(serial="A"), FakeAmdGpu(serial="B")])
    amdsmi_uuid = fake.amdsmi_get_gpu_device_uuid(fake.handles[1])
    _, [missing] = _open(fake, {"HIP_VISIBLE_DEVICES": f"GPU-{amdsmi_uuid}"})
    assert "HIP_VISIBLE_DEVICES" in missing.reason and fake.hip_uuid(1) in missing.reason
    assert "HIP_VISIBLE_DEVICES" in missing.hint


def test_one_gcd_visible_says_the_package_is_measured_whole() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(serial="P"), FakeAmdGpu(serial="P", reports_energy=False)])
    probe, _ = _open(fake, {"HIP_VISIBLE_DEVICES": "0"})
    assert any("same package" in w for w in probe.drain_warnings())
    probe.close()


def test_unavailable_cases_say_why() -> None:
    _, missing = _open(FakeAmdSmi([FakeAmdGpu()], init_error=18))
    assert "could not be initialised" in missing[0].reason and missing[0].hint
    _, missing = _open(FakeAmdSmi([]))
    assert "no AMD GPU" in missing[0].reason
    _, missing = _open(FakeAmdSmi([FakeAmdGpu()]), {"HIP_VISIBLE_DEVICES": "7"})
    assert "HIP_VISIBLE_DEVICES" in missing[0].hint
    # No driver and nothing injected: not even imported; `energymeter probes` says why.
    [none] = discover(DiscoveryContext(), driver_paths=("/nonexistent",))
    assert "no AMD GPU driver" in none.reason and "ROCm" in none.hint


def test_memory_and_utilisation_gauges_per_package() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(serial="P"), FakeAmdGpu(serial="P", reports_energy=False),
                       FakeAmdGpu(serial="Q")])
    probe, _ = _open(fake)
    gauges = probe.gauges()
    assert gauges["rocm0_memory_used_bytes"] == (2048 + 4096) * 2**20  # both GCDs
    # aldebaran_get_gpu_metrics gives average_gfx_activity on both dies: their mean.
    assert gauges["rocm0_utilization_pct"] == 40.5
    assert gauges["rocm1_utilization_pct"] == 42
    assert set(gauges) <= set(probe.gauge_names)
    probe.close()


def test_mi250_secondary_gcd_reports_zero_power_and_a_zero_counter() -> None:
    """What the kernel gives for an MI250X secondary die (aldebaran_ppt.c
    aldebaran_get_gpu_metrics: average_socket_power = 0, energy_accumulator = 0; gpu_metrics
    v1_3 has no current_socket_power): the package is the primary's, counted once, by counter
    or, where the counter is unsupported, by integrating the primary's power plus the 0 W."""
    clock = FakeClock()
    gcds = [FakeAmdGpu(power_w=500.0, serial="OAM0", current_power=False),
            FakeAmdGpu(power_w=500.0, serial="OAM0", current_power=False,
                       reports_energy=False)]
    fake = FakeAmdSmi(gcds, clock=clock)
    secondary = fake.handles[1]
    assert fake.amdsmi_get_power_info(secondary)["average_socket_power"] == 0
    assert fake.amdsmi_get_power_info(secondary)["current_socket_power"] == "N/A"
    assert fake.amdsmi_get_energy_count(secondary)["energy_accumulator"] == 0
    probe, _ = _open(fake)
    [channel] = probe.channels
    assert channel.method == "counter" and channel.meta["read_from"] == [0, 1]
    assert any("reads 0" in w for w in probe.drain_warnings())
    clock.advance(2.0)
    assert probe.read()["rocm0"] == pytest.approx(1000.0, rel=1e-3)
    assert not probe.drain_warnings()
    probe.close()
    for g in gcds:
        g.energy = False
    probe, _ = _open(fake)
    [channel] = probe.channels
    assert channel.method == "integrated" and channel.meta["read_from"] == [0, 1]
    clock.advance(2.0)
    assert probe.read()["rocm0"] == pytest.approx(1000.0)  # 500 W + the secondary's 0 W
    probe.close()


@pytest.mark.parametrize("secondary_first", [False, True])
def test_two_gcds_carrying_the_package_counter_are_counted_once(secondary_first: bool) -> None:
    """A kernel without aldebaran_ppt.c's primary-die-only rule would give the package's
    counter on both GCDs: only the primary (lowest BDF) counts, with one warning."""
    clock = FakeClock()
    primary = FakeAmdGpu(power_w=400.0, serial="OAM0", bus=0x20)
    mirror = FakeAmdGpu(power_w=400.0, serial="OAM0", bus=0x30, mirrors_package=True)
    other = FakeAmdGpu(power_w=300.0, serial="OAM1", bus=0x40)
    fake = FakeAmdSmi([mirror, primary, other] if secondary_first else [primary, mirror, other],
                      clock=clock)
    probe, _ = _open(fake)
    primary_index = 1 if secondary_first else 0
    assert probe.channels[0].meta["read_from"][0] == primary_index
    warned = []
    for second in range(1, 6):
        clock.advance(1.0)
        energy = probe.read()
        assert energy["rocm0"] == pytest.approx(400.0 * second, rel=1e-3)  # not 800 W
        assert energy["rocm1"] == pytest.approx(300.0 * second, rel=1e-3)
        warned += [w for w in probe.drain_warnings() if "same energy counter" in w]
    [warning] = warned
    assert f"GPU {primary_index}, is counted" in warning
    probe.close()


@pytest.mark.parametrize("mirrored", [False, True])
def test_first_aldebaran_kernels_integrate_power_and_count_a_mirrored_die_once(
        mirrored: bool) -> None:
    """aldebaran_ppt.c as first merged (gpu_metrics_v1_1): energy_accumulator = 0 on both dies
    and average_socket_power from each die. A counter stuck at 0 is not used: power is
    integrated; two dies giving the same power are the package's twice: the primary's only."""
    clock = FakeClock()
    gcds = [FakeAmdGpu(power_w=500.0, serial="OAM0", gpu_metrics_v1_1=True),
            FakeAmdGpu(power_w=120.0, serial="OAM0", gpu_metrics_v1_1=True,
                       mirrors_package=mirrored)]
    fake = FakeAmdSmi(gcds, clock=clock)
    assert fake.amdsmi_get_energy_count(fake.handles[0])["energy_accumulator"] == 0
    probe, _ = _open(fake)
    [channel] = probe.channels
    assert channel.method == "integrated"
    warnings = probe.drain_warnings()
    assert any("not filled" in w for w in warnings)
    clock.advance(2.0)
    want = 1000.0 if mirrored else 1240.0
    assert probe.read()["rocm0"] == pytest.approx(want)
    warnings += probe.drain_warnings()
    assert len([w for w in warnings if "same power" in w]) == (1 if mirrored else 0)
    probe.close()


@pytest.mark.parametrize("glitch", [-60_000_000, 10**10], ids=["back", "up"])
def test_one_implausible_counter_reading_is_ignored(glitch: int) -> None:
    """ROCm/amdsmi#115: the counter once stepped back without restarting from 0. Taken for a
    reset, the counter's whole since-boot value (4 750 896 266 counts: 73 kJ) was added to a
    2 s run; a jump up was added in full. Now it is ignored with a warning and the next good
    reading catches up."""
    clock = FakeClock()
    gpu = FakeAmdGpu(power_w=500.0, offset=4_750_896_266)
    probe, _ = _open(FakeAmdSmi([gpu], clock=clock))
    clock.advance(1.0)
    gpu.offset += glitch
    first = probe.read()["rocm0"]
    [warning] = probe.drain_warnings()
    assert first == 0.0 and "implausible reading" in warning and "ignored" in warning
    gpu.offset -= glitch
    clock.advance(1.0)
    assert probe.read()["rocm0"] == pytest.approx(1000.0, abs=0.01)  # 2 s at 500 W
    assert probe.drain_warnings() == []


def test_a_jump_after_an_hour_of_a_cached_probe_is_still_ignored() -> None:
    """A probe cached between runs re-bases its counters when a run begins: the bound on the
    next reading's increase runs from then, not from an hour earlier (a +1e10-count jump
    would otherwise pass as 150 kJ of energy)."""
    clock = FakeClock()
    gpu = FakeAmdGpu(power_w=500.0, offset=4_750_896_266)
    probe, _ = _open(FakeAmdSmi([gpu], clock=clock))
    clock.advance(3600.0)  # no run meanwhile
    probe.begin_run()  # re-based: the hour belongs to no run
    gpu.offset += 10**10
    clock.advance(1.0)
    assert probe.read()["rocm0"] == 0.0  # the run's first read: the jump ignored
    gpu.offset -= 10**10
    clock.advance(1.0)
    assert probe.read()["rocm0"] == pytest.approx(1000.0, abs=0.01)
    probe.end_run()
