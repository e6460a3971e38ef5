"""Static carbon-intensity tables shipped with the package (offline, no network).

Two tables live in ``energymeter/data`` (provenance and licences in ``energymeter/data/NOTICE.md``):

* ``country_intensity_ember.csv`` — Ember, Yearly Electricity Data: annual average carbon
  intensity of electricity **generation** per country (latest year 2022-2024) plus a world row.
* ``zone_intensity_electricitymaps_2025.csv`` — Electricity Maps 2025 yearly averages,
  **consumption**-based (imports flow-traced), for countries and sub-national grid zones.

Tables are read lazily on first use and cached; importing this module reads nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ConfigError
from ..settings import CARBON_TABLES

EMBER = "ember"
ELECTRICITYMAPS = "electricitymaps"

EMBER_FILE = "country_intensity_ember.csv"
ELECTRICITYMAPS_FILE = "zone_intensity_electricitymaps_2025.csv"
EMBER_SOURCE = "Ember (2025), Yearly Electricity Data"
ELECTRICITYMAPS_SOURCE = "Electricity Maps 2025 yearly"
ELECTRICITYMAPS_YEAR = 2025
WORLD = "WLD"
_WORLD_ALIASES = frozenset({"WLD", "WORLD"})
LIST_HINT = "list the valid codes with `energymeter carbon --list`"


@dataclass(frozen=True)
class Intensity:
    """Carbon intensity of electricity for one region, from one table.

    ``basis`` is ``"generation"`` (production-based, Ember) or ``"consumption"``
    (flow-traced, imports counted, Electricity Maps); both are lifecycle gCO2e per kWh.
    """

    g_per_kwh: float
    region: str
    basis: str
    source: str
    year: int
    table: str
    name: str


class RegionInfo(NamedTuple):
    """One row of :func:`list_regions` (what ``energymeter carbon --list`` prints)."""

    code: str
    name: str
    g_per_kwh: float
    basis: str
    source: str


class _Tables(NamedTuple):
    ember: dict[str, Intensity]  # by canonical code (alpha-2, or WLD)
    zones: dict[str, Intensity]  # by zone id (upper case)
    alpha3: dict[str, str]  # alpha-3 -> alpha-2 (or WLD)


@functools.lru_cache(maxsize=2)
def _text(filename: str) -> str:
    from ..data import read_text

    return read_text(filename)


def _rows(filename: str) -> Iterator[dict[str, str]]:
    import csv
    import io

    return csv.DictReader(io.StringIO(_text(filename), newline=""))


def _ember_code(row: Mapping[str, str]) -> str:
    return row["iso2"].strip().upper() or row["iso3"].strip().upper()


def _ember_intensity(row: Mapping[str, str]) -> Intensity:
    return Intensity(g_per_kwh=float(row["gco2e_per_kwh"]), region=_ember_code(row),
                     basis="generation", source=EMBER_SOURCE, year=int(row["year"]),
                     table=EMBER, name=row["country"].strip())


def _zone_intensity(row: Mapping[str, str]) -> Intensity:
    return Intensity(g_per_kwh=float(row["gco2e_per_kwh"]), region=row["zone"].strip().upper(),
                     basis="consumption", source=ELECTRICITYMAPS_SOURCE,
                     year=ELECTRICITYMAPS_YEAR, table=ELECTRICITYMAPS,
                     name=row["zone_name"].strip())


@functools.lru_cache(maxsize=1)
def _tables() -> _Tables:
    """Both tables whole (for listings, and the errors that suggest codes)."""
    ember: dict[str, Intensity] = {}
    alpha3: dict[str, str] = {}
    for row in _rows(EMBER_FILE):
        ember[_ember_code(row)] = _ember_intensity(row)
        iso3 = row["iso3"].strip().upper()
        if iso3:
            alpha3[iso3] = _ember_code(row)
    zones = {row["zone"].strip().upper(): _zone_intensity(row)
             for row in _rows(ELECTRICITYMAPS_FILE)}
    return _Tables(ember=ember, zones=zones, alpha3=alpha3)


@functools.lru_cache(maxsize=64)
def _found(code: str, choice: str) -> Intensity | None:
    """The row :func:`intensity` returns for a valid ``code``, found by scanning the tables'
    text rather than building them: a run's start needs one row, and building ~560 objects
    in a process that holds many (after ``import torch``) set off a full garbage collection
    (~100 ms) there. None when the code is not a plain hit (the full path says why)."""
    ember_row = None
    if "-" not in code:
        ember_row = next((r for r in _rows(EMBER_FILE)
                          if code in (r["iso2"].strip().upper(), r["iso3"].strip().upper())),
                         None)
    if ember_row is not None and (choice != ELECTRICITYMAPS or _ember_code(ember_row) == WORLD):
        return _ember_intensity(ember_row)
    if choice == EMBER:
        return None
    zone = _ember_code(ember_row) if ember_row is not None else code
    zone_row = next((r for r in _rows(ELECTRICITYMAPS_FILE) if r["zone"].strip().upper() == zone),
                    None)
    return None if zone_row is None else _zone_intensity(zone_row)


def _check_table(table: str) -> str:
    choice = str(table).strip().lower()
    if choice not in CARBON_TABLES:
        raise ConfigError(
            f"carbon table {table!r} is unknown; accepted: {', '.join(CARBON_TABLES)}"
        )
    return choice


def _suggest(text: str, tables: _Tables, n: int = 5) -> list[str]:
    """Closest valid codes to ``text``, by code and by country/zone name."""
    import difflib

    names: dict[str, str] = {}
    for row in (*tables.ember.values(), *tables.zones.values()):
        names.setdefault(row.region, row.name)
    codes = sorted(names)
    upper = text.strip().upper()
    found = difflib.get_close_matches(upper, codes, n=n, cutoff=0.6)
    by_name: dict[str, str] = {}
    for code, name in names.items():
        by_name.setdefault(name.lower(), code)
    for name in difflib.get_close_matches(text.strip().lower(), list(by_name), n=n, cutoff=0.6):
        if by_name[name] not in found:
            found.append(by_name[name])
    if not found:  # always offer something: the best matches, however weak
        found = difflib.get_close_matches(upper, codes, n=n, cutoff=0.0)
    return [f"{code} ({names[code]})" for code in found[:n]]


def _unknown(region: str, tables: _Tables) -> ConfigError:
    suggestions = _suggest(region, tables)
    hint = f"closest valid codes: {', '.join(suggestions)}; " if suggestions else ""
    return ConfigError(
        f"unknown carbon region {region!r}; {hint}accepted: ISO 3166 alpha-2 or alpha-3 country "
        "codes (SE, SWE), Electricity Maps zone ids (SE-SE3, US-CAL-CISO, DK-DK2) or WLD for the "
        f"world average; {LIST_HINT}"
    )


def intensity(region: str, table: str = "auto") -> Intensity:
    """Annual average carbon intensity of electricity for ``region`` from a shipped table.

    ``region`` is case-insensitive: an ISO 3166 alpha-2 (``SE``) or alpha-3 (``SWE``) country
    code, an Electricity Maps zone id (``SE-SE3``, ``US-CAL-CISO``) or ``WLD``/``WORLD``.
    ``table``: ``"auto"`` (countries from Ember, sub-national zones from Electricity Maps),
    ``"ember"`` (countries only) or ``"electricitymaps"`` (zones and countries). The world
    average exists only in the Ember table and is returned from it whatever ``table`` says.
    Raises :class:`~energymeter.errors.ConfigError` for an unknown code, naming the closest.
    """
    choice = _check_table(table)
    if not isinstance(region, str) or not region.strip():
        raise ConfigError(
            f"carbon region must be a non-empty code, got {region!r}; e.g. SE, SWE, SE-SE3 or "
            f"WLD; {LIST_HINT}"
        )
    code = region.strip().upper().replace("_", "-")
    found = _found(WORLD if code in _WORLD_ALIASES else code, choice)
    if found is not None:
        return found
    tables = _tables()
    if code in _WORLD_ALIASES:
        return tables.ember[WORLD]
    code = tables.alpha3.get(code, code)
    if choice == EMBER:
        if code in tables.ember:
            return tables.ember[code]
        if code in tables.zones and "-" in code:
            country = code.split("-", 1)[0]
            alt = f" or the country code {country!r}" if country in tables.ember else ""
            raise ConfigError(
                f"{region!r} is the sub-national zone {tables.zones[code].name!r} of the "
                f"Electricity Maps table, but the Ember table has countries only; use carbon "
                f"table 'auto' or 'electricitymaps'{alt}"
            )
        if code in tables.zones:
            raise ConfigError(
                f"{region!r} ({tables.zones[code].name}) is not in the Ember table; use carbon "
                f"table 'auto' or 'electricitymaps' for it; {LIST_HINT}"
            )
        raise _unknown(region, tables)
    if choice == ELECTRICITYMAPS:
        if code in tables.zones:
            return tables.zones[code]
        if code in tables.ember:
            raise ConfigError(
                f"{region!r} ({tables.ember[code].name}) is not in the Electricity Maps table; "
                f"use carbon table 'auto' or 'ember' for it; {LIST_HINT}"
            )
        raise _unknown(region, tables)
    if "-" not in code and code in tables.ember:
        return tables.ember[code]
    if code in tables.zones:
        return tables.zones[code]
    raise _unknown(region, tables)


def list_regions(table: str = "auto") -> list[RegionInfo]:
    """Every code :func:`intensity` accepts with ``table``, world first, then by code.

    Each row is ``(code, name, g_per_kwh, basis, source)`` — what ``energymeter carbon --list``
    prints. With ``"auto"`` a country appears once, from the table :func:`intensity` uses.
    """
    choice = _check_table(table)
    tables = _tables()
    rows: dict[str, Intensity] = {}
    if choice in ("auto", EMBER):
        rows.update(tables.ember)
    if choice == ELECTRICITYMAPS:
        rows[WORLD] = tables.ember[WORLD]
    if choice in ("auto", ELECTRICITYMAPS):
        for code, row in tables.zones.items():
            rows.setdefault(code, row)
    ordered = sorted(rows.values(), key=lambda r: (r.region != WORLD, r.region))
    return [RegionInfo(r.region, r.name, r.g_per_kwh, r.basis, r.source) for r in ordered]
