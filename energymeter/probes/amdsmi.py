"""AMD GPUs (Instinct, Radeon) through ``amdsmi``, ROCm's official Python bindings.

One channel per physical GPU package visible to the process, named ``gpu<first_index>``,
``gpu<first_index + 1>``... in the process's own HIP order (``first_index`` lets the registry
number AMD GPUs after NVIDIA's on a machine with both). Kind ``gpu``, source ``amdsmi``, device
the market name. Energy comes from one of two methods:

* ``counter``: ``amdsmi_get_energy_count(handle)``, the GPU's energy accumulator since the
  driver loaded or the GPU was last reset. It returns ``energy_accumulator`` (``power`` in
  ROCm <= 6.1; deprecated from 6.4), ``counter_resolution`` (µJ per count; 15.3 on MI200/MI300)
  and ``timestamp`` (ns); joules = accumulator x resolution / 1e6, kept per device by a
  :class:`~.counter.CumulativeCounter`. The counter is 64-bit: a drop is a wrap when the
  increase over the top is plausible (at most :data:`MAX_PLAUSIBLE_W` since the last reading),
  a reset (GPU reset, driver reload: its new value counts as energy since then) when the new
  value is itself plausible, else a glitch, ignored, as is a jump up by more than is plausible;
  a jump that persists for :data:`GLITCH_READS` readings becomes the new baseline.
* ``integrated`` (where the counter is unsupported, e.g. in a VM guest): socket power from
  ``amdsmi_get_power_info(handle)`` in W (``current_socket_power`` on MI300 and newer,
  ``socket_power`` in ROCm 7, ``average_socket_power`` on MI200 and older and on Navi; "N/A"
  where unsupported) polled by the probe's own thread at :data:`DEFAULT_POLL_HZ` and
  integrated with the trapezoid rule; every ``read()`` takes a sample too.

Which GPUs: ``ROCR_VISIBLE_DEVICES`` first (applied by the ROCr runtime on the physical GPUs),
then ``HIP_VISIBLE_DEVICES``, else ``CUDA_VISIBLE_DEVICES`` (HIP honours it), indexing into what
ROCr left, as HIP does. Each is parsed by :func:`~.visible.select_visible` with the amdsmi
enumeration order as index and ``GPU-<unique id>`` (the ``asic_serial`` of
``amdsmi_get_gpu_asic_info``, the UUID rocminfo shows and ROCr accepts) as UUID; an entry
naming the amdsmi UUID (``amdsmi_get_gpu_device_uuid``, what ``amd-smi list`` shows) is
accepted too.

One package, several devices (MI250/MI250X: two GCDs per OAM; MI300X in CPX/DPX modes: up to 8
partitions per socket). The devices of one package are found by, in order: the same board
serial (``amdsmi_get_gpu_board_info()["product_serial"]``, the OAM's FRU serial, unless empty,
``N/A``, all zeros, or shared by more than :data:`MAX_DEVICES_PER_PACKAGE` devices), else the
same PCI domain:bus:device (``amdsmi_get_gpu_device_bdf``; partitions differ only by PCI
function). The rule: **a package is one channel**, whose energy is the sum of the counters of
all its devices, those hidden from this process included, with identical non-zero readings
taken once (devices that all report the whole package's counter). On MI250 the package's
energy is on one GCD and the other's counter stays at 0 (and its power reads "N/A"): summing
reports the package once and never 0 W for a busy GCD; such "silent" GCDs are listed in
``meta.silent_gcds`` and a warning says so. When some GCDs of a package are hidden, the energy
is still the whole package's (like NVML's MIG): a warning says so and ``meta.package_share``
gives the visible GCDs' share by count, an attribution by capacity, not a measurement.

Gauges per channel (NVML's names): ``<id>_memory_used_bytes`` (``amdsmi_get_gpu_vram_usage``
``vram_used``, MB), ``<id>_utilization_pct`` (``amdsmi_get_gpu_activity`` ``gfx_activity``, %),
``<id>_temperature_c`` (``amdsmi_get_temp_metric``, hotspot, else edge, °C) over the visible
GCDs, and ``<id>_power_w`` (the package's socket power).

amdsmi is imported and initialised in :func:`discover` (never at import, never on a machine
without ``/dev/kfd`` or the ``amdgpu`` module unless a module object is injected) and shut
down by ``close()``.

AMD documentation followed (ROCm 6.2-7.x): the amdsmi Python API reference, ROCm/amdsmi
``py-interface/README.md`` and ``amdsmi_interface.py`` (function names, return dict keys, the
``AmdSmiException`` hierarchy, "N/A" for unsupported fields); the C reference
https://rocm.docs.amd.com/projects/amdsmi/en/latest/doxygen/docBin/html/group__tagPowerQuery.html
(``amdsmi_get_energy_count``: accumulator x ``counter_resolution`` = µJ), the struct references
``amdsmi_power_info_t`` (socket power in W; ``current_socket_power`` MI300+,
``average_socket_power`` MI200 and earlier) and ``amdsmi_vram_usage_t`` (MB). MI250 second-GCD
zeros: mlco2/codecarbon#1097, ROCm/rocm_smi_lib#160 ("N/A (Secondary die)"); counters that
stall or step back: ROCm/amdsmi#38, ROCm/amdsmi#115.
Section draft: ``docs/hardware-amd.md``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ProbeError
from .base import Channel, DiscoveryContext, Probe, Unavailable
from .counter import CumulativeCounter
from .integrate import TrapezoidIntegrator
from .visible import GpuIdentity, select_visible

log = logging.getLogger("energymeter")

SOURCE = "amdsmi"
#: amdgpu re-reads the SMU metrics table (where the accumulator lives) at most every 1 ms.
COUNTER_UPDATE_PERIOD_S = 0.001
#: Power polling of the ``integrated`` method: default and lowest accepted rate.
DEFAULT_POLL_HZ = 50.0
MIN_POLL_HZ = 20.0
#: The energy counter is a uint64.
COUNTER_MODULUS = 2**64
#: No AMD package draws more (MI355X: 1.4 kW): a counter step above this times the time since
#: the previous read (plus :data:`_SLACK_S`) is a glitch or a reset, never energy.
MAX_PLAUSIBLE_W = 5000.0
_SLACK_S = 1.0
#: Consecutive implausible readings after which a counter's jump is taken as its new baseline.
GLITCH_READS = 3
#: More devices sharing one board serial than this (MI300X CPX: 8) means a placeholder serial.
MAX_DEVICES_PER_PACKAGE = 8
#: Precedence of the visibility variables (ROCR is applied first, then HIP, else CUDA).
VISIBLE_VARIABLES = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
#: Socket power keys of ``amdsmi_get_power_info``, best first (all in W).
POWER_KEYS = ("current_socket_power", "socket_power", "average_socket_power")
#: Where a loaded AMD GPU driver shows itself: the ROCm compute device and the amdgpu module
#: (the latter under ``ctx.sysfs_root``).
DRIVER_DEVICE = "/dev/kfd"
DRIVER_MODULE = "module/amdgpu"

# amdsmi_status_t values (amdsmi.h / amdsmi_wrapper.py).
_STATUS_NOT_SUPPORTED = 2
_STATUS_NOT_YET_IMPLEMENTED = 3
_STATUS_NO_PERM = 10
_STATUS_DRIVER_NOT_LOADED = 34
_STATUS_NO_DATA = 40
_UNSUPPORTED = frozenset({_STATUS_NOT_SUPPORTED, _STATUS_NOT_YET_IMPLEMENTED, _STATUS_NO_DATA})
# Values amdsmi and its structs use for "not available" (UINT16/32/64 max).
_SENTINELS = frozenset({0xFFFF, 0xFFFFFFFF, 2**64 - 1})
_BDF_RE = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")
_NA = ("", "n/a", "na", "none", "unknown", "not available")

_NO_DRIVER_HINT = ("install ROCm and the amdgpu driver (`amd-smi list` must work); in a "
                   "container pass --device=/dev/kfd --device=/dev/dri. Machines without an "
                   "AMD GPU can ignore this")
_INSTALL_HINT = ("`pip install amdsmi` matching your ROCm version, or add ROCm's copy to the "
                 "path: `pip install /opt/rocm/share/amd_smi` (needs ROCm's libamd_smi.so)")


# -- amdsmi helpers --------------------------------------------------------------------------
def _errors(amdsmi: Any) -> tuple[type[BaseException], ...]:
    """amdsmi's exception base class (every error it raises on purpose)."""
    base = getattr(amdsmi, "AmdSmiException", None)
    return (base,) if isinstance(base, type) and issubclass(base, BaseException) else ()


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "err_code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _unsupported(exc: BaseException) -> bool:
    """Not supported by this GPU or driver (as opposed to a failure)."""
    return isinstance(exc, AttributeError) or _code(exc) in _UNSUPPORTED


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _number(value: Any) -> float | None:
    """A finite, non-negative reading, or None for "N/A", sentinels and anything odd."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and value in _SENTINELS:
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _count(value: Any) -> int | None:
    """A raw accumulator value: an integer in [0, 2**64), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < COUNTER_MODULUS:
        return value
    return None


