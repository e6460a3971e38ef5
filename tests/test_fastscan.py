"""The vectorised scan of a large samples.csv gives the row loop's figures exactly: readable
rows, peak power over the window, gauges, open phases' start energies, the last row."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import energymeter
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
    st.sampled_from(["ok", "ok", "ok", "back", "huge"])),    # row fault
    min_size=1, max_size=120)


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
        cells[1] = "" if power is None else repr(1e19 if fault == "huge" else energy)
        cells[gauge] = "" if value is None else repr(value)
        lines.append(",".join(cells))
    text = "\n".join(lines) + "\n"
    if torn:
        text += "99.0,1"  # a killed writer's torn last row
    (run / "samples.csv").write_text(text)
    slow = rebuild_fields(run, fast_scan_bytes=math.inf)
    fast = rebuild_fields(run, fast_scan_bytes=0)
    assert fast["duration_s"] == slow["duration_s"]
    for a, b in zip(fast["channels"], slow["channels"], strict=True):
        assert a.energy_j == pytest.approx(b.energy_j, rel=1e-12, abs=1e-9)
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
