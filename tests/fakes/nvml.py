"""A fake ``pynvml`` module for tests: simulated NVIDIA GPUs driven by a clock.

Mirrors NVIDIA's nvidia-ml-py ``pynvml.py`` (names, constants, ctypes structures, the
``NVMLError`` hierarchy and its codes; read at version 13.615) and the behaviour nvml.h
documents for each call (NVIDIA nvml.h of CUDA 12.6, as in XuehaiPan/nvml-dev ``nvml.h``).

Pass an instance as ``DiscoveryContext(pynvml=FakeNVML(...))``; it is never put into
``sys.modules``. It implements only the NVML calls energymeter uses, with nvidia-ml-py's names,
constants and ``NVMLError`` class hierarchy, and behaves like the hardware where it matters:

* each :class:`FakeGPU` has a power trace (``power_w``: watts, or a callable ``t_s -> W`` where
  ``t_s`` is seconds since the fake was made) and an energy counter (mJ since "driver load")
  that, like real GPUs, only moves every ``counter_period_s`` (100 ms by default);
* ``nvmlDeviceGetPowerUsage`` is a 1 s average on Ampere (except GA100: A100, A30) and newer,
  instantaneous before; ``nvmlDeviceGetFieldValues([NVML_FI_DEV_POWER_INSTANT])`` is
  instantaneous;
* MIG as NVML shows it: MIG device handles distinct from the physical GPU's, per-device
  attributes (SMs, slices) only on MIG handles, the GPU-instance profile table of the model
  (A100 and H100: 7 slices, A30: 4), NotFound for an empty MIG index, R470+ ``MIG-<uuid>`` or
  older ``MIG-GPU-<uuid>/<gi>/<ci>`` names, refused aggregate queries in MIG mode;
* return types as nvidia-ml-py's: ints, ctypes structures with its field names and widths
  (``c_nvmlDeviceAttributes``, ``c_nvmlGpuInstanceProfileInfo_v2_t``, ``c_nvmlMemory_t``...),
  ``[current, pending]`` lists, ``bytes`` strings with ``bytes_strings=True`` (old versions);
* per-process utilisation as ``nvmlDeviceGetProcessUtilization`` gives it (nvml.h; pynvml.py
  ``c_nvmlProcessUtilizationSample_t``): the driver samples every process with a non-zero
  ``sm_util`` every ``process_sample_period_s``, keeps only its recent samples, returns those
  newer than the caller's ``lastSeenTimeStamp`` (CPU time in microseconds) and NOT_FOUND when
  there are none; NOT_SUPPORTED on a MIG-enabled GPU; a MIG handle lists only the processes of
  its own instance (``FakeProcess.mig_uuid``);
* PID namespaces (``host_pid_offset``, ``translates``): the driver knows every process by its
  host pid; a caller in a container's PID namespace gets host pids (NVIDIA's drivers before
  they translated: NVIDIA/nvidia-docker#179 and #1483, "the driver is not aware of the PID
  namespace"), or, for the calls in ``translates``, pids in its own namespace as the open
  kernel modules give them (open-gpu-kernel-modules ``_gpuConvertPid`` / ``os_find_ns_pid``:
  the running-process lists leave out a process the caller's namespace cannot see;
  ``subdeviceCtrlCmdPerfGetGpumonPerfmonUtilSamplesV2_KERNEL``: a sample of such a process
  keeps its host pid). Project-HAMi/HAMi-core#112 shows a driver (560.35.03) that translates
  the lists but not the utilisation samples;
* injectable failures: ``init_error`` (e.g. ``"LibraryNotFound"``), a GPU lost at a time
  (``lost_at_s``), unsupported calls (``unsupported``), errors raised on demand
  (:meth:`FakeNVML.fail`), a counter that resets (``counter_reset_at_s``), MIG devices.

Time comes from ``clock`` (default ``time.monotonic``); :class:`FakeClock` makes runs exact.
"""

from __future__ import annotations

import ctypes
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# -- constants ---------------------------------------------------------------------------------
# Values as nvidia-ml-py defines them (NVIDIA/nvidia-ml-py pynvml.py, "NVML_ERROR_*" and
# nvml.h "nvmlReturn_t"; checked against nvidia-ml-py 13.615 and nvml.h of CUDA 12.6).
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_NO_DATA = 21
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_UNKNOWN = 999

# nvmlDeviceArchitecture_t (pynvml.py NVML_DEVICE_ARCH_*).
ARCH_CODES = {
    "kepler": 2, "maxwell": 3, "pascal": 4, "volta": 5, "turing": 6, "ampere": 7,
    "ada": 8, "hopper": 9, "blackwell": 10, "rubin": 13,
}
NVML_DEVICE_ARCH_UNKNOWN = 0xFFFFFFFF

# pynvml.py NVML_GPU_INSTANCE_PROFILE_* (an index into the driver's profile table, not the
# profile *ID* that `nvidia-smi mig -lgip` prints) and NVML_GPU_INSTANCE_PROFILE_COUNT.
NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_GPU_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_GPU_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_GPU_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_GPU_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_GPU_INSTANCE_PROFILE_8_SLICE = 0x5
NVML_GPU_INSTANCE_PROFILE_6_SLICE = 0x6
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 = 0x7
NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 = 0x8
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2 = 0x9
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
NVML_DEVICE_NAME_V2_BUFFER_SIZE = 96
NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE = 32
NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE = 16
nvmlGpuInstanceProfileInfo_v2 = 0x02000098

# NVMLError.__str__ texts (pynvml.py NVMLError._errcode_to_string).
_ERROR_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """As pynvml.py's ``NVMLError``: ``NVMLError(code)`` makes the subclass of that code; each
    ``NVMLError_<Name>()`` carries its code in ``value``; ``str()`` is NVML's error string;
    errors compare equal by ``value`` (and, as there, are therefore unhashable)."""

    _valClassMapping: dict[int, type[NVMLError]] = {}
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return self.value == getattr(other, "value", None)

    __hash__ = None  # type: ignore[assignment]  # pynvml defines __eq__ only


