"""Linux hwmon energy and power sensors: ACPI power meters (and so NVIDIA Grace and Grace Hopper
module sensors), AMD ``amd_energy``, and any other hwmon energy/power sensor (shown, not summed).

Follows the kernel's hwmon sysfs ABI (Documentation/hwmon/sysfs-interface.rst): under
``<sysfs>/class/hwmon/hwmon*/`` a device has a ``name``, and per sensor ``energyN_input``
(microjoules, a counter: method ``counter``) or ``powerN_input`` / ``powerN_average``
(microwatts: integrated here with the trapezoid rule between this probe's reads, method
``integrated``), with an optional ``energyN_label`` / ``powerN_label``.

Where the attributes are (sysfs-interface.rst: libsensors reads them in the hwmon class
directory *or* in the physical device directory, ``hwmonN/device``), both are searched:

* ``acpi_power_meter`` (drivers/hwmon/acpi_power_meter.c) registered its hwmon device with the
  deprecated ``hwmon_device_register(&acpi_dev->dev)`` and created every attribute (``name``,
  ``power1_average``, ``power1_oem_info``, ``power1_average_interval``...) on the ACPI device
  (``hwmonN/device`` -> ``.../ACPI000D:NN``), leaving ``hwmonN/`` without a ``name``: every
  kernel distributions ship today (RHEL 9's 5.14, Ubuntu 22.04's 5.15, Debian 12's 6.1, 6.6,
  Ubuntu 24.04's 6.8, 6.12). Its 2025 conversion to ``hwmon_device_register_with_info`` puts
  them all in ``hwmonN/`` (``name`` ``power_meter``), and the 2026 conversion to a platform
  driver keeps that, under the platform device. All three are read.
* ``power1_average`` of an ACPI meter is _PMM (mW) x 1000, re-evaluated at most once per the
  meter's sampling time and itself an average over ``power1_average_interval`` ms: channel
  ``resolution_s`` is that interval. ``_PMM``'s "unknown" (0xFFFFFFFF) reads as
  4294967295000 on kernels before the "4.29 MW" fix and as -ENODATA after it: both are a
  missing sample, never power.

What is summed (never twice):

* ACPI power meters measure the whole platform unless told otherwise: kind ``psys``, beside
  the total, never in it;
* NVIDIA Grace names its meters in ``power1_oem_info`` ("Module Power Socket N", "Grace Power
  Socket N", "CPU Power Socket N", "SysIO Power Socket N"). "Module" (Grace Hopper: the whole
  module, GPU and HBM included, which NVML measures too) is ``psys``. "Grace" (the socket) is
  ``cpu`` and summed; "CPU" (the CPU rail) and "SysIO" (the SoC rail) are parts of that
  socket (``part_of`` it: shown, never summed). Without a "Grace" meter for their socket the
  rails are summed themselves;
* AMD ``amd_energy`` (out of tree: github.com/amd/amd_energy; mainline 5.8-5.12):
  ``Esocket<N>`` counters are kind ``cpu`` and the same energy RAPL reports for the package
  (``meta.overlaps = "rapl"``: left out at discovery when RAPL measures the CPU);
  ``Ecore<NNN>`` counters are sub-zones (``part_of`` a socket), shown, never summed. Its
  ``energyN_input`` wraps: at 2^32 RAPL units (65.536 kJ at the usual 2^-16 J unit) where
  the driver reads a 64-bit RAPL MSR masked to 32 bits without accumulating, and at
  2^(64 - unit bits) uJ where it accumulates (its microjoule product overflows 64 bits).
  A drop that fits one of those moduli and the time since the last read is counted as a
  wrap; any other drop is a reset;
* ``ina3221`` devices are the Jetson rails, read by :mod:`.jetson`, and skipped here;
* any other driver's energy or power sensor is shown as ``psys`` (never summed): a label
  alone does not say what else measures the same energy.

Nothing is read at import; unreadable files become :class:`Unavailable` with a reason and hint.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._lazy import LazyPattern
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable
from .counter import CumulativeCounter
from .integrate import TrapezoidIntegrator

SOURCE = "hwmon"
#: hwmon devices read by another probe.
SKIPPED_NAMES = ("ina3221",)
#: ``name`` of acpi_power_meter's hwmon device (ACPI_POWER_METER_NAME in the driver).
ACPI_POWER_METER = "power_meter"
AMD_ENERGY = "amd_energy"
#: _PMM's "unknown" (0xFFFFFFFF mW) as kernels before the "4.29 MW" fix print it (x 1000).
ACPI_UNKNOWN_POWER_UW = 0xFFFFFFFF * 1000
#: More than any one hwmon energy channel draws (an EPYC socket is <= 500 W): a counter drop
#: is a wrap only if the energy across it is below this power over the time since last read.
MAX_CHANNEL_W = 2000.0
#: amd_energy: the RAPL energy-status-unit field is bits 12:8 of MSR_RAPL_POWER_UNIT.
AMD_ESU_BITS = range(32)
_SENSOR = LazyPattern(r"^(energy|power)(\d+)_(input|average)$")
_GRACE = LazyPattern(r"^(module|grace|cpu|sysio) power socket (\d+)$", re.IGNORECASE)
_SLUG = LazyPattern(r"[^a-z0-9]+")
_NAME_SLUG = LazyPattern(r"[^a-z0-9_]+")
PERMISSION_HINT = ("hwmon sensor files may be root-only: `sudo chmod o+r` them, a udev rule, "
                   "or run as a user allowed to read them (docs/permissions.md)")
AMD_ENERGY_HINT = ("amd_energy makes its energyN_input files mode 0440 (root only): run as "
                   "root, or add a udev rule that makes them group-readable "
                   "(docs/permissions.md)")


def _amd_energy_moduli() -> tuple[int, ...]:
    """Every value (uJ) at which an amd_energy ``energyN_input`` can wrap, ascending:
    2^32 units x 1e6 / 2^ESU (64-bit MSR masked to 32 bits, no accumulation) and
    2^64 / 2^ESU (accumulated; ``input * 1000000UL`` overflows u64), for every ESU."""
    out = {(1 << 32) * 1_000_000 >> esu for esu in AMD_ESU_BITS}
    out |= {1 << (64 - esu) for esu in AMD_ESU_BITS}
    return tuple(sorted(out))


class SysfsIO:
    """How attribute files are opened and read: the kernel's answers, errors included, reach
    the probe through here (tests pass one that answers as a real attribute would)."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def pread(self, fd: int) -> bytes:
        return os.pread(fd, 64, 0)

    def close(self, fd: int) -> None:
        os.close(fd)

    def text(self, path: Path) -> str:
        """A text attribute (``name``, a label), "" when absent or unreadable."""
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return ""


