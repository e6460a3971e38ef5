"""RAPL against the layouts and counters the kernel really has (issue 24).

Upstream read for these (linux): drivers/powercap/powercap_sys.c (zone names "%s:%x", file
modes), drivers/powercap/intel_rapl_common.c (32-bit ENERGY_STATUS_MASK, energy units,
max_energy_range_uj, psys/psys-N names, package-N[-die-M] names), intel_rapl_msr.c
("intel-rapl", AMD package + core only), intel_rapl_tpmi.c ("intel-rapl-tpmi", or "intel-rapl"
in 6.5/6.6; package, dram and psys domains), int340x_thermal/processor_thermal_rapl.c
("intel-rapl-mmio").
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energymeter.probes import rapl
from energymeter.probes.base import Probe, Unavailable
from tests.fakes.powercap import (
    AMD_ENERGY_UNIT_NJ,
    INTEL_ENERGY_UNIT_NJ,
    SERVER_DRAM_ENERGY_UNIT_NJ,
    SPR_PSYS_ENERGY_UNIT_NJ,
    FakePowercap,
    max_range_uj,
)

# Units real CPUs have (nJ per count): ESU 13..16 (Intel client/server 14, AMD 16), Atom's
# 2**ESU uJ style (32 uJ), server DRAM's fixed 15.3 uJ, Sapphire Rapids psys's 1 J.
REAL_UNITS_NJ = (10**9 >> 13, INTEL_ENERGY_UNIT_NJ, 10**9 >> 15, AMD_ENERGY_UNIT_NJ,
                 32_000, SERVER_DRAM_ENERGY_UNIT_NJ, SPR_PSYS_ENERGY_UNIT_NJ)


def split(results: list) -> tuple[list[Probe], list[Unavailable]]:
    return ([r for r in results if isinstance(r, Probe)],
            [r for r in results if isinstance(r, Unavailable)])


def open_probe(fake: FakePowercap) -> rapl.RaplProbe:
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener,
                                          clock_ns=fake.clock_ns))
    assert len(probes) == 1, missing
    assert isinstance(probes[0], rapl.RaplProbe)
    return probes[0]


@pytest.fixture
def make_fake(tmp_path):
    made: list[FakePowercap] = []

    def make(**kwargs) -> FakePowercap:
        amd = kwargs.pop("amd", False)
        root = tmp_path / f"powercap{len(made)}"
        fake = FakePowercap.amd(root, **kwargs) if amd else FakePowercap(root, **kwargs)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


def by_id(probe: Probe) -> dict:
    return {c.id: c for c in probe.channels}


# -- the wrap modulus ---------------------------------------------------------------------------


def test_modulus_of_the_ranges_real_cpus_show():
    # Intel ESU 14: 0xffffffff * 61035 // 1000; wraps 61 uJ above it, not 1 uJ.
    assert rapl.wrap_modulus_uj(262_143_328_850) == (262_143_328_911, 61035)
    assert rapl.wrap_modulus_uj(65_532_610_987) == (65_532_611_002, 15258)  # AMD ESU 16
    assert rapl.wrap_modulus_uj(65_712_999_613) == (65_712_999_629, 15300)  # server DRAM
    assert rapl.wrap_modulus_uj(4_294_967_295_000_000) == (4_294_967_296_000_000, 10**9)


def test_a_range_no_kernel_shows_wraps_at_max_plus_one():
    assert rapl.wrap_modulus_uj(120_000_000) == (120_000_001, None)


@settings(max_examples=50, deadline=None)
@given(unit_nj=st.one_of(st.sampled_from(REAL_UNITS_NJ), st.integers(1, 2 * 10**9)))
def test_modulus_is_the_counters_period_within_half_a_microjoule(unit_nj):
    modulus, found = rapl.wrap_modulus_uj(max_range_uj(unit_nj))
    assert found == unit_nj
    assert abs(modulus - 2**32 * unit_nj / 1000) <= 0.5 or modulus == max_range_uj(unit_nj) + 1


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit_nj=st.sampled_from(REAL_UNITS_NJ),
       start_frac=st.floats(0.0, 1.0),
       reads_per_wrap=st.integers(2, 6),
       wraps=st.integers(1, 4))
def test_unwrapped_energy_equals_truth_across_real_wraps(unit_nj, start_frac, reads_per_wrap,
                                                         wraps):
    """A hardware-exact counter (whole units, 32 bits, shown as raw * E // 1000) read a few
    times per wrap: the total is the truth within one unit at each end and 1 uJ per wrap."""
    range_uj = max_range_uj(unit_nj)
    range_j = range_uj / 1e6
    power_w = range_j  # one wrap per simulated second
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakePowercap(Path(tmp) / "pc", dram=False, quantize=True, energy_unit_nj=unit_nj,
                            power_w={"package-0": power_w}, max_power_w=2 * power_w,
                            initial_energy_uj=int(start_frac * range_uj))
        probe = open_probe(fake)
        try:
            for _ in range(wraps * reads_per_wrap):
                fake.advance(1.0 / reads_per_wrap)
                total_j = probe.read()["cpu0"]
            truth_j = fake.true_energy_j("package-0")
            unit_j = unit_nj / 1e9
            tolerance_j = 2 * unit_j + (wraps + 1) * 1e-6 + truth_j * 1e-15
            assert abs(total_j - truth_j) <= tolerance_j, (total_j, truth_j)
            assert probe.describe()["zones"][0]["wraps"] >= wraps - 1
            assert probe.describe()["zones"][0]["energy_unit_nj"] == unit_nj
        finally:
            probe.close()
            fake.close()


def test_server_dram_unit_differs_from_the_package(make_fake):
    fake = make_fake(dram=True, quantize=True, dram_energy_unit_nj=SERVER_DRAM_ENERGY_UNIT_NJ)
    probe = open_probe(fake)
    zones = {z["channel"]: z for z in probe.describe()["zones"]}
    assert zones["cpu0"]["max_energy_range_uj"] == 262_143_328_850
    assert zones["dram0"]["max_energy_range_uj"] == 65_712_999_613
    assert zones["dram0"]["energy_unit_nj"] == 15300
    assert zones["dram0"]["wrap_modulus_uj"] == 65_712_999_629
    fake.advance(2.0)
    energy = probe.read()
    assert energy["cpu0"] == pytest.approx(80.0, abs=62e-6)
    assert energy["dram0"] == pytest.approx(10.0, abs=16e-6)
    probe.close()


# -- layouts ---------------------------------------------------------------------------------------


def test_zone_ids_are_hexadecimal(make_fake):
    # 6 sockets x 2 dies: 12 top-level zones, intel-rapl:0 .. intel-rapl:b.
    fake = make_fake(sockets=6, dies=2, dram=False)
    assert (fake.root / "intel-rapl:a").is_dir() and (fake.root / "intel-rapl:b").is_dir()
    probe = open_probe(fake)
    ids = set(by_id(probe))
    assert {f"cpu{s}-die{d}" for s in range(6) for d in range(2)} == ids
    assert by_id(probe)["cpu5-die1"].meta["path"].endswith("intel-rapl:b")
    probe.close()


def test_nested_hexadecimal_subzones(make_fake):
    fake = make_fake(sockets=11, dram=True, layout="nested")
    probe = open_probe(fake)
    assert by_id(probe)["dram10"].meta["path"].endswith("intel-rapl:a/intel-rapl:a:0")
    probe.close()


def test_tpmi_only_tree(make_fake):
    fake = make_fake(msr=False, tpmi=True, sockets=2, dram=True, psys=True,
                     psys_per_package=True)
    assert (fake.root / "intel-rapl-tpmi" / "intel-rapl-tpmi:0" / "intel-rapl-tpmi:0:0").is_dir()
    probe = open_probe(fake)
    chans = by_id(probe)
    assert sorted(chans) == ["cpu0", "cpu1", "dram0", "dram1", "psys", "psys1"]
    assert {c.meta["control"] for c in chans.values()} == {"intel-rapl-tpmi"}
    assert chans["psys1"].kind == "psys" and chans["psys1"].meta["zone"] == "psys-1"
    fake.advance(1.0)
    energy = probe.read()
    assert energy["cpu1"] == pytest.approx(40.0) and energy["psys1"] == pytest.approx(60.0)
    summary = probe.describe()["control_types"]
    assert summary["intel-rapl-tpmi"].startswith("6 zones; read:")
    assert summary["intel-rapl"].startswith("absent")
    probe.close()


def test_tpmi_registered_as_intel_rapl_in_linux_6_5(make_fake):
    fake = make_fake(msr=False, tpmi=True, tpmi_control="intel-rapl", sockets=2, psys=True)
    probe = open_probe(fake)
    assert sorted(by_id(probe)) == ["cpu0", "cpu1", "dram0", "dram1", "psys"]
    probe.close()


def test_msr_and_tpmi_serve_each_package_once(make_fake):
    fake = make_fake(tpmi=True, sockets=2, dram=True, psys=True)
    probe = open_probe(fake)
    chans = by_id(probe)
    assert sorted(chans) == ["cpu0", "cpu1", "dram0", "dram1", "psys"]
    assert {c.meta["control"] for c in chans.values()} == {"intel-rapl"}
    dropped = probe.describe()["dropped"]
    assert sorted(d["name"] for d in dropped) == ["dram", "dram", "package-0", "package-1",
                                                   "psys"]
    assert all(d["control"] == "intel-rapl-tpmi" and "duplicate" in d["reason"]
               for d in dropped)
    fake.advance(2.0)
    energy = probe.read()
    assert energy["cpu0"] + energy["cpu1"] == pytest.approx(160.0)
    assert "not read: intel-rapl-tpmi:0 package-0: duplicate of" in \
        probe.describe()["control_types"]["intel-rapl-tpmi"]
    probe.close()


def test_energymeter_probes_says_what_each_control_type_has_and_what_is_read(make_fake):
    from energymeter.cli.probes import format_probes
    from energymeter.probes.inspect import inspect_probes

    fake = make_fake(tpmi=True, sockets=2, dram=True, psys=True)
    text = format_probes(inspect_probes(env={}, powercap_root=str(fake.root)))
    lines = text.splitlines()
    [tpmi] = [ln.strip() for ln in lines if ln.strip().startswith("intel-rapl-tpmi:")]
    assert "none read" in tpmi and "duplicate of" in tpmi
    [msr] = [ln.strip() for ln in lines if ln.strip().startswith("intel-rapl:")]
    assert "read:" in msr and "-> cpu0" in msr
    assert any(ln.strip().startswith("intel-rapl-mmio: absent (driver") for ln in lines)


def test_msr_dies_and_a_tpmi_package_are_not_both_counted(make_fake):
    # The MSR tree names dies (package-0-die-N, no plain package); TPMI names the package.
    fake = make_fake(tpmi=True, sockets=1, dies=2, dram=False)
    probe = open_probe(fake)
    assert sorted(by_id(probe)) == ["cpu0-die0", "cpu0-die1"]
    assert [d["name"] for d in probe.describe()["dropped"]] == ["package-0"]
    probe.close()


def test_denied_msr_package_is_read_through_tpmi(make_fake):
    fake = make_fake(tpmi=True, sockets=2, dram=False)
    fake.deny("package-0")
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener,
                                          clock_ns=fake.clock_ns))
    assert missing == []
    (probe,) = probes
    chans = by_id(probe)
    assert chans["cpu0"].meta["control"] == "intel-rapl-tpmi"
    assert chans["cpu1"].meta["control"] == "intel-rapl"
    fake.advance(1.0)
    assert probe.read() == {"cpu0": pytest.approx(40.0), "cpu1": pytest.approx(40.0)}
    probe.close()


def test_msr_mmio_and_tpmi_together(make_fake):
    fake = make_fake(tpmi=True, mmio_duplicate=True, sockets=1, dram=True)
    probe = open_probe(fake)
    assert sorted(by_id(probe)) == ["cpu0", "dram0"]
    summary = probe.describe()["control_types"]
    assert summary["intel-rapl"].startswith("2 zones; read:")
    assert "none read" in summary["intel-rapl-mmio"]
    assert "none read" in summary["intel-rapl-tpmi"]
    probe.close()


def test_fake_files_have_the_kernels_modes(make_fake):
    fake = make_fake(max_power_w=40.0)
    zone = fake.zone_path("package-0")
    modes = {name: stat.S_IMODE(os.stat(zone / name).st_mode)
             for name in ("energy_uj", "max_energy_range_uj", "name", "enabled",
                          "constraint_0_power_limit_uw", "constraint_0_max_power_uw")}
    assert modes == {"energy_uj": 0o400, "max_energy_range_uj": 0o444, "name": 0o444,
                     "enabled": 0o644, "constraint_0_power_limit_uw": 0o644,
                     "constraint_0_max_power_uw": 0o444}


def test_amd_zones_have_no_constraints_and_read_disabled(make_fake):
    fake = make_fake(amd=True)
    zone = fake.zone_path("package-0")
    assert not list(zone.glob("constraint_*"))
    assert (zone / "enabled").read_text() == "0\n"
    probe = open_probe(fake)
    chans = by_id(probe)
    assert sorted(chans) == ["cpu0", "cpu0-core"] and chans["cpu0-core"].part_of == "cpu0"
    assert probe.describe()["zones"][0]["energy_unit_nj"] == AMD_ENERGY_UNIT_NJ
    probe.close()


# -- what `energymeter probes` says ---------------------------------------------------------------


def test_no_zones_says_which_control_types_were_looked_for(tmp_path):
    root = tmp_path / "powercap"
    (root / "dtpm").mkdir(parents=True)
    from energymeter.probes.base import DiscoveryContext

    [missing] = rapl.discover(DiscoveryContext(powercap_root=root))
    assert isinstance(missing, Unavailable)
    for text in ("intel-rapl: absent", "intel-rapl-tpmi: absent", "intel-rapl-mmio: absent",
                 "dtpm: not a RAPL control type"):
        assert text in missing.reason
    assert "intel_rapl_tpmi" in missing.hint


def test_inspect_shows_the_control_types(make_fake, monkeypatch):
    from energymeter.probes.inspect import inspect_probes

    fake = make_fake(tpmi=True, dram=False)
    info = inspect_probes(env={"ENERGYMETER_POWERCAP_ROOT": str(fake.root),
                               "ENERGYMETER_DAEMON": "off"}, cpuinfo_text="")
    [desc] = [d for d in info["probes"] if d.get("source") == "rapl"]
    assert set(desc["control_types"]) == {"intel-rapl", "intel-rapl-tpmi", "intel-rapl-mmio"}
    assert {z["control"] for z in info["rapl_zones"]} == {"intel-rapl"}
