"""AMD GPUs (Instinct, Radeon) through ``amdsmi``, ROCm's official Python bindings.

What is read (ROCm/amdsmi ``py-interface/amdsmi_interface.py``; "N/A" strings or all-ones
integers where a value is not available, ``AmdSmiLibraryException`` with ``err_code``
``AMDSMI_STATUS_NOT_SUPPORTED`` (2) for an unsupported call):

* energy: ``amdsmi_get_energy_count(h)``: ``energy_accumulator`` (``power`` in releases before
  it; both keys until ROCm 6.4 deprecates ``power``), a uint64 count of ``counter_resolution``
  µJ (a float; 15.3 on MI200/MI300), ``timestamp`` in ns. joules = count x resolution / 1e6,
  method ``counter``; a drop is a 64-bit wrap when the increase over 2**64 is plausible (at most
  :data:`MAX_PLAUSIBLE_W` since the last read), else a reset (the new value counts as energy
  since it). Where unsupported, ``amdsmi_get_power_info(h)`` socket power in W
  (``current_socket_power``, else ``average_socket_power``; "N/A" or 0xFFFF when absent) is
  integrated with the trapezoid rule between the probe's reads (method ``integrated``).
* identity: ``amdsmi_get_gpu_asic_info`` (``market_name``; ``asic_serial`` "0x%016X", the
  device's unique_id, which ROCr's and HIP's ``GPU-<16 hex>`` UUIDs are made of),
  ``amdsmi_get_gpu_board_info`` (``product_serial``, "N/A" when the board has none: Radeon
  cards, VM guests), ``amdsmi_get_gpu_device_bdf`` ("dddd:bb:dd.f"),
  ``amdsmi_get_gpu_kfd_info`` (``node_id``: the KFD topology order ROCr enumerates in;
  ``current_partition_id``), ``amdsmi_get_gpu_compute_partition`` ("SPX", "CPX"...).

Which GPUs: ROCr's ``ROCR_VISIBLE_DEVICES`` first, over every GPU in KFD order, then HIP's
``HIP_VISIBLE_DEVICES`` (if non-empty, else ``CUDA_VISIBLE_DEVICES``) indexing into what ROCr
left, each with its runtime's own rules (:func:`.visible.rocm_visible`). amdsmi's own UUID
(``amdsmi_get_gpu_device_uuid``, 8-4-4-4-12, what ``amd-smi list`` shows) is not accepted by
either runtime; an entry written that way is reported with the ``GPU-`` form to use.

Packages, counted once. A physical package is one channel ``rocm<i>``:

* devices with the same real board serial are one package (the two GCDs of an MI250/MI250X
  OAM, each its own PCI device); a serial that is "N/A", empty, all zeros or shared by more
  than :data:`MAX_PCI_DEVICES_PER_BOARD` PCI devices is not a package key;
* otherwise devices on the same PCI domain:bus:device are one package (the compute partitions
  of an MI300X in DPX/QPX/CPX mode: one PCI device, one SMU, several amdsmi devices);
* otherwise each device is its own package (two Radeon cards without serials stay two).

A package's energy is the sum over its PCI devices of one counter each: the SMU's metrics
table, where the accumulator lives, belongs to the PCI device, so partitions of one device
give the same socket counter (or only the first gives it), and it is read once, from the
lowest partition that supports it. On MI250 the secondary GCD's counter and average socket
power stay 0 (linux aldebaran_ppt.c ``aldebaran_get_gpu_metrics``: "Valid power data is
available only from primary die"): the sum is the package's. Should both PCI devices of one
board report moving counters that advance by the same energy (within
:data:`MIRROR_TOLERANCE` over a read), both carry the package's energy: from that read on only
the primary (lowest BDF) is counted, and a warning says so once. When a process sees only
some devices of a package, the channel is still the whole package (shared with what runs on
the others) and a warning says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._lazy import LazyLogger
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable, opened_or_shut
from .counter import CumulativeCounter, outcome_warning
from .integrate import TrapezoidIntegrator
from .presence import AMD_DRIVER_PATHS, amdsmi_missing
from .visible import RocmStep, hip_uuid, rocm_visible, rocr_uuid

log = LazyLogger("energymeter")

SOURCE = "amdsmi"
#: Where a loaded AMD GPU driver shows itself (the ROCm compute device, the amdgpu module).
DRIVER_PATHS = AMD_DRIVER_PATHS
VISIBLE_VARIABLES = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
#: The energy accumulator is a uint64 (amdsmi_get_energy_count: ctypes.c_uint64).
COUNTER_MODULUS = 2**64
#: No AMD package draws more (MI355X: 1.4 kW); a larger step is a reset, never a wrap.
MAX_PLAUSIBLE_W = 5000.0
#: An OAM carries at most two PCI devices (MI250/MI250X: two GCDs); a board serial shared by
#: more is a placeholder, not a package.
MAX_PCI_DEVICES_PER_BOARD = 2
#: Two counters of one board that advance by the same energy within this fraction over one
#: read interval are one counter reported twice (see :func:`_same_package_value`).
MIRROR_TOLERANCE = 0.02
#: Increments (J) below this are too small to compare (a few counts of 15.3 µJ, idle jitter).
MIN_MIRROR_STEP_J = 0.01
#: Powers (W) at or below this are not compared (an idle or secondary die's 0 W).
MIN_MIRROR_POWER_W = 1.0
#: Socket power keys of amdsmi_get_power_info, best first (W).
POWER_KEYS = ("current_socket_power", "average_socket_power")
#: All-ones values amdsmi and its structs use for "not available".
_SENTINELS = frozenset({0xFFFF, 0xFFFFFFFF, 2**64 - 1})
_NOT_SUPPORTED = frozenset({2, 3, 40})  # NOT_SUPPORTED, NOT_YET_IMPLEMENTED, NO_DATA
_NO_PERM, _DRIVER_NOT_LOADED = 10, 34
#: Gauges per package channel (suffixes of ``<channel>_``).
GAUGES = ("memory_used_bytes", "utilization_pct")


def _errors(amdsmi: Any) -> tuple[type[BaseException], ...]:
    base = getattr(amdsmi, "AmdSmiException", None)
    return (base,) if isinstance(base, type) and issubclass(base, BaseException) else (Exception,)


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "err_code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _number(value: Any) -> float | None:
    """A finite non-negative reading; None for "N/A", all-ones sentinels and anything odd."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and value in _SENTINELS:
        return None
    return float(value) if 0 <= value < float("inf") else None


