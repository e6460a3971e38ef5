"""Linux hwmon energy and power sensors: ACPI power meters (and so NVIDIA Grace and Grace Hopper
module sensors) and AMD ``amd_energy``. Other drivers' energy/power sensors are listed (seen, not
read: :data:`READ_DRIVERS`).

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
  The unit (ESU, bits 12:8 of MSR 0xC0010299, ``get_energy_units``) is 16 on every Zen
  part; 14-18 are accepted. A drop that fits one of those moduli and the time since the last
  read is counted as a wrap, and the modulus is then pinned for the whole device (one ESU and
  one driver mode per driver instance); any other drop is a reset. ``Ecore<i>`` reads logical
  CPU ``i`` and ``Esocket<N>`` the first online CPU of NUMA node ``N`` (``amd_energy_read``):
  a core is part of the socket of its CPU's node (flat when the topology is unreadable), and
  an ``Esocket`` whose node is in a package another ``Esocket`` already reads (NPS2/NPS4)
  is shown as part of that one, never summed twice;
* ``ina3221`` devices are the Jetson rails, read by :mod:`.jetson`, and skipped here;
* any other driver's energy or power sensor (amdgpu, nouveau, i915, PMBus PSUs...) is listed
  as seen, not read (an :class:`Unavailable` naming it, and ``describe()["not_read"]``): a
  GPU's is measured by its own probe, and reading it here can wake a runtime-suspended
  device or block in firmware; a PSU's scope is unknown.

Reads. ``power1_average`` of an ACPI meter evaluates ``_PMM`` in the read (through IPMI on
some servers: ``acpi_wait_for_acpi_ipmi``), which can take long: a probe holding one is read
on the sampler's bounded helper thread (``may_block``); amd_energy alone (MSR reads) is read
inline. A sysfs attribute is one line (``"%llu\n"``): a read that is empty or holds more than
one line is torn (a writer mid-update) and read again. A read failing with -ENODEV or
-ENOENT (the attribute was removed: ``acpi_power_meter_notify(METER_NOTIFY_CONFIG)``
re-creates the meter, in the legacy layout on the same ACPI device, after the with_info
conversion as a new ``hwmonN``) makes the probe look for the same sensor again (same driver,
parent device, label or oem_info) and reopen it; the gap is a missing sample.

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

from .._lazy import LazyLogger, LazyPattern
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable
from .counter import CumulativeCounter
from .integrate import TrapezoidIntegrator

log = LazyLogger("energymeter")

SOURCE = "hwmon"
#: hwmon devices read by another probe.
SKIPPED_NAMES = ("ina3221",)
#: The drivers whose sensors are read; any other's are listed, not read (module docstring).
READ_DRIVERS = ("power_meter", "amd_energy")
#: Seconds between two searches for a sensor that went away (-ENODEV / -ENOENT).
RESOLVE_EVERY_S = 1.0
#: Reads of one attribute in a row that may be torn before the read fails.
TORN_RETRIES = 3
#: ``name`` of acpi_power_meter's hwmon device (ACPI_POWER_METER_NAME in the driver).
ACPI_POWER_METER = "power_meter"
AMD_ENERGY = "amd_energy"
#: _PMM's "unknown" (0xFFFFFFFF mW) as kernels before the "4.29 MW" fix print it (x 1000).
ACPI_UNKNOWN_POWER_UW = 0xFFFFFFFF * 1000
#: More than any one hwmon energy channel draws (an EPYC socket is <= 500 W): a counter drop
#: is a wrap only if the energy across it is below this power over the time since last read.
MAX_CHANNEL_W = 2000.0
#: amd_energy: the RAPL energy-status-unit field is bits 12:8 of MSR 0xC0010299
#: (``AMD_ENERGY_UNIT_MASK`` 0x01F00 in amd_energy.c ``get_energy_units``); Zen parts have 16
#: (15.3 uJ). Only these are taken as possible moduli.
AMD_ESU_BITS = range(14, 19)
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
    2^64 / 2^ESU (accumulated; ``input * 1000000UL`` overflows u64), for every plausible ESU
    (:data:`AMD_ESU_BITS`)."""
    out = {(1 << 32) * 1_000_000 >> esu for esu in AMD_ESU_BITS}
    out |= {1 << (64 - esu) for esu in AMD_ESU_BITS}
    return tuple(sorted(out))


