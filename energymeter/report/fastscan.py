"""A large ``samples.csv`` read in vectorised chunks (pandas' C parser, NumPy), for rebuilding
a long run that was killed: the same figures as the row-by-row loop of
:func:`energymeter.report.rebuild.rebuild_fields`, about ten times faster, in bounded memory.

The row loop's rules, restated on arrays:

* a row is readable when its ``t_s`` is in ``[0, MAX_DURATION_S]``, every energy value within
  ``±MAX_ENERGY_J`` and every gauge within ``±MAX_NUMBER`` (empty cells are missing values), and
  its ``t_s`` is not below the last readable row's: since readable times never decrease, that
  is ``t_s >= `` the running maximum of earlier rows that pass the other checks;
* the peak power of a channel: for each readable row ``i``, the row ``s`` the aggregator's
  window starts at is the last row at least ``window_s`` older (``searchsorted``), the first
  row when there is none; the power ``(E_i - E_s) / (t_i - t_s)`` counts when
  ``t_i - t_s >= window_s`` and both values are present. Rows carried between chunks are those
  a later row's window can start at;
* gauges: first, last and largest present value;
* an open phase's start energy: interpolated between the readable rows around its start.

Anything the arrays cannot express the same way (a cell that is not a number, a window of 0)
returns ``None`` and the row loop reads the file instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .values import MAX_DURATION_S, MAX_ENERGY_J, MAX_NUMBER

#: Files from this size on are scanned this way (smaller ones: the row loop is fast enough).
FAST_SCAN_BYTES = 32 * 2**20
CHUNK_ROWS = 500_000


@dataclass
class Scan:
    """What the row loop leaves behind: the last readable row, counts, and the phases' start
    energies (by position in ``waiting``)."""

    t_s: float = 0.0
    energy: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    unreadable: int = 0
    start_energies: dict[int, dict[str, float]] = field(default_factory=dict)


def _row(ids: Sequence[str], values: Any) -> dict[str, float]:
    import numpy as np

    return {cid: float(v) for cid, v in zip(ids, values, strict=True) if not np.isnan(v)}


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
    if window <= 0:
        return None
    ids, gnames = list(energy_cols), list(gauge_cols)
    cols = [0, *energy_cols.values(), *gauge_cols.values()]
    names = [header[i] for i in cols]
    # A cell that is not a number fails the whole file over to the row loop: a fast read
    # of a file whose every cell is a number or empty is the common case.
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        torn = False
        if size:
            fh.seek(size - 1)
            torn = fh.read(1) != b"\n"
    out = Scan()
    state: tuple = (np.empty(0), np.empty((0, len(ids))), -np.inf, None, None)
    waiting = list(enumerate(starts_s))
    try:
        reader = pd.read_csv(path, usecols=cols, dtype=np.float64, chunksize=CHUNK_ROWS,
                             engine="c", on_bad_lines="skip",
                             skip_blank_lines=True)
        for frame in _chunks(reader, torn):
            state = _chunk(frame, names, header, energy_cols, gauge_cols, ids, gnames, window,
                           aggregator, out, state, waiting)
    except (ValueError, pd.errors.ParserError):
        # A cell that is not a number: the row loop reads the file (from a clean aggregator).
        aggregator.peak_power_w.clear()
        aggregator.gauge_first.clear()
        aggregator.gauge_last.clear()
        aggregator.gauge_peak.clear()
        return None
    last_t, last_e = state[3], state[4]
    if last_t is not None:
        out.t_s, out.energy = last_t, _row(ids, last_e)
    return out


def _chunk(frame: Any, names: Sequence[str], header: Sequence[str],
           energy_cols: Mapping[str, int], gauge_cols: Mapping[str, int], ids: list[str],
           gnames: list[str], window: float, aggregator: Any, out: Scan, state: tuple,
           waiting: list[tuple[int, float]]) -> tuple:
    """One chunk into ``aggregator`` and ``out``; ``state``: (tail times, tail energies,
    running maximum time, last readable time, last readable energies)."""
    import numpy as np

    tail_t, tail_e, prev_max, last_t, last_e = state
    t = frame[names[0]].to_numpy()
    e = frame[[header[i] for i in energy_cols.values()]].to_numpy().reshape(len(t), -1)
    g = frame[[header[i] for i in gauge_cols.values()]].to_numpy().reshape(len(t), -1)
    with np.errstate(invalid="ignore"):
        ok = (t >= 0) & (t <= MAX_DURATION_S)
        ok &= np.all(np.isnan(e) | (np.abs(e) <= MAX_ENERGY_J), axis=1)
        ok &= np.all(np.isnan(g) | (np.abs(g) <= MAX_NUMBER), axis=1)
    running = np.maximum.accumulate(np.where(ok, t, -np.inf)) if len(t) else t
    before = np.concatenate(([prev_max], running[:-1])) if len(t) else running
    before = np.maximum(before, prev_max)
    valid = ok & (t >= before)
    if len(t):
        prev_max = max(prev_max, float(running[-1]))
    tv, ev, gv = t[valid], e[valid], g[valid]
    out.samples += len(tv)
    out.unreadable += len(t) - len(tv)
    if not len(tv):
        return (tail_t, tail_e, prev_max, last_t, last_e)
    # Open phases starting within this chunk: interpolate between the rows around them.
    while waiting and waiting[0][1] <= tv[-1]:
        index, start_s = waiting.pop(0)
        j = int(np.searchsorted(tv, start_s, side="left"))
        after = (float(tv[j]), _row(ids, ev[j]))
        prev = ((float(tv[j - 1]), _row(ids, ev[j - 1])) if j > 0 else
                (last_t, _row(ids, last_e)) if last_t is not None else None)
        out.start_energies[index] = interpolate(prev, after, start_s)
    # Peak power over the aggregator's window.
    all_t = np.concatenate((tail_t, tv))
    all_e = np.concatenate((tail_e, ev))
    first = len(tail_t)
    idx = np.arange(first, len(all_t))
    k = np.searchsorted(all_t, all_t[first:] - window, side="right")
    s = np.maximum(k - 1, 0)
    dt = all_t[first:] - all_t[s]
    use = (s < idx) & (dt >= window)
    if np.any(use):
        with np.errstate(invalid="ignore", divide="ignore"):
            power = (all_e[first:][use] - all_e[s[use]]) / dt[use][:, None]
        peaks = aggregator.peak_power_w
        for c, cid in enumerate(ids):
            column = power[:, c]
            column = column[~np.isnan(column)]
            if len(column):
                top = float(column.max())
                if top > peaks.get(cid, float("-inf")):
                    peaks[cid] = top
    keep = max(int(np.searchsorted(all_t, all_t[-1] - window, side="right")) - 1, 0)
    tail_t, tail_e = all_t[keep:], all_e[keep:]
    # Gauges: first, last and peak present values.
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
    return (tail_t, tail_e, prev_max, float(tv[-1]), ev[-1])


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