def _text(value: Any) -> str:
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    return "" if text.upper() in ("", "N/A", "NA", "NONE", "UNKNOWN") else text


def _serial(value: Any) -> str:
    """A board serial that identifies a board: not "N/A", empty or all zeros."""
    text = _text(value)
    digits = text.lower().removeprefix("0x")
    return "" if not digits or set(digits) <= {"0"} else text


def _unique_id(asic: Mapping[str, Any]) -> int:
    """The device's unique_id from asic_info's ``asic_serial`` ("0x%016X"); 0 when absent."""
    text = _text(asic.get("asic_serial"))
    try:
        return int(text, 16) & (2**64 - 1) if text else 0
    except ValueError:
        return 0


def _bdf_key(device: _Device) -> tuple[int, ...]:
    """A device's PCI address as numbers (domain, bus, device, function), for ordering; devices
    without one sort last, by amdsmi index."""
    parts = device.bdf.replace(".", ":").split(":")
    try:
        return (0, *(int(x, 16) for x in parts), device.index) if len(parts) == 4 else \
            (1, device.index)
    except ValueError:
        return (1, device.index)


def _pci_device(bdf: str) -> str:
    """domain:bus:device of "dddd:bb:dd.f" (partitions of one device differ only after it)."""
    head = bdf.rsplit(".", 1)[0].lower()
    return head if head.count(":") >= 1 and head.replace(":", "").isalnum() else ""