def amd_energy_max_interval_s() -> float:
    """The longest time between two reads of an amd_energy counter for which a wrap cannot be
    taken at a wrong modulus before one is pinned: a wrong (smaller) candidate is only chosen
    when more energy than the gap between two candidates passed, at :data:`MAX_CHANNEL_W`."""
    m = _amd_energy_moduli()
    return min(b - a for a, b in zip(m, m[1:], strict=False)) * 1e-6 / MAX_CHANNEL_W


class SysfsIO:
    """How attribute files are opened and read: the kernel's answers, errors included, reach
    the probe through here (tests pass one that answers as a real attribute would)."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def pread(self, fd: int) -> bytes:
        """The attribute's text: sysfs runs the driver's show() again on every read at offset
        0 of the same open file (fs/kernfs/file.c), so the fd is kept and re-read."""
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


class Torn(ValueError):
    """A read that is not one whole line: a writer was mid-update (read again)."""


def _parse(raw: bytes, what: str) -> int:
    """The integer an attribute holds; ValueError for garbage or a negative reading,
    :class:`Torn` for a read that is not exactly one line (sysfs prints ``"%llu\n"``)."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    if not line.strip() or b"\n" in line:
        raise Torn(f"torn {what} reading {raw!r}")
    text = line.strip()
    value = int(text)  # ValueError on garbage or an empty read
    if value < 0:
        raise ValueError(f"negative {what} reading {value}")
    if what == "power" and value == ACPI_UNKNOWN_POWER_UW:
        raise NoData("ACPI _PMM returned unknown power (0xFFFFFFFF)")
    return value


class AmdModulus:
    """The wrap modulus of one amd_energy device once a wrap showed it: every channel of a
    driver instance has one ESU and one mode (``data->energy_units``, ``do_not_accum``)."""

    __slots__ = ("max_seen", "value")

    def __init__(self) -> None:
        self.value: int | None = None
        self.max_seen = 0  # the highest reading of any of the device's channels


class AmdEnergyCounter:
    """An amd_energy ``energyN_input`` (uJ) made monotone: a drop is a wrap when the pinned
    modulus, or before one is pinned the smallest candidate above every value seen on the
    device (:func:`_amd_energy_moduli`), makes it an increase of at most ``max_increase``;
    that wrap pins the device's modulus. Any other drop is a reset (nothing counted)."""

    MODULI = _amd_energy_moduli()

    def __init__(self, first: int, pin: AmdModulus | None = None) -> None:
        self.counter = CumulativeCounter(first)
        self.pin = pin or AmdModulus()
        self.pin.max_seen = max(self.pin.max_seen, first)

    @property
    def total(self) -> int:
        return self.counter.total

    def advance(self, raw: int, max_increase: float | None) -> int:
        c = self.counter
        if raw < c.last:
            c.modulus = self.pin.value or next(
                (m for m in self.MODULI if m > self.pin.max_seen), None)
        wraps = c.wraps
        delta = c.advance(raw, max_increase)
        if c.wraps > wraps and self.pin.value is None:
            self.pin.value = c.modulus
        self.pin.max_seen = max(self.pin.max_seen, raw)
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
    parent: str = ""  # the real path of the device the hwmon device belongs to


