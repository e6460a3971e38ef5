"""A fake ``amdsmi`` module for tests: simulated AMD GPUs driven by a clock.

Pass an instance as ``DiscoveryContext(amdsmi=FakeAmdSmi(...))``; it is never put into
``sys.modules``. It implements the amdsmi calls energymeter uses with the real names, return
dicts (keys and units of ROCm 6.2+'s ``amdsmi_interface.py``), enums, status codes and the
``AmdSmiException`` hierarchy, and behaves like the hardware where it matters:

* each :class:`FakeAmdGpu` has a power trace (``power_w``: watts, or a callable ``t_s -> W``,
  ``t_s`` seconds since the fake was made) and an energy accumulator in units of
  ``resolution_uj`` (15.3 µJ, returned as the float32 the C library gives) that only moves
  every ``counter_period_s`` (1 ms);
* energy: ``energy="counter"`` (default), ``"unsupported"`` (AMDSMI_STATUS_NOT_SUPPORTED: the
  power fallback) or ``"zero"`` (an MI250 secondary GCD: reads 0 forever); ``counts_for``
  makes a device's counter integrate several devices' power (the primary GCD of an MI250
  carries the package); ``counter_offset`` near 2**64 makes it wrap; ``reset_at_s`` restarts it
  from 0 (GPU reset); ``legacy_energy_key`` returns ROCm <= 6.1's ``power`` key only;
* power: ``power="current"`` (MI300: ``current_socket_power``), ``"average"`` (MI200, Navi:
  ``average_socket_power``, the other "N/A"), ``"none"`` (both "N/A": a secondary GCD); integer
  watts, as the real struct;
* package layouts: :func:`mi250x` (two GCDs per OAM sharing a board serial, the second
  silent), :func:`mi300x_cpx` (partitions of one socket: board serial "N/A", one PCI device,
  functions 0..n-1, only partition 0 reports);
* injection: ``init_error`` (a status name), :meth:`FakeAmdSmi.fail` (a call raises a status,
  for ever or ``times`` times), :meth:`FakeAmdSmi.override` (a call returns an odd value).

Time comes from ``clock`` (default ``time.monotonic``); ``tests.fakes.nvml.FakeClock`` makes
runs exact. Truth: :meth:`FakeAmdSmi.energy_j` (the exact integral of a device's power),
:meth:`FakeAmdSmi.counter_raw` (the accumulator at a time).
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

# -- status codes (amdsmi_wrapper.py) ------------------------------------------------------
AMDSMI_STATUS_SUCCESS = 0
AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3
AMDSMI_STATUS_FAIL_LOAD_MODULE = 4
AMDSMI_STATUS_DRM_ERROR = 6
AMDSMI_STATUS_API_FAILED = 7
AMDSMI_STATUS_TIMEOUT = 8
AMDSMI_STATUS_RETRY = 9
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_IO = 12
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_BUSY = 30
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34
AMDSMI_STATUS_NO_DATA = 40
AMDSMI_STATUS_UNKNOWN_ERROR = 4294967295

STATUS = {name.removeprefix("AMDSMI_STATUS_"): value for name, value in globals().items()
          if name.startswith("AMDSMI_STATUS_")}
_STATUS_NAMES = {value: name for name, value in STATUS.items()}


# -- exceptions (amdsmi_exception.py) ----------------------------------------------------------
class AmdSmiException(Exception):
    """Base smi exception class."""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = f"AMDSMI_STATUS_{_STATUS_NAMES.get(err_code, 'UNKNOWN_ERROR')}"

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_code(self) -> int:
        return self.err_code

    def get_error_info(self) -> str:
        return self.err_info


class AmdSmiRetryException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(AMDSMI_STATUS_RETRY)


class AmdSmiTimeoutException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(AMDSMI_STATUS_TIMEOUT)


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, received: Any, expected: Any, msg: str | None = None) -> None:
        super().__init__(msg)
        self.err_code = None
        self.err_msg = msg or (f"Invalid parameter:\nActual type: {type(received)}\n"
                               f"Expected type: {expected}")

    def __str__(self) -> str:
        return self.err_msg


class AmdSmiKeyException(AmdSmiException):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __str__(self) -> str:
        return f"Key {self.key} is missing from dictionary"


class AmdSmiBdfFormatException(AmdSmiException):
    def __init__(self, bdf: str) -> None:
        super().__init__()
        self.bdf = bdf

    def __str__(self) -> str:
        return f"Wrong BDF format: {self.bdf}"


def error(status: str) -> AmdSmiLibraryException:
    """``AmdSmiLibraryException`` for a status name (``"NO_PERM"``, ``"NOT_SUPPORTED"``...)."""
    code = STATUS[status.removeprefix("AMDSMI_STATUS_")]
    if code == AMDSMI_STATUS_RETRY:
        return AmdSmiRetryException()
    if code == AMDSMI_STATUS_TIMEOUT:
        return AmdSmiTimeoutException()
    return AmdSmiLibraryException(code)


# -- enums (amdsmi_interface.py) -------------------------------------------------------------
class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_AMD_APUS = 3
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2
    HBM_0 = 3
    HBM_1 = 4
    HBM_2 = 5
    HBM_3 = 6
    PLX = 7


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1
    MIN = 2
    CRITICAL = 5


def float32(value: float) -> float:
    """``value`` as the C ``float`` amdsmi returns it (15.3 -> 15.300000190734863)."""
    return struct.unpack("f", struct.pack("f", value))[0]


# -- simulated hardware ------------------------------------------------------------------------
@dataclass
class FakeAmdGpu:
    """One device amdsmi enumerates (a GPU, an MI250 GCD, an MI300X partition)."""

    name: str = "AMD Instinct MI300X"
    power_w: float | Callable[[float], float] = 300.0
    bdf: str | None = None
    asic_serial: int | None = None  # the unique id; None: derived from the index
    board_serial: str | None = None  # None: unique per device; "N/A" like an empty FRU
    device_id: int = 0x74A1
    resolution_uj: float = 15.3
    counter_period_s: float = 0.001
    counter_offset: int = 1_234_567_890
    energy: str = "counter"  # "counter" | "unsupported" | "zero"
    counts_for: list[int] | None = None  # device indices whose power the counter integrates
    reset_at_s: float | None = None
    legacy_energy_key: bool = False
    power: str = "current"  # "current" | "average" | "none"
    vram_total_mb: int = 196_592
    vram_used_mb: int = 2_048
    gfx_activity: int | str = 37
    temperatures: dict[str, int] = field(default_factory=lambda: {"HOTSPOT": 52, "EDGE": 0})
    partition_id: int = 0

    def power_at(self, t_s: float) -> float:
        p = self.power_w
        return float(p(max(t_s, 0.0))) if callable(p) else float(p)


@dataclass(frozen=True)
class FakeProcessorHandle:
    """Stands for amdsmi's ``amdsmi_processor_handle`` (an opaque pointer)."""

    index: int