def _energy(amdsmi: Any, handle: Any) -> tuple[int, float]:
    """(raw uint64 accumulator, µJ per count); raises the amdsmi error, or ValueError when the
    answer holds no usable counter."""
    info = amdsmi.amdsmi_get_energy_count(handle)
    raw = info.get("energy_accumulator", info.get("power")) if isinstance(info, Mapping) else None
    resolution = _number(info.get("counter_resolution")) if isinstance(info, Mapping) else None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0 or not resolution:
        raise ValueError(f"no energy counter in {info!r}")
    return raw, resolution


def _power_w(amdsmi: Any, handle: Any) -> float | None:
    """Socket power in W (raises the amdsmi error); None when every key is "N/A"."""
    info = amdsmi.amdsmi_get_power_info(handle)
    if not isinstance(info, Mapping):
        return None
    return next((v for k in POWER_KEYS if (v := _number(info.get(k))) is not None), None)


@dataclass
class _Device:
    """One amdsmi GPU device (a whole GPU, an MI250 GCD, or an MI300X partition)."""

    index: int  # position in amdsmi_get_processor_handles()
    handle: Any
    name: str = "AMD GPU"
    unique_id: int = 0
    serial: str = ""
    bdf: str = ""
    uuid: str = ""  # amdsmi's (amd-smi list)
    kfd_node: int | None = None
    partition: int | None = None
    compute_partition: str = ""
    visible: bool = False
    hip_index: int | None = None

    @property
    def rocr_uuid(self) -> str | None:
        return rocr_uuid(self.unique_id)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"amdsmi_index": self.index, "name": self.name,
                               "bdf": self.bdf or None, "rocr_uuid": self.rocr_uuid,
                               "amdsmi_uuid": self.uuid or None,
                               "board_serial": self.serial or None, "visible": self.visible}
        if self.hip_index is not None:
            out["hip_index"] = self.hip_index
        if self.kfd_node is not None:
            out["kfd_node"] = self.kfd_node
        if self.partition is not None:
            out["partition"] = self.partition
        if self.compute_partition:
            out["compute_partition"] = self.compute_partition
        return out


@dataclass
class _Source:
    """The one device read for one PCI device of a package, and its running total."""

    device: _Device
    counter: CumulativeCounter | None = None
    resolution_uj: float = 0.0
    last_t: float = 0.0
    counted_j: float = 0.0  # the counter's total (J) at the previous read

    def take_j(self) -> float:
        """The joules this source counted since the previous call."""
        assert self.counter is not None
        now_j = self.counter.total * self.resolution_uj / 1e6
        step, self.counted_j = now_j - self.counted_j, now_j
        return step


@dataclass
class _Package:
    channel: Channel
    devices: list[_Device]
    sources: list[_Source]
    integrator: TrapezoidIntegrator = field(default_factory=TrapezoidIntegrator)
    energy_j: float = 0.0  # counted so far (counter method)
    #: Two PCI devices of the board both carry the package's counter: only the primary counts.
    primary_only: bool = False

    @property
    def visible(self) -> list[_Device]:
        return [d for d in self.devices if d.visible]