class _Sensor:
    __slots__ = ("amd", "channel", "counter", "fd", "found", "integrator", "last_t", "lost_at",
                 "pin", "scale", "what")

    def __init__(self, channel: Channel, fd: int, found: _Found,
                 pin: AmdModulus | None = None) -> None:
        self.channel = channel
        self.fd = fd
        self.found = found  # what it is, to find it again after the driver re-created it
        self.what = found.what
        self.amd = found.device == AMD_ENERGY
        self.pin = pin
        self.scale = 1e-6  # uJ and uW
        self.counter: CumulativeCounter | AmdEnergyCounter | None = None
        self.integrator = None if self.what == "energy" else TrapezoidIntegrator()
        self.last_t: float | None = None
        self.lost_at: float | None = None  # when its file was last looked for, once gone


class HwmonProbe(Probe):
    """The readable hwmon energy and power sensors of this machine."""

    source = SOURCE
    may_block = True  # set per instance: False when only amd_energy (MSR reads) is open

    def __init__(self, sensors: list[_Sensor], clock: Callable[[], float],
                 io: SysfsIO | None = None, root: Path | None = None,
                 not_read: list[dict[str, Any]] | None = None) -> None:
        super().__init__(tuple(s.channel for s in sensors))
        self._sensors = sensors
        self._clock = clock
        self._io = io or SysfsIO()
        self._root = root  # <sysfs>/class/hwmon, searched again for a sensor that went away
        self.not_read = list(not_read or ())
        # acpi_power_meter evaluates _PMM (maybe through IPMI) in the read: helper thread.
        self.may_block = any(not s.amd for s in sensors)
        now = clock()
        for s in sensors:
            try:
                raw = self._raw(s)
            except (OSError, ValueError, NoData):
                raw = None  # no first value yet: the first good read starts the channel
            self._start(s, raw, now)

    def _first_run_began(self) -> None:
        """Re-base every energy counter on a fresh reading: what happened while no run used
        the probe belongs to no run, and a wrap is judged on the run's own intervals (after
        an idle gap the 2 kW bound would let amd_energy pin a wrong modulus). A counter that
        does not answer now keeps its state."""
        with self._lock:
            now = self._clock()
            for s in self._sensors:
                if s.counter is None:
                    continue
                try:
                    raw = self._raw(s)
                except (OSError, ValueError, NoData) as exc:
                    log.debug("hwmon: no fresh reading of %s at a run's start: %r",
                              s.channel.id, exc)
                    continue
                if isinstance(s.counter, AmdEnergyCounter):
                    s.counter.counter.rebase(raw)
                    s.counter.pin.max_seen = max(s.counter.pin.max_seen, raw)
                else:
                    s.counter.rebase(raw)
                s.last_t = now

    def _start(self, s: _Sensor, raw: int | None, now: float) -> None:
        if raw is None:
            return
        if s.integrator is not None:
            s.integrator.add(now, raw * s.scale)
        else:
            s.counter = AmdEnergyCounter(raw, s.pin) if s.amd else CumulativeCounter(raw)
            s.last_t = now

    def _raw(self, s: _Sensor) -> int:
        if s.fd < 0:
            raise OSError(errno.ENODEV, "sensor file gone; not found again yet")
        for _ in range(TORN_RETRIES):
            try:
                data = self._io.pread(s.fd)
            except OSError as exc:
                if exc.errno == errno.ENODATA:
                    raise NoData(f"{exc.strerror or 'no data'} (-ENODATA)") from None
                raise
            try:
                return _parse(data, s.what)
            except Torn:
                continue  # a writer mid-update: read again
        return _parse(data, s.what)  # still torn: that read fails (ValueError)

    def _reopen(self, s: _Sensor, now: float) -> bool:
        """Find ``s`` again (its driver removed and re-created it) and reopen it; whether it
        was found. Looked for at most once per :data:`RESOLVE_EVERY_S`."""
        if s.fd >= 0:
            self._io.close(s.fd)
            s.fd = -1
            s.lost_at = None
        if self._root is None or (s.lost_at is not None
                                  and now - s.lost_at < RESOLVE_EVERY_S):
            return False
        s.lost_at = now
        f = _find_again(self._root, s.found, self._io)
        if f is None:
            return False
        try:
            s.fd = self._io.open(str(f.path))
        except OSError:
            return False
        s.lost_at = None
        old = s.found.path
        s.found = f
        self.warn(f"hwmon sensor {s.channel.id} went away ({old}) and came back at {f.path} "
                  "(the driver re-created it): reopened, the gap bridged as a missing sample",
                  key=("reopened", s.channel.id))
        return True

    def _read(self) -> dict[str, float]:
        """Every sensor's joules; one that cannot be read fails alone (:class:`PartialRead`):
        a counter keeps its last good reading (the energy over the gap is counted when it
        reads again), a power sensor skips that sample (the trapezoid bridges the gap), as it
        does for a sensor with no data now (-ENODATA, ACPI's unknown power). A sensor whose
        file went away (-ENODEV, -ENOENT) is looked for again and reopened."""
        out: dict[str, float] = {}
        errors: dict[str, str] | None = None
        skip = self.skip
        now = self._clock()
        for s in self._sensors:
            cid = s.channel.id
            if skip and cid in skip:
                continue
            try:
                try:
                    raw = self._raw(s)
                except OSError as exc:
                    if exc.errno not in (errno.ENODEV, errno.ENOENT) or not self._reopen(s, now):
                        raise
                    raw = self._raw(s)
            except NoData as exc:
                self.warn(f"hwmon sensor {cid} has no data: {exc}; the gap is bridged",
                          key=("nodata", cid))
                out[cid] = self._energy(s)
                continue
            except (OSError, ValueError) as exc:
                if errors is None:
                    errors = {}
                errors[cid] = f"cannot read hwmon sensor {cid}: {_why(s, exc)}"
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

    def check_interval(self, interval_s: float) -> list[str]:
        """amd_energy: a wrap is unambiguous before its modulus is pinned only when reads are
        at most :func:`amd_energy_max_interval_s` apart."""
        limit = amd_energy_max_interval_s()
        if interval_s <= limit or not any(s.amd for s in self._sensors):
            return []
        return [f"amd_energy counters wrap at one of several values (the ESU is not in sysfs); "
                f"sampling every {interval_s:g} s may take a wrap at the wrong one: use "
                f"interval_s <= {limit:.3g}"]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["sensors"] = [{"channel": s.channel.id, "path": str(s.found.path),
                           "hwmon": s.found.hw, "layout": s.found.layout,
                           "label": s.channel.meta.get("label")} for s in self._sensors]
        out["not_read"] = list(self.not_read)
        return out

    def close(self) -> None:
        for s in self._sensors:
            if s.fd >= 0:
                self._io.close(s.fd)
                s.fd = -1


