"""RAPL probe against fake powercap trees (no hardware)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energymeter.errors import ProbeError
from energymeter.probes import rapl
from energymeter.probes.base import DiscoveryContext, Probe, Unavailable
from tests.fakes.powercap import FakePowercap, integrate_j


def split(results: list) -> tuple[list[Probe], list[Unavailable]]:
    probes = [r for r in results if isinstance(r, Probe)]
    missing = [r for r in results if isinstance(r, Unavailable)]
    return probes, missing


def open_probe(fake: FakePowercap, **kwargs) -> rapl.RaplProbe:
    kwargs.setdefault("clock_ns", fake.clock_ns)  # deterministic: the fake's simulated time
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener, **kwargs))
    assert len(probes) == 1, missing
    assert isinstance(probes[0], rapl.RaplProbe)
    return probes[0]




def channels_by_id(probe: Probe) -> dict:
    return {c.id: c for c in probe.channels}


# -- energy ----------------------------------------------------------------------------------


def test_constant_power_across_wraps_is_exact(make_fake):
    fake = make_fake(power_w={"package-0": 40.0, "dram": 5.0}, max_energy_range_uj=120_000_000)
    probe = open_probe(fake)
    assert probe.read() == {"cpu0": 0.0, "dram0": 0.0}
    for _ in range(10):
        fake.advance(1.0)
        energy = probe.read()
    assert energy == {"cpu0": 400.0, "dram0": 50.0}
    assert probe.describe()["zones"][0]["wraps"] == 3  # 40 W wraps 120 J every 3 s
    probe.close()


def test_starts_anywhere_in_the_range(make_fake):
    fake = make_fake(power_w={"package-0": 10.0}, dram=False, max_energy_range_uj=50_000_000,
                     initial_energy_uj=49_999_990)
    probe = open_probe(fake)
    fake.advance(0.5)
    assert fake.counter_uj("package-0") < 49_999_990  # wrapped at once
    assert probe.read()["cpu0"] == pytest.approx(5.0, abs=1e-6)
    probe.close()


segments = st.lists(
    st.tuples(st.floats(0.05, 3.0), st.floats(2.0, 150.0)), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trace=segments,
    range_j=st.floats(5.0, 200.0),
    start_frac=st.floats(0.0, 1.0),
    window=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    reads_per_wrap=st.floats(2.0, 6.0),
)
def test_window_energy_equals_truth(trace, range_j, start_frac, window, reads_per_wrap):
    """Random piecewise-constant power, random counter range and start, random window: the
    difference of two read()s equals the simulated energy when read at least twice per wrap."""
    total_s = sum(d for d, _ in trace)
    lo, hi = sorted(window)
    t_a, t_b = lo * total_s, max(hi * total_s, lo * total_s + 1.0)  # windows >= 1 s (>= 2 J)
    max_range_uj = int(range_j * 1e6)
    peak_w = max(p for _, p in trace)
    step_s = (max_range_uj / 1e6) / peak_w / reads_per_wrap
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakePowercap(Path(tmp) / "pc", dram=False, power_w={"package-0": trace},
                            max_energy_range_uj=max_range_uj,
                            initial_energy_uj=int(start_frac * max_range_uj))
        probe = open_probe(fake)
        try:
            def run_to(t_s: float) -> float:
                while fake.now_s < t_s:
                    fake.advance(min(step_s, t_s - fake.now_s))
                    probe.read()
                return probe.read()["cpu0"]

            e_a, truth_a = run_to(t_a), fake.true_energy_j("package-0")
            e_b, truth_b = run_to(t_b), fake.true_energy_j("package-0")
        finally:
            probe.close()
            fake.close()
    truth = truth_b - truth_a
    assert truth == pytest.approx(integrate_j(trace, t_a, t_b), rel=1e-9)
    assert abs((e_b - e_a) - truth) / truth < 1e-6


def test_realtime_mode_follows_the_clock(make_fake):
    fake = make_fake(power_w={"package-0": 40.0}, dram=False)
    probe = open_probe(fake)
    with fake.start(period_s=0.001):
        e0, t0 = probe.read()["cpu0"], time.monotonic()
        time.sleep(0.3)
        e1, t1 = probe.read()["cpu0"], time.monotonic()
    # The fake's thread may lag the clock on a loaded machine: by what it measurably did.
    assert abs((e1 - e0) - 40.0 * (t1 - t0)) <= 0.1 * 40.0 * (t1 - t0) + fake.lag_j(40.0)
    assert fake.true_energy_j("package-0") == pytest.approx(40.0 * fake.now_s, rel=1e-9)
    probe.close()


def test_realtime_writes_are_never_torn(make_fake):
    # Counters are rewritten every 0.2 ms while read; a torn or short read would look like a wrap.
    fake = make_fake(power_w={"package-0": 300.0}, dram=False)
    probe = open_probe(fake)
    last = 0.0
    with fake.start(period_s=0.0002):
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            energy = probe.read()["cpu0"]
            assert last <= energy < last + 1000.0  # a torn read would add a whole wrap
            last = energy
    assert probe.describe()["zones"][0]["wraps"] == 0
    probe.close()


# -- channel mapping -------------------------------------------------------------------------


def test_default_tree_channels(make_fake, tmp_path):
    fake = make_fake()
    cpuinfo = fake.write_cpuinfo(tmp_path / "cpuinfo")
    probe = open_probe(fake, cpuinfo_path=cpuinfo)
    chans = channels_by_id(probe)
    assert set(chans) == {"cpu0", "dram0"}
    cpu, dram = chans["cpu0"], chans["dram0"]
    assert (cpu.kind, cpu.source, cpu.method, cpu.part_of) == ("cpu", "rapl", "counter", None)
    assert (dram.kind, dram.part_of) == ("dram", None)
    assert cpu.device == fake.model_name
    assert cpu.resolution_s > 0
    assert cpu.meta["path"] == str(fake.zone_path("package-0"))
    assert cpu.meta["max_energy_range_uj"] == 262_143_328_850
    assert dram.meta["zone"] == "dram"
    probe.close()


def test_device_falls_back_without_cpuinfo(make_fake, tmp_path):
    probe = open_probe(make_fake(), cpuinfo_path=tmp_path / "missing")
    assert channels_by_id(probe)["cpu0"].device == "RAPL package-0"
    probe.close()


def test_two_sockets_two_drams(make_fake, tmp_path):
    fake = make_fake(sockets=2, power_w={"package-0": 30.0, "package-1": 50.0,
                                         "package-0/dram": 4.0, "package-1/dram": 6.0})
    cpuinfo = fake.write_cpuinfo(tmp_path / "cpuinfo")
    probe = open_probe(fake, cpuinfo_path=cpuinfo)
    assert {c.id: c.kind for c in probe.channels} == {
        "cpu0": "cpu", "cpu1": "cpu", "dram0": "dram", "dram1": "dram"}
    fake.advance(2.0)
    assert probe.read() == pytest.approx({"cpu0": 60.0, "cpu1": 100.0, "dram0": 8.0,
                                          "dram1": 12.0})
    probe.close()


def test_multi_die_without_package_counts_each_die(make_fake):
    fake = make_fake(dies=2, power_w={"package-0-die-0": 20.0, "package-0-die-1": 30.0})
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert set(chans) == {"cpu0-die0", "cpu0-die1", "dram0-die0", "dram0-die1"}
    assert all(c.part_of is None for c in chans.values())
    assert chans["cpu0-die1"].kind == "cpu"
    fake.advance(1.0)
    energy = probe.read()
    assert (energy["cpu0-die0"], energy["cpu0-die1"]) == pytest.approx((20.0, 30.0))
    probe.close()


def test_multi_die_with_package_dies_are_parts(make_fake):
    probe = open_probe(make_fake(dies=2, dies_with_package=True))
    chans = channels_by_id(probe)
    assert set(chans) == {"cpu0", "dram0", "cpu0-die0", "cpu0-die1"}
    assert chans["cpu0"].part_of is None
    assert chans["cpu0-die0"].part_of == chans["cpu0-die1"].part_of == "cpu0"
    probe.close()


def test_core_and_uncore_are_parts_of_their_package(make_fake):
    fake = make_fake(sockets=2, core=True, uncore=True, dram=False)
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert set(chans) == {"cpu0", "cpu1", "cpu0-core", "cpu0-uncore", "cpu1-core", "cpu1-uncore"}
    for socket in (0, 1):
        for part in ("core", "uncore"):
            channel = chans[f"cpu{socket}-{part}"]
            assert (channel.kind, channel.part_of) == ("cpu", f"cpu{socket}")
    fake.advance(1.0)
    assert probe.read()["cpu1-core"] == pytest.approx(25.0)
    probe.close()


def test_psys_is_its_own_kind(make_fake):
    fake = make_fake(psys=True, core=True)
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert chans["psys"].kind == "psys"
    assert chans["psys"].part_of is None
    assert chans["psys"].device == "platform (psys)"
    fake.advance(1.0)
    assert probe.read()["psys"] == pytest.approx(60.0)
    probe.close()


def test_mmio_duplicate_is_dropped(make_fake):
    fake = make_fake(sockets=2, mmio_duplicate=True)
    probe = open_probe(fake)
    assert sorted(c.id for c in probe.channels) == ["cpu0", "cpu1", "dram0", "dram1"]
    assert channels_by_id(probe)["cpu0"].meta["control"] == "intel-rapl"
    # processor_thermal_rapl.c registers package 0 only (rapl_add_package(0, ...)).
    [dropped] = probe.describe()["dropped"]
    assert dropped["name"] == "package-0" and dropped["control"] == "intel-rapl-mmio"
    assert dropped["reason"] == "duplicate of intel-rapl:0 package-0 (intel-rapl, channel cpu0)"
    probe.close()


def test_mmio_copy_serves_a_denied_msr_package(make_fake):
    fake = make_fake(mmio_duplicate=True, dram=False)
    fake.deny("package-0")
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener))
    assert missing == []
    (probe,) = probes
    assert channels_by_id(probe)["cpu0"].meta["control"] == "intel-rapl-mmio"
    fake.advance(1.0)
    assert probe.read() == {"cpu0": pytest.approx(40.0)}
    probe.close()


@pytest.mark.parametrize("layout", ["sysfs", "flat", "nested"])
def test_layouts_give_the_same_channels(make_fake, layout):
    fake = make_fake(sockets=2, core=True, psys=True, mmio_duplicate=True, layout=layout)
    probe = open_probe(fake)
    assert sorted(c.id for c in probe.channels) == [
        "cpu0", "cpu0-core", "cpu1", "cpu1-core", "dram0", "dram1", "psys"]
    assert len(probe.describe()["zones"]) == 7
    fake.advance(0.5)
    assert probe.read()["cpu1"] == pytest.approx(20.0)
    probe.close()


def test_amd_style_tree(make_fake, tmp_path):
    fake = make_fake(amd=True, sockets=2)
    cpuinfo = fake.write_cpuinfo(tmp_path / "cpuinfo")
    probe = open_probe(fake, cpuinfo_path=cpuinfo)
    chans = channels_by_id(probe)
    assert set(chans) == {"cpu0", "cpu1", "cpu0-core", "cpu1-core"}
    assert chans["cpu0"].device == "AMD EPYC 7763 64-Core Processor"
    assert chans["cpu0"].meta["max_energy_range_uj"] == 65_532_610_987
    fake.advance(1.5)
    assert probe.read()["cpu1"] == pytest.approx(60.0)
    probe.close()


def test_unknown_subzone_is_a_part(tmp_path):
    root = tmp_path / "pc"
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "gt")):
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text(" 00042\n")  # padded: tolerated
        (root / zone / "max_energy_range_uj").write_text("1000000\n")
    probes, missing = split(rapl.discover(DiscoveryContext(powercap_root=root)))
    assert missing == []
    chans = channels_by_id(probes[0])
    assert chans["cpu0-gt"].part_of == "cpu0"
    assert probes[0].read() == {"cpu0": 0.0, "cpu0-gt": 0.0}
    probes[0].close()


# -- unavailability --------------------------------------------------------------------------


def test_missing_root(tmp_path):
    results = rapl.discover(DiscoveryContext(powercap_root=tmp_path / "nope"))
    (only,) = results
    assert isinstance(only, Unavailable)
    assert only.source == "rapl" and "does not exist" in only.reason
    assert "ENERGYMETER_POWERCAP_ROOT" in only.hint


def test_root_without_rapl_zones(tmp_path):
    (tmp_path / "dtpm").mkdir()
    (only,) = rapl.discover(DiscoveryContext(powercap_root=tmp_path))
    assert isinstance(only, Unavailable)
    assert "no RAPL zones" in only.reason and "modprobe" in only.hint


def test_masked_tree_has_no_zones(tmp_path):
    # What a container sees when the runtime masks /sys/devices/virtual/powercap: dangling links.
    os.symlink("../../devices/virtual/powercap/intel-rapl/intel-rapl:0", tmp_path / "intel-rapl:0")
    (only,) = rapl.discover(DiscoveryContext(powercap_root=tmp_path))
    assert isinstance(only, Unavailable)
    assert "no RAPL zones" in only.reason and "ENERGYMETER_POWERCAP_ROOT" in only.hint


def test_all_zones_denied(make_fake):
    fake = make_fake(sockets=2)
    for key in fake.keys:
        fake.deny(key)
    (only,) = rapl.discover(fake.context(), opener=fake.opener)
    assert isinstance(only, Unavailable)
    assert only.reason.startswith(f"PermissionError on {fake.energy_path('package-0')}")
    assert "root-only since Linux 5.10 (CVE-2020-8694)" in only.reason
    assert "(and 1 more)" in only.reason
    assert "docs/permissions.md" in only.hint and "chmod o+r" in only.hint


def test_partially_denied(make_fake):
    fake = make_fake(sockets=2)
    fake.deny("package-1/dram")
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener))
    assert sorted(c.id for c in probes[0].channels) == ["cpu0", "cpu1", "dram0"]
    (denied,) = missing
    assert str(fake.energy_path("package-1/dram")) in denied.reason
    assert "docs/permissions.md" in denied.hint
    probes[0].close()
    fake.allow("package-1/dram")
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener))
    assert missing == [] and len(probes[0].channels) == 4
    probes[0].close()


def test_deny_is_a_real_chmod_too(make_fake):
    fake = make_fake()
    fake.deny("package-0")
    assert os.stat(fake.energy_path("package-0")).st_mode & 0o777 == 0


def test_zone_without_energy_file(make_fake):
    fake = make_fake(layout="flat")
    os.unlink(fake.energy_path("dram"))
    probes, missing = split(rapl.discover(fake.context()))
    assert [c.id for c in probes[0].channels] == ["cpu0"]
    (gone,) = missing
    assert "FileNotFoundError" in gone.reason
    probes[0].close()


# -- reading ---------------------------------------------------------------------------------


def test_garbled_value_raises_probe_error(make_fake):
    fake = make_fake(dram=False)
    probe = open_probe(fake)
    fake.write_raw("package-0", "12x4\n")
    with pytest.raises(ProbeError, match=str(fake.energy_path("package-0"))):
        probe.read()
    fake.write_raw("package-0", "")
    with pytest.raises(ProbeError):
        probe.read()
    fake.advance(1.0)  # a sane value again: the probe carries on
    assert probe.read()["cpu0"] == pytest.approx(40.0)
    probe.close()


def test_leading_zeros_and_whitespace(make_fake):
    fake = make_fake(dram=False)
    probe = open_probe(fake)
    fake.write_raw("package-0", "  0000000000000001500000 \n")
    assert probe.read()["cpu0"] == pytest.approx(1.5)
    probe.close()


def test_read_after_close_and_double_close(make_fake):
    probe = open_probe(make_fake())
    probe.close()
    probe.close()
    with pytest.raises(ProbeError, match="closed"):
        probe.read()


def test_check_interval_uses_constraint_max_power(make_fake):
    fake = make_fake(dram=False, max_energy_range_uj=120_000_000, max_power_w=40.0)
    probe = open_probe(fake)
    assert probe.check_interval(0.1) == []
    (warning,) = probe.check_interval(2.0)  # wraps every 3 s at 40 W
    assert "package-0" in warning and "3 s" in warning and "interval_s <= 1.5" in warning
    probe.close()


def test_check_interval_assumes_500_w_without_constraint(make_fake):
    fake = make_fake(max_energy_range_uj=120_000_000)
    probe = open_probe(fake)
    warnings = probe.check_interval(0.2)  # 120 J / 500 W = 0.24 s
    assert len(warnings) == 2 and all("500 W" in w for w in warnings)
    assert probe.check_interval(0.1) == []
    real = open_probe(make_fake())  # real range: 262 kJ / 500 W = 524 s
    assert real.check_interval(0.1) == []
    probe.close()
    real.close()


def test_warns_when_reads_are_further_apart_than_a_wrap(make_fake):
    fake = make_fake(dram=False, max_energy_range_uj=1_000_000)  # 1 J: 2 ms at 500 W
    probe = open_probe(fake)
    fake.advance(0.01)
    probe.read()
    (warning,) = probe.drain_warnings()
    assert "wrap may have been missed" in warning
    probe.close()


def test_describe_lists_zones(make_fake):
    fake = make_fake(core=True, max_power_w=95.0)
    probe = open_probe(fake)
    info = probe.describe()
    assert info["source"] == "rapl" and info["root"] == str(fake.root)
    zones = {z["channel"]: z for z in info["zones"]}
    assert zones["cpu0"]["path"] == str(fake.zone_path("package-0"))
    assert zones["cpu0"]["name"] == "package-0"
    assert zones["cpu0"]["max_energy_range_uj"] == 262_143_328_850
    assert zones["cpu0"]["max_power_w"] == 95.0
    assert zones["dram0"]["max_power_basis"] == "assumed"
    assert [c["id"] for c in info["channels"]] == [c.id for c in probe.channels]
    probe.close()


# -- the fake itself -------------------------------------------------------------------------


def test_fake_piecewise_and_callable_power(make_fake):
    fake = make_fake(power_w={"package-0": [(1.0, 10.0), (2.0, 20.0)],
                              "dram": lambda t: 2.0 * t})
    fake.advance(4.0)  # 10 + 40 + 20 (last power holds)
    assert fake.true_energy_j("package-0") == pytest.approx(70.0)
    assert fake.true_energy_j("dram") == pytest.approx(16.0, rel=1e-6)  # integral of 2t
    fake.set_power("package-0", 5.0)
    fake.advance(2.0)
    assert fake.true_energy_j("package-0") == pytest.approx(80.0)
    assert fake.counter_uj("package-0") == 80_000_000


def test_fake_rejects_unknown_or_ambiguous_keys(make_fake):
    with pytest.raises(KeyError, match="unknown"):
        make_fake(power_w={"package-7": 1.0})
    fake = make_fake(sockets=2)
    with pytest.raises(KeyError, match="ambiguous"):
        fake.true_energy_j("dram")
    assert fake.keys == ["package-0", "package-0/dram", "package-1", "package-1/dram"]


def test_fake_env_points_settings_at_the_tree(make_fake):
    from energymeter.settings import resolve_settings

    fake = make_fake()
    name, value = fake.env_item()
    settings_ = resolve_settings(env={name: value})
    assert settings_.powercap_root == fake.root
    assert fake.energy_path("package-0").read_text() == "000000000000\n"  # fixed width


def test_a_drop_no_wrap_explains_counts_nothing(make_fake):
    fake = make_fake(dram=False)  # the real 262 kJ range
    probe = open_probe(fake)
    fake.advance(1.0)
    before = probe.read()["cpu0"]
    assert before == pytest.approx(40.0)
    fake.write_raw("package-0", str(fake.counter_uj("package-0") - 5_000_000))  # 5 J lower, 0 s
    assert probe.read()["cpu0"] == before  # not a wrap: +262 kJ would have been counted
    (warning,) = probe.drain_warnings()
    assert "no wrap explains" in warning and "counts 0 J" in warning
    probe.close()


def test_a_real_wrap_is_still_a_wrap(make_fake):
    fake = make_fake(dram=False, max_energy_range_uj=50_000_000, initial_energy_uj=49_000_000)
    probe = open_probe(fake)
    fake.advance(0.05)  # 2 J: over the top of the 50 J range, within a wrap time (0.1 s)
    assert probe.read()["cpu0"] == pytest.approx(2.0)
    assert probe.describe()["zones"][0]["wraps"] == 1 and probe.drain_warnings() == []
    probe.close()


def test_no_false_missed_wrap_warning_after_a_pause_between_runs(tmp_path):
    """A cached probe last read by an earlier run: the pause between runs is nobody's."""
    from energymeter import measure

    fake = FakePowercap(tmp_path / "pc", power_w={"package-0": 40.0}, dram=False,
                        max_energy_range_uj=120_000_000)  # wraps in 0.24 s at 500 W
    with fake.start():
        for name in ("first", "second"):
            with measure(name, powercap_root=fake.root, region="SE", out=tmp_path / "runs",
                         interval_s=0.05) as m:
                time.sleep(0.3)
            time.sleep(0.5)  # longer than a wrap at the assumed 500 W
            assert not any("wrap may have been missed" in w for w in m.report.warnings), name
            expected_j = 40.0 * m.report.duration_s
            assert abs(m.report.channels[0].energy_j - expected_j) \
                <= 0.05 * expected_j + fake.lag_j(40.0)
    fake.close()
