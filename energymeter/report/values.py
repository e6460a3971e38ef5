"""The parts of a report: per-channel energies, phases, and the schema's fixed words.

Below :mod:`.model` (the whole :class:`~energymeter.report.Report`) so that both the report and
the rebuild of a killed run (:mod:`.rebuild`) are made of the same parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

from ..errors import ReportError
from ..probes.base import KINDS, METHODS, Channel, energy_summary
from ..store.readers import (
    MAX_DURATION_S,
    MAX_ENERGY_J,
    MAX_NUMBER,
    check_joules,
    check_plain,
    key_path,
    mean_power_w,
)

SCHEMA = "energymeter.report/1"
#: The statuses a run ends with (what ``Meter.stop()`` accepts).
STATUSES = ("completed", "failed", "interrupted")
#: A run still being measured, as the rebuild shows one that is alive (never a stop status).
RUNNING = "running"
#: The statuses of a report that is read back or rebuilt: the final ones and ``running``.
LOADABLE_STATUSES = (*STATUSES, RUNNING)

# The bounds of what a report may hold (MAX_ENERGY_J 1e18 J, MAX_DURATION_S 1e9 s, MAX_NUMBER
# 1e30), imported above, are defined beside the readers, below the sampler, which applies
# them too; they are still importable from here.

#: The columns of :meth:`Report.to_row` (and of the ``runs.csv`` ledger), in order.
LEDGER_COLUMNS = (
    "run_id", "name", "status", "started_at", "ended_at", "duration_s",
    "energy_total_j", *(f"energy_{k}_j" for k in KINDS), "cpu_method", "gpu_method",
    "mean_power_w",
    "region", "g_per_kwh", "pue", "emissions_g",
    "cpu_time_s", "peak_rss_bytes", "peak_gpu_memory_bytes", "read_bytes", "write_bytes",
    "exit_code", "warnings", "command", "path", "parent_run_id",
    "group_id", "warmup", "tags", "values", "items", "energy_per_item_j",
    "job_id", "node", "rank",
)


#: The methods by which a channel can be measured (what a ``mixed`` channel was, where it was).
MEASURED_METHODS = ("counter", "integrated")


@dataclass(frozen=True)
class EstimatedPart:
    """The part of a channel's energy in a run that a model estimated instead of measuring it
    (the daemon stopped answering and the CPU model took over): ``estimated_j``, from
    ``from_s`` (seconds since the run's t = 0) until ``until_s`` (``None``: to the end of the
    run), and ``measured_method``, how the rest was measured."""

    estimated_j: float
    from_s: float
    until_s: float | None = None
    measured_method: str = "counter"


def estimated_parts_s(parts: Mapping[str, Mapping[str, float]], t0_ns: int
                      ) -> dict[str, tuple[float, float, float | None]]:
    """Probes' :meth:`~energymeter.probes.base.Probe.estimated_parts` on the run's clock:
    per channel ``(estimated_j, from_s, until_s or None)``, seconds since ``t0_ns`` (the
    ``time.monotonic_ns()`` of the run's t = 0)."""
    out: dict[str, tuple[float, float, float | None]] = {}
    for cid, part in parts.items():
        until = part.get("until_t_ns")
        out[cid] = (float(part["estimated_j"]), (part["from_t_ns"] - t0_ns) / 1e9,
                    None if until is None else (until - t0_ns) / 1e9)
    return out


@dataclass(frozen=True)
class ChannelEnergy:
    """A channel's energy in a run, mean and peak power, and the part of it estimated by a
    model where the channel was measured only in part (``estimated``: its ``channel`` then
    says ``method`` ``mixed``, or ``model`` when nothing of it was measured)."""

    channel: Channel
    energy_j: float
    mean_power_w: float
    peak_power_w: float | None = None
    estimated: EstimatedPart | None = None

    @property
    def estimated_j(self) -> float:
        """Joules estimated by a model: all of a ``model`` channel's, part of a ``mixed``
        one's, none of a measured one's."""
        if self.estimated is not None:
            return self.estimated.estimated_j
        return self.energy_j if self.channel.method == "model" else 0.0

    @property
    def estimated_share(self) -> float | None:
        """``estimated_j / energy_j`` of a channel estimated in part (None otherwise)."""
        if self.estimated is None:
            return None
        return self.estimated.estimated_j / self.energy_j if self.energy_j > 0 else 1.0

    @property
    def attributed_energy_j(self) -> float | None:
        """This process's MIG slice's share of a whole GPU's energy (``meta.mig_share``:
        an attribution by capacity, not a measurement), else None."""
        share = self.channel.meta.get("mig_share")
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            return None
        return self.energy_j * float(share)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.channel.to_dict(), "energy_j": self.energy_j,
               "mean_power_w": self.mean_power_w, "peak_power_w": self.peak_power_w}
        attributed = self.attributed_energy_j
        if attributed is not None:
            out["attributed_energy_j"] = attributed
        part = self.estimated
        if part is not None:
            out.update(measured_method=part.measured_method, estimated_j=part.estimated_j,
                       estimated_share=self.estimated_share, estimated_from_s=part.from_s)
            if part.until_s is not None:
                out["estimated_until_s"] = part.until_s
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "report",
                  key: str = "channel") -> ChannelEnergy:
        """Read one entry of a report's ``channels``; :class:`ReportError` naming ``where``
        and ``key`` when it is not one."""
        f = Fields(data, where, key)
        channel = channel_from_fields(f)
        energy_j = f.joules("energy_j")
        part = None
        if "estimated_j" in f.data:
            if channel.method not in ("mixed", "model"):
                f.fail("method", "mixed or model (the channel has estimated_j)", channel.method)
            estimated_j = f.joules("estimated_j")
            if estimated_j > energy_j:
                f.fail("estimated_j", f"at most energy_j ({energy_j!r})", estimated_j)
            f.number("estimated_share", None, optional=True, minimum=0.0, maximum=1.0)
            part = EstimatedPart(estimated_j, f.seconds("estimated_from_s"),
                                 f.number("estimated_until_s", None, optional=True,
                                          minimum=0.0, maximum=MAX_DURATION_S),
                                 f.choice("measured_method", MEASURED_METHODS))
        elif channel.method == "mixed":
            f.fail("estimated_j", "the joules estimated of a mixed channel", None)
        return cls(channel, energy_j, f.number("mean_power_w", 0.0, optional=True) or 0.0,
                   f.number("peak_power_w", None, optional=True), part)


