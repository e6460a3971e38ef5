"""The probe interface shared by every hardware family.

A probe owns one family of hardware and exposes :class:`Channel` objects. ``read()`` returns, for
every channel, cumulative joules since the probe opened: monotone, wrap-around already undone,
whatever the hardware gives (counter, polled power, model). ``gauges()`` returns instantaneous
extras. Discovery yields working probes and :class:`Unavailable` entries; unavailability is data.
Faults are per channel: a probe whose channels are read one by one raises :class:`PartialRead`
(the good channels' values and each failed channel's error) rather than failing whole, and skips
the channels in :attr:`Probe.skip` (suspended by the sampler until it retries them).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger
from ..errors import ProbeError
from ..notes import WarningBook
from ..settings import default

_log = LazyLogger("energymeter")

#: Energy kinds, in the order reports show them. ``psys`` (a platform counter that already
#: contains the others) is reported beside the rest and never summed into a total.
KINDS = ("cpu", "dram", "gpu", "soc", "psys")
NOT_IN_TOTAL = frozenset({"psys"})
#: How a channel's energy is obtained. ``mixed`` is never a probe's own: a report gives it to
#: a channel whose energy was partly measured and partly estimated within the run (see
#: :meth:`Probe.estimated_parts`).
METHODS = ("counter", "integrated", "model", "mixed")
#: What each measurement method means, for people reading a listing or a report.
METHOD_MEANING = {
    "counter": "hardware energy counter (measured)",
    "integrated": "power readings integrated over time (measured)",
    "model": "estimated by a model, not measured",
    "mixed": "partly measured, partly estimated by a model",
}


@dataclass(frozen=True)
class Channel:
    """One stream of energy from one device.

    ``part_of`` names the parent channel of a sub-zone (e.g. RAPL ``core`` inside ``package``):
    such channels are reported but never summed into ``by_kind`` or ``total``.
    ``resolution_s`` is the hardware update period of the underlying counter (0 if unknown or
    continuous); windows shorter than it are flagged in reports.
    ``meta`` carries device facts for the report (NVML index, UUID, power limit, sysfs path...).
    """

    id: str
    kind: str
    device: str
    source: str
    method: str
    part_of: str | None = None
    resolution_s: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"channel kind {self.kind!r} not in {KINDS}")
        if self.method not in METHODS:
            raise ValueError(f"channel method {self.method!r} not in {METHODS}")

    @property
    def is_subzone(self) -> bool:
        """A part of another channel (``part_of`` set): shown, never summed."""
        return self.part_of is not None

    @property
    def in_total(self) -> bool:
        """Whether this channel's energy enters ``energy_j.total`` (not a sub-zone, not psys)."""
        return not self.is_subzone and self.kind not in NOT_IN_TOTAL

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "device": self.device,
            "source": self.source,
            "method": self.method,
        }
        if self.part_of is not None:
            out["part_of"] = self.part_of
        if self.resolution_s:
            out["resolution_s"] = self.resolution_s
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Channel:
        return cls(
            id=data["id"],
            kind=data["kind"],
            device=data.get("device", ""),
            source=data.get("source", ""),
            method=data.get("method", "counter"),
            part_of=data.get("part_of"),
            resolution_s=float(data.get("resolution_s", 0.0)),
            meta=dict(data.get("meta", {})),
        )


#: ``Channel.meta["psys_scope"]`` of psys channels that are disjoint, one per socket or module
#: of their source (the Grace Hopper module meters), and so may be summed.
PSYS_PER_SOCKET = "socket"