def _error_class(name: str, code: int) -> type[NVMLError]:
    # pynvml.py _extractNVMLErrorsAsClasses: NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost,
    # whose __new__ ignores its arguments and sets the fixed code.
    def new(cls: type[NVMLError], *args: Any) -> NVMLError:
        return NVMLError.__new__(cls, code)

    cls = type(f"NVMLError_{name}", (NVMLError,), {"__new__": new})
    NVMLError._valClassMapping[code] = cls
    return cls


NVMLError_Uninitialized = _error_class("Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_InvalidArgument = _error_class("InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_AlreadyInitialized = _error_class("AlreadyInitialized", NVML_ERROR_ALREADY_INITIALIZED)
NVMLError_NotFound = _error_class("NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_InsufficientSize = _error_class("InsufficientSize", NVML_ERROR_INSUFFICIENT_SIZE)
NVMLError_DriverNotLoaded = _error_class("DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_Timeout = _error_class("Timeout", NVML_ERROR_TIMEOUT)
NVMLError_LibraryNotFound = _error_class("LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_ResetRequired = _error_class("ResetRequired", NVML_ERROR_RESET_REQUIRED)
NVMLError_LibRmVersionMismatch = _error_class("LibRmVersionMismatch",
                                              NVML_ERROR_LIB_RM_VERSION_MISMATCH)
NVMLError_InUse = _error_class("InUse", NVML_ERROR_IN_USE)
NVMLError_NoData = _error_class("NoData", NVML_ERROR_NO_DATA)
NVMLError_ArgumentVersionMismatch = _error_class("ArgumentVersionMismatch",
                                                 NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
NVMLError_Unknown = _error_class("Unknown", NVML_ERROR_UNKNOWN)

ERRORS: dict[str, type[NVMLError]] = {
    cls.__name__.removeprefix("NVMLError_"): cls for cls in NVMLError._valClassMapping.values()
}


def error(name: str) -> NVMLError:
    """An instance of ``NVMLError_<name>`` (e.g. ``error("GpuIsLost")``)."""
    return ERRORS[name]()


# -- structures (field names and C types as pynvml.py defines them) -------------------------
class c_nvmlDeviceAttributes(ctypes.Structure):  # pynvml.py c_nvmlDeviceAttributes
    _fields_ = [("multiprocessorCount", ctypes.c_uint), ("sharedCopyEngineCount", ctypes.c_uint),
                ("sharedDecoderCount", ctypes.c_uint), ("sharedEncoderCount", ctypes.c_uint),
                ("sharedJpegCount", ctypes.c_uint), ("sharedOfaCount", ctypes.c_uint),
                ("gpuInstanceSliceCount", ctypes.c_uint),
                ("computeInstanceSliceCount", ctypes.c_uint),
                ("memorySizeMB", ctypes.c_ulonglong)]


_PROFILE_INFO_FIELDS = [
    ("id", ctypes.c_uint), ("isP2pSupported", ctypes.c_uint), ("sliceCount", ctypes.c_uint),
    ("instanceCount", ctypes.c_uint), ("multiprocessorCount", ctypes.c_uint),
    ("copyEngineCount", ctypes.c_uint), ("decoderCount", ctypes.c_uint),
    ("encoderCount", ctypes.c_uint), ("jpegCount", ctypes.c_uint), ("ofaCount", ctypes.c_uint),
    ("memorySizeMB", ctypes.c_ulonglong)]


class c_nvmlGpuInstanceProfileInfo_t(ctypes.Structure):  # pynvml.py, same name
    _fields_ = _PROFILE_INFO_FIELDS


class c_nvmlGpuInstanceProfileInfo_v2_t(ctypes.Structure):  # pynvml.py, same name
    _fields_ = [("version", ctypes.c_uint), *_PROFILE_INFO_FIELDS,
                ("name", ctypes.c_char * NVML_DEVICE_NAME_V2_BUFFER_SIZE)]


class c_nvmlMemory_t(ctypes.Structure):  # pynvml.py c_nvmlMemory_t (bytes)
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


class c_nvmlProcessUtilizationSample_t(ctypes.Structure):
    # pynvml.py c_nvmlProcessUtilizationSample_t; nvml.h nvmlProcessUtilizationSample_t:
    # pid, timeStamp ("CPU Timestamp in microseconds"), smUtil, memUtil, encUtil, decUtil (%).
    _fields_ = [("pid", ctypes.c_uint), ("timeStamp", ctypes.c_ulonglong),
                ("smUtil", ctypes.c_uint), ("memUtil", ctypes.c_uint),
                ("encUtil", ctypes.c_uint), ("decUtil", ctypes.c_uint)]


class c_nvmlUtilization_t(ctypes.Structure):  # pynvml.py c_nvmlUtilization_t (percent)
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class nvmlPciInfo_t(ctypes.Structure):  # pynvml.py nvmlPciInfo_t: busId is bytes
    _fields_ = [("busIdLegacy", ctypes.c_char * NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE),
                ("domain", ctypes.c_uint), ("bus", ctypes.c_uint), ("device", ctypes.c_uint),
                ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE)]


class c_nvmlValue_t(ctypes.Union):  # pynvml.py c_nvmlValue_t
    _fields_ = [("dVal", ctypes.c_double), ("uiVal", ctypes.c_uint), ("ulVal", ctypes.c_ulong),
                ("ullVal", ctypes.c_ulonglong), ("sllVal", ctypes.c_longlong),
                ("siVal", ctypes.c_int), ("usVal", ctypes.c_ushort)]


class c_nvmlFieldValue_t(ctypes.Structure):  # pynvml.py c_nvmlFieldValue_t
    _fields_ = [("fieldId", ctypes.c_uint32), ("scopeId", ctypes.c_uint32),
                ("timestamp", ctypes.c_int64), ("latencyUsec", ctypes.c_int64),
                ("valueType", ctypes.c_uint), ("nvmlReturn", ctypes.c_uint),
                ("value", c_nvmlValue_t)]


# -- MIG profiles (what `nvidia-smi mig -lgip` lists; NVIDIA MIG User Guide, "Supported MIG
# Profiles"). (NVML_GPU_INSTANCE_PROFILE_* index, profile ID, name, slices, instances, SMs,
# copy engines, memory MiB.) Only the profiles these tests use; the +me variants are omitted.
# SM and slice counts are the guide's and lgip's; memory sizes are lgip's GiB rounded to MiB
# (approximate, unused by energymeter).
@dataclass(frozen=True)
class GpuInstanceProfile:
    profile: int  # NVML_GPU_INSTANCE_PROFILE_* (the argument of ...ProfileInfo)
    id: int  # profile ID, as `nvidia-smi mig -lgip` prints it
    name: str  # "1g.10gb"
    slice_count: int
    instance_count: int
    multiprocessor_count: int
    copy_engine_count: int
    memory_size_mb: int


def _profiles(*rows: tuple[int, int, str, int, int, int, int, int]) -> tuple[
        GpuInstanceProfile, ...]:
    return tuple(GpuInstanceProfile(*row) for row in rows)


# A100-SXM4-40GB (GA100): 7 GPU-instance slices, 14 SMs each, 98 SMs in MIG mode (of 108).
A100_40GB_PROFILES = _profiles(
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE, 19, "1g.5gb", 1, 7, 14, 1, 4864),
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, 15, "1g.10gb", 1, 4, 14, 1, 9856),
    (NVML_GPU_INSTANCE_PROFILE_2_SLICE, 14, "2g.10gb", 2, 3, 28, 2, 9856),
    (NVML_GPU_INSTANCE_PROFILE_3_SLICE, 9, "3g.20gb", 3, 2, 42, 3, 19968),
    (NVML_GPU_INSTANCE_PROFILE_4_SLICE, 5, "4g.20gb", 4, 1, 56, 4, 19968),
    (NVML_GPU_INSTANCE_PROFILE_7_SLICE, 0, "7g.40gb", 7, 1, 98, 7, 40192))
# A100-SXM4-80GB: the same slices and SMs, names by its memory (MIG User Guide).
A100_80GB_PROFILES = _profiles(
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE, 19, "1g.10gb", 1, 7, 14, 1, 9728),
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, 15, "1g.20gb", 1, 4, 14, 1, 19968),
    (NVML_GPU_INSTANCE_PROFILE_2_SLICE, 14, "2g.20gb", 2, 3, 28, 2, 19968),
    (NVML_GPU_INSTANCE_PROFILE_3_SLICE, 9, "3g.40gb", 3, 2, 42, 3, 40192),
    (NVML_GPU_INSTANCE_PROFILE_4_SLICE, 5, "4g.40gb", 4, 1, 56, 4, 40192),
    (NVML_GPU_INSTANCE_PROFILE_7_SLICE, 0, "7g.80gb", 7, 1, 98, 7, 80384))
