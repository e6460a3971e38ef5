"""NVIDIA Jetson power rails (INA3221 monitors), method ``integrated``, one channel per rail.

Two sysfs layouts, per NVIDIA's Jetson Linux Developer Guide ("Power Monitoring"):

* JetPack 5/6 (Orin): an hwmon device named ``ina3221`` with, per channel N, ``inN_label`` (the
  rail: ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0``, ``VDDQ_VDD2_1V8AO``...), ``inN_input``
  (bus voltage, mV) and ``currN_input`` (current, mA): power = V x I;
* L4T 32 (Xavier, Nano, TX2): ``/sys/bus/i2c/drivers/ina3221x/<bus>/iio:device<M>/`` with
  ``rail_name_N`` and ``in_powerN_input`` (mW).

Power is integrated with the trapezoid rule between the probe's reads (the sampler reads at
least every ``interval_s``). Rails are labelled and classified by name: ``GPU`` -> gpu, ``CPU``
-> cpu, ``SOC``/``CV`` -> soc, ``DDR``/``VDDQ``/``VDDRQ`` -> dram, and the module's input
(``VIN``, ``SYS5V``, ``POM_5V_IN``) -> psys: it contains the other rails, so it is shown beside
the total, never in it. A rail that powers two blocks (``VDD_GPU_SOC``) takes its first name's
kind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .._lazy import LazyPattern
from .base import Channel, DiscoveryContext, Probe, Unavailable
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


def _read_int(fd: int) -> int:
    return int(os.pread(fd, 32, 0).strip() or b"0")


class _Rail:
    __slots__ = ("channel", "fds", "integrator", "scale")

    def __init__(self, channel: Channel, fds: tuple[int, ...], scale: float) -> None:
        self.channel = channel
        self.fds = fds  # (power) or (voltage, current)
        self.scale = scale  # to watts
        self.integrator = TrapezoidIntegrator()

    def power_w(self) -> float:
        if len(self.fds) == 1:
            return _read_int(self.fds[0]) * self.scale
        return _read_int(self.fds[0]) * _read_int(self.fds[1]) * self.scale


class JetsonProbe(Probe):
    source = SOURCE
    may_block = False  # sysfs preads

    def __init__(self, rails: list[_Rail], clock: Callable[[], float]) -> None:
        super().__init__(tuple(r.channel for r in rails))
        self._rails = rails
        self._clock = clock
        now = clock()
        for rail in rails:
            rail.integrator.add(now, rail.power_w())

    def _read(self) -> dict[str, float]:
        now = self._clock()
        out = {}
        for rail in self._rails:
            rail.integrator.add(now, rail.power_w())
            out[rail.channel.id] = rail.integrator.energy_j
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


def _candidates(sysfs: Path) -> list[tuple[str, tuple[Path, ...], float, str]]:
    """(rail, files, scale to W, where) of every rail of both layouts."""
    out = []
    hwmon = sysfs / "class" / "hwmon"
    for d in sorted(hwmon.iterdir()) if hwmon.is_dir() else ():
        if _text(d / "name") != "ina3221":
            continue
        for label in sorted(d.glob("in*_label")):
            n = label.name[2:-6]
            rail = _text(label)
            if rail and not rail.upper().startswith("NC") and (d / f"curr{n}_input").exists():
                out.append((rail, (d / f"in{n}_input", d / f"curr{n}_input"), 1e-6, d.name))
    legacy = sysfs / "bus" / "i2c" / "drivers" / "ina3221x"
    for d in sorted(legacy.glob("*/iio:device*")) if legacy.is_dir() else ():
        for name in sorted(d.glob("rail_name_*")):
            n = name.name.rsplit("_", 1)[1]
            rail = _text(name)
            power = d / f"in_power{n}_input"
            if rail and power.exists():
                out.append((rail, (power,), 1e-3, str(d.relative_to(sysfs))))
    return out


def discover(ctx: DiscoveryContext, *, clock: Callable[[], float] = time.monotonic
             ) -> list[Probe | Unavailable]:
    """A :class:`JetsonProbe` over the INA3221 rails under ``ctx.sysfs_root`` (nothing when
    the machine has none)."""
    rails: list[_Rail] = []
    missing: list[Unavailable] = []
    seen: set[str] = set()
    for rail, files, scale, where in _candidates(Path(ctx.sysfs_root)):
        cid = "jetson-" + _SLUG.sub("-", rail.lower()).strip("-")
        if cid in seen:
            continue
        seen.add(cid)
        fds: list[int] = []
        try:
            for f in files:
                fds.append(os.open(f, os.O_RDONLY | os.O_CLOEXEC))
                os.pread(fds[-1], 32, 0)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            missing.append(Unavailable(SOURCE, f"{type(exc).__name__} on {f}: {exc}",
                                       "the rail files may be root-only: run as root or "
                                       "grant read access (docs/permissions.md)"))
            continue
        channel = Channel(cid, rail_kind(rail), f"Jetson rail {rail}", SOURCE, "integrated",
                          meta={"rail": rail, "where": where})
        rails.append(_Rail(channel, tuple(fds), scale))
    if not rails:
        return missing or [Unavailable(SOURCE, "no NVIDIA Jetson INA3221 power rail found",
                                       "only Jetson modules have them; others can ignore "
                                       "this")]
    return [JetsonProbe(rails, clock), *missing]