def energy_summary(channels: Iterable[Channel], energy_j: Mapping[str, float]) -> dict[str, Any]:
    """``{"total": J, "by_kind": {kind: J}}`` of per-channel joules: sub-zones enter neither,
    ``psys`` enters ``by_kind`` but not ``total`` (it already contains the others).

    ``by_kind["psys"]``: psys meters may nest (an ACPI meter of the whole platform contains
    RAPL's psys) and are never summed, except those a source marks as one per socket
    (``meta["psys_scope"] == "socket"``: one Grace Hopper module meter per socket), which are
    summed within their source; the widest figure (the most energy) is taken. Each channel
    is still shown on its own."""
    by_kind: dict[str, float] = {}
    per_socket: dict[str, float] = {}
    candidates: list[float] = []
    for ch in channels:
        if not ch.is_subzone and ch.id in energy_j:
            if ch.kind == "psys":
                by_kind.setdefault("psys", 0.0)  # in the kinds' order of the channels
                if ch.meta.get("psys_scope") == PSYS_PER_SOCKET:
                    per_socket[ch.source] = per_socket.get(ch.source, 0.0) + energy_j[ch.id]
                else:
                    candidates.append(energy_j[ch.id])
            else:
                by_kind[ch.kind] = by_kind.get(ch.kind, 0.0) + energy_j[ch.id]
    if "psys" in by_kind:
        by_kind["psys"] = max([*candidates, *per_socket.values()])
    total = sum(v for k, v in by_kind.items() if k not in NOT_IN_TOTAL)
    return {"total": total, "by_kind": by_kind}


def total_energy_j(channels: Iterable[Channel], energy_j: Mapping[str, float]) -> float:
    """The ``total`` of :func:`energy_summary`."""
    return float(energy_summary(channels, energy_j)["total"])


def opened_or_shut(open_: Callable[[], list[Any]], shutdown: Callable[[], None],
                   probe_type: type) -> list[Any]:
    """What ``open_()`` found (probes and :class:`Unavailable`) after a vendor library was
    initialised: the library is shut down again when opening fails (the error is raised) or
    finds no ``probe_type`` to keep it."""
    try:
        found = open_()
    except BaseException:
        shutdown()
        raise
    if not any(isinstance(r, probe_type) for r in found):
        shutdown()
    return found


class PartialRead(ProbeError):
    """A read in which some channels failed and the others did not (one RAPL zone holds
    garbage, one GPU of several does not answer).

    A probe whose channels are read one by one raises it from ``_read`` instead of failing
    whole: ``values`` holds the joules of the channels read well (as ``read()`` would return
    them), ``errors`` what went wrong with each of the others (channel id -> text). The sampler
    takes the values, counts a failure for each channel in ``errors`` alone, and suspends and
    retries only those (see :attr:`Probe.skip`). A counter channel that fails keeps its
    counter's last good reading, so when it reads again the energy over the gap is counted."""

    def __init__(self, values: dict[str, float], errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{cid}: {why}" for cid, why in errors.items())
                         or "partial read")
        self.values = values
        self.errors = errors


@dataclass(frozen=True)
class Unavailable:
    """A source that could not be opened: what, why, and what the user can do about it."""

    source: str
    reason: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "hint": self.hint}


@dataclass(frozen=True)
class DiscoveryContext:
    """Everything discovery may need; hardware access is injectable for tests and containers.

    ``powercap_root``: the RAPL sysfs root (default: the ``powercap_root`` setting's default).
    ``pid``: the root of the measured process tree (0: this process); ``include_root``: whether
    the root itself is measured (False: only what it starts, as ``energymeter run`` wants).
    ``cpu_tdp_w``: the full-load power to model the CPU with, overriding the TDP table.
    ``pynvml``: the NVML module object to use (``None``: import ``pynvml`` from nvidia-ml-py).
    ``env``: the environment to read (``CUDA_VISIBLE_DEVICES``...).
    ``nvml_module``: the module imported as NVML when ``pynvml`` is not given.
    ``energy``: whether energy probes are opened at all (False: only the process tree's
    gauges, for a rank whose node another rank measures).
    ``amdsmi``: the amdsmi module object to use (``None``: import ``amdsmi``; tests pass a
    fake). ``sysfs_root``: where sysfs is (``/sys``; hwmon and Jetson rails are read under it;
    tests pass a fake tree).
    ``gpus_only``: only GPU probes (a rank whose node's CPU another rank measures).
    ``daemon``: ``off``, ``auto`` or the socket of an ``energymeter daemon`` to read RAPL
    through (the ``daemon`` setting).
    """

    powercap_root: Path = field(default_factory=lambda: default("powercap_root"))
    pid: int = 0
    include_root: bool = True
    cpu_tdp_w: float | None = None
    pynvml: Any = None
    env: Mapping[str, str] = field(default_factory=dict)
    nvml_module: str = "pynvml"
    energy: bool = True
    daemon: str = "off"
    gpus_only: bool = False
    amdsmi: Any = None
    sysfs_root: Path = Path("/sys")


