"""hwmon energy/power sensors on fakes laid out as the kernel lays them out: ACPI power meters in
every layout the driver has had, NVIDIA Grace's meters named by power1_oem_info, AMD amd_energy
with its wraps; what is summed, counters exact, power integrated between reads, unreadable and
garbage sensors."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes import DiscoveryContext, discover
from energymeter.probes.base import PartialRead, Unavailable, energy_summary
from energymeter.probes.hwmon import HwmonProbe
from energymeter.probes.hwmon import discover as discover_hwmon
from tests.fakes.hwmon import FakeHwmon
from tests.timing import SimClock

LAYOUTS = ("acpi", "hwmon", "platform")


def _found(fake: FakeHwmon, clock: SimClock, **kw: object) -> list[HwmonProbe | Unavailable]:
    return discover_hwmon(DiscoveryContext(sysfs_root=fake.root), clock=clock.s, io=fake.io,
                          **kw)  # type: ignore[return-value]


def _probe(fake: FakeHwmon, clock: SimClock, **kw: object) -> HwmonProbe:
    [probe] = [p for p in _found(fake, clock, **kw) if isinstance(p, HwmonProbe)]
    return probe


def _by_label(probe: HwmonProbe) -> dict[str, object]:
    return {c.meta["label"]: c for c in probe.channels}


# -- ACPI power meters ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_acpi_power_meter_is_found_in_every_kernel_layout(tmp_path: Path, layout: str) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(100.0)
    meter = fake.acpi_power_meter(layout=layout, interval_ms=500)
    fake.set_meter_power(meter, 320.0)
    probe = _probe(fake, clock)
    [channel] = probe.channels
    assert channel.kind == "psys" and not channel.in_total and channel.method == "integrated"
    assert channel.meta["layout"] == ("device" if layout == "acpi" else "class")
    assert channel.meta["path"].endswith("power1_average")
    assert channel.resolution_s == pytest.approx(0.5)  # power1_average_interval, ms
    clock.advance(2.5)
    assert probe.read()[channel.id] == pytest.approx(800.0)
    probe.close()


def test_legacy_layout_has_no_name_in_the_hwmon_directory(tmp_path: Path) -> None:
    """The fake is what hwmon_device_register(&acpi_dev->dev) leaves: hwmonN/ without name,
    everything on the ACPI device behind hwmonN/device."""
    fake = FakeHwmon(tmp_path)
    meter = fake.acpi_power_meter(layout="acpi", oem_info="x")
    hw = fake.base / meter.hw
    assert hw.is_symlink() and not (hw / "name").exists()
    assert (hw / "device" / "name").read_text() == "power_meter\n"
    assert (hw / "device" / "hid").read_text() == "ACPI000D\n"
    assert (hw / "device" / "power1_oem_info").read_text() == "x\n"
    new = fake.acpi_power_meter(layout="hwmon")
    assert (fake.base / new.hw / "name").read_text() == "power_meter\n"
    assert not (fake.base / new.hw / "device" / "power1_average").exists()


def test_two_meters_without_oem_info_get_two_channels(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    for watts in (100.0, 50.0):
        fake.set_meter_power(fake.acpi_power_meter(), watts)
    probe = _probe(fake, clock)
    assert len({c.id for c in probe.channels}) == 2
    clock.advance(1.0)
    assert sorted(probe.read().values()) == pytest.approx([50.0, 100.0])
    probe.close()


@pytest.mark.parametrize("fixed", [True, False])
def test_acpi_unknown_power_is_a_missing_sample_not_4_29_megawatts(tmp_path: Path,
                                                                  fixed: bool) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    meter = fake.acpi_power_meter(layout="hwmon", fixed_unknown=fixed)
    fake.set_meter_power(meter, 100.0)
    probe = _probe(fake, clock)
    [cid] = [c.id for c in probe.channels]
    clock.advance(1.0)
    fake.set_meter_unknown(meter)  # -ENODATA (fixed kernels) or 4294967295000 (before)
    assert probe.read()[cid] == pytest.approx(0.0)
    clock.advance(1.0)
    fake.set_meter_unknown(meter, False)
    fake.set_meter_power(meter, 100.0)
    assert probe.read()[cid] == pytest.approx(200.0)  # the gap bridged at 100 W
    assert any("no data" in w for w in probe.drain_warnings())
    probe.close()


def test_acpi_power_is_whole_milliwatts(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    meter = fake.acpi_power_meter(layout="hwmon")
    assert fake.set_meter_power(meter, 123.4567891) == 123_457_000


# -- NVIDIA Grace --------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_grace_module_tree_sums_each_socket_once(tmp_path: Path, layout: str) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(10.0)
    meters = fake.grace(sockets=2, module=True, layout=layout)
    watts = {"Module": 900.0, "Grace": 250.0, "CPU": 180.0, "SysIO": 40.0}
    for name, meter in meters.items():
        fake.set_meter_power(meter, watts[name.split()[0]])
    probe = _probe(fake, clock)
    by = _by_label(probe)
    assert len(by) == 8
    for s in (0, 1):
        module, grace = by[f"Module Power Socket {s}"], by[f"Grace Power Socket {s}"]
        cpu, sysio = by[f"CPU Power Socket {s}"], by[f"SysIO Power Socket {s}"]
        assert module.kind == "psys" and not module.in_total  # GPU + HBM too: NVML has those
        assert grace.kind == "cpu" and grace.in_total
        assert cpu.part_of == grace.id and sysio.part_of == grace.id  # rails of the socket
        assert sysio.kind == "soc" and not cpu.in_total and not sysio.in_total
    clock.advance(10.0)
    energy = probe.read()
    summary = energy_summary(probe.channels, energy)
    assert summary["total"] == pytest.approx(2 * 2500.0)  # the two Grace sockets, once each
    assert summary["by_kind"] == pytest.approx({"cpu": 5000.0, "psys": 18000.0})
    assert energy[by["CPU Power Socket 1"].id] == pytest.approx(1800.0)
    probe.close()


def test_grace_rails_without_a_socket_meter_are_summed(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.set_meter_power(fake.acpi_power_meter(oem_info="CPU Power Socket 0"), 100.0)
    fake.set_meter_power(fake.acpi_power_meter(oem_info="SysIO Power Socket 0"), 20.0)
    probe = _probe(fake, clock)
    assert all(c.in_total for c in probe.channels)
    clock.advance(1.0)
    assert energy_summary(probe.channels, probe.read())["total"] == pytest.approx(120.0)
    probe.close()


def test_other_oem_info_is_platform_power(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.acpi_power_meter(oem_info="Chassis CPU meter")  # not Grace's names: never summed
    [channel] = _probe(fake, clock).channels
    assert channel.kind == "psys" and channel.meta["oem_info"] == "Chassis CPU meter"


def test_grace_is_found_by_discovery_and_replaces_the_cpu_model(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    for meter in fake.grace(sockets=1).values():
        fake.set_meter_power(meter, 100.0)
    found = discover(DiscoveryContext(sysfs_root=tmp_path, powercap_root=tmp_path / "none"))
    sources = {c.source for c in found.channels}
    assert "hwmon" in sources and "cpumodel" not in sources  # a measured CPU: no estimate
    for p in found.probes:
        p.close()


# -- amd_energy ----------------------------------------------------------------------------------
def test_amd_energy_cores_are_subzones_and_sockets_overlap_rapl(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    amd = fake.amd_energy(cores=2, sockets=1)
    probe = _probe(fake, clock)
    by = _by_label(probe)
    socket = by["Esocket0"]
    assert socket.kind == "cpu" and socket.method == "counter"
    assert socket.meta["overlaps"] == "rapl"
    assert by["Ecore000"].part_of == socket.id and not by["Ecore000"].in_total
    fake.amd_add_energy(amd, "Ecore000", 3.0)
    fake.amd_add_energy(amd, "Esocket0", 12.5)
    clock.advance(1.0)
    energy = probe.read()
    assert energy[socket.id] == pytest.approx(12.5, abs=1e-5)
    assert energy_summary(probe.channels, energy)["total"] == pytest.approx(12.5, abs=1e-5)
    probe.close()
    # When RAPL measures the packages, amd_energy adds nothing (not counted twice).
    [none] = _found(fake, clock, skip_overlapping=True)
    assert isinstance(none, Unavailable) and "RAPL" in none.reason


def test_amd_energy_masked_counter_wrap_is_carried(tmp_path: Path) -> None:
    """64-bit RAPL MSR masked to 32 bits, no accumulation: energyN_input wraps at 65.536 kJ
    (ESU 16); the drop is a wrap, not a reset that loses the interval's energy."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    start = (1 << 32) - (5 << 16)  # 5 J below the top
    amd = fake.amd_energy(cores=0, sockets=1, accumulate=False, msr_bits=64, msr=[start])
    probe = _probe(fake, clock)
    [cid] = [c.id for c in probe.channels]
    fake.amd_add_energy(amd, "Esocket0", 30.0)
    clock.advance(0.1)
    assert probe.read()[cid] == pytest.approx(30.0, abs=2e-6)
    assert any("wrapped at 65536000000" in w for w in probe.drain_warnings())
    probe.close()


