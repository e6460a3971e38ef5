"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``).

One channel per GPU visible to the process (``CUDA_VISIBLE_DEVICES``), named ``gpu0``, ``gpu1``...
in the process's own CUDA order. Energy comes from one of two methods:

* ``counter`` (Volta and newer): ``nvmlDeviceGetTotalEnergyConsumption``, the GPU's own energy
  accumulator in mJ since the driver loaded. It sees every burst, whatever our sampling rate,
  but only moves about every :data:`COUNTER_UPDATE_PERIOD_S`.
* ``integrated`` (older GPUs, or when the counter is not supported): instantaneous power
  (``NVML_FI_DEV_POWER_INSTANT``, else ``nvmlDeviceGetPowerUsage``) polled by the probe's own
  thread at :data:`DEFAULT_POLL_HZ` and integrated with the trapezoid rule, independently of the
  sampler's interval; every ``read()`` also takes a sample, so boundary reads integrate up to
  the moment they are taken.

NVML is initialised in :func:`discover`, never at import, and shut down by ``close()``.
Methodology and caveats (MIG, per-GPU not per-process energy): ``docs/methodology.md``.

**The run's share of each GPU** (gauge ``<channel>_own_share``, 0..1; docs/hardware.md,
"Per-process attribution"). The energy counter is the whole GPU's; at every gauge read the probe
says which share of the device's use over the interval since its previous gauge read belonged
to the run's process tree (the pids the gauges already compute, ``process_tree_pids``), by the
first rule that applies:

* ``sm``: ``nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp)`` gives the per-process
  samples newer than the newest timestamp seen on that GPU (CPU time in microseconds; NOT_FOUND
  when there are none); the share is the sum of ``smUtil`` of the tree's samples over the sum of
  every sample's ``smUtil``, when that sum is above 0. Entries above 100 % are ignored (stale
  entries some drivers give).
* ``memory``: no SM samples or only zero ones (or the call is unsupported): the tree's
  ``usedGpuMemory`` over every running process's (``nvmlDeviceGetComputeRunningProcesses`` and
  ``...GraphicsRunningProcesses``; a pid in both counted once). When every process is the
  tree's the share is 1, when none is, 0; a memory NVML does not give (None) leaves it unknown.
* ``idle``: no process on the device at all: the whole interval goes to the run (nobody else
  uses the GPU; the run holds it, and pays its idle power). Two runs on an idle GPU therefore
  both get 1: the shares of complementary trees sum to 1 only while some process is on it.
* ``unknown``: nothing can be said (the calls are unsupported or fail, the first read before a
  run began): the gauge is absent, never NaN.

**PID namespaces** (containers: Docker, Kubernetes). NVML's pids are the driver's, and which
namespace they are in depends on the driver: older drivers give host pids (NVIDIA/nvidia-docker
#179, #1483: "the driver is not aware of the PID namespace"); the open kernel modules give the
running-process lists in the caller's namespace, leaving out processes it cannot see, and
per-process utilisation samples in it where it can see the process, else with the host pid
(open-gpu-kernel-modules ``_gpuConvertPid``, ``kern_perf_ctrl.c``); a driver may do the one and
not the other (Project-HAMi/HAMi-core#112, 560.35.03). At open the probe finds whether it runs
in a PID namespace other than the host's (:func:`pid_namespace`: the ``NSpid`` of
``/proc/self/status`` with more than one field, or the ``/proc/self/ns/pid`` inode not the
initial namespace's; a container's own ``/proc`` shows one ``NSpid`` field). In one, the tree's
pids also match through their ``NSpid`` translations where ``/proc`` is an ancestor namespace's
(so gives them), and a source (SM samples, running-process lists) counts only once the tree
has been seen in it: before, an SM share of 0 falls to the memory rule, and lists where other
processes are but never the tree's leave the share ``unknown`` (with one warning per run:
NVML reports host pids) rather than 0.

MIG: NVML gives no per-process utilisation on MIG-enabled GPUs (nvml.h: "querying process
utilization is not currently supported"), so a MIG channel's share is the ``memory`` (else
``idle``) rule over the processes on the visible MIG devices' own handles: the run's share
*within* those instances. The channel's energy is the whole GPU's, ``meta.mig_share`` the
instances' share of it; the attributed energy is energy x ``mig_share`` x ``own_share``.
:meth:`NvmlProbe.attribution` says, per channel, how the share is obtained and how many reads
each rule gave since the current run began. Cost: one NVML call per GPU per gauge read (the
running-process lists are those the process-memory gauge reads anyway).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._lazy import LazyLogger
from ..errors import ConfigError, ProbeError
from .base import Channel, DiscoveryContext, PartialRead, Probe, Unavailable, opened_or_shut
from .counter import CumulativeCounter, outcome_warning
from .integrate import TrapezoidIntegrator
from .presence import NVIDIA_DRIVER_PATHS, nvml_missing
from .proc import process_tree_pids, read_text
from .visible import HIDES_EVERY_GPU, GpuIdentity, Selection, VisibleGpu, select_visible

log = LazyLogger("energymeter")

SOURCE = "nvml"
# The NVML energy counter moves about every 100 ms (measured by scripts/validate_gpu.py).
COUNTER_UPDATE_PERIOD_S = 0.1
# Power polling for the ``integrated`` method: default and lowest accepted rate.
DEFAULT_POLL_HZ = 50.0
#: More than any one NVIDIA GPU draws (a GB200 superchip module: ~2.7 kW): a counter reading
#: implying more since the last good one is a glitch (energymeter/probes/counter.py).
MAX_PLAUSIBLE_W = 5000.0
#: Added to the time since the last good reading when bounding an increase (the counter is
#: updated every ~0.1 s, not exactly when read).
_PLAUSIBLE_SLACK_S = 1.0
MIN_POLL_HZ = 20.0

# nvmlDeviceArchitecture_t values (nvml.h); used when the module lacks the constants.
_ARCH_NAMES = {
    2: "kepler", 3: "maxwell", 4: "pascal", 5: "volta", 6: "turing", 7: "ampere", 8: "ada",
    9: "hopper", 10: "blackwell", 11: "dla", 12: "dla2", 13: "rubin", 15: "npu3",
}
_ARCH_VOLTA = 5
_ARCH_AMPERE = 7  # MIG: Ampere and newer (nvml.h nvmlDeviceGetMigMode)
_FI_DEV_POWER_INSTANT = 186
_NVML_ERROR_NOT_FOUND = 6  # nvml.h nvmlReturn_t
_CLOCK_SM = 1
_TEMPERATURE_GPU = 0
_VALUE_ATTRS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
                6: "usVal"}

#: The rules that give a GPU's ``<channel>_own_share`` (see the module docstring), in order.
SHARE_RULES = ("sm", "memory", "idle", "unknown")
#: How the share is obtained (``NvmlProbe.attribution()[cid]["method"]``).
SHARE_METHOD_SM = ("per interval: the run's processes' SM utilisation over all processes' "
                   "(nvmlDeviceGetProcessUtilization samples); without SM samples their GPU "
                   "memory over all processes' (nvmlDeviceGet{Compute,Graphics}"
                   "RunningProcesses); the whole GPU when no process uses it")
SHARE_METHOD_MEMORY = ("per interval: the run's processes' GPU memory over all processes' "
                       "(nvmlDeviceGet{Compute,Graphics}RunningProcesses; per-process SM "
                       "utilisation is not available here); the whole GPU when no process "
                       "uses it")
SHARE_METHOD_MIG = ("per interval, within the visible MIG instance(s): the run's processes' GPU "
                    "memory over all processes' on their MIG handles (NVML gives no per-process "
                    "SM utilisation in MIG mode); the whole instance when no process uses it; "
                    "times mig_share for the GPU")
SHARE_METHOD_NONE = ("none: the visible MIG devices' handles were not found, so the processes "
                     "on them cannot be listed")


