"""NVIDIA Jetson power rails (INA3221 monitors), method ``integrated``, one channel per rail.

Two sysfs layouts, per NVIDIA's Jetson Linux Developer Guide ("Power Monitoring"):

* JetPack 5/6 (Orin): the mainline hwmon driver (linux drivers/hwmon/ina3221.c,
  Documentation/hwmon/ina3221.rst), a device named ``ina3221`` with, per channel N = 1..3,
  ``inN_label`` (the rail: ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0``...; present only when
  the device tree names the channel, absent for a disconnected one), ``inN_input`` (bus
  voltage, mV), ``currN_input`` (current, mA) and ``inN_enable``: power = V x I. A disabled
  channel reads ``-ENODATA``. ``in4..6_input`` are shunt voltages (uV), ``in7_input`` and
  ``in7_label`` ("sum of shunt voltages") and ``curr4_input`` the summation channel: not rails.
* L4T 32 and older (Xavier, Nano, TX1/TX2): NVIDIA's downstream IIO driver ``ina3221x``,
  ``/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device<M>/`` (L4T 28 also names it
  ``iio_device``) with ``rail_name_N`` (N = 0..2; a channel the device tree does not name reads
  ``(null)``) and ``in_powerN_input`` (mW, = mV x mA / 1000, integer).

Power is integrated with the trapezoid rule between the probe's reads (the sampler reads at
least every ``interval_s``). Rails are labelled and classified by name: ``GPU`` -> gpu, ``CPU``
-> cpu, ``SOC``/``CV`` -> soc, ``DDR``/``VDDQ``/``VDDRQ`` -> dram, and the module's input
(``VIN``, ``SYS5V``, ``POM_5V_IN``) -> psys: it contains the other rails, so it is shown beside
the total, never in it. A rail that powers two blocks (``VDD_GPU_SOC``) takes its first name's
kind.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from .._lazy import LazyPattern
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable
from .integrate import TrapezoidIntegrator

SOURCE = "jetson"
_SLUG = LazyPattern(r"[^a-z0-9]+")
_TOTAL = ("VIN", "SYS5V", "POM_5V_IN", "IN_SYS", "SYS_5V")


def rail_kind(rail: str) -> str:
    """The energy kind of a Jetson rail, from its name."""
    name = rail.upper()
    if any(t in name for t in _TOTAL):
        return "psys"
    order = [(name.find(key), kind) for key, kind in (
        ("GPU", "gpu"), ("CPU", "cpu"), ("SOC", "soc"), ("CV", "soc"), ("DDR", "dram"),
        ("VDDQ", "dram"), ("VDDRQ", "dram")) if key in name]
    return min(order)[1] if order else "psys"


#: ``pread(fd, n, offset) -> bytes``; ``os.pread`` by default, injectable for tests (a disabled
#: ina3221 channel fails its read with ENODATA, which a plain file cannot do).
PRead = Callable[[int, int, int], bytes]
_NO_RAIL = ("(null)", "")  # ina3221x: rail_name_N of a channel the device tree leaves unnamed


def _read_int(fd: int, pread: PRead = os.pread) -> int:
    data = pread(fd, 32, 0).strip()
    try:
        return int(data)
    except ValueError:
        raise ValueError(f"read {data[:32]!r}, not an integer") from None


class _Rail:
    __slots__ = ("channel", "fds", "integrator", "paths", "scale")

    def __init__(self, channel: Channel, fds: tuple[int, ...], scale: float,
                 paths: tuple[Path, ...] = ()) -> None:
        self.channel = channel
        self.fds = fds  # (power) or (voltage, current)
        self.scale = scale  # to watts
        self.paths = paths
        self.integrator = TrapezoidIntegrator()

    def power_w(self, pread: PRead = os.pread) -> float:
        if len(self.fds) == 1:
            return _read_int(self.fds[0], pread) * self.scale
        return _read_int(self.fds[0], pread) * _read_int(self.fds[1], pread) * self.scale


class JetsonProbe(Probe):
    source = SOURCE
    may_block = False  # sysfs preads

    def __init__(self, rails: list[_Rail], clock: Callable[[], float],
                 pread: PRead = os.pread) -> None:
        super().__init__(tuple(r.channel for r in rails))
        self._rails = rails
        self._clock = clock
        self._pread = pread
        now = clock()
        for rail in rails:
            try:
                rail.integrator.add(now, rail.power_w(pread))
            except (OSError, ValueError):
                continue  # its first good read starts its integral

    def _read(self) -> dict[str, float]:
        """Each rail's joules; a rail whose read fails (a channel disabled meanwhile reads
        ENODATA) fails alone (:class:`PartialRead`) and keeps its energy so far; its next good
        reading is joined to its last by the trapezoid rule."""
        now = self._clock()
        out: dict[str, float] = {}
        errors: dict[str, str] = {}
        skip = self.skip
        for rail in self._rails:
            if skip and rail.channel.id in skip:
                continue
            try:
                power_w = rail.power_w(self._pread)
            except (OSError, ValueError) as exc:
                where = ", ".join(str(p) for p in rail.paths) or rail.channel.id
                errors[rail.channel.id] = f"cannot read Jetson rail {where}: {exc}"
                continue
            rail.integrator.add(now, power_w)
            out[rail.channel.id] = rail.integrator.energy_j
        if errors:
            raise PartialRead(out, errors)
        return out

    def close(self) -> None:
        for rail in self._rails:
            for fd in rail.fds:
                if fd >= 0:
                    os.close(fd)
            rail.fds = ()


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _candidates(sysfs: Path) -> list[tuple[str, tuple[Path, ...], float, str, Path | None]]:
    """(rail, files, scale to W, where, enable file) of every rail of both layouts."""
    out: list[tuple[str, tuple[Path, ...], float, str, Path | None]] = []
    hwmon = sysfs / "class" / "hwmon"
    for d in sorted(hwmon.iterdir()) if hwmon.is_dir() else ():
        if _text(d / "name") != "ina3221":
            continue
        for n in (1, 2, 3):  # in4..6 are shunt voltages, in7 the shunt sum: not rails
            rail = _text(d / f"in{n}_label")
            if not rail or rail.upper().startswith("NC"):
                continue  # no label: unnamed or disconnected (ina3221_is_visible hides it)
            if (d / f"curr{n}_input").exists():
                out.append((rail, (d / f"in{n}_input", d / f"curr{n}_input"), 1e-6, d.name,
                            d / f"in{n}_enable"))
    legacy = sysfs / "bus" / "i2c" / "drivers" / "ina3221x"
    seen: set[str] = set()
    devices = [*legacy.glob("*/iio:device*"), *legacy.glob("*/iio_device")] \
        if legacy.is_dir() else []
    for d in sorted(devices):
        real = os.path.realpath(d)  # L4T 28's iio_device links to iio:deviceM
        if real in seen:
            continue
        seen.add(real)
        for name in sorted(d.glob("rail_name_*")):
            n = name.name.rsplit("_", 1)[1]
            rail = _text(name)
            power = d / f"in_power{n}_input"
            if rail not in _NO_RAIL and power.exists():
                out.append((rail, (power,), 1e-3, str(d.relative_to(sysfs)), None))
    return out


def discover(ctx: DiscoveryContext, *, clock: Callable[[], float] = time.monotonic,
             pread: PRead = os.pread) -> list[Probe | Unavailable]:
    """A :class:`JetsonProbe` over the INA3221 rails under ``ctx.sysfs_root`` (nothing when
    the machine has none). ``pread`` reads the rail files (tests inject the kernel's errors)."""
    rails: list[_Rail] = []
    missing: list[Unavailable] = []
    seen: set[str] = set()
    for rail, files, scale, where, enable in _candidates(Path(ctx.sysfs_root)):
        cid = "jetson-" + _SLUG.sub("-", rail.lower()).strip("-")
        if cid in seen:
            continue
        seen.add(cid)
        if enable is not None and _text(enable) == "0":
            missing.append(Unavailable(
                SOURCE, f"Jetson rail {rail} is disabled ({enable} reads 0)",
                f"enable the channel as root: `echo 1 > {enable}`"))
            continue
        fds: list[int] = []
        f = files[0]
        try:
            for f in files:
                fds.append(os.open(f, os.O_RDONLY | os.O_CLOEXEC))
                _read_int(fds[-1], pread)
        except (OSError, ValueError) as exc:
            for fd in fds:
                os.close(fd)
            if isinstance(exc, OSError) and exc.errno == errno.ENODATA:
                hint = ("the ina3221 channel is disabled or not measuring; enable it as root "
                        "(`echo 1 > .../inN_enable`) or check the device tree")
            elif isinstance(exc, PermissionError):
                hint = ("the rail files may be root-only: run as root or grant read access "
                        "(docs/permissions.md)")
            else:
                hint = "the rail is listed but its reading is not a number; please report it"
            missing.append(Unavailable(SOURCE, f"Jetson rail {rail}: {type(exc).__name__} on "
                                               f"{f}: {exc}", hint))
            continue
        channel = Channel(cid, rail_kind(rail), f"Jetson rail {rail}", SOURCE, "integrated",
                          meta={"rail": rail, "where": where})
        rails.append(_Rail(channel, tuple(fds), scale, files))
    if not rails:
        return missing or [Unavailable(SOURCE, "no NVIDIA Jetson INA3221 power rail found",
                                       "only Jetson modules have them; others can ignore "
                                       "this")]
    return [JetsonProbe(rails, clock, pread), *missing]