class AmdSmiProbe(Probe):
    source = SOURCE
    may_block = True  # a driver call

    def __init__(self, amdsmi: Any, packages: list[_Package], devices: list[_Device],
                 clock: Callable[[], float], steps: Sequence[RocmStep] = ()) -> None:
        super().__init__(tuple(p.channel for p in packages),
                         tuple(f"{p.channel.id}_{g}" for p in packages for g in GAUGES))
        self._amdsmi = amdsmi
        self._packages = packages
        self._devices = devices
        self._steps = tuple(steps)
        self._clock = clock
        for p in packages:
            if p.channel.method == "integrated":
                p.integrator.add(clock(), self._package_power(p))

    def _first_run_began(self) -> None:
        """Re-base every counter on a fresh reading: what happened while no run used the probe
        belongs to no run, and the bound on the next reading's increase (5 kW × the time
        since the last reading) starts from now, not from before the pause. A counter that
        does not answer now keeps its state (its next read fails or catches up)."""
        failures = (AttributeError, ValueError, TypeError, *_errors(self._amdsmi))
        with self._lock:
            now = self._clock()
            for p in self._packages:
                if p.channel.method != "counter":
                    continue
                for s in p.sources:
                    assert s.counter is not None
                    try:
                        raw, _ = _energy(self._amdsmi, s.device.handle)
                    except failures as exc:
                        log.debug("amdsmi: no fresh reading of %s at a run's start: %r",
                                  p.channel.id, exc)
                        continue
                    s.counter.rebase(raw)
                    s.last_t = now

    def _package_power(self, package: _Package) -> float:
        """The package's socket power (W): the sum over its PCI devices, or the primary's alone
        once two of them have shown the same power (both report the package's)."""
        powers = [_power_w(self._amdsmi, s.device.handle) or 0.0 for s in package.sources]
        if not package.primary_only and _same_package_value(powers, MIN_MIRROR_POWER_W):
            package.primary_only = True
            self._warn_locked(_mirrored_message(package, powers, "power", "W"),
                              ("mirrored", package.channel.id))
        return powers[0] if package.primary_only else sum(powers)

    def _read(self) -> dict[str, float]:
        """Every package's joules. A package whose driver call fails fails alone
        (:class:`PartialRead`): its counters keep their last good readings (the energy over the
        gap is counted when it answers again), its polled power skips that sample."""
        out: dict[str, float] = {}
        errors: dict[str, str] | None = None
        skip = self.skip
        now = self._clock()
        failures = (AttributeError, ValueError, TypeError, *_errors(self._amdsmi))
        for p in self._packages:
            cid = p.channel.id
            if skip and cid in skip:
                continue
            try:
                if p.channel.method == "counter":
                    readings = [_energy(self._amdsmi, s.device.handle) for s in p.sources]
                    steps = []
                    for s, (raw, _) in zip(p.sources, readings, strict=True):
                        assert s.counter is not None
                        dt = max(now - s.last_t, 0.0) + 1.0
                        last = s.counter.last
                        s.counter.advance(raw, MAX_PLAUSIBLE_W * dt * 1e6 / s.resolution_uj)
                        said = outcome_warning(
                            s.counter.outcome,
                            f"{cid}: the energy counter of AMD GPU {s.device.index}", last, raw,
                            "counts", dt - 1.0, MAX_PLAUSIBLE_W)
                        if said is not None:
                            self._warn_locked(said[0], (said[1], cid))
                        if s.counter.outcome == "glitch":  # ROCm/amdsmi#115: ignored
                            steps.append(s.take_j())
                            continue  # last_t stays: the next bound runs from the last good
                        s.last_t = now
                        steps.append(s.take_j())
                    if not p.primary_only and _same_package_value(steps, MIN_MIRROR_STEP_J):
                        p.primary_only = True
                        self._warn_locked(_mirrored_message(p, steps, "energy counter", "J"),
                                          ("mirrored", cid))
                    p.energy_j += steps[0] if p.primary_only else sum(steps)
                    out[cid] = p.energy_j
                else:
                    p.integrator.add(now, self._package_power(p))
                    out[cid] = p.integrator.energy_j
            except failures as exc:
                if errors is None:
                    errors = {}
                errors[cid] = f"amdsmi read of {cid} failed: {_describe(exc)}"
        if errors is not None:
            raise PartialRead(out, errors)
        return out

    def _gauges(self) -> dict[str, float]:
        """VRAM in use (``amdsmi_get_gpu_vram_usage``: ``vram_used`` in MB) summed over a
        package's visible devices, and graphics activity (``amdsmi_get_gpu_activity``:
        ``gfx_activity`` in %) averaged over them; a value the driver does not give is left
        out."""
        out: dict[str, float] = {}
        errors = (AttributeError, KeyError, TypeError, ValueError, *_errors(self._amdsmi))

        def value(call: Callable[[], Any], key: str) -> float | None:
            try:
                return _number(call()[key])
            except errors:  # not reported by this GPU or driver: the gauge is left out
                return None

        for p in self._packages:
            used = [v for d in p.visible if (v := value(
                lambda d=d: self._amdsmi.amdsmi_get_gpu_vram_usage(d.handle), "vram_used"))
                is not None]
            busy = [v for d in p.visible if (v := value(
                lambda d=d: self._amdsmi.amdsmi_get_gpu_activity(d.handle), "gfx_activity"))
                is not None]
            if used:
                out[f"{p.channel.id}_memory_used_bytes"] = sum(used) * 2**20
            if busy:
                out[f"{p.channel.id}_utilization_pct"] = sum(busy) / len(busy)
        return out

    def describe(self) -> dict[str, Any]:
        """The channels, every AMD device amdsmi found (visible or not) and the visibility
        variables that chose them, for ``energymeter probes``."""
        out = super().describe()
        out["devices"] = [d.describe() for d in self._devices]
        out["visibility"] = [_step_dict(s) for s in self._steps]
        return out

    def close(self) -> None:
        if self._packages:
            self._packages = []
            _shutdown(self._amdsmi)


