"""The vectorised scan of a large samples.csv gives the row loop's figures exactly: readable
rows (cells checked as the sampler checks them: cumulative joules >= 0, gauges), energy going
back counting nothing, peak power over the window, gauges, open phases' start energies, each
channel's last readable energy, the same warnings."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import energymeter
from energymeter.report import rebuild
from energymeter.report.rebuild import rebuild_fields

pytest.importorskip("pandas")


def _killed_run(tmp_path: Path) -> Path:
    with energymeter.measure("killed", out=tmp_path / "runs", region="SE",
                             cpu_tdp_w=10.0, interval_s=0.05) as m, m.phase("open-later"):
        time.sleep(0.05)
    path = m.report.path
    (path / "report.json").unlink()
    # Keep the start event and an unfinished phase; drop the stop event (killed).
    lines = (path / "events.jsonl").read_text().splitlines()
    keep = [line for line in lines if '"event": "stop"' not in line
            and '"event": "phase",' not in line]
    (path / "events.jsonl").write_text("\n".join(keep) + "\n")
    return path


rows = st.lists(st.tuples(
    st.floats(0, 0.3),                                        # time step
    st.one_of(st.none(), st.floats(0, 50)),                  # power of cpu0 (None: empty)
    st.one_of(st.none(), st.floats(0, 1e9)),                 # a gauge (None: empty)
    st.sampled_from(["ok", "ok", "ok", "back", "huge", "negative", "inf", "drop", "drop",
                     "negative gauge", "empty"])),               # row fault
    min_size=1, max_size=120)
#: The energy cell of a faulty row (``energy``: the channel's cumulative joules by then).
FAULTS = {"huge": lambda energy: repr(1e19), "negative": lambda energy: repr(-energy - 1.0),
          "inf": lambda energy: "inf", "drop": lambda energy: repr(energy / 2),
          "empty": lambda energy: ""}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, torn=st.booleans())
def test_fast_scan_equals_the_row_loop(tmp_path: Path, rows: list, torn: bool) -> None:
    run = _killed_run(tmp_path / str(abs(hash((tuple(rows), torn)))))
    header = (run / "samples.csv").read_text().splitlines()[0].split(",")
    width = len(header)
    gauge = header.index("rss_bytes")
    lines, t, energy = [",".join(header)], 0.0, 0.0
    for step, power, value, fault in rows:
        t += step
        if power is not None:
            energy += power * step
        cells = [""] * width
        cells[0] = f"{t - 5.0 if fault == 'back' else t:.6f}"
        cells[1] = ("" if power is None else FAULTS[fault](energy) if fault in FAULTS
                    else repr(energy))
        cells[gauge] = ("" if value is None else
                        repr(-value - 1.0 if fault == "negative gauge" else value))
        lines.append(",".join(cells))
    text = "\n".join(lines) + "\n"
    if torn:
        text += "99.0,1"  # a killed writer's torn last row
    (run / "samples.csv").write_text(text)
    _same(run)


def _same(run: Path) -> None:
    """The row loop and the fast scan give the same report fields for ``run``."""
    slow = rebuild_fields(run, fast_scan_bytes=math.inf)
    fast = rebuild_fields(run, fast_scan_bytes=0)
    assert fast["duration_s"] == slow["duration_s"]
    for a, b in zip(fast["channels"], slow["channels"], strict=True):
        assert a.energy_j == b.energy_j  # the same additions, in the same order
        assert a.peak_power_w == pytest.approx(b.peak_power_w, rel=1e-9, abs=1e-12) \
            if b.peak_power_w is not None else a.peak_power_w is None
    assert fast["resources"] == slow["resources"]
    assert [(p.name, p.start_s) for p in fast["phases"]] == \
        [(p.name, p.start_s) for p in slow["phases"]]
    for a, b in zip(fast["phases"], slow["phases"], strict=True):
        assert a.energy_by_channel.keys() == b.energy_by_channel.keys()
        for cid, joules in b.energy_by_channel.items():
            assert a.energy_by_channel[cid] == pytest.approx(joules, rel=1e-9, abs=1e-9)
    assert fast["overhead"] == slow["overhead"]
    assert fast["warnings"] == slow["warnings"]


def _spy(monkeypatch: pytest.MonkeyPatch) -> list:
    """The fast scan's results (``None``: it handed the file to the row loop)."""
    results: list = []

    def spy(*args: object) -> object:
        results.append(rebuild.fast_scan.__wrapped__(*args))  # type: ignore[attr-defined]
        return results[-1]

    spy.__wrapped__ = rebuild.fast_scan  # type: ignore[attr-defined]
    monkeypatch.setattr(rebuild, "fast_scan", spy)
    return results