def _energy_reading(info: Any) -> tuple[int, float] | None:
    """(raw accumulator, resolution in µJ) of an ``amdsmi_get_energy_count`` answer."""
    if not isinstance(info, Mapping):
        return None
    raw = _count(info.get("energy_accumulator", info.get("power")))
    resolution = _number(info.get("counter_resolution"))
    if raw is None or resolution is None or resolution <= 0:
        return None
    return raw, resolution


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = str(value).strip() if value is not None else ""
    return "" if text.lower() in _NA else text


def _serial(value: Any) -> str:
    """A board serial, or "" when it is a placeholder."""
    text = _text(value)
    return "" if not text.strip("0") else text


def _unique_id(asic: Mapping[str, Any]) -> str:
    """The GPU's unique id (``asic_serial``, "0x..." hex) as ROCr writes it: lower-case hex."""
    text = _text(asic.get("asic_serial")).lower().removeprefix("0x")
    try:
        return f"{int(text, 16):x}" if text and int(text, 16) else ""
    except ValueError:
        return ""


def _bdf_device(bdf: str) -> str:
    """``domain:bus:device`` of a BDF (partitions of one device differ only by function)."""
    match = _BDF_RE.match(bdf)
    if match is None:
        return ""
    domain, bus, device, _function = match.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}"