def _same_package_value(values: Sequence[float], floor: float) -> bool:
    """Whether the first two PCI devices of a package gave (nearly) the same value (energy
    over one read interval, or power), both above ``floor``: both report the package's."""
    if len(values) < 2:
        return False
    a, b = values[0], values[1]
    return a > floor and b > floor and abs(a - b) <= MIRROR_TOLERANCE * max(a, b)


def _mirrored_message(package: _Package, values: Sequence[float], what: str,
                      unit: str) -> str:
    first, second = package.sources[0].device, package.sources[1].device
    return (f"{package.channel.id}: AMD GPUs {first.index} ({first.bdf or '?'}) and "
            f"{second.index} ({second.bdf or '?'}) of one {first.name} board both report the "
            f"same {what} ({values[0]:.3f} {unit} and {values[1]:.3f} {unit}): both carry the "
            "package's (a kernel without the primary-die-only rule of aldebaran_ppt.c), so "
            f"only the primary, GPU {first.index}, is counted from now on")


def _step_dict(step: RocmStep) -> dict[str, Any]:
    out: dict[str, Any] = {"variable": step.variable, "value": step.value,
                           "kept": list(step.kept)}
    if step.stopped_at is not None:
        out.update(stopped_at=step.stopped_at, why=step.why)
    return out


def _shutdown(amdsmi: Any) -> None:
    try:
        amdsmi.amdsmi_shut_down()
    except (AttributeError, *_errors(amdsmi)) as exc:
        log.debug("amdsmi_shut_down failed: %r", exc)


def _optional(amdsmi: Any, call: Callable[[], Any]) -> Any:
    """``call()``, or None when amdsmi raises (unsupported here) or lacks the function."""
    try:
        return call()
    except (AttributeError, *_errors(amdsmi)):
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _enumerate(amdsmi: Any, handles: Sequence[Any]) -> list[_Device]:
    devices = []
    for i, h in enumerate(handles):
        asic = _mapping(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_asic_info(h)))
        board = _mapping(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_board_info(h)))
        kfd = _mapping(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_kfd_info(h)))
        node = _number(kfd.get("node_id"))
        part = _number(kfd.get("current_partition_id"))
        devices.append(_Device(
            index=i, handle=h,
            name=_text(asic.get("market_name")) or _text(board.get("product_name"))
            or "AMD GPU",
            unique_id=_unique_id(asic), serial=_serial(board.get("product_serial")),
            bdf=_text(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_device_bdf(h))),
            uuid=_text(_optional(amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_device_uuid(h))),
            kfd_node=int(node) if node is not None else None,
            partition=int(part) if part is not None else None,
            compute_partition=_text(_optional(
                amdsmi, lambda h=h: amdsmi.amdsmi_get_gpu_compute_partition(h)))))
    return devices