def _simpson(f: Callable[[float], float], a: float, b: float, n: int) -> float:
    n += n % 2
    h = (b - a) / n
    total = f(a) + f(b)
    for i in range(1, n):
        total += (4 if i % 2 else 2) * f(a + i * h)
    return total * h / 3


class _Energy:
    """Cumulative joules of a sum of power traces at the counter's update boundaries."""

    SUBSTEPS = 4  # Simpson panels per update period (traces are smooth at 1 ms)

    def __init__(self, traces: Sequence[FakeAmdGpu], period_s: float) -> None:
        self.traces = list(traces)
        self.period_ns = round(period_s * 1e9)
        self.constant = all(not callable(t.power_w) for t in self.traces)
        self.energy_j = [0.0]

    def power(self, t_s: float) -> float:
        return sum(t.power_at(t_s) for t in self.traces)

    def at_update(self, k: int) -> float:
        if self.constant:
            return self.power(0.0) * k * self.period_ns / 1e9
        while len(self.energy_j) <= k:
            j = len(self.energy_j) - 1
            a, b = j * self.period_ns / 1e9, (j + 1) * self.period_ns / 1e9
            self.energy_j.append(self.energy_j[-1] + _simpson(self.power, a, b, self.SUBSTEPS))
        return self.energy_j[k]


