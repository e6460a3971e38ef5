"""A large ``samples.csv`` read in vectorised chunks (pandas' C parser, NumPy), for rebuilding
a long run that was killed: the same figures as the row-by-row loop of
:func:`energymeter.report.rebuild.rebuild_fields`, about ten times faster, in bounded memory.

The row loop's rules, restated on arrays:

* a row is readable when its ``t_s`` is in ``[0, MAX_DURATION_S]``, every energy value is
  cumulative joules (:func:`~energymeter.store.readers.check_joules`: finite, from 0 to
  ``MAX_ENERGY_J``), every gauge passes :func:`~energymeter.store.readers.check_gauge` (finite,
  within ``±MAX_NUMBER``, >= 0 for amounts), empty cells being missing values, and its ``t_s``
  is not below the last readable row's: since readable times never decrease, that is
  ``t_s >= `` the running maximum of earlier rows that pass the other checks;
* energy that goes back counts nothing for that interval
  (:class:`~energymeter.store.readers.NonDecreasing`): per channel, over its present values
  of readable rows, the drops ``min(0, v_k - v_{k-1})`` are summed in order (``cumsum``, the
  same additions as the loop's) into an offset, and the energy is the value minus the offset,
  never below the energy before it (``maximum.accumulate``: a drop's rounding); drops are
  counted per channel for the same warnings;
* a channel's energy at the end is its last readable value (a row may leave it empty);
* the peak power of a channel: for each readable row ``i``, the row ``s`` the aggregator's
  window starts at is the last row at least ``window_s`` older (``searchsorted``), the first
  row when there is none; the power ``(E_i - E_s) / (t_i - t_s)`` counts when
  ``t_i - t_s >= window_s`` and both values are present. Rows carried between chunks are those
  a later row's window can start at;
* gauges: first, last and largest present value;
* an open phase's start energy: interpolated between the readable rows around its start.

Anything the arrays cannot express the same way returns ``None`` and the row loop reads the
file instead: a cell that is not a number or empty (``nan`` and quoted cells included), a row
of another width than the header (the loop counts it), energy that would exceed
``MAX_ENERGY_J`` after drops (the loop skips that row), a window of 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.readers import NON_NEGATIVE_GAUGE_SUFFIXES, NonDecreasing
from .values import MAX_DURATION_S, MAX_ENERGY_J, MAX_NUMBER

#: Files from this size on are scanned this way (smaller ones: the row loop is fast enough).
FAST_SCAN_BYTES = 32 * 2**20
CHUNK_ROWS = 500_000


@dataclass
class Scan:
    """What the row loop leaves behind: the last readable row's time, each channel's last
    readable energy, counts, the drops (``cumulative``: its ``drops``, ``first_drop`` and
    ``energy``, for its warnings) and the phases' start energies (by position in
    ``waiting``)."""

    t_s: float = 0.0
    energy: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    unreadable: int = 0
    start_energies: dict[int, dict[str, float]] = field(default_factory=dict)
    cumulative: NonDecreasing = field(default_factory=lambda: NonDecreasing(relative=False))


class _Fallback(Exception):
    """The arrays cannot give the row loop's figures: it reads the file."""


