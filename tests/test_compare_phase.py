"""compare(phase=...) / compare --phase: one phase of each run compared across groups, with the
same statistics as whole runs."""

from __future__ import annotations

import pytest

from energymeter.analysis import compare, comparison_warnings, format_comparison
from energymeter.errors import ReportError
from energymeter.report import Report
from energymeter.report.values import Phase
from tests.test_compare import fake_report


def _run(name: str, selection_j: list[float], train_j: float, minute: int,
         **fields: object) -> Report:
    r = fake_report(name, cpu_j=sum(selection_j) + train_j, minute=minute, **fields)
    phases, t = [], 0.0
    for joules in selection_j:  # once per epoch: every occurrence counts
        phases.append(Phase("selection", t, t + 1.0, {"cpu0": joules}))
        phases.append(Phase("train", t + 1.0, t + 3.0, {"cpu0": train_j / len(selection_j)}))
        t += 3.0
    return Report(**{**r.__dict__, "phases": tuple(phases)})


def test_a_phase_compared_across_groups() -> None:
    runs = [_run("full", [1.0, 1.0], 20.0, i, tags={"sel": "full"}) for i in range(3)]
    runs += [_run("el2n", [3.0 + 0.1 * i, 3.0], 10.0, 10 + i, tags={"sel": "el2n"})
             for i in range(3)]
    full, el2n = compare(runs, by="tag:sel", phase="selection")
    assert full["phase"] == "selection" and full["phase_missing"] == []
    assert full["energy_total_j"] == pytest.approx(2.0)
    assert full["duration_s"] == pytest.approx(2.0)
    assert full["mean_power_w"] == pytest.approx(1.0)
    assert el2n["energy_total_j"] == pytest.approx(6.1)
    assert el2n["energy_total_j_rel_diff"] == pytest.approx(6.1 / 2.0 - 1)
    assert el2n["energy_total_j_p_value"] < 0.001
    assert "emissions_g" not in full  # a phase has energy, duration and power only
    text = format_comparison([full, el2n])
    assert "selection: energy total (J)" in text and "phase selection" in text


def test_runs_without_the_phase_are_left_out_and_named() -> None:
    runs = [_run("a", [1.0], 5.0, i) for i in range(3)] + [fake_report("a", cpu_j=9.0,
                                                                         minute=9)]
    [row] = compare(runs, phase="selection")
    assert row["energy_total_j_n"] == 3 and row["phase_missing"] == [runs[3].run_id]
    assert any("had no phase 'selection'" in w for w in comparison_warnings([row]))
    with pytest.raises(ReportError, match="no run has a phase named 'nope'.*selection, train"):
        compare(runs, phase="nope")
    with pytest.raises(ReportError, match="machine"):
        compare(runs, phase="selection", basis="attributed")


def test_energy_per_item_counted_by_a_nested_run() -> None:
    outer = [fake_report("run", cpu_j=100.0, minute=i) for i in range(3)]
    inner = [fake_report("train", cpu_j=90.0, minute=i, items=50.0,
                         parent_run_id=o.run_id) for i, o in enumerate(outer)]
    [row] = compare([*outer, *inner])
    assert row["n"] == 3 and row["nested_excluded"] == 3
    assert row["energy_per_item_j"] == pytest.approx(2.0)  # the whole run's 100 J over 50