def channel_energies(channels: Iterable[Channel], energy_j: Mapping[str, float],
                     duration_s: float, peak_power_w: Mapping[str, float],
                     estimated: Mapping[str, tuple[float, float, float | None]] | None = None
                     ) -> tuple[ChannelEnergy, ...]:
    """Per-channel energy, mean power over the run and peak power; ``estimated``: per channel
    the joules a model estimated, from and until when (run seconds; see
    :func:`estimated_parts_s`), which make a measured channel ``mixed`` (see
    :func:`estimated_channel`)."""
    out = []
    for c in channels:
        joules = energy_j.get(c.id, 0.0)
        entry = ChannelEnergy(c, joules, mean_power_w(joules, duration_s),
                              peak_power_w.get(c.id))
        if estimated and c.id in estimated:
            entry = estimated_channel(entry, *estimated[c.id], duration_s=duration_s)
        out.append(entry)
    return tuple(out)


def estimated_channel(entry: ChannelEnergy, estimated_j: float, from_s: float,
                      until_s: float | None = None, *, duration_s: float) -> ChannelEnergy:
    """``entry`` with ``estimated_j`` of its energy estimated from ``from_s`` (until
    ``until_s``, run seconds): method ``mixed`` when 0 < estimated_j < its energy, ``model``
    when it is all of it (the part's times kept), unchanged when none of it is or the channel
    was not measured to begin with (``model`` already)."""
    channel = entry.channel
    if not estimated_j > 0 or not entry.energy_j > 0 or channel.method not in MEASURED_METHODS:
        return entry
    whole = estimated_j >= entry.energy_j
    end_s = max(duration_s, 0.0)
    from_s = min(max(from_s, 0.0), end_s)
    part = EstimatedPart(min(estimated_j, entry.energy_j), from_s,
                         None if until_s is None else min(max(until_s, from_s), end_s),
                         channel.method)
    return replace(entry, channel=replace(channel, method="model" if whole else "mixed"),
                   estimated=part)


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    energy_by_channel: Mapping[str, float]
    parent: str | None = None
    below_resolution: bool = False
    # Still open when the run was killed: rebuilt as ending at the last flushed sample.
    open_at_end: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self, channels: Sequence[Channel]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "parent": self.parent, "start_s": self.start_s,
            "end_s": self.end_s, "duration_s": self.duration_s,
            "energy_j": energy_summary(channels, self.energy_by_channel),
            "energy_by_channel_j": dict(self.energy_by_channel),
        }
        if self.below_resolution:
            out["below_resolution"] = True
        if self.open_at_end:
            out["open_at_end"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "report",
                  key: str = "phase") -> Phase:
        """Read one phase (of a report's ``phases``, or a ``phase`` event);
        :class:`ReportError` naming ``where`` and ``key`` when it is not one."""
        f = Fields(data, where, key)
        energies = f.obj("energy_by_channel_j", {})
        return cls(f.text("name"), f.seconds("start_s", signed=True),
                   f.seconds("end_s", signed=True),
                   {k: energies.energy(k) for k in energies.data},
                   f.text("parent", None, optional=True),
                   f.flag("below_resolution", False), f.flag("open_at_end", False))