def _rewrite(run: Path, rows: list[str]) -> list[str]:
    header = (run / "samples.csv").read_text().splitlines()[0]
    width = header.count(",") + 1
    gauge = header.split(",").index("rss_bytes")
    lines = [header]
    for row in rows:
        t, joules, rss = row.split(";")
        cells = [""] * width
        cells[0], cells[1], cells[gauge] = t, joules, rss
        lines.append(",".join(cells))
    (run / "samples.csv").write_text("\n".join(lines) + "\n")
    return lines


def test_fast_scan_checks_cells_and_drops_as_the_loop_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative, non-finite and huge cells skip their row, energy going back counts 0 J, an
    empty last cell keeps the channel's last value: vectorised, with the loop's figures and
    warnings (the scan used to accept -5 J and 1e19 J's negative twin, and count drops)."""
    run = _killed_run(tmp_path)
    _rewrite(run, ["0.0;0.0;100", "0.1;10.0;", "0.2;-5.0;", "0.3;20.0;-1", "0.4;inf;",
                   "0.5;-inf;", "0.6;1e19;", "0.7;-1e19;", "0.8;30.0;300", "0.9;5.0;",
                   "1.0;15.0;", "1.1;2.0;", "1.2;12.0;250", "1.3;;"])
    results = _spy(monkeypatch)
    _same(run)
    fast = rebuild_fields(run, fast_scan_bytes=0)
    assert results and results[-1] is not None  # vectorised, not handed to the loop
    # 0, 10, 20, 30, back to 5 (0 J), +10, back to 2 (0 J), +10: 50 J, though the last row
    # has no value for the channel.
    assert fast["channels"][0].energy_j == 50.0
    assert fast["duration_s"] == 1.3
    assert "6 unreadable row(s) of samples.csv skipped" in fast["warnings"]
    assert any("went backwards 2 time(s) in samples.csv (first 30.0 -> 5.0 J)" in w
               for w in fast["warnings"])
    assert fast["resources"]["peak_rss_bytes"] == 300
    assert fast["overhead"]["samples"] == 8


@pytest.mark.parametrize("damage", ["nan", "NA", '"5.0"', "short", "wide", "bad total"])
def test_what_the_arrays_cannot_tell_goes_to_the_row_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    """A cell pandas would read otherwise than ``float()`` ("nan", "NA", a quoted number), a
    row narrower or wider than the header (pandas would fill it up or drop it uncounted),
    drops and rises past the energy bound: the row loop reads the file, same figures."""
    run = _killed_run(tmp_path)
    rows = ["0.0;0.0;100", "0.1;10.0;", "0.2;20.0;", "0.3;30.0;"]
    if damage == "bad total":
        rows += ["0.4;1e18;", "0.5;0.0;", "0.6;1e18;"]  # the last would count 2e18 J
    elif damage in ("short", "wide"):
        rows.append("0.4;40.0;")
    else:
        rows.append(f"0.4;{damage};")
    lines = _rewrite(run, rows)
    if damage == "short":
        lines[-1] = "0.45,45.0"
    elif damage == "wide":
        lines[-1] += ",1"
    if damage in ("short", "wide"):
        lines.append(lines[-2].replace("0.3", "0.5", 1))
        (run / "samples.csv").write_text("\n".join(lines) + "\n")
    results = _spy(monkeypatch)
    _same(run)
    assert results == [None]
    fast = rebuild_fields(run, fast_scan_bytes=0)
    assert "1 unreadable row(s) of samples.csv skipped" in fast["warnings"]