def _why(s: _Sensor, exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENODEV and s.amd:
        return f"{exc} (amd_energy answers -ENODEV for a core whose CPU is offline)"
    return str(exc)


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


def _parent(hwmon_dir: Path) -> str:
    """The real path of the device the hwmon device belongs to (its ``device`` link)."""
    try:
        return os.path.realpath(hwmon_dir / "device")
    except OSError:
        return ""


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
                            layout, meta, parent=_parent(dirs[0][0])))
        if what == "power" and how == "average":
            interval = io.text(d / f"power{index}_average_interval")
            if interval.isdigit() and int(interval) > 0:
                found[-1].meta["average_interval_ms"] = int(interval)
                found[-1].resolution_s = int(interval) / 1000.0
    return found


def _find_again(root: Path, old: _Found, io: SysfsIO) -> _Found | None:
    """``old``'s sensor as it is now under ``root`` (class/hwmon): the same driver, file name
    and label (oem_info), on the same parent device when one matches, else the only such
    sensor with a label of its own; None when it is not there (yet)."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return None
    same: list[_Found] = []
    for hwmon_dir in entries:
        device, dirs = _attr_dirs(hwmon_dir, io)
        if device != old.device:
            continue
        same += [f for f in _sensors_of(device, hwmon_dir.name, dirs, io)
                 if f.path.name == old.path.name and f.label == old.label]
    on_parent = [f for f in same if old.parent and f.parent == old.parent]
    if on_parent:
        return on_parent[0]
    if len(same) == 1 and old.label != f"{old.what}{old.index}":
        return same[0]
    return None


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


def _cpulist(text: str) -> list[int]:
    """A kernel cpulist ("0-3,8,10-11") as numbers; [] for anything else."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return []
        out += range(int(lo), int(hi or lo) + 1)
    return out