class NoData(Exception):
    """A power attribute that has no value now (-ENODATA, or ACPI's unknown power)."""


def _parse(raw: bytes, what: str) -> int:
    """The integer an attribute holds; ValueError for garbage or a negative reading."""
    text = raw.strip()
    value = int(text)  # ValueError on garbage or an empty read
    if value < 0:
        raise ValueError(f"negative {what} reading {value}")
    if what == "power" and value == ACPI_UNKNOWN_POWER_UW:
        raise NoData("ACPI _PMM returned unknown power (0xFFFFFFFF)")
    return value


class AmdEnergyCounter:
    """An amd_energy ``energyN_input`` (uJ) made monotone: a drop is a wrap when the smallest
    modulus above every value seen (:func:`_amd_energy_moduli`) makes it an increase of at
    most ``max_increase``; else a reset (nothing counted for that interval)."""

    MODULI = _amd_energy_moduli()

    def __init__(self, first: int) -> None:
        self.counter = CumulativeCounter(first)
        self.max_seen = first

    @property
    def total(self) -> int:
        return self.counter.total

    def advance(self, raw: int, max_increase: float | None) -> int:
        c = self.counter
        if raw < c.last:
            c.modulus = next((m for m in self.MODULI if m > self.max_seen), None)
        delta = c.advance(raw, max_increase)
        self.max_seen = max(self.max_seen, raw)
        return delta


@dataclass
class _Found:
    device: str  # the hwmon ``name``
    hw: str  # hwmonN
    path: Path  # the sensor file
    what: str  # energy | power
    index: int
    label: str
    layout: str  # "class" (hwmonN/) or "device" (hwmonN/device/)
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "psys"
    role: str | None = None  # amd: socket/core; grace: module/grace/cpu/sysio
    socket: str | None = None
    resolution_s: float = 0.0


