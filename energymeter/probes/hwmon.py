"""Linux hwmon energy and power sensors: NVIDIA Grace (and Grace Hopper) module sensors, ACPI
power meters, AMD ``amd_energy``.

Follows the kernel's hwmon sysfs ABI (Documentation/hwmon/sysfs-interface.rst): under
``<sysfs>/class/hwmon/hwmon*/`` a device has a ``name``, and per sensor ``energyN_input``
(microjoules, a counter: method ``counter``) or ``powerN_input`` / ``powerN_average``
(microwatts: integrated here with the trapezoid rule between this probe's reads, method
``integrated``), with an optional ``energyN_label`` / ``powerN_label``.

What is summed (never twice):

* ACPI power meters (``name`` ``power_meter``, Documentation/hwmon/acpi_power_meter.rst) measure
  the whole platform: kind ``psys``, beside the total, never in it;
* NVIDIA Grace sensors (labels "Module Power Socket N", "Grace Power Socket N", "CPU Power
  Socket N", "SysIO Power Socket N", per NVIDIA's Grace performance tuning guide): the module
  sensor contains the others (CPU + SysIO, and the Hopper GPU on GH200): kind ``psys``;
  "Grace"/"CPU" power is ``cpu`` and "SysIO" is ``soc``;
* AMD ``amd_energy`` (Documentation/hwmon/amd_energy.rst): ``Esocket<N>`` counters are kind
  ``cpu`` and the same energy RAPL reports for the package (``meta.overlaps = "rapl"``: left
  out at discovery when RAPL measures the CPU); ``Ecore<NNN>`` counters are sub-zones
  (``part_of`` their socket), shown, never summed;
* ``ina3221`` devices are the Jetson rails, read by :mod:`.jetson`, and skipped here.

Nothing is read at import; unreadable files become :class:`Unavailable` with a hint.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._lazy import LazyPattern
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable
from .counter import CumulativeCounter
from .integrate import TrapezoidIntegrator

SOURCE = "hwmon"
#: hwmon devices read by another probe.
SKIPPED_NAMES = ("ina3221",)
_SENSOR = LazyPattern(r"^(energy|power)(\d+)_(input|average)$")
_SLUG = LazyPattern(r"[^a-z0-9]+")
PERMISSION_HINT = ("hwmon sensor files may be root-only: `sudo chmod o+r` them, a udev rule, "
                   "or run as a user allowed to read them (docs/permissions.md)")


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _classify(device: str, label: str) -> tuple[str, str | None]:
    """``(kind, role)`` of a sensor: role ``socket``/``core`` for amd_energy, else None."""
    low = label.lower()
    if device == "power_meter":
        return "psys", None
    if device == "amd_energy":
        if low.startswith("ecore"):
            return "cpu", "core"
        return "cpu", "socket"
    if "module power" in low or "total" in low:
        return "psys", None
    if "sysio" in low:
        return "soc", None
    if "gpu" in low:
        return "gpu", None
    if "dram" in low or "memory" in low:
        return "dram", None
    if "grace" in low or "cpu" in low:
        return "cpu", None
    return "psys", None  # an unknown sensor may contain others: shown, never summed


class _Sensor:
    __slots__ = ("channel", "counter", "fd", "integrator", "scale")

    def __init__(self, channel: Channel, fd: int, scale: float, counter: bool) -> None:
        self.channel = channel
        self.fd = fd
        self.scale = scale
        self.counter: CumulativeCounter | None = None
        self.integrator = None if counter else TrapezoidIntegrator()


class HwmonProbe(Probe):
    """The readable hwmon energy and power sensors of this machine."""

    source = SOURCE
    may_block = False  # preads of sysfs attributes

    def __init__(self, sensors: list[_Sensor], clock: Callable[[], float]) -> None:
        super().__init__(tuple(s.channel for s in sensors))
        self._sensors = sensors
        self._clock = clock
        for s in sensors:
            raw = self._raw(s)
            if s.integrator is None:
                s.counter = CumulativeCounter(raw)
            else:
                s.integrator.add(clock(), raw * s.scale)

    @staticmethod
    def _raw(sensor: _Sensor) -> int:
        return int(os.pread(sensor.fd, 32, 0).strip() or b"0")

    def _read(self) -> dict[str, float]:
        """Every sensor's joules; one that cannot be read fails alone (:class:`PartialRead`):
        a counter keeps its last good reading (the energy over the gap is counted when it
        reads again), a power sensor skips that sample (the trapezoid bridges the gap)."""
        out: dict[str, float] = {}
        errors: dict[str, str] | None = None
        skip = self.skip
        now = self._clock()
        for s in self._sensors:
            if skip and s.channel.id in skip:
                continue
            try:
                raw = self._raw(s)
            except (OSError, ValueError) as exc:
                if errors is None:
                    errors = {}
                errors[s.channel.id] = f"cannot read hwmon sensor {s.channel.id}: {exc}"
                continue
            if s.counter is not None:
                s.counter.advance(raw)
                out[s.channel.id] = s.counter.total * s.scale
            else:
                assert s.integrator is not None
                s.integrator.add(now, raw * s.scale)
                out[s.channel.id] = s.integrator.energy_j
        if errors is not None:
            raise PartialRead(out, errors)
        return out

    def close(self) -> None:
        for s in self._sensors:
            if s.fd >= 0:
                os.close(s.fd)
                s.fd = -1


def discover(ctx: DiscoveryContext, *, skip_overlapping: bool = False,
             clock: Callable[[], float] = time.monotonic) -> list[Probe | Unavailable]:
    """One :class:`HwmonProbe` over the readable energy/power sensors under
    ``<ctx.sysfs_root>/class/hwmon``. ``skip_overlapping``: leave out sensors that duplicate
    another probe's channels (amd_energy sockets when RAPL measures the packages)."""
    root = Path(ctx.sysfs_root) / "class" / "hwmon"
    none = Unavailable(SOURCE, f"no hwmon energy or power sensor under {root}",
                       "machines with NVIDIA Grace, an ACPI power meter or AMD amd_energy "
                       "show them there (load the driver, e.g. `modprobe acpi_power_meter`); "
                       "others can ignore this")
    if not root.is_dir():
        return [none]
    sensors: list[_Sensor] = []
    missing: list[Unavailable] = []
    found: list[tuple[str, Path, str, int, str, str]] = []
    for device_dir in sorted(root.iterdir(), key=lambda p: p.name):
        device = _text(device_dir / "name")
        if not device or device in SKIPPED_NAMES:
            continue
        names = sorted(os.listdir(device_dir)) if device_dir.is_dir() else []
        energies = {m.group(2) for n in names if (m := _SENSOR.match(n)) and
                    m.group(1) == "energy"}
        for name in names:
            m = _SENSOR.match(name)
            if m is None:
                continue
            what, index, how = m.groups()
            if what == "power" and (how == "average" and f"power{index}_input" in names):
                continue  # the instantaneous reading is preferred
            if what == "power" and index in energies:
                continue
            label = _text(device_dir / f"{what}{index}_label") or f"{what}{index}"
            found.append((device, device_dir / name, what, int(index), label, device_dir.name))
    sockets: dict[str, str] = {}
    seen: set[str] = set()
    # amd_energy lists its cores before the socket: sockets first, so cores find their parent.
    found.sort(key=lambda f: _classify(f[0], f[4])[1] == "core")
    for device, path, what, _index, label, hw in found:
        kind, role = _classify(device, label)
        if role == "socket" and skip_overlapping:
            continue
        cid = f"hwmon-{device}-{_SLUG.sub('-', label.lower()).strip('-')}"
        if cid in seen:  # two devices of one driver (two ACPI power meters)
            cid = f"{cid}-{hw}"
        seen.add(cid)
        meta: dict[str, Any] = {"path": str(path), "device": device, "hwmon": hw,
                                "label": label}
        part_of = None
        if role == "socket":
            meta["overlaps"] = "rapl"
            digits = re.findall(r"\d+", label)
            sockets[digits[0] if digits else "0"] = cid
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            os.pread(fd, 32, 0)
        except OSError as exc:
            missing.append(Unavailable(SOURCE, f"{type(exc).__name__} on {path}: {exc}",
                                       PERMISSION_HINT))
            continue
        if role == "core":
            if skip_overlapping:
                os.close(fd)
                continue
            part_of = next(iter(sockets.values()), None)
        channel = Channel(cid, kind, f"{device} {label}", SOURCE,
                          "counter" if what == "energy" else "integrated", part_of=part_of,
                          meta=meta)
        sensors.append(_Sensor(channel, fd, 1e-6, counter=what == "energy"))
    if not sensors:
        return missing or [none]
    return [HwmonProbe(sensors, clock), *missing]