def _amd_topology(sysfs: Path, io: SysfsIO) -> tuple[dict[int, str], dict[str, str]]:
    """For amd_energy: each CPU's NUMA node (``devices/system/node/nodeN/cpulist``) and each
    node's package (``physical_package_id`` of its first CPU): amd_energy_read reads
    ``Ecore<i>`` on CPU ``i`` and ``Esocket<N>`` on the first online CPU of node ``N``."""
    cpu_node: dict[int, str] = {}
    node_pkg: dict[str, str] = {}
    nodes = sysfs / "devices" / "system" / "node"
    try:
        names = [n for n in os.listdir(nodes) if n.startswith("node") and n[4:].isdigit()]
    except OSError:
        return cpu_node, node_pkg
    for n in names:
        cpus = _cpulist(io.text(nodes / n / "cpulist"))
        for c in cpus:
            cpu_node[c] = n[4:]
        if cpus:
            pkg = io.text(sysfs / "devices" / "system" / "cpu" / f"cpu{cpus[0]}" / "topology"
                          / "physical_package_id")
            if pkg:
                node_pkg[n[4:]] = pkg
    return cpu_node, node_pkg


#: Why another driver's sensors are not read (module docstring).
_NOT_READ_WHY = {
    "amdgpu": "an AMD GPU: measured by the amdsmi probe (reading it here goes through the "
              "SMU and can wake a runtime-suspended GPU)",
    "nouveau": "an NVIDIA GPU: measured by the NVML probe",
    "i915": "an Intel GPU's energy: part of the RAPL package it sits in",
    "xe": "an Intel GPU's energy: not placed against RAPL",
}


def _not_read(found: list[_Found]) -> tuple[list[dict[str, Any]], list[Unavailable]]:
    """Sensors of drivers not in :data:`READ_DRIVERS`: one entry each for ``describe()``, one
    :class:`Unavailable` per device for ``energymeter probes``."""
    rows: list[dict[str, Any]] = []
    by_hw: dict[tuple[str, str], list[_Found]] = {}
    for f in found:
        why = _NOT_READ_WHY.get(f.device, "what it measures, and which other channel already "
                                          "counts it, is unknown (a PSU, a board sensor...)")
        rows.append({"hwmon": f.hw, "device": f.device, "file": str(f.path),
                     "label": f.label, "reason": why})
        by_hw.setdefault((f.hw, f.device), []).append(f)
    missing = []
    for (hw, device), fs in by_hw.items():
        files = ", ".join(f.path.name + (f" ({f.label})" if not f.label.startswith(f.what)
                                          else "") for f in fs)
        why = _NOT_READ_WHY.get(device, "what it measures, and which other channel already "
                                        "counts it, is unknown (a PSU, a board sensor...)")
        missing.append(Unavailable(
            SOURCE, f"{device} on {hw} has {files}: seen, not read ({why})",
            "nothing to do: energymeter reads only ACPI power meters (power_meter) and "
            "amd_energy from hwmon"))
    return rows, missing


#: What ``energymeter probes`` says when hwmon has nothing to read here.
_NO_SENSOR_HINT = ("machines with NVIDIA Grace, an ACPI power meter or AMD amd_energy show them "
                   "there (load the driver: `modprobe acpi_power_meter`, or amd_energy from "
                   "github.com/amd/amd_energy); others can ignore this")


