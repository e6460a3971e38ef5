"""Reading a run directory's files back: ``events.jsonl`` and ``samples.csv``, tolerating the
torn last line a killed writer leaves, and the one strict JSON loader every reader of a run's
files uses (:func:`parse_json`, :func:`check_plain`).

The rules of what a number of a run may be live here too, below both the sampler (the live
path) and the report's loader (the readback), so that both apply the same ones: the bounds
(:data:`MAX_ENERGY_J`, :data:`MAX_DURATION_S`, :data:`MAX_NUMBER`), cumulative joules
(:func:`check_joules`: finite, >= 0, bounded), gauges (:func:`check_gauge`) and cumulative
energy that never decreases (:class:`NonDecreasing`).

The files are input like any other: they may be damaged (a crash, a full disk, a power loss)
or hostile. Every reader here turns what it cannot use into a
:class:`~energymeter.errors.ReportError` naming the file, the line or key, and what is expected;
lines are read with a bounded length, so a line of a gigabyte costs :data:`MAX_LINE_BYTES` of
memory, not a gigabyte, and is skipped with a message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from ..errors import ReportError

#: The longest line of ``events.jsonl`` or ``samples.csv`` that is read (4 MiB). What the meter
#: writes is far shorter (a start event is a few KB, a sample row a few hundred bytes); a longer
#: line is skipped with a message, reading it in bounded chunks.
MAX_LINE_BYTES = 4 * 2**20
#: How deep JSON values may nest (objects in lists in objects...). Reports nest four levels;
#: a user's logged metrics a few more.
MAX_JSON_DEPTH = 64
#: The most digits of a JSON integer (Python refuses more than 4300 anyway).
MAX_INT_DIGITS = 40

_CHUNK = 2**16

#: Bounds of what a run's files and report may hold, far beyond any real run: reading refuses
#: larger values (sums and ratios of them would become infinite, which JSON cannot hold).
#: 1e18 J is 32 GW for a year; 1e9 s is 31 years.
MAX_ENERGY_J = 1e18
MAX_DURATION_S = 1e9


def mean_power_w(energy_j: float, duration_s: float) -> float:
    """Energy over time; 0 for a span shorter than the monotonic clock's nanosecond (none was
    timed, and a denormal duration would make any energy an infinite power)."""
    return energy_j / duration_s if duration_s >= 1e-9 else 0.0
#: The bound of other numbers of a report (powers, resources, carbon figures, gauges).
MAX_NUMBER = 1e30
#: Gauges whose names end so are amounts (bytes, seconds, percent, MHz, watts): never negative.
NON_NEGATIVE_GAUGE_SUFFIXES = ("_bytes", "_s", "_pct", "_mhz", "_w")

JOULES_ACCEPTED = (f"accepted: a finite number >= 0 of joules (cumulative), at most "
                   f"{MAX_ENERGY_J:g}")


def check_joules(value: Any) -> float:
    """``value`` (a number or a cell's text) as cumulative joules: a finite float from 0 to
    :data:`MAX_ENERGY_J`; ValueError (saying what is accepted) otherwise. The one rule of the
    live sampler (a probe's read) and of every reader of a run (``samples.csv`` cells, report
    energies, a job's ranks)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{_show(value)} is not a number; {JOULES_ACCEPTED}") from None
    if not 0.0 <= number <= MAX_ENERGY_J:  # NaN fails too
        raise ValueError(f"{_show(value)} is out of range; {JOULES_ACCEPTED}")
    return number


def check_gauge(name: str, value: Any) -> float:
    """A gauge's value: a finite float within :data:`MAX_NUMBER` either way, and >= 0 when
    its name says it is an amount (:data:`NON_NEGATIVE_GAUGE_SUFFIXES`); ValueError
    otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"gauge {name}: {_show(value)} is not a number") from None
    low = 0.0 if name.endswith(NON_NEGATIVE_GAUGE_SUFFIXES) else -MAX_NUMBER
    if not low <= number <= MAX_NUMBER:
        raise ValueError(f"gauge {name}: {_show(value)} is out of range (a finite number "
                         f"from {low:g} to {MAX_NUMBER:g})")
    return number


class NonDecreasing:
    """Cumulative joules per channel made non-decreasing, the sampler's rule: a value below
    the channel's previous one counts nothing for that interval (the offset moves by the
    drop), and later increases count from there. ``relative``: the first value of a channel
    is its zero (a probe's reads, since the probe opened); else values count from 0 (the
    energies of ``samples.csv``, since the run began).

    :meth:`add` gives the energies of a read; :attr:`energy` is the latest energy of every
    channel seen; :attr:`drops` counts the drops per channel and :attr:`first_drop` keeps the
    first one's ``(previous, value)`` for :meth:`warnings`."""

    __slots__ = ("_base", "_last", "drops", "energy", "first_drop", "relative")

    def __init__(self, *, relative: bool) -> None:
        self.relative = relative
        self._last: dict[str, float] = {}
        self._base: dict[str, float] = {}
        self.energy: dict[str, float] = {}
        self.drops: dict[str, int] = {}
        self.first_drop: dict[str, tuple[float, float]] = {}

    def add(self, values: Mapping[str, float]
            ) -> tuple[dict[str, float], list[tuple[str, float, float]]]:
        """One read (or row) of cumulative joules per channel, each already checked
        (:func:`check_joules`): ``(energy of each channel in values, drops)`` where a drop is
        ``(channel, previous value, value)``. ValueError, changing nothing, when an energy
        would exceed :data:`MAX_ENERGY_J` (values that keep dropping and rising again)."""
        base = self._base
        moved: dict[str, float] = {}  # offsets this read moves, applied once it is accepted
        energy: dict[str, float] = {}
        drops: list[tuple[str, float, float]] = []
        for cid, joules in values.items():
            last = self._last.get(cid)
            if last is None:
                offset = moved[cid] = joules if self.relative else 0.0
            elif joules < last:
                offset = moved[cid] = base[cid] + (joules - last)  # this interval counts 0
                drops.append((cid, last, joules))
            else:
                offset = base[cid]
            # Never below the last energy: after a drop, value minus the moved offset equals
            # it only up to rounding (a step of 1e-16 J down at 4e16 J).
            energy[cid] = max(joules - offset, self.energy.get(cid, 0.0))
            if not energy[cid] <= MAX_ENERGY_J:
                raise ValueError(f"channel {cid}: {energy[cid]!r} J counted in all (values "
                                 f"that drop and rise again); {JOULES_ACCEPTED}")
        if moved:
            base.update(moved)
        self._last.update(values)
        self.energy.update(energy)
        for cid, last, joules in drops:
            self.drops[cid] = self.drops.get(cid, 0) + 1
            self.first_drop.setdefault(cid, (last, joules))
        return energy, drops

    def warnings(self, where: str) -> list[str]:
        """One message per channel that went backwards in ``where``."""
        return [f"channel {cid} went backwards {n} time(s) in {where} (first "
                f"{self.first_drop[cid][0]!r} -> {self.first_drop[cid][1]!r} J): cumulative "
                "energy never decreases, so those intervals count 0 J"
                for cid, n in self.drops.items()]


def _show(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a hostile value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_path(parent: str, key: Any) -> str:
    """``parent.key`` (``parent[3]`` for a list index), as messages name a value's place."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


class _BadNumber(ValueError):
    pass


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _BadNumber(f"an integer of {digits} digits (at most {MAX_INT_DIGITS} are read)")
    return int(text)


def check_plain(value: Any, where: str, key: str = "") -> Any:
    """``value`` if it is plain, strict JSON data (objects with string keys, lists, strings,
    finite numbers, booleans, null) nested at most :data:`MAX_JSON_DEPTH` deep; else a
    :class:`ReportError` saying ``where`` and at which key. Tuples count as lists."""
    stack: list[tuple[Any, str, int]] = [(value, key, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ReportError(f"{where}: {path or 'the value'} is nested too deep (more than "
                              f"{MAX_JSON_DEPTH} levels of objects and lists)")
        if node is None or isinstance(node, (bool, str, int)):
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                raise ReportError(f"{where}: {path or 'the value'} must be a finite number, got "
                                  f"{node!r} (NaN and infinities are not JSON)")
            continue
        if isinstance(node, Mapping):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise ReportError(f"{where}: {path or 'the top level'} has the key "
                                      f"{_show(k)}; JSON object keys are strings")
                stack.append((v, key_path(path, k), depth + 1))
            continue
        if isinstance(node, (list, tuple)):
            stack.extend((v, key_path(path, i), depth + 1) for i, v in enumerate(node))
            continue
        raise ReportError(f"{where}: {path or 'the value'} must be JSON data (object, list, "
                          f"string, number, true/false or null), got {type(node).__name__}")
    return value


def parse_json(data: bytes | str, where: str) -> Any:
    """Strict JSON from ``data`` (UTF-8 bytes or text), checked by :func:`check_plain`: NaN,
    infinities (``1e309`` too), integers of more than :data:`MAX_INT_DIGITS` digits and deeper
    nesting than :data:`MAX_JSON_DEPTH` are refused with a :class:`ReportError` naming
    ``where``."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as exc:
        raise ReportError(f"{where} is not UTF-8 text (byte {exc.start}: "
                          f"{bytes(data[exc.start:exc.start + 4])!r}); energymeter writes "
                          "UTF-8 JSON") from None
    try:
        value = json.loads(text, parse_int=_parse_int)
    except _BadNumber as exc:
        raise ReportError(f"{where} is not valid JSON for energymeter: {exc}") from None
    except RecursionError:
        raise ReportError(f"{where} is not valid JSON for energymeter: it is nested too deep "
                          f"(at most {MAX_JSON_DEPTH} levels are read)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer Python refuses
        raise ReportError(f"{where} is not valid JSON: {exc}") from None
    return check_plain(value, where)


def _not_found(path: Path) -> NoReturn:
    raise ReportError(f"{path} does not exist: not an energymeter run directory") from None


def _lines(fh: BinaryIO) -> Iterator[tuple[bytes | None, bool]]:
    """Each line of ``fh`` as ``(line without its newline, complete)``, read with a bounded
    length: a line longer than :data:`MAX_LINE_BYTES` is consumed in chunks and given as
    ``(None, complete)``. ``complete`` is False only for a last line with no newline (the
    torn line of a killed writer)."""
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            del line  # drop what was read before reading the rest
            complete = False
            while chunk := fh.readline(_CHUNK):
                if chunk.endswith(b"\n"):
                    complete = True
                    break
            yield None, complete
            continue
        if line.endswith(b"\n"):
            yield line[:-1].rstrip(b"\r"), True
        else:
            yield line, False


def _too_long(path: Path, number: int) -> str:
    return (f"{path} line {number} is longer than {MAX_LINE_BYTES // 2**20} MiB and was "
            "skipped (no line energymeter writes is near that long)")


def iter_events(path: Path, *, skipped: list[str] | None = None
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, event)`` for each event of ``events.jsonl``, read as iterated.

    A last line that cannot be read is dropped (a killed writer tears it; when it is whole yet
    bad, a message says so); a line longer than :data:`MAX_LINE_BYTES` is skipped, read in
    bounded chunks. Messages go to ``skipped`` when given. Any other line that is not a strict
    JSON object is a :class:`ReportError` naming the file and line."""
    path = Path(path)
    bad: ReportError | None = None  # forgiven only if it turns out to be the last line
    bad_whole = False
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        _not_found(path)
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for number, (line, complete) in enumerate(_lines(fh), start=1):
            if line is not None and not line.strip():
                continue
            if bad is not None:
                raise bad
            if line is None:
                if skipped is not None:
                    skipped.append(_too_long(path, number))
                continue
            where = f"{path} line {number}"
            try:
                event = parse_json(line, where)
                if not isinstance(event, dict):
                    raise ReportError(f"{where} must be a JSON object (one event), got "
                                      f"{_show(event)}")
            except ReportError as exc:
                bad, bad_whole = exc, complete
                continue
            yield number, event
    if bad is not None and bad_whole and skipped is not None:
        skipped.append(f"{bad}; it is the last line, skipped")


def read_events(path: Path, *, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The events of ``events.jsonl`` as a list (see :func:`iter_events`)."""
    return [event for _, event in iter_events(path, skipped=skipped)]


class SampleRows:
    """The complete rows of ``samples.csv`` after its header, read as they are iterated (a long
    run's file is never held in memory). A row that is torn (no newline: a killed writer), not
    UTF-8, longer than :data:`MAX_LINE_BYTES` or of another width than the header is skipped
    and counted in :attr:`skipped`."""

    def __init__(self, fh: BinaryIO, width: int) -> None:
        self._fh = fh
        self.width = width
        self.skipped = 0
        self._rows = self._read()

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        return next(self._rows)

    def close(self) -> None:
        self._rows.close()
        self._fh.close()

    def _read(self) -> Iterator[list[str]]:
        with self._fh:
            for line, complete in _lines(self._fh):
                if line is not None and (not complete or not line.strip()):
                    continue  # the torn last row, or a blank line
                try:
                    cells = line.decode("utf-8").split(",") if line is not None else None
                except UnicodeDecodeError:
                    cells = None
                if cells is None or len(cells) != self.width:
                    self.skipped += 1
                    continue
                yield cells


def iter_samples(path: Path) -> tuple[list[str], SampleRows]:
    """Header and the complete rows of ``samples.csv`` (see :class:`SampleRows`).

    Raises :class:`ReportError` when the file is missing, empty, or its header is not one
    (UTF-8, at most :data:`MAX_LINE_BYTES`, beginning with ``t_s``)."""
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by SampleRows, or below on error
    except FileNotFoundError:
        _not_found(path)
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        first = fh.readline(MAX_LINE_BYTES + 1)
        if not first.strip():
            raise ReportError(f"{path} is empty; expected a header line beginning with t_s")
        if len(first) > MAX_LINE_BYTES:
            raise ReportError(f"{path}: the header is longer than "
                              f"{MAX_LINE_BYTES // 2**20} MiB; expected t_s and a few columns")
        try:
            header = first.rstrip(b"\r\n").decode("utf-8").split(",")
        except UnicodeDecodeError:
            raise ReportError(f"{path}: the header is not UTF-8 text; expected t_s, "
                              "<channel>_j columns and gauges") from None
        if header[0] != "t_s":
            raise ReportError(f"{path}: the header begins with {_show(header[0])}; expected "
                              "t_s, then <channel>_j columns and gauges")
    except BaseException:
        fh.close()
        raise
    return header, SampleRows(fh, len(header))


def read_samples(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and complete rows of ``samples.csv`` (a torn last row is dropped)."""
    header, rows = iter_samples(path)
    return header, list(rows)