class FakeAmdSmi:
    """The fake ``amdsmi`` module. Knobs: ``gpus`` (amdsmi enumeration order), ``clock``,
    ``init_error`` (a status name, e.g. ``"NO_PERM"``, ``"DRIVER_NOT_LOADED"``), ``driver_version``.

    Introspection: ``calls`` (a Counter of function names), ``init_count``, ``shutdown_count``,
    :meth:`elapsed_s`, :meth:`counter_raw`, :meth:`energy_j`, :meth:`fail`,
    :meth:`override`, :meth:`clear`.
    """

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiRetryException = AmdSmiRetryException
    AmdSmiTimeoutException = AmdSmiTimeoutException
    AmdSmiParameterException = AmdSmiParameterException
    AmdSmiKeyException = AmdSmiKeyException
    AmdSmiBdfFormatException = AmdSmiBdfFormatException
    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric

    def __init__(self, gpus: Iterable[FakeAmdGpu] = (), *, clock: Callable[[], float] | None = None,
                 init_error: str | None = None, driver_version: str = "6.8.5") -> None:
        self.gpus = list(gpus)
        for i, g in enumerate(self.gpus):
            if g.bdf is None:
                g.bdf = f"0000:{0x0C + 0x10 * i:02x}:00.0"
            if g.asic_serial is None:
                g.asic_serial = 0x5E1A_0000_0000_0000 + 0x1_0000_1001 * (i + 1)
            if g.board_serial is None:
                g.board_serial = f"PCB{1000 + i:05d}-{i:04d}"
        self.clock = clock or time.monotonic
        self.t0_s = self.clock()
        self.init_error = init_error
        self.driver_version = driver_version
        self.calls: Counter[str] = Counter()
        self.init_count = 0
        self.shutdown_count = 0
        self._refcount = 0
        self._failures: dict[tuple[int | None, str], tuple[str, int | None]] = {}
        self._overrides: dict[tuple[int, str], Any] = {}
        self._energy = [self._model(g) for g in self.gpus]
        self.lock = threading.RLock()

    def _model(self, g: FakeAmdGpu) -> _Energy:
        members = [self.gpus[i] for i in g.counts_for] if g.counts_for is not None else [g]
        return _Energy(members, g.counter_period_s)

    # -- test helpers ---------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Simulated time: seconds since the fake was made."""
        return self.clock() - self.t0_s

    def uuid(self, index: int) -> str:
        """The amdsmi UUID of device ``index`` (laid out as amdsmi_uuid_gen does)."""
        g = self.gpus[index]
        serial = g.asic_serial or 0
        return (f"ff{g.device_id:04x}{(serial >> 56) & 0xFF:02x}-0000-1000-80"
                f"{(serial >> 48) & 0xFF:02x}-{serial & 0xFFFF_FFFF_FFFF:012x}")

    def rocm_uuid(self, index: int) -> str:
        """``GPU-<unique id>``, as rocminfo shows it and ROCR/HIP_VISIBLE_DEVICES accept."""
        return f"GPU-{self.gpus[index].asic_serial:x}"

    def resolution(self, index: int) -> float:
        return float32(self.gpus[index].resolution_uj)

    def counter_raw(self, index: int, t_s: float | None = None) -> int:
        """The accumulator of device ``index`` at simulated time ``t_s`` (default now)."""
        with self.lock:
            g = self.gpus[index]
            if g.energy == "zero":
                return 0
            model = self._energy[index]
            t = self.elapsed_s() if t_s is None else t_s
            k = max(0, round(t * 1e9) // model.period_ns)
            energy_j = model.at_update(k)
            res = self.resolution(index)
            if g.reset_at_s is not None and t >= g.reset_at_s:
                k_reset = round(g.reset_at_s * 1e9) // model.period_ns
                return math.floor((energy_j - model.at_update(k_reset)) * 1e6 / res)
            return (g.counter_offset + math.floor(energy_j * 1e6 / res)) % 2**64

    def energy_j(self, index: int, t0_s: float, t1_s: float, steps: int = 20_000) -> float:
        """The exact energy of device ``index``'s own power trace between simulated times."""
        g = self.gpus[index]
        if not callable(g.power_w):
            return float(g.power_w) * (t1_s - t0_s)
        return _simpson(g.power_at, t0_s, t1_s, steps)

    def fail(self, index: int | None, function: str, status: str,
             times: int | None = None) -> None:
        """``function`` (on device ``index``; None: on every device) raises ``status``, for
        ever or the next ``times`` calls."""
        with self.lock:
            self._failures[(index, function)] = (status, times)

    def override(self, index: int, function: str, value: Any) -> None:
        """``function`` on device ``index`` returns ``value`` (or ``value()`` if callable)."""
        with self.lock:
            self._overrides[(index, function)] = value

    def clear(self) -> None:
        with self.lock:
            self._failures.clear()
            self._overrides.clear()

    # -- plumbing ---------------------------------------------------------------------------
    def _enter(self, function: str, handle: Any = None) -> FakeAmdGpu | None:
        self.calls[function] += 1
        if self._refcount <= 0:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        index = None
        if handle is not None:
            if not isinstance(handle, FakeProcessorHandle):
                raise AmdSmiParameterException(handle, FakeProcessorHandle)
            index = handle.index
        for key in ((index, function), (None, function)):
            failure = self._failures.get(key)
            if failure is None:
                continue
            status, times = failure
            if times is not None:
                if times <= 1:
                    del self._failures[key]
                else:
                    self._failures[key] = (status, times - 1)
            raise error(status)
        return None if index is None else self.gpus[index]

    def _odd(self, handle: FakeProcessorHandle, function: str) -> tuple[bool, Any]:
        if (handle.index, function) not in self._overrides:
            return False, None
        value = self._overrides[(handle.index, function)]
        return True, value() if callable(value) else value

    # -- library --------------------------------------------------------------------------------
    def amdsmi_init(self, flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        with self.lock:
            self.calls["amdsmi_init"] += 1
            if not isinstance(flag, AmdSmiInitFlags):
                raise AmdSmiParameterException(flag, AmdSmiInitFlags)
            if self.init_error is not None:
                raise error(self.init_error)
            self.init_count += 1
            self._refcount += 1

    def amdsmi_shut_down(self) -> None:
        with self.lock:
            self._enter("amdsmi_shut_down")
            self.shutdown_count += 1
            self._refcount -= 1

    def amdsmi_get_lib_version(self) -> dict[str, Any]:
        with self.lock:
            self._enter("amdsmi_get_lib_version")
            return {"year": 24, "major": 7, "minor": 1, "release": 0, "build": "0"}

    def amdsmi_get_processor_handles(self) -> list[FakeProcessorHandle]:
        with self.lock:
            self._enter("amdsmi_get_processor_handles")
            return [FakeProcessorHandle(i) for i in range(len(self.gpus))]

    # -- identity -----------------------------------------------------------------------------
    def amdsmi_get_gpu_device_uuid(self, handle: FakeProcessorHandle) -> str:
        with self.lock:
            self._enter("amdsmi_get_gpu_device_uuid", handle)
            odd, value = self._odd(handle, "amdsmi_get_gpu_device_uuid")
            return value if odd else self.uuid(handle.index)

    def amdsmi_get_gpu_device_bdf(self, handle: FakeProcessorHandle) -> str:
        with self.lock:
            g = self._enter("amdsmi_get_gpu_device_bdf", handle)
            return g.bdf  # type: ignore[union-attr,return-value]

    def amdsmi_get_gpu_asic_info(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_gpu_asic_info", handle)
            assert g is not None
            odd, value = self._odd(handle, "amdsmi_get_gpu_asic_info")
            if odd:
                return value
            return {"market_name": g.name, "vendor_id": "0x1002",
                    "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                    "subvendor_id": "0x1002", "device_id": hex(g.device_id), "rev_id": "0x00",
                    "asic_serial": f"0x{g.asic_serial:016X}", "oam_id": handle.index,
                    "num_compute_units": 304, "target_graphics_version": "gfx942"}

    def amdsmi_get_gpu_board_info(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_gpu_board_info", handle)
            assert g is not None
            return {"model_number": "102-G30211-0C", "product_serial": g.board_serial,
                    "fru_id": "N/A", "product_name": g.name, "manufacturer_name": "AMD"}

    def amdsmi_get_gpu_kfd_info(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_gpu_kfd_info", handle)
            assert g is not None
            return {"kfd_id": 1000 + handle.index, "node_id": 2 + handle.index,
                    "current_partition_id": g.partition_id}

    def amdsmi_get_gpu_driver_info(self, handle: FakeProcessorHandle) -> dict[str, str]:
        with self.lock:
            self._enter("amdsmi_get_gpu_driver_info", handle)
            return {"driver_name": "amdgpu", "driver_version": self.driver_version,
                    "driver_date": "2015/01/01 00:00"}

    # -- energy and power ---------------------------------------------------------------------
    def amdsmi_get_energy_count(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_energy_count", handle)
            assert g is not None
            odd, value = self._odd(handle, "amdsmi_get_energy_count")
            if odd:
                return value
            if g.energy == "unsupported":
                raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
            raw = self.counter_raw(handle.index)
            out: dict[str, Any] = {"power": raw}
            if not g.legacy_energy_key:
                out["energy_accumulator"] = raw
            out["counter_resolution"] = self.resolution(handle.index)
            out["timestamp"] = round(self.clock() * 1e9)
            return out

    def amdsmi_get_power_info(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_power_info", handle)
            assert g is not None
            odd, value = self._odd(handle, "amdsmi_get_power_info")
            if odd:
                return value
            # A device whose counter carries several (an MI250 primary GCD) reports their sum.
            watts = round(self._energy[handle.index].power(self.elapsed_s()))
            return {"current_socket_power": watts if g.power == "current" else "N/A",
                    "average_socket_power": watts if g.power == "average" else "N/A",
                    "gfx_voltage": "N/A", "soc_voltage": "N/A", "mem_voltage": "N/A",
                    "power_limit": 750}

    # -- gauges ---------------------------------------------------------------------------------
    def amdsmi_get_gpu_vram_usage(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_gpu_vram_usage", handle)
            assert g is not None
            odd, value = self._odd(handle, "amdsmi_get_gpu_vram_usage")
            if odd:
                return value
            return {"vram_total": g.vram_total_mb, "vram_used": g.vram_used_mb}

    def amdsmi_get_gpu_activity(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        with self.lock:
            g = self._enter("amdsmi_get_gpu_activity", handle)
            assert g is not None
            odd, value = self._odd(handle, "amdsmi_get_gpu_activity")
            if odd:
                return value
            return {"gfx_activity": g.gfx_activity, "umc_activity": 12, "mm_activity": "N/A"}

    def amdsmi_get_temp_metric(self, handle: FakeProcessorHandle,
                               sensor_type: AmdSmiTemperatureType,
                               metric: AmdSmiTemperatureMetric) -> int:
        with self.lock:
            g = self._enter("amdsmi_get_temp_metric", handle)
            assert g is not None
            if not isinstance(sensor_type, AmdSmiTemperatureType):
                raise AmdSmiParameterException(sensor_type, AmdSmiTemperatureType)
            if not isinstance(metric, AmdSmiTemperatureMetric):
                raise AmdSmiParameterException(metric, AmdSmiTemperatureMetric)
            value = g.temperatures.get(sensor_type.name)
            if value is None:
                raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
            return value


# -- layouts ---------------------------------------------------------------------------------
def mi250x(packages: int = 1, power_w: Sequence[float | Callable[[float], float]] = (),
           **kw: Any) -> list[FakeAmdGpu]:
    """``packages`` MI250X OAMs, two GCDs each (``power_w``: one trace per GCD, default 250 W).
    The GCDs of an OAM share its board serial and sit on different PCI buses; the first
    GCD's counter integrates both GCDs' power (the package), the second reads 0 and its power
    "N/A" (rocm-smi: "N/A (Secondary die)")."""
    gpus = []
    for p in range(packages):
        for d in range(2):
            i = 2 * p + d
            trace = power_w[i] if i < len(power_w) else 250.0
            gpus.append(FakeAmdGpu(
                name="AMD Instinct MI250X", power_w=trace, bdf=f"0000:{0xC1 + 0x10 * i:02x}:00.0",
                board_serial=f"PKG{p:04d}", device_id=0x740C,
                power="average" if d == 0 else "none", energy="counter" if d == 0 else "zero",
                counts_for=[i, i + 1] if d == 0 else None, **kw))
    return gpus


def mi300x_cpx(partitions: int = 4, power_w: float | Callable[[float], float] = 600.0,
               **kw: Any) -> list[FakeAmdGpu]:
    """One MI300X socket in ``partitions`` compute partitions: board serial "N/A", one PCI
    device whose functions are the partitions; partition 0 reports the socket's energy and
    power (``power_w`` is the socket's), the others have neither."""
    gpus = [FakeAmdGpu(name="AMD Instinct MI300X", power_w=power_w if i == 0 else 0.0,
                       bdf=f"0000:0c:00.{i}", board_serial="N/A", partition_id=i,
                       energy="counter" if i == 0 else "unsupported",
                       power="current" if i == 0 else "none", **kw)
            for i in range(partitions)]
    return gpus