# -- PID namespaces ---------------------------------------------------------------------------
#: The inode of the initial (host's) PID namespace, as ``/proc/self/ns/pid`` names it
#: (``pid:[4026531836]``): the kernel's fixed PROC_PID_INIT_INO (include/linux/proc_ns.h).
PROC_PID_INIT_INO = 0xEFFFFFFC
#: What a user can do when the run's processes cannot be found in NVML's lists.
PIDNS_HINT = ("share the host's PID namespace with the container (`docker run --pid=host`; "
              "Kubernetes `hostPID: true`), or measure from the host (`energymeter run` "
              "outside the container); drivers whose NVML gives pids in the caller's "
              "namespace need neither")


@dataclass(frozen=True)
class PidNamespace:
    """Whether this process runs in a PID namespace other than the host's, as :func:`pid_namespace`
    finds it. ``nested``: True in one, False in the host's, None when ``/proc`` does not say.
    ``procfs_pid``: this process's pid in the namespace of the ``/proc`` that was read, when that
    is an ancestor's (``NSpid`` has more than one field: its first), so that the tree's pids can
    be translated there; None otherwise. ``evidence``: what was read, for messages."""

    nested: bool | None
    procfs_pid: int | None = None
    evidence: str = ""


def _nspid(status_text: str) -> tuple[int, ...]:
    """The ``NSpid:`` fields of a ``/proc/<pid>/status`` text (the pid in the ``/proc``'s
    namespace first, its own namespace's last: the kernel's Documentation/filesystems/proc.rst);
    empty where there is no such line (a kernel before 4.1, or no CONFIG_PID_NS)."""
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            try:
                return tuple(int(f) for f in line.split()[1:])
            except ValueError:
                return ()
    return ()


def pid_namespace(proc_root: str = "/proc") -> PidNamespace:
    """Whether this process runs in a PID namespace other than the host's.

    ``NSpid`` of ``<proc_root>/self/status`` lists the pid from the namespace of that ``/proc``
    down to the process's own: more than one field means a nested namespace whose ancestor's
    pids this ``/proc`` shows. A container mounts a ``/proc`` of its own namespace, where
    ``NSpid`` has one field (fs/proc/array.c starts at the procfs's level), so the namespace
    itself is also read: ``<proc_root>/self/ns/pid`` links to ``pid:[<inode>]``, and the initial
    namespace's inode is :data:`PROC_PID_INIT_INO`."""
    fields = _nspid(read_text(f"{proc_root}/self/status"))
    if len(fields) > 1:
        return PidNamespace(True, fields[0], "NSpid " + " ".join(map(str, fields)))
    try:
        link = os.readlink(f"{proc_root}/self/ns/pid")
    except OSError as exc:
        log.debug("cannot read %s/self/ns/pid: %r", proc_root, exc)
        return PidNamespace(None, None, "unknown (/proc/self/ns/pid unreadable)")
    inode = link.removeprefix("pid:[").removesuffix("]")
    if not inode.isdigit():
        return PidNamespace(None, None, f"unknown (/proc/self/ns/pid is {link!r})")
    if int(inode) == PROC_PID_INIT_INO:
        return PidNamespace(False, None, f"the host's ({link})")
    return PidNamespace(True, None, f"{link}, not the host's pid:[{PROC_PID_INIT_INO}]")


# -- NVML error helpers ------------------------------------------------------------------
def _errors(nvml: Any, *names: str) -> tuple[type[BaseException], ...]:
    """The NVMLError subclasses ``names`` that this pynvml defines (an old one may lack some)."""
    found = (getattr(nvml, f"NVMLError_{n}", None) for n in names)
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


def _base_error(nvml: Any) -> tuple[type[BaseException], ...]:
    cls = getattr(nvml, "NVMLError", None)
    return (cls,) if isinstance(cls, type) and issubclass(cls, BaseException) else ()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# -- the probe -------------------------------------------------------------------------------
@dataclass(eq=False)
class _ShareState:
    """What the run's share of one GPU needs between gauge reads (under the probe's
    ``_share_lock``)."""

    sm: bool = True  # whether per-process SM utilisation is asked for (not in MIG mode)
    last_seen_us: int | None = None  # the newest sample's timestamp; None: not primed yet
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHARE_RULES, 0))
    warned: bool = False  # one warning per run when the share is unknown


@dataclass(eq=False)
class _Gpu:
    """State of one measured GPU (mutated only under the probe's lock)."""

    channel: Channel
    handle: Any
    power_source: str | None  # "power_instant" | "power_usage" | None
    counter: CumulativeCounter | None = None  # counter method: NVML's mJ since driver load
    integrator: TrapezoidIntegrator = field(default_factory=TrapezoidIntegrator)
    lost: bool = False
    failed_gauges: set[str] = field(default_factory=set)
    counter_t: float | None = None  # the probe's clock at the counter's last good reading
    mig_handles: tuple[Any, ...] = ()  # a MIG channel's visible MIG devices
    share: _ShareState = field(default_factory=_ShareState)

    @property
    def is_mig(self) -> bool:
        """A channel of visible MIG devices (its share is within them)."""
        return "mig_uuids" in self.channel.meta

    @property
    def mig_mode(self) -> bool:
        mode = self.channel.meta.get("mig_mode")
        return self.is_mig or (isinstance(mode, dict) and mode.get("current") == "enabled")

    @property
    def value_j(self) -> float:
        if self.counter is not None:
            return self.counter.total / 1000
        return self.integrator.energy_j


