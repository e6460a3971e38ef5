"""Energy bases: the run's own share per interval (sampling/attribute.py), and each run's
energy on the machine, attributed and net bases (report/bases.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter import measure
from energymeter.errors import ConfigError, ReportError
from energymeter.report import Report
from energymeter.report.bases import BASES, bases_of, check_basis, common_bases, energy_on
from energymeter.sampling.attribute import MIN_CPU_INTERVALS, Attribution
from tests.test_compare import fake_report

NO_META: dict[str, object] = {}


def _stream(attribution: Attribution, rows: list[tuple[float, float, float]],
            cid: str = "cpu0") -> float:
    """Feed reads of (energy added J, tree CPU s added, machine busy s added); returns the
    cumulative energy."""
    energy = tree = busy = 0.0
    attribution.add({cid: energy}, {"cpu_time_s": tree, "machine_busy_cpu_s": busy})
    for d_e, d_tree, d_busy in rows:
        energy, tree, busy = energy + d_e, tree + d_tree, busy + d_busy
        attribution.add({cid: energy}, {"cpu_time_s": tree, "machine_busy_cpu_s": busy})
    return energy


def test_share_is_taken_interval_by_interval_not_once_per_run() -> None:
    # Five intervals alone at 10 J each, then five beside a neighbour as busy as the run, at
    # 20 J each: the run's own energy is 5x10 + 5x10 = 100 J. One ratio for the whole run
    # (tree 10 s of 15 s busy) would give 2/3 x 150 = 100 J only by luck of equal sizes, so
    # the neighbour is made busier in the second half (3x the run): 5x10 + 5x20/4 = 75 J.
    a = Attribution([("cpu0", "cpu", NO_META)])
    rows = [(10.0, 1.0, 1.0)] * 5 + [(20.0, 1.0, 4.0)] * 5
    total = _stream(a, rows)
    out = a.result({"cpu0": total}, tree_cpu_s=10.0, machine_busy_cpu_s=25.0)
    assert out["channels"]["cpu0"]["energy_j"] == pytest.approx(75.0)
    assert out["channels"]["cpu0"]["share"] == pytest.approx(75.0 / 150.0)
    assert out["run_share"] == pytest.approx(10 / 25)  # the run-wide ratio would say 60 J
    assert out["channels"]["cpu0"]["intervals"] == 10


def test_an_idle_machine_interval_goes_to_the_run_whole() -> None:
    a = Attribution([("cpu0", "cpu", NO_META)])
    total = _stream(a, [(3.0, 0.0, 0.0)] * 4)  # nobody busy: idle power, the run's
    out = a.result({"cpu0": total}, tree_cpu_s=0.0, machine_busy_cpu_s=0.0)
    assert out["channels"]["cpu0"]["energy_j"] == pytest.approx(12.0)


def test_cpu_time_sampling_missed_is_spread_like_what_was_seen() -> None:
    # Sampling saw half the tree's CPU time (short-lived children): the kernel's account
    # (tree_cpu_s) doubles each interval's share, capped by the energy covered.
    a = Attribution([("cpu0", "cpu", NO_META)])
    total = _stream(a, [(10.0, 0.25, 2.0)] * 4)
    out = a.result({"cpu0": total}, tree_cpu_s=2.0, machine_busy_cpu_s=8.0)
    assert out["cpu_time_scale"] == pytest.approx(2.0)
    assert out["channels"]["cpu0"]["energy_j"] == pytest.approx(40.0 * 0.25)


def test_short_runs_take_the_run_wide_share() -> None:
    a = Attribution([("cpu0", "cpu", NO_META)])
    total = _stream(a, [(10.0, 0.0, 1.0)] * (MIN_CPU_INTERVALS - 1))
    out = a.result({"cpu0": total}, tree_cpu_s=0.5, machine_busy_cpu_s=2.0)
    assert out["channels"]["cpu0"]["energy_j"] == pytest.approx(total * 0.25)
    assert "run-wide" in out["cpu_rule"]


def test_energy_outside_the_intervals_takes_the_run_wide_share() -> None:
    a = Attribution([("cpu0", "cpu", NO_META)])
    energy = _stream(a, [(10.0, 1.0, 1.0)] * 4)  # 40 J all the run's
    out = a.result({"cpu0": energy + 20.0}, tree_cpu_s=4.0, machine_busy_cpu_s=8.0)
    assert out["channels"]["cpu0"]["energy_j"] == pytest.approx(40.0 + 20.0 * 0.5)


def test_gpu_channels_take_the_probe_share_and_mig_its_instance() -> None:
    a = Attribution([("gpu0", "gpu", NO_META), ("gpu1", "gpu", {"mig_share": 0.25})])
    energy = {"gpu0": 0.0, "gpu1": 0.0}
    a.add(dict(energy), {})
    for share in (0.3, 0.7, 0.5):
        energy = {k: v + 100.0 for k, v in energy.items()}
        a.add(dict(energy), {"gpu0_own_share": share, "gpu1_own_share": 1.0})
    out = a.result(energy, tree_cpu_s=None, machine_busy_cpu_s=None)
    assert out["channels"]["gpu0"]["energy_j"] == pytest.approx(150.0)
    assert out["channels"]["gpu1"]["energy_j"] == pytest.approx(300.0 * 0.25)


def test_a_gpu_without_per_process_figures_is_not_attributed() -> None:
    a = Attribution([("gpu0", "gpu", NO_META), ("gpu1", "gpu", {"mig_share": 0.5})])
    a.add({"gpu0": 0.0, "gpu1": 0.0}, {})
    a.add({"gpu0": 50.0, "gpu1": 50.0}, {})
    out = a.result({"gpu0": 50.0, "gpu1": 50.0}, tree_cpu_s=1.0, machine_busy_cpu_s=1.0)
    assert out["channels"]["gpu0"]["energy_j"] is None
    assert "no per-process" in out["channels"]["gpu0"]["why"]
    # A MIG instance without figures keeps its capacity share.
    assert out["channels"]["gpu1"]["energy_j"] == pytest.approx(25.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 2), st.floats(0, 4)), min_size=1,
                max_size=30),
       st.floats(0, 100), st.floats(0.01, 200))
def test_attributed_never_exceeds_the_machine(rows: list[tuple[float, float, float]],
                                              tree_s: float, busy_s: float) -> None:
    a = Attribution([("cpu0", "cpu", NO_META), ("dram0", "dram", NO_META)])
    energy = tree = busy = 0.0
    a.add({"cpu0": 0.0, "dram0": 0.0}, {"cpu_time_s": 0.0, "machine_busy_cpu_s": 0.0})
    for d_e, d_tree, d_busy in rows:
        energy, tree, busy = energy + d_e, tree + d_tree, busy + d_busy
        a.add({"cpu0": energy, "dram0": energy / 2},
              {"cpu_time_s": tree, "machine_busy_cpu_s": busy})
    out = a.result({"cpu0": energy, "dram0": energy / 2}, tree_s, busy_s)
    for cid, total in (("cpu0", energy), ("dram0", energy / 2)):
        got = out["channels"][cid]["energy_j"]
        assert 0.0 <= got <= total * (1 + 1e-12) + 1e-12


# -- bases of a report -------------------------------------------------------------------------
def _attribution(cpu_j: float, gpu_j: float | None = None) -> dict[str, object]:
    channels: dict[str, object] = {"cpu0": {"energy_j": cpu_j, "share": 0.5, "intervals": 5,
                                            "method": "m"}}
    if gpu_j is not None:
        channels["gpu0"] = {"energy_j": None, "share": None, "intervals": 0, "method": "g",
                            "why": "no per-process figure for this device"}
    return {"channels": channels, "run_share": 0.5, "cpu_time_scale": 1.0,
            "cpu_rule": "per interval"}


def _baseline(cpu_idle_j: float) -> dict[str, object]:
    return {"source": "measured", "channels": {"cpu0": {"gross_j": 100.0, "idle_j": cpu_idle_j,
                                                        "net_j": 100.0 - cpu_idle_j}}}


def test_three_bases_of_one_run_and_their_round_trip(tmp_path: Path) -> None:
    report = fake_report("r", cpu_j=100.0, gpu_j=40.0, attribution=_attribution(30.0, 40.0),
                         baseline=_baseline(25.0))
    assert bases_of(report) == list(BASES)
    assert energy_on(report, "machine").total_j == pytest.approx(140.0)
    attributed = energy_on(report, "attributed")
    assert attributed.total_j == pytest.approx(70.0)  # the GPU whole: no per-process figure
    assert attributed.whole == ("gpu0",)
    net = energy_on(report, "net")
    assert net.by_kind["cpu"] == pytest.approx(75.0) and net.whole == ("gpu0",)
    data = json.loads(report.to_json())
    assert data["energy_bases"]["attributed"]["total_j"] == pytest.approx(70.0)
    assert data["energy_bases"]["attributed"]["whole_channels"] == ["gpu0"]
    again = Report.from_dict(data)
    assert again.energy_on("attributed") == attributed


def test_runs_have_only_the_bases_they_measured() -> None:
    plain = fake_report("r", cpu_j=10.0)
    assert bases_of(plain) == ["machine"]
    assert energy_on(plain, "net") is None and energy_on(plain, "attributed") is None
    older = fake_report("r", cpu_j=10.0, cpu_attribution={"tree_share": 0.4})
    assert energy_on(older, "attributed").total_j == pytest.approx(4.0)
    assert energy_on(older, "attributed").how == "one run-wide CPU ratio"
    assert common_bases([plain, older]) == ["machine"]


def test_an_unknown_basis_says_which_are_accepted() -> None:
    with pytest.raises(ConfigError, match="machine, attributed, net"):
        check_basis("own")


def test_a_damaged_attribution_block_is_refused_by_name() -> None:
    data = json.loads(fake_report("r", cpu_j=10.0, attribution=_attribution(5.0)).to_json())
    data["attribution"]["channels"]["cpu0"]["share"] = 1.5
    with pytest.raises(ReportError, match="share"):
        Report.from_dict(data)


def test_a_measured_run_has_the_attributed_basis_and_a_rebuild_agrees(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with measure("own", out=str(out), interval_s=0.05, gauge_interval_s=0.05) as meter:
        end = os.times().elapsed + 0.6
        while os.times().elapsed < end:  # busy: the run's own CPU time
            sum(range(1000))
    report = meter.report
    attributed = report.energy_on("attributed")
    assert attributed is not None
    assert 0.0 < attributed.total_j <= report.total_energy_j * (1 + 1e-9)
    assert report.attribution["cpu_intervals"] >= MIN_CPU_INTERVALS
    # The same samples rebuilt (a killed run) give the per-interval figure from them alone.
    run_dir = report.path
    (run_dir / "report.json").rename(run_dir / "kept.json")
    rebuilt = Report.load(run_dir)
    assert rebuilt.attribution["cpu_intervals"] == report.attribution["cpu_intervals"]
    assert rebuilt.energy_on("attributed").total_j <= rebuilt.total_energy_j * (1 + 1e-9)


# -- compare on a basis ------------------------------------------------------------------------
def _study(own_j: list[float], machine_j: list[float], name: str) -> list[Report]:
    return [fake_report(name, cpu_j=m, minute=i, attribution={
        "channels": {"cpu0": {"energy_j": o, "share": o / m, "intervals": 9, "method": "m"}},
        "run_share": o / m, "cpu_time_scale": 1.0, "cpu_rule": "per interval"})
        for i, (o, m) in enumerate(zip(own_j, machine_j, strict=True))]


def test_compare_on_the_attributed_basis_uses_each_runs_own_share() -> None:
    from energymeter.analysis import compare, format_comparison

    # A neighbour's load comes and goes: the machine's energy varies, the runs' own does not.
    dense = _study([100, 101, 99, 100, 100], [150, 210, 120, 260, 100], "dense")
    sparse = _study([60, 61, 59, 60, 60], [200, 90, 140, 75, 160], "sparse")
    machine = compare(dense + sparse)
    own = compare(dense + sparse, basis="attributed")
    assert machine[0]["energy_total_j_cv"] > 0.3
    assert own[0]["energy_total_j_cv"] < 0.01
    assert own[1]["energy_total_j"] == pytest.approx(60.0)
    assert own[1]["energy_total_j_p_value"] < 1e-6 < machine[1]["energy_total_j_p_value"]
    assert own[0]["basis"] == "attributed" and own[0]["mixed"] == {}
    assert own[1]["mean_power_w"] == pytest.approx(6.0)  # 60 J over 10 s
    text = format_comparison(own)
    assert "energy total, attributed (J)" in text
    assert "energy basis: attributed" in text


def test_a_mean_that_mixes_bases_says_so() -> None:
    from energymeter.analysis import compare, comparison_warnings

    runs = _study([50, 50], [100, 100], "a") + [fake_report("a", cpu_j=100.0, minute=5)]
    rows = compare(runs, basis="attributed")
    assert rows[0]["energy_total_j"] == pytest.approx(200 / 3)
    assert "energy basis" in rows[0]["mixed"]
    text = " ".join(comparison_warnings(rows))
    assert "runs differ in energy basis" in text and "no attributed figure" in text
    # Across groups: one on its own share, one on the machine's.
    rows = compare(_study([50, 50], [100, 100], "a") + [fake_report("b", cpu_j=9.0)],
                   basis="attributed")
    assert any("different bases" in w for w in comparison_warnings(rows))


def test_compare_net_basis_subtracts_the_idle_baseline() -> None:
    from energymeter.analysis import compare

    runs = [fake_report("n", cpu_j=100.0, minute=i, baseline=_baseline(30.0 + i))
            for i in range(3)]
    rows = compare(runs, basis="net")
    assert rows[0]["energy_total_j"] == pytest.approx(69.0)
    with pytest.raises(ConfigError, match="accepted|machine, attributed, net"):
        compare(runs, basis="gross")


def test_cli_compare_basis(tmp_path: Path) -> None:
    from energymeter.store import write_json_atomic
    from tests.test_cli import invoke

    for r in _study([50, 51, 49], [100, 160, 90], "dense"):
        (tmp_path / r.run_id).mkdir()
        write_json_atomic(tmp_path / r.run_id / "report.json", r.to_dict())
    code, out, err = invoke("compare", "--basis", "attributed", "--format", "json",
                            str(tmp_path))
    assert code == 0, err
    assert json.loads(out)[0]["energy_total_j"] == pytest.approx(50.0)
    code, out, err = invoke("compare", "--basis", "own", str(tmp_path))
    assert code == 2 and "machine" in err and "attributed" in err


def test_compare_shows_the_baseline_and_flags_one_taken_under_load() -> None:
    from energymeter.analysis import compare, comparison_warnings, format_comparison

    runs = [fake_report("n", cpu_j=100.0, minute=i, baseline={
        **_baseline(30.0), "power_w": {"cpu0": 3.0}, "idle_total_j": 30.0,
        "net_total_j": 70.0, "under_load": i == 2, "busy_cpu_share": 0.5 if i == 2 else 0.01})
        for i in range(3)]
    [row] = compare(runs)
    assert row["baseline_power_w"] == pytest.approx(3.0)
    assert row["baseline_idle_j"] == pytest.approx(30.0)
    assert row["baseline_net_j"] == pytest.approx(70.0)
    assert row["baselines_under_load"] == [runs[2].run_id]
    assert any("measured while other processes" in w for w in comparison_warnings([row]))
    text = format_comparison([row])
    assert "idle baseline power (W)" in text and "energy net of idle (J)" in text
    assert "energy net of idle (J)" not in format_comparison(compare(runs, basis="net"))


def test_dataframes_on_a_basis() -> None:
    pytest.importorskip("pandas")
    report = fake_report("r", cpu_j=100.0, items=10, attribution=_attribution(40.0),
                         baseline=_baseline(25.0))
    frame = report.to_dataframe("summary", basis="attributed")
    assert frame.loc[0, "energy_total_j"] == pytest.approx(40.0)
    assert frame.loc[0, "energy_per_item_j"] == pytest.approx(4.0)
    assert frame.loc[0, "mean_power_w"] == pytest.approx(4.0)
    assert frame.loc[0, "energy_basis"] == "attributed"
    assert report.to_dataframe().loc[0, "energy_total_j"] == pytest.approx(100.0)
    bases = report.to_dataframe("bases").set_index("basis")
    assert list(bases.index) == ["machine", "attributed", "net"]
    assert bases.loc["net", "total_j"] == pytest.approx(75.0)
    with pytest.raises(ReportError, match="no net energy.*--baseline"):
        fake_report("r", cpu_j=1.0).to_dataframe("summary", basis="net")


def test_integration_metrics_on_a_basis() -> None:
    from energymeter.integrations.common import report_metrics, report_tags

    report = fake_report("r", cpu_j=100.0, attribution=_attribution(40.0),
                         baseline=_baseline(25.0))
    own = report_metrics(report, basis="attributed")
    assert own["energy/total_j"] == pytest.approx(40.0)
    assert own["energy/cpu_j"] == pytest.approx(40.0)
    assert own["energy/net/total_j"] == pytest.approx(75.0)
    assert own["energy/machine/total_j"] == pytest.approx(100.0)
    assert report_tags(report, basis="attributed")["energymeter.basis"] == "attributed"
    plain = fake_report("r", cpu_j=100.0)
    assert report_metrics(plain, basis="net")["energy/total_j"] == pytest.approx(100.0)
    assert report_tags(plain, basis="net")["energymeter.basis"] == "machine"


def test_report_formats_show_the_bases_and_the_baseline() -> None:
    from energymeter.report.render import format_reports

    report = fake_report("r", cpu_j=100.0, attribution=_attribution(40.0), baseline={
        **_baseline(25.0), "idle_total_j": 25.0, "net_total_j": 75.0, "under_load": True})
    other = fake_report("s", cpu_j=50.0, minute=3)
    text = format_reports([report], "table")
    assert "bases: machine 100.0 J, attributed 40.0 J (40 %), net 75.0 J (idle 25.0" in text
    md = format_reports([report, other], "markdown", basis="attributed")
    assert "| energy, attributed (J) |" in md.replace(" | mean power", " |")
    assert "| attributed | 40.00 | 40 % |" in md
    assert "taken under load" in md
    assert "50.00 (machine)" in md or "50 (machine)" in md  # no attributed figure: said so
    tex = format_reports([report], "latex", basis="net")
    assert "-bases}" in tex and "Energy basis: net" in tex
    rows = format_reports([report, other], "csv", basis="attributed").splitlines()
    assert rows[0].endswith(",energy_basis") and rows[1].endswith(",attributed")
    assert rows[2].endswith(",machine")


def test_cite_describes_the_basis_of_the_figures() -> None:
    from energymeter.analysis.cite import methods_paragraph

    runs = _study([50, 51, 49], [100, 160, 90], "dense")
    own = methods_paragraph(runs, basis="attributed")
    assert "each run's own share of the energy measured (attributed)" in own
    machine = methods_paragraph(runs)
    assert "those of the whole machine" in machine and "not used here" in machine
    runs = [fake_report("n", cpu_j=100.0, minute=i, baseline={
        **_baseline(30.0), "duration_s": 10.0, "under_load": i == 0}) for i in range(2)]
    net = methods_paragraph(runs, basis="net")
    assert "net of idle" in net and "over 10 s" in net and "for 1 run the baseline" in net
    mixed = methods_paragraph(runs + [fake_report("n", cpu_j=1.0, minute=9)], basis="net")
    assert "1 run had no such figure" in mixed
    with pytest.raises(ConfigError):
        methods_paragraph(runs, basis="gross")


def test_mixed_channels_in_comparisons_and_the_methods_paragraph() -> None:
    from energymeter.analysis import compare, comparison_warnings
    from energymeter.analysis.cite import methods_paragraph
    from energymeter.probes.base import Channel
    from energymeter.report import ChannelEnergy
    from energymeter.report.values import EstimatedPart

    mixed = Channel("cpu0", "cpu", "Xeon", "rapl via daemon", "mixed")
    runs = [fake_report("m", cpu_j=100.0, minute=i, cpu=mixed) for i in range(2)]
    runs = [Report(**{**r.__dict__, "channels": (ChannelEnergy(
        mixed, 100.0, 10.0, estimated=EstimatedPart(25.0 + i, 3.0)),)})
        for i, r in enumerate(runs)]
    rows = compare(runs)
    assert rows[0]["methods"]["cpu"] == "mixed"
    assert any("partly estimated" in w for w in comparison_warnings(rows))
    text = methods_paragraph(runs)
    assert "measured (counter) for part of the run and estimated for the rest (25 % to 26 %" \
        in text


def test_a_commands_last_unsampled_stretch_goes_to_the_last_interval() -> None:
    # energymeter run: the command is reaped before the stop read, so the last interval shows
    # no CPU time of it; the kernel's account says 1 s more. Beside an equally busy neighbour
    # throughout (share 0.5), the last interval is re-shared, not the whole run scaled.
    rows = [(10.0, 1.0, 2.0)] * 4 + [(10.0, 0.0, 2.0)]
    spread = Attribution([("cpu0", "cpu", NO_META)])
    total = _stream(spread, rows)
    at_end = Attribution([("cpu0", "cpu", NO_META)])
    _stream(at_end, rows)
    scaled = spread.result({"cpu0": total}, tree_cpu_s=5.0, machine_busy_cpu_s=10.0)
    placed = at_end.result({"cpu0": total}, tree_cpu_s=5.0, machine_busy_cpu_s=10.0,
                           missed_at_end=True)
    assert placed["channels"]["cpu0"]["energy_j"] == pytest.approx(25.0)  # 5 × 0.5 × 10 J
    assert placed["cpu_time_placed_at_end_s"] == pytest.approx(1.0)
    assert placed["cpu_time_scale"] == pytest.approx(1.0)
    # Spread instead: 4 intervals × 0.5 × 10 J × 1.25 = 25 J here too (a steady share), but
    # the scale is what carried it.
    assert scaled["cpu_time_scale"] == pytest.approx(1.25)
    # A neighbour that left in the last second: the command had the machine to itself then.
    rows = [(10.0, 1.0, 2.0)] * 4 + [(10.0, 0.0, 1.0)]
    at_end = Attribution([("cpu0", "cpu", NO_META)])
    total = _stream(at_end, rows)
    placed = at_end.result({"cpu0": total}, tree_cpu_s=5.0, machine_busy_cpu_s=9.0,
                           missed_at_end=True)
    assert placed["channels"]["cpu0"]["energy_j"] == pytest.approx(4 * 5.0 + 10.0)


def test_net_energy_at_or_below_zero_is_warned_and_not_a_ratio() -> None:
    from energymeter.analysis import compare, comparison_warnings

    loud = [fake_report("a", cpu_j=10.0, minute=i, baseline=_baseline(14.0 + i))
            for i in range(3)]  # the "idle" drew more than the runs: net < 0
    quiet = [fake_report("b", cpu_j=10.0, minute=5 + i, baseline=_baseline(12.0))
             for i in range(3)]
    a, b = compare(loud + quiet, basis="net")
    assert a["energy_total_j"] == pytest.approx(-5.0)
    assert b["energy_total_j_rel_diff"] is None and b["energy_total_j_ratio"] is None
    assert a["emissions_g"] is None  # no negative emissions
    text = " ".join(comparison_warnings([a, b]))
    assert "3 runs" in text and "net energy ≤ 0" in text


def test_cite_says_where_attribution_left_the_per_interval_rule() -> None:
    from energymeter.analysis.cite import methods_paragraph

    runs = _study([50, 51], [100, 160], "dense")
    short = {**runs[0].attribution, "cpu_rule": "run-wide share (fewer than 3 intervals)",
             "cpu_time_scale": 9.0}
    placed = {**runs[1].attribution, "cpu_time_placed_at_end_s": 0.4, "cpu_time_scale": 1.2}
    runs = [Report(**{**runs[0].__dict__, "attribution": short}),
            Report(**{**runs[1].__dict__, "attribution": placed})]
    text = methods_paragraph(runs, basis="attributed")
    assert "for 1 run shorter than three such intervals, one ratio over the whole run" in text
    assert "last interval, which sampling cannot see" in text
    assert "(up to ×1.20)" in text  # the short run's scale was not applied: not cited