def _package_keys(devices: Sequence[_Device]) -> tuple[list[str], list[str]]:
    """The package key of each device (see the module docstring), and warnings."""
    pci_by_serial: dict[str, set[str]] = {}
    for d in devices:
        if d.serial:
            pci_by_serial.setdefault(d.serial, set()).add(_pci_device(d.bdf) or f"#{d.index}")
    placeholders = {s for s, pci in pci_by_serial.items()
                    if len(pci) > MAX_PCI_DEVICES_PER_BOARD}
    warnings = [f"{len(pci_by_serial[s])} AMD PCI devices report the same board serial "
                f"{s!r}: taken as a placeholder, not as one package" for s in sorted(placeholders)]
    keys = []
    for d in devices:
        if d.serial and d.serial not in placeholders:
            keys.append(f"board:{d.serial}")
        elif _pci_device(d.bdf):
            keys.append(f"pci:{_pci_device(d.bdf)}")
        else:
            keys.append(f"device:{d.index}")
    return keys, warnings


def _amdsmi_uuid_hint(entry: str, devices: Sequence[_Device]) -> str:
    """If ``entry`` is amdsmi's UUID of a device, the GPU- form the runtimes accept."""
    want = entry.strip().lower().removeprefix("gpu-")
    hit = next((d for d in devices if d.uuid and d.uuid.lower().removeprefix("gpu-") == want),
               None)
    if hit is None or not hit.unique_id:
        return ""
    return (f" ({entry!r} is amdsmi's UUID of AMD GPU {hit.index}, as `amd-smi list` shows it; "
            f"ROCm's runtimes name that GPU {hip_uuid(hit.unique_id)}, as rocminfo shows it)")


def _step_message(step: RocmStep, devices: Sequence[_Device]) -> str:
    hint = _amdsmi_uuid_hint(step.stopped_at or "", devices)
    if step.stopped_at == "" and not step.kept and step.variable == "ROCR_VISIBLE_DEVICES" \
            and step.value == "":
        return "ROCR_VISIBLE_DEVICES is set but empty: ROCr shows no GPU"
    runtime = "ROCr" if step.variable == "ROCR_VISIBLE_DEVICES" else "HIP"
    return (f"{step.variable}={step.value!r}: entry {step.stopped_at!r} is invalid: {step.why}"
            f"{hint}. {runtime} stops there and keeps the {len(step.kept)} GPU(s) listed "
            "before it")


