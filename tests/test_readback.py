"""Every number read back is checked as strictly as on the way in.

The sampler refuses a probe's energy that is not a finite number >= 0 of joules and counts
nothing for an interval where a channel goes back. A run rebuilt from ``samples.csv``, a
``report.json``, the events of a run, ``report --save`` and a job merged from its ranks apply
the same rules (``store.readers.check_joules``, ``NonDecreasing``): a negative, non-finite or
huge energy never reaches a report, a saved file or a job's total.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energymeter.analysis import find_runs, merge
from energymeter.errors import ReportError
from energymeter.report import Report
from energymeter.report.rebuild import save_rebuilt
from energymeter.report.samples import iter_energy, timeline
from energymeter.store.readers import (
    MAX_ENERGY_J,
    NonDecreasing,
    check_gauge,
    check_joules,
)
from tests.test_hostile_input import SAMPLES, START, check_accepted, write_run
from tests.test_report import make_report

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SKIPPED_1 = "1 unreadable row(s) of samples.csv skipped"


def _samples(*rows: str) -> str:
    return SAMPLES + "".join(f"{row}\n" for row in rows)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "energymeter", *args], env=env,
                          capture_output=True, text=True, timeout=120)


# -- the shared rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.0, "12.5", 1e18, " 3"])
def test_check_joules_accepts_cumulative_joules(value: Any) -> None:
    assert check_joules(value) == float(value)


@pytest.mark.parametrize("value", [-1e-9, -5, "-1e9", math.nan, math.inf, "inf", "nan",
                                   1.0000001e18, "1e309", "abc", "", None, [1]])
def test_check_joules_refuses_what_the_sampler_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="finite number >= 0 of joules"):
        check_joules(value)


def test_check_gauge_amounts_are_never_negative() -> None:
    assert check_gauge("rss_bytes", "100") == 100.0
    assert check_gauge("temperature_c", -5) == -5.0  # not an amount
    for name, value in (("rss_bytes", -1), ("cpu_time_s", "-0.5"), ("utilization_pct", "nan"),
                        ("temperature_c", "inf"), ("read_bytes", 1e31)):
        with pytest.raises(ValueError, match=f"gauge {name}"):
            check_gauge(name, value)


def test_non_decreasing_is_the_samplers_rule() -> None:
    live = NonDecreasing(relative=True)  # a probe's reads: the first is its zero
    assert [live.add({"c": v})[0]["c"] for v in (100.0, 130.0, 110.0, 150.0)] == \
        [0.0, 30.0, 30.0, 70.0]
    back = NonDecreasing(relative=False)  # samples.csv: energies since the run began
    energies, drops = [], []
    for v in (0.0, 20.0, 40.0, 10.0, 30.0, 5.0):
        e, d = back.add({"c": v})
        energies.append(e["c"])
        drops += d
    assert energies == [0.0, 20.0, 40.0, 40.0, 60.0, 60.0]
    assert drops == [("c", 40.0, 10.0), ("c", 30.0, 5.0)]
    [message] = back.warnings("samples.csv")
    assert "channel c went backwards 2 time(s) in samples.csv (first 40.0 -> 10.0 J)" in message


def test_non_decreasing_refuses_a_total_past_the_bound_and_changes_nothing() -> None:
    acc = NonDecreasing(relative=False)
    acc.add({"a": 1e18, "b": 1.0})
    acc.add({"a": 0.0, "b": 2.0})
    with pytest.raises(ValueError, match="counted in all"):
        acc.add({"b": 3.0, "a": 1e18})  # would be 2e18 J
    assert acc.energy == {"a": 1e18, "b": 2.0}
    assert acc.add({"b": 4.0})[0] == {"b": 4.0}


# -- samples.csv --------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["-5.0", "-1e9", "-0.0001", "inf", "nan", "1e19", "-1e300"])
def test_a_sample_cell_that_is_not_cumulative_joules_skips_its_row(tmp_path: Path,
                                                                   cell: str) -> None:
    report = Report.load(write_run(tmp_path / "run", samples=_samples(f"1.5,{cell},")))
    check_accepted(report)
    assert report.channels[0].energy_j == 40.0 and report.duration_s == 1.0
    assert SKIPPED_1 in report.warnings
    assert all(e >= 0 for _, e in report.energy_j["by_kind"].items())


def test_bad_rows_are_counted_in_one_warning(tmp_path: Path) -> None:
    report = Report.load(write_run(tmp_path / "run", samples=_samples(
        "1.1,-1.0,", "1.2,nan,", "1.3,50.0,-7", "1.4,1e19,", "1.5,60.0,")))
    assert report.channels[0].energy_j == 60.0 and report.duration_s == 1.5
    assert [w for w in report.warnings if "unreadable" in w] == \
        ["4 unreadable row(s) of samples.csv skipped"]


def test_energy_going_back_counts_nothing_for_that_interval(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", samples=_samples("1.5,10.0,", "2.0,30.0,",
                                                           "2.5,25.0,"))
    report = Report.load(run_dir)
    check_accepted(report)
    # 0, 20, 40, then back to 10 (counts 0), +20, back to 25 (counts 0): 60 J, not 25 J.
    assert report.channels[0].energy_j == 60.0
    assert any("channel cpu0 went backwards 2 time(s) in samples.csv (first 40.0 -> 10.0 J)"
               in w for w in report.warnings)
    # The timeline (plots, to_dataframe) reads the same rows the same way.
    assert [e["cpu0"] for _, e in iter_energy(report)] == [0.0, 20.0, 40.0, 40.0, 60.0, 60.0]
    assert all(p >= 0 for p in timeline(report).power_w["cpu0"])


def test_the_timeline_skips_rows_the_rebuild_skips(tmp_path: Path) -> None:
    report = Report.load(write_run(tmp_path / "run", samples=_samples(
        "1.5,-1e9,", "1.6,inf,", "1.7,1e19,", "2.0,50.0,")))
    assert [t for t, _ in iter_energy(report)] == [0.0, 0.5, 1.0, 2.0]
    assert all(math.isfinite(p) and p >= 0 for p in timeline(report).power_w["cpu0"])


def test_a_negative_amount_gauge_skips_its_row(tmp_path: Path) -> None:
    report = Report.load(write_run(tmp_path / "run", samples=_samples("1.5,50.0,-100")))
    assert report.channels[0].energy_j == 40.0 and SKIPPED_1 in report.warnings
    assert report.resources["peak_rss_bytes"] == 200


# -- events.jsonl and report.json ---------------------------------------------------------------
@pytest.mark.parametrize("event, needle", [
    ({"event": "log", "t_s": 0.5, "energy_j": -3.0, "metrics": {"loss": 1}}, "energy_j"),
    ({"event": "count", "items": -10}, "items"),
    ({"event": "count", "items": 1e31}, "items"),
])
def test_negative_event_values_are_report_errors(tmp_path: Path, event: dict,
                                                 needle: str) -> None:
    run_dir = write_run(tmp_path / "run", [START, event])
    with pytest.raises(ReportError, match=f"events.jsonl line 2: {needle} must be"):
        Report.load(run_dir)


@pytest.mark.parametrize("baseline", [
    {"power_w": {"cpu0": -4.0}}, {"power_w": {"cpu0": "abc"}}, {"power_w": [1]},
    {"power_w": {"cpu0": 4.0}, "power_std_w": {"cpu0": None}},
])
def test_a_bad_recorded_baseline_is_a_report_error(tmp_path: Path, baseline: dict) -> None:
    run_dir = write_run(tmp_path / "run", [{**START, "baseline": baseline}])
    with pytest.raises(ReportError, match="events.jsonl line 1: baseline.power"):
        Report.load(run_dir)


def test_a_good_recorded_baseline_is_kept(tmp_path: Path) -> None:
    baseline = {"power_w": {"cpu0": 4.0}, "power_std_w": {"cpu0": 0.5}, "source": "x"}
    report = Report.load(write_run(tmp_path / "run", [{**START, "baseline": baseline}]))
    assert report.baseline is not None and report.baseline["channels"]["cpu0"]["idle_j"] == 4.0


@pytest.mark.parametrize("key, value", [("channels", -5.0), ("logs", -1.0)])
def test_negative_energies_in_report_json_are_refused(tmp_path: Path, key: str,
                                                      value: float) -> None:
    data = json.loads(make_report().to_json())
    data[key][0]["energy_j"] = value
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match=rf"{key}\[0\]\.energy_j must be a number of joules"):
        Report.load(tmp_path / "report.json")


# -- report --save --------------------------------------------------------------------------------
def test_report_save_writes_only_checked_figures(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "out" / "run",
                        samples=_samples("1.5,-1e9,", "2.0,10.0,", "2.5,-3,"))
    out = _cli("report", "--save", "--format", "json", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert "saved" in out.stderr
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["energy_j"]["total"] == 40.0  # 0, 20, 40, back to 10: counts nothing
    assert Report.load(run_dir).total_energy_j == 40.0
    ledger = (tmp_path / "out" / "runs.csv").read_text()
    assert "-1" not in ledger.split("\n")[1].split(",")[6]  # energy_total_j


def test_save_rebuilt_never_writes_what_load_refuses(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "out" / "run")
    report = Report.load(run_dir)
    bad = dataclasses.replace(report, channels=(dataclasses.replace(report.channels[0],
                                                                    energy_j=-1e9),))
    with pytest.raises(ReportError, match="would not load back, so it is not saved"):
        save_rebuilt(bad)
    assert not (run_dir / "report.json").exists()
    assert not (tmp_path / "out" / "runs.csv").exists()


# -- a job merged from its ranks ------------------------------------------------------------------
def _rank(out: Path, rank: int, node: str, samples: str, job: str = "j1") -> Path:
    start = {**START, "run_id": f"{rank:04d}" + "ab" * 6,
             "job": {"id": job, "node": node, "rank": rank, "measures": "node", "nodes": 2}}
    return write_run(out / f"rank{rank}", [start, {"event": "stop", "status": "completed"}],
                     samples=samples)


def test_a_hostile_rank_adds_nothing_negative_to_the_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _rank(out, 0, "alpha", "t_s,cpu0_j,rss_bytes\n0.0,0.0,1\n1.0,50.4,2\n")
    _rank(out, 1, "beta", "t_s,cpu0_j,rss_bytes\n0.0,0.0,1\n1.0,-1e9,2\n")  # was -999999949.6 J
    merged = merge(find_runs([out]), job="j1")
    assert merged.total_energy_j == pytest.approx(50.4)
    assert any(w == "[beta rank 1] " + SKIPPED_1 for w in merged.warnings)
    result = _cli("report", "--job", "j1", "--format", "json", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["energy_j"]["total"] == pytest.approx(50.4)


def test_a_rank_that_fails_the_checks_is_excluded_naming_its_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = Report.load(_rank(out, 0, "alpha", "t_s,cpu0_j,rss_bytes\n0.0,0.0,1\n1.0,50.4,2\n"))
    other = Report.load(_rank(out, 1, "beta", "t_s,cpu0_j,rss_bytes\n0.0,0.0,1\n1.0,9.0,2\n"))
    bad = dataclasses.replace(other, channels=(dataclasses.replace(other.channels[0],
                                                                   energy_j=-1e9),))
    merged = merge([good, bad])
    assert merged.total_energy_j == pytest.approx(50.4)
    [warning] = [w for w in merged.warnings if "left out of the job's totals" in w]
    assert f"node beta rank 1 ({other.path})" in warning and "energy_j" in warning
    [excluded] = merged.job["excluded_runs"]
    assert excluded["run_id"] == other.run_id and excluded["path"] == str(other.path)
    assert "beta" in merged.job["missing_nodes"]  # its node's energy is not in the total
    check_accepted(Report.from_dict(json.loads(merged.to_json())))


@pytest.mark.parametrize("change", [
    {"duration_s": -1.0}, {"duration_s": math.nan},
    {"resources": {"cpu_time_s": -5.0}}, {"resources": {"read_bytes": math.inf}},
    {"carbon": {"emissions_g": -1.0}}, {"carbon": {"emissions_g": 1.0, "pue": -2.0}},
    {"phases": ()},  # with a bad phase, below
])
def test_each_figure_that_enters_a_total_is_checked(change: dict) -> None:
    def rank(i: int, **kw: Any) -> Report:
        job = {"id": "j", "node": f"n{i}", "rank": i, "measures": "node"}
        return make_report(run_id=f"r{i}", job=job, **kw)

    if "phases" in change:
        from energymeter.report.values import Phase
        change = {"phases": (Phase("p", 0.0, 1.0, {"cpu0": -3.0}),)}
    merged = merge([rank(0), rank(1, **change)])
    assert merged.total_energy_j == make_report().total_energy_j
    assert [r["run_id"] for r in merged.job["excluded_runs"]] == ["r1"]
    for phase in merged.phases:
        assert all(e >= 0 for e in phase.energy_by_channel.values())
    json.loads(merged.to_json())


def test_a_job_whose_every_rank_fails_is_refused() -> None:
    bad = make_report(duration_s=-1.0, job={"id": "j", "node": "n", "rank": 0})
    with pytest.raises(ReportError, match="no run of job j can be merged"):
        merge([bad])


# -- properties -----------------------------------------------------------------------------------
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-100, 1000).map(repr),
    st.sampled_from(["", "1e18", "1e19", "-0.0", "abc"]),
)


def _expected(cells: list[str]) -> tuple[float, int, int]:
    """What the sampler's rules give for the energy cells after SAMPLES (which ends at 40 J):
    (energy, bad rows, drops). A channel's energy is its last readable value: a row with the
    cell empty (a gauge-only row) changes nothing."""
    last, base, energy, bad, drops = 40.0, 0.0, 40.0, 0, 0
    for cell in cells:
        if cell == "":
            continue
        try:
            value = check_joules(cell)
        except ValueError:
            bad += 1
            continue
        moved = base + (value - last) if value < last else base  # NonDecreasing's sums
        if value - moved > MAX_ENERGY_J:  # refused whole, as NonDecreasing does
            bad += 1
            continue
        drops += value < last
        last, base, energy = value, moved, value - moved
    return energy, bad, drops


@FUZZ
@given(st.lists(CELLS, max_size=25))
def test_rebuilt_energy_is_cumulative_joules_whatever_the_cells(cells: list[str]) -> None:
    rows = [f"{1.0 + (i + 1) / 100:.6f},{cell}," for i, cell in enumerate(cells)]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = write_run(Path(tmp) / "out" / "run", samples=_samples(*rows))
        report = Report.load(run_dir)
        energy = report.channels[0].energy_j
        assert math.isfinite(energy) and 0.0 <= energy <= MAX_ENERGY_J
        expected, bad, drops = _expected(cells)
        assert energy == pytest.approx(expected)
        if bad:
            assert f"{bad} unreadable row(s) of samples.csv skipped" in report.warnings
        assert any("went backwards" in w for w in report.warnings) == (drops > 0)
        powers = timeline(report).power_w["cpu0"]
        assert all(math.isnan(p) or p >= 0 for p in powers)
        # What --save writes loads back, equal.
        save_rebuilt(report)
        assert Report.load(run_dir).total_energy_j == report.total_energy_j


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["channel", "phase", "duration", "cpu_time",
                                           "emissions", "none"]),
                          st.floats(allow_nan=True, allow_infinity=True)),
                min_size=1, max_size=5))
def test_a_merged_total_is_never_negative_or_non_finite(changes: list[tuple[str, float]]
                                                         ) -> None:
    from energymeter.report.values import Phase

    ranks = []
    for i, (what, value) in enumerate(changes):
        base = make_report(run_id=f"r{i}", job={"id": "j", "node": f"n{i}", "rank": i})
        change: dict[str, Any] = {
            "channel": {"channels": tuple(dataclasses.replace(c, energy_j=value)
                                          for c in base.channels)},
            "phase": {"phases": (Phase("p", 0.0, 1.0, {"cpu0": value}),)},
            "duration": {"duration_s": value},
            "cpu_time": {"resources": {**base.resources, "cpu_time_s": value}},
            "emissions": {"carbon": {**copy.deepcopy(base.carbon), "emissions_g": value}},
            "none": {},
        }[what]
        ranks.append(dataclasses.replace(base, **change))
    try:
        merged = merge(ranks)
    except ReportError as exc:
        assert "no run of job j can be merged" in str(exc)
        return
    assert math.isfinite(merged.total_energy_j) and merged.total_energy_j >= 0
    assert all(ce.energy_j >= 0 for ce in merged.channels)
    assert all(e >= 0 for p in merged.phases for e in p.energy_by_channel.values())
    for key in ("cpu_time_s", "read_bytes", "write_bytes"):
        value = merged.resources.get(key)
        assert value is None or (math.isfinite(value) and value >= 0)
    json.loads(merged.to_json())  # strict JSON


# -- items and resources of report.json ---------------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("items", -10), ("items", -1e-9),
    ("resources.read_bytes", -1), ("resources.write_bytes", -4096.0),
    ("resources.cpu_time_s", -0.5), ("resources.peak_rss_bytes", -1),
    ("resources.max_rss_bytes_rusage", -1024), ("resources.peak_memory_bytes", "big"),
])
def test_negative_items_and_resources_in_report_json_are_refused(
        tmp_path: Path, key: str, value: Any) -> None:
    data = json.loads(make_report(items=100.0).to_json())
    block, _, name = key.rpartition(".")
    (data[block] if block else data)[name] = value
    (tmp_path / "report.json").write_text(json.dumps(data))
    needle = re.escape(f"report.json: {key} must be a number from 0 to")
    with pytest.raises(ReportError, match=needle):
        Report.load(tmp_path / "report.json")


def test_zero_and_null_items_and_resources_load(tmp_path: Path) -> None:
    data = json.loads(make_report(items=0.0).to_json())
    data["resources"].update(read_bytes=0, cpu_time_s=None, max_rss_bytes_rusage=0)
    (tmp_path / "report.json").write_text(json.dumps(data))
    report = Report.load(tmp_path / "report.json")
    assert report.items == 0.0 and report.resources["cpu_time_s"] is None


def test_a_cumulative_gauge_going_back_is_not_a_negative_resource(tmp_path: Path) -> None:
    """A rebuilt run whose cpu_time_s gauge went back would report a negative CPU time: it is
    left out with a warning, and the report saves and loads back."""
    start = {**START, "gauges": ["rss_bytes", "cpu_time_s"]}
    samples = ("t_s,cpu0_j,rss_bytes,cpu_time_s\n0.0,0.0,100,5.0\n0.5,20.0,,\n"
               "1.0,40.0,200,2.0\n")
    run_dir = write_run(tmp_path / "out" / "run", [start], samples=samples)
    report = Report.load(run_dir)
    assert report.resources["cpu_time_s"] is None
    assert any("gauge cpu_time_s went backwards" in w for w in report.warnings)
    save_rebuilt(report)
    assert Report.load(run_dir).resources["cpu_time_s"] is None


def test_a_duration_below_the_clocks_resolution_has_no_infinite_power() -> None:
    """Found by hypothesis: a rank of 2.2e-311 s (finite, in range) made every merged mean
    power infinite, and the job's report could not be written as JSON."""
    base = make_report(run_id="r0", job={"id": "j", "node": "n0", "rank": 0})
    tiny = dataclasses.replace(base, duration_s=2.225073858507e-311)
    assert tiny.mean_power_w == 0.0
    merged = merge([tiny])
    assert all(ce.mean_power_w == 0.0 for ce in merged.channels)
    json.loads(merged.to_json())  # strict JSON
