"""NVIDIA Jetson INA3221 rails in both sysfs layouts: labelled, classified, integrated, the
module input beside the total."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes.base import DiscoveryContext, PartialRead, Unavailable, energy_summary
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


# -- the layouts the drivers really make ---------------------------------------------------------


class Ina3221Hwmon:
    """What linux drivers/hwmon/ina3221.c (Documentation/hwmon/ina3221.rst) shows under
    /sys/class/hwmon/hwmonN: ``name`` "ina3221"; per channel 1..3 ``inN_input`` (bus mV),
    ``inN_enable`` (0644), ``inN_label`` only for a connected channel the device tree labels
    (ina3221_is_visible), ``currN_input`` (mA), ``currN_crit``/``_max`` and their alarms,
    ``shuntN_resistor`` (uOhm); ``in4..6_input`` (shunt uV), ``in7_input`` and ``in7_label``
    "sum of shunt voltages" (always visible), ``curr4_input``/``curr4_crit`` (summation),
    ``samples``, ``update_interval``. A disabled channel's ``inN_input``/``currN_input`` fail
    with ENODATA (ina3221_read_in / ina3221_read_curr): :meth:`pread` does that, as a plain file
    cannot."""

    def __init__(self, root: Path, rails: dict[int, tuple[str | None, float, float]],
                 disconnected: tuple[int, ...] = ()) -> None:
        self.dir = root / "class" / "hwmon" / "hwmon2"
        self.dir.mkdir(parents=True)
        (self.dir / "name").write_text("ina3221\n")
        self.disabled: set[int] = set(disconnected)
        for n in (1, 2, 3):
            label, mv, ma = rails.get(n, (None, 0.0, 0.0))
            if label is not None and n not in disconnected:
                (self.dir / f"in{n}_label").write_text(label + "\n")
            write_value(self.dir / f"in{n}_input", mv)
            write_value(self.dir / f"curr{n}_input", ma)
            write_value(self.dir / f"in{n + 3}_input", ma * 10)  # uV across 10 mOhm
            (self.dir / f"in{n}_enable").write_text("0\n" if n in disconnected else "1\n")
            for attr in ("crit", "max", "crit_alarm", "max_alarm"):
                write_value(self.dir / f"curr{n}_{attr}", 0)
            (self.dir / f"shunt{n}_resistor").write_text("10000\n")
        (self.dir / "in7_label").write_text("sum of shunt voltages\n")
        write_value(self.dir / "in7_input", 0)
        write_value(self.dir / "curr4_input", 0)
        write_value(self.dir / "curr4_crit", 0)
        (self.dir / "samples").write_text("512\n")
        (self.dir / "update_interval").write_text("140\n")

    def disable(self, n: int) -> None:
        (self.dir / f"in{n}_enable").write_text("0\n")
        self.disabled.add(n)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        for n in self.disabled:
            if name in (f"in{n}_input", f"curr{n}_input"):
                raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
        return os.pread(fd, size, offset)


def ina3221x_iio(root: Path, rails: dict[int, tuple[str, int]], *, bus: str = "1-0040",
                 device: str = "iio:device0", alias: bool = False) -> Path:
    """NVIDIA's downstream L4T driver (drivers/staging/iio/meter/ina3221.c in the L4T kernel,
    registered as "ina3221x"): under /sys/bus/i2c/drivers/ina3221x/<bus>/iio:deviceM, for
    channels 0..2, ``rail_name_N`` (``"(null)"`` for a channel the device tree does not name),
    ``in_voltageN_input`` (mV), ``in_currentN_input`` (mA), ``in_powerN_input`` (mW),
    ``in_currentN_trigger_input``, ``in_powerN_trigger_input``, ``crit_power_limit_N``,
    ``crit_current_limit_N``, ``warn_current_limit_N``, ``ui_input_N``, ``polling_delay_N``,
    and ``running_mode``, ``in_current_sum_input``, ``crit_current_limit_sum``. ``alias``: an
    ``iio_device`` link to it, as L4T 28 (TX1/TX2) kernels also show."""
    dev = root / "bus" / "i2c" / "drivers" / "ina3221x" / bus
    d = dev / device
    d.mkdir(parents=True)
    for n in (0, 1, 2):
        name, mw = rails.get(n, ("(null)", 0))
        (d / f"rail_name_{n}").write_text(name + "\n")
        mv = 5000
        write_value(d / f"in_voltage{n}_input", mv)
        write_value(d / f"in_current{n}_input", mw * 1000 // mv)
        write_value(d / f"in_power{n}_input", mw)
        write_value(d / f"in_current{n}_trigger_input", 0)
        write_value(d / f"in_power{n}_trigger_input", 0)
        (d / f"crit_power_limit_{n}").write_text("10000 mw\n")
        (d / f"crit_current_limit_{n}").write_text("2000 ma\n")
        (d / f"warn_current_limit_{n}").write_text("1500 ma\n")
        (d / f"ui_input_{n}").write_text(f"{mv} {mw * 1000 // mv}\n")
        (d / f"polling_delay_{n}").write_text("0 ms\n")
    (d / "running_mode").write_text("0\n")
    (d / "in_current_sum_input").write_text("0 ma\n")
    (d / "crit_current_limit_sum").write_text("4000 ma\n")
    if alias:
        os.symlink(device, dev / "iio_device")
    return d


def test_mainline_ina3221_rails_only_labelled_connected_channels(tmp_path: Path) -> None:
    clock = Clock()
    Ina3221Hwmon(tmp_path, {1: ("VDD_IN", 5000, 2000), 2: ("VDD_CPU_GPU_CV", 5000, 1000),
                            3: ("VDD_SOC", 5000, 500)}, disconnected=(3,))
    probe = _probe(tmp_path, clock)
    assert [c.meta["rail"] for c in probe.channels] == ["VDD_IN", "VDD_CPU_GPU_CV"]
    clock.t += 2.0
    assert probe.read() == {"jetson-vdd-in": pytest.approx(20.0),
                            "jetson-vdd-cpu-gpu-cv": pytest.approx(10.0)}
    probe.close()


def test_disabled_channel_is_unavailable_with_the_fix(tmp_path: Path) -> None:
    fake = Ina3221Hwmon(tmp_path, {1: ("VDD_GPU_SOC", 5000, 2000), 2: ("VDD_CPU_CV", 5000, 1000)})
    fake.disable(2)
    found = discover(DiscoveryContext(sysfs_root=tmp_path), clock=Clock(), pread=fake.pread)
    [probe] = [p for p in found if isinstance(p, JetsonProbe)]
    [why] = [u for u in found if isinstance(u, Unavailable)]
    assert [c.id for c in probe.channels] == ["jetson-vdd-gpu-soc"]
    assert "VDD_CPU_CV" in why.reason and "disabled" in why.reason
    assert "in2_enable" in why.hint
    probe.close()


def test_enodata_at_discovery_says_the_channel_is_not_measuring(tmp_path: Path) -> None:
    fake = Ina3221Hwmon(tmp_path, {1: ("VDD_IN", 5000, 2000)})
    fake.disabled.add(1)  # reads fail although inN_enable was not seen at 0
    [why] = discover(DiscoveryContext(sysfs_root=tmp_path), clock=Clock(), pread=fake.pread)
    assert isinstance(why, Unavailable) and "ENODATA" not in why.hint
    assert "OSError" in why.reason and "disabled" in why.hint


def test_a_channel_disabled_mid_run_fails_alone(tmp_path: Path) -> None:
    clock = Clock()
    fake = Ina3221Hwmon(tmp_path, {1: ("VDD_GPU_SOC", 5000, 2000), 2: ("VDD_CPU_CV", 5000, 1000)})
    found = discover(DiscoveryContext(sysfs_root=tmp_path), clock=clock, pread=fake.pread)
    [probe] = [p for p in found if isinstance(p, JetsonProbe)]
    clock.t += 1.0
    assert probe.read()["jetson-vdd-cpu-cv"] == pytest.approx(5.0)
    fake.disable(2)
    clock.t += 1.0
    with pytest.raises(PartialRead) as caught:
        probe.read()
    assert caught.value.values == {"jetson-vdd-gpu-soc": pytest.approx(20.0)}
    assert "jetson-vdd-cpu-cv" in caught.value.errors
    probe.close()


def test_ina3221x_unnamed_channel_is_not_a_rail(tmp_path: Path) -> None:
    clock = Clock()
    ina3221x_iio(tmp_path, {0: ("VDD_IN", 5000), 1: ("VDD_GPU", 2000)})  # channel 2: (null)
    probe = _probe(tmp_path, clock)
    assert [c.id for c in probe.channels] == ["jetson-vdd-in", "jetson-vdd-gpu"]
    clock.t += 1.0
    assert probe.read() == {"jetson-vdd-in": pytest.approx(5.0),
                            "jetson-vdd-gpu": pytest.approx(2.0)}
    probe.close()


def test_ina3221x_iio_device_alias_counted_once(tmp_path: Path) -> None:
    ina3221x_iio(tmp_path, {0: ("POM_5V_IN", 5000)}, alias=True)
    probe = _probe(tmp_path, Clock())
    assert [c.id for c in probe.channels] == ["jetson-pom-5v-in"]
    probe.close()


def test_ina3221x_reached_only_through_iio_device(tmp_path: Path) -> None:
    # L4T 28 trees where tools only see <bus>/iio_device (a real directory here).
    ina3221x_iio(tmp_path, {0: ("VDD_IN", 4000)}, bus="0-0041", device="iio_device")
    probe = _probe(tmp_path, Clock())
    assert [c.id for c in probe.channels] == ["jetson-vdd-in"]
    probe.close()