def discover(ctx: DiscoveryContext, *, clock: Callable[[], float] = time.monotonic,
             driver_paths: tuple[str, ...] = DRIVER_PATHS) -> list[Probe | Unavailable]:
    """An :class:`AmdSmiProbe` for the AMD GPU packages this process's HIP runtime would use,
    or why there is none (amdsmi is not even imported on a machine without an AMD driver)."""
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
                                "matching your ROCm version, or `pip install "
                                "/opt/rocm/share/amd_smi`)")]
        except Exception as exc:  # e.g. OSError: libamd_smi.so missing or from another ROCm
            return [Unavailable(SOURCE, f"the amdsmi package could not be loaded "
                                        f"({_describe(exc)})",
                                "install the amdsmi package matching the installed ROCm "
                                "(`amd-smi version` shows it)")]
    errors = (AttributeError, *_errors(amdsmi))
    try:
        flags = getattr(getattr(amdsmi, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
        amdsmi.amdsmi_init(flags) if flags is not None else amdsmi.amdsmi_init()
    except errors as exc:
        return [_init_unavailable(exc)]
    return opened_or_shut(lambda: _open(amdsmi, ctx, clock), lambda: _shutdown(amdsmi),
                          AmdSmiProbe)


def _init_unavailable(exc: BaseException) -> Unavailable:
    code = _code(exc)
    if code == _NO_PERM:
        return Unavailable(SOURCE, f"no permission to open the AMD GPUs ({_describe(exc)})",
                           "add this user to the 'render' and 'video' groups; in a container "
                           "pass --device=/dev/kfd --device=/dev/dri --group-add render")
    if code == _DRIVER_NOT_LOADED:
        return Unavailable(SOURCE, f"the amdgpu kernel driver is not loaded ({_describe(exc)})",
                           "load it (`sudo modprobe amdgpu`); `amd-smi list` must work")
    return Unavailable(SOURCE, f"amdsmi could not be initialised: {_describe(exc)}",
                       "check that `amd-smi list` works for this user (groups render and "
                       "video) and that the amdsmi package matches the installed ROCm")


def _open(amdsmi: Any, ctx: DiscoveryContext, clock: Callable[[], float]
          ) -> list[Probe | Unavailable]:
    errors = (AttributeError, TypeError, *_errors(amdsmi))
    try:
        handles = list(amdsmi.amdsmi_get_processor_handles() or [])
    except errors as exc:
        return [Unavailable(SOURCE, f"amdsmi could not list the GPUs: {_describe(exc)}",
                            "check that `amd-smi list` lists the GPUs for this user")]
    if not handles:
        return [Unavailable(SOURCE, "amdsmi found no AMD GPU",
                            "check `amd-smi list`; in a container pass --device=/dev/kfd "
                            "--device=/dev/dri")]
    devices = _enumerate(amdsmi, handles)
    # ROCr numbers GPUs in KFD topology order; amdsmi's order is used where it gives none.
    kfd_order = sorted(devices, key=lambda d: (d.kfd_node is None, d.kfd_node or 0, d.index))
    visible = rocm_visible(ctx.env, [d.unique_id for d in kfd_order])
    warnings = [_step_message(s, devices) for s in visible.steps
                if s.stopped_at is not None and s.kept and not s.fatal]
    hidden = visible.hidden_by
    if hidden is not None:
        what = ", ".join(f"{d.index} ({d.name}, {d.bdf or '?'}, {d.rocr_uuid or 'no UUID'})"
                         for d in devices)
        reason = (_step_message(hidden, devices) if hidden.stopped_at else
                  f"{hidden.variable}={hidden.value!r} hides every AMD GPU")
        return [Unavailable(SOURCE, f"{reason}; amdsmi sees {len(devices)} AMD GPU(s): {what}",
                            f"fix or unset {hidden.variable} (indices, or GPU-<16 hex> "
                            "UUIDs as rocminfo prints them)")]
    for hip_index, pos in enumerate(visible.gpus):
        kfd_order[pos].visible, kfd_order[pos].hip_index = True, hip_index
    keys, more = _package_keys(devices)
    warnings += more
    order: list[str] = []
    for pos in visible.gpus:
        key = keys[kfd_order[pos].index]
        if key not in order:
            order.append(key)
    packages: list[_Package] = []
    unavailable: list[Unavailable] = []
    for key in order:
        members = [d for d, k in zip(devices, keys, strict=True) if k == key]
        cid = f"rocm{len(packages)}"
        package, notes = _open_package(amdsmi, cid, key, members, clock)
        if package is None:
            first = next(d for d in members if d.visible)
            unavailable.append(Unavailable(
                SOURCE, f"AMD GPU {first.index} ({first.name}, {first.bdf or '?'}) reports "
                        "neither an energy counter nor socket power",
                "check `amd-smi metric --energy --power`; a VM guest may not expose them"))
            continue
        packages.append(package)
        warnings += notes
    if not packages:
        return list(unavailable)
    probe = AmdSmiProbe(amdsmi, packages, devices, clock, visible.steps)
    for message in warnings:
        probe.warn(message)
    return [probe, *unavailable]


def _package_sources(amdsmi: Any, members: list[_Device], clock: Callable[[], float]
                     ) -> tuple[int, list[_Source], list[_Source]]:
    """How many PCI devices the package has, and per PCI device the source of its energy
    counter (the lowest partition whose counter answers) and of its socket power, if any."""
    failures = (AttributeError, ValueError, TypeError, *_errors(amdsmi))
    by_pci: dict[str, list[_Device]] = {}
    for d in members:
        by_pci.setdefault(_pci_device(d.bdf) or f"#{d.index}", []).append(d)
    now = clock()
    counters: list[_Source] = []
    powered: list[_Source] = []
    for group in by_pci.values():
        group = sorted(group, key=lambda d: (d.partition is None, d.partition or 0, d.index))
        for d in group:
            try:
                raw, resolution = _energy(amdsmi, d.handle)
            except failures:
                continue
            counters.append(_Source(d, CumulativeCounter(raw, COUNTER_MODULUS,
                                                         restarts_from_zero=True),
                                    resolution, now))
            break
        power = next((d for d in group if _optional(amdsmi, lambda d=d: _power_w(
            amdsmi, d.handle)) is not None), None)
        if power is not None:
            powered.append(_Source(power))
    return len(by_pci), counters, powered


def _package_meta(members: list[_Device], key: str) -> dict[str, Any]:
    """The channel's meta: the visible devices, the package's identity and, for a package of
    several devices, each device."""
    visible = [d for d in members if d.visible]
    first = visible[0]
    meta: dict[str, Any] = {
        "indices": [d.index for d in visible], "hip_indices": [d.hip_index for d in visible],
        "rocr_uuids": [d.rocr_uuid for d in visible], "bdf": first.bdf or None,
        "board_serial": first.serial or None, "package": key,
    }
    if first.compute_partition:
        meta["compute_partition"] = first.compute_partition
    if len(members) > 1:
        meta["gcds"] = len(members)
        meta["devices"] = [d.describe() for d in members]
    return meta


def _open_package(amdsmi: Any, cid: str, key: str, members: list[_Device],
                  clock: Callable[[], float]) -> tuple[_Package | None, list[str]]:
    """The channel of one package (one source per PCI device), or None if nothing in it can
    be measured, and the warnings it needs."""
    n_pci, counters, powered = _package_sources(amdsmi, members, clock)
    first = next(d for d in members if d.visible)
    meta = _package_meta(members, key)
    notes: list[str] = []
    counters.sort(key=lambda s: _bdf_key(s.device))  # the primary die (lowest BDF) first
    powered.sort(key=lambda s: _bdf_key(s.device))
    if counters and powered and all(s.counter is not None and s.counter.last == 0
                                    for s in counters):
        # Energy since the driver loaded is never 0: a counter the kernel does not fill
        # (aldebaran_ppt.c before the primary-die rule set energy_accumulator = 0 on every
        # die). Integrate socket power instead.
        notes.append(f"{cid}: the energy counter of AMD GPU(s) "
                     f"{', '.join(str(s.device.index) for s in counters)} reads 0 (not filled "
                     "by this kernel): socket power is integrated instead")
        counters = []
    if counters:
        sources, method = counters, "counter"
        meta["counter_resolution_uj"] = counters[0].resolution_uj
        meta["read_from"] = [s.device.index for s in counters]
        moving = [s for s in counters if s.counter is not None and s.counter.last > 0]
        if moving and len(moving) < len(counters):
            quiet = [s.device for s in counters if s not in moving]
            notes.append(
                f"{cid}: the energy counter of AMD GPU(s) "
                f"{', '.join(str(d.index) for d in quiet)} of this {first.name} package reads "
                "0 (on MI250/MI250X the package's energy is on the other GCD): the package is "
                "counted once, from the sum, so a busy GCD is never shown at 0 W")
    elif powered:
        sources, method = powered, "integrated"
        meta["read_from"] = [s.device.index for s in powered]
    else:
        return None, notes
    hidden = [d for d in members if not d.visible]
    if hidden:
        notes.append(
            f"{cid}: AMD GPU(s) {', '.join(str(d.index) for d in hidden)} "
            f"({'partitions' if n_pci == 1 else 'GCDs'} of the same package, "
            f"{first.name}) are not visible to this process, but energy is measured per package: "
            f"{cid} is the whole package's, shared with whatever runs on them")
    channel = Channel(cid, "gpu", first.name, SOURCE, method, meta=meta)
    return _Package(channel, members, sources), notes
