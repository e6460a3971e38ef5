"""RAPL against the layouts and counters the kernel really has.

Upstream read for these (linux): drivers/powercap/powercap_sys.c (zone names "%s:%x", file
modes), drivers/powercap/intel_rapl_common.c (32-bit ENERGY_STATUS_MASK, energy units,
max_energy_range_uj, psys/psys-N names, package-N[-die-M] names), intel_rapl_msr.c
("intel-rapl", AMD package + core only), intel_rapl_tpmi.c ("intel-rapl-tpmi", or "intel-rapl"
in 6.5/6.6, trp_alloc; package, dram and psys domains), int340x_thermal/processor_thermal_rapl.c
("intel-rapl-mmio": rapl_add_package(0, ...) with PACKAGE and DRAM registers only).
Psys since 5.10: commit f1e8d7560d30 ("powercap/intel_rapl: enumerate Psys RAPL domain together
with package RAPL domain"): registered with its master package at parent NULL
(rapl_package_register_powercap), "psys-N" when that package is N > 0 (rapl_init_domains).
MSR and TPMI never coexist: rapl_ids[] (intel_rapl_common.c, rapl_init) lists no TPMI-era CPU.
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
from energymeter.probes.base import Unavailable, energy_summary
from tests.fakes.powercap import (
    AMD_ENERGY_UNIT_NJ,
    INTEL_ENERGY_UNIT_NJ,
    SERVER_DRAM_ENERGY_UNIT_NJ,
    SPR_PSYS_ENERGY_UNIT_NJ,
    FakePowercap,
    max_range_uj,
)
from tests.test_rapl import channels_by_id, open_probe, split

# Units real CPUs have (nJ per count): ESU 13..16 (Intel client/server 14, AMD 16), Atom's
# 2**ESU uJ style (32 uJ), server DRAM's fixed 15.3 uJ, Sapphire Rapids psys's 1 J.
REAL_UNITS_NJ = (10**9 >> 13, INTEL_ENERGY_UNIT_NJ, 10**9 >> 15, AMD_ENERGY_UNIT_NJ,
                 32_000, SERVER_DRAM_ENERGY_UNIT_NJ, SPR_PSYS_ENERGY_UNIT_NJ)






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
    ids = set(channels_by_id(probe))
    assert {f"cpu{s}-die{d}" for s in range(6) for d in range(2)} == ids
    assert channels_by_id(probe)["cpu5-die1"].meta["path"].endswith("intel-rapl:b")
    probe.close()


def test_nested_hexadecimal_subzones(make_fake):
    fake = make_fake(sockets=11, dram=True, layout="nested")
    probe = open_probe(fake)
    assert channels_by_id(probe)["dram10"].meta["path"].endswith("intel-rapl:a/intel-rapl:a:0")
    probe.close()


def test_tpmi_only_tree(make_fake):
    fake = make_fake(msr=False, tpmi=True, sockets=2, dram=True, psys=True,
                     psys_per_package=True)
    assert (fake.root / "intel-rapl-tpmi" / "intel-rapl-tpmi:0" / "intel-rapl-tpmi:0:0").is_dir()
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert sorted(chans) == ["cpu0", "cpu1", "dram0", "dram1", "psys", "psys1"]
    assert {c.meta["control"] for c in chans.values()} == {"intel-rapl-tpmi"}
    assert chans["psys1"].kind == "psys" and chans["psys1"].meta["zone"] == "psys-1"
    # Several platform zones: each its own channel, none declared disjoint per socket.
    assert [(chans[p].meta["package"], chans[p].meta["psys_zones"]) for p in ("psys", "psys1")] \
        == [(0, 2), (1, 2)]
    assert all("psys_scope" not in chans[p].meta for p in ("psys", "psys1"))
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
    assert sorted(channels_by_id(probe)) == ["cpu0", "cpu1", "dram0", "dram1", "psys"]
    probe.close()


def test_fake_has_no_msr_tree_beside_tpmi(make_fake):
    # intel_rapl_common.c rapl_ids[] lists no TPMI-era CPU, so intel_rapl_msr never runs there;
    # the 6.5/6.6 intel_rapl_tpmi.c registered "intel-rapl" itself.
    fake = make_fake(tpmi=True, sockets=2)
    assert not (fake.root / "intel-rapl").exists()
    assert (fake.root / "intel-rapl-tpmi:1").is_dir()
    with pytest.raises(ValueError, match="synthetic=True"):
        make_fake(tpmi=True, msr=True)
    with pytest.raises(ValueError, match="MSR tree"):
        make_fake(tpmi=True, mmio_duplicate=True)


def test_synthetic_msr_and_tpmi_tree_is_deduplicated_defensively(make_fake):
    """SYNTHETIC: no mainline kernel shows MSR and TPMI RAPL zones together (see
    test_fake_has_no_msr_tree_beside_tpmi). Kept only to pin the defensive rule: MSR dies and a
    TPMI package of the same socket are never both counted, nor their DRAM, nor psys."""
    fake = make_fake(msr=True, tpmi=True, synthetic=True, sockets=1, dies=2, dram=True,
                     psys=True)
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert sorted(chans) == ["cpu0-die0", "cpu0-die1", "dram0-die0", "dram0-die1", "psys"]
    assert {c.meta["control"] for c in chans.values()} == {"intel-rapl"}
    reasons = {d["name"]: d["reason"] for d in probe.describe()["dropped"]}
    assert reasons == {
        "package-0": "duplicate of intel-rapl:0 package-0-die-0 (intel-rapl, channel cpu0-die0)"
                     " and intel-rapl:1 package-0-die-1 (intel-rapl, channel cpu0-die1)",
        "dram": "duplicate of intel-rapl:0:0 dram (intel-rapl, channel dram0-die0) and "
                "intel-rapl:1:0 dram (intel-rapl, channel dram0-die1)",
        "psys": "duplicate of intel-rapl:2 psys (intel-rapl, channel psys)",
    }
    probe.close()


def test_energymeter_probes_says_what_each_control_type_has_and_what_is_read(make_fake):
    from energymeter.cli.probes import format_probes
    from energymeter.probes.inspect import inspect_probes

    fake = make_fake(mmio_duplicate=True, dram=True, psys=True)
    text = format_probes(inspect_probes(env={}, powercap_root=str(fake.root)))
    lines = text.splitlines()
    [mmio] = [ln.strip() for ln in lines if ln.strip().startswith("intel-rapl-mmio:")]
    assert "none read" in mmio and "duplicate of intel-rapl:0 package-0" in mmio
    [msr] = [ln.strip() for ln in lines if ln.strip().startswith("intel-rapl:")]
    assert "read:" in msr and "-> cpu0" in msr and "psys -> psys" in msr
    assert any(ln.strip().startswith("intel-rapl-tpmi: absent (driver") for ln in lines)


def test_dram_only_the_mmio_door_has_is_read_through_it(make_fake):
    """Review 24b finding 4: processor_thermal_rapl.c registers MMIO PACKAGE and DRAM, each only
    if its counter reads non-zero (rapl_check_domain): a client whose MSR 0x619 reads 0 has
    intel-rapl-mmio:0:0 dram and no MSR dram. It must be read, not dropped as a "duplicate"
    of the MSR package."""
    fake = make_fake(dram=False, core=True, uncore=True, mmio_duplicate=True, mmio_dram=True)
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert sorted(chans) == ["cpu0", "cpu0-core", "cpu0-uncore", "dram0"]
    assert chans["dram0"].meta["control"] == "intel-rapl-mmio"
    assert chans["dram0"].kind == "dram" and chans["dram0"].part_of is None
    assert chans["cpu0"].meta["control"] == "intel-rapl"
    [dropped] = probe.describe()["dropped"]
    assert dropped["path"].endswith("intel-rapl-mmio:0")
    assert dropped["reason"] == "duplicate of intel-rapl:0 package-0 (intel-rapl, channel cpu0)"
    fake.advance(2.0)
    assert probe.read() == {"cpu0": pytest.approx(80.0), "cpu0-core": pytest.approx(50.0),
                            "cpu0-uncore": pytest.approx(4.0), "dram0": pytest.approx(10.0)}
    probe.close()


def test_dram_both_doors_have_is_read_once(make_fake):
    fake = make_fake(dram=True, mmio_duplicate=True, mmio_dram=True)
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert sorted(chans) == ["cpu0", "dram0"]
    assert {c.meta["control"] for c in chans.values()} == {"intel-rapl"}
    reasons = {d["name"]: d["reason"] for d in probe.describe()["dropped"]}
    assert reasons == {
        "package-0": "duplicate of intel-rapl:0 package-0 (intel-rapl, channel cpu0)",
        "dram": "duplicate of intel-rapl:0:0 dram (intel-rapl, channel dram0)",
    }
    probe.close()


def test_denied_msr_dram_is_read_through_mmio(make_fake):
    fake = make_fake(dram=True, mmio_duplicate=True, mmio_dram=True)
    fake.deny("package-0/dram")
    probes, missing = split(rapl.discover(fake.context(), opener=fake.opener,
                                          clock_ns=fake.clock_ns))
    assert missing == []
    (probe,) = probes
    chans = channels_by_id(probe)
    assert chans["dram0"].meta["control"] == "intel-rapl-mmio"
    assert chans["cpu0"].meta["control"] == "intel-rapl"
    fake.advance(1.0)
    assert probe.read() == {"cpu0": pytest.approx(40.0), "dram0": pytest.approx(5.0)}
    probe.close()


# -- psys (platform) ------------------------------------------------------------------------------


def test_spr_psys_registered_with_master_package_1(make_fake):
    """Review 24b findings 5 and 7. Since Linux 5.10 (f1e8d7560d30) the one platform zone is
    registered with its master package, right after its sub-zones, at parent NULL, and named
    psys-1 when package 1 is master (Sapphire Rapids; 1 J unit). It is the platform's energy:
    channel "psys", whatever N; N in meta; never declared per socket."""
    top_uj = max_range_uj(SPR_PSYS_ENERGY_UNIT_NJ)
    fake = make_fake(sockets=2, dram=True, psys=True, psys_package=1,
                     psys_energy_unit_nj=SPR_PSYS_ENERGY_UNIT_NJ,
                     dram_energy_unit_nj=SERVER_DRAM_ENERGY_UNIT_NJ,
                     initial_energy_uj={"psys-1": top_uj - 30_000_000})
    names = {d: (fake.root / d / "name").read_text().strip()
             for d in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "intel-rapl:1:0",
                       "intel-rapl:2")}
    assert names == {"intel-rapl:0": "package-0", "intel-rapl:0:0": "dram",
                     "intel-rapl:1": "package-1", "intel-rapl:1:0": "dram",
                     "intel-rapl:2": "psys-1"}
    probe = open_probe(fake)
    chans = channels_by_id(probe)
    assert sorted(chans) == ["cpu0", "cpu1", "dram0", "dram1", "psys"]
    psys = chans["psys"]
    assert psys.kind == "psys" and psys.part_of is None and psys.device == "platform (psys)"
    assert psys.meta["zone"] == "psys-1" and psys.meta["package"] == 1
    assert "psys_scope" not in psys.meta and "psys_zones" not in psys.meta
    fake.advance(1.0)  # 60 W: the 1 J-unit counter wraps 30 J into the second
    energy = probe.read()
    assert energy["psys"] == pytest.approx(60.0, abs=1e-6)
    [zone] = [z for z in probe.describe()["zones"] if z["channel"] == "psys"]
    assert zone["wraps"] == 1 and zone["energy_unit_nj"] == SPR_PSYS_ENERGY_UNIT_NJ
    assert zone["wrap_modulus_uj"] == 2**32 * 10**6
    summary = energy_summary(probe.channels, energy)
    assert summary["by_kind"]["psys"] == pytest.approx(60.0, abs=1e-6)
    assert summary["total"] == pytest.approx(2 * 40.0 + 2 * 5.0)
    probe.close()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sockets=st.integers(1, 4), master=st.integers(0, 3), before_5_10=st.booleans(),
       dram=st.booleans(), core=st.booleans())
def test_the_one_msr_psys_zone_is_channel_psys(sockets, master, before_5_10, dram, core):
    master %= sockets
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakePowercap(Path(tmp) / "pc", sockets=sockets, dram=dram, core=core, psys=True,
                            psys_package=master, psys_before_5_10=before_5_10)
        probe = open_probe(fake)
        try:
            chans = channels_by_id(probe)
            [psys] = [c for c in chans.values() if c.kind == "psys"]
            n = 0 if before_5_10 else master
            assert psys.id == "psys" and psys.meta["package"] == n
            assert psys.meta["zone"] == ("psys" if n == 0 else f"psys-{n}")
            assert {f"cpu{s}" for s in range(sockets)} <= set(chans)
            fake.advance(0.5)
            energy = probe.read()
            assert energy["psys"] == pytest.approx(30.0)
            assert energy_summary(probe.channels, energy)["by_kind"]["psys"] == \
                pytest.approx(30.0)
        finally:
            probe.close()
            fake.close()


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
    chans = channels_by_id(probe)
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
    assert {z["control"] for z in info["rapl_zones"]} == {"intel-rapl-tpmi"}