class _Sensor:
    __slots__ = ("amd", "channel", "counter", "fd", "integrator", "last_t", "scale", "what")

    def __init__(self, channel: Channel, fd: int, what: str, amd: bool) -> None:
        self.channel = channel
        self.fd = fd
        self.what = what
        self.amd = amd
        self.scale = 1e-6  # uJ and uW
        self.counter: CumulativeCounter | AmdEnergyCounter | None = None
        self.integrator = None if what == "energy" else TrapezoidIntegrator()
        self.last_t: float | None = None


class HwmonProbe(Probe):
    """The readable hwmon energy and power sensors of this machine."""

    source = SOURCE
    may_block = False  # preads of sysfs attributes (ACPI's _PMM is evaluated inline, cached)

    def __init__(self, sensors: list[_Sensor], clock: Callable[[], float],
                 io: SysfsIO | None = None) -> None:
        super().__init__(tuple(s.channel for s in sensors))
        self._sensors = sensors
        self._clock = clock
        self._io = io or SysfsIO()
        now = clock()
        for s in sensors:
            try:
                raw = self._raw(s)
            except (OSError, ValueError, NoData):
                raw = None  # no first value yet: the first good read starts the channel
            self._start(s, raw, now)

    def _start(self, s: _Sensor, raw: int | None, now: float) -> None:
        if raw is None:
            return
        if s.integrator is not None:
            s.integrator.add(now, raw * s.scale)
        else:
            s.counter = AmdEnergyCounter(raw) if s.amd else CumulativeCounter(raw)
            s.last_t = now

    def _raw(self, s: _Sensor) -> int:
        try:
            data = self._io.pread(s.fd)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                raise NoData(f"{exc.strerror or 'no data'} (-ENODATA)") from None
            raise
        return _parse(data, s.what)

    def _read(self) -> dict[str, float]:
        """Every sensor's joules; one that cannot be read fails alone (:class:`PartialRead`):
        a counter keeps its last good reading (the energy over the gap is counted when it
        reads again), a power sensor skips that sample (the trapezoid bridges the gap), as it
        does for a sensor with no data now (-ENODATA, ACPI's unknown power)."""
        out: dict[str, float] = {}
        errors: dict[str, str] | None = None
        skip = self.skip
        now = self._clock()
        for s in self._sensors:
            cid = s.channel.id
            if skip and cid in skip:
                continue
            try:
                raw = self._raw(s)
            except NoData as exc:
                self.warn(f"hwmon sensor {cid} has no data: {exc}; the gap is bridged",
                          key=("nodata", cid))
                out[cid] = self._energy(s)
                continue
            except (OSError, ValueError) as exc:
                if errors is None:
                    errors = {}
                errors[cid] = f"cannot read hwmon sensor {cid}: {exc}"
                continue
            if s.integrator is not None:
                s.integrator.add(now, raw * s.scale)
            elif s.counter is None:
                self._start(s, raw, now)
            else:
                self._advance(s, raw, now)
            out[cid] = self._energy(s)
        if errors is not None:
            raise PartialRead(out, errors)
        return out

    def _advance(self, s: _Sensor, raw: int, now: float) -> None:
        counter = s.counter
        assert counter is not None
        elapsed = max(now - (s.last_t if s.last_t is not None else now), 0.0)
        max_increase = MAX_CHANNEL_W * max(elapsed, 1e-3) / s.scale
        inner = counter.counter if isinstance(counter, AmdEnergyCounter) else counter
        before, wraps, resets = inner.last, inner.wraps, inner.resets
        counter.advance(raw, max_increase)
        s.last_t = now
        cid = s.channel.id
        if inner.resets > resets:
            self.warn(f"hwmon counter {cid} went back from {before} to {raw} uJ without a "
                      "plausible wrap: taken as a reset, the energy of that interval is not "
                      "counted", key=("reset", cid))
        elif inner.wraps > wraps:
            self.warn(f"hwmon counter {cid} wrapped at {inner.modulus} uJ: carried over",
                      key=("wrap", cid))

    @staticmethod
    def _energy(s: _Sensor) -> float:
        if s.integrator is not None:
            return s.integrator.energy_j
        return 0.0 if s.counter is None else s.counter.total * s.scale

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["sensors"] = [{"channel": s.channel.id, "path": s.channel.meta.get("path"),
                           "layout": s.channel.meta.get("layout"),
                           "label": s.channel.meta.get("label")} for s in self._sensors]
        return out

    def close(self) -> None:
        for s in self._sensors:
            if s.fd >= 0:
                self._io.close(s.fd)
                s.fd = -1