# -- the probe -----------------------------------------------------------------------------
@dataclass(eq=False)
class _Gcd:
    """One device amdsmi enumerates (a GPU, a GCD of an MI250, a partition of an MI300X)."""

    index: int  # amdsmi enumeration order
    handle: Any
    uuid: str  # amdsmi_get_gpu_device_uuid
    rocm_uuid: str  # GPU-<unique id>, as ROCr and HIP name it
    bdf: str
    name: str
    serial: str
    visible: bool = False
    hip_index: int | None = None
    counter: CumulativeCounter | None = None
    resolution_uj: float = 0.0
    last_t_s: float | None = None
    power_key: str | None = None
    silent: bool = False
    implausible: int = 0  # consecutive implausible counter readings (glitches)

    @property
    def energy_j(self) -> float:
        return 0.0 if self.counter is None else self.counter.total * self.resolution_uj / 1e6

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"amdsmi_index": self.index, "uuid": self.uuid, "bdf": self.bdf,
                               "visible": self.visible, "reports_energy": not self.silent}
        if self.hip_index is not None:
            out["hip_index"] = self.hip_index
        return out


@dataclass(eq=False)
class _Package:
    """One channel: the devices of one physical package (mutated under the probe's lock)."""

    channel: Channel
    gcds: list[_Gcd]  # every device of the package, visible or not
    counting: list[_Gcd]  # whose counters (or powers) make the package's energy
    integrator: TrapezoidIntegrator = field(default_factory=TrapezoidIntegrator)
    failed: set[str] = field(default_factory=set)  # gauges that failed once (warned)
    unsupported: set[tuple[int, str]] = field(default_factory=set)  # (gcd, gauge) not given

    @property
    def integrated(self) -> bool:
        return self.channel.method == "integrated"

    @property
    def visible(self) -> list[_Gcd]:
        return [g for g in self.gcds if g.visible]

    @property
    def value_j(self) -> float:
        if self.integrated:
            return self.integrator.energy_j
        return sum(g.energy_j for g in self.counting)


