"""Which grid region a measurement is attributed to, decided offline.

Order (the first that applies wins, recorded as ``region_source``):

1. ``settings.region`` — from an explicit argument (``"argument"``), ``ENERGYMETER_REGION``
   (``"env"``) or ``[tool.energymeter]`` in ``pyproject.toml`` (``"pyproject"``);
2. the system time zone (``"timezone"``): ``$TZ``, else ``/etc/timezone``, else the target of
   the ``/etc/localtime`` symlink, mapped IANA zone -> country (``Europe/Stockholm`` -> ``SE``)
   with the tz database's ``zone.tab``; UTC and ``Etc/*`` zones infer nothing;
3. the world average (``"default"``), with a warning saying how to set the region.

Nothing here touches the network; the region is never geolocated by IP address.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from .._lazy import LazyLogger
from ..errors import ConfigError
from .static import LIST_HINT, WORLD, intensity

log = LazyLogger("energymeter")

TZ_COUNTRY_FILE = "tz_country.csv"
SYSTEM_ZONEINFO = Path("/usr/share/zoneinfo")
ETC_TIMEZONE = Path("/etc/timezone")
ETC_LOCALTIME = Path("/etc/localtime")
_NO_COUNTRY_ZONES = frozenset(
    {"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "GREENWICH", "UNIVERSAL", "ZULU", "FACTORY",
     "LOCALTIME", "POSIXRULES"}
)


def normalize_tz_name(value: str) -> str | None:
    """An IANA zone name from a ``TZ``-style value or a zoneinfo path, else ``None``.

    ``":Europe/Oslo"``, ``"/usr/share/zoneinfo/Europe/Oslo"`` and
    ``"/usr/share/zoneinfo/posix/Europe/Oslo"`` all give ``"Europe/Oslo"``.
    """
    name = value.strip()
    if name.startswith(":"):
        name = name[1:].strip()
    if not name:
        return None
    if "zoneinfo/" in name:
        name = name.rsplit("zoneinfo/", 1)[1]
    elif name.startswith("/"):
        return None  # a path outside any zoneinfo tree: the zone name cannot be known
    for prefix in ("posix/", "right/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.strip("/") or None


def detect_timezone(
    env: Mapping[str, str] | None = None,
    *,
    etc_timezone: Path = ETC_TIMEZONE,
    localtime: Path = ETC_LOCALTIME,
) -> str | None:
    """The system's IANA time-zone name, or ``None`` if it cannot be told.

    ``$TZ`` wins when set (an empty ``TZ`` means UTC); then ``/etc/timezone``; then the target
    of the ``/etc/localtime`` symlink. Reads only local files.
    """
    env = os.environ if env is None else env
    if "TZ" in env:
        return normalize_tz_name(env["TZ"]) or "UTC"
    try:
        text = etc_timezone.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text:
        return normalize_tz_name(text.splitlines()[0])
    try:
        target = os.readlink(localtime)
    except OSError:  # missing, or a plain copy of a zone file: not a symlink
        return None
    if not os.path.isabs(target):
        target = os.path.normpath(os.path.join(os.path.dirname(localtime), target))
    return normalize_tz_name(target)


def build_tz_country_map(zoneinfo: Path = SYSTEM_ZONEINFO, *, walk: bool = True) -> dict[str, str]:
    """IANA zone (and alias) -> ISO alpha-2 country, from a tz database directory.

    Uses ``zone.tab`` (one country per zone), ``zone1970.tab`` (first country) for zones missing
    there, and aliases: ``L`` lines of ``tzdata.zi`` and symlinks in the tree. This generated the
    shipped ``energymeter/data/tz_country.csv`` and is the fallback for zones that table lacks.
    """
    mapping: dict[str, str] = {}
    for tab in ("zone.tab", "zone1970.tab"):
        try:
            lines = (zoneinfo / tab).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            if line.startswith("#") or not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) >= 3:
                mapping.setdefault(parts[2].strip(), parts[0].split(",")[0].strip().upper())
    links: dict[str, str] = {}
    try:
        zi_lines = (zoneinfo / "tzdata.zi").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        zi_lines = []
    for line in zi_lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "L":
            links[parts[2]] = parts[1]
    if walk and zoneinfo.is_dir():
        for path in zoneinfo.rglob("*"):
            rel = path.relative_to(zoneinfo).as_posix()
            if rel.startswith(("posix/", "right/")) or not path.is_symlink():
                continue
            try:
                target = path.resolve().relative_to(zoneinfo.resolve()).as_posix()
            except (OSError, ValueError):
                continue
            links.setdefault(rel, normalize_tz_name(target) or target)
    for alias, target in links.items():
        seen = 0
        while target not in mapping and target in links and seen < 8:
            target, seen = links[target], seen + 1
        if alias not in mapping and target in mapping:
            mapping[alias] = mapping[target]
    return mapping


@functools.lru_cache(maxsize=1)
def _shipped_tz_map() -> dict[str, str]:
    import csv
    import io

    from ..data import read_text

    try:
        text = read_text(TZ_COUNTRY_FILE)
    except (OSError, UnicodeDecodeError):
        return {}
    return {row["tz"]: row["iso2"] for row in csv.DictReader(io.StringIO(text, newline=""))}


@functools.lru_cache(maxsize=1)
def _system_tz_map() -> dict[str, str]:
    return build_tz_country_map(SYSTEM_ZONEINFO, walk=False)


def _system_tz_lookup(name: str) -> str | None:
    """Country of ``name`` from the system's tz database (for zones newer than our table)."""
    mapping = _system_tz_map()
    if name in mapping:
        return mapping[name]
    path = SYSTEM_ZONEINFO / name
    try:
        if not path.is_symlink():
            return None
        target = path.resolve().relative_to(SYSTEM_ZONEINFO.resolve()).as_posix()
    except (OSError, ValueError):
        return None
    return mapping.get(target)