class NvmlProbe(Probe):
    """Energy of NVIDIA GPUs (see the module docstring). Made by :func:`discover`."""

    source = SOURCE

    def __init__(
        self,
        nvml: Any,
        gpus: Sequence[_Gpu],
        *,
        pid: int = 0,
        include_root: bool = True,
        poll_hz: float = DEFAULT_POLL_HZ,
        clock: Callable[[], float] = time.monotonic,
        start_poller: bool = True,
        info: Mapping[str, Any] | None = None,
        proc_root: str = "/proc",
    ) -> None:
        gauge_names: list[str] = []
        for g in gpus:
            cid = g.channel.id
            gauge_names += [f"{cid}_memory_used_bytes", f"{cid}_process_memory_bytes",
                            f"{cid}_utilization_pct", f"{cid}_temperature_c",
                            f"{cid}_sm_clock_mhz", f"{cid}_power_w", f"{cid}_own_share"]
        gauge_names.append("gpu_process_memory_bytes")
        super().__init__(tuple(g.channel for g in gpus), tuple(gauge_names))
        self._nvml = nvml
        self._gpus = list(gpus)
        self._pid = pid
        self._include_root = include_root
        self._poll_hz = float(poll_hz)
        self._clock = clock
        for g in self._gpus:
            g.counter_t = clock()
        self._info = dict(info or {})
        self._closed = False
        self._lost_errors = _errors(nvml, "GpuIsLost", "Unknown")
        self._skip_errors = _errors(nvml, "NotSupported", "FunctionNotFound")
        self._nvml_error = _base_error(nvml)
        self._not_found = _errors(nvml, "NotFound")
        self._share_lock = threading.Lock()  # the share state: short, never around an NVML call
        # A PID namespace other than the host's (module docstring): found once, at open.
        self._proc_root = proc_root
        self._pidns = pid_namespace(proc_root)
        self._nested = self._pidns.nested is True
        # Whether the tree was ever found among the SM samples / the running-process lists
        # (in a nested PID namespace a source counts only once it was; under _share_lock).
        self._tree_seen = {"sm": False, "lists": False}
        self._pidns_warned = False  # one warning per run when the tree is never found
        # NVML has no per-process utilisation in MIG mode; an old nvidia-ml-py lacks the call
        sm_call = hasattr(nvml, "nvmlDeviceGetProcessUtilization")
        for g in self._gpus:
            g.share.sm = sm_call and not g.mig_mode
        self._poll_failures = 0
        # The power poller of the integrated method runs while some run uses the probe
        # (begin_run/end_run), not between runs of a process that keeps the probe cached.
        self._start_poller = start_poller and any(
            g.channel.method == "integrated" for g in self._gpus)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._lock:
            for g in self._gpus:
                if g.channel.method == "integrated":
                    self._sample_locked(g)

    # -- runs ------------------------------------------------------------------------------
    def _first_run_began(self) -> None:
        with self._lock:  # whatever happened while no run used the probe is not counted
            self._for_each_gpu_locked(self._resync_locked)
        self._begin_shares()
        if self._start_poller:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll_loop, args=(self._stop,),
                                            name="energymeter-nvml-poll", daemon=True)
            self._thread.start()

    def _last_run_ended(self) -> None:
        self._stop_poller()

    def _stop_poller(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _resync_locked(self, g: _Gpu) -> None:
        if g.counter is not None:
            g.counter.rebase(int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle)))
            g.counter_t = self._clock()
        else:
            self._sample_locked(g)

    # -- energy ---------------------------------------------------------------------------
    def _for_each_gpu_locked(self, action: Callable[[_Gpu], None]) -> None:
        """``action`` on every GPU still there: one that is lost is marked so (its energy
        stays), any other NVML error is the probe's."""
        for g in self._gpus:
            if g.lost or self._closed:
                continue
            try:
                action(g)
            except self._lost_errors as exc:
                self._mark_lost_locked(g, exc)
            except self._nvml_error as exc:
                raise ProbeError(f"NVML read of {g.channel.id} ({g.channel.device}) failed: "
                                 f"{type(exc).__name__}: {exc}") from exc

    def _read(self) -> dict[str, float]:
        """Every GPU's joules. One that is lost keeps its last value; one whose read fails
        otherwise fails alone (:class:`PartialRead`): its counter (or integrator) keeps its
        last good reading, so a counter's energy over the gap is counted when it answers
        again (a polled power's is interpolated). GPUs in :attr:`skip` are not called."""
        errors: dict[str, str] | None = None
        skip = self.skip
        out: dict[str, float] = {}
        for g in self._gpus:
            cid = g.channel.id
            if skip and cid in skip:
                continue
            if not (g.lost or self._closed):
                try:
                    self._advance_locked(g)
                except self._lost_errors as exc:
                    self._mark_lost_locked(g, exc)
                except self._nvml_error as exc:
                    if errors is None:
                        errors = {}
                    errors[cid] = (f"NVML read of {cid} ({g.channel.device}) failed: "
                                   f"{type(exc).__name__}: {exc}")
                    continue
            out[cid] = g.value_j
        if errors is not None:
            raise PartialRead(out, errors)
        return out

    def _advance_locked(self, g: _Gpu) -> None:
        if g.counter is not None:
            self._advance_counter_locked(g)
        else:
            self._sample_locked(g)

    def _advance_counter_locked(self, g: _Gpu) -> None:
        counter = g.counter
        assert counter is not None  # the counter method has one
        mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle))
        now = self._clock()
        elapsed_s = max(0.0, now - g.counter_t) if g.counter_t is not None else 0.0
        previous = counter.last
        counter.advance(mj, MAX_PLAUSIBLE_W * (elapsed_s + _PLAUSIBLE_SLACK_S) * 1000)
        cid = g.channel.id
        said = outcome_warning(counter.outcome, f"{cid}: the NVML energy counter", previous, mj,
                               "mJ", elapsed_s, MAX_PLAUSIBLE_W)
        if said is not None:
            self._warn_locked(said[0], (f"nvml {said[1]}", cid))
        if counter.outcome != "glitch":  # the bound of the next reading runs from a good one
            g.counter_t = now

    def _power_w(self, g: _Gpu) -> float:
        if g.power_source == "power_instant":
            value = self._nvml.nvmlDeviceGetFieldValues(g.handle, [_fi_power_instant(self._nvml)])
            power = _field_value(value[0])
            if power is not None:
                return power / 1000
            g.power_source = "power_usage"  # the field stopped answering: fall back for good
        return self._nvml.nvmlDeviceGetPowerUsage(g.handle) / 1000

    def _sample_locked(self, g: _Gpu) -> None:
        power_w = self._power_w(g)
        g.integrator.add(self._clock(), power_w)

    def _mark_lost_locked(self, g: _Gpu, exc: BaseException) -> None:
        g.lost = True
        message = (f"{g.channel.id} ({g.channel.device}, {g.channel.meta.get('uuid', '?')}) was "
                   f"lost ({type(exc).__name__}: {exc}); its energy stays at the last good "
                   f"reading, {g.value_j:.3f} J, for the rest of the run")
        log.warning("%s", message)
        self._warn_locked(message)

    def poll(self) -> None:
        """Take one power sample of every ``integrated`` GPU (what the polling thread does;
        tests call it to drive the integration deterministically)."""
        with self._lock:
            if self._closed:
                return
            for g in self._gpus:
                if g.lost or g.channel.method != "integrated":
                    continue
                try:
                    self._sample_locked(g)
                except self._lost_errors as exc:
                    self._mark_lost_locked(g, exc)
                except self._nvml_error as exc:
                    # Skipped sample: the trapezoid bridges the gap from the last good one.
                    self._poll_failures += 1
                    log.debug("NVML power poll of %s failed: %r", g.channel.id, exc)
                    self._warn_locked(f"{g.channel.id}: some NVML power polls failed ("
                                      f"{type(exc).__name__}: {exc}); the energy between the "
                                      "neighbouring good samples is interpolated",
                                      ("nvml poll failed", g.channel.id))

    def _poll_loop(self, stop: threading.Event) -> None:
        period_s = 1.0 / self._poll_hz
        next_s = time.monotonic()
        while not stop.is_set():
            self.poll()
            with self._lock:
                if all(g.lost for g in self._gpus if g.channel.method == "integrated"):
                    return
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
        pids = self._tree_pids()
        total_process_bytes: int | None = None
        nvml = self._nvml
        for g in self._gpus:
            if g.lost:
                self._count_share(g, "unknown")
                continue
            cid = g.channel.id
            listing = _Once(lambda g=g: self._running_processes(g))
            calls: list[tuple[str, Callable[[], float | None]]] = [
                ("memory_used_bytes",
                 lambda g=g: float(nvml.nvmlDeviceGetMemoryInfo(g.handle).used)),
                ("process_memory_bytes",
                 lambda listing=listing: self._tree_memory(listing(), pids)),
                ("utilization_pct",
                 lambda g=g: float(nvml.nvmlDeviceGetUtilizationRates(g.handle).gpu)),
                ("temperature_c", lambda g=g: float(nvml.nvmlDeviceGetTemperature(
                    g.handle, getattr(nvml, "NVML_TEMPERATURE_GPU", _TEMPERATURE_GPU)))),
                ("sm_clock_mhz", lambda g=g: float(nvml.nvmlDeviceGetClockInfo(
                    g.handle, getattr(nvml, "NVML_CLOCK_SM", _CLOCK_SM)))),
                ("power_w", lambda g=g: self._power_w(g) if g.power_source else None),
            ]
            for name, call in calls:
                try:
                    value = call()
                except self._skip_errors:
                    continue  # this GPU does not report it: the gauge is simply absent
                except self._lost_errors as exc:
                    self._mark_lost_locked(g, exc)
                    break
                except self._nvml_error as exc:
                    if name not in g.failed_gauges:
                        g.failed_gauges.add(name)
                        self._warn_locked(f"{cid}: gauge {name} unavailable ("
                                          f"{type(exc).__name__}: {exc})")
                    continue
                if value is None:
                    continue
                out[f"{cid}_{name}"] = value
                if name == "process_memory_bytes":
                    total_process_bytes = (total_process_bytes or 0) + int(value)
            if g.lost:
                self._count_share(g, "unknown")
                continue
            share = self._own_share(g, pids, listing)
            if share is not None:
                out[f"{cid}_own_share"] = share
        if total_process_bytes is not None:
            out["gpu_process_memory_bytes"] = float(total_process_bytes)
        return out

    def _tree_memory(self, processes: Mapping[int, int | None] | None,
                     pids: set[int]) -> float | None:
        """The tree's GPU memory (:func:`_tree_memory`); None (unknown, not 0) in a nested PID
        namespace while the lists show other processes but have never shown the tree's."""
        used = _tree_memory(processes, pids)
        if (used == 0 and processes and self._nested
                and not any(pid in pids for pid in processes)):
            with self._share_lock:
                if not self._tree_seen["lists"]:
                    return None
        return used

    def _tree_pids(self) -> set[int]:
        """The measured tree's pids, as NVML may give them. Where ``/proc`` is an ancestor PID
        namespace's (:attr:`PidNamespace.procfs_pid`) and the tree is this process's own, the
        tree is read there, from this process's pid in it, and each process counts by every
        pid its ``NSpid`` gives (that ``/proc``'s, which is the host's when it is the host's
        ``/proc``, down to its own namespace's)."""
        root = self._pidns.procfs_pid
        if (root is None or self._pid not in (0, os.getpid())
                or not os.path.isdir(f"{self._proc_root}/{root}")):
            return process_tree_pids(self._pid, include_root=self._include_root)
        out: set[int] = set()
        for pid in process_tree_pids(root, include_root=self._include_root,
                                     proc_root=self._proc_root):
            out.add(pid)
            out.update(_nspid(read_text(f"{self._proc_root}/{pid}/status")))
        return out

    def _running_processes(self, g: _Gpu) -> dict[int, int | None] | None:
        """``{pid: usedGpuMemory in bytes, None where NVML gives none}`` of the processes on
        this channel's device: the visible MIG devices' own handles for a MIG channel, else
        the GPU. A process doing compute and graphics is listed twice with one footprint (the
        larger counts); one on two MIG devices has a footprint on each (they add up). None
        when neither list is supported."""
        out: dict[int, int | None] = {}
        answered = False
        for handle in g.mig_handles or (g.handle,):
            on_device: dict[int, int | None] = {}
            for function in ("nvmlDeviceGetComputeRunningProcesses",
                             "nvmlDeviceGetGraphicsRunningProcesses"):
                call = getattr(self._nvml, function, None)
                if call is None:
                    continue
                try:
                    processes = call(handle)
                except self._skip_errors:
                    continue
                answered = True
                for p in processes:
                    used = getattr(p, "usedGpuMemory", None)
                    known = on_device.get(p.pid)
                    on_device[p.pid] = (known if used is None else
                                        int(used) if known is None else max(known, int(used)))
            for pid, used in on_device.items():
                known = out.get(pid)
                out[pid] = used if known is None else known + (used or 0)
        return out if answered else None

    # -- the run's share -----------------------------------------------------------------------
    def attribution(self) -> dict[str, dict[str, Any]]:
        """Per channel: ``method``, one line on how ``<channel>_own_share`` is obtained, and
        ``intervals``, the gauge reads since the current run began counted by the rule that
        gave the share (``sm``, ``memory``, ``idle``; ``unknown``: gauge absent)."""
        with self._share_lock:
            return {g.channel.id: {"method": _share_method(g), "intervals": dict(g.share.counts)}
                    for g in self._gpus}

    def _begin_shares(self) -> None:
        """A run begins: count its reads afresh and take the newest SM sample's timestamp, so
        that the first read's share is over the run's time only."""
        with self._share_lock:
            for g in self._gpus:
                g.share.counts = dict.fromkeys(SHARE_RULES, 0)
                g.share.last_seen_us = None
                g.share.warned = False
            self._pidns_warned = False
        for g in self._gpus:
            if g.lost or self._closed or not g.share.sm:
                continue
            try:
                self._sm_sums(g, set())
            except self._skip_errors:
                with self._share_lock:
                    g.share.sm = False
            except self._nvml_error as exc:  # the first read primes it, or says why not
                log.debug("priming nvmlDeviceGetProcessUtilization of %s failed: %r",
                          g.channel.id, exc)

    def _own_share(self, g: _Gpu, pids: set[int], listing: _Once) -> float | None:
        """The run's share of ``g`` over the interval since the previous gauge read (see the
        module docstring), counted by its rule; None (counted ``unknown``) when unknown."""
        try:
            rule, share, why = self._share_rule(g, pids, listing)
        except self._lost_errors as exc:
            self._mark_lost_locked(g, exc)
            rule, share, why = "unknown", None, None
        except self._nvml_error as exc:
            rule, share, why = "unknown", None, f"{type(exc).__name__}: {exc}"
        self._count_share(g, rule)
        if why is _PIDNS_UNSEEN:
            self._warn_pidns(g, listing)
        elif why is not None and not g.share.warned:
            g.share.warned = True
            self._warn_locked(f"{g.channel.id}: the run's share of this GPU could not be "
                              f"determined for some intervals ({why}); attribution() counts "
                              "them as 'unknown'", ("nvml share unknown", g.channel.id))
        return share

    def _warn_pidns(self, g: _Gpu, listing: _Once) -> None:
        """The one warning of a run whose tree NVML's lists never showed, in a nested PID
        namespace (why and what to do)."""
        with self._share_lock:
            if self._pidns_warned:
                return
            self._pidns_warned = True
        try:
            listed = sorted(listing() or ())
        except self._nvml_error:
            listed = []
        shown = ", ".join(map(str, listed[:5])) + (", ..." if len(listed) > 5 else "")
        self._warn_locked(
            f"{g.channel.id}: this process runs in a PID namespace of its own (a container; "
            f"{self._pidns.evidence}) and NVML lists the GPU's processes by pids it does not "
            f"know (host pids: {shown}): none of the run's processes was ever found among "
            "them, so the run's share of the GPU is unknown, not 0 (gauge absent; "
            "attribution() counts these reads 'unknown'; the attributed basis counts the GPU "
            f"whole for them), on this GPU and any other where the same holds. To attribute "
            f"it: {PIDNS_HINT}", ("nvml pid namespace",))

    def _source_seen(self, source: str, tree_found: bool) -> bool:
        """Whether a source of pids (``sm`` samples, running-process ``lists``) can be taken
        at its word: always, but in a nested PID namespace only once it has shown one of the
        tree's pids (it may give host pids, which the tree's never match)."""
        if not self._nested:
            return True
        with self._share_lock:
            if tree_found:
                self._tree_seen[source] = True
            return self._tree_seen[source]

    def _count_share(self, g: _Gpu, rule: str) -> None:
        with self._share_lock:
            g.share.counts[rule] = g.share.counts.get(rule, 0) + 1

    def _share_rule(self, g: _Gpu, pids: set[int],
                    listing: _Once) -> tuple[str, float | None, str | None]:
        """(rule, share, why it is unknown); the rules in the module docstring's order."""
        if g.share.sm:
            try:
                sums = self._sm_sums(g, pids)
            except self._skip_errors:
                with self._share_lock:
                    g.share.sm = False  # e.g. before Maxwell: the memory rule from now on
            else:
                if sums is None:  # this read only took the newest timestamp
                    return "unknown", None, None
                own, total = sums
                if total > 0 and self._source_seen("sm", own > 0):
                    return "sm", own / total, None
        if g.is_mig and not g.mig_handles:
            return "unknown", None, "the visible MIG devices' handles were not found"
        try:
            processes = listing()
        except self._skip_errors:
            processes = None
        if processes is None:
            return "unknown", None, ("NVML lists no running processes on this device "
                                     "(nvmlDeviceGet{Compute,Graphics}RunningProcesses "
                                     "unsupported)")
        if not processes:
            return "idle", 1.0, None
        own = [pid for pid in processes if pid in pids]
        if not self._source_seen("lists", bool(own)):
            return "unknown", None, _PIDNS_UNSEEN
        if len(own) == len(processes):
            return "memory", 1.0, None
        if not own:
            return "memory", 0.0, None
        if any(used is None for used in processes.values()):
            return "unknown", None, ("NVML gives no usedGpuMemory for some processes sharing "
                                     "the device")
        total = sum(used or 0 for used in processes.values())
        if total <= 0:
            return "unknown", None, "the processes sharing the device use no GPU memory"
        return "memory", sum(processes[pid] or 0 for pid in own) / total, None

    def _sm_sums(self, g: _Gpu, pids: set[int]) -> tuple[int, int] | None:
        """(the tree's, everyone's) ``smUtil`` summed over the samples newer than the last
        seen on ``g`` ((0, 0) when there are none: NOT_FOUND), which moves on to the newest;
        None when no timestamp was seen yet (this call only takes it)."""
        since = g.share.last_seen_us
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(g.handle, since or 0)
        except self._not_found:
            samples = ()
        except self._nvml_error as exc:
            # pynvml.py raises NVMLError(NVML_SUCCESS) when the sizing call finds no sample;
            # an old one may lack the NotFound class (the code is still NVML_ERROR_NOT_FOUND)
            if getattr(exc, "value", None) not in (0, _NVML_ERROR_NOT_FOUND):
                raise
            samples = ()
        own = total = 0
        newest = since or 0
        for sample in samples:
            newest = max(newest, int(sample.timeStamp))
            util = int(sample.smUtil)
            if util > 100:
                continue
            total += util
            if sample.pid in pids:
                own += util
        with self._share_lock:
            g.share.last_seen_us = max(newest, g.share.last_seen_us or 0)
        return None if since is None else (own, total)

    # -- lifecycle and facts -------------------------------------------------------------------
    def check_interval(self, interval_s: float) -> list[str]:
        if interval_s < COUNTER_UPDATE_PERIOD_S and any(
                c.method == "counter" for c in self.channels):
            return [f"sampling every {interval_s * 1000:g} ms is faster than the NVML energy "
                    f"counter's ~{COUNTER_UPDATE_PERIOD_S * 1000:g} ms update period: the "
                    "timeline's GPU power will look stepped (totals are unaffected)"]
        return []

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(self._info)
        if self._nested:
            out["pid_namespace"] = f"nested: {self._pidns.evidence}"
        if any(c.method == "integrated" for c in self.channels):
            out["poll_hz"] = self._poll_hz
        return out

    def close(self) -> None:
        """Stop the polling thread and shut NVML down (once; idempotent)."""
        self._stop_poller()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except self._nvml_error as exc:
            log.debug("nvmlShutdown failed: %r", exc)