# A30-24GB (GA100): 4 GPU-instance slices of 14 SMs; no 3g or 7g profile.
A30_PROFILES = _profiles(
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE, 14, "1g.6gb", 1, 4, 14, 1, 5836),
    (NVML_GPU_INSTANCE_PROFILE_2_SLICE, 5, "2g.12gb", 2, 2, 28, 2, 11672),
    (NVML_GPU_INSTANCE_PROFILE_4_SLICE, 0, "4g.24gb", 4, 1, 56, 4, 23344))
# H100 80GB HBM3 (GH100): 7 GPU-instance slices; the 7g profile holds all 132 SMs.
H100_80GB_PROFILES = _profiles(
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE, 19, "1g.10gb", 1, 7, 16, 1, 9984),
    (NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, 15, "1g.20gb", 1, 4, 26, 1, 20096),
    (NVML_GPU_INSTANCE_PROFILE_2_SLICE, 14, "2g.20gb", 2, 3, 32, 2, 20096),
    (NVML_GPU_INSTANCE_PROFILE_3_SLICE, 9, "3g.40gb", 3, 2, 60, 3, 40448),
    (NVML_GPU_INSTANCE_PROFILE_4_SLICE, 5, "4g.40gb", 4, 1, 64, 4, 40448),
    (NVML_GPU_INSTANCE_PROFILE_7_SLICE, 0, "7g.80gb", 7, 1, 132, 8, 81152))