class _Counted:
    """A binary file that counts the commas read, and those after the last newline (a torn
    last row's): every complete row of the header's width has ``width - 1`` of them."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.commas = 0
        self.tail_commas = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        if data:
            self.commas += data.count(b",")
            newline = data.rfind(b"\n")
            self.tail_commas = (data.count(b",", newline + 1) if newline >= 0
                                else self.tail_commas + data.count(b","))
        return data

    def __iter__(self) -> Any:
        return iter(self._fh)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class _State:
    """What one chunk leaves to the next."""

    def __init__(self, np: Any, n: int) -> None:
        self.tail_t = np.empty(0)
        self.tail_e = np.empty((0, n))
        self.prev_max = -np.inf
        self.last_t: float | None = None
        self.last_e: Any = None
        self.rows = 0
        self.raw_last = np.full(n, np.nan)  # each channel's last readable value as written
        self.base = np.zeros(n)  # its offset: the drops summed
        self.energy = np.full(n, np.nan)  # its last readable energy
        self.seen: list[int] = []  # channels in the order they first had a value


def _row(ids: Sequence[str], values: Any) -> dict[str, float]:
    import numpy as np

    return {cid: float(v) for cid, v in zip(ids, values, strict=True) if not np.isnan(v)}


def _clear(aggregator: Any) -> None:
    aggregator.peak_power_w.clear()
    aggregator.gauge_first.clear()
    aggregator.gauge_last.clear()
    aggregator.gauge_peak.clear()
    if aggregator.attribution is not None:
        aggregator.attribution.reset()


def scan(path: Path, header: Sequence[str], energy_cols: Mapping[str, int],
         gauge_cols: Mapping[str, int], starts_s: Sequence[float], aggregator: Any
         ) -> Scan | None:
    """Scan ``path`` (its ``header`` already read) into ``aggregator`` (peaks, gauges) and a
    :class:`Scan`; ``starts_s``: the open phases' start times, ascending. ``None`` when this
    file must be read row by row (see the module's description)."""
    try:
        import numpy as np
        import pandas as pd
    except ImportError:
        return None
    window = float(aggregator.window_s)
    if window <= 0 or len(header) < 2:
        return None
    ids, gnames = list(energy_cols), list(gauge_cols)
    cols = [0, *energy_cols.values(), *gauge_cols.values()]
    names = [header[i] for i in cols]
    low = np.array([0.0 if g.endswith(NON_NEGATIVE_GAUGE_SUFFIXES) else -MAX_NUMBER
                    for g in gnames])
    out = Scan()
    state = _State(np, len(ids))
    waiting = list(enumerate(starts_s))
    try:
        with open(path, "rb") as raw:
            raw.seek(0, 2)
            size = raw.tell()
            torn = False
            if size:
                raw.seek(size - 1)
                torn = raw.read(1) != b"\n"
            raw.seek(0)
            fh = _Counted(raw)
            # Only an empty cell is a missing value ("nan" is damage, as for the loop); quotes
            # are text (the loop does not strip them); a row too wide is an error: each of
            # these makes the loop read the file.
            reader = pd.read_csv(fh, usecols=cols, dtype=np.float64, chunksize=CHUNK_ROWS,
                                 engine="c", on_bad_lines="error", skip_blank_lines=True,
                                 keep_default_na=False, na_values=[""], quoting=3,
                                 encoding="utf-8")
            for frame in _chunks(reader, torn):
                state.rows += len(frame)
                _chunk(frame, names, header, energy_cols, gauge_cols, ids, gnames, low,
                       window, aggregator, out, state, waiting)
            # A row narrower than the header (pandas fills it up) is one the loop skips.
            if fh.commas != (len(header) - 1) * (1 + state.rows) + (
                    fh.tail_commas if torn else 0):
                raise _Fallback
    except (ValueError, _Fallback, pd.errors.ParserError):
        _clear(aggregator)  # the row loop reads the file, from a clean aggregator
        return None
    if state.last_t is not None:
        out.t_s = state.last_t
    out.energy = {ids[c]: float(state.energy[c]) for c in state.seen}
    out.cumulative.energy.update(out.energy)
    return out


def _nondecreasing(ev: Any, ids: list[str], state: _State, out: Scan) -> Any:
    """The energies of the readable rows ``ev`` (values as written) with drops counting 0,
    as :class:`~energymeter.store.readers.NonDecreasing` gives them row by row."""
    import numpy as np

    adjusted = np.full_like(ev, np.nan)
    firsts: list[tuple[int, int, float, float]] = []  # (row, channel, previous, value)
    appeared: list[tuple[int, int]] = []
    for c, cid in enumerate(ids):
        column = ev[:, c]
        present = np.flatnonzero(~np.isnan(column))
        if not len(present):
            continue
        values = column[present]
        previous = np.empty_like(values)
        previous[0] = state.raw_last[c]
        previous[1:] = values[:-1]
        with np.errstate(invalid="ignore"):
            step = values - previous  # NaN for a channel's first value: no drop
            drop = step < 0
        offsets = np.cumsum(np.concatenate(([state.base[c]], np.where(drop, step, 0.0))))[1:]
        # Never below the last energy (NonDecreasing's clamp of a drop's rounding).
        floor = 0.0 if np.isnan(state.energy[c]) else state.energy[c]
        energy = np.maximum.accumulate(np.concatenate(([floor], values - offsets)))[1:]
        if not energy.max() <= MAX_ENERGY_J:  # the loop skips such a row: it reads the file
            raise _Fallback
        adjusted[present, c] = energy
        if np.isnan(state.raw_last[c]):
            appeared.append((int(present[0]), c))
        state.raw_last[c], state.base[c], state.energy[c] = values[-1], offsets[-1], energy[-1]
        n = int(np.count_nonzero(drop))
        if n:
            if cid in out.cumulative.drops:
                out.cumulative.drops[cid] += n
            else:
                i = int(np.argmax(drop))
                firsts.append((int(present[i]), c, float(previous[i]), float(values[i])))
                out.cumulative.drops[cid] = n  # ordered below
    for _, c, before, value in sorted(firsts):  # the loop's order: by row, then column
        cid = ids[c]
        out.cumulative.drops[cid] = out.cumulative.drops.pop(cid)
        out.cumulative.first_drop[cid] = (before, value)
    state.seen += [c for _, c in sorted(appeared)]
    return adjusted


def _chunk(frame: Any, names: Sequence[str], header: Sequence[str],
           energy_cols: Mapping[str, int], gauge_cols: Mapping[str, int], ids: list[str],
           gnames: list[str], low: Any, window: float, aggregator: Any, out: Scan,
           state: _State, waiting: list[tuple[int, float]]) -> None:
    """One chunk into ``aggregator``, ``out`` and ``state``."""
    t = frame[names[0]].to_numpy()
    e = frame[[header[i] for i in energy_cols.values()]].to_numpy().reshape(len(t), -1)
    g = frame[[header[i] for i in gauge_cols.values()]].to_numpy().reshape(len(t), -1)
    valid, state.prev_max = _readable(t, e, g, low, state.prev_max)
    tv, gv = t[valid], g[valid]
    out.samples += len(tv)
    out.unreadable += len(t) - len(tv)
    if not len(tv):
        return
    ev = _nondecreasing(e[valid], ids, state, out)
    _start_energies(tv, ev, ids, state, waiting, out)
    _peak_powers(tv, ev, ids, window, state, aggregator.peak_power_w)
    _attribute(gv, ev, ids, gnames, aggregator)
    _gauges(gv, gnames, aggregator)
    state.last_t, state.last_e = float(tv[-1]), ev[-1]


def _readable(t: Any, e: Any, g: Any, low: Any, prev_max: float) -> tuple[Any, float]:
    """Which rows of times ``t``, energies ``e`` and gauges ``g`` are readable (the row
    loop's checks, NaN being an empty cell; ``low``: each gauge's least value), and the
    largest time of the rows that pass the checks other than order, this chunk's and before
    it (``prev_max``): a row is in order when its time is not below that of any earlier one."""
    import numpy as np

    with np.errstate(invalid="ignore"):
        ok = (t >= 0) & (t <= MAX_DURATION_S)
        ok &= np.all(np.isnan(e) | ((e >= 0) & (e <= MAX_ENERGY_J)), axis=1)
        ok &= np.all(np.isnan(g) | ((g >= low) & (g <= MAX_NUMBER)), axis=1)
    if not len(t):
        return ok, prev_max
    running = np.maximum.accumulate(np.where(ok, t, -np.inf))
    before = np.maximum(np.concatenate(([prev_max], running[:-1])), prev_max)
    return ok & (t >= before), max(prev_max, float(running[-1]))


def _start_energies(tv: Any, ev: Any, ids: list[str], state: _State,
                    waiting: list[tuple[int, float]], out: Scan) -> None:
    """The start energies of the open phases starting within this chunk (times ``tv``,
    energies ``ev``): interpolated between the rows around them (the previous chunk's last
    row for one before the first)."""
    import numpy as np

    last_t, last_e = state.last_t, state.last_e
    while waiting and waiting[0][1] <= tv[-1]:
        index, start_s = waiting.pop(0)
        j = int(np.searchsorted(tv, start_s, side="left"))
        after = (float(tv[j]), _row(ids, ev[j]))
        prev = ((float(tv[j - 1]), _row(ids, ev[j - 1])) if j > 0 else
                (last_t, _row(ids, last_e)) if last_t is not None else None)
        out.start_energies[index] = interpolate(prev, after, start_s)


def _window_starts(all_t: Any, first: int, window: float) -> tuple[Any, Any]:
    """For each row from ``first`` on, of times ``all_t`` (ascending), the row its power
    window starts at: the last at least ``window`` older, else row 0; and whether that window
    counts (it starts at an earlier row and spans ``window`` or more)."""
    import numpy as np

    k = np.searchsorted(all_t, all_t[first:] - window, side="right")
    s = np.maximum(k - 1, 0)
    use = (s < np.arange(first, len(all_t))) & (all_t[first:] - all_t[s] >= window)
    return s, use


def _peak_powers(tv: Any, ev: Any, ids: list[str], window: float, state: _State,
                 peaks: dict[str, float]) -> None:
    """Each channel's peak power over the aggregator's window into ``peaks``, from this
    chunk's rows and those carried from earlier ones; then carry the rows a later row's
    window can start at."""
    import numpy as np

    all_t = np.concatenate((state.tail_t, tv))
    all_e = np.concatenate((state.tail_e, ev))
    first = len(state.tail_t)
    s, use = _window_starts(all_t, first, window)
    if np.any(use):
        dt = all_t[first:] - all_t[s]
        with np.errstate(invalid="ignore", divide="ignore"):
            power = (all_e[first:][use] - all_e[s[use]]) / dt[use][:, None]
        for c, cid in enumerate(ids):
            column = power[:, c]
            column = column[~np.isnan(column)]
            if len(column):
                top = float(column.max())
                if top > peaks.get(cid, float("-inf")):
                    peaks[cid] = top
    keep = max(int(np.searchsorted(all_t, all_t[-1] - window, side="right")) - 1, 0)
    state.tail_t, state.tail_e = all_t[keep:], all_e[keep:]


def _attribute(gv: Any, ev: Any, ids: list[str], gnames: list[str], aggregator: Any) -> None:
    """The run's own share, read by read where gauges were read (one in ten rows or fewer)."""
    import numpy as np

    if aggregator.attribution is not None and len(gnames):
        has = ~np.all(np.isnan(gv), axis=1)
        for j in np.flatnonzero(has):
            aggregator.attribution.add(
                _row(ids, ev[j]),
                {name: float(v) for name, v in zip(gnames, gv[j], strict=True) if v == v})


def _gauges(gv: Any, gnames: list[str], aggregator: Any) -> None:
    """Each gauge's first, last and peak present values into ``aggregator``."""
    import numpy as np

    for c, name in enumerate(gnames):
        column = gv[:, c]
        present = column[~np.isnan(column)]
        if not len(present):
            continue
        if name not in aggregator.gauge_first:
            aggregator.gauge_first[name] = float(present[0])
        aggregator.gauge_last[name] = float(present[-1])
        top = float(present.max())
        if top > aggregator.gauge_peak.get(name, float("-inf")):
            aggregator.gauge_peak[name] = top


def interpolate(before: tuple[float, Mapping[str, float]] | None,
                after: tuple[float, Mapping[str, float]], t_s: float) -> dict[str, float]:
    """Cumulative joules at ``t_s`` between the rows ``before`` and ``after`` (linear)."""
    t1, e1 = after
    if before is None or t1 <= before[0]:
        return dict(e1)
    t0, e0 = before
    share = min(1.0, max(0.0, (t_s - t0) / (t1 - t0)))
    return {cid: e0[cid] + (e1[cid] - e0[cid]) * share if cid in e0 else e1[cid]
            for cid in e1}


def _chunks(reader: Any, torn: bool) -> Any:
    """The reader's chunks, columns named as in the header, without a torn last row."""
    pending = None
    for frame in reader:
        if pending is not None:
            yield pending
        pending = frame
    if pending is not None:
        if torn and len(pending):
            pending = pending.iloc[:-1]
        yield pending