def _fi_power_instant(nvml: Any) -> int:
    return getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", _FI_DEV_POWER_INSTANT)


def _field_value(item: Any) -> float | None:
    """The number in one nvmlFieldValue_t, or None if NVML returned an error for it."""
    if getattr(item, "nvmlReturn", 0) != 0:
        return None
    attr = _VALUE_ATTRS.get(int(getattr(item, "valueType", 1)), "uiVal")
    return float(getattr(item.value, attr))


#: The ``why`` of an unknown share whose cause is a PID namespace (one warning of its own).
_PIDNS_UNSEEN = "the run's processes were never found in NVML's lists (PID namespace)"


class _Once:
    """A call made at most once; its value (or its exception) served to every caller (one
    listing of a GPU's processes per gauge read, for the process-memory gauge and the
    share)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._call = call
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def __call__(self) -> Any:
        if not self._done:
            self._done = True
            try:
                self._value = self._call()
            except Exception as exc:  # re-raised to every caller, as the call itself would
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._value


def _tree_memory(processes: Mapping[int, int | None] | None, pids: set[int]) -> float | None:
    """GPU memory used by the measured process tree (None: the lists are not supported)."""
    if processes is None:
        return None
    return float(sum(used for pid, used in processes.items() if pid in pids and used))


def _share_method(g: _Gpu) -> str:
    if g.is_mig:
        return SHARE_METHOD_MIG if g.mig_handles else SHARE_METHOD_NONE
    return SHARE_METHOD_SM if g.share.sm else SHARE_METHOD_MEMORY


# -- discovery ---------------------------------------------------------------------------
_INIT_HINTS = {
    "LibraryNotFound": (
        "the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA driver is visible to "
        "this process",
        "install the NVIDIA driver (`nvidia-smi` must work); in Docker start the container "
        "with `--gpus all` (NVIDIA Container Toolkit), in Kubernetes request nvidia.com/gpu. "
        "Machines without an NVIDIA GPU can ignore this"),
    "DriverNotLoaded": (
        "the NVIDIA kernel driver is not loaded",
        "check `nvidia-smi`; load the driver (`sudo modprobe nvidia`) or reboot after a "
        "driver install; in a container, start it with `--gpus all`"),
    "NoPermission": (
        "no permission to open the NVIDIA devices (/dev/nvidiactl, /dev/nvidia*)",
        "give this user access to /dev/nvidia* (often the 'video' group: `sudo usermod -aG "
        "video $USER`, then log in again); in a container use `--gpus all` rather than "
        "bind-mounting /dev/nvidia* by hand"),
    "LibRmVersionMismatch": (
        "the NVML library and the loaded NVIDIA kernel driver have different versions",
        "reboot (or reload the nvidia kernel modules) after a driver upgrade"),
}


def _arch_code(nvml: Any, handle: Any) -> int | None:
    try:
        return int(nvml.nvmlDeviceGetArchitecture(handle))
    except (AttributeError, *_errors(nvml, "NotSupported", "FunctionNotFound")):
        return None


def _optional(nvml: Any, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (AttributeError, *_errors(nvml, "NotSupported", "FunctionNotFound", "NoPermission")):
        return None


def _power_source(nvml: Any, handle: Any) -> str | None:
    skip = (AttributeError, *_errors(nvml, "NotSupported", "FunctionNotFound",
                                     "InvalidArgument", "NoPermission"))
    try:
        values = nvml.nvmlDeviceGetFieldValues(handle, [_fi_power_instant(nvml)])
    except skip as exc:  # no POWER_INSTANT field on this GPU or driver: try the averaged one
        log.debug("NVML_FI_DEV_POWER_INSTANT unavailable: %r", exc)
        values = []
    if values and _field_value(values[0]) is not None:
        return "power_instant"
    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
        return "power_usage"
    except skip:
        return None


def _mig_uuids(nvml: Any, handle: Any) -> tuple[str, ...]:
    """UUIDs of the MIG devices of one GPU (empty when MIG is off or unsupported)."""
    skip = (AttributeError, *_errors(nvml, "NotSupported", "FunctionNotFound",
                                     "InvalidArgument", "NotFound", "NoPermission"))
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        if not current:
            return ()
        count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
    except skip:
        return ()
    out = []
    for i in range(count):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            out.append(_text(nvml.nvmlDeviceGetUUID(mig)))
        except skip:
            continue  # an empty slot
    return tuple(out)


#: How a MIG slice's share of its GPU is computed (docs/hardware.md#nvidia-gpus-and-mig).
MIG_SHARE_SMS = ("SMs of the visible MIG devices / SMs of the GPU's largest GPU-instance "
                 "profile (static, by capacity)")
MIG_SHARE_SLICES = ("compute slices of the visible MIG devices / GPU-instance slices of the GPU "
                    "(static, by capacity)")
# nvmlGpuInstanceProfile indices (nvml.h NVML_GPU_INSTANCE_PROFILE_*), for an old pynvml
# without the constant: 0x0 (1 slice) .. 0x11 (3 slices GFX), NVML_GPU_INSTANCE_PROFILE_COUNT.
_GPU_INSTANCE_PROFILE_COUNT = 0x12


@dataclass(frozen=True)
class _MigShare:
    """The visible MIG devices' share of their GPU, or why there is none (``share`` None)."""

    share: float | None
    method: str = ""
    detail: str = ""
    handles: tuple[Any, ...] = ()  # the visible MIG devices' handles (their processes)


