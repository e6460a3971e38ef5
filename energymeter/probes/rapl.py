"""RAPL energy counters, read from Linux powercap sysfs directly.

Layout (``/sys/class/powercap`` by default; override with ``ENERGYMETER_POWERCAP_ROOT``, i.e.
``Settings.powercap_root``, which reaches here as ``DiscoveryContext.powercap_root``). Three
control types are read, the names the kernel registers them under
(``powercap_register_control_type``):

* ``intel-rapl``: ``drivers/powercap/intel_rapl_msr.c`` (Intel MSRs; AMD/Hygon Zen too, with a
  ``package-N`` zone and a ``core`` sub-zone only); ``intel_rapl_tpmi.c`` of Linux 6.5/6.6 also
  registered its zones under this name;
* ``intel-rapl-tpmi``: ``drivers/powercap/intel_rapl_tpmi.c`` since it got its own name (Xeon 6 /
  Granite Rapids and later): ``package-N``, its ``dram`` and a top-level ``psys``/``psys-N``;
* ``intel-rapl-mmio``: ``drivers/thermal/intel/int340x_thermal/processor_thermal_rapl.c`` (client
  CPUs): a second door to the same ``package-N`` (and ``dram``) counters.

A zone is a directory named ``<parent>:<id>`` with the id in **hexadecimal**
(``powercap_sys.c``: ``dev_set_name(..., "%s:%x", ...)``, so the eleventh top-level zone is
``intel-rapl:a``), holding ``name``, ``energy_uj`` (mode 0400 since 5.10) and
``max_energy_range_uj``. On a real system ``/sys/class/powercap`` holds symlinks to every zone
(flat) *and* to the control type directory, inside which zones nest
(``intel-rapl/intel-rapl:0/intel-rapl:0:0``); both are walked and each zone is taken once (by its
directory name, which is unique system-wide).

Channels::

    package-N          -> cpu<N>              kind cpu
    package-N-die-M    -> cpu<N>-die<M>       kind cpu (part_of cpu<N> if a plain package-N exists)
    dram (under pkg)   -> dram<N>             kind dram
    core / uncore      -> cpu<N>-core / -uncore, kind cpu, part_of cpu<N> (never summed)
    psys or psys-N     -> psys                kind psys (reported beside, never in the total)

Platform (psys). Since Linux 5.10 (commit f1e8d7560d30, "enumerate Psys RAPL domain together
with package RAPL domain") the psys domain is registered with the package whose MSR reads it
(the "master" package; the others read 0 and register none), as a top-level zone named
``psys`` for package 0 and ``psys-N`` when the master is package N > 0 (``rapl_init_domains``;
e.g. Sapphire Rapids boards whose master is socket 1). It is the whole platform's energy, not a
socket's. So a lone platform zone is channel ``psys`` whatever its N (N is kept in
``meta["package"]``). Should a control type ever show several (``intel-rapl-tpmi``: whether its
SYSTEM domain is per socket is not documented), each keeps its own channel (``psys``,
``psys1``, ...) and none is claimed to be disjoint from the others: RAPL psys channels never
set ``meta["psys_scope"]``.

One domain, one door. The same counter can be reached through two control types (MSR and MMIO
on client CPUs: ``processor_thermal_rapl.c`` registers package 0's PACKAGE and DRAM domains,
each only if its counter reads non-zero; MSR and TPMI never coexist in mainline, but the code
does not rely on it). Control types are taken in :data:`CONTROL_TYPES` order, and a zone is
dropped as a duplicate only if a zone of another control type already serves the same domain:
a package or die zone of socket N against the package or die zones of socket N (so MSR dies
and a package zone of the same socket are never both counted), a sub-zone against the
sub-zone of that name under socket N, psys and anything else by channel id. A domain only one
door has (an MMIO ``dram`` beside MSR ``package``/``core``/``uncore``) is read through it, and
a denied zone is read through its copy. The reason names the zones really duplicated.

Wrap-around. ``intel_rapl_common.c`` reads a 32-bit counter (``ENERGY_STATUS_MASK``
``GENMASK(31, 0)``) and scales it with the domain's energy unit ``E`` in nanojoules
(``rd->energy_unit = (ENERGY_UNIT_SCALE * MICROJOULE_PER_JOULE) >> ESU``, integer, e.g. 61035 for
ESU 14, 15258 on AMD (ESU 16); server DRAM 15300; Sapphire Rapids psys 10**9):
``energy_uj = raw * E // 1000`` and ``max_energy_range_uj = (2**32 - 1) * E // 1000``. So after
``max_energy_range_uj`` the counter steps to 0 over one more unit: the modulus in microjoules is
``2**32 * E / 1000``, i.e. ``max_energy_range_uj + E/1000`` (61 uJ more than ``max + 1`` on
Intel, 1 J more for a 1 J psys unit). :func:`wrap_modulus_uj` recovers ``E`` exactly from
``max_energy_range_uj`` (one integer fits) and uses ``round(2**32 * E / 1000)``: at most 0.5 uJ
off per wrap. A range no kernel produces (test trees with tiny ranges) falls back to
``max_energy_range_uj + 1``. A wrap is only seen if the counter is read at least once per wrap
period; :meth:`RaplProbe.check_interval` warns about intervals that are too long and the probe
warns when two reads were further apart than that.

Permissions. Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694, "Platypus");
unreadable zones become :class:`Unavailable` entries with a hint (see ``docs/permissions.md``).

Nothing here touches hardware at import time; all work happens in :func:`discover`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger, LazyPattern
from ..errors import ProbeError
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable
from .counter import CumulativeCounter
from .presence import rapl_missing
from .proc import CPUINFO, cpu_models_by_socket, read_cpuinfo

__all__ = [
    "CONTROL_TYPES",
    "COUNTER_BITS",
    "DEFAULT_MAX_POWER_W",
    "PERMISSION_HINT",
    "RaplProbe",
    "Zone",
    "discover",
    "scan_zones",
    "wrap_modulus_uj",
]

log = LazyLogger("energymeter")

SOURCE = "rapl"
#: In order of preference: the first one that serves a package serves it (see the module doc).
CONTROL_TYPES = ("intel-rapl", "intel-rapl-tpmi", "intel-rapl-mmio")
#: Width of every RAPL energy status register (intel_rapl_common.c ENERGY_STATUS_MASK).
COUNTER_BITS = 32
#: intel_rapl_common.c ENERGY_UNIT_SCALE: energy_uj = raw * energy_unit // 1000.
_ENERGY_UNIT_SCALE = 1000
# Assumed maximum power of a zone without a ``constraint_*_max_power_uw`` (for wrap warnings).
DEFAULT_MAX_POWER_W = 500.0
# RAPL counters update about every 976 us.
RESOLUTION_S = 0.001
_READ_BYTES = 64
# powercap_sys.c names zones "%s:%x": ids are hexadecimal (intel-rapl:a is the 11th zone).
_ZONE_RE = LazyPattern(r"^(intel-rapl(?:-mmio|-tpmi)?)((?::[0-9a-f]+)+)$")
_PSYS_RE = LazyPattern(r"^psys(?:-(\d+))?$")
_PACKAGE_RE = LazyPattern(r"^package-(\d+)(?:-die-(\d+))?$")
_SAFE_NAME_RE = LazyPattern(r"[^a-z0-9]+")

PERMISSION_REASON = (
    "RAPL energy counters are root-only since Linux 5.10 (CVE-2020-8694)"
)
PERMISSION_HINT = (
    "see docs/permissions.md: e.g. `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` "
    "or a udev rule"
)

#: ``opener(path, flags) -> fd``; ``os.open`` by default, injectable for tests.
Opener = Callable[[str, int], int]


@dataclass(frozen=True)
class Zone:
    """One powercap zone as found on disk (readability not yet checked)."""

    path: Path  # the zone directory, as first reached from the root
    control: str  # "intel-rapl", "intel-rapl-tpmi" or "intel-rapl-mmio"
    address: tuple[int, ...]  # (0,) for intel-rapl:0, (0, 2) for intel-rapl:0:2
    name: str  # contents of ``name``: package-0, dram, core, psys...
    max_energy_range_uj: int
    max_power_w: float | None  # from constraint_*_max_power_uw, None if absent

    @property
    def dirname(self) -> str:
        return self.control + "".join(f":{i:x}" for i in self.address)

    @property
    def energy_path(self) -> Path:
        return self.path / "energy_uj"

    @property
    def parent_dirname(self) -> str | None:
        if len(self.address) < 2:
            return None
        return self.control + "".join(f":{i:x}" for i in self.address[:-1])


def wrap_modulus_uj(max_energy_range_uj: int) -> tuple[int, int | None]:
    """``(modulus, energy_unit_nj)`` of a zone: how many microjoules ``energy_uj`` steps back by
    when it wraps, and the kernel's energy unit it was derived from (None if none fits).

    The kernel gives ``max_energy_range_uj = (2**32 - 1) * E // 1000`` for an integer unit ``E``
    in nJ (intel_rapl_common.c ``get_max_energy_counter`` / ``rapl_unit_xlate``); exactly one
    ``E`` gives a kernel's value, and the counter's true period is ``2**32 * E / 1000`` uJ.
    A range no integer unit gives (test trees) wraps at ``max_energy_range_uj + 1``."""
    top = (1 << COUNTER_BITS) - 1
    unit_nj = -(-max_energy_range_uj * _ENERGY_UNIT_SCALE // top)  # ceil
    if unit_nj >= 1 and top * unit_nj // _ENERGY_UNIT_SCALE == max_energy_range_uj:
        modulus = ((top + 1) * unit_nj * 2 + _ENERGY_UNIT_SCALE) // (2 * _ENERGY_UNIT_SCALE)
        return max(modulus, max_energy_range_uj + 1), unit_nj
    return max_energy_range_uj + 1, None


# --------------------------------------------------------------------------------------------
# Scanning the tree
# --------------------------------------------------------------------------------------------


def _read_small(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read(4096).strip()


def _read_max_power_w(zone_dir: Path) -> float | None:
    """Largest ``constraint_<i>_max_power_uw`` of the zone (long and short term), in W."""
    best_uw = 0
    for i in range(3):
        path = zone_dir / f"constraint_{i}_max_power_uw"
        try:
            value = int(_read_small(path))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.debug("rapl: ignoring %s: %r", path, exc)
            continue
        best_uw = max(best_uw, value)
    return best_uw / 1e6 if best_uw > 0 else None


def _walk(root: Path) -> Iterable[tuple[Path, str, tuple[int, ...]]]:
    """Yield ``(zone_dir, control, address)`` for every RAPL zone reachable from ``root``."""
    seen: set[str] = set()
    stack: list[Path] = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError as exc:
            log.debug("rapl: cannot list %s: %r", directory, exc)
            continue
        for entry in entries:
            match = _ZONE_RE.match(entry.name)
            try:
                is_dir = entry.is_dir()  # follows symlinks, as sysfs needs
            except OSError:
                continue
            if not is_dir:
                continue
            if match is None:
                # Control type directory (``intel-rapl``) holding nested zones; only at the root.
                if directory == root and entry.name in CONTROL_TYPES:
                    stack.append(Path(entry.path))
                continue
            if entry.name in seen:
                continue
            seen.add(entry.name)
            address = tuple(int(part, 16) for part in match.group(2)[1:].split(":"))
            yield Path(entry.path), match.group(1), address
            stack.append(Path(entry.path))  # sub-zones nest inside


def scan_zones(root: Path) -> tuple[list[Zone], list[Unavailable]]:
    """Every RAPL zone under ``root`` (sorted: MSR before MMIO, then by address), plus an
    :class:`Unavailable` for each zone whose ``name``/``max_energy_range_uj`` cannot be read."""
    zones: list[Zone] = []
    broken: list[Unavailable] = []
    for zone_dir, control, address in _walk(root):
        try:
            name = _read_small(zone_dir / "name")
            max_range_uj = int(_read_small(zone_dir / "max_energy_range_uj"))
        except (OSError, ValueError) as exc:
            broken.append(Unavailable(
                SOURCE,
                f"cannot read zone {zone_dir}: {type(exc).__name__}: {exc}",
                "the powercap tree looks incomplete; check `ls -l` of that directory",
            ))
            continue
        if max_range_uj <= 0:
            broken.append(Unavailable(
                SOURCE, f"zone {zone_dir} has max_energy_range_uj={max_range_uj}",
                "a counter without a range cannot be unwrapped; please report this zone",
            ))
            continue
        zones.append(Zone(zone_dir, control, address, name, max_range_uj,
                          _read_max_power_w(zone_dir)))
    zones.sort(key=lambda z: (CONTROL_TYPES.index(z.control), z.address))
    return zones, broken


#: Where each control type comes from, for messages (module names as modprobe knows them).
_DRIVERS = {
    "intel-rapl": "intel_rapl_msr (Intel and AMD/Hygon MSRs)",
    "intel-rapl-tpmi": "intel_rapl_tpmi (Xeon 6 / Granite Rapids and later, Linux >= 6.5)",
    "intel-rapl-mmio": "processor_thermal_device_pci (client Intel CPUs, the MMIO copy)",
}


def control_types_found(root: Path, zones: list[Zone]) -> dict[str, int]:
    """Zones found per RAPL control type (0: absent), plus any other powercap control type
    under ``root`` (``dtpm``, ``arm-scmi``...) with -1: present, not RAPL, not read."""
    found = {control: 0 for control in CONTROL_TYPES}
    for zone in zones:
        found[zone.control] += 1
    try:
        names = sorted(e.name for e in os.scandir(root))
    except OSError:
        names = []
    for name in names:
        if ":" not in name and name not in found and not name.startswith("."):
            found[name] = -1
    return found


def _found_text(found: dict[str, int]) -> str:
    parts = []
    for control, n in found.items():
        if n > 0:
            parts.append(f"{control}: {n} zone{'s' if n != 1 else ''}")
        elif n == 0:
            parts.append(f"{control}: absent (driver {_DRIVERS[control]})")
        else:
            parts.append(f"{control}: not a RAPL control type, not read")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Zones -> channels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    zone: Zone
    id: str
    kind: str
    part_of: str | None
    socket: int | None
    meta: tuple[tuple[str, Any], ...] = ()  # extra channel meta (psys: its package N)


def _plan_channels(zones: list[Zone]) -> tuple[list[_Plan], list[tuple[Zone, str]]]:
    """Map zones to channel ids. Returns the plans (MSR zones first, then MMIO ones; ids may
    repeat across control types, deduplication happens after opening) and ignored zones."""
    plans: list[_Plan] = []
    ignored: list[tuple[Zone, str]] = []
    by_dirname: dict[str, _Plan] = {}
    for control in CONTROL_TYPES:
        group = [z for z in zones if z.control == control]
        plans += _ControlPlanner(group, by_dirname, ignored).plan()
    return plans, ignored


class _ControlPlanner:
    """Plans the zones of one control type, top-level zones before their sub-zones. The steps
    share the ids this control type has taken (ids are unique within it), its plain
    ``package-N`` sockets and psys count (which name its dies and psys), the plan of each zone
    by directory name (a sub-zone's parent) and the list of ignored zones."""

    def __init__(self, group: list[Zone], by_dirname: dict[str, _Plan],
                 ignored: list[tuple[Zone, str]]) -> None:
        self.group = group
        self.by_dirname = by_dirname
        self.ignored = ignored
        self.plain_packages = {
            int(m.group(1)) for z in group if len(z.address) == 1
            if (m := _PACKAGE_RE.match(z.name)) and m.group(2) is None
        }
        self.n_psys = sum(1 for z in group if len(z.address) == 1 and _PSYS_RE.match(z.name))
        self.taken: set[str] = set()

    def plan(self) -> list[_Plan]:
        """Every zone of the group that maps to a channel, parents first."""
        plans: list[_Plan] = []
        for zone in sorted(self.group, key=lambda z: (len(z.address), z.address)):
            plan = self._top_level(zone) if len(zone.address) == 1 else self._sub_zone(zone)
            if plan is not None:
                self.by_dirname[zone.dirname] = plan
                plans.append(plan)
        return plans

    def _unique(self, base: str, zone: Zone) -> str:
        """``base``, or ``base-1``, ``base-2``... when taken (warned: a tree no kernel makes)."""
        ident, k = base, 1
        while ident in self.taken:
            ident, k = f"{base}-{k}", k + 1
        if ident != base:
            log.warning("rapl: zone %s maps to channel %s, already taken; using %s",
                        zone.path, base, ident)
        self.taken.add(ident)
        return ident

    def _top_level(self, zone: Zone) -> _Plan | None:
        """A package or die, psys or a top-level ``dram``; any other name is ignored."""
        m = _PACKAGE_RE.match(zone.name)
        if m is not None:
            return self._package(zone, int(m.group(1)), m.group(2))
        m = _PSYS_RE.match(zone.name)
        if m is not None:
            return self._psys(zone, int(m.group(1) or 0))
        if zone.name == "dram":
            return _Plan(zone, self._unique(f"dram{zone.address[0]}", zone), "dram", None, None)
        self.ignored.append((zone, f"unknown top-level RAPL zone name {zone.name!r}"))
        return None

    def _package(self, zone: Zone, socket: int, die: str | None) -> _Plan:
        """``package-N`` -> ``cpuN``; ``package-N-die-M`` -> ``cpuN-dieM``, part of ``cpuN``
        when a plain ``package-N`` is there too."""
        if die is None:
            return _Plan(zone, self._unique(f"cpu{socket}", zone), "cpu", None, socket)
        part_of = f"cpu{socket}" if socket in self.plain_packages else None
        return _Plan(zone, self._unique(f"cpu{socket}-die{die}", zone), "cpu", part_of, socket)

    def _psys(self, zone: Zone, n: int) -> _Plan:
        """One platform-wide zone, named after its master package (module doc): "psys"
        whatever N when alone; several keep "psys"/"psys<N>", none summed."""
        ident = "psys" if self.n_psys == 1 or n == 0 else f"psys{n}"
        extra: tuple[tuple[str, Any], ...] = (("package", n),)
        if self.n_psys > 1:
            extra += (("psys_zones", self.n_psys),)
        return _Plan(zone, self._unique(ident, zone), "psys", None, None, extra)

    def _sub_zone(self, zone: Zone) -> _Plan | None:
        """A zone inside a planned one: its ``dram``, or a part (core, uncore...); ignored
        when its parent is not measured."""
        parent = self.by_dirname.get(zone.parent_dirname or "")
        if parent is None:
            self.ignored.append((zone, "parent zone not measured"))
            return None
        if zone.name == "dram":
            return self._dram_of(zone, parent)
        return self._part(zone, parent)

    def _dram_of(self, zone: Zone, parent: _Plan) -> _Plan:
        """A package's (or die's) ``dram`` -> ``dramN`` (``dramN-dieM``), part of the
        socket's own ``dramN`` when its parent is a part and that one is taken."""
        suffix = parent.id[3:] if parent.id.startswith("cpu") else f"-{parent.id}"
        part_of = None
        if parent.part_of is not None and f"dram{parent.socket}" in self.taken:
            part_of = f"dram{parent.socket}"
        return _Plan(zone, self._unique(f"dram{suffix}", zone), "dram", part_of, parent.socket)

    def _part(self, zone: Zone, parent: _Plan) -> _Plan:
        """Core, uncore and anything else inside a package: a part, never summed."""
        label = _SAFE_NAME_RE.sub("-", zone.name.lower()).strip("-") or "zone"
        return _Plan(zone, self._unique(f"{parent.id}-{label}", zone), parent.kind, parent.id,
                     parent.socket)


def _domain_key(plan: _Plan) -> tuple[Any, ...] | None:
    """What a zone measures, the same whichever control type shows it: a socket's package
    (its package or die zones), a named sub-zone of a socket (``dram``, ``core``...), or None
    (psys, a top-level ``dram``: compared by channel id)."""
    if plan.socket is None:
        return None
    if len(plan.zone.address) == 1:
        return ("package", plan.socket)
    return ("sub", plan.socket, plan.zone.name)


def _device(plan: _Plan, models: dict[int, str]) -> str:
    if plan.kind == "psys":
        return "platform (psys)"
    model = models.get(plan.socket if plan.socket is not None else -1) or models.get(-1)
    return model or f"RAPL {plan.zone.name}"


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


def _parse_uj(data: bytes, path: Path) -> int:
    try:
        value = int(data.strip() or b"?")  # int() accepts leading zeros and whitespace
    except ValueError:
        raise ValueError(f"{path} holds {data[:32]!r}, not an integer of microjoules") from None
    if value < 0:
        raise ValueError(f"{path} holds a negative energy {value}")
    return value


class _Counter:
    """An open ``energy_uj`` with its unwrapping state."""

    __slots__ = ("channel", "zone", "fd", "uj", "last_read_ns", "wrap_time_s", "max_power_w",
                 "max_power_basis", "energy_unit_nj")

    def __init__(self, channel: Channel, zone: Zone, fd: int, first_uj: int,
                 read_ns: int) -> None:
        self.channel = channel
        self.zone = zone
        self.fd = fd
        # energy_uj runs 0..max_energy_range_uj, then steps to 0 over one more energy unit.
        modulus, self.energy_unit_nj = wrap_modulus_uj(zone.max_energy_range_uj)
        self.uj = CumulativeCounter(first_uj, modulus=modulus)
        self.last_read_ns = read_ns
        if zone.max_power_w is not None:
            self.max_power_w, self.max_power_basis = zone.max_power_w, "constraint_max_power_uw"
        else:
            self.max_power_w, self.max_power_basis = DEFAULT_MAX_POWER_W, "assumed"
        self.wrap_time_s = zone.max_energy_range_uj / 1e6 / self.max_power_w


class RaplProbe(Probe):
    """Cumulative joules per RAPL zone since discovery, wrap-around undone.

    Built by :func:`discover`; keeps every ``energy_uj`` open and reads it with ``os.pread``.
    """

    source = SOURCE
    may_block = False  # pread of sysfs counters: microseconds, read inline

    def __init__(self, root: Path, counters: list[_Counter],
                 dropped: list[dict[str, Any]] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        super().__init__(tuple(c.channel for c in counters))
        self.root = root
        self._clock_ns = clock_ns
        self._counters = counters
        self._dropped = list(dropped or [])
        self._closed = False
        #: Control type -> what was found and read there (set by :func:`discover`).
        self.control_types: dict[str, str] = {}

    def _read(self) -> dict[str, float]:
        """Every zone's joules; a zone that cannot be read (or holds garbage) fails alone
        (:class:`PartialRead`): its counter keeps its last good reading, so the energy over
        the gap is counted when it reads well again (a wrap in the gap is undone as long as
        the gap is shorter than the wrap time, which is warned about otherwise)."""
        if self._closed:
            raise ProbeError(f"RAPL probe on {self.root} is closed")
        now_ns = self._clock_ns()
        out: dict[str, float] = {}
        errors: dict[str, str] | None = None
        skip = self.skip
        for c in self._counters:
            if skip and c.channel.id in skip:
                continue
            path = c.zone.energy_path
            try:
                raw_uj = _parse_uj(os.pread(c.fd, _READ_BYTES, 0), path)
                if raw_uj > c.zone.max_energy_range_uj:
                    raise ValueError(f"{path} holds {raw_uj}, above its max_energy_range_uj "
                                     f"{c.zone.max_energy_range_uj}")
            except (OSError, ValueError) as exc:
                if errors is None:
                    errors = {}
                errors[c.channel.id] = f"cannot read RAPL counter {path}: {exc}"
                continue
            gap_s = (now_ns - c.last_read_ns) / 1e9
            previous, resets = c.uj.last, c.uj.resets
            # A wrap adds at most what the zone can draw since the previous read (twice its
            # maximum power, plus a joule): a bigger "wrap" is a reset or a glitch.
            c.uj.advance(raw_uj, max_increase=(gap_s * c.max_power_w * 2 + 1.0) * 1e6)
            if c.uj.resets > resets:
                self._warn_locked(
                    f"RAPL zone {c.zone.path} ({c.zone.name}) dropped from {previous} to "
                    f"{raw_uj} uJ in {gap_s:.3g} s, which no wrap explains at up to "
                    f"{c.max_power_w:g} W (counter reset?): that interval counts 0 J",
                    ("rapl reset", c.channel.id))
            elif gap_s > c.wrap_time_s:
                self._warn_locked(
                    f"RAPL zone {c.zone.path} ({c.zone.name}) went unread for longer than its "
                    f"wrap time at {c.max_power_w:g} W ({c.wrap_time_s:.3g} s): a counter "
                    "wrap may have been missed and its energy undercounted",
                    ("rapl unread", c.channel.id))
            c.last_read_ns = now_ns
            out[c.channel.id] = c.uj.total / 1e6
        if errors is not None:
            raise PartialRead(out, errors)
        return out

    def _first_run_began(self) -> None:
        """Resynchronise every counter: what happened while no run read it (a pause longer
        than a wrap, a reset) belongs to no run and is neither counted nor warned about."""
        with self._lock:
            if self._closed:
                return
            now_ns = self._clock_ns()
            failed = []
            for c in self._counters:  # every zone that reads, whatever the others do
                path = c.zone.energy_path
                try:
                    c.uj.last = _parse_uj(os.pread(c.fd, _READ_BYTES, 0), path)
                except (OSError, ValueError) as exc:
                    failed.append(f"cannot read RAPL counter {path}: {exc}")
                    continue
                c.last_read_ns = now_ns
            if failed:
                raise ProbeError("; ".join(failed))

    def check_interval(self, interval_s: float) -> list[str]:
        """One warning per zone for which ``interval_s`` exceeds half its wrap time at maximum
        power (``max_energy_range_uj`` / max power; the maximum comes from the zone's
        ``constraint_*_max_power_uw`` or else :data:`DEFAULT_MAX_POWER_W`)."""
        warnings = []
        for c in self._counters:
            if interval_s > c.wrap_time_s / 2:
                basis = ("its constraint_*_max_power_uw" if c.max_power_basis != "assumed"
                         else "an assumed maximum")
                warnings.append(
                    f"RAPL zone {c.zone.path} ({c.zone.name}, channel {c.channel.id}) wraps every "
                    f"{c.wrap_time_s:.3g} s at {c.max_power_w:g} W ({basis}; "
                    f"max_energy_range_uj={c.zone.max_energy_range_uj}); sampling every "
                    f"{interval_s:g} s may miss wraps: use interval_s <= {c.wrap_time_s / 2:.3g}"
                )
        return warnings

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["root"] = str(self.root)
        info["zones"] = [
            {
                "path": str(c.zone.path),
                "name": c.zone.name,
                "control": c.zone.control,
                "channel": c.channel.id,
                "max_energy_range_uj": c.zone.max_energy_range_uj,
                "wrap_modulus_uj": c.uj.modulus,
                "energy_unit_nj": c.energy_unit_nj,
                "max_power_w": c.max_power_w,
                "max_power_basis": c.max_power_basis,
                "wrap_time_s": c.wrap_time_s,
                "wraps": c.uj.wraps,
            }
            for c in self._counters
        ]
        info["dropped"] = list(self._dropped)
        info["control_types"] = dict(self.control_types)
        return info

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for c in self._counters:
                try:
                    os.close(c.fd)
                except OSError as exc:
                    log.debug("rapl: closing %s: %r", c.zone.energy_path, exc)


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _control_summary(found: dict[str, int], counters: list[_Counter],
                     dropped: list[dict[str, Any]]) -> dict[str, str]:
    """One line per control type: the zones it has, which are read as which channel, and why
    the others are not (``describe()["control_types"]``, shown by ``energymeter probes``)."""
    out: dict[str, str] = {}
    for control, n in found.items():
        if n < 0:
            out[control] = "not a RAPL control type, not read"
            continue
        if n == 0:
            out[control] = f"absent (driver {_DRIVERS[control]})"
            continue
        read = [f"{c.zone.dirname} {c.zone.name} -> {c.channel.id}" for c in counters
                if c.zone.control == control]
        skipped = [f"{Path(d['path']).name} {d['name']}: {d['reason']}" for d in dropped
                   if d.get("control") == control]
        text = f"{n} zone{'s' if n != 1 else ''}"
        text += f"; read: {', '.join(read)}" if read else "; none read"
        if skipped:
            text += f"; not read: {'; '.join(skipped)}"
        unread = n - len(read) - len(skipped)
        if unread > 0:
            text += f"; {unread} unreadable (see unavailable)"
        out[control] = text
    return out


def _open_counter(plan: _Plan, opener: Opener, device: str, read_ns: int) -> _Counter:
    """Open and take the first reading; raises OSError (PermissionError...) or ValueError."""
    path = plan.zone.energy_path
    fd = opener(str(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        first_uj = _parse_uj(os.pread(fd, _READ_BYTES, 0), path)
    except BaseException:
        os.close(fd)
        raise
    channel = Channel(
        id=plan.id,
        kind=plan.kind,
        device=device,
        source=SOURCE,
        method="counter",
        part_of=plan.part_of,
        resolution_s=RESOLUTION_S,
        meta={
            "zone": plan.zone.name,
            "path": str(plan.zone.path),
            "control": plan.zone.control,
            "max_energy_range_uj": plan.zone.max_energy_range_uj,
            **dict(plan.meta),
        },
    )
    return _Counter(channel, plan.zone, fd, first_uj, read_ns)


#: What to do when no RAPL zone is there at all.
_NO_ZONES_HINT = (
    "load the RAPL driver (`sudo modprobe intel_rapl_msr`; intel_rapl_tpmi on Xeon 6; "
    "processor_thermal_device_pci for the MMIO copy); virtual "
    "machines and non-x86 CPUs usually expose no RAPL; container runtimes hide it by "
    "default (bind-mount /sys/devices/virtual/powercap read-only and set "
    "ENERGYMETER_POWERCAP_ROOT to it); see docs/permissions.md"
)


def discover(
    ctx: DiscoveryContext,
    *,
    opener: Opener | None = None,
    cpuinfo_path: Path | None = None,
    clock_ns: Callable[[], int] = time.monotonic_ns,
) -> list[Probe | Unavailable]:
    """Open every readable RAPL zone under ``ctx.powercap_root`` as one :class:`RaplProbe`.

    ``opener(path, flags) -> fd`` opens the ``energy_uj`` files (default :func:`os.open`; tests
    inject one that raises ``PermissionError``, since root ignores file modes).
    ``cpuinfo_path`` is where CPU model names are read from (default ``/proc/cpuinfo``).
    ``clock_ns`` is the monotonic clock the wrap checks use (tests give a simulated one).
    Unreadable zones are returned as :class:`Unavailable` entries beside the probe.
    """
    root = Path(ctx.powercap_root)
    opener = os.open if opener is None else opener
    missing = rapl_missing(ctx)
    if missing is not None:
        return [missing]
    zones, broken = scan_zones(root)
    if not zones:
        return [*broken, _no_zones(root, zones)]
    plans, ignored = _plan_channels(zones)
    models = cpu_models_by_socket(read_cpuinfo(cpuinfo_path or CPUINFO))
    doors = _Doors(_ignored_rows(ignored))
    doors.open_all(plans, opener, models, clock_ns)
    return [*_probe_of(root, zones, doors, clock_ns), *doors.unavailable(), *broken]


def _no_zones(root: Path, zones: list[Zone]) -> Unavailable:
    """No RAPL zone under ``root``: which control types are there and which drivers are not."""
    found = control_types_found(root, zones)
    return Unavailable(SOURCE, f"no RAPL zones under {root} ({_found_text(found)})",
                       _NO_ZONES_HINT)


def _ignored_rows(ignored: list[tuple[Zone, str]]) -> list[dict[str, Any]]:
    """The zones :func:`_plan_channels` maps to no channel, as ``describe()["dropped"]`` rows."""
    return [{"path": str(z.path), "name": z.name, "control": z.control, "reason": why}
            for z, why in ignored]


class _Doors:
    """Opens the planned zones in order (per control type in :data:`CONTROL_TYPES` order,
    top-level zones before sub-zones), one door per domain (module doc). The steps share the
    counters opened so far, by channel id and by domain (a later door to either is a
    duplicate), and what could not be read: denied zones and other failures, by channel id
    (reported only if no other door serves that channel), and the dropped zones."""

    def __init__(self, dropped: list[dict[str, Any]]) -> None:
        self.dropped = dropped
        self.counters: list[_Counter] = []
        self.served: dict[str, _Counter] = {}  # channel id -> its counter
        self.by_domain: dict[tuple[Any, ...], list[_Counter]] = {}  # _domain_key -> counters
        self.denied: dict[str, Path] = {}  # channel id -> energy_uj path
        self.failed: dict[str, Unavailable] = {}

    def open_all(self, plans: list[_Plan], opener: Opener, models: dict[int, str],
                 clock_ns: Callable[[], int]) -> None:
        """Open each plan's zone unless another door already serves its domain."""
        for plan in plans:
            key = _domain_key(plan)
            dups = self._duplicates(plan, key)
            if dups:
                self._drop(plan, dups)
                continue
            counter = self._open(plan, opener, models, clock_ns)
            if counter is not None:
                self._serve(counter, key)

    def _duplicates(self, plan: _Plan, key: tuple[Any, ...] | None) -> list[_Counter]:
        """The counters of other control types serving ``plan``'s domain; for a zone without
        a domain (psys...), the counter that already has its channel id."""
        dups = [c for c in self.by_domain.get(key, ()) if c.zone.control != plan.zone.control] \
            if key is not None else []
        if not dups and plan.id in self.served:
            dups = [self.served[plan.id]]  # psys, or a channel id another door already has
        return dups

    def _drop(self, plan: _Plan, dups: list[_Counter]) -> None:
        """Leave ``plan``'s zone unread, naming the zones it duplicates."""
        what = " and ".join(f"{c.zone.dirname} {c.zone.name} ({c.zone.control}, channel "
                            f"{c.channel.id})" for c in dups)
        self.dropped.append({"path": str(plan.zone.path), "name": plan.zone.name,
                             "control": plan.zone.control, "reason": f"duplicate of {what}"})
        log.debug("rapl: dropping %s, duplicate of %s", plan.zone.path, what)

    def _open(self, plan: _Plan, opener: Opener, models: dict[int, str],
              clock_ns: Callable[[], int]) -> _Counter | None:
        """``plan``'s counter, open and read once; None when denied or unreadable (kept per
        channel id, the first reason each)."""
        try:
            return _open_counter(plan, opener, _device(plan, models), clock_ns())
        except PermissionError:
            self.denied.setdefault(plan.id, plan.zone.energy_path)
        except (OSError, ValueError) as exc:
            self.failed.setdefault(plan.id, Unavailable(
                SOURCE,
                f"cannot read {plan.zone.energy_path}: {type(exc).__name__}: {exc}",
                "the zone is listed but its counter cannot be read; see docs/permissions.md",
            ))
        return None

    def _serve(self, counter: _Counter, key: tuple[Any, ...] | None) -> None:
        """Read ``counter``: its channel id and domain are served now."""
        self.served[counter.channel.id] = counter
        self.counters.append(counter)
        if key is not None:
            self.by_domain.setdefault(key, []).append(counter)

    def unavailable(self) -> list[Unavailable]:
        """What could not be read and no other door serves (MSR denied, MMIO copy readable
        is not worth reporting): one entry for every denied zone (the first three named),
        then each other failure."""
        results: list[Unavailable] = []
        denied_paths = [str(p) for ident, p in self.denied.items() if ident not in self.served]
        if denied_paths:
            shown = ", ".join(denied_paths[:3])
            if len(denied_paths) > 3:
                shown += f" (and {len(denied_paths) - 3} more)"
            results.append(Unavailable(SOURCE, f"PermissionError on {shown}: "
                                               f"{PERMISSION_REASON}", PERMISSION_HINT))
        results.extend(u for ident, u in self.failed.items() if ident not in self.served)
        return results


def _probe_of(root: Path, zones: list[Zone], doors: _Doors,
              clock_ns: Callable[[], int]) -> list[RaplProbe]:
    """The probe over the opened counters, with its per-control-type summary; [] if none."""
    if not doors.counters:
        return []
    probe = RaplProbe(root, doors.counters, doors.dropped, clock_ns)
    probe.control_types = _control_summary(control_types_found(root, zones), doors.counters,
                                           doors.dropped)
    return [probe]