def channel_from_fields(f: Fields) -> Channel:
    """The :class:`Channel` described by the JSON object ``f`` (a report's channel entry or
    one of a start event's channels), each key checked."""
    return Channel(
        id=f.text("id"), kind=f.choice("kind", KINDS), device=f.text("device", ""),
        source=f.text("source", ""), method=f.choice("method", METHODS, "counter"),
        part_of=f.text("part_of", None, optional=True),
        resolution_s=f.seconds("resolution_s", 0.0),
        meta=f.obj("meta", {}).plain())


_MISSING: Any = object()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """Checked reads of one JSON object of a file (a report, an event): each getter returns the
    value of its key with the type it promises, or raises :class:`ReportError` naming the file
    (``where``), the key (``key`` is the object's own place, e.g. ``channels[2]``) and what is
    expected. A getter's ``default`` is used when the key is absent; without one the key is
    required."""

    def __init__(self, data: Any, where: str, key: str = "") -> None:
        if not isinstance(data, Mapping):
            raise ReportError(f"{where}: {key or 'the top level'} must be a JSON object, got "
                              f"{_show(data)}")
        self.data = data
        self.where = where
        self.key = key

    def name(self, key: str) -> str:
        return key_path(self.key, key)

    def fail(self, key: str, expected: str, value: Any) -> NoReturn:
        raise ReportError(f"{self.where}: {self.name(key)} must be {expected}, got "
                          f"{_show(value)}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise ReportError(f"{self.where}: the key {self.name(key)} is missing")
        return default

    def text(self, key: str, default: Any = _MISSING, *, optional: bool = False) -> Any:
        """A string (or ``None`` when ``optional``)."""
        value = self.get(key, default)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.fail(key, "a string" + (" or null" if optional else ""), value)
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or value not in choices:
            self.fail(key, f"one of {', '.join(choices)}", value)
        return value

    def number(self, key: str, default: Any = _MISSING, *, optional: bool = False,
               minimum: float = -MAX_NUMBER, maximum: float = MAX_NUMBER) -> Any:
        """A finite number within [``minimum``, ``maximum``] as a float (or ``None`` when
        ``optional``); booleans are not numbers."""
        value = self.get(key, default)
        if value is None and optional:
            return None
        expected = (f"a number from {minimum:g} to {maximum:g}"
                    + (" or null" if optional else ""))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, expected, value)
        try:
            number = float(value)
        except OverflowError:
            self.fail(key, expected, value)
        if not (math.isfinite(number) and minimum <= number <= maximum):
            self.fail(key, expected, value)
        return number

    def energy(self, key: str, default: Any = _MISSING) -> float:
        """Joules, at most :data:`MAX_ENERGY_J` either way (a phase of a model can be
        slightly negative)."""
        return self.number(key, default, minimum=-MAX_ENERGY_J, maximum=MAX_ENERGY_J)

    def joules(self, key: str, default: Any = _MISSING) -> float:
        """Cumulative joules (a channel's energy since the run began, the energy at a
        ``log()``): the sampler's rule, :func:`~energymeter.store.readers.check_joules`
        (finite, from 0 to :data:`MAX_ENERGY_J`)."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "a number of joules >= 0", value)
        try:
            return check_joules(value)
        except ValueError:
            self.fail(key, f"a number of joules from 0 to {MAX_ENERGY_J:g}", value)

    def seconds(self, key: str, default: Any = _MISSING, *, signed: bool = False) -> float:
        """A duration or time in seconds, at most :data:`MAX_DURATION_S` (and >= 0 unless
        ``signed``)."""
        return self.number(key, default, minimum=-MAX_DURATION_S if signed else 0.0,
                           maximum=MAX_DURATION_S)

    def timestamp(self, key: str, default: Any = _MISSING) -> datetime:
        """An ISO 8601 time with a time zone."""
        value = self.text(key, default)
        try:
            return parse_timestamp(value)
        except ReportError as exc:
            raise ReportError(f"{self.where}: {self.name(key)}: {exc}") from None

    def integer(self, key: str, default: Any = _MISSING, *, optional: bool = False) -> Any:
        value = self.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
            self.fail(key, "an integer" + (" or null" if optional else ""), value)
        return value

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def obj(self, key: str, default: Any = _MISSING) -> Fields:
        """The JSON object under ``key``, as :class:`Fields`."""
        value = self.get(key, default)
        if not isinstance(value, Mapping):
            self.fail(key, "a JSON object", value)
        return Fields(value, self.where, self.name(key))

    def optional_obj(self, key: str) -> Fields | None:
        """The JSON object under ``key``, or ``None`` when absent or null."""
        if self.get(key, None) is None:
            return None
        return self.obj(key)

    def items(self, key: str, default: Any = _MISSING) -> list[Any]:
        """The JSON list under ``key``."""
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)):
            self.fail(key, "a JSON list", value)
        return list(value)

    def objects(self, key: str, default: Any = _MISSING) -> list[Fields]:
        """The JSON list of objects under ``key``, each as :class:`Fields`."""
        return [Fields(item, self.where, key_path(self.name(key), i))
                for i, item in enumerate(self.items(key, default))]

    def texts(self, key: str, default: Any = _MISSING, *, optional: bool = False) -> Any:
        """A JSON list of strings as a tuple (or ``None`` when ``optional``)."""
        value = self.get(key, default)
        if value is None and optional:
            return None
        if (not isinstance(value, (list, tuple))
                or not all(isinstance(v, str) for v in value)):
            self.fail(key, "a list of strings" + (" or null" if optional else ""), value)
        return tuple(value)

    def plain(self) -> dict[str, Any]:
        """This object as plain, strict JSON data (checked by
        :func:`~energymeter.store.readers.check_plain`)."""
        return dict(check_plain(self.data, self.where, self.key))

    def numbers(self, keys: Iterable[str]) -> None:
        """Check that each of ``keys``, where present, is a number or null (the figures a
        free-form block is rendered and compared by)."""
        for key in keys:
            if key in self.data:
                self.number(key, optional=True)


def read_tags(f: Fields) -> dict[str, Any]:
    """A run's ``tags``: an object whose values are strings, numbers or true/false."""
    tags = f.plain()
    for key, value in tags.items():
        if not isinstance(value, (str, int, float, bool)):
            f.fail(key, "a string, a number or true/false", value)
    return tags