def _mig_skip(nvml: Any) -> tuple[type[BaseException], ...]:
    return (AttributeError, *_errors(nvml, "NotSupported", "FunctionNotFound",
                                     "InvalidArgument", "NotFound", "NoPermission"))


def _gpu_capacity(nvml: Any, handle: Any) -> tuple[int, int, str]:
    """(SMs, GPU-instance slices, profile name) of the largest GPU-instance profile of a GPU in
    MIG mode, from nvmlDeviceGetGpuInstanceProfileInfo over every profile index (the full-GPU
    profile is 7g on A100/H100/H200, 4g on A30). (0, 0, "") when the driver answers none.
    nvmlDeviceGetAttributes cannot give this: it answers MIG device handles only (nvml.h)."""
    skip = _mig_skip(nvml)
    count = int(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", _GPU_INSTANCE_PROFILE_COUNT))
    best: tuple[int, int, str] = (0, 0, "")
    version: int | None = None  # pynvml's default (2: ...ProfileInfoV) until it is missing
    for profile in range(count):
        try:
            if version is None:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
            else:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile, version)
        except _errors(nvml, "FunctionNotFound") as exc:
            if version is not None:
                log.debug("nvmlDeviceGetGpuInstanceProfileInfo unavailable: %r", exc)
                return best
            version = 1  # a driver without the V call: the v1 structure has the same counts
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile, version)
            except (TypeError, *skip):
                return best
        except skip:
            continue
        slices = int(getattr(info, "sliceCount", 0) or 0)
        sms = int(getattr(info, "multiprocessorCount", 0) or 0)
        if (slices, sms) > (best[1], best[0]):
            name = _text(getattr(info, "name", b"") or f"{slices}-slice profile")
            best = (sms, slices, name)
    return best