class AmdSmiProbe(Probe):
    """Energy of AMD GPUs, one channel per package (see the module docstring). Made by
    :func:`discover`."""

    source = SOURCE
    may_block = True  # driver calls

    def __init__(
        self,
        amdsmi: Any,
        packages: Sequence[_Package],
        *,
        poll_hz: float = DEFAULT_POLL_HZ,
        clock: Callable[[], float] = time.monotonic,
        start_poller: bool = True,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        names = [f"{p.channel.id}_{g}" for p in packages for g in GAUGES]
        super().__init__(tuple(p.channel for p in packages), tuple(names))
        self._amdsmi = amdsmi
        self._packages = list(packages)
        self._poll_hz = float(poll_hz)
        self._clock = clock
        self._info = dict(info or {})
        self._closed = False
        self._amdsmi_error = _errors(amdsmi)
        self._start_poller = start_poller and any(p.integrated for p in self._packages)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._lock:
            for p in self._packages:
                if p.integrated:
                    self._sample_locked(p, warn=False)

    # -- runs ------------------------------------------------------------------------------
    def _first_run_began(self) -> None:
        with self._lock:  # whatever happened while no run used the probe is not counted
            for p in self._packages:
                self._resync_locked(p)
        if self._start_poller:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll_loop, args=(self._stop,),
                                            name="energymeter-amdsmi-poll", daemon=True)
            self._thread.start()

    def _last_run_ended(self) -> None:
        self._stop_poller()

    def _stop_poller(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _resync_locked(self, p: _Package) -> None:
        if self._closed:
            return
        if p.integrated:
            p.integrator.last_t_s = p.integrator.last_power_w = None  # no gap is integrated
            self._sample_locked(p, warn=False)
            return
        for g in p.counting:
            try:
                reading = _energy_reading(self._amdsmi.amdsmi_get_energy_count(g.handle))
            except (AttributeError, *self._amdsmi_error):
                continue
            if reading is not None and g.counter is not None:
                g.counter.last = reading[0]
                g.last_t_s = self._clock()
                g.implausible = 0

    # -- energy ---------------------------------------------------------------------------
    def _read(self) -> dict[str, float]:
        if not self._closed:
            good = bad = 0
            errors: list[str] = []
            for p in self._packages:
                if p.integrated:
                    ok = self._sample_locked(p, warn=True)
                    good, bad = good + ok, bad + (not ok)
                    continue
                for g in p.counting:
                    problem = self._advance_locked(p, g)
                    if problem is None:
                        good += 1
                    else:
                        bad += 1
                        errors.append(problem)
            if bad and not good:
                raise ProbeError("amdsmi: no GPU energy could be read: " + "; ".join(errors))
        return {p.channel.id: p.value_j for p in self._packages}

    def _advance_locked(self, p: _Package, g: _Gcd) -> str | None:
        """Take one counter reading of ``g``; the problem, if it could not be read."""
        counter = g.counter
        assert counter is not None  # counting devices of a counter package have one
        cid = p.channel.id
        try:
            info = self._amdsmi.amdsmi_get_energy_count(g.handle)
        except (AttributeError, *self._amdsmi_error) as exc:
            problem = f"{cid}: reading the energy counter of GCD {g.index} ({g.bdf}) failed " \
                      f"({_describe(exc)})"
            self._warn_locked(f"{problem}; its energy is caught up at the next good reading "
                              "(the counter is cumulative)")
            return problem
        reading = _energy_reading(info)
        if reading is None:
            problem = (f"{cid}: the energy counter of GCD {g.index} ({g.bdf}) gave an odd "
                       f"answer ({info!r:.120})")
            self._warn_locked(f"{problem}; it is skipped and caught up at the next good reading")
            return problem
        raw = reading[0]
        now = self._clock()
        elapsed = max(0.0, now - g.last_t_s) if g.last_t_s is not None else 0.0
        # The most the counter can have moved since the last accepted reading.
        bound = MAX_PLAUSIBLE_W * (elapsed + _SLACK_S) * 1e6 / g.resolution_uj
        previous = counter.last
        where = f"{cid}: the energy counter of GCD {g.index} ({g.bdf or '?'})"
        if raw >= previous and raw - previous <= bound \
                or raw < previous and raw + COUNTER_MODULUS - previous <= bound:
            counter.advance(raw, max_increase=bound)  # a step, or a wrap of the 64-bit counter
        elif raw < previous and raw <= bound:
            # A reset (GPU reset, driver reload): it counts from 0 again, so its new value is
            # energy since the reset.
            counter.restarts_from_zero = True
            counter.advance(raw, max_increase=bound)
            self._warn_locked(
                f"{where} went backwards ({previous} -> {raw}; GPU reset or driver reload?): "
                "it counts from 0 again, so its new value is counted as energy since the "
                "reset; energy between the previous read and the reset is lost")
        else:
            # A jump up by more than the package can draw, or down to a value that is not a
            # restart from 0 (ROCm/amdsmi#115): a glitch is ignored (the next good reading
            # catches up); one that persists for GLITCH_READS readings is the new baseline.
            g.implausible += 1
            change = (raw - previous) * g.resolution_uj / 1e6
            if g.implausible < GLITCH_READS:
                self._warn_locked(
                    f"{where} gave an implausible reading ({change:+.0f} J in {elapsed:.3f} s; "
                    f"more than {MAX_PLAUSIBLE_W:g} W, or backwards without restarting from "
                    "0): ignored as a glitch")
                return None
            counter.last = raw
            counter.resets += 1
            self._warn_locked(
                f"{where} jumped ({change:+.0f} J) and stayed there for {GLITCH_READS} "
                "readings: it is taken as the new baseline; the energy since the last "
                "plausible reading is lost")
        g.implausible = 0
        g.last_t_s = now
        return None

    def _power_w(self, g: _Gcd) -> float | None:
        """Socket power of ``g`` in W (its chosen key, else any other), or None."""
        info = self._amdsmi.amdsmi_get_power_info(g.handle)
        if not isinstance(info, Mapping):
            return None
        keys = [g.power_key] if g.power_key else []
        for key in keys + [k for k in POWER_KEYS if k != g.power_key]:
            value = _number(info.get(key))
            if value is not None:
                return value
        return None

    def _package_power_w(self, p: _Package) -> float | None:
        """The package's power: the sum over its power-reporting devices, or None if one of
        them gave nothing (a partial sum would be a false dip)."""
        total = 0.0
        for g in p.counting:
            value = self._power_w(g)
            if value is None:
                return None
            total += value
        return total

    def _sample_locked(self, p: _Package, *, warn: bool) -> bool:
        """One power sample of an ``integrated`` package; whether it was taken (a skipped
        sample is bridged by the trapezoid from the last good one)."""
        try:
            power = self._package_power_w(p)
        except (AttributeError, *self._amdsmi_error) as exc:
            problem = _describe(exc)
        else:
            if power is not None:
                p.integrator.add(self._clock(), power)
                return True
            problem = "no power value"
        log.debug("amdsmi power sample of %s failed: %s", p.channel.id, problem)
        if warn:
            self._warn_locked(f"{p.channel.id}: some amdsmi power samples failed ({problem}); "
                              "the energy between the neighbouring good samples is "
                              "interpolated")
        return False

    def poll(self) -> None:
        """Take one power sample of every ``integrated`` package (what the polling thread
        does; tests call it to drive the integration deterministically)."""
        with self._lock:
            if self._closed:
                return
            for p in self._packages:
                if p.integrated:
                    self._sample_locked(p, warn=True)

    def _poll_loop(self, stop: threading.Event) -> None:
        period_s = 1.0 / self._poll_hz
        next_s = time.monotonic()
        while not stop.is_set():
            self.poll()
            next_s += period_s
            delay_s = next_s - time.monotonic()
            if delay_s < 0:  # fell behind (suspended, overloaded): do not burst to catch up
                next_s, delay_s = time.monotonic(), 0.0
            stop.wait(delay_s)

    # -- gauges ------------------------------------------------------------------------------
    def _gauges(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._closed:
            return out
        for p in self._packages:
            visible = p.visible
            memory = [self._gauge(p, g, "memory_used_bytes", self._memory_bytes)
                      for g in visible]
            used = [v for v in memory if v is not None]
            if used and len(used) == len(memory):  # a partial sum would be a false drop
                out[f"{p.channel.id}_memory_used_bytes"] = float(sum(used))
            busy = [v for g in visible if (v := self._gauge(p, g, "utilization_pct",
                                                            self._utilization)) is not None]
            if busy:
                out[f"{p.channel.id}_utilization_pct"] = sum(busy) / len(busy)
            temps = [v for g in visible if (v := self._gauge(p, g, "temperature_c",
                                                             self._temperature)) is not None]
            if temps:
                out[f"{p.channel.id}_temperature_c"] = max(temps)
            power = self._gauge(p, None, "power_w", lambda _g, p=p: self._gauge_power(p))
            if power is not None:
                out[f"{p.channel.id}_power_w"] = power
        return out

    def _gauge(self, p: _Package, g: _Gcd | None, name: str,
               call: Callable[[Any], float | None]) -> float | None:
        """One gauge value; None (left out) when unsupported, odd or failing (warned once)."""
        key = (-1 if g is None else g.index, name)
        if key in p.unsupported:
            return None
        try:
            return call(g)
        except (AttributeError, *self._amdsmi_error) as exc:
            if _unsupported(exc):
                p.unsupported.add(key)  # this GPU does not report it: the gauge is absent
                return None
            if name not in p.failed:
                p.failed.add(name)
                self._warn_locked(f"{p.channel.id}: gauge {name} unavailable "
                                  f"({_describe(exc)})")
            return None

    def _memory_bytes(self, g: _Gcd) -> float | None:
        info = self._amdsmi.amdsmi_get_gpu_vram_usage(g.handle)
        used = _number(info.get("vram_used")) if isinstance(info, Mapping) else None
        return None if used is None else used * 2**20  # MB

    def _utilization(self, g: _Gcd) -> float | None:
        info = self._amdsmi.amdsmi_get_gpu_activity(g.handle)
        busy = _number(info.get("gfx_activity")) if isinstance(info, Mapping) else None
        return busy if busy is not None and busy <= 100 else None

    def _temperature(self, g: _Gcd) -> float | None:
        kinds = getattr(self._amdsmi, "AmdSmiTemperatureType", None)
        metric = getattr(getattr(self._amdsmi, "AmdSmiTemperatureMetric", None), "CURRENT", None)
        if kinds is None or metric is None:
            return None
        for name in ("HOTSPOT", "EDGE"):
            sensor = getattr(kinds, name, None)
            if sensor is None:
                continue
            try:
                value = _number(self._amdsmi.amdsmi_get_temp_metric(g.handle, sensor, metric))
            except self._amdsmi_error as exc:
                if _unsupported(exc):
                    continue
                raise
            if value is not None and 0 < value < 200:  # °C; 0 is "no sensor" on some parts
                return value
        return None

    def _gauge_power(self, p: _Package) -> float | None:
        if p.integrated:
            return p.integrator.last_power_w
        values = [self._power_w(g) for g in p.counting if not g.silent]
        numbers = [v for v in values if v is not None]
        return sum(numbers) if numbers else None

    # -- lifecycle and facts -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(self._info)
        if any(p.integrated for p in self._packages):
            out["poll_hz"] = self._poll_hz
        return out

    def close(self) -> None:
        """Stop the polling thread and shut amdsmi down (once; idempotent)."""
        self._stop_poller()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _shutdown(self._amdsmi)


#: Gauges per channel (suffixes of ``<channel id>_``), as NVML's.
GAUGES = ("memory_used_bytes", "utilization_pct", "temperature_c", "power_w")


# -- discovery -------------------------------------------------------------------------------
def _driver_paths(ctx: DiscoveryContext) -> tuple[str, ...]:
    return (DRIVER_DEVICE, str(Path(ctx.sysfs_root) / DRIVER_MODULE))


def _load(ctx: DiscoveryContext) -> Any:
    if ctx.amdsmi is not None:
        return ctx.amdsmi
    import amdsmi  # ROCm's bindings; loads libamd_smi.so

    return amdsmi


def discover(
    ctx: DiscoveryContext,
    *,
    poll_hz: float = DEFAULT_POLL_HZ,
    clock: Callable[[], float] | None = None,
    start_poller: bool = True,
    first_index: int = 0,
    driver_paths: tuple[str, ...] | None = None,
) -> list[Probe | Unavailable]:
    """Open amdsmi and return one :class:`AmdSmiProbe` for the visible AMD GPUs, plus an
    :class:`Unavailable` for anything that cannot be measured (never raises for hardware
    trouble: amdsmi missing, no GPU, a hidden or unmeasurable GPU are all data).

    ``poll_hz``: power polling rate of the ``integrated`` method (>= 20 Hz). ``clock`` and
    ``start_poller=False`` let tests drive the integration deterministically via
    :meth:`AmdSmiProbe.poll`. ``first_index``: the number of the first channel (``gpu<N>``),
    for the registry to number AMD GPUs after other vendors' on the same machine.
    ``driver_paths``: files whose existence shows a loaded AMD GPU driver (default
    ``/dev/kfd`` and ``<ctx.sysfs_root>/module/amdgpu``); when none exists and no ``amdsmi``
    module is injected, amdsmi is not even imported.
    """
    if poll_hz < MIN_POLL_HZ:
        raise ConfigError(f"amdsmi poll_hz is {poll_hz!r}; accepted: at least "
                          f"{MIN_POLL_HZ:g} Hz (default {DEFAULT_POLL_HZ:g})")
    if isinstance(first_index, bool) or not isinstance(first_index, int) or first_index < 0:
        raise ConfigError(f"amdsmi first_index is {first_index!r}; accepted: an integer >= 0")
    paths = _driver_paths(ctx) if driver_paths is None else driver_paths
    if ctx.amdsmi is None and not any(os.path.exists(p) for p in paths):
        return [Unavailable(SOURCE, "no AMD GPU driver is visible to this process (none of "
                                    f"{', '.join(paths)} exists)", _NO_DRIVER_HINT)]
    try:
        amdsmi = _load(ctx)
    except ImportError as exc:
        return [Unavailable(SOURCE, f"the amdsmi Python package is not installed ({exc})",
                            _INSTALL_HINT)]
    except Exception as exc:  # e.g. OSError: libamd_smi.so missing or from another ROCm
        return [Unavailable(SOURCE, f"the amdsmi package could not be loaded ({_describe(exc)})",
                            "install the amdsmi package matching the installed ROCm "
                            "(`amd-smi version` shows it); " + _INSTALL_HINT)]
    errors = (AttributeError, *_errors(amdsmi))
    try:
        flags = getattr(getattr(amdsmi, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
        if flags is None:
            amdsmi.amdsmi_init()
        else:
            amdsmi.amdsmi_init(flags)
    except errors as exc:
        log.debug("amdsmi unavailable: %r", exc)
        return [_init_unavailable(exc)]
    try:
        found = _open(amdsmi, ctx, poll_hz=poll_hz, clock=clock or time.monotonic,
                      start_poller=start_poller, first_index=first_index)
    except BaseException:
        _shutdown(amdsmi)
        raise
    if not any(isinstance(r, AmdSmiProbe) for r in found):
        _shutdown(amdsmi)
    return found


def _init_unavailable(exc: BaseException) -> Unavailable:
    code = _code(exc)
    if code == _STATUS_NO_PERM:
        return Unavailable(SOURCE, f"no permission to open the AMD GPU devices ({_describe(exc)})",
                           "add this user to the 'render' and 'video' groups (`sudo usermod "
                           "-aG render,video $USER`, then log in again); in a container pass "
                           "--device=/dev/kfd --device=/dev/dri --group-add render")
    if code == _STATUS_DRIVER_NOT_LOADED:
        return Unavailable(SOURCE, f"the amdgpu kernel driver is not loaded ({_describe(exc)})",
                           "load it (`sudo modprobe amdgpu`) or reboot after installing ROCm; "
                           "`amd-smi list` must work")
    return Unavailable(SOURCE, f"amdsmi_init failed: {_describe(exc)}",
                       "check that `amd-smi list` works for this user (groups render and "
                       "video) and that the amdsmi package matches the installed ROCm")


def _shutdown(amdsmi: Any) -> None:
    try:
        amdsmi.amdsmi_shut_down()
    except (AttributeError, *_errors(amdsmi)) as exc:
        log.debug("amdsmi_shut_down failed: %r", exc)


def _optional(amdsmi: Any, call: Callable[[], Any]) -> Any:
    """``call()``, or None when it raises an amdsmi error (or the function is missing)."""
    try:
        return call()
    except (AttributeError, *_errors(amdsmi)):
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _enumerate(amdsmi: Any, handles: Sequence[Any]) -> list[_Gcd]:
    gcds = []
    for i, h in enumerate(handles):
        asic = _mapping(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_asic_info(h)))
        board = _mapping(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_board_info(h)))
        uuid = _text(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_device_uuid(h)))
        bdf = _text(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_device_bdf(h)))
        unique = _unique_id(asic)
        rocm_uuid = (f"GPU-{unique}" if unique else
                     f"GPU-{uuid.removeprefix('GPU-')}" if uuid else f"GPU-amdsmi-{i}")
        name = (_text(asic.get("market_name")) or _text(board.get("product_name"))
                or "AMD GPU")
        gcds.append(_Gcd(index=i, handle=h, uuid=uuid, rocm_uuid=rocm_uuid, bdf=bdf, name=name,
                         serial=_serial(board.get("product_serial"))))
    return gcds


