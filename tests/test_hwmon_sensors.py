"""hwmon energy/power sensors: Grace module sensors, ACPI power meters, AMD amd_energy; what is
summed, counters exact, power integrated between reads, unreadable sensors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes import DiscoveryContext, discover
from energymeter.probes.base import energy_summary
from energymeter.probes.hwmon import HwmonProbe
from energymeter.probes.hwmon import discover as discover_hwmon
from tests.fakes.hwmon import FakeHwmon


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _probe(root: Path, clock: Clock, **kw: object) -> HwmonProbe:
    found = discover_hwmon(DiscoveryContext(sysfs_root=root), clock=clock, **kw)
    [probe] = [p for p in found if isinstance(p, HwmonProbe)]
    return probe


def test_grace_module_is_beside_the_total_and_components_are_summed(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), Clock()
    hw = fake.device("grace", [("power", 1, "Module Power Socket 0"),
                               ("power", 2, "Grace Power Socket 0"),
                               ("power", 3, "SysIO Power Socket 0")])
    for index, watts in ((1, 400.0), (2, 150.0), (3, 50.0)):
        fake.set_power(hw, index, watts)
    probe = _probe(tmp_path, clock)
    kinds = {c.meta["label"]: c.kind for c in probe.channels}
    assert kinds == {"Module Power Socket 0": "psys", "Grace Power Socket 0": "cpu",
                     "SysIO Power Socket 0": "soc"}
    assert all(c.method == "integrated" for c in probe.channels)
    clock.t += 10.0
    energy = probe.read()
    summary = energy_summary(probe.channels, energy)
    assert summary["total"] == pytest.approx(2000.0)  # cpu 1500 + soc 500, module not summed
    assert summary["by_kind"]["psys"] == pytest.approx(4000.0)
    probe.close()


def test_acpi_power_meter_is_platform_power(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), Clock()
    hw = fake.device("power_meter", [("power", 1, None)])
    fake.set_power(hw, 1, 320.0)
    probe = _probe(tmp_path, clock)
    [channel] = probe.channels
    assert channel.kind == "psys" and not channel.in_total
    clock.t += 2.5
    assert probe.read()[channel.id] == pytest.approx(800.0)
    probe.close()


def test_amd_energy_cores_are_subzones_and_sockets_overlap_rapl(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), Clock()
    hw = fake.device("amd_energy", [("energy", 1, "Ecore000"), ("energy", 2, "Ecore001"),
                                    ("energy", 3, "Esocket0")])
    probe = _probe(tmp_path, clock)
    by_label = {c.meta["label"]: c for c in probe.channels}
    socket = by_label["Esocket0"]
    assert socket.kind == "cpu" and socket.method == "counter"
    assert socket.meta["overlaps"] == "rapl"
    assert by_label["Ecore000"].part_of == socket.id and not by_label["Ecore000"].in_total
    fake.add_energy(hw, 1, 3.0)
    fake.add_energy(hw, 3, 12.5)
    energy = probe.read()
    assert energy[socket.id] == pytest.approx(12.5)
    assert energy_summary(probe.channels, energy)["total"] == pytest.approx(12.5)
    probe.close()
    # When RAPL measures the packages, amd_energy adds nothing (not counted twice).
    [none] = discover_hwmon(DiscoveryContext(sysfs_root=tmp_path), skip_overlapping=True)
    assert not isinstance(none, HwmonProbe) and "no hwmon" in none.reason


@settings(max_examples=50, deadline=None)
@given(steps=st.lists(st.integers(0, 10**9), min_size=1, max_size=30))
def test_energy_counters_are_exact(tmp_path_factory: pytest.TempPathFactory,
                                   steps: list[int]) -> None:
    root = tmp_path_factory.mktemp("hw")
    fake, clock = FakeHwmon(root), Clock()
    hw = fake.device("grace", [("energy", 1, "CPU Energy Socket 0")])
    fake.set_energy_uj(hw, 1, 7_000_000)
    probe = _probe(root, clock)
    value = 7_000_000
    for step in steps:
        value += step
        fake.set_energy_uj(hw, 1, value)
        [got] = probe.read().values()
        assert got == pytest.approx((value - 7_000_000) / 1e6, abs=1e-9)
    probe.close()


@settings(max_examples=30, deadline=None)
@given(powers=st.lists(st.floats(0, 1000), min_size=2, max_size=40),
       dt=st.floats(0.01, 0.5))
def test_power_is_integrated_with_the_trapezoid_rule(tmp_path_factory: pytest.TempPathFactory,
                                                     powers: list[float], dt: float) -> None:
    root = tmp_path_factory.mktemp("hw")
    fake, clock = FakeHwmon(root), Clock()
    hw = fake.device("grace", [("power", 1, "CPU Power Socket 0")])
    fake.set_power(hw, 1, powers[0])
    probe = _probe(root, clock)
    truth = 0.0
    for before, after in zip(powers, powers[1:], strict=False):
        clock.t += dt
        fake.set_power(hw, 1, after)
        [got] = probe.read().values()
        truth += 0.5 * (round(before * 1e6) + round(after * 1e6)) / 1e6 * dt
        assert got == pytest.approx(truth, rel=1e-9, abs=1e-9)
    probe.close()


def test_jetson_ina3221_is_skipped_and_odd_files_do_not_crash(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), Clock()
    fake.device("ina3221", [("power", 1, "VDD_GPU_SOC")])
    hw = fake.device("grace", [("power", 1, "CPU Power Socket 0"),
                               ("power", 2, "Grace Power Socket 1")])
    (fake.base / hw / "power2_input").unlink()
    (fake.base / hw / "power2_input").mkdir()  # unreadable as a file
    found = discover_hwmon(DiscoveryContext(sysfs_root=tmp_path), clock=clock)
    probes = [p for p in found if isinstance(p, HwmonProbe)]
    missing = [u for u in found if not isinstance(u, HwmonProbe)]
    assert [c.meta["label"] for p in probes for c in p.channels] == ["CPU Power Socket 0"]
    assert missing and "hint" not in missing[0].reason and missing[0].hint
    for p in probes:
        p.close()


def test_registered_in_discovery(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    hw = fake.device("grace", [("power", 1, "Grace Power Socket 0")])
    fake.set_power(hw, 1, 100.0)
    found = discover(DiscoveryContext(sysfs_root=tmp_path, powercap_root=tmp_path / "none"))
    sources = {c.source for c in found.channels}
    assert "hwmon" in sources and "cpumodel" not in sources  # a measured CPU: no estimate
    for p in found.probes:
        p.close()
