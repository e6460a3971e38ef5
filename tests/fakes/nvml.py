"""A fake ``pynvml`` module for tests: simulated NVIDIA GPUs driven by a clock.

Pass an instance as ``DiscoveryContext(pynvml=FakeNVML(...))``; it is never put into
``sys.modules``. It implements only the NVML calls energymeter uses, with nvidia-ml-py's names,
constants and ``NVMLError`` class hierarchy, and behaves like the hardware where it matters:

* each :class:`FakeGPU` has a power trace (``power_w``: watts, or a callable ``t_s -> W`` where
  ``t_s`` is seconds since the fake was made) and an energy counter (mJ since "driver load")
  that, like real GPUs, only moves every ``counter_period_s`` (100 ms by default);
* ``nvmlDeviceGetPowerUsage`` is a 1 s average on Ampere and newer, instantaneous before;
  ``nvmlDeviceGetFieldValues([NVML_FI_DEV_POWER_INSTANT])`` is instantaneous;
* injectable failures: ``init_error`` (e.g. ``"LibraryNotFound"``), a GPU lost at a time
  (``lost_at_s``), unsupported calls (``unsupported``), errors raised on demand
  (:meth:`FakeNVML.fail`), a counter that resets (``counter_reset_at_s``), MIG devices.

Time comes from ``clock`` (default ``time.monotonic``); :class:`FakeClock` makes runs exact.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# -- constants (values as in nvidia-ml-py) ------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

ARCH_CODES = {
    "kepler": 2, "maxwell": 3, "pascal": 4, "volta": 5, "turing": 6, "ampere": 7,
    "ada": 8, "hopper": 9, "blackwell": 10,
}


class NVMLError(Exception):
    """Base of the fake NVML errors; ``NVMLError(code)`` makes the matching subclass."""

    value: int = NVML_ERROR_UNKNOWN
    _by_code: dict[int, type[NVMLError]] = {}

    def __new__(cls, value: int | None = None) -> NVMLError:
        if cls is NVMLError and value is not None:
            cls = NVMLError._by_code.get(value, NVMLError)
        obj = Exception.__new__(cls)
        obj.value = cls.value if value is None else value
        return obj

    def __init__(self, value: int | None = None) -> None:
        super().__init__(self.value)

    def __str__(self) -> str:
        return f"{type(self).__name__.removeprefix('NVMLError_')} (NVML error {self.value})"


def _error_class(name: str, code: int) -> type[NVMLError]:
    cls = type(f"NVMLError_{name}", (NVMLError,), {"value": code})
    NVMLError._by_code[code] = cls
    return cls


NVMLError_Uninitialized = _error_class("Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_InvalidArgument = _error_class("InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_NotFound = _error_class("NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_DriverNotLoaded = _error_class("DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_Timeout = _error_class("Timeout", NVML_ERROR_TIMEOUT)
NVMLError_LibraryNotFound = _error_class("LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_LibRmVersionMismatch = _error_class("LibRmVersionMismatch",
                                              NVML_ERROR_LIB_RM_VERSION_MISMATCH)
NVMLError_Unknown = _error_class("Unknown", NVML_ERROR_UNKNOWN)

ERRORS: dict[str, type[NVMLError]] = {
    cls.__name__.removeprefix("NVMLError_"): cls for cls in NVMLError._by_code.values()
}


def error(name: str) -> NVMLError:
    """An instance of ``NVMLError_<name>`` (e.g. ``error("GpuIsLost")``)."""
    return ERRORS[name]()


# -- simulated hardware -----------------------------------------------------------------
class FakeClock:
    """A deterministic clock in seconds (kept as integer nanoseconds: no float drift)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.ns = round(start_s * 1e9)

    def __call__(self) -> float:
        return self.ns / 1e9

    def advance(self, dt_s: float) -> None:
        self.ns += round(dt_s * 1e9)

    sleep = advance


@dataclass
class FakeProcess:
    """A process using a GPU, as in ``nvmlDeviceGet{Compute,Graphics}RunningProcesses``.
    ``used_gpu_memory_bytes`` None mimics NVML's "not available"."""

    pid: int
    used_gpu_memory_bytes: int | None
    kind: str = "compute"  # or "graphics"