def _package_keys(gcds: Sequence[_Gcd]) -> tuple[list[str], list[str]]:
    """The package of each device (see the module docstring), and warnings."""
    warnings: list[str] = []
    by_serial: dict[str, int] = {}
    for g in gcds:
        if g.serial:
            by_serial[g.serial] = by_serial.get(g.serial, 0) + 1
    placeholders = {s for s, n in by_serial.items() if n > MAX_DEVICES_PER_PACKAGE}
    for s in sorted(placeholders):
        warnings.append(f"{by_serial[s]} AMD GPUs report the same board serial {s!r}: taken "
                        "as a placeholder, not as one package")
    keys = []
    for g in gcds:
        if g.serial and g.serial not in placeholders:
            keys.append(f"board:{g.serial}")
        elif _bdf_device(g.bdf):
            keys.append(f"pci:{_bdf_device(g.bdf)}")
        else:
            keys.append(f"device:{g.index}")
    return keys, warnings


def _rename(text: str, variable: str) -> str:
    return text.replace("CUDA_VISIBLE_DEVICES", variable).replace("NVML sees", "amdsmi sees")


def _select(value: str | None, gcds: Sequence[_Gcd], variable: str
            ) -> tuple[list[int], list[str]]:
    """Positions in ``gcds`` that ``variable=value`` keeps, in its order, and warnings.
    Raises ConfigError (worded for ``variable``) on an invalid first entry."""
    if value is not None:
        # An entry naming the amdsmi UUID (what `amd-smi list` shows) means that GPU too.
        by_uuid = {g.uuid.lower().removeprefix("gpu-"): g.rocm_uuid for g in gcds if g.uuid}
        parts = []
        for part in value.split(","):
            key = part.strip().lower().removeprefix("gpu-")
            parts.append(by_uuid.get(key, part) if key else part)
        value = ",".join(parts)
    identities = [GpuIdentity(pos, g.rocm_uuid, g.name) for pos, g in enumerate(gcds)]
    try:
        selection = select_visible(value, identities)
    except ConfigError as exc:
        raise ConfigError(_rename(str(exc), variable)) from None
    return ([v.nvml_index for v in selection.gpus],
            [_rename(w, variable) for w in selection.warnings])