def _legacy_mig_ids(name: str) -> tuple[str, int, int] | None:
    """(GPU UUID, GI id, CI id) of a ``MIG-GPU-<uuid>/<gi>/<ci>`` name (drivers before R470,
    and CUDA_VISIBLE_DEVICES's legacy form), else None."""
    if not name.upper().startswith("MIG-GPU-"):
        return None
    parts = name[4:].split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0].lower(), int(parts[1]), int(parts[2])


def _mig_share(nvml: Any, handle: Any, gpu_uuid: str, wanted: Sequence[str]) -> _MigShare:
    """The share of the whole GPU's energy attributed to the visible MIG devices ``wanted``:
    their streaming multiprocessors over those of the GPU's largest GPU-instance profile, or,
    when the driver gives no SM counts, their compute slices over the GPU's GPU-instance
    slices (from the profiles, else nvmlDeviceGetMaxMigDeviceCount: one MIG device per slice
    at most). NVML's energy counter is the whole GPU's: a slice's own energy is not measured,
    so this is an attribution by capacity, not a measurement."""
    try:
        count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
    except _mig_skip(nvml) as exc:
        return _MigShare(None, detail=f"nvmlDeviceGetMaxMigDeviceCount failed: "
                                      f"{type(exc).__name__}: {exc}")
    whole = _whole_gpu_capacity(nvml, handle, count)
    handles, sms, slices = _visible_mig_devices(nvml, handle, gpu_uuid, wanted, count)
    if not handles:
        return _MigShare(None, detail=f"none of the MIG devices named ({', '.join(wanted)}) "
                                      f"is among the {count} MIG device slots NVML lists "
                                      "for this GPU")
    return _capacity_share(sms, slices, whole, tuple(handles))


@dataclass(frozen=True)
class _Capacity:
    """A MIG-mode GPU's whole capacity (the denominator of its MIG devices' share): SMs and
    GPU-instance slices (0 where NVML does not give them), and where the slices come from."""

    sms: int
    slices: int
    slices_source: str


def _whole_gpu_capacity(nvml: Any, handle: Any, count: int) -> _Capacity:
    """SMs and slices of the GPU's largest GPU-instance profile; the slices, where the
    profiles give none, from nvmlDeviceGetMaxMigDeviceCount (``count``)."""
    total_sms, total_slices, profile = _gpu_capacity(nvml, handle)
    slices_source = f"largest GPU-instance profile {profile}"
    if total_slices <= 0 and count > 0:
        total_slices, slices_source = count, "nvmlDeviceGetMaxMigDeviceCount"
    return _Capacity(total_sms, total_slices, slices_source)


def _visible_mig_devices(nvml: Any, handle: Any, gpu_uuid: str, wanted: Sequence[str],
                         count: int) -> tuple[list[Any], int, int]:
    """The handles of the GPU's MIG devices (of its ``count`` slots) that ``wanted`` names,
    with the sums of their SMs and compute slices."""
    skip = _mig_skip(nvml)
    is_wanted = _mig_matcher(nvml, gpu_uuid, wanted)
    handles: list[Any] = []
    sms = slices = 0
    for i in range(count):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            uuid = _text(nvml.nvmlDeviceGetUUID(mig))
        except skip:
            continue  # an empty MIG index (NotFound)
        if not is_wanted(mig, uuid):
            continue
        handles.append(mig)
        mig_sms, mig_slices = _mig_device_capacity(nvml, mig)
        sms += mig_sms
        slices += mig_slices
    return handles, sms, slices