class StepTrace:
    """A power trace switched between two levels at recorded times (a fake GPU load)."""

    def __init__(self, idle_w: float, busy_w: float) -> None:
        self.idle_w = idle_w
        self.busy_w = busy_w
        self._times: list[float] = []
        self._busy: list[bool] = []

    def set(self, t_s: float, busy: bool) -> None:
        self._times.append(t_s)
        self._busy.append(busy)

    def __call__(self, t_s: float) -> float:
        import bisect

        i = bisect.bisect_right(self._times, t_s) - 1
        return self.busy_w if i >= 0 and self._busy[i] else self.idle_w


@dataclass
class FakeGPU:
    """One simulated GPU. ``arch`` None makes ``nvmlDeviceGetArchitecture`` NotSupported."""

    name: str = "NVIDIA H100 80GB HBM3"
    arch: str | None = "hopper"
    power_w: float | Callable[[float], float] = 100.0
    uuid: str | None = None
    pci_bus_id: str | None = None
    power_limit_w: float | None = 700.0
    memory_total_bytes: int = 80 * 2**30
    memory_used_bytes: int = 2 * 2**30
    utilization_pct: int = 42
    temperature_c: int = 45
    sm_clock_mhz: int = 1980
    processes: list[FakeProcess] = field(default_factory=list)
    mig_uuids: list[str] = field(default_factory=list)
    # SMs of the whole GPU and of each MIG device (nvmlDeviceGetAttributes), slices of each.
    multiprocessor_count: int = 132
    mig_multiprocessors: list[int] = field(default_factory=list)
    mig_slices: list[int] = field(default_factory=list)
    # None: as the hardware: energy counter on Volta and newer, POWER_INSTANT field on
    # Volta and newer, 1 s averaged nvmlDeviceGetPowerUsage on Ampere and newer.
    energy_counter: bool | None = None
    power_instant: bool | None = None
    power_usage_window_s: float | None = None
    counter_period_s: float = 0.1
    counter_offset_mj: int = 7_654_321
    counter_reset_at_s: float | None = None
    lost_at_s: float | None = None
    unsupported: set[str] = field(default_factory=set)

    @property
    def arch_code(self) -> int | None:
        return None if self.arch is None else ARCH_CODES[self.arch]

    def power_at(self, t_s: float) -> float:
        p = self.power_w
        return float(p(max(t_s, 0.0))) if callable(p) else float(p)


@dataclass(frozen=True)
class FakeHandle:
    index: int
    mig: int | None = None


class _GpuState:
    """Lazily integrated energy of one GPU at the counter's update boundaries."""

    SUBSTEPS = 64  # Simpson panels per counter period

    def __init__(self, gpu: FakeGPU) -> None:
        self.gpu = gpu
        self.period_ns = round(gpu.counter_period_s * 1e9)
        self.energy_j = [0.0]  # cumulative J at boundary k * period

    def energy_at_update(self, k: int) -> float:
        while len(self.energy_j) <= k:
            j = len(self.energy_j) - 1
            a = j * self.period_ns / 1e9
            b = (j + 1) * self.period_ns / 1e9
            self.energy_j.append(self.energy_j[-1] + _simpson(self.gpu.power_at, a, b,
                                                              self.SUBSTEPS))
        return self.energy_j[k]


def _simpson(f: Callable[[float], float], a: float, b: float, n: int) -> float:
    n += n % 2
    h = (b - a) / n
    total = f(a) + f(b)
    for i in range(1, n):
        total += (4 if i % 2 else 2) * f(a + i * h)
    return total * h / 3


def _fake_uuid(i: int) -> str:
    return f"GPU-{i:08x}-1111-2222-3333-{(i * 7919):012x}"


