"""NVIDIA Jetson INA3221 rails in both sysfs layouts: labelled, classified, integrated, the
module input beside the total."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes.base import DiscoveryContext, energy_summary
from energymeter.probes.jetson import JetsonProbe, discover, rail_kind
from tests.fakes.hwmon import write_value


class Clock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


def orin(root: Path, rails: dict[str, tuple[float, float]]) -> Path:
    """JetPack 5/6: hwmon ina3221 with inN_label, inN_input (mV), currN_input (mA)."""
    d = root / "class" / "hwmon" / "hwmon1"
    d.mkdir(parents=True)
    (d / "name").write_text("ina3221\n")
    for n, (rail, (mv, ma)) in enumerate(rails.items(), start=1):
        (d / f"in{n}_label").write_text(rail + "\n")
        write_value(d / f"in{n}_input", mv)
        write_value(d / f"curr{n}_input", ma)
    return d


def xavier(root: Path, rails: dict[str, float]) -> Path:
    """L4T 32: ina3221x iio device with rail_name_N and in_powerN_input (mW)."""
    d = root / "bus" / "i2c" / "drivers" / "ina3221x" / "1-0040" / "iio:device0"
    d.mkdir(parents=True)
    for n, (rail, mw) in enumerate(rails.items()):
        (d / f"rail_name_{n}").write_text(rail + "\n")
        write_value(d / f"in_power{n}_input", mw)
    return d


def _probe(root: Path, clock: Clock) -> JetsonProbe:
    found = discover(DiscoveryContext(sysfs_root=root), clock=clock)
    [probe] = [p for p in found if isinstance(p, JetsonProbe)]
    return probe


def test_rail_kinds() -> None:
    assert [rail_kind(r) for r in ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0",
                                   "VDDQ_VDD2_1V8AO", "GPU", "CPU", "SOC", "CV", "VDDRQ",
                                   "SYS5V", "POM_5V_IN")] == \
        ["gpu", "cpu", "psys", "dram", "gpu", "cpu", "soc", "soc", "dram", "psys", "psys"]


def test_orin_rails_integrated_and_module_input_beside_the_total(tmp_path: Path) -> None:
    clock = Clock()
    orin(tmp_path, {"VDD_GPU_SOC": (5000, 2000), "VDD_CPU_CV": (5000, 1000),
                    "VIN_SYS_5V0": (5000, 5000)})
    probe = _probe(tmp_path, clock)
    assert [c.meta["rail"] for c in probe.channels] == ["VDD_GPU_SOC", "VDD_CPU_CV",
                                                        "VIN_SYS_5V0"]
    clock.t += 4.0
    energy = probe.read()
    summary = energy_summary(probe.channels, energy)
    assert summary["by_kind"] == {"gpu": pytest.approx(40.0), "cpu": pytest.approx(20.0),
                                  "psys": pytest.approx(100.0)}
    assert summary["total"] == pytest.approx(60.0)  # the module input is not summed
    probe.close()


@settings(max_examples=40, deadline=None)
@given(powers=st.lists(st.integers(0, 30_000), min_size=2, max_size=30),
       dt=st.floats(0.01, 0.5))
def test_xavier_rails_trapezoid(tmp_path_factory: pytest.TempPathFactory, powers: list[int],
                                dt: float) -> None:
    root = tmp_path_factory.mktemp("jx")
    clock = Clock()
    d = xavier(root, {"GPU": powers[0]})
    probe = _probe(root, clock)
    truth = 0.0
    for before, after in zip(powers, powers[1:], strict=False):
        clock.t += dt
        write_value(d / "in_power0_input", after)
        truth += 0.5 * (before + after) / 1000 * dt
        assert probe.read()["jetson-gpu"] == pytest.approx(truth, rel=1e-9, abs=1e-12)
    probe.close()


def test_no_rails_no_probe_and_it_says_so(tmp_path: Path) -> None:
    [none] = discover(DiscoveryContext(sysfs_root=tmp_path))
    assert "no NVIDIA Jetson" in none.reason and none.hint