def tz_country(zone: str | None) -> str | None:
    """ISO alpha-2 country of an IANA time zone (``Europe/Copenhagen`` -> ``DK``), else ``None``.

    UTC, ``Etc/*`` and other zones that belong to no country give ``None``.
    """
    if not zone:
        return None
    name = normalize_tz_name(zone)
    if not name or name.upper() in _NO_COUNTRY_ZONES or name.startswith("Etc/"):
        return None
    found = _shipped_tz_map().get(name)
    if found is None:  # a zone newer than the shipped table: ask the system's tz database
        found = _system_tz_lookup(name)
    return found


def resolve_region(
    settings: object,
    env: Mapping[str, str] | None = None,
    tz: str | None = None,
) -> tuple[str, str, list[str]]:
    """``(region_code, region_source, warnings)`` for a measurement with ``settings``.

    ``region_source`` is ``"argument"``, ``"env"`` or ``"pyproject"`` (``settings.region`` and
    where it came from), ``"timezone"`` (inferred offline from the time zone: ``tz`` if given,
    else :func:`detect_timezone` with ``env``) or ``"default"`` (the world average, with a
    warning). A region set explicitly but unknown raises :class:`ConfigError`.
    """
    table = getattr(settings, "carbon_table", "auto")
    region = getattr(settings, "region", None)
    if region is not None and str(region).strip():
        origin = settings.origin("region") if hasattr(settings, "origin") else "argument"
        if origin not in ("argument", "env", "pyproject"):
            origin = "argument"
        where = {"argument": "the region argument", "env": "$ENERGYMETER_REGION",
                 "pyproject": "[tool.energymeter] region in pyproject.toml"}[origin]
        try:
            found = intensity(str(region), table)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return found.region, origin, []
    zone = tz if tz is not None else detect_timezone(env)
    country = tz_country(zone)
    if country is not None:
        try:
            found = intensity(country, table)
        except ConfigError:
            log.info("time zone %s maps to %s, which carbon table %r lacks", zone, country, table)
        else:
            log.debug("carbon region %s inferred from time zone %s", found.region, zone)
            return found.region, "timezone", []
    world = intensity(WORLD)
    why = f"the time zone ({zone}) names no country we have data for" if zone else (
        "the time zone could not be read"
    )
    warning = (
        f"carbon region not set and {why}: using the world average {world.g_per_kwh:g} g/kWh "
        f"({world.source}, {world.year}). Set it with --region / region= (e.g. SE-SE3), "
        f"ENERGYMETER_REGION=SE-SE3 or region = \"SE\" under [tool.energymeter] in "
        f"pyproject.toml; {LIST_HINT}"
    )
    return world.region, "default", [warning]