class Probe(ABC):
    """Base class of probes. Subclasses implement :meth:`_read` (and optionally
    :meth:`_gauges`, :meth:`describe`, :meth:`close`, and the run hooks
    :meth:`_first_run_began` / :meth:`_last_run_ended`); the public methods are thread-safe."""

    source: str = ""
    #: Whether a call may block for long (a driver call, another process's /proc files, code we
    #: do not know): the sampler then makes it on a helper thread and waits a bounded time, so
    #: that a call that never returns cannot hang the user's program. Probes whose calls are
    #: short reads of kernel counters (RAPL sysfs, /proc/stat) set it False and are read inline.
    may_block: bool = True
    #: During a :meth:`read`: the channels the reading sampler has suspended after repeated
    #: errors, until it retries them. A probe that reads its channels one by one skips these
    #: (no value, no error for them), so that a failing device costs no call per tick. Given
    #: per read (a cached probe serves every meter of its process, each with suspensions of
    #: its own); empty (and falsy) nearly always, so probes test ``if skip`` first.
    skip: frozenset[str] = frozenset()

    def __init__(self, channels: tuple[Channel, ...], gauge_names: tuple[str, ...] = ()) -> None:
        self.channels: tuple[Channel, ...] = channels
        # Every key gauges() may return, known up front so samples.csv has a fixed header.
        self.gauge_names: tuple[str, ...] = gauge_names
        self._lock = threading.Lock()  # energy state (wrap tracking depends on ordered reads)
        self._gauge_lock = threading.Lock()  # gauges apart: a slow gauge never holds up energy
        self._warn_lock = threading.Lock()  # warnings apart: taken whatever a call is doing
        # Bounded: one entry per kind and subject, repeats counted (see energymeter.notes).
        self._warnings = WarningBook()
        self._runs = 0
        self._runs_lock = threading.Lock()  # serialises begin_run/end_run and their hooks
        # Calls that did not return in time, by kind ("read", "gauges", "begin_run"...): the
        # event is set when the call finally returns (it may never).
        self._stuck: dict[str, threading.Event] = {}

    # -- calls that did not return -------------------------------------------------------
    def mark_stuck(self, kind: str, returned: threading.Event) -> None:
        """A sampler gave up waiting for a call of ``kind``; ``returned`` is set when it ends."""
        self._stuck[kind] = returned

    def stuck(self, kind: str) -> bool:
        """Whether a call of ``kind`` is still outstanding after its time ran out."""
        returned = self._stuck.get(kind)
        if returned is None:
            return False
        if returned.is_set():
            self._stuck.pop(kind, None)
            return False
        return True

    @property
    def may_be_stuck(self) -> bool:
        """Whether any call was ever given up and not yet seen to return (cheap: the sampler
        asks before every call)."""
        return bool(self._stuck)

    @property
    def hung(self) -> bool:
        """Whether an energy read or a run hook has not returned: the probe is left out (its
        locks may be held) until it does, and never closed meanwhile."""
        return any(self.stuck(kind) for kind in ("read", "begin_run", "end_run"))

    # -- runs ----------------------------------------------------------------------------
    def begin_run(self) -> None:
        """A run starts using this probe. Runs may nest or overlap (a cached probe serves every
        run of its process): the first calls :meth:`_first_run_began`."""
        with self._runs_lock:
            if self._runs == 0:
                self._first_run_began()  # counted only once it succeeded
            self._runs += 1

    def end_run(self) -> None:
        """A run stopped using this probe; the last calls :meth:`_last_run_ended`."""
        with self._runs_lock:
            if self._runs == 0:
                return
            self._runs -= 1
            if self._runs == 0:
                self._last_run_ended()

    @property
    def has_run_hooks(self) -> bool:
        """Whether :meth:`begin_run`/:meth:`end_run` do any work of the probe's own (else
        they only count runs, and a sampler calls them inline rather than on its bounded
        helper thread: a thread hand-off costs more than the count)."""
        cls = type(self)
        return (cls._first_run_began is not Probe._first_run_began
                or cls._last_run_ended is not Probe._last_run_ended
                or cls.begin_run is not Probe.begin_run or cls.end_run is not Probe.end_run)

    def _first_run_began(self) -> None:  # noqa: B027 - optional hook
        """No run was using this probe and one starts (e.g. resynchronise counters read
        last before a pause, start a polling thread). Called without the probe's lock."""

    def _last_run_ended(self) -> None:  # noqa: B027 - optional hook
        """No run uses this probe any more (e.g. stop a polling thread). Called without the
        probe's lock."""

    # -- public, thread-safe -------------------------------------------------------------
    def read(self, skip: frozenset[str] = frozenset()) -> dict[str, float]:
        """Cumulative joules per channel id since the probe opened; channels in ``skip``
        (suspended by the caller) may be left out without being read."""
        with self._lock:
            if not skip:
                return self._read()
            self.skip = skip
            try:
                return self._read()
            finally:
                self.skip = frozenset()

    def gauges(self) -> dict[str, float]:
        """Instantaneous extras keyed by names from ``gauge_names`` (units in the names).

        Under a lock of their own: a gauge that is slow (or never returns) does not hold up
        energy reads. Subclasses' ``_gauges`` must only read shared state, or take ``_lock``."""
        with self._gauge_lock:
            return self._gauges()

    def warn(self, message: str, key: Any = None) -> None:
        """Record a warning for the run (e.g. a lost device); the meter collects it. ``key``
        (e.g. ``("reset", channel id)``) says what it is about, for a message that embeds
        values: repeats of a key are counted, not kept (see
        :class:`energymeter.notes.WarningBook`)."""
        self._warn_locked(message, key)

    def drain_warnings(self) -> list[str]:
        """Warnings recorded since the last call, bounded, repeats counted (never waits for a
        call in progress)."""
        with self._warn_lock:
            book, self._warnings = self._warnings, WarningBook()
        return book.messages()

    def estimated_parts(self) -> dict[str, dict[str, float]]:
        """The parts of this run's energy that were estimated rather than measured, per channel
        id (only channels with some): ``estimated_j`` (joules estimated since the current run
        began), ``from_t_ns`` (``time.monotonic_ns()`` when estimation began, or when the run
        began if later) and, when estimation has ended (measurement resumed or stopped),
        ``until_t_ns``. A channel whose method is ``model`` is estimated whole and is not
        listed. Never waits for a call in progress. Default: nothing estimated."""
        return {}

    def attribution(self) -> dict[str, dict[str, Any]]:
        """How this probe took the run's share of each of its channels (those it reports a
        ``<channel>_own_share`` gauge for), per channel id: ``method`` (one line) and
        ``intervals`` (gauge reads counted by the rule that gave the share). Default: none
        (the CPU-side channels' shares come from the process probe's CPU time)."""
        return {}

    def exclude_process(self, pid: int) -> None:  # noqa: B027 - optional hook
        """Leave process ``pid`` and its descendants out of what is measured per process (a
        helper of energymeter's own, such as the watchdog of ``energymeter run``)."""

    def include_process(self, pid: int) -> None:  # noqa: B027 - optional hook
        """Undo :meth:`exclude_process`."""

    def check_interval(self, interval_s: float) -> list[str]:
        """Warnings about sampling at ``interval_s`` (e.g. too slow to see every counter wrap)."""
        return []

    def describe(self) -> dict[str, Any]:
        """Facts for ``energymeter probes`` and the report's host block."""
        return {"source": self.source, "channels": [c.to_dict() for c in self.channels]}

    def close(self) -> None:  # noqa: B027 - optional hook, most probes hold nothing
        """Release files and handles. Idempotent."""

    # -- for subclasses ------------------------------------------------------------------
    def _warn_locked(self, message: str, key: Any = None) -> None:
        """Record a warning (callable with or without ``_lock`` held); ``key`` as in
        :meth:`warn`."""
        with self._warn_lock:
            book = self._warnings
            left_out = book.left_out
            book.add(message, key)
            if book.left_out > left_out:  # past the cap: the log is its only record
                _log.warning("probe %s: %s", self.source, message)

    @abstractmethod
    def _read(self) -> dict[str, float]: ...

    def _gauges(self) -> dict[str, float]:
        return {}