def read_log(f: Fields) -> dict[str, Any]:
    """One ``log()`` entry (of a report's ``logs``, or a ``log`` event without its ``event``
    key): ``t_s``, ``energy_j`` and the user's ``metrics`` object, checked."""
    f.seconds("t_s")
    f.joules("energy_j")
    f.obj("metrics")
    return {k: v for k, v in f.plain().items() if k != "event"}


def parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ReportError(f"timestamp {_show(value)} is not ISO 8601 (e.g. "
                          "2026-11-21T10:00:00+00:00)") from None
    if parsed.tzinfo is None:
        raise ReportError(f"timestamp {_show(value)} has no time zone; reports use UTC")
    return parsed


def baseline_block(baseline: Mapping[str, Any], channels: Sequence[Channel],
                   energy_j: Mapping[str, float], duration_s: float) -> dict[str, Any]:
    """The report's ``baseline``: per channel the gross energy, the idle energy over the same
    duration (baseline power × duration, with its spread) and the net energy (gross − idle);
    totals over the channels in the total; the machine's busy CPU share and each GPU's mean
    utilisation during the baseline, and whether they flagged it (``under_load``), where
    known."""
    power, spread = baseline.get("power_w", {}), baseline.get("power_std_w", {})
    per_channel: dict[str, dict[str, float]] = {}
    totals = {"gross_j": 0.0, "idle_j": 0.0, "net_j": 0.0}
    for c in channels:
        if c.id not in power or c.id not in energy_j:
            continue
        idle = float(power[c.id]) * duration_s
        entry = {"gross_j": energy_j[c.id], "idle_j": idle, "net_j": energy_j[c.id] - idle,
                 "idle_std_j": float(spread.get(c.id, 0.0)) * duration_s}
        per_channel[c.id] = entry
        if c.in_total:
            for key in totals:
                totals[key] += entry[key]
    return {
        "source": baseline.get("source"), "measured_at": baseline.get("measured_at"),
        "duration_s": baseline.get("duration_s"), "windows": baseline.get("windows"),
        "power_w": dict(power), "power_std_w": dict(spread),
        **{k: baseline[k] for k in ("busy_cpu_share", "gpu_utilization_pct", "under_load")
           if k in baseline},
        "channels": per_channel,
        "gross_total_j": totals["gross_j"], "idle_total_j": totals["idle_j"],
        "net_total_j": totals["net_j"],
    }