def _visible(env: Mapping[str, str], gcds: Sequence[_Gcd]
             ) -> tuple[list[int], list[str], str | None]:
    """amdsmi indices this process sees, in its HIP order; warnings; the variable that hid
    every GPU (None if some are visible). Raises ConfigError naming the variable at fault."""
    rocr = env.get("ROCR_VISIBLE_DEVICES")
    inner_var = next((v for v in VISIBLE_VARIABLES[1:] if v in env), None)
    inner = env.get(inner_var) if inner_var else None
    chosen, warnings = _select(rocr, gcds, "ROCR_VISIBLE_DEVICES")
    if not chosen:
        return [], warnings, "ROCR_VISIBLE_DEVICES"
    if inner is not None and inner_var is not None and (
            rocr is None or inner.strip() != rocr.strip()):  # the same list set twice: once
        positions, more = _select(inner, [gcds[i] for i in chosen], inner_var)
        chosen = [chosen[p] for p in positions]
        warnings += more
        if not chosen:
            return [], warnings, inner_var
    return chosen, warnings, None


def _power_key(amdsmi: Any, handle: Any) -> str | None:
    info = _mapping(_optional(amdsmi, lambda: amdsmi.amdsmi_get_power_info(handle)))
    return next((k for k in POWER_KEYS if _number(info.get(k)) is not None), None)


