"""Static carbon tables, region resolution and emissions arithmetic (no network)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energymeter.carbon import (
    J_PER_KWH,
    CarbonAccount,
    Intensity,
    detect_timezone,
    intensity,
    list_regions,
    resolve_region,
    tz_country,
)
from energymeter.carbon.region import build_tz_country_map, normalize_tz_name
from energymeter.errors import ConfigError
from energymeter.settings import resolve_settings

DATA = Path(__file__).resolve().parents[1] / "energymeter" / "data"
EMBER = "Ember (2025), Yearly Electricity Data"
EMAPS = "Electricity Maps 2025 yearly"


def settings(tmp_path: Path, overrides: dict | None = None, env: dict | None = None):
    return resolve_settings(overrides, env=env or {}, cwd=tmp_path)


# -- intensity(): code forms and tables ------------------------------------------------------
def test_done_when_se_se3_is_20() -> None:
    found = intensity("SE-SE3")
    assert found == Intensity(20.0, "SE-SE3", "consumption", EMAPS, 2025, "electricitymaps",
                              "South Central Sweden")


@pytest.mark.parametrize("code", ["SE", "se", "SWE", "swe", " Se "])
def test_country_code_forms_use_ember(code: str) -> None:
    found = intensity(code)
    assert (found.region, found.g_per_kwh, found.basis, found.table) == (
        "SE", 35.89, "generation", "ember")
    assert found.source == EMBER and found.year == 2024 and found.name == "Sweden"


@pytest.mark.parametrize("code, g", [("US-CAL-CISO", 208.0), ("us-cal-ciso", 208.0),
                                     ("DK-DK2", 144.0), ("dk-dk2", 144.0), ("AU-NSW", 525.0)])
def test_zone_ids_use_electricitymaps(code: str, g: float) -> None:
    found = intensity(code)
    assert found.region == code.upper() and found.g_per_kwh == g
    assert found.basis == "consumption" and found.table == "electricitymaps"
    assert found.source == EMAPS and found.year == 2025


@pytest.mark.parametrize("code", ["WLD", "wld", "World", "WORLD"])
@pytest.mark.parametrize("table", ["auto", "ember", "electricitymaps"])
def test_world_average(code: str, table: str) -> None:
    found = intensity(code, table)
    assert (found.region, found.g_per_kwh, found.table, found.name) == (
        "WLD", 472.94, "ember", "World")


def test_table_choice_and_basis_luxembourg() -> None:
    assert intensity("LU").g_per_kwh == 134.62
    assert intensity("LU", "auto").basis == "generation"
    assert intensity("LUX", "ember").g_per_kwh == 134.62
    em = intensity("lu", "electricitymaps")
    assert (em.g_per_kwh, em.basis, em.table, em.source) == (
        212.0, "consumption", "electricitymaps", EMAPS)
    assert intensity("LUX", "ElectricityMaps").g_per_kwh == 212.0


def test_ember_table_rejects_zones() -> None:
    with pytest.raises(ConfigError, match="Ember table has countries only") as info:
        intensity("SE-SE3", "ember")
    assert "'SE'" in str(info.value) and "electricitymaps" in str(info.value)


def test_country_only_in_zone_table_falls_back_in_auto() -> None:
    found = intensity("AX")  # Åland: not in Ember
    assert found.table == "electricitymaps" and found.basis == "consumption"
    with pytest.raises(ConfigError, match="not in the Ember table"):
        intensity("AX", "ember")


def test_country_missing_from_zone_table() -> None:
    with pytest.raises(ConfigError, match="not in the Electricity Maps table"):
        intensity("AS", "electricitymaps")  # American Samoa is in Ember only
    assert intensity("AS").table == "ember"


def test_unknown_zone_suggests_siblings() -> None:
    with pytest.raises(ConfigError) as info:
        intensity("SE-SE5")
    message = str(info.value)
    assert "unknown carbon region 'SE-SE5'" in message
    for sibling in ("SE-SE1", "SE-SE2", "SE-SE3", "SE-SE4"):
        assert sibling in message
    assert "energymeter carbon --list" in message


@pytest.mark.parametrize("code", ["XX", "QQQ", "Narnia", "sweden"])
def test_unknown_code_always_gives_suggestions(code: str) -> None:
    with pytest.raises(ConfigError, match="closest valid codes: [A-Z]") as info:
        intensity(code)
    assert "energymeter carbon --list" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_country_name_suggests_its_code() -> None:
    with pytest.raises(ConfigError, match=r"SE \(Sweden\)"):
        intensity("Sweden")


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_code(bad: str) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        intensity(bad)


def test_bad_table_name() -> None:
    with pytest.raises(ConfigError, match="accepted: auto, ember, electricitymaps"):
        intensity("SE", "iea")


def test_every_row_of_both_tables_is_reachable() -> None:
    with (DATA / "zone_intensity_electricitymaps_2025.csv").open(encoding="utf-8") as fh:
        zones = list(csv.DictReader(fh))
    with (DATA / "country_intensity_ember.csv").open(encoding="utf-8") as fh:
        countries = list(csv.DictReader(fh))
    assert len(zones) == 352 and len(countries) == 210
    for row in zones:
        found = intensity(row["zone"], "electricitymaps")
        assert found.g_per_kwh == float(row["gco2e_per_kwh"]) and found.name == row["zone_name"]
    for row in countries:
        found = intensity(row["iso3"], "ember")
        assert found.g_per_kwh == float(row["gco2e_per_kwh"]) and found.year == int(row["year"])


def test_list_regions() -> None:
    rows = list_regions()
    codes = [r.code for r in rows]
    assert codes[0] == "WLD" and len(codes) == len(set(codes))
    assert {"SE", "SE-SE3", "US-CAL-CISO", "AX", "AS"} <= set(codes)
    by_code = {r.code: r for r in rows}
    assert by_code["SE"] == ("SE", "Sweden", 35.89, "generation", EMBER)
    assert by_code["SE-SE3"] == ("SE-SE3", "South Central Sweden", 20.0, "consumption", EMAPS)
    for row in rows:  # --list agrees with intensity()
        assert intensity(row.code).g_per_kwh == row.g_per_kwh
    assert all(r.basis == "generation" for r in list_regions("ember"))
    assert len(list_regions("ember")) == 210
    em = list_regions("electricitymaps")
    assert len(em) == 353 and {r.basis for r in em[1:]} == {"consumption"}


def test_import_is_cheap_and_loads_no_table() -> None:
    code = (
        "import sys, energymeter, energymeter.carbon\n"
        "from energymeter.carbon import static\n"
        "assert static._tables.cache_info().currsize == 0\n"
        "assert 'urllib.request' not in sys.modules, 'urllib imported'\n"
        "assert 'energymeter.carbon.live' not in sys.modules\n"
        "assert 'difflib' not in sys.modules and 'csv' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


# -- time zones ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, name", [
    ("Europe/Oslo", "Europe/Oslo"), (":Europe/Oslo", "Europe/Oslo"),
    ("/usr/share/zoneinfo/Europe/Oslo", "Europe/Oslo"),
    (":/usr/share/zoneinfo/posix/Europe/Oslo", "Europe/Oslo"),
    ("/usr/lib/zoneinfo/right/Asia/Tokyo", "Asia/Tokyo"), ("", None), (":", None),
    ("/etc/mytime", None),
])
def test_normalize_tz_name(value: str, name: str | None) -> None:
    assert normalize_tz_name(value) == name


@pytest.mark.parametrize("zone, country", [
    ("Europe/Stockholm", "SE"), ("Europe/Copenhagen", "DK"), ("America/Los_Angeles", "US"),
    ("Asia/Calcutta", "IN"), ("Europe/Kiev", "UA"), ("US/Pacific", "US"), ("GB", "GB"),
    ("Australia/Sydney", "AU"), ("/usr/share/zoneinfo/Europe/Oslo", "NO"),
    ("UTC", None), ("Etc/UTC", None), ("Etc/GMT+3", None), ("GMT", None), ("Mars/Olympus", None),
    ("", None), (None, None),
])
def test_tz_country(zone: str | None, country: str | None) -> None:
    assert tz_country(zone) == country


def test_detect_timezone_order(tmp_path: Path) -> None:
    etc_tz = tmp_path / "timezone"
    link = tmp_path / "localtime"
    os.symlink("/usr/share/zoneinfo/Europe/Copenhagen", link)
    assert detect_timezone({"TZ": ":Europe/Oslo"}, etc_timezone=etc_tz, localtime=link) == (
        "Europe/Oslo")
    assert detect_timezone({"TZ": ""}, etc_timezone=etc_tz, localtime=link) == "UTC"
    assert detect_timezone({}, etc_timezone=etc_tz, localtime=link) == "Europe/Copenhagen"
    etc_tz.write_text("Europe/Stockholm\n")
    assert detect_timezone({}, etc_timezone=etc_tz, localtime=link) == "Europe/Stockholm"
    assert detect_timezone({}, etc_timezone=tmp_path / "none", localtime=tmp_path / "none") is None
    rel = tmp_path / "rel"
    (tmp_path / "zoneinfo" / "Asia").mkdir(parents=True)
    os.symlink("zoneinfo/Asia/Tokyo", rel)
    assert detect_timezone({}, etc_timezone=etc_tz / "x", localtime=rel) == "Asia/Tokyo"


def test_shipped_tz_table_matches_builder_on_a_fake_tzdb(tmp_path: Path) -> None:
    (tmp_path / "zone.tab").write_text(
        "# comment\nSE\t+5920+01803\tEurope/Stockholm\nDK\t+5540+01235\tEurope/Copenhagen\n")
    (tmp_path / "zone1970.tab").write_text("CH,DE,LI\t+4723+00832\tEurope/Zurich\n")
    (tmp_path / "tzdata.zi").write_text("Z Europe/Stockholm 1 - CET\nL Europe/Zurich Europe/Vaduz\n"
                                        "L Etc/UTC UTC\n")
    (tmp_path / "Europe").mkdir()
    (tmp_path / "Europe" / "Copenhagen").write_bytes(b"TZif")
    os.symlink("Copenhagen", tmp_path / "Europe" / "Kobenhavn")
    mapping = build_tz_country_map(tmp_path)
    assert mapping == {"Europe/Stockholm": "SE", "Europe/Copenhagen": "DK",
                       "Europe/Zurich": "CH", "Europe/Vaduz": "CH", "Europe/Kobenhavn": "DK"}
    with (DATA / "tz_country.csv").open(encoding="utf-8") as fh:
        shipped = {row["tz"]: row["iso2"] for row in csv.DictReader(fh)}
    assert len(shipped) > 400 and shipped["Europe/Stockholm"] == "SE"
    assert not any(k.startswith("Etc/") or k == "UTC" for k in shipped)


# -- region resolution -----------------------------------------------------------------------
def test_resolution_argument_beats_env_and_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.energymeter]\nregion = 'FR'\n")
    env = {"ENERGYMETER_REGION": "de"}
    s = settings(tmp_path, {"region": "se-se3"}, env)
    assert resolve_region(s, env={"TZ": "Europe/Copenhagen"}) == ("SE-SE3", "argument", [])
    s = settings(tmp_path, None, env)
    assert resolve_region(s, env={"TZ": "Europe/Copenhagen"}) == ("DE", "env", [])
    s = settings(tmp_path)
    assert resolve_region(s, env={"TZ": "Europe/Copenhagen"}) == ("FR", "pyproject", [])
    (tmp_path / "pyproject.toml").unlink()
    s = settings(tmp_path)
    assert resolve_region(s, env={"TZ": "Europe/Copenhagen"}) == ("DK", "timezone", [])
    code, source, warnings = resolve_region(s, env={"TZ": "UTC"})
    assert (code, source) == ("WLD", "default") and len(warnings) == 1
    assert "ENERGYMETER_REGION" in warnings[0] and "472.94" in warnings[0]
    assert "energymeter carbon --list" in warnings[0]


def test_resolution_canonicalises_alpha3(tmp_path: Path) -> None:
    s = settings(tmp_path, {"region": "swe"})
    assert resolve_region(s, tz="UTC") == ("SE", "argument", [])


@pytest.mark.parametrize("tz, expected", [
    ("Europe/Copenhagen", ("DK", "timezone")), (":Europe/Stockholm", ("SE", "timezone")),
    ("/usr/share/zoneinfo/Europe/Oslo", ("NO", "timezone")), ("UTC", ("WLD", "default")),
    ("Etc/UTC", ("WLD", "default")), ("Mars/Olympus", ("WLD", "default")),
])
def test_time_zone_inference(tmp_path: Path, tz: str, expected: tuple[str, str]) -> None:
    s = settings(tmp_path)
    code, source, warnings = resolve_region(s, env={"TZ": tz})
    assert (code, source) == expected
    assert bool(warnings) == (source == "default")
    assert resolve_region(s, tz=tz)[:2] == expected  # explicit tz argument, same answer


def test_time_zone_country_missing_from_ember_table(tmp_path: Path) -> None:
    # Europe/Mariehamn -> AX, which only the Electricity Maps table has.
    assert resolve_region(settings(tmp_path), tz="Europe/Mariehamn")[:2] == ("AX", "timezone")
    s = settings(tmp_path, {"carbon_table": "ember"})
    assert resolve_region(s, tz="Europe/Mariehamn")[:2] == ("WLD", "default")


@pytest.mark.parametrize("where", ["argument", "env", "pyproject"])
def test_unknown_explicit_region_raises(tmp_path: Path, where: str) -> None:
    overrides, env = None, {}
    if where == "argument":
        overrides = {"region": "SE-SE5"}
    elif where == "env":
        env = {"ENERGYMETER_REGION": "SE-SE5"}
    else:
        (tmp_path / "pyproject.toml").write_text("[tool.energymeter]\nregion = 'SE-SE5'\n")
    s = settings(tmp_path, overrides, env)
    needle = {"argument": "region argument", "env": r"\$ENERGYMETER_REGION",
              "pyproject": "pyproject.toml"}[where]
    with pytest.raises(ConfigError, match=needle) as info:
        resolve_region(s, tz="Europe/Stockholm")
    assert "SE-SE3" in str(info.value)
    with pytest.raises(ConfigError):
        CarbonAccount.start(s, env={}, tz="UTC")


def test_ember_table_setting_with_zone_region(tmp_path: Path) -> None:
    s = settings(tmp_path, {"region": "SE-SE3", "carbon_table": "ember"})
    with pytest.raises(ConfigError, match="countries only"):
        CarbonAccount.start(s, env={})


# -- emissions -------------------------------------------------------------------------------
def test_static_emissions_exact_with_pue_and_price(tmp_path: Path) -> None:
    s = settings(tmp_path, {"region": "SE-SE3", "pue": 1.25, "price_per_kwh": 0.2,
                            "currency": "sek"})
    acct = CarbonAccount.start(s, env={})
    assert (acct.region, acct.region_source, acct.warnings) == ("SE-SE3", "argument", [])
    for e in (0.0, 1e5, 2.5e5, 2.5e5, 7.2e6):
        acct.update(e)
    block = acct.finish(7.2e6)
    assert block == {
        "region": "SE-SE3", "region_source": "argument", "name": "South Central Sweden",
        "g_per_kwh": 20.0, "basis": "consumption", "source": EMAPS, "year": 2025,
        "table": "electricitymaps", "provider": "table", "pue": 1.25,
        "it_energy_j": 7.2e6, "facility_energy_j": 9.0e6, "it_energy_kwh": 2.0,
        "facility_energy_kwh": 2.5, "emissions_g": 50.0,
        "price_per_kwh": 0.2, "currency": "SEK", "cost": 0.5,
    }
    assert acct.finish(9e9) == block  # idempotent; later energies ignored


@pytest.mark.parametrize("region", ["SE", "LU", "US-CAL-CISO", "IN", "WLD"])
@pytest.mark.parametrize("pue", [1.0, 1.1, 1.58])
@pytest.mark.parametrize("energy_j", [0.0, 1.0, 12345.678, 3.6e9])
def test_static_emissions_equal_e_times_pue_times_i(
    tmp_path: Path, region: str, pue: float, energy_j: float
) -> None:
    s = settings(tmp_path, {"region": region, "pue": pue})
    acct = CarbonAccount.start(s, env={})
    acct.update(energy_j / 3)
    block = acct.finish(energy_j)
    g = intensity(region).g_per_kwh
    assert block["emissions_g"] == (energy_j * pue / J_PER_KWH) * g
    assert block["emissions_g"] == pytest.approx(energy_j * pue * g / 3.6e6, rel=1e-12)
    assert block["facility_energy_j"] == energy_j * pue and block["pue"] == pue
    assert "cost" not in block and "intensity_timeline" not in block


def test_default_region_warns_in_account(tmp_path: Path) -> None:
    acct = CarbonAccount.start(settings(tmp_path), env={"TZ": "UTC"})
    assert (acct.region, acct.region_source) == ("WLD", "default")
    assert len(acct.warnings) == 1 and "world average" in acct.warnings[0]
    block = acct.finish(3.6e6)
    assert block["emissions_g"] == 472.94 and block["region_source"] == "default"


def test_bad_energy_readings_are_ignored(tmp_path: Path) -> None:
    acct = CarbonAccount.start(settings(tmp_path, {"region": "WLD"}), env={})
    acct.update(3.6e6)
    acct.update(float("nan"))
    acct.update(1.0)  # a decrease: cumulative energy never goes back
    assert acct.finish(3.6e6)["emissions_g"] == 472.94


def test_start_is_fast_without_provider(tmp_path: Path) -> None:
    s = settings(tmp_path, {"region": "SE-SE3"})
    CarbonAccount.start(s, env={})  # tables loaded once per process
    t0 = time.perf_counter()
    for _ in range(10):
        CarbonAccount.start(s, env={})
    assert (time.perf_counter() - t0) / 10 < 0.005


def test_provider_none_starts_no_thread(tmp_path: Path) -> None:
    import threading

    before = threading.active_count()
    acct = CarbonAccount.start(settings(tmp_path, {"region": "SE"}), env={})
    assert threading.active_count() == before and acct.wait_for_poll(0.01) is False


def test_docs_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "carbon.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    for block in blocks:
        if "measure(" in block:
            continue  # needs the meter and writes a run directory; covered elsewhere
        exec(compile(block, "docs/carbon.md", "exec"), {})
        printed = capsys.readouterr().out.splitlines()
        expected = [line[2:] for line in block.splitlines() if line.startswith("# ")]
        if expected and "..." not in block:
            assert printed == expected


def test_the_scanning_lookup_gives_what_the_whole_tables_give(monkeypatch) -> None:
    """intensity() finds a valid code by scanning the tables' text (a run's start builds no
    table); for every code of both tables, and aliases, it agrees with the whole tables."""
    from energymeter.carbon import static

    tables = static._tables()
    codes = set(tables.ember) | set(tables.zones) | set(tables.alpha3)
    codes |= {"WORLD", "wld", "se", "swe", "se_se3", "XX", "US-CAL-CISO"}
    fast: dict[tuple[str, str], object] = {}
    for code in codes:
        for choice in ("auto", "ember", "electricitymaps"):
            try:
                fast[code, choice] = static.intensity(code, choice)
            except ConfigError as exc:
                fast[code, choice] = str(exc)
    monkeypatch.setattr(static, "_found", lambda code, choice: None)  # whole tables only
    for (code, choice), got in fast.items():
        try:
            want: object = static.intensity(code, choice)
        except ConfigError as exc:
            want = str(exc)
        assert got == want, (code, choice)
    assert sum(isinstance(v, static.Intensity) for v in fast.values()) > 1000
