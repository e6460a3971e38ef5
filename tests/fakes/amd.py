"""A fake ``amdsmi`` module object: simulated AMD GPU devices on a clock (pass it as
``DiscoveryContext(amdsmi=FakeAmdSmi(...))``; it never enters ``sys.modules``).

It mirrors ROCm/amdsmi's Python interface as the probe calls it:

* ``py-interface/amdsmi_exception.py``: ``AmdSmiException``; ``AmdSmiLibraryException(err_code)``
  with ``err_code`` (abs of the status) and ``get_error_code()``; ``AmdSmiParameterException``
  for a handle that is not an ``amdsmi_processor_handle``.
* ``py-interface/amdsmi_wrapper.py``: the ``AMDSMI_STATUS_*`` values (NOT_SUPPORTED = 2,
  NO_PERM = 10, INIT_ERROR = 18, DRIVER_NOT_LOADED = 34...), ``AmdSmiInitFlags``.
* ``py-interface/amdsmi_interface.py``: the functions' return values: ``amdsmi_get_energy_count``
  -> ``{'power', 'energy_accumulator', 'counter_resolution', 'timestamp'}`` (uint64 count,
  ctypes.c_float µJ, uint64 ns; ``power`` is the same count, deprecated in 6.4; ``legacy_energy``
  gives only ``power`` as releases before ``energy_accumulator`` did);
  ``amdsmi_get_power_info`` -> ``current_socket_power``/``average_socket_power`` W, 0xFFFF
  mapped to "N/A" (``raw_sentinels`` keeps 0xFFFF, as releases without that mapping return);
  ``amdsmi_get_gpu_asic_info`` ``asic_serial`` "0x%016X" (from the device's unique_id) or "N/A";
  ``amdsmi_get_gpu_board_info`` strings, "" -> "N/A"; ``amdsmi_get_gpu_device_bdf``
  "dddd:bb:dd.f" (``_format_bdf``); ``amdsmi_get_gpu_kfd_info`` ``kfd_id``/``node_id``/
  ``current_partition_id`` ("N/A" for all-ones); ``amdsmi_get_gpu_compute_partition`` "SPX",
  "CPX"...; ``amdsmi_get_gpu_activity`` 0xFFFF -> "N/A"; ``amdsmi_get_gpu_vram_usage`` MB.
* ``src/amd_smi/amd_smi_uuid.cc`` (amdsmi_uuid_gen): ``amdsmi_get_gpu_device_uuid`` is built
  from the unique_id and the PCI device id (fcn 0xff), 8-4-4-4-12 lower-case hex.

Each :class:`FakeAmdGpu` is one amdsmi device (a GPU, an MI250 GCD or an MI300X partition) with
a constant power; its energy accumulator (per PCI device, as the SMU metrics table is) advances
in ``resolution_uj`` counts every ``period_s`` and wraps at 2**64.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

# amdsmi_wrapper.py: amdsmi_status_t values.
AMDSMI_STATUS_SUCCESS = 0
AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34
AMDSMI_STATUS_NO_DATA = 40
UINT16_MAX, UINT32_MAX, UINT64_MAX = 0xFFFF, 0xFFFFFFFF, 2**64 - 1


class AmdSmiException(Exception):
    """amdsmi_exception.py: the base class."""


class AmdSmiLibraryException(AmdSmiException):
    """amdsmi_exception.py: a status other than SUCCESS from the C library."""

    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code

    def get_error_code(self) -> int:
        return self.err_code

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | AMDSMI_STATUS_{self.err_code}"


class AmdSmiParameterException(AmdSmiException):
    """amdsmi_exception.py: an argument of the wrong type (e.g. not a processor handle)."""

    def __init__(self, received: object, expected: type) -> None:
        super().__init__(None)
        self.err_code = None
        self.err_msg = f"Invalid parameter:\nActual type: {type(received)}\nExpected type: " \
                       f"{expected}"

    def __str__(self) -> str:
        return self.err_msg


class AmdSmiInitFlags(IntEnum):
    """amdsmi_interface.py (values of amdsmi_wrapper.AMDSMI_INIT_*)."""

    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1
    INIT_NON_AMD_CPUS = 1 << 2
    INIT_NON_AMD_GPUS = 1 << 3
    INIT_AMD_APUS = (1 << 0) | (1 << 1)


class amdsmi_processor_handle:  # noqa: N801 - amdsmi_wrapper's (ctypes) name
    """An opaque handle (amdsmi_wrapper.amdsmi_processor_handle)."""

    def __init__(self, index: int) -> None:
        self.index = index


@dataclass
class FakeAmdGpu:
    """One amdsmi device. ``unique_id``: the KFD/ASIC unique id (0: none; GCDs of one MI250
    differ, partitions of one MI300X share it); ``serial``: the board's product serial ("" ->
    "N/A"); ``bus``/``function``: its PCI address (partitions of one device share the bus);
    ``partition``: current_partition_id (None: all-ones, "N/A"); ``kfd_node``: KFD node id
    (None: kfd_info unsupported); ``energy``: False -> the counter is NOT_SUPPORTED;
    ``reports_energy`` False -> an MI250/MI250X secondary GCD: linux
    drivers/gpu/drm/amd/pm/swsmu/smu13/aldebaran_ppt.c ``aldebaran_get_gpu_metrics`` ("Valid
    power data is available only from primary die") sets its ``energy_accumulator = 0`` and
    ``average_socket_power = 0`` (a real 0, not a sentinel: ROCm/amdsmi src/amd_smi/amd_smi.cc
    ``amdsmi_get_power_info`` copies ``metrics.average_socket_power`` as is; ml-energy/zeus#203
    shows amdsmi's ``[89000, 0, 93000, 0, ...]`` mW on MI250X), while its
    ``average_gfx_activity`` is real; ``current_power`` False -> the GPU's metrics table has no
    ``current_socket_power`` (``gpu_metrics_v1_3``, MI200: include/kgd_pp_interface.h; ROCm/
    rocm_smi_lib src/rocm_smi_gpu_metrics.cc leaves a field the table lacks all-ones,
    ``init_max_uint_types``), so it is 0xFFFF / "N/A"; ``power`` False -> no socket power at all
    (amd_smi.cc keeps its 0xFFFF defaults when ``amdsmi_get_gpu_metrics_info`` fails: a VM
    guest); ``owns_counter`` False: a partition whose counter is NOT_SUPPORTED (only the
    primary gives the socket's); ``mirrors_package`` True: a secondary GCD whose counter and
    power copy the package's (the primary's), as a kernel without the primary-die guard would
    give (what the probe must not count twice); ``gpu_metrics_v1_1`` True: aldebaran as first
    merged (aldebaran_ppt.c with ``struct gpu_metrics_v1_1``, before the primary-die rule, e.g.
    hindawiai/hinlin's copy of drivers/gpu/drm/amd/pm/swsmu/smu13/aldebaran_ppt.c):
    ``energy_accumulator = 0`` on every die, ``average_socket_power`` the die's own
    ``AverageSocketPower`` on both."""

    power_w: float = 300.0
    serial: str = ""
    unique_id: int | None = None
    name: str = "AMD Instinct MI250X"
    device_id: int = 0x740C
    bus: int | None = None
    function: int = 0
    partition: int | None = None
    compute_partition: str | None = None
    kfd_node: int | None = None
    resolution_uj: float = 15.3
    period_s: float = 0.001
    energy: bool = True
    reports_energy: bool = True
    current_power: bool = True
    power: bool = True
    owns_counter: bool = True
    mirrors_package: bool = False
    gpu_metrics_v1_1: bool = False
    offset: int = 123_456


class FakeAmdSmi:
    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiParameterException = AmdSmiParameterException
    AmdSmiInitFlags = AmdSmiInitFlags

    def __init__(self, gpus: list[FakeAmdGpu], clock: Callable[[], float] | None = None,
                 init_error: int | None = None, *, legacy_energy: bool = False,
                 raw_sentinels: bool = False) -> None:
        self.gpus = gpus
        for i, g in enumerate(gpus):
            if g.unique_id is None:
                g.unique_id = 0x1000_0000_0000_0000 + 0x1_0000 * i + 0xABC
            if g.bus is None:
                g.bus = 0x0C + 0x10 * i
            if g.kfd_node is None:
                g.kfd_node = i + 1  # node 0 is the CPU
        self.clock = clock or time.monotonic
        self.t0 = self.clock()
        self.init_error = init_error
        self.legacy_energy = legacy_energy
        self.raw_sentinels = raw_sentinels
        self.shutdowns = 0
        self.failing: set[int] = set()  # devices whose energy read fails (AMDSMI_STATUS_IO)
        self.handles = [amdsmi_processor_handle(i) for i in range(len(gpus))]

    # -- helpers -----------------------------------------------------------------------
    def _gpu(self, h: object) -> FakeAmdGpu:
        if not isinstance(h, amdsmi_processor_handle):
            raise AmdSmiParameterException(h, amdsmi_processor_handle)
        return self.gpus[h.index]

    def _source(self, g: FakeAmdGpu) -> FakeAmdGpu:
        """Whose SMU values ``g`` reports: its own, or (``mirrors_package``) those of the first
        device with its board serial that does not mirror, the primary die."""
        if not g.mirrors_package:
            return g
        return next(p for p in self.gpus if p.serial == g.serial and not p.mirrors_package)

    def energy_j(self, index: int, t0: float, t1: float) -> float:
        return self.gpus[index].power_w * (t1 - t0)

    def rocr_uuid(self, index: int) -> str:
        return f"GPU-{self.gpus[index].unique_id:016X}"

    def hip_uuid(self, index: int) -> str:
        return f"GPU-{self.gpus[index].unique_id:016x}"

    def bdf(self, index: int) -> str:
        g = self.gpus[index]
        return f"0000:{g.bus:02x}:00.{g.function:x}"

    # -- amdsmi_interface.py -----------------------------------------------------------
    def amdsmi_init(self, flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        if not isinstance(flag, AmdSmiInitFlags):
            raise AmdSmiParameterException(flag, AmdSmiInitFlags)
        if self.init_error is not None:
            raise AmdSmiLibraryException(self.init_error)

    def amdsmi_shut_down(self) -> None:
        self.shutdowns += 1

    def amdsmi_get_processor_handles(self) -> list[amdsmi_processor_handle]:
        return list(self.handles)

    def amdsmi_get_gpu_device_uuid(self, h: object) -> str:
        # amd_smi_uuid.cc: time_low = asic_7 << 24 | fcn << 16 | did; clk_seq_low = asic_6.
        g = self._gpu(h)
        s = g.unique_id or 0
        return (f"{(s >> 56) & 0xFF:02x}ff{g.device_id:04x}-0000-1000-80{(s >> 48) & 0xFF:02x}-"
                f"{(s >> 32) & 0xFFFF:04x}{s & 0xFFFFFFFF:08x}")

    def amdsmi_get_gpu_asic_info(self, h: object) -> dict:
        g = self._gpu(h)
        return {"market_name": g.name, "vendor_id": "0x1002",
                "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]", "subvendor_id": "0x1002",
                "device_id": hex(g.device_id), "rev_id": "0x01",
                "asic_serial": f"0x{g.unique_id:016X}" if g.unique_id else "N/A",
                "oam_id": "N/A", "num_compute_units": 104, "target_graphics_version": "gfx90a"}

    def amdsmi_get_gpu_board_info(self, h: object) -> dict:
        g = self._gpu(h)
        return {"model_number": "N/A", "product_serial": g.serial or "N/A", "fru_id": "N/A",
                "product_name": g.name, "manufacturer_name": "AMD"}

    def amdsmi_get_gpu_device_bdf(self, h: object) -> str:
        return self.bdf(self._gpu(h) and h.index)  # type: ignore[union-attr]

    def amdsmi_get_gpu_kfd_info(self, h: object) -> dict:
        g = self._gpu(h)
        if g.kfd_node is None or g.kfd_node < 0:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {"kfd_id": 0x1000 + g.kfd_node, "node_id": g.kfd_node,
                "current_partition_id": "N/A" if g.partition is None else g.partition}

    def amdsmi_get_gpu_compute_partition(self, h: object) -> str:
        g = self._gpu(h)
        if g.compute_partition is None:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return g.compute_partition

    def amdsmi_get_energy_count(self, h: object) -> dict:
        g = self._gpu(h)
        if h.index in self.failing:  # type: ignore[union-attr]
            raise AmdSmiLibraryException(12)  # AMDSMI_STATUS_IO
        if not g.energy or not g.owns_counter:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        t = self.clock() - self.t0
        g = self._source(g)
        ticks = int(t / g.period_s)
        joules = g.power_w * ticks * g.period_s
        # aldebaran_get_gpu_metrics: energy_accumulator = 0 on the secondary die.
        count = (g.offset + int(joules * 1e6 / g.resolution_uj)) % 2**64 \
            if g.reports_energy and not g.gpu_metrics_v1_1 else 0
        out = {"power": count, "energy_accumulator": count,
               "counter_resolution": g.resolution_uj, "timestamp": int(t * 1e9)}
        if self.legacy_energy:
            del out["energy_accumulator"]
        return out

    def _na(self, value: int) -> int | str:
        return value if self.raw_sentinels or value != UINT16_MAX else "N/A"

    def amdsmi_get_power_info(self, h: object) -> dict:
        # amd_smi.cc amdsmi_get_power_info: 0xFFFF defaults, then the metrics table's
        # current_socket_power / average_socket_power as they are (W, uint).
        g = self._source(self._gpu(h))
        average = int(g.power_w) if g.power and g.owns_counter else UINT16_MAX
        if g.power and not g.reports_energy:
            average = 0  # aldebaran_get_gpu_metrics: average_socket_power = 0, secondary die
        current = average if g.current_power and g.reports_energy \
            and not g.gpu_metrics_v1_1 else UINT16_MAX
        return {"current_socket_power": self._na(current),
                "average_socket_power": self._na(average),
                "gfx_voltage": self._na(UINT16_MAX), "soc_voltage": self._na(UINT16_MAX),
                "mem_voltage": self._na(UINT16_MAX), "power_limit": 560}

    def amdsmi_get_gpu_vram_usage(self, h: object) -> dict:
        return {"vram_total": 65536, "vram_used": 2048 * (self._gpu(h) and h.index + 1)}  # type: ignore[union-attr]

    def amdsmi_get_gpu_activity(self, h: object) -> dict:
        g = self._gpu(h)
        # aldebaran_get_gpu_metrics sets average_gfx_activity on both dies.
        busy = 40 + h.index if g.power else UINT16_MAX  # type: ignore[union-attr]
        return {"gfx_activity": self._na(busy), "umc_activity": 10, "mm_activity": 0}