class FakeNVML:
    """The fake ``pynvml`` module. Knobs:

    ``gpus``: the simulated GPUs, NVML order. ``clock``: seconds (default ``time.monotonic``);
    simulated time ``t_s`` is ``clock() - clock()@construction``. ``init_error``: name of the
    NVMLError subclass ``nvmlInit`` raises (``"LibraryNotFound"``, ``"DriverNotLoaded"``,
    ``"NoPermission"``...). ``driver_version`` / ``nvml_version``: reported strings.

    Introspection: ``calls`` (a Counter of NVML function names), ``init_count``,
    ``shutdown_count``, :meth:`elapsed_s`, :meth:`counter_mj`, :meth:`energy_j`,
    :meth:`fail` / :meth:`clear_failures`. ``lock`` serialises the simulation (hold it to
    change a trace atomically with respect to NVML calls).
    """

    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_DEVICE_ARCH_KEPLER = 2
    NVML_DEVICE_ARCH_MAXWELL = 3
    NVML_DEVICE_ARCH_PASCAL = 4
    NVML_DEVICE_ARCH_VOLTA = 5
    NVML_DEVICE_ARCH_TURING = 6
    NVML_DEVICE_ARCH_AMPERE = 7
    NVML_DEVICE_ARCH_ADA = 8
    NVML_DEVICE_ARCH_HOPPER = 9
    NVML_DEVICE_ARCH_BLACKWELL = 10
    NVML_DEVICE_ARCH_UNKNOWN = 0xFFFFFFFF
    NVML_FI_DEV_POWER_AVERAGE = 185
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_VALUE_TYPE_DOUBLE = 0
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_LibRmVersionMismatch = NVMLError_LibRmVersionMismatch
    NVMLError_Unknown = NVMLError_Unknown

    MAX_MIG_DEVICES = 7

    def __init__(
        self,
        gpus: Iterable[FakeGPU] = (),
        *,
        clock: Callable[[], float] | None = None,
        init_error: str | None = None,
        driver_version: str = "550.54.15",
        nvml_version: str = "12.550.54.15",
    ) -> None:
        self.gpus = list(gpus)
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid is None:
                gpu.uuid = _fake_uuid(i)
            if gpu.pci_bus_id is None:
                gpu.pci_bus_id = f"00000000:{0x18 + 0x10 * i:02X}:00.0"
        self.clock = clock or time.monotonic
        self.t0_s = self.clock()
        self.init_error = init_error
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.calls: Counter[str] = Counter()
        self.init_count = 0
        self.shutdown_count = 0
        self._refcount = 0
        self._failures: dict[tuple[int, str], str] = {}
        self._hangs: dict[tuple[int, str], threading.Event] = {}
        self._states = [_GpuState(g) for g in self.gpus]
        self.lock = threading.RLock()

    # -- test helpers ---------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Simulated time: seconds since the fake was made."""
        return self.clock() - self.t0_s

    def counter_mj(self, index: int, t_s: float | None = None) -> int:
        """The energy counter of GPU ``index`` at simulated time ``t_s`` (default now)."""
        with self.lock:
            gpu = self.gpus[index]
            state = self._states[index]
            t = self.elapsed_s() if t_s is None else t_s
            k = max(0, round(t * 1e9) // state.period_ns)
            energy_j = state.energy_at_update(k)
            if gpu.counter_reset_at_s is not None and t >= gpu.counter_reset_at_s:
                k_reset = round(gpu.counter_reset_at_s * 1e9) // state.period_ns
                return round(1000 * (energy_j - state.energy_at_update(k_reset)))
            return gpu.counter_offset_mj + round(1000 * energy_j)

    def energy_j(self, index: int, t0_s: float, t1_s: float, steps: int = 20_000) -> float:
        """The exact energy of GPU ``index``'s trace between two simulated times."""
        return _simpson(self.gpus[index].power_at, t0_s, t1_s, steps)

    def fail(self, index: int, function: str, error_name: str) -> None:
        """From now on, ``function`` on GPU ``index`` raises ``NVMLError_<error_name>``."""
        with self.lock:
            self._failures[(index, function)] = error_name

    def clear_failures(self) -> None:
        with self.lock:
            self._failures.clear()

    def hang(self, index: int, function: str, until: threading.Event) -> None:
        """From now on, ``function`` on GPU ``index`` blocks (holding the library's lock, as a
        wedged driver does: every other call waits too) until ``until`` is set."""
        with self.lock:
            self._hangs[(index, function)] = until

    # -- plumbing ---------------------------------------------------------------------------
    def _enter(self, function: str, handle: FakeHandle | None = None) -> FakeGPU | None:
        self.calls[function] += 1
        if self._refcount <= 0:
            raise NVMLError_Uninitialized()
        if handle is None:
            return None
        gpu = self.gpus[handle.index]
        if gpu.lost_at_s is not None and self.elapsed_s() >= gpu.lost_at_s:
            raise NVMLError_GpuIsLost()
        hang = self._hangs.get((handle.index, function))
        if hang is not None:
            hang.wait()
        failure = self._failures.get((handle.index, function))
        if failure is not None:
            raise ERRORS[failure]()
        if function in gpu.unsupported:
            raise NVMLError_NotSupported()
        return gpu

    # -- library ------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        with self.lock:
            self.calls["nvmlInit"] += 1
            if self.init_error is not None:
                raise ERRORS[self.init_error]()
            self.init_count += 1
            self._refcount += 1

    def nvmlShutdown(self) -> None:
        with self.lock:
            self._enter("nvmlShutdown")
            self.shutdown_count += 1
            self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        with self.lock:
            self._enter("nvmlSystemGetDriverVersion")
            return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        with self.lock:
            self._enter("nvmlSystemGetNVMLVersion")
            return self.nvml_version

    def nvmlDeviceGetCount(self) -> int:
        with self.lock:
            self._enter("nvmlDeviceGetCount")
            return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        with self.lock:
            self._enter("nvmlDeviceGetHandleByIndex")
            if not 0 <= index < len(self.gpus):
                raise NVMLError_InvalidArgument()
            return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeHandle:
        with self.lock:
            self._enter("nvmlDeviceGetHandleByUUID")
            text = uuid.decode() if isinstance(uuid, bytes) else uuid
            for i, gpu in enumerate(self.gpus):
                if gpu.uuid == text:
                    return FakeHandle(i)
                if text in gpu.mig_uuids:
                    return FakeHandle(i, gpu.mig_uuids.index(text))
            raise NVMLError_NotFound()

    # -- device facts ---------------------------------------------------------------------------
    def nvmlDeviceGetAttributes(self, handle: FakeHandle) -> SimpleNamespace:
        """SM and slice counts (like nvmlDeviceGetAttributes_v2): of a MIG device, or of the
        whole GPU (which real drivers may refuse in MIG mode: ``unsupported``)."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetAttributes", handle)
            if handle.mig is None:
                return SimpleNamespace(multiprocessorCount=gpu.multiprocessor_count,
                                       gpuInstanceSliceCount=7, computeInstanceSliceCount=7)
            sms = (gpu.mig_multiprocessors[handle.mig] if handle.mig < len(
                gpu.mig_multiprocessors) else gpu.multiprocessor_count // 7)
            slices = gpu.mig_slices[handle.mig] if handle.mig < len(gpu.mig_slices) else 1
            return SimpleNamespace(multiprocessorCount=sms, gpuInstanceSliceCount=slices,
                                   computeInstanceSliceCount=slices)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetName", handle)
            return gpu.name if handle.mig is None else f"{gpu.name} MIG 1g.10gb"

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetUUID", handle)
            return gpu.uuid if handle.mig is None else gpu.mig_uuids[handle.mig]

    def nvmlDeviceGetArchitecture(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetArchitecture", handle)
            if gpu.arch_code is None:
                raise NVMLError_NotSupported()
            return gpu.arch_code

    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> SimpleNamespace:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetPciInfo", handle)
            return SimpleNamespace(busId=gpu.pci_bus_id, bus=0, device=0, domain=0)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
            if gpu.power_limit_w is None:
                raise NVMLError_NotSupported()
            return round(gpu.power_limit_w * 1000)

    # -- MIG ------------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> tuple[int, int]:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMigMode", handle)
            if gpu.mig_uuids:
                return (1, 1)
            if gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["ampere"]:
                return (0, 0)
            raise NVMLError_NotSupported()

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMaxMigDeviceCount", handle)
            return self.MAX_MIG_DEVICES if gpu.mig_uuids else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, index: int) -> FakeHandle:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMigDeviceHandleByIndex", handle)
            if not 0 <= index < len(gpu.mig_uuids):
                raise NVMLError_NotFound()
            return FakeHandle(handle.index, index)

    def nvmlDeviceIsMigDeviceHandle(self, handle: FakeHandle) -> int:
        with self.lock:
            self._enter("nvmlDeviceIsMigDeviceHandle", handle)
            return int(handle.mig is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeHandle) -> FakeHandle:
        with self.lock:
            self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
            if handle.mig is None:
                raise NVMLError_InvalidArgument()
            return FakeHandle(handle.index)

    # -- energy and power -------------------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
            supported = gpu.energy_counter
            if supported is None:
                supported = gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["volta"]
            if not supported or handle.mig is not None:
                raise NVMLError_NotSupported()
            return self.counter_mj(handle.index)

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetPowerUsage", handle)
            window = gpu.power_usage_window_s
            if window is None:
                ampere_plus = gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["ampere"]
                window = 1.0 if ampere_plus else 0.0
            t = self.elapsed_s()
            if window <= 0:
                return round(gpu.power_at(t) * 1000)
            start = max(0.0, t - window)
            if t - start <= 0:
                return round(gpu.power_at(t) * 1000)
            return round(_simpson(gpu.power_at, start, t, 64) / (t - start) * 1000)

    def nvmlDeviceGetFieldValues(self, handle: FakeHandle, field_ids: list[Any]) -> list[Any]:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetFieldValues", handle)
            instant = gpu.power_instant
            if instant is None:
                instant = gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["volta"]
            t = self.elapsed_s()
            out = []
            for fid in field_ids:
                fid = fid[0] if isinstance(fid, tuple) else fid
                ok = fid == self.NVML_FI_DEV_POWER_INSTANT and instant
                value = SimpleNamespace(uiVal=round(gpu.power_at(t) * 1000) if ok else 0,
                                        dVal=0.0, ullVal=0)
                out.append(SimpleNamespace(
                    fieldId=fid, scopeId=0, timestamp=round(self.clock() * 1e6), latencyUsec=0,
                    valueType=self.NVML_VALUE_TYPE_UNSIGNED_INT,
                    nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED, value=value))
            return out

    # -- gauges -------------------------------------------------------------------------------
    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> SimpleNamespace:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
            return SimpleNamespace(total=gpu.memory_total_bytes, used=gpu.memory_used_bytes,
                                   free=gpu.memory_total_bytes - gpu.memory_used_bytes)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> SimpleNamespace:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetUtilizationRates", handle)
            return SimpleNamespace(gpu=gpu.utilization_pct, memory=gpu.utilization_pct // 2)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetTemperature", handle)
            if sensor != self.NVML_TEMPERATURE_GPU:
                raise NVMLError_InvalidArgument()
            return gpu.temperature_c

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetClockInfo", handle)
            if clock_type != self.NVML_CLOCK_SM:
                raise NVMLError_InvalidArgument()
            return gpu.sm_clock_mhz

    def _processes(self, function: str, handle: FakeHandle, kind: str) -> list[SimpleNamespace]:
        with self.lock:
            gpu = self._enter(function, handle)
            return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_gpu_memory_bytes,
                                    gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
                    for p in gpu.processes if p.kind == kind]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses", handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics")


def sine_trace(mean_w: float, amplitude_w: float, freq_hz: float) -> Callable[[float], float]:
    """A sinusoidal power trace ``mean + amplitude * sin(2 pi f t)``."""
    return lambda t: mean_w + amplitude_w * math.sin(2 * math.pi * freq_hz * t)


def steps_trace(levels_w: list[float], step_s: float) -> Callable[[float], float]:
    """A stepped trace cycling through ``levels_w``, each held ``step_s`` seconds."""
    return lambda t: levels_w[int(t / step_s) % len(levels_w)]