def test_a_cached_amd_energy_probe_rebases_when_a_run_begins(tmp_path: Path) -> None:
    """Open between runs: an hour idle, in which the counter wrapped and ended below where
    it was, is no run's. Judged as one interval it would pin the wrong wrap value (the 2 kW
    bound of an hour allows any), and the run's real wrap would then be lost."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    amd = fake.amd_energy(cores=0, sockets=1, accumulate=False, msr_bits=64,
                          msr=[9000 << 16])  # 9 kJ into the 65.536 kJ range (ESU 16)
    probe = _probe(fake, clock)
    [cid] = [c.id for c in probe.channels]
    fake.amd_add_energy(amd, "Esocket0", 10.0)
    clock.advance(0.1)
    assert probe.read()[cid] == pytest.approx(10.0, abs=2e-6)
    fake.amd_add_energy(amd, "Esocket0", 11 * 65536.0 - 4010.0)  # ~200 W for an hour: 5 kJ
    clock.advance(3600.0)
    probe.begin_run()
    base = probe.read()[cid]
    for _ in range(31):  # 61.4 kJ at 1.8 kW: across the real wrap
        fake.amd_add_energy(amd, "Esocket0", 1980.0)
        clock.advance(1.1)
        probe.read()
    assert probe.read()[cid] - base == pytest.approx(31 * 1980.0, abs=1e-4)
    assert any("wrapped at 65536000000" in w for w in probe.drain_warnings())
    probe.end_run()
    probe.close()


def test_amd_energy_accumulated_counter_overflow_is_carried(tmp_path: Path) -> None:
    """The accumulating driver's input * 1000000UL overflows 64 bits: the value drops by
    2^(64 - ESU) uJ (2^48 uJ, 281 MJ, at ESU 16)."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    near = ((1 << 64) // 1_000_000) - (10 << 16)  # 10 J below the overflow
    amd = fake.amd_energy(cores=0, sockets=1, energy_ctr=[near])
    probe = _probe(fake, clock)
    [cid] = [c.id for c in probe.channels]
    fake.amd_add_energy(amd, "Esocket0", 25.0)
    clock.advance(0.5)
    assert probe.read()[cid] == pytest.approx(25.0, abs=1e-4)
    probe.close()