def _attr_dirs(hwmon_dir: Path, io: SysfsIO) -> tuple[str, list[tuple[Path, str]]]:
    """The device's ``name`` and the directories holding its attributes: ``hwmonN/`` when it
    has a name (every ``hwmon_device_register_with_*`` driver); else, for a driver that called
    ``hwmon_device_register(dev)`` (no name), also the physical device ``hwmonN/device``."""
    name = io.text(hwmon_dir / "name")
    dirs: list[tuple[Path, str]] = [(hwmon_dir, "class")]
    if name:
        return name, dirs
    device = hwmon_dir / "device"
    if device.is_dir():
        dirs.append((device, "device"))
        name = io.text(device / "name")
    return name, dirs


def _sensors_of(device: str, hw: str, dirs: list[tuple[Path, str]],
                io: SysfsIO) -> list[_Found]:
    files: dict[str, tuple[Path, str]] = {}
    for d, layout in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            files.setdefault(n, (d, layout))
    energies = {m.group(2) for n in files if (m := _SENSOR.match(n)) and m.group(1) == "energy"}
    found: list[_Found] = []
    for name in sorted(files):
        m = _SENSOR.match(name)
        if m is None:
            continue
        what, index, how = m.groups()
        if what == "power" and how == "average" and f"power{index}_input" in files:
            continue  # the instantaneous reading is preferred
        if what == "power" and index in energies:
            continue  # a counter beats integrating power
        d, layout = files[name]
        meta: dict[str, Any] = {}
        label = io.text(d / f"{what}{index}_label")
        if what == "power":
            for extra in ("oem_info", "model_number", "serial_number"):
                value = io.text(d / f"power{index}_{extra}")
                if value:
                    meta[extra] = value
            label = label or meta.get("oem_info", "")
        found.append(_Found(device, hw, d / name, what, int(index), label or f"{what}{index}",
                            layout, meta))
        if what == "power" and how == "average":
            interval = io.text(d / f"power{index}_average_interval")
            if interval.isdigit() and int(interval) > 0:
                found[-1].meta["average_interval_ms"] = int(interval)
                found[-1].resolution_s = int(interval) / 1000.0
    return found


def _classify(f: _Found) -> None:
    """Kind, role and socket of a sensor (see the module's docstring)."""
    if f.device == AMD_ENERGY:
        f.role = "core" if f.label.lower().startswith("ecore") else "socket"
        f.kind = "cpu"
        digits = re.findall(r"\d+", f.label)
        f.socket = digits[0] if digits and f.role == "socket" else None
        return
    m = _GRACE.match(f.label.strip())
    if m is None:
        f.kind = "psys"  # a platform meter, or a sensor we cannot place: shown, never summed
        return
    f.role, f.socket = m.group(1).lower(), m.group(2)
    f.kind = {"module": "psys", "grace": "cpu", "cpu": "cpu", "sysio": "soc"}[f.role]