def discover(ctx: DiscoveryContext, *, skip_overlapping: bool = False,
             clock: Callable[[], float] = time.monotonic,
             io: SysfsIO | None = None) -> list[Probe | Unavailable]:
    """One :class:`HwmonProbe` over the readable ACPI power meters and amd_energy sensors
    under ``<ctx.sysfs_root>/class/hwmon`` (others listed, not read). ``skip_overlapping``:
    leave out sensors that duplicate another probe's channels (amd_energy sockets and cores
    when RAPL measures the packages)."""
    io = io or SysfsIO()
    root = Path(ctx.sysfs_root) / "class" / "hwmon"
    if not root.is_dir():
        return [_no_class_dir(root)]
    scan = _scan(root, io)
    not_read, listed = _not_read(scan.others)
    if not scan.found:
        return [*listed] if listed else [_no_sensor(root, scan.seen)]
    opening = _Opening(_placed(scan.found), Path(ctx.sysfs_root), io)
    opening.open_all(skip_overlapping)
    return _results(opening, listed, not_read, root, clock)


def _no_class_dir(root: Path) -> Unavailable:
    """No ``class/hwmon`` at all: no sysfs, or a container that hides it."""
    return Unavailable(SOURCE, f"no hwmon class directory at {root} (no sysfs, or a "
                               "container without /sys/class/hwmon)", _NO_SENSOR_HINT)


@dataclass
class _Scan:
    """What the hwmon class directory holds: the sensors of :data:`READ_DRIVERS` (``found``),
    those of any other driver (``others``: listed, not read) and, for the message when there
    is nothing, every ``hwmonN=name`` seen (``seen``)."""

    found: list[_Found] = field(default_factory=list)
    others: list[_Found] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


def _scan(root: Path, io: SysfsIO) -> _Scan:
    """Every hwmon device under ``root`` in kernel order (hwmon2 before hwmon10), its energy
    and power sensors sorted into read and not read; :data:`SKIPPED_NAMES` (read by another
    probe) are seen but have no sensor here."""
    scan = _Scan()
    for hwmon_dir in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
        device, dirs = _attr_dirs(hwmon_dir, io)
        scan.seen.append(f"{hwmon_dir.name}={device or '(no name)'}")
        if device in SKIPPED_NAMES:
            continue
        sensors_here = _sensors_of(device or "unnamed", hwmon_dir.name, dirs, io)
        (scan.found if device in READ_DRIVERS else scan.others).extend(sensors_here)
    return scan


def _no_sensor(root: Path, seen: list[str]) -> Unavailable:
    """No energy or power sensor of any driver: the devices seen, so that the user can tell
    a missing driver from a missing sensor."""
    listing = ", ".join(seen) if seen else "no hwmon device at all"
    return Unavailable(SOURCE, f"no hwmon energy or power sensor (energyN_input, "
                               f"powerN_input, powerN_average) under {root}: {listing}",
                       _NO_SENSOR_HINT)


def _placed(found: list[_Found]) -> list[_Found]:
    """``found`` classified (:func:`_classify`) and sorted sockets first, so that cores and
    rails find their parent's channel id when they are opened."""
    for f in found:
        _classify(f)
    found.sort(key=lambda f: (f.role in ("core", "cpu", "sysio"), f.hw, f.index))
    return found