def _open(amdsmi: Any, ctx: DiscoveryContext, *, poll_hz: float, clock: Callable[[], float],
          start_poller: bool, first_index: int) -> list[Probe | Unavailable]:
    errors = (AttributeError, *_errors(amdsmi))
    try:
        handles = list(amdsmi.amdsmi_get_processor_handles() or [])
    except errors as exc:
        return [Unavailable(SOURCE, f"amdsmi could not list the GPUs: {_describe(exc)}",
                            "check that `amd-smi list` lists the GPUs for this user")]
    except TypeError as exc:  # not a sequence
        return [Unavailable(SOURCE, f"amdsmi listed the GPUs oddly: {exc}",
                            "check that the amdsmi package matches the installed ROCm")]
    if not handles:
        return [Unavailable(SOURCE, "amdsmi found no AMD GPU",
                            "check `amd-smi list`; in a container pass --device=/dev/kfd "
                            "--device=/dev/dri")]
    gcds = _enumerate(amdsmi, handles)
    try:
        visible, warnings, hid_all = _visible(ctx.env, gcds)
    except ConfigError as exc:
        log.warning("%s", exc)
        var = next((v for v in VISIBLE_VARIABLES if v in str(exc)), "HIP_VISIBLE_DEVICES")
        return [Unavailable(SOURCE, str(exc),
                            f"fix or unset {var} (`amd-smi list` shows the GPUs; rocminfo "
                            "their GPU-<id> UUIDs)")]
    if hid_all is not None:
        return [Unavailable(SOURCE, f"{hid_all} hides every GPU",
                            f"{hid_all}={ctx.env.get(hid_all)!r}; unset it or list the GPUs to "
                            f"measure (e.g. {hid_all}=0)")]
    for hip_index, i in enumerate(visible):
        gcds[i].visible, gcds[i].hip_index = True, hip_index
    keys, more = _package_keys(gcds)
    warnings += more

    # Packages in the order of their first visible device.
    order: list[str] = []
    for i in visible:
        if keys[i] not in order:
            order.append(keys[i])
    packages: list[_Package] = []
    missing: list[Unavailable] = []
    for key in order:
        members = [g for g, k in zip(gcds, keys, strict=True) if k == key]
        cid = f"gpu{first_index + len(packages)}"
        package, notes = _open_package(amdsmi, cid, key, members, poll_hz, clock)
        if package is None:
            first = next(g for g in members if g.visible)
            missing.append(Unavailable(
                SOURCE, f"AMD GPU {first.index} ({first.name}, {first.bdf or '?'}) reports "
                        "neither an energy counter nor socket power",
                "check `amd-smi metric --energy --power`; a VM guest may not expose them"))
            continue
        packages.append(package)
        warnings += notes
    if not packages:
        return list(missing)
    info: dict[str, Any] = {}
    driver = _mapping(_optional(amdsmi, lambda: amdsmi.amdsmi_get_gpu_driver_info(handles[0])))
    if _text(driver.get("driver_version")):
        info["driver_version"] = _text(driver.get("driver_version"))
    lib = _mapping(_optional(amdsmi, lambda: amdsmi.amdsmi_get_lib_version()))
    if all(isinstance(lib.get(k), int) for k in ("year", "major", "minor")):
        info["amdsmi_version"] = f"{lib['year']}.{lib['major']}.{lib['minor']}"
    probe = AmdSmiProbe(amdsmi, packages, poll_hz=poll_hz, clock=clock,
                        start_poller=start_poller, info=info)
    for message in warnings:
        log.warning("%s", message)
        probe.warn(message)
    return [probe, *missing]