def _mig_matcher(nvml: Any, gpu_uuid: str,
                 wanted: Sequence[str]) -> Callable[[Any, str], bool]:
    """Whether a MIG device of the GPU ``gpu_uuid`` (its handle and UUID) is named in
    ``wanted``: by its MIG UUID, or by a legacy ``MIG-GPU-<uuid>/<gi>/<ci>`` name (its GPU- and
    compute-instance ids, asked of NVML only when such a name is wanted)."""
    skip = _mig_skip(nvml)
    wanted_lower = {w.lower() for w in wanted}
    legacy = {ids for ids in map(_legacy_mig_ids, wanted)
              if ids is not None and ids[0] == gpu_uuid.lower()}

    def is_wanted(mig: Any, uuid: str) -> bool:
        if uuid.lower() in wanted_lower:
            return True
        if not legacy:
            return False
        try:
            ids = (gpu_uuid.lower(), int(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                   int(nvml.nvmlDeviceGetComputeInstanceId(mig)))
        except skip:
            return False
        return ids in legacy

    return is_wanted


def _mig_device_capacity(nvml: Any, mig: Any) -> tuple[int, int]:
    """(SMs, compute slices) of one MIG device (nvmlDeviceGetAttributes); (0, 0) when NVML
    does not give them."""
    try:
        attrs = nvml.nvmlDeviceGetAttributes(mig)
    except _mig_skip(nvml):
        return 0, 0
    sms = int(getattr(attrs, "multiprocessorCount", 0) or 0)
    # computeInstanceSliceCount: two compute instances of one GPU instance share its
    # gpuInstanceSliceCount, so it is theirs, not that, that adds up.
    ci = int(getattr(attrs, "computeInstanceSliceCount", 0) or 0)
    return sms, ci or int(getattr(attrs, "gpuInstanceSliceCount", 0) or 0)


def _capacity_share(sms: int, slices: int, whole: _Capacity,
                    handles: tuple[Any, ...]) -> _MigShare:
    """The visible MIG devices' share of the GPU: by SMs where both counts are known, else by
    slices, else none (at most 1)."""
    if whole.sms > 0 and sms > 0:
        return _MigShare(min(1.0, sms / whole.sms), MIG_SHARE_SMS,
                         f"{sms} of {whole.sms} SMs ({whole.slices_source})", handles)
    if whole.slices > 0 and slices > 0:
        return _MigShare(min(1.0, slices / whole.slices), MIG_SHARE_SLICES,
                         f"{slices} of {whole.slices} slices ({whole.slices_source})", handles)
    return _MigShare(None, detail="NVML gave neither SM nor slice counts for the GPU and its "
                                  "MIG devices (nvmlDeviceGetAttributes, "
                                  "nvmlDeviceGetGpuInstanceProfileInfo)",
                     handles=handles)


def _mig_mode(nvml: Any, handle: Any) -> tuple[int, int] | None:
    """[current, pending] MIG mode (nvmlDeviceGetMigMode), None where MIG is unsupported."""
    try:
        current, pending = nvml.nvmlDeviceGetMigMode(handle)
    except _mig_skip(nvml):
        return None
    return int(current), int(pending)


DRIVER_PATHS = NVIDIA_DRIVER_PATHS


def _load_nvml(ctx: DiscoveryContext) -> Any:
    if ctx.pynvml is not None:
        return ctx.pynvml
    if ctx.nvml_module != "pynvml":  # a simulator named by the nvml_module setting
        return importlib.import_module(ctx.nvml_module)
    import pynvml

    return pynvml


def discover(
    ctx: DiscoveryContext,
    *,
    poll_hz: float = DEFAULT_POLL_HZ,
    clock: Callable[[], float] | None = None,
    start_poller: bool = True,
    driver_paths: tuple[str, ...] = DRIVER_PATHS,
    proc_root: str = "/proc",
) -> list[Probe | Unavailable]:
    """Open NVML and return one :class:`NvmlProbe` for the visible GPUs, plus an
    :class:`Unavailable` for anything that cannot be measured (never raises for hardware
    trouble: NVML missing, no GPU, a hidden or unmeasurable GPU are all data).

    ``poll_hz``: power polling rate of the ``integrated`` method (>= 20 Hz). ``clock`` and
    ``start_poller=False`` let tests drive the integration deterministically via
    :meth:`NvmlProbe.poll`. ``driver_paths``: files whose existence shows a loaded NVIDIA
    driver; when none exists (and no ``pynvml`` is injected) pynvml is not even imported.
    ``proc_root``: where the probe reads ``self/status``, ``self/ns/pid`` and ``<pid>/status``
    to find a PID namespace and translate pids (:func:`pid_namespace`); tests pass a fake.
    """
    if poll_hz < MIN_POLL_HZ:
        raise ConfigError(f"NVML poll_hz is {poll_hz!r}; accepted: at least {MIN_POLL_HZ:g} Hz "
                          f"(default {DEFAULT_POLL_HZ:g})")
    missing = nvml_missing(ctx, driver_paths)
    if missing is not None:  # no pynvml import (~10 ms) on machines without the driver
        return [missing]
    try:
        nvml = _load_nvml(ctx)
    except ImportError as exc:
        if ctx.nvml_module != "pynvml":
            return [Unavailable(SOURCE, f"the NVML module {ctx.nvml_module!r} named by the "
                                        f"nvml_module setting cannot be imported ({exc})",
                                "unset ENERGYMETER_NVML_MODULE to use pynvml (nvidia-ml-py)")]
        return [Unavailable(SOURCE, f"the nvidia-ml-py package (module pynvml) is not "
                                    f"installed ({exc})",
                            "`pip install nvidia-ml-py` (NVIDIA's NVML bindings); the NVIDIA "
                            "driver must be installed too")]
    nvml_error = _base_error(nvml)
    try:
        nvml.nvmlInit()
    except nvml_error as exc:
        name = type(exc).__name__.removeprefix("NVMLError_")
        reason, hint = _INIT_HINTS.get(name, (
            f"nvmlInit failed: {type(exc).__name__}: {exc}",
            "check that `nvidia-smi` works for this user"))
        log.debug("NVML unavailable: %r", exc)
        return [Unavailable(SOURCE, reason, hint)]

    return opened_or_shut(
        lambda: _open(nvml, ctx, poll_hz=poll_hz, clock=clock or time.monotonic,
                      start_poller=start_poller, proc_root=proc_root),
        lambda: _shutdown(nvml), NvmlProbe)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except _base_error(nvml) as exc:
        log.debug("nvmlShutdown failed: %r", exc)


def _open(nvml: Any, ctx: DiscoveryContext, *, poll_hz: float, clock: Callable[[], float],
          start_poller: bool, proc_root: str = "/proc") -> list[Probe | Unavailable]:
    """The probe of the GPUs ``ctx``'s CUDA_VISIBLE_DEVICES selects (NVML initialised), and an
    :class:`Unavailable` for each of them that cannot be measured; only Unavailables when none
    can."""
    listed = _list_gpus(nvml)
    if isinstance(listed, Unavailable):
        return [listed]
    handles, identities = listed
    visible = ctx.env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and "MIG-" in visible.upper():
        identities = [GpuIdentity(g.nvml_index, g.uuid, g.name, _mig_uuids(nvml, handles[i]))
                      for i, g in enumerate(identities)]
    selection = _select(visible, identities)
    if isinstance(selection, Unavailable):
        return [selection]
    warnings = [*selection.warnings, *_device_order_warning(ctx.env, selection, identities)]
    gpus, missing = _open_gpus(nvml, selection, identities, handles, poll_hz, warnings)
    if not gpus:
        return list(missing)
    probe = NvmlProbe(nvml, gpus, pid=ctx.pid, include_root=ctx.include_root, poll_hz=poll_hz,
                      clock=clock, start_poller=start_poller, info=_driver_info(nvml),
                      proc_root=proc_root)
    for message in warnings:
        log.warning("%s", message)
        probe.warn(message)
    return [probe, *missing]


def _list_gpus(nvml: Any) -> tuple[list[Any], list[GpuIdentity]] | Unavailable:
    """Every GPU's handle and identity, in NVML order; why not when there are none."""
    try:
        count = int(nvml.nvmlDeviceGetCount())
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        identities = [GpuIdentity(i, _text(nvml.nvmlDeviceGetUUID(h)),
                                  _text(nvml.nvmlDeviceGetName(h)))
                      for i, h in enumerate(handles)]
    except _base_error(nvml) as exc:
        return Unavailable(SOURCE, f"NVML could not list the GPUs: {type(exc).__name__}: {exc}",
                           "check that `nvidia-smi` lists the GPUs for this user")
    if count == 0:
        return Unavailable(SOURCE, "NVML found no NVIDIA GPU",
                           "check `nvidia-smi -L`; in a container start it with `--gpus all`")
    return handles, identities


def _select(visible: str | None, identities: Sequence[GpuIdentity]) -> Selection | Unavailable:
    """The GPUs CUDA_VISIBLE_DEVICES=``visible`` selects; why none, when it is invalid (logged
    as a warning) or hides every GPU."""
    try:
        selection = select_visible(visible, identities)
    except ConfigError as exc:
        log.warning("%s", exc)
        return Unavailable(SOURCE, str(exc),
                           "fix or unset CUDA_VISIBLE_DEVICES (`nvidia-smi -L` lists indices "
                           "and UUIDs)")
    if not selection.gpus:
        return Unavailable(SOURCE, HIDES_EVERY_GPU,
                           f"CUDA_VISIBLE_DEVICES={visible!r}; unset it or list the GPUs to "
                           "measure (e.g. CUDA_VISIBLE_DEVICES=0)")
    return selection


def _device_order_warning(env: Mapping[str, str], selection: Selection,
                          identities: Sequence[GpuIdentity]) -> list[str]:
    """A warning when GPUs chosen by index may not be CUDA's of that index: the machine mixes
    GPU models and CUDA_DEVICE_ORDER is not PCI_BUS_ID (CUDA then numbers fastest first)."""
    order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper()
    models = {identities[v.nvml_index].name for v in selection.gpus}
    if selection.by_index and order != "PCI_BUS_ID" and len({g.name for g in identities}) > 1:
        return [
            "this machine mixes GPU models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA "
            "numbers GPUs fastest first while NVML (and energymeter) number them by PCI bus, "
            "so gpu<i> may not be cuda:<i>; set CUDA_DEVICE_ORDER=PCI_BUS_ID or name GPUs by "
            f"UUID (models: {', '.join(sorted(models))})"]
    return []


def _open_gpus(nvml: Any, selection: Selection, identities: Sequence[GpuIdentity],
               handles: Sequence[Any], poll_hz: float,
               notes: list[str]) -> tuple[list[_Gpu], list[Unavailable]]:
    """The selected GPUs opened, in CUDA order (channels gpu0, gpu1... over those that open),
    and why each of the others cannot be measured."""
    gpus: list[_Gpu] = []
    missing: list[Unavailable] = []
    for cuda_index, vis in enumerate(selection.gpus):
        opened = _open_gpu_or_why(nvml, f"gpu{len(gpus)}", cuda_index,
                                  identities[vis.nvml_index], vis, handles[vis.nvml_index],
                                  poll_hz, notes)
        if isinstance(opened, Unavailable):
            missing.append(opened)
        else:
            gpus.append(opened)
    return gpus, missing


def _open_gpu_or_why(nvml: Any, cid: str, cuda_index: int, ident: GpuIdentity,
                     vis: VisibleGpu, handle: Any, poll_hz: float,
                     notes: list[str]) -> _Gpu | Unavailable:
    """:func:`_open_gpu`, or why the GPU cannot be measured (lost, failing, or neither an
    energy counter nor power readings)."""
    try:
        gpu = _open_gpu(nvml, cid, cuda_index, ident, vis, handle, poll_hz, notes)
    except _errors(nvml, "GpuIsLost", "Unknown") as exc:
        return Unavailable(SOURCE, f"GPU {vis.nvml_index} ({ident.name}, "
                                   f"{ident.uuid}) is lost: {exc}",
                           "check `nvidia-smi`; the GPU may need a reset")
    except _base_error(nvml) as exc:
        return Unavailable(SOURCE, f"GPU {vis.nvml_index} ({ident.name}) could not "
                                   f"be opened: {type(exc).__name__}: {exc}",
                           "check that `nvidia-smi -q -d POWER` works")
    if gpu is None:
        return Unavailable(
            SOURCE, f"GPU {vis.nvml_index} ({ident.name}) reports neither an energy counter "
                    "nor power readings",
            "this GPU cannot be measured through NVML")
    return gpu


def _driver_info(nvml: Any) -> dict[str, Any]:
    """The driver and NVML versions, where NVML gives them."""
    info: dict[str, Any] = {}
    driver = _optional(nvml, lambda: nvml.nvmlSystemGetDriverVersion())
    version = _optional(nvml, lambda: nvml.nvmlSystemGetNVMLVersion())
    if driver is not None:
        info["driver_version"] = _text(driver)
    if version is not None:
        info["nvml_version"] = _text(version)
    return info


def _open_gpu(nvml: Any, cid: str, cuda_index: int, ident: GpuIdentity, vis: VisibleGpu,
              handle: Any, poll_hz: float, notes: list[str]) -> _Gpu | None:
    """GPU ``ident`` opened as channel ``cid``, or None when it gives neither an energy counter
    nor power readings; what a user should know about its MIG state is appended to ``notes``."""
    arch = _arch_code(nvml, handle)
    counter_mj = _energy_counter_mj(nvml, handle, arch)
    power_source = _power_source(nvml, handle)
    if counter_mj is None and power_source is None:
        return None
    meta = _gpu_meta(nvml, handle, ident, cuda_index, arch)
    mode = _mig_mode(nvml, handle) if arch is None or arch >= _ARCH_AMPERE else None
    if mode is not None and (mode[0] or mode[1]):
        meta["mig_mode"] = {"current": "enabled" if mode[0] else "disabled",
                            "pending": "enabled" if mode[1] else "disabled"}
    where = f"{cid} (GPU {ident.nvml_index}, {ident.name})"
    mig_handles = _attribute_to_mig(nvml, handle, ident, vis, mode, where, meta, notes)
    if power_source is not None:
        meta["power_source"] = power_source
    method, resolution_s = _energy_method(counter_mj is not None, poll_hz)
    channel = Channel(id=cid, kind="gpu", device=ident.name, source=SOURCE, method=method,
                      resolution_s=resolution_s, meta=meta)
    # NVML's counter is energy since the driver loaded: after a reset it counts from 0 again.
    counter = (CumulativeCounter(counter_mj, restarts_from_zero=True)
               if counter_mj is not None else None)
    return _Gpu(channel=channel, handle=handle, power_source=power_source, counter=counter,
                mig_handles=mig_handles)


def _energy_counter_mj(nvml: Any, handle: Any, arch: int | None) -> int | None:
    """The GPU's energy counter now (mJ), None before Volta or where it is not supported."""
    volta = getattr(nvml, "NVML_DEVICE_ARCH_VOLTA", _ARCH_VOLTA)
    if arch is None or arch < volta:
        return None
    try:
        return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
    except (AttributeError, *_errors(nvml, "NotSupported", "FunctionNotFound")):
        return None


def _gpu_meta(nvml: Any, handle: Any, ident: GpuIdentity, cuda_index: int,
              arch: int | None) -> dict[str, Any]:
    """The channel's identity: indices, UUID, name, architecture, and the power limit and PCI
    bus id where NVML gives them."""
    meta: dict[str, Any] = {
        "nvml_index": ident.nvml_index,
        "cuda_index": cuda_index,
        "uuid": ident.uuid,
        "name": ident.name,
        "architecture": _ARCH_NAMES.get(arch, "unknown") if arch is not None else "unknown",
    }
    limit_mw = _optional(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    if limit_mw is not None:
        meta["power_limit_w"] = limit_mw / 1000
    pci = _optional(nvml, lambda: nvml.nvmlDeviceGetPciInfo(handle))
    if pci is not None and getattr(pci, "busId", None):
        meta["pci_bus_id"] = _text(pci.busId)
    return meta


def _attribute_to_mig(nvml: Any, handle: Any, ident: GpuIdentity, vis: VisibleGpu,
                      mode: tuple[int, int] | None, where: str, meta: dict[str, Any],
                      notes: list[str]) -> tuple[Any, ...]:
    """The visible MIG devices' share of the GPU into ``meta`` and a note (or a note that a
    GPU in MIG mode was named whole); returns the visible MIG devices' handles."""
    if not vis.mig_uuids:
        if mode is not None and mode[0]:
            notes.append(f"{where} is in MIG mode but CUDA_VISIBLE_DEVICES names none of its "
                         "MIG devices: its energy is the whole GPU's and no share is "
                         "attributed; name the MIG device (CUDA_VISIBLE_DEVICES=MIG-<uuid>, "
                         "`nvidia-smi -L`) to get the slice's share")
        return ()
    meta["mig_uuids"] = list(vis.mig_uuids)
    found = _mig_share(nvml, handle, ident.uuid, vis.mig_uuids)
    if found.share is not None:
        meta["mig_share"], meta["mig_share_method"] = found.share, found.method
        meta["mig_share_basis"] = found.detail
        notes.append(f"{where}: MIG; the visible MIG device(s) are attributed "
                     f"{found.share:.1%} of the whole GPU's energy: {found.detail}")
    else:
        meta["mig_share_unavailable"] = found.detail
        notes.append(f"{where}: MIG; no share of the whole GPU's energy is attributed to "
                     f"the visible MIG device(s): {found.detail}")
    return found.handles


def _energy_method(has_counter: bool, poll_hz: float) -> tuple[str, float]:
    """(method, resolution in s): the energy counter's, else polled power's."""
    if has_counter:
        return "counter", COUNTER_UPDATE_PERIOD_S
    return "integrated", 1.0 / poll_hz