class _Opening:
    """Opens the sensors one by one (sockets first) and gives each its channel. The steps
    share what has been opened so far: the channel ids taken, each socket's and package's
    channel (the parent of the cores and rails opened after it) and each amd_energy device's
    wrap modulus; and what they found: the sensors opened and an :class:`Unavailable` per
    sensor that could not be."""

    def __init__(self, found: list[_Found], sysfs: Path, io: SysfsIO) -> None:
        self.found = found
        self.io = io
        self.grace_sockets = {f.socket for f in found if f.role == "grace"}
        self.cpu_node, self.node_pkg = (_amd_topology(sysfs, io)
                                        if any(f.device == AMD_ENERGY for f in found)
                                        else ({}, {}))
        self.sensors: list[_Sensor] = []
        self.missing: list[Unavailable] = []
        self.ids: dict[tuple[str, str | None], str] = {}  # (role, socket) -> channel id
        self.package_ids: dict[tuple[str, str], str] = {}  # (hwmonN, package) -> Esocket id
        self.pins: dict[str, AmdModulus] = {}  # one wrap modulus per amd_energy device
        self.used: set[str] = set()

    def open_all(self, skip_overlapping: bool) -> None:
        """Open every sensor, but amd_energy's when ``skip_overlapping`` (RAPL has them)."""
        for f in self.found:
            if f.device == AMD_ENERGY and skip_overlapping:
                continue
            self._open(f)

    def _open(self, f: _Found) -> None:
        """Name and place ``f``, open it and, when it reads, add it as a sensor."""
        cid = self._channel_id(f)
        part_of, extra = self._placement(f)
        fd = self._fd(f)
        if fd is None:
            return
        self._remember(f, cid, part_of, extra)
        channel = _channel(f, cid, part_of, extra)
        pin = self.pins.setdefault(f.hw, AmdModulus()) if f.device == AMD_ENERGY else None
        self.sensors.append(_Sensor(channel, fd, f, pin))

    def _channel_id(self, f: _Found) -> str:
        """``hwmon-<driver>-<label>``, with ``-hwmonN`` when another device of the driver has
        it already (two ACPI power meters without oem_info)."""
        device_slug = _NAME_SLUG.sub("-", f.device.lower()).strip("-") or "unnamed"
        cid = f"hwmon-{device_slug}-{_SLUG.sub('-', f.label.lower()).strip('-')}"
        if cid in self.used:
            cid = f"{cid}-{f.hw}"
        return cid

    def _placement(self, f: _Found) -> tuple[str | None, dict[str, Any]]:
        """The channel ``f`` is part of (None: summed itself) and the meta that says why:
        a core under its node's socket, an Esocket under the first one of its package, a
        Grace rail under its socket's Grace meter."""
        if f.role == "core":
            return self._core_placement(f)
        if f.role == "socket" and f.socket in self.node_pkg:
            return self._socket_placement(f)
        if f.role in ("cpu", "sysio") and f.socket in self.grace_sockets:
            return self.ids.get(("grace", f.socket)), {}
        return None, {}

    def _core_placement(self, f: _Found) -> tuple[str | None, dict[str, Any]]:
        """An ``Ecore<i>``: part of the socket of CPU ``i``'s node; when the topology does not
        say, of the device's first socket (a core is never summed: the socket counter holds
        its energy)."""
        part_of = None
        extra: dict[str, Any] = {}
        digits = re.findall(r"\d+", f.label)
        node = self.cpu_node.get(int(digits[0])) if digits else None
        if node is not None:
            part_of = self.ids.get(("socket", node))
            extra["numa_node"] = int(node)
        if part_of is None:
            part_of = next((v for (r, _), v in self.ids.items() if r == "socket"), None)
            extra["socket_unknown"] = True
        return part_of, extra

    def _socket_placement(self, f: _Found) -> tuple[str | None, dict[str, Any]]:
        """An ``Esocket<N>`` whose node's package is known: its node and package, and part of
        the package's first Esocket when another node of it was read already (NPS2/NPS4)."""
        pkg = self.node_pkg[f.socket]
        extra: dict[str, Any] = {"numa_node": int(f.socket),
                                 "package": int(pkg) if pkg.isdigit() else pkg}
        first = self.package_ids.get((f.hw, pkg))
        if first is not None:
            extra["same_package_as"] = first
        return first, extra

    def _fd(self, f: _Found) -> int | None:
        """``f``'s file, open and read once; None (and an :class:`Unavailable`) when it does
        not open or read. No data now (-ENODATA) is kept: read again later."""
        try:
            fd = self.io.open(str(f.path))
        except OSError as exc:
            self.missing.append(_unreadable(f, exc))
            return None
        try:
            self.io.pread(fd)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                self.io.close(fd)
                self.missing.append(_unreadable(f, exc))
                return None
        return fd

    def _remember(self, f: _Found, cid: str, part_of: str | None,
                  extra: dict[str, Any]) -> None:
        """Take ``cid``, and keep a socket's or Grace meter's id as the parent of what comes
        after it (the first Esocket of a package too)."""
        self.used.add(cid)
        if f.role in ("socket", "grace"):
            self.ids.setdefault((f.role, f.socket), cid)
        if f.role == "socket" and "package" in extra and part_of is None:
            self.package_ids[(f.hw, self.node_pkg[f.socket])] = cid