@dataclass
class FakeMigDevice:
    """One MIG device (a compute instance, CI, inside a GPU instance, GI).

    ``profile``: the GI's profile name (e.g. ``"3g.40gb"``) in its GPU's profile table;
    ``gi_id``/``ci_id``: nvmlDeviceGetGpuInstanceId / nvmlDeviceGetComputeInstanceId;
    ``ci_slices``: compute slices of this CI (default: the whole GI, the usual one CI per GI);
    a CI smaller than its GI has ``ci_slices * SMs-per-slice`` SMs."""

    uuid: str
    profile: str = "1g.10gb"
    gi_id: int = 0
    ci_id: int = 0
    ci_slices: int | None = None

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
    ``used_gpu_memory_bytes`` None mimics NVML's "not available".

    ``sm_util``: the percentage of SM time the process uses (0-100), or a callable
    ``t_s -> percent`` of simulated time; what ``nvmlDeviceGetProcessUtilization`` samples.
    ``mem_util``: its ``memUtil`` (frame-buffer %). ``mig_uuid``: the MIG device it runs on
    (a :class:`FakeMigDevice`'s ``uuid``): listed on that MIG handle only."""

    pid: int
    used_gpu_memory_bytes: int | None
    kind: str = "compute"  # or "graphics"
    sm_util: float | Callable[[float], float] = 0.0
    mem_util: int = 0
    mig_uuid: str | None = None
    #: In another container's PID namespace, which the caller's cannot see: a driver that
    #: translates pids (``FakeNVML.translates``) leaves it out of the running-process lists
    #: and gives its samples with its host pid (see :meth:`FakeNVML.reported_pid`).
    foreign: bool = False

    def sm_util_at(self, t_s: float) -> int:
        """The ``smUtil`` of a sample over a period centred on ``t_s`` (0..100)."""
        value = self.sm_util(max(t_s, 0.0)) if callable(self.sm_util) else self.sm_util
        return max(0, min(100, round(float(value))))


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


_GA100 = re.compile(r"\bA(100|30)\b")


def profiles_for(name: str) -> tuple[GpuInstanceProfile, ...]:
    """The MIG profile table of a GPU model named like NVML names it (default: H100's)."""
    if re.search(r"\bA30\b", name):
        return A30_PROFILES
    if re.search(r"\bA100\b", name):
        return A100_80GB_PROFILES if "80GB" in name else A100_40GB_PROFILES
    return H100_80GB_PROFILES


@dataclass
class FakeGPU:
    """One simulated GPU. ``arch`` None makes ``nvmlDeviceGetArchitecture`` NotSupported.

    MIG: ``mig_devices`` (a :class:`FakeMigDevice` per MIG device index; None leaves that
    index empty, so NVML answers NotFound for it) puts the GPU in MIG mode; ``mig_uuids`` is a
    shorthand making one smallest-profile device per UUID (GI ids 1, 2...). ``mig_profiles``
    defaults to the model's table (:func:`profiles_for`). ``mig_mode`` overrides
    [current, pending] of nvmlDeviceGetMigMode (e.g. ``(1, 1)`` with no device yet).
    ``privileged``: in MIG mode NVML gives the parent's aggregate memory and processes only
    to privileged callers (nvml.h, nvmlDeviceGetMemoryInfo "@note In MIG mode...").
    """

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
    mig_devices: list[FakeMigDevice | None] = field(default_factory=list)
    mig_profiles: tuple[GpuInstanceProfile, ...] | None = None
    mig_mode: tuple[int, int] | None = None
    privileged: bool = False
    # None: as the hardware: energy counter on Volta and newer, POWER_INSTANT field on
    # Volta and newer, nvmlDeviceGetPowerUsage a 1 s average on Ampere and newer except
    # GA100 (A100, A30), which give instantaneous power (nvml.h, nvmlDeviceGetPowerUsage).
    energy_counter: bool | None = None
    power_instant: bool | None = None
    power_usage_window_s: float | None = None
    counter_period_s: float = 0.1
    counter_offset_mj: int = 7_654_321
    counter_reset_at_s: float | None = None
    lost_at_s: float | None = None
    unsupported: set[str] = field(default_factory=set)
    # nvmlDeviceGetProcessUtilization: the driver's sampling period (nvml.h, nvmlUtilization_t:
    # "Each sample period may be between 1 second and 1/6 second, depending on the product")
    # and its finite buffer (nvml.h: "the driver's internal sample buffer"; its size is not
    # documented: 100 entries here, at most one sampling period each).
    process_sample_period_s: float = 1 / 6
    process_sample_buffer: int = 100

    def __post_init__(self) -> None:
        self.sync_mig()

    def sync_mig(self) -> None:
        """Make ``mig_devices`` from ``mig_uuids`` if only those were given (FakeNVML calls it
        again, for tests that set ``mig_uuids`` after making the GPU)."""
        if self.mig_profiles is None:
            self.mig_profiles = profiles_for(self.name)
        if self.mig_uuids and not self.mig_devices:
            smallest = min(self.mig_profiles, key=lambda p: (p.slice_count, p.profile))
            self.mig_devices = [FakeMigDevice(u, smallest.name, gi_id=i + 1)
                                for i, u in enumerate(self.mig_uuids)]
        self.mig_uuids = [d.uuid for d in self.mig_devices if d is not None]

    @property
    def arch_code(self) -> int | None:
        return None if self.arch is None else ARCH_CODES[self.arch]

    @property
    def mig_capable(self) -> bool:  # MIG: Ampere and newer data-centre GPUs
        return self.arch_code is not None and self.arch_code >= ARCH_CODES["ampere"]

    @property
    def mig_enabled(self) -> bool:
        if self.mig_mode is not None:
            return bool(self.mig_mode[0])
        return bool(self.mig_uuids)

    @property
    def total_slices(self) -> int:
        assert self.mig_profiles
        return max(p.slice_count for p in self.mig_profiles)

    def profile(self, name: str) -> GpuInstanceProfile:
        assert self.mig_profiles
        return next(p for p in self.mig_profiles if p.name == name)

    def mig_sms(self, device: FakeMigDevice) -> int:
        """SMs of a MIG device (a CI smaller than its GI has its share of the GI's SMs)."""
        prof = self.profile(device.profile)
        ci = prof.slice_count if device.ci_slices is None else device.ci_slices
        return prof.multiprocessor_count * ci // prof.slice_count

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
    ``"NoPermission"``...). ``driver_version`` / ``nvml_version``: reported strings; a driver
    older than R470 names MIG devices ``MIG-GPU-<gpu uuid>/<gi>/<ci>`` (MIG user guide,
    "Device Enumeration"), newer ones ``MIG-<uuid>`` (the FakeMigDevice's ``uuid``).
    ``bytes_strings``: strings come back as ``bytes``, as nvidia-ml-py before 11.515 returned
    them (later versions decode them: pynvml.py ``convertStrBytes``).
    ``profile_info_v2``: False makes ``nvmlDeviceGetGpuInstanceProfileInfo(..., version=2)``
    raise FunctionNotFound, as a driver without ``nvmlDeviceGetGpuInstanceProfileInfoV`` does.
    ``host_pid_offset``: the caller runs in a PID namespace (a container) where each process's
    pid is its host pid minus this (``FakeProcess.pid`` is the caller's view; 0: the caller
    shares the host's namespace). ``translates``: the process calls
    (``nvmlDeviceGet{Compute,Graphics}RunningProcesses``, ``nvmlDeviceGetProcessUtilization``)
    that give pids in the caller's namespace rather than host pids (:meth:`reported_pid`).

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
    NVML_DEVICE_ARCH_UNKNOWN = NVML_DEVICE_ARCH_UNKNOWN
    NVML_FI_DEV_POWER_AVERAGE = 185  # nvml.h: 1 s average (Ampere except GA100 and newer)
    NVML_FI_DEV_POWER_INSTANT = 186  # nvml.h: current power
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_VALUE_TYPE_DOUBLE = 0
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
    NVML_GPU_INSTANCE_PROFILE_1_SLICE = NVML_GPU_INSTANCE_PROFILE_1_SLICE
    NVML_GPU_INSTANCE_PROFILE_2_SLICE = NVML_GPU_INSTANCE_PROFILE_2_SLICE
    NVML_GPU_INSTANCE_PROFILE_3_SLICE = NVML_GPU_INSTANCE_PROFILE_3_SLICE
    NVML_GPU_INSTANCE_PROFILE_4_SLICE = NVML_GPU_INSTANCE_PROFILE_4_SLICE
    NVML_GPU_INSTANCE_PROFILE_7_SLICE = NVML_GPU_INSTANCE_PROFILE_7_SLICE
    NVML_GPU_INSTANCE_PROFILE_8_SLICE = NVML_GPU_INSTANCE_PROFILE_8_SLICE
    NVML_GPU_INSTANCE_PROFILE_6_SLICE = NVML_GPU_INSTANCE_PROFILE_6_SLICE
    NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 = NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1
    NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 = NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1
    NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2 = NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2
    NVML_GPU_INSTANCE_PROFILE_COUNT = NVML_GPU_INSTANCE_PROFILE_COUNT

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_AlreadyInitialized = NVMLError_AlreadyInitialized
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_InsufficientSize = NVMLError_InsufficientSize
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_ResetRequired = NVMLError_ResetRequired
    NVMLError_LibRmVersionMismatch = NVMLError_LibRmVersionMismatch
    NVMLError_InUse = NVMLError_InUse
    NVMLError_NoData = NVMLError_NoData
    NVMLError_ArgumentVersionMismatch = NVMLError_ArgumentVersionMismatch
    NVMLError_Unknown = NVMLError_Unknown

    # Calls answered for a physical GPU's handle only. nvml.h documents no MIG behaviour for
    # the power and energy calls; nvidia-smi shows power per physical GPU only, and the fake
    # refuses them (NOT_SUPPORTED) on a MIG handle so that a test catches a probe asking.
    _PARENT_ONLY = frozenset({
        "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetFieldValues", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetGpuInstanceProfileInfo"})
    # Calls answered for a MIG device handle only (nvml.h: nvmlDeviceGetAttributes_v2 "@note
    # This API currently only supports MIG device handles"; nvmlDeviceGetGpuInstanceId /
    # ...ComputeInstanceId "Target MIG device handle"): NOT_SUPPORTED on a physical GPU.
    _MIG_ONLY = frozenset({"nvmlDeviceGetAttributes", "nvmlDeviceGetGpuInstanceId",
                           "nvmlDeviceGetComputeInstanceId"})

    def __init__(
        self,
        gpus: Iterable[FakeGPU] = (),
        *,
        clock: Callable[[], float] | None = None,
        init_error: str | None = None,
        driver_version: str = "550.54.15",
        nvml_version: str = "12.550.54.15",
        bytes_strings: bool = False,
        profile_info_v2: bool = True,
        host_pid_offset: int = 0,
        translates: Iterable[str] = (),
    ) -> None:
        self.gpus = list(gpus)
        for i, gpu in enumerate(self.gpus):
            gpu.sync_mig()
            if gpu.uuid is None:
                gpu.uuid = _fake_uuid(i)
            if gpu.pci_bus_id is None:
                gpu.pci_bus_id = f"00000000:{0x18 + 0x10 * i:02X}:00.0"
        self.clock = clock or time.monotonic
        self.t0_s = self.clock()
        self.init_error = init_error
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.bytes_strings = bytes_strings
        self.profile_info_v2 = profile_info_v2
        self.host_pid_offset = host_pid_offset
        self.translates = frozenset(translates)
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
        """The energy counter of GPU ``index`` at simulated time ``t_s`` (default now): an
        unsigned 64-bit count of mJ (pynvml.py: ``c_uint64``)."""
        with self.lock:
            gpu = self.gpus[index]
            state = self._states[index]
            t = self.elapsed_s() if t_s is None else t_s
            k = max(0, round(t * 1e9) // state.period_ns)
            energy_j = state.energy_at_update(k)
            if gpu.counter_reset_at_s is not None and t >= gpu.counter_reset_at_s:
                k_reset = round(gpu.counter_reset_at_s * 1e9) // state.period_ns
                return round(1000 * (energy_j - state.energy_at_update(k_reset)))
            return (gpu.counter_offset_mj + round(1000 * energy_j)) & 0xFFFF_FFFF_FFFF_FFFF

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

    def reported_pid(self, process: FakeProcess, function: str) -> int | None:
        """The pid ``function`` gives for ``process``: the host's (``pid + host_pid_offset``)
        unless ``function`` translates pids into the caller's namespace; then ``pid``, or, for
        a process of another namespace, None in the running-process lists (left out) and the
        host pid in the utilisation samples (open-gpu-kernel-modules, see the module
        docstring)."""
        host = process.pid + self.host_pid_offset
        if self.host_pid_offset == 0 or function not in self.translates:
            return host
        if not process.foreign:
            return process.pid
        return host if function == "nvmlDeviceGetProcessUtilization" else None

    def mig_uuid(self, gpu: FakeGPU, device: FakeMigDevice) -> str:
        """What nvmlDeviceGetUUID answers for a MIG device under this driver."""
        if int(self.driver_version.split(".")[0]) < 470:
            return f"MIG-{gpu.uuid}/{device.gi_id}/{device.ci_id}"
        return device.uuid

    # -- plumbing ---------------------------------------------------------------------------
    def _str(self, text: str) -> str | bytes:
        return text.encode() if self.bytes_strings else text

    def _enter(self, function: str, handle: FakeHandle | None = None) -> FakeGPU | None:
        self.calls[function] += 1
        if self._refcount <= 0:
            raise NVMLError_Uninitialized()
        if handle is None:
            return None
        if not isinstance(handle, FakeHandle) or not 0 <= handle.index < len(self.gpus):
            raise NVMLError_InvalidArgument()
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
        if handle.mig is not None and function in self._PARENT_ONLY:
            raise NVMLError_NotSupported()
        if handle.mig is None and function in self._MIG_ONLY:
            raise NVMLError_NotSupported()
        return gpu

    def _mig_device(self, gpu: FakeGPU, handle: FakeHandle) -> FakeMigDevice:
        assert handle.mig is not None
        device = gpu.mig_devices[handle.mig] if handle.mig < len(gpu.mig_devices) else None
        if device is None:  # a stale handle: its compute instance was destroyed
            raise NVMLError_InvalidArgument()
        return device

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

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        with self.lock:
            self._enter("nvmlSystemGetDriverVersion")
            return self._str(self.driver_version)

    def nvmlSystemGetNVMLVersion(self) -> str | bytes:
        with self.lock:
            self._enter("nvmlSystemGetNVMLVersion")
            return self._str(self.nvml_version)

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
                for k, device in enumerate(gpu.mig_devices):
                    if device is not None and text == self.mig_uuid(gpu, device):
                        return FakeHandle(i, k)
            raise NVMLError_NotFound()

    # -- device facts ---------------------------------------------------------------------------
    def nvmlDeviceGetAttributes(self, handle: FakeHandle) -> c_nvmlDeviceAttributes:
        """pynvml.py nvmlDeviceGetAttributes (-> nvmlDeviceGetAttributes_v2): a MIG device's
        SMs, shared engines, slices and memory. A physical GPU's handle: NotSupported
        (``_MIG_ONLY``)."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetAttributes", handle)
            assert gpu is not None
            device = self._mig_device(gpu, handle)
            prof = gpu.profile(device.profile)
            ci = prof.slice_count if device.ci_slices is None else device.ci_slices
            return c_nvmlDeviceAttributes(
                multiprocessorCount=gpu.mig_sms(device),
                sharedCopyEngineCount=prof.copy_engine_count,
                gpuInstanceSliceCount=prof.slice_count, computeInstanceSliceCount=ci,
                memorySizeMB=prof.memory_size_mb)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str | bytes:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetName", handle)
            assert gpu is not None
            if handle.mig is None:
                return self._str(gpu.name)
            device = self._mig_device(gpu, handle)
            return self._str(f"{gpu.name} MIG {device.profile}")

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str | bytes:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetUUID", handle)
            assert gpu is not None and gpu.uuid is not None
            if handle.mig is None:
                return self._str(gpu.uuid)
            return self._str(self.mig_uuid(gpu, self._mig_device(gpu, handle)))

    def nvmlDeviceGetArchitecture(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetArchitecture", handle)
            assert gpu is not None
            if gpu.arch_code is None:
                raise NVMLError_NotSupported()
            return gpu.arch_code

    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> nvmlPciInfo_t:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetPciInfo", handle)
            assert gpu is not None and gpu.pci_bus_id is not None
            bus_id = gpu.pci_bus_id.encode()
            return nvmlPciInfo_t(busIdLegacy=bus_id[-12:], domain=0, bus=0, device=0,
                                 busId=bus_id)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
            assert gpu is not None
            if gpu.power_limit_w is None:
                raise NVMLError_NotSupported()
            return round(gpu.power_limit_w * 1000)

    # -- MIG ------------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        """pynvml.py: ``[current, pending]`` (a list); nvml.h: NOT_SUPPORTED where the
        device does not support MIG."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMigMode", handle)
            assert gpu is not None
            if not gpu.mig_capable:
                raise NVMLError_NotSupported()
            if gpu.mig_mode is not None:
                return list(gpu.mig_mode)
            mode = int(gpu.mig_enabled)
            return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        """nvml.h: "Returns zero if MIG is not supported or enabled"; else the most compute
        instances the GPU can hold: one per slice (7 on A100/H100, 4 on A30)."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMaxMigDeviceCount", handle)
            assert gpu is not None
            return gpu.total_slices if gpu.mig_capable and gpu.mig_enabled else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, index: int) -> FakeHandle:
        """nvml.h: INVALID_ARGUMENT for an index out of range, NOT_FOUND "if no valid MIG
        device was found at index"."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMigDeviceHandleByIndex", handle)
            assert gpu is not None
            if not gpu.mig_capable or not gpu.mig_enabled:
                raise NVMLError_NotSupported()
            if not 0 <= index < gpu.total_slices:
                raise NVMLError_InvalidArgument()
            if index >= len(gpu.mig_devices) or gpu.mig_devices[index] is None:
                raise NVMLError_NotFound()
            return FakeHandle(handle.index, index)

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: FakeHandle, profile: int,
                                            version: int = 2) -> Any:
        """pynvml.py: version 2 (default) calls nvmlDeviceGetGpuInstanceProfileInfoV and
        returns ``c_nvmlGpuInstanceProfileInfo_v2_t``, version 1 the older call and
        ``c_nvmlGpuInstanceProfileInfo_t``. nvml.h: NOT_SUPPORTED if MIG is not enabled or
        ``profile`` isn't supported, INVALID_ARGUMENT for a profile out of range."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetGpuInstanceProfileInfo", handle)
            assert gpu is not None and gpu.mig_profiles is not None
            if version not in (1, 2) or (version == 2 and not self.profile_info_v2):
                raise NVMLError_FunctionNotFound()
            if not 0 <= profile < NVML_GPU_INSTANCE_PROFILE_COUNT:
                raise NVMLError_InvalidArgument()
            if not gpu.mig_capable or not gpu.mig_enabled:
                raise NVMLError_NotSupported()
            prof = next((p for p in gpu.mig_profiles if p.profile == profile), None)
            if prof is None:
                raise NVMLError_NotSupported()
            common = {"id": prof.id, "isP2pSupported": 0, "sliceCount": prof.slice_count,
                      "instanceCount": prof.instance_count,
                      "multiprocessorCount": prof.multiprocessor_count,
                      "copyEngineCount": prof.copy_engine_count,
                      "memorySizeMB": prof.memory_size_mb}
            if version == 1:
                return c_nvmlGpuInstanceProfileInfo_t(**common)
            return c_nvmlGpuInstanceProfileInfo_v2_t(
                version=nvmlGpuInstanceProfileInfo_v2, name=f"MIG {prof.name}".encode(),
                **common)

    def nvmlDeviceGetGpuInstanceId(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetGpuInstanceId", handle)
            assert gpu is not None
            return self._mig_device(gpu, handle).gi_id

    def nvmlDeviceGetComputeInstanceId(self, handle: FakeHandle) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetComputeInstanceId", handle)
            assert gpu is not None
            return self._mig_device(gpu, handle).ci_id

    def nvmlDeviceIsMigDeviceHandle(self, handle: FakeHandle) -> ctypes.c_uint:
        """pynvml.py returns the ``c_uint`` itself here, not its ``.value``."""
        with self.lock:
            self._enter("nvmlDeviceIsMigDeviceHandle", handle)
            return ctypes.c_uint(int(handle.mig is not None))

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeHandle) -> FakeHandle:
        with self.lock:
            self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
            if handle.mig is None:
                raise NVMLError_InvalidArgument()
            return FakeHandle(handle.index)

    # -- energy and power -------------------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        """nvml.h: mJ since the driver was last reloaded, ``unsigned long long``; Volta and
        newer."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
            assert gpu is not None
            supported = gpu.energy_counter
            if supported is None:
                supported = gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["volta"]
            if not supported:
                raise NVMLError_NotSupported()
            return self.counter_mj(handle.index)

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        """nvml.h: mW (``unsigned int``); a 1 s average on Ampere (except GA100) and newer,
        instantaneous on GA100 and older."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetPowerUsage", handle)
            assert gpu is not None
            window = gpu.power_usage_window_s
            if window is None:
                ampere_plus = gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["ampere"]
                window = 1.0 if ampere_plus and not _GA100.search(gpu.name) else 0.0
            t = self.elapsed_s()
            if window <= 0:
                return round(gpu.power_at(t) * 1000)
            start = max(0.0, t - window)
            if t - start <= 0:
                return round(gpu.power_at(t) * 1000)
            return round(_simpson(gpu.power_at, start, t, 64) / (t - start) * 1000)

    def nvmlDeviceGetFieldValues(self, handle: FakeHandle, field_ids: list[Any]) -> Any:
        """pynvml.py: a ctypes array of ``c_nvmlFieldValue_t``; each entry carries its own
        ``nvmlReturn`` (NOT_SUPPORTED for a field this GPU lacks) while the call succeeds.
        POWER_INSTANT is an unsigned int in mW."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetFieldValues", handle)
            assert gpu is not None
            instant = gpu.power_instant
            if instant is None:
                instant = gpu.arch_code is not None and gpu.arch_code >= ARCH_CODES["volta"]
            t = self.elapsed_s()
            out = (c_nvmlFieldValue_t * len(field_ids))()
            for i, fid in enumerate(field_ids):
                scope = 0
                if isinstance(fid, tuple):
                    fid, scope = fid
                item = out[i]
                item.fieldId, item.scopeId = fid, scope
                item.timestamp = round(self.clock() * 1e6)
                item.valueType = self.NVML_VALUE_TYPE_UNSIGNED_INT
                if fid == self.NVML_FI_DEV_POWER_INSTANT and instant:
                    item.nvmlReturn = NVML_SUCCESS
                    item.value.uiVal = round(gpu.power_at(t) * 1000)
                else:
                    item.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
            return out

    # -- gauges -------------------------------------------------------------------------------
    def _privileged_in_mig(self, gpu: FakeGPU, handle: FakeHandle) -> None:
        # nvml.h nvmlDeviceGetMemoryInfo / ...RunningProcesses: "In MIG mode, if device handle
        # is provided, the API returns aggregate information, only if the caller has
        # appropriate privileges."
        if handle.mig is None and gpu.mig_enabled and not gpu.privileged:
            raise NVMLError_NoPermission()

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> c_nvmlMemory_t:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
            assert gpu is not None
            self._privileged_in_mig(gpu, handle)
            return c_nvmlMemory_t(total=gpu.memory_total_bytes, used=gpu.memory_used_bytes,
                                  free=gpu.memory_total_bytes - gpu.memory_used_bytes)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> c_nvmlUtilization_t:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetUtilizationRates", handle)
            assert gpu is not None
            # nvml.h: "On MIG-enabled GPUs, querying device utilization rates is not
            # currently supported."
            if gpu.mig_enabled:
                raise NVMLError_NotSupported()
            return c_nvmlUtilization_t(gpu=gpu.utilization_pct, memory=gpu.utilization_pct // 2)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetTemperature", handle)
            assert gpu is not None
            if sensor != self.NVML_TEMPERATURE_GPU:
                raise NVMLError_InvalidArgument()
            return gpu.temperature_c

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        with self.lock:
            gpu = self._enter("nvmlDeviceGetClockInfo", handle)
            assert gpu is not None
            if clock_type != self.NVML_CLOCK_SM:
                raise NVMLError_InvalidArgument()
            return gpu.sm_clock_mhz

    def _processes(self, function: str, handle: FakeHandle, kind: str) -> list[SimpleNamespace]:
        # pynvml.py nvmlDeviceGetComputeRunningProcesses_v3: friendly objects; usedGpuMemory
        # None where NVML gives NVML_VALUE_NOT_AVAILABLE; 0xFFFFFFFF instance ids outside MIG.
        # nvml.h: "Per-instance information can be queried by using specific MIG device
        # handles": a MIG handle lists the processes of its own instance only.
        with self.lock:
            gpu = self._enter(function, handle)
            assert gpu is not None
            self._privileged_in_mig(gpu, handle)
            mig = self._mig_device(gpu, handle) if handle.mig is not None else None
            by_uuid = {d.uuid: d for d in gpu.mig_devices if d is not None}
            out = []
            for p in gpu.processes:
                if p.kind != kind or (mig is not None and p.mig_uuid != mig.uuid):
                    continue
                pid = self.reported_pid(p, function)
                if pid is None:  # in a namespace the caller's cannot see: left out
                    continue
                where = by_uuid.get(p.mig_uuid or "")
                out.append(SimpleNamespace(
                    pid=pid, usedGpuMemory=p.used_gpu_memory_bytes,
                    gpuInstanceId=where.gi_id if where else 0xFFFFFFFF,
                    computeInstanceId=where.ci_id if where else 0xFFFFFFFF))
            return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        return self._processes("nvmlDeviceGetComputeRunningProcesses", handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        return self._processes("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics")

    def nvmlDeviceGetProcessUtilization(
            self, handle: FakeHandle, timeStamp: int) -> list[c_nvmlProcessUtilizationSample_t]:
        """pynvml.py ``nvmlDeviceGetProcessUtilization(handle, timeStamp)``: a list of
        ``c_nvmlProcessUtilizationSample_t``. nvml.h (nvmlDeviceGetProcessUtilization): one
        sample per process "that had some non-zero utilization during the last sample period",
        stamped with the CPU time in microseconds; only samples with a timestamp greater than
        ``lastSeenTimeStamp`` (0: all the driver still holds); NOT_FOUND "if sample entries are
        not found"; "On MIG-enabled GPUs, querying process utilization is not currently
        supported" (NOT_SUPPORTED); Maxwell and newer.

        Here the driver samples at every ``process_sample_period_s`` boundary of simulated
        time, each process's ``sm_util`` at the middle of the period, and holds the newest
        ``process_sample_buffer`` entries (from at most as many periods): a caller that waits
        longer than that loses the older ones, as with the real buffer. Real drivers have been
        seen to return fewer entries (one per process, its latest: NVIDIA/go-nvml#51) and
        entries of exited processes; a ratio of sums reads both the same."""
        with self.lock:
            gpu = self._enter("nvmlDeviceGetProcessUtilization", handle)
            assert gpu is not None
            if gpu.mig_enabled or (gpu.arch_code is not None
                                   and gpu.arch_code < ARCH_CODES["maxwell"]):
                raise NVMLError_NotSupported()
            period_s = gpu.process_sample_period_s
            k_now = math.floor(self.elapsed_s() / period_s + 1e-9)  # periods ended so far
            since = int(timeStamp)
            newest_first: list[c_nvmlProcessUtilizationSample_t] = []
            for k in range(k_now, max(0, k_now - gpu.process_sample_buffer), -1):
                stamp_us = round((self.t0_s + k * period_s) * 1e6)
                if stamp_us <= since or len(newest_first) >= gpu.process_sample_buffer:
                    break
                mid_s = (k - 0.5) * period_s
                per_pid: dict[int, tuple[int, int]] = {}  # a process listed twice: one sample
                for p in gpu.processes:
                    pid = self.reported_pid(p, "nvmlDeviceGetProcessUtilization")
                    assert pid is not None  # samples keep the host pid of an unseen process
                    sm, mem = per_pid.get(pid, (0, 0))
                    per_pid[pid] = (max(sm, p.sm_util_at(mid_s)), max(mem, p.mem_util))
                for pid, (sm, mem) in per_pid.items():
                    if (sm or mem) and len(newest_first) < gpu.process_sample_buffer:
                        newest_first.append(c_nvmlProcessUtilizationSample_t(
                            pid=pid, timeStamp=stamp_us, smUtil=sm, memUtil=mem))
            if not newest_first:
                raise NVMLError_NotFound()
            return newest_first[::-1]


def sine_trace(mean_w: float, amplitude_w: float, freq_hz: float) -> Callable[[float], float]:
    """A sinusoidal power trace ``mean + amplitude * sin(2 pi f t)``."""
    return lambda t: mean_w + amplitude_w * math.sin(2 * math.pi * freq_hz * t)


def steps_trace(levels_w: list[float], step_s: float) -> Callable[[float], float]:
    """A stepped trace cycling through ``levels_w``, each held ``step_s`` seconds."""
    return lambda t: levels_w[int(t / step_s) % len(levels_w)]
