"""AMD GPUs (Instinct, Radeon) through ``amdsmi``, ROCm's official Python bindings.

Per AMD's amdsmi Python API reference: after ``amdsmi_init()``, ``amdsmi_get_processor_handles()``
lists the GPUs; ``amdsmi_get_energy_count(h)`` returns the energy accumulator
(``energy_accumulator``, ``power`` in older releases) with its ``counter_resolution`` in µJ,
so joules = accumulator x resolution / 1e6 (method ``counter``; a drop is a reset); where it is
unsupported, ``amdsmi_get_power_info(h)`` (``current_socket_power``, else
``average_socket_power``, W) is integrated with the trapezoid rule between the probe's reads
(method ``integrated``). Channels are ``rocm0``, ``rocm1``... (apart from NVIDIA's ``gpu<i>``).

Which GPUs: ``HIP_VISIBLE_DEVICES``, else ``ROCR_VISIBLE_DEVICES``, else
``CUDA_VISIBLE_DEVICES`` (ROCm honours it), parsed by the one selector of
:mod:`.visible` (indices or UUIDs).

MI250/MI250X (two GCDs per package, each shown as a device) and partitioned MI300X: the GCDs
of one package share its board serial (``amdsmi_get_gpu_board_info``). Their counters are
summed into **one channel per package** (``meta.gcds``): on MI250 the package's energy is
reported on one GCD and the other reads 0 (the "second GCD reads 0 W" of peers' issues), and
where each GCD reports its own, the sum is the package's either way. When only some GCDs of a
package are visible, the package is still measured whole, and a warning says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._lazy import LazyLogger
from ..errors import ConfigError
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable
from .counter import CumulativeCounter
from .integrate import TrapezoidIntegrator
from .presence import AMD_DRIVER_PATHS, amdsmi_missing
from .visible import GpuIdentity, select_visible

log = LazyLogger("energymeter")

SOURCE = "amdsmi"
#: Where a loaded AMD GPU driver shows itself (the ROCm compute device, the amdgpu module).
DRIVER_PATHS = AMD_DRIVER_PATHS
VISIBLE_VARIABLES = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def _errors(amdsmi: Any) -> tuple[type[BaseException], ...]:
    base = getattr(amdsmi, "AmdSmiException", None)
    return (base,) if isinstance(base, type) else (Exception,)


def _energy_uj(amdsmi: Any, handle: Any, strict: bool = False) -> tuple[int, float] | None:
    """(raw accumulator, resolution in µJ), or None when unsupported (``strict``: a call that
    fails raises, as a read of a counter known to work must say)."""
    try:
        info = amdsmi.amdsmi_get_energy_count(handle)
    except (AttributeError, *_errors(amdsmi)):
        if strict:
            raise
        return None
    raw = info.get("energy_accumulator", info.get("power"))
    resolution = info.get("counter_resolution")
    if not isinstance(raw, int) or not isinstance(resolution, (int, float)) or resolution <= 0:
        return None
    return raw, float(resolution)


def _power_w(amdsmi: Any, handle: Any, strict: bool = False) -> float | None:
    try:
        info = amdsmi.amdsmi_get_power_info(handle)
    except (AttributeError, *_errors(amdsmi)):
        if strict:
            raise
        return None
    for key in ("current_socket_power", "average_socket_power"):
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class _Package:
    def __init__(self, channel: Channel, handles: list[Any], counters: list[Any],
                 resolution_uj: float | None) -> None:
        self.channel = channel
        self.handles = handles
        self.counters = counters  # CumulativeCounter per GCD, or empty (integrated)
        self.resolution_uj = resolution_uj
        self.integrator = TrapezoidIntegrator()


#: Gauges per package channel (suffixes of ``<channel>_``).
GAUGES = ("memory_used_bytes", "utilization_pct")


class AmdSmiProbe(Probe):
    source = SOURCE
    may_block = True  # a driver call

    def __init__(self, amdsmi: Any, packages: list[_Package], clock: Callable[[], float]
                 ) -> None:
        super().__init__(tuple(p.channel for p in packages),
                         tuple(f"{p.channel.id}_{g}" for p in packages for g in GAUGES))
        self._amdsmi = amdsmi
        self._packages = packages
        self._clock = clock
        for p in packages:
            if not p.counters:
                p.integrator.add(clock(), self._package_power(p))

    def _package_power(self, package: _Package, strict: bool = False) -> float:
        return sum(_power_w(self._amdsmi, h, strict) or 0.0 for h in package.handles)

    def _read(self) -> dict[str, float]:
        """Every package's joules. A package whose driver call fails fails alone
        (:class:`PartialRead`): its counters keep their last good readings (the energy over
        the gap is counted when it answers again), its polled power skips that sample (the
        trapezoid bridges the gap)."""
        out = {}
        errors: dict[str, str] | None = None
        skip = self.skip
        now = self._clock()
        for p in self._packages:
            cid = p.channel.id
            if skip and cid in skip:
                continue
            try:
                if p.counters:
                    total = 0.0
                    for handle, counter in zip(p.handles, p.counters, strict=True):
                        reading = _energy_uj(self._amdsmi, handle, strict=True)
                        if reading is not None:
                            counter.advance(reading[0])
                        total += counter.total * (p.resolution_uj or 0.0) / 1e6
                    out[cid] = total
                else:
                    p.integrator.add(now, self._package_power(p, strict=True))
                    out[cid] = p.integrator.energy_j
            except (AttributeError, *_errors(self._amdsmi)) as exc:
                if errors is None:
                    errors = {}
                errors[cid] = f"amdsmi read of {cid} failed: {type(exc).__name__}: {exc}"
        if errors is not None:
            raise PartialRead(out, errors)
        return out

    def _gauges(self) -> dict[str, float]:
        """VRAM in use (``amdsmi_get_gpu_vram_usage``: ``vram_used`` in MB) summed over a
        package's GCDs, and graphics activity (``amdsmi_get_gpu_activity``: ``gfx_activity``
        in %) averaged over them; a value the driver does not give is left out."""
        out: dict[str, float] = {}
        errors = (AttributeError, KeyError, TypeError, ValueError, *_errors(self._amdsmi))

        def value(call: Callable[[], Any], key: str) -> float | None:
            try:
                return float(call()[key])
            except errors:  # not reported by this GPU or driver: the gauge is left out
                return None

        for p in self._packages:
            used = [v for h in p.handles if (v := value(
                lambda h=h: self._amdsmi.amdsmi_get_gpu_vram_usage(h), "vram_used")) is not None]
            busy = [v for h in p.handles if (v := value(
                lambda h=h: self._amdsmi.amdsmi_get_gpu_activity(h), "gfx_activity"))
                is not None]
            if used:
                out[f"{p.channel.id}_memory_used_bytes"] = sum(used) * 2**20
            if busy:
                out[f"{p.channel.id}_utilization_pct"] = sum(busy) / len(busy)
        return out

    def close(self) -> None:
        if self._packages:
            self._packages = []
            try:
                self._amdsmi.amdsmi_shut_down()
            except (AttributeError, *_errors(self._amdsmi)) as exc:
                log.debug("amdsmi_shut_down failed: %r", exc)


def discover(ctx: DiscoveryContext, *, clock: Callable[[], float] = time.monotonic,
             driver_paths: tuple[str, ...] = DRIVER_PATHS) -> list[Probe | Unavailable]:
    """An :class:`AmdSmiProbe` for the visible AMD GPUs, or why there is none (amdsmi is not
    even imported on a machine without an AMD GPU driver)."""
    missing = amdsmi_missing(ctx, driver_paths)
    if missing is not None:
        return [missing]
    amdsmi = ctx.amdsmi
    if amdsmi is None:
        try:
            import amdsmi  # type: ignore[no-redef]
        except ImportError as exc:
            return [Unavailable(SOURCE, f"the amdsmi package is not installed ({exc})",
                                "install ROCm's amdsmi Python package (`pip install amdsmi` "
                                "matching your ROCm version)")]
    errors = _errors(amdsmi)
    try:
        flags = getattr(getattr(amdsmi, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
        amdsmi.amdsmi_init(flags) if flags is not None else amdsmi.amdsmi_init()
        handles = list(amdsmi.amdsmi_get_processor_handles())
    except errors as exc:
        return [Unavailable(SOURCE, f"amdsmi could not be initialised: {exc}",
                            "check that `amd-smi list` works for this user (group render/"
                            "video)")]
    if not handles:
        return [Unavailable(SOURCE, "amdsmi found no AMD GPU", "check `amd-smi list`")]
    identities = []
    for i, h in enumerate(handles):
        try:
            uuid = str(amdsmi.amdsmi_get_gpu_device_uuid(h))
        except errors:
            uuid = f"amd-{i}"
        # ROCm names GPUs by UUID as GPU-<uuid> in *_VISIBLE_DEVICES.
        identities.append(GpuIdentity(i, uuid if uuid.upper().startswith("GPU-")
                                      else f"GPU-{uuid}"))
    variable = next((v for v in VISIBLE_VARIABLES if v in ctx.env), None)
    try:
        selection = select_visible(ctx.env.get(variable) if variable else None, identities)
    except ConfigError as exc:
        return [Unavailable(SOURCE, str(exc).replace("CUDA_VISIBLE_DEVICES", variable or ""),
                            f"fix or unset {variable}")]
    warnings = list(selection.warnings)
    # One package per board serial: the GCDs of an MI250 (or an MI300X partition) share it.
    boards: dict[str, list[int]] = {}
    for vis in selection.gpus:
        h = handles[vis.nvml_index]
        try:
            serial = str(amdsmi.amdsmi_get_gpu_board_info(h).get("product_serial") or "")
        except (AttributeError, *errors):
            serial = ""
        boards.setdefault(serial or f"index-{vis.nvml_index}", []).append(vis.nvml_index)
    packages: list[_Package] = []
    for serial, indices in boards.items():
        first = handles[indices[0]]
        try:
            name = str(amdsmi.amdsmi_get_gpu_asic_info(first).get("market_name") or "AMD GPU")
        except (AttributeError, *errors):
            name = "AMD GPU"
        readings = [_energy_uj(amdsmi, handles[i]) for i in indices]
        cid = f"rocm{len(packages)}"
        meta: dict[str, Any] = {"indices": indices,
                                "uuids": [identities[i].uuid for i in indices],
                                "board_serial": serial if not serial.startswith("index-")
                                else None}
        if len(indices) > 1:
            meta["gcds"] = len(indices)
        if all(r is not None for r in readings):
            resolution = readings[0][1]  # type: ignore[index]
            counters = [CumulativeCounter(r[0]) for r in readings]  # type: ignore[index]
            channel = Channel(cid, "gpu", name, SOURCE, "counter", meta=meta)
            packages.append(_Package(channel, [handles[i] for i in indices], counters,
                                     resolution))
        elif all(_power_w(amdsmi, handles[i]) is not None for i in indices):
            channel = Channel(cid, "gpu", name, SOURCE, "integrated", meta=meta)
            packages.append(_Package(channel, [handles[i] for i in indices], [], None))
        else:
            warnings.append(f"AMD GPU {indices} ({name}) reports neither an energy counter "
                            "nor power")
    all_gcds = {i for i in range(len(handles))}
    for p in packages:
        siblings = [i for i in all_gcds if i not in p.channel.meta["indices"]
                    and _same_board(amdsmi, handles, i, p.channel.meta.get("board_serial"))]
        if siblings:
            warnings.append(f"{p.channel.id}: GCDs {siblings} of the same package are not "
                            "visible, but energy is counted per package: it includes theirs")
    if not packages:
        amdsmi.amdsmi_shut_down()
        return [Unavailable(SOURCE, "; ".join(warnings) or "no measurable AMD GPU",
                            "check `amd-smi metric --energy`")]
    probe = AmdSmiProbe(amdsmi, packages, clock)
    for w in warnings:
        probe.warn(w)
    return [probe]


def _same_board(amdsmi: Any, handles: list[Any], index: int, serial: str | None) -> bool:
    if not serial:
        return False
    try:
        return str(amdsmi.amdsmi_get_gpu_board_info(handles[index]).get(
            "product_serial") or "") == serial
    except (AttributeError, *_errors(amdsmi)):
        return False