def _channel(f: _Found, cid: str, part_of: str | None, extra: dict[str, Any]) -> Channel:
    """The channel of an opened sensor: a counter for ``energyN``, integrated for ``powerN``;
    its meta says where it is read and what it overlaps (amd sockets: RAPL) or belongs to
    (Grace rails)."""
    meta: dict[str, Any] = {"path": str(f.path), "device": f.device, "hwmon": f.hw,
                            "label": f.label, "layout": f.layout, **f.meta, **extra}
    if f.role == "socket":
        meta["overlaps"] = "rapl"
    if f.role in ("module", "grace", "cpu", "sysio"):
        meta["grace_rail"] = f.role
    if f.role == "module":  # one per socket, disjoint: summed in by_kind["psys"]
        meta["psys_scope"] = "socket"
    return Channel(cid, f.kind, f"{f.device} {f.label}", SOURCE,
                   "counter" if f.what == "energy" else "integrated",
                   part_of=part_of, resolution_s=f.resolution_s, meta=meta)


def _results(opening: _Opening, listed: list[Unavailable], not_read: list[dict[str, Any]],
             root: Path, clock: Callable[[], float]) -> list[Probe | Unavailable]:
    """The probe over the opened sensors (when any), then the sensors that could not be
    opened, then the drivers not read; with nothing opened nor failed, only amd_energy was
    here and RAPL reads it."""
    if not opening.sensors:
        if not opening.missing:
            return [Unavailable(SOURCE, "only amd_energy sensors here, and RAPL measures the "
                                        "same CPU packages: left to RAPL (not counted twice)",
                                "nothing to do"), *listed]
        return [*opening.missing, *listed]
    probe = HwmonProbe(opening.sensors, clock, opening.io, root, not_read)
    return [probe, *opening.missing, *listed]


def _unreadable(f: _Found, exc: OSError) -> Unavailable:
    driver = "acpi_power_meter" if f.device == ACPI_POWER_METER else f.device
    where = f"{f.hw}" + (f" ({f.label})" if not f.label.startswith(f.what) else "")
    if exc.errno == errno.EACCES or (exc.errno == errno.EPERM and _root_only(f.path)):
        why, hint = "root-only", (AMD_ENERGY_HINT if f.device == AMD_ENERGY
                                  else PERMISSION_HINT)
    elif exc.errno == errno.EPERM:  # a driver's refusal now (amdgpu: in reset, suspended)
        why, hint = ("not permitted now: device suspended or in reset?",
                     "read it again once the device is up; not a file permission")
    else:
        why = {errno.EIO: "I/O error", errno.ENODEV: "device gone"}.get(
            exc.errno or 0, type(exc).__name__)
        hint = PERMISSION_HINT if f.device != AMD_ENERGY else AMD_ENERGY_HINT
    reason = (f"{driver} present on {where} but {f.path.name} unreadable ({why}): "
              f"{type(exc).__name__} on {f.path}: {exc.strerror or exc}")
    return Unavailable(SOURCE, reason, hint)


def _root_only(path: Path) -> bool:
    """Whether the file is readable by its owner (root) and group at most: 0440 and the like
    (amd_energy_is_visible), so that a non-root reader's -EPERM is a permission."""
    try:
        return not os.stat(path).st_mode & 0o004
    except OSError:
        return False