def test_amd_energy_implausible_drop_is_a_reset(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    amd = fake.amd_energy(cores=0, sockets=1, accumulate=False, msr_bits=64, msr=[30_000 << 16])
    probe = _probe(fake, clock)
    [cid] = [c.id for c in probe.channels]
    amd.msr[0] = 10 << 16  # back by 30 kJ... or up by 35 kJ in 0.1 s: neither is a wrap
    fake._show(amd, 0)
    clock.advance(0.1)
    assert probe.read()[cid] == pytest.approx(0.0)
    assert any("reset" in w for w in probe.drain_warnings())
    probe.close()


def test_amd_energy_is_root_only(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.amd_energy(cores=1, sockets=1)
    fake.io.as_user = True  # amd_energy_is_visible: 0440
    found = _found(fake, clock)
    assert found and all(isinstance(u, Unavailable) for u in found)
    assert "amd_energy present" in found[0].reason and "root-only" in found[0].reason
    assert "0440" in found[0].hint


@settings(max_examples=40, deadline=None)
@given(esu=st.integers(14, 18), accumulate=st.booleans(),
       start=st.integers(0, (1 << 32) - 1),
       below_overflow=st.one_of(st.integers(0, 1 << 32), st.just(None)),
       steps=st.lists(st.tuples(st.floats(0.05, 2.0), st.floats(0.0, 800.0)),
                      min_size=1, max_size=25))
def test_amd_energy_counts_every_joule_across_widths_and_wraps(
        tmp_path_factory: pytest.TempPathFactory, esu: int, accumulate: bool, start: int,
        below_overflow: int | None, steps: list[tuple[float, float]]) -> None:
    """Both driver modes; the accumulating driver's counter drawn near (up to 2^32 units below)
    the point where ``input * 1000000UL`` overflows 64 bits, or from 0."""
    fake, clock = FakeHwmon(tmp_path_factory.mktemp("hw")), SimClock(0.0)
    ctr = 0 if below_overflow is None else (1 << 64) // 1_000_000 - below_overflow
    amd = fake.amd_energy(cores=0, sockets=1, esu=esu, accumulate=accumulate,
                          msr_bits=32 if accumulate else 64, msr=[start], energy_ctr=[ctr])
    probe = _probe(fake, clock)
    [cid] = [c.id for c in probe.channels]
    units = 0
    for dt, watts in steps:
        units += fake.amd_add_energy(amd, "Esocket0", watts * dt)
        clock.advance(dt)
        got = probe.read()[cid]
        # floor to whole uJ per read, and the driver's UINT_MAX wrap loses one unit per wrap
        assert got == pytest.approx(units / (1 << esu), abs=2e-6 + len(steps) / (1 << esu))
    probe.close()


# -- other drivers, counters and power in general ------------------------------------------------
def test_other_drivers_sensors_are_listed_not_read(tmp_path: Path) -> None:
    """Review finding 2: amdgpu's power (the amdsmi probe measures it; reading it can wake a
    suspended GPU), i915's energy and a PSU's power are seen, not read; only the ACPI meter
    is, on the sampler's helper thread (its read evaluates _PMM)."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.device("amdgpu", [("power", 1, "PPT")])
    fake.device("i915", [("energy", 1, None)])
    fake.device("psu", [("power", 1, "pin")])
    fake.set_meter_power(fake.acpi_power_meter(layout="hwmon"), 50.0)
    found = _found(fake, clock)
    [probe] = [p for p in found if isinstance(p, HwmonProbe)]
    assert [c.meta["device"] for c in probe.channels] == ["power_meter"]
    assert probe.may_block
    listed = [u.reason for u in found if isinstance(u, Unavailable)]
    assert len(listed) == 3 and all("seen, not read" in r for r in listed)
    assert any(r.startswith("amdgpu on hwmon0 has power1_input (PPT)") and "amdsmi" in r
               for r in listed)
    assert {n["device"] for n in probe.describe()["not_read"]} == {"amdgpu", "i915", "psu"}
    probe.close()


def test_only_foreign_sensors_say_why_none_is_read(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.device("amdgpu", [("power", 1, "PPT")])
    [u] = _found(fake, clock)
    assert isinstance(u, Unavailable) and "seen, not read" in u.reason


def test_amd_energy_alone_is_read_inline(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.amd_energy(cores=1, sockets=1)
    probe = _probe(fake, clock)
    assert probe.may_block is False  # MSR reads: short
    probe.close()


@settings(max_examples=30, deadline=None)
@given(powers=st.lists(st.floats(0, 1000), min_size=2, max_size=40),
       dt=st.floats(0.01, 0.5))
def test_power_is_integrated_with_the_trapezoid_rule(tmp_path_factory: pytest.TempPathFactory,
                                                     powers: list[float], dt: float) -> None:
    fake, clock = FakeHwmon(tmp_path_factory.mktemp("hw")), SimClock(0.0)
    meter = fake.acpi_power_meter(layout="hwmon")
    uw = [fake.set_meter_power(meter, powers[0])]
    probe = _probe(fake, clock)
    truth = 0.0
    for after in powers[1:]:
        t0 = clock.s()
        clock.advance(dt)  # whole nanoseconds
        uw.append(fake.set_meter_power(meter, after))
        [got] = probe.read().values()
        truth += 0.5 * (uw[-2] + uw[-1]) / 1e6 * (clock.s() - t0)
        assert got == pytest.approx(truth, rel=1e-9, abs=1e-9)
    probe.close()


def test_garbage_negative_and_eio_fail_alone(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    meters = [fake.acpi_power_meter(oem_info=f"m{i}") for i in range(4)]
    for m in meters:
        fake.set_meter_power(m, 10.0)
    probe = _probe(fake, clock)
    by = {c.meta["oem_info"]: c.id for c in probe.channels}
    (meters[0].attr_dir / "power1_average").write_text("garbage\n")
    (meters[1].attr_dir / "power1_average").write_text("-5000\n")
    fake.io.errors[str((meters[2].attr_dir / "power1_average").resolve())] = errno.EIO
    clock.advance(1.0)
    with pytest.raises(PartialRead) as caught:
        probe.read()
    assert set(caught.value.errors) == {by["m0"], by["m1"], by["m2"]}
    assert caught.value.values == {by["m3"]: pytest.approx(10.0)}
    probe.close()


def test_jetson_ina3221_is_skipped_and_odd_files_do_not_crash(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.device("ina3221", [("power", 1, "VDD_GPU_SOC")])
    ok = fake.acpi_power_meter(layout="hwmon", oem_info="CPU Power Socket 0")
    bad = fake.acpi_power_meter(layout="hwmon", oem_info="Grace Power Socket 1")
    (bad.attr_dir / "power1_average").unlink()
    (bad.attr_dir / "power1_average").mkdir()  # unreadable as a file
    fake.set_meter_power(ok, 1.0)
    found = _found(fake, clock)
    probes = [p for p in found if isinstance(p, HwmonProbe)]
    missing = [u for u in found if isinstance(u, Unavailable)]
    assert [c.meta["label"] for p in probes for c in p.channels] == ["CPU Power Socket 0"]
    assert missing and "acpi_power_meter present" in missing[0].reason and missing[0].hint
    for p in probes:
        p.close()


def test_unreadable_acpi_meter_says_so(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    meter = fake.acpi_power_meter(oem_info="Grace Power Socket 0")
    fake.io.errors[str((meter.attr_dir / "power1_average").resolve())] = errno.EACCES
    [u] = _found(fake, clock)
    assert isinstance(u, Unavailable)
    assert u.reason.startswith("acpi_power_meter present on hwmon0 (Grace Power Socket 0) but "
                               "power1_average unreadable (root-only)")


def test_nothing_found_names_what_is_there(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    parent = fake.devices / "platform" / "coretemp.0"
    parent.mkdir(parents=True)
    fake._register(parent, "coretemp")
    [u] = _found(fake, clock)
    assert isinstance(u, Unavailable) and "hwmon0=coretemp" in u.reason
    [u] = discover_hwmon(DiscoveryContext(sysfs_root=tmp_path / "nothing"))
    assert isinstance(u, Unavailable) and "no hwmon class directory" in u.reason


def test_energymeter_probes_lists_why_a_meter_is_not_used(tmp_path: Path) -> None:
    fake = FakeHwmon(tmp_path)
    meter = fake.acpi_power_meter(layout="acpi", oem_info="Grace Power Socket 0")
    (meter.attr_dir / "power1_average").unlink()
    (meter.attr_dir / "power1_average").mkdir()  # what a read error looks like, run as root
    found = discover(DiscoveryContext(sysfs_root=tmp_path, powercap_root=tmp_path / "none"))
    [u] = [u for u in found.unavailable if u.source == "hwmon"]
    assert "acpi_power_meter present on hwmon0 (Grace Power Socket 0)" in u.reason
    assert "power1_average unreadable" in u.reason
    for p in found.probes:
        p.close()


# -- review fixes --------------------------------------
def test_fake_writes_exactly_what_the_kernel_prints(tmp_path: Path) -> None:
    """show_power prints "%llu\\n": no padding, and the probe's open fd sees each new value."""
    fake = FakeHwmon(tmp_path)
    meter = fake.acpi_power_meter(layout="acpi")
    fake.set_meter_power(meter, 320.0)
    assert (meter.attr_dir / "power1_average").read_bytes() == b"320000000\n"
    fake.set_meter_power(meter, 5.0)
    assert (meter.attr_dir / "power1_average").read_bytes() == b"5000000\n"


def test_torn_read_is_read_again(tmp_path: Path) -> None:
    """Between the fake writer's pwrite and ftruncate a reader sees "100000000\\n000\\n": not
    one line, so the probe reads again (and gets the finished value), never 100000000000."""
    from tests.fakes.hwmon import write_torn, write_value
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    meter = fake.acpi_power_meter(layout="hwmon")
    path = meter.attr_dir / "power1_average"
    fake.set_meter_power(meter, 1000.0)
    probe = _probe(fake, clock)
    write_torn(path, 100_000_000)
    fake.io.after_read[str(path.resolve())] = lambda: write_value(path, 100_000_000)
    clock.advance(1.0)
    [got] = probe.read().values()
    assert got == pytest.approx(0.5 * (1000.0 + 100.0))
    probe.close()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("gap", [False, True])
def test_meter_re_created_by_firmware_is_found_again(tmp_path: Path, layout: str,
                                                    gap: bool) -> None:
    """acpi_power_meter_notify(METER_NOTIFY_CONFIG): legacy kernels remove and re-create the
    attributes (the open fd answers -ENODEV), with_info kernels register a new hwmonN. The
    probe finds the meter again; a read while it is gone is a missing sample."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.set_meter_power(fake.acpi_power_meter(layout=layout, oem_info="Other"), 10.0)
    meter = fake.acpi_power_meter(layout=layout, oem_info="Grace Power Socket 0")
    fake.set_meter_power(meter, 100.0)
    probe = _probe(fake, clock)
    cid = _by_label(probe)["Grace Power Socket 0"].id
    clock.advance(1.0)
    assert probe.read()[cid] == pytest.approx(100.0)
    meter = fake.reconfigure_meter(meter, gap=gap)
    if gap:
        clock.advance(1.0)
        with pytest.raises(PartialRead) as caught:
            probe.read()
        assert set(caught.value.errors) == {cid}
        meter = fake.reconfigure_meter(meter)
    fake.set_meter_power(meter, 100.0)
    clock.advance(1.0)
    energy = probe.read()
    assert energy[cid] == pytest.approx(300.0 if gap else 200.0)  # the gap bridged at 100 W
    assert len(energy) == 2
    assert any("came back" in w for w in probe.drain_warnings())
    if layout != "acpi":
        assert probe.describe()["sensors"][1]["hwmon"] == meter.hw != "hwmon1"
    clock.advance(1.0)
    assert probe.read()[cid] == pytest.approx(400.0 if gap else 300.0)
    probe.close()


def test_amd_energy_modulus_is_pinned_by_a_wrap(tmp_path: Path) -> None:
    """The review's example: ESU 16, masked (65.536 kJ). Socket 0 wraps while read often, so
    the device's modulus is known; socket 1, read at 30 kJ, then 20 s later past its wrap
    at 1.825 kW, is carried at 65.536 kJ, not at ESU 17's 32.768 kJ."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    top = 1 << 32
    amd = fake.amd_energy(cores=0, sockets=2, accumulate=False, msr_bits=64,
                          msr=[top - (5 << 16), 30_000 << 16])
    probe = _probe(fake, clock)
    by = _by_label(probe)
    fake.amd_add_energy(amd, "Esocket0", 10.0)
    clock.advance(0.1)
    probe.read()
    assert probe._sensors[0].pin.value == top * 1_000_000 >> 16  # type: ignore[union-attr]
    fake.amd_add_energy(amd, "Esocket1", 36_500.0)
    fake.amd_add_energy(amd, "Esocket0", 1.0)
    clock.advance(20.0)
    energy = probe.read()
    assert energy[by["Esocket1"].id] == pytest.approx(36_500.0, abs=1e-3)
    probe.close()


def test_amd_energy_max_interval_is_stated(tmp_path: Path) -> None:
    from energymeter.probes.hwmon import AmdEnergyCounter, amd_energy_max_interval_s
    assert min(AmdEnergyCounter.MODULI) == (1 << 32) * 1_000_000 >> 18  # ESU <= 18 only
    assert max(AmdEnergyCounter.MODULI) == 1 << 50  # ESU >= 14 only
    limit = amd_energy_max_interval_s()
    assert 8.0 < limit < 8.3  # (32.768 - 16.384) kJ at 2 kW
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.amd_energy(cores=0, sockets=1)
    probe = _probe(fake, clock)
    assert probe.check_interval(1.0) == []
    [warning] = probe.check_interval(20.0)
    assert "interval_s <= 8.19" in warning
    probe.close()


def test_amd_energy_cores_of_two_sockets(tmp_path: Path) -> None:
    """amd_energy_read: Ecore<i> is read on CPU i, Esocket<N> on node N's first CPU."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.cpu_topology({0: [0, 1, 4, 5], 1: [2, 3, 6, 7]},
                      {c: (0 if c in (0, 1, 4, 5) else 1) for c in range(8)})
    fake.amd_energy(cores=4, sockets=2)
    by = _by_label(_probe(fake, clock))
    s0, s1 = by["Esocket0"].id, by["Esocket1"].id
    assert [by[f"Ecore00{i}"].part_of for i in range(4)] == [s0, s0, s1, s1]
    assert by["Esocket1"].in_total and by["Esocket0"].in_total


def test_amd_energy_nps2_sockets_of_one_package_are_summed_once(tmp_path: Path) -> None:
    """NPS2: two NUMA nodes in one package; amd_energy makes an Esocket per node, both read
    the package's MSR: the second is shown as part of the first."""
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    fake.cpu_topology({0: [0], 1: [1]}, {0: 0, 1: 0})
    amd = fake.amd_energy(cores=2, sockets=2)
    probe = _probe(fake, clock)
    by = _by_label(probe)
    assert by["Esocket1"].part_of == by["Esocket0"].id
    for label in ("Esocket0", "Esocket1"):
        fake.amd_add_energy(amd, label, 50.0)
    clock.advance(1.0)
    assert energy_summary(probe.channels, probe.read())["total"] == pytest.approx(50.0, abs=1e-4)
    probe.close()


def test_eperm_is_root_only_only_for_a_0440_file(tmp_path: Path) -> None:
    fake, clock = FakeHwmon(tmp_path), SimClock(0.0)
    meter = fake.acpi_power_meter(layout="hwmon", oem_info="Grace Power Socket 0")
    fake.io.errors[str((meter.attr_dir / "power1_average").resolve())] = errno.EPERM
    [u] = _found(fake, clock)
    assert isinstance(u, Unavailable)
    assert "not permitted now" in u.reason and "root-only" not in u.reason
    assert "not a file permission" in u.hint
    fake2 = FakeHwmon(tmp_path / "amd")
    amd = fake2.amd_energy(cores=0, sockets=1)
    fake2.io.errors[str((amd.attr_dir / "energy1_input").resolve())] = errno.EPERM
    [u] = _found(fake2, clock)
    assert isinstance(u, Unavailable) and "root-only" in u.reason
