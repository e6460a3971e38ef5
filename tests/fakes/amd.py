"""A fake ``amdsmi`` module object: simulated AMD GPUs on a clock (pass it as
``DiscoveryContext(amdsmi=FakeAmdSmi(...))``; it never enters ``sys.modules``).

Each :class:`FakeAmdGpu` has a constant power, an energy accumulator in units of
``resolution_uj`` that moves every ``period_s``, a board serial (GCDs of one MI250 package share
it), and switches: ``energy=False`` (no energy counter: the power fallback), ``reports_energy``
False (an MI250 GCD whose counter stays 0: its package's energy is on its sibling).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    pass


@dataclass
class FakeAmdGpu:
    power_w: float = 300.0
    serial: str = ""
    uuid: str = ""
    name: str = "AMD Instinct MI250X"
    resolution_uj: float = 15.3
    period_s: float = 0.001
    energy: bool = True
    reports_energy: bool = True
    offset: int = 123_456


class FakeAmdSmi:
    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiInitFlags = SimpleNamespace(INIT_AMD_GPUS=2)

    def __init__(self, gpus: list[FakeAmdGpu], clock: Callable[[], float] | None = None,
                 init_error: bool = False) -> None:
        self.gpus = gpus
        for i, g in enumerate(gpus):
            g.uuid = g.uuid or f"{i:08x}-0000-1000-8000-00000000{i:04x}"
            g.serial = g.serial or f"SERIAL{i}"
        self.clock = clock or time.monotonic
        self.t0 = self.clock()
        self.init_error = init_error
        self.shutdowns = 0

    def energy_j(self, index: int, t0: float, t1: float) -> float:
        return self.gpus[index].power_w * (t1 - t0)

    def amdsmi_init(self, flags: int = 0) -> None:
        if self.init_error:
            raise AmdSmiLibraryException("AMDSMI_STATUS_INIT_ERROR")

    def amdsmi_shut_down(self) -> None:
        self.shutdowns += 1

    def amdsmi_get_processor_handles(self) -> list[int]:
        return list(range(len(self.gpus)))

    def amdsmi_get_gpu_device_uuid(self, h: int) -> str:
        return self.gpus[h].uuid

    def amdsmi_get_gpu_asic_info(self, h: int) -> dict:
        return {"market_name": self.gpus[h].name}

    def amdsmi_get_gpu_board_info(self, h: int) -> dict:
        return {"product_serial": self.gpus[h].serial}

    def amdsmi_get_energy_count(self, h: int) -> dict:
        g = self.gpus[h]
        if not g.energy:
            raise AmdSmiLibraryException("AMDSMI_STATUS_NOT_SUPPORTED")
        t = self.clock() - self.t0
        ticks = int(t / g.period_s)
        joules = g.power_w * ticks * g.period_s if g.reports_energy else 0.0
        return {"energy_accumulator": g.offset + int(joules * 1e6 / g.resolution_uj),
                "counter_resolution": g.resolution_uj, "timestamp": int(t * 1e9)}

    def amdsmi_get_gpu_vram_usage(self, h: int) -> dict:
        return {"vram_total": 65536, "vram_used": 2048 * (h + 1)}  # MB

    def amdsmi_get_gpu_activity(self, h: int) -> dict:
        if not self.gpus[h].reports_energy:
            return {"gfx_activity": "N/A", "umc_activity": "N/A", "mm_activity": "N/A"}
        return {"gfx_activity": 40 + h, "umc_activity": 10, "mm_activity": 0}

    def amdsmi_get_power_info(self, h: int) -> dict:
        g = self.gpus[h]
        return {"current_socket_power": g.power_w if g.reports_energy else "N/A",
                "average_socket_power": g.power_w if g.reports_energy else "N/A"}