def discover(ctx: DiscoveryContext, *, skip_overlapping: bool = False,
             clock: Callable[[], float] = time.monotonic,
             io: SysfsIO | None = None) -> list[Probe | Unavailable]:
    """One :class:`HwmonProbe` over the readable energy/power sensors under
    ``<ctx.sysfs_root>/class/hwmon``. ``skip_overlapping``: leave out sensors that duplicate
    another probe's channels (amd_energy sockets and cores when RAPL measures the packages)."""
    io = io or SysfsIO()
    root = Path(ctx.sysfs_root) / "class" / "hwmon"
    hint = ("machines with NVIDIA Grace, an ACPI power meter or AMD amd_energy show them "
            "there (load the driver: `modprobe acpi_power_meter`, or amd_energy from "
            "github.com/amd/amd_energy); others can ignore this")
    if not root.is_dir():
        return [Unavailable(SOURCE, f"no hwmon class directory at {root} (no sysfs, or a "
                                    "container without /sys/class/hwmon)", hint)]
    found: list[_Found] = []
    seen: list[str] = []
    for hwmon_dir in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
        device, dirs = _attr_dirs(hwmon_dir, io)
        seen.append(f"{hwmon_dir.name}={device or '(no name)'}")
        if device in SKIPPED_NAMES:
            continue
        found += _sensors_of(device or "unnamed", hwmon_dir.name, dirs, io)
    if not found:
        listing = ", ".join(seen) if seen else "no hwmon device at all"
        return [Unavailable(SOURCE, f"no hwmon energy or power sensor (energyN_input, "
                                    f"powerN_input, powerN_average) under {root}: {listing}",
                            hint)]
    for f in found:
        _classify(f)
    grace_sockets = {f.socket for f in found if f.role == "grace"}
    # Sockets first, so that cores and rails find their parent's channel id.
    found.sort(key=lambda f: (f.role in ("core", "cpu", "sysio"), f.hw, f.index))
    sensors: list[_Sensor] = []
    missing: list[Unavailable] = []
    ids: dict[tuple[str, str | None], str] = {}  # (role, socket) -> channel id
    used: set[str] = set()
    for f in found:
        if f.device == AMD_ENERGY and skip_overlapping:
            continue
        device_slug = _NAME_SLUG.sub("-", f.device.lower()).strip("-") or "unnamed"
        cid = f"hwmon-{device_slug}-{_SLUG.sub('-', f.label.lower()).strip('-')}"
        if cid in used:  # two devices of one driver (two ACPI power meters without oem_info)
            cid = f"{cid}-{f.hw}"
        part_of = None
        if f.role == "core":
            part_of = ids.get(("socket", "0")) or next(
                (v for (r, _), v in ids.items() if r == "socket"), None)
        elif f.role in ("cpu", "sysio") and f.socket in grace_sockets:
            part_of = ids.get(("grace", f.socket))
        try:
            fd = io.open(str(f.path))
        except OSError as exc:
            missing.append(_unreadable(f, exc))
            continue
        try:
            io.pread(fd)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # no data now: kept, read again later
                io.close(fd)
                missing.append(_unreadable(f, exc))
                continue
        used.add(cid)
        if f.role in ("socket", "grace"):
            ids[(f.role, f.socket)] = cid
        meta: dict[str, Any] = {"path": str(f.path), "device": f.device, "hwmon": f.hw,
                                "label": f.label, "layout": f.layout, **f.meta}
        if f.role == "socket":
            meta["overlaps"] = "rapl"
        if f.role in ("module", "grace", "cpu", "sysio"):
            meta["grace_rail"] = f.role
        channel = Channel(cid, f.kind, f"{f.device} {f.label}", SOURCE,
                          "counter" if f.what == "energy" else "integrated",
                          part_of=part_of, resolution_s=f.resolution_s, meta=meta)
        sensors.append(_Sensor(channel, fd, f.what, amd=f.device == AMD_ENERGY))
    if not sensors:
        if not missing:  # only amd_energy, left to RAPL
            return [Unavailable(SOURCE, "only amd_energy sensors here, and RAPL measures the "
                                        "same CPU packages: left to RAPL (not counted twice)",
                                "nothing to do")]
        return missing
    return [HwmonProbe(sensors, clock, io), *missing]


def _unreadable(f: _Found, exc: OSError) -> Unavailable:
    driver = "acpi_power_meter" if f.device == ACPI_POWER_METER else f.device
    where = f"{f.hw}" + (f" ({f.label})" if not f.label.startswith(f.what) else "")
    why = {errno.EACCES: "root-only", errno.EPERM: "root-only", errno.EIO: "I/O error",
           errno.ENODEV: "device gone"}.get(exc.errno or 0, type(exc).__name__)
    reason = (f"{driver} present on {where} but {f.path.name} unreadable ({why}): "
              f"{type(exc).__name__} on {f.path}: {exc.strerror or exc}")
    return Unavailable(SOURCE, reason, AMD_ENERGY_HINT if f.device == AMD_ENERGY
                       else PERMISSION_HINT)