def _open_package(amdsmi: Any, cid: str, key: str, members: list[_Gcd], poll_hz: float,
                  clock: Callable[[], float]) -> tuple[_Package | None, list[str]]:
    """The channel of one package and the warnings it needs; None if it cannot be measured."""
    notes: list[str] = []
    readings: dict[int, tuple[int, float]] = {}
    for g in members:
        info = _optional(amdsmi, lambda g=g: amdsmi.amdsmi_get_energy_count(g.handle))
        reading = _energy_reading(info)
        if reading is not None:
            readings[g.index] = reading
    visible = [g for g in members if g.visible]
    first = visible[0]
    meta: dict[str, Any] = {"amdsmi_index": first.index, "hip_index": first.hip_index,
                            "uuid": first.uuid, "rocm_uuid": first.rocm_uuid, "bdf": first.bdf,
                            "name": first.name, "package": key}
    if readings:
        # Every device with a counter counts (a 0 that stays 0 adds nothing); identical
        # non-zero readings are one counter seen through several devices: counted once.
        counting: list[_Gcd] = []
        seen: set[tuple[int, float]] = set()
        for g in members:
            reading = readings.get(g.index)
            if reading is None or (reading[0] and reading in seen):
                continue
            seen.add(reading)
            g.resolution_uj = reading[1]
            g.counter = CumulativeCounter(reading[0], COUNTER_MODULUS)
            g.last_t_s = clock()
            counting.append(g)
        moving = [g for g in counting if readings[g.index][0] > 0]
        duplicates = [g for g in members if g.index in readings and g not in counting]
        for g in members:
            g.silent = bool(moving) and readings.get(g.index, (0, 0.0))[0] == 0
        if duplicates:
            meta["duplicate_gcds"] = [g.index for g in duplicates]
        method, resolution_s = "counter", COUNTER_UPDATE_PERIOD_S
        meta["counter_resolution_uj"] = readings[counting[0].index][1]
    else:
        for g in members:
            g.power_key = _power_key(amdsmi, g.handle)
        counting = [g for g in members if g.power_key]
        if not counting:
            return None, notes
        for g in members:
            g.silent = g.power_key is None
        method, resolution_s = "integrated", 1.0 / poll_hz
        meta["power_source"] = counting[0].power_key
    if len(members) > 1:
        meta["gcds"] = [g.describe() for g in members]
        meta["package_share"] = len(visible) / len(members)
    silent = [g for g in members if g.silent]
    if silent:
        meta["silent_gcds"] = [g.index for g in silent]
    silent = [g for g in silent if g.visible]  # said when this process sees one
    channel = Channel(id=cid, kind="gpu", device=first.name, source=SOURCE, method=method,
                      resolution_s=resolution_s, meta=meta)

    if silent:
        def label(gcds: list[_Gcd]) -> str:
            return ", ".join(f"{g.index} ({g.bdf or '?'})" for g in gcds)

        what = ("energy counter reads 0" if method == "counter" and silent[0].index in readings
                else "has no energy counter" if method == "counter" else "power reads N/A")
        notes.append(
            f"{cid}: GCD/partition {label(silent)} of this {first.name} package reports no "
            f"energy of its own ({what}; on MI250/MI250X one GCD carries the whole "
            f"package's energy and the other reads 0): {cid} is the package, measured once "
            f"from {label([g for g in members if not g.silent])}, so a busy GCD is never "
            "shown at 0 W")
    hidden = [g for g in members if not g.visible]
    if hidden:
        notes.append(
            f"{cid}: GCD(s) {', '.join(str(g.index) for g in hidden)} of this {first.name} "
            "package are not visible to this process, but energy is measured per package: "
            f"{cid}'s energy includes theirs (shared with whatever runs there); "
            f"meta.package_share = {len(visible)}/{len(members)} is the visible GCDs' share by "
            "count, an attribution, not a measurement")
    if len(members) == 1 and method == "counter" and readings[first.index][0] == 0 \
            and _power_key(amdsmi, first.handle) is None:
        notes.append(
            f"{cid}: the energy counter of {first.name} ({first.bdf or '?'}) reads 0 and it "
            "reports no power: if it is the second GCD of an MI250/MI250X whose package could "
            "not be identified (no board serial), its energy is on the other GCD and "
            f"{cid} may show 0 J for a busy GPU; make the other GCD visible too")
    return _Package(channel=channel, gcds=members, counting=counting), notes
