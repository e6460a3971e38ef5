"""energymeter.analysis: loading, grouping (mean ± std, n), ratios and output formats."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from energymeter.analysis import (
    compare,
    comparison_columns,
    comparison_table,
    comparison_warnings,
    expand_runs,
    format_comparison,
    load_reports,
)
from energymeter.errors import ReportError
from energymeter.probes.base import Channel
from energymeter.report import LEDGER_COLUMNS, ChannelEnergy, Report
from energymeter.report.render import FORMATS, format_reports
from energymeter.report.tables import format_number, latex_escape, render_table
from energymeter.store import write_json_atomic

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
CPU = Channel("cpu0", "cpu", "Xeon", "rapl", "counter")
CPU_MODEL = Channel("cpu0", "cpu", "Xeon", "model", "model")
DRAM = Channel("dram0", "dram", "Xeon", "rapl", "counter")
GPU = Channel("gpu0", "gpu", "H100", "nvml", "counter")
_IDS = itertools.count()


def fake_report(name: str, *, cpu_j: float, duration_s: float = 10.0, gpu_j: float | None = None,
                dram_j: float | None = None, rss: int = 100 * 2**20, gpu_mem: int = 0,
                cpu: Channel = CPU, status: str = "completed", minute: int = 0,
                emissions_g: float | None = None, run_id: str | None = None,
                **fields: object) -> Report:
    """A report built by hand (distinct run ids unless ``run_id`` is given); ``fields``: more
    Report fields (tags, warmup, parent_run_id, items, logs, carbon, ...)."""
    channels = [ChannelEnergy(cpu, cpu_j, cpu_j / duration_s)]
    if dram_j is not None:
        channels.append(ChannelEnergy(DRAM, dram_j, dram_j / duration_s))
    if gpu_j is not None:
        channels.append(ChannelEnergy(GPU, gpu_j, gpu_j / duration_s))
    start = T0 + timedelta(minutes=minute)
    total = sum(c.energy_j for c in channels)
    carbon = {"region": "SE", "g_per_kwh": 36.0, "pue": 1.0,
              "emissions_g": total / 3.6e6 * 36.0 if emissions_g is None else emissions_g}
    fields.setdefault("carbon", carbon)
    return Report(run_id=run_id or f"{next(_IDS):08x}-{name}-{minute:04d}", name=name,
                  status=status, started_at=start,
                  ended_at=start + timedelta(seconds=duration_s),
                  duration_s=duration_s, channels=tuple(channels),
                  resources={"cpu_time_s": 1.0, "peak_rss_bytes": rss,
                             "peak_gpu_memory_bytes": gpu_mem}, **fields)


# -- grouping and ratios -----------------------------------------------------------------------
def test_groups_mean_std_n_and_ratios() -> None:
    reports = [
        fake_report("base", cpu_j=100.0, minute=0),
        fake_report("fast", cpu_j=40.0, duration_s=5.0, minute=1),
        fake_report("base", cpu_j=110.0, minute=2),
        fake_report("base", cpu_j=120.0, minute=3),
        fake_report("fast", cpu_j=60.0, duration_s=5.0, minute=4),
    ]
    rows = compare(reports)
    assert [(r["name"], r["n"]) for r in rows] == [("base", 3), ("fast", 2)]
    base, fast = rows
    assert base["energy_total_j"] == pytest.approx(110.0)
    assert base["energy_total_j_std"] == pytest.approx(statistics.stdev([100, 110, 120]))
    assert fast["energy_total_j"] == pytest.approx(50.0)
    assert fast["energy_total_j_ratio"] == pytest.approx(50 / 110)
    assert base["energy_total_j_ratio"] == 1.0
    assert fast["duration_s_ratio"] == pytest.approx(0.5)
    assert fast["mean_power_w"] == pytest.approx(10.0)
    assert base["mean_power_w"] == pytest.approx(11.0)
    assert fast["energy_cpu_j"] == pytest.approx(50.0)
    assert base["run_ids"] == [reports[0].run_id, reports[2].run_id, reports[3].run_id]
    assert base["statuses"] == {"completed": 3}
    assert base["methods"] == {"cpu": "counter"}


def test_single_runs_have_no_std_and_ratio_to_first_run() -> None:
    rows = compare([fake_report("a", cpu_j=10.0), fake_report("b", cpu_j=30.0)])
    assert rows[0]["energy_total_j_std"] is None
    assert rows[1]["energy_total_j_ratio"] == pytest.approx(3.0)


def test_no_group_keeps_runs_apart() -> None:
    reports = [fake_report("x", cpu_j=10.0, minute=0), fake_report("x", cpu_j=20.0, minute=1)]
    rows = compare(reports, group=False)
    assert [r["n"] for r in rows] == [1, 1]
    assert rows[0]["label"] != rows[1]["label"]
    assert rows[1]["energy_total_j_ratio"] == pytest.approx(2.0)


def test_kinds_gpu_memory_and_missing_values() -> None:
    with_gpu = fake_report("gpu", cpu_j=10.0, gpu_j=90.0, dram_j=5.0, gpu_mem=2**30)
    cpu_only = fake_report("cpu", cpu_j=50.0)
    rows = compare([with_gpu, cpu_only])
    assert rows[0]["energy_total_j"] == pytest.approx(105.0)
    assert rows[0]["energy_gpu_j"] == pytest.approx(90.0)
    assert rows[1]["energy_gpu_j"] is None and rows[1]["energy_gpu_j_ratio"] is None
    assert rows[0]["peak_gpu_memory_bytes"] == 2**30
    headers, table = comparison_table(rows)
    labels = [r[0] for r in table]
    assert labels[:4] == ["energy total (J)", "energy cpu (J)", "energy dram (J)",
                          "energy gpu (J)"]
    assert "peak GPU memory (MiB)" in labels
    gpu_row = table[labels.index("energy gpu (J)")]
    assert gpu_row[2] == "-"
    assert table[labels.index("peak GPU memory (MiB)")][1] == "1024"


def test_ratio_none_when_baseline_is_zero() -> None:
    rows = compare([fake_report("a", cpu_j=0.0), fake_report("b", cpu_j=5.0)])
    assert rows[1]["energy_total_j_ratio"] is None


def test_warnings_for_unlike_methods_and_statuses() -> None:
    rows = compare([fake_report("measured", cpu_j=10.0),
                    fake_report("estimated", cpu_j=10.0, cpu=CPU_MODEL, status="interrupted")])
    warnings = comparison_warnings(rows)
    assert any("different methods" in w and "counter" in w and "model" in w for w in warnings)
    assert any("interrupted" in w for w in warnings)
    assert any("estimated by a model" in w for w in warnings)
    assert comparison_warnings(compare([fake_report("a", cpu_j=1.0)], group=False)) == []


def test_compare_needs_a_run() -> None:
    with pytest.raises(ReportError):
        compare([])


# -- formats -----------------------------------------------------------------------------------
def _rows() -> list[dict]:
    return compare([fake_report("base", cpu_j=100.0), fake_report("base", cpu_j=120.0),
                    fake_report("new_model", cpu_j=55.0)])


def test_table_format() -> None:
    text = format_comparison(_rows(), "table")
    lines = text.splitlines()
    assert "base (n=2)" in lines[0] and "new_model" in lines[0]
    energy = next(line for line in lines if line.startswith("energy total (J)"))
    # n = 2: half-width = t(0.975, 1) * s / sqrt(2) = 12.7062 * 14.142 / 1.4142 = 127.06
    assert "110 ± 130" in energy  # the half-width to 2 significant digits, the mean alike
    assert energy.rstrip().endswith("55.00")  # one run: no interval
    below = lines[lines.index(energy) + 1]
    assert below.strip() == "−50.0 %, untested: n < 2"
    assert "×" not in text
    assert "± : half-width of the 95 % confidence interval of the mean" in text
    assert "base: n=2: too few runs" in text


def test_json_and_csv_formats() -> None:
    rows = _rows()
    data = json.loads(format_comparison(rows, "json"))
    assert [d["n"] for d in data] == [2, 1]
    parsed = list(csv.DictReader(io.StringIO(format_comparison(rows, "csv"))))
    assert list(parsed[0]) == comparison_columns(rows)
    assert parsed[0]["n"] == "2"
    assert float(parsed[1]["energy_total_j_ratio"]) == pytest.approx(0.5)
    assert parsed[1]["energy_total_j_std"] == ""
    cols = comparison_columns(rows)
    i = cols.index("energy_total_j")
    assert cols[i:i + 11] == ["energy_total_j", *(f"energy_total_j_{s}" for s in (
        "n", "std", "ci_low", "ci_high", "cv", "ratio", "rel_diff", "rel_diff_ci_low",
        "rel_diff_ci_high", "p_value"))]
    assert cols[-1] == "warnings" and "mixed" not in cols


def test_markdown_and_latex_formats() -> None:
    md = format_comparison(_rows(), "markdown")
    assert md.splitlines()[1].startswith("|---|")
    assert "| energy total (J) |" in md
    tex = format_comparison(_rows(), "latex")
    assert r"\begin{tabular}{@{}lrr@{}}" in tex
    assert r"new\_model" in tex and r"$\pm$" in tex and r"$-$50.0 \%" in tex
    assert "−" not in tex and "≥" not in tex


def test_unknown_format() -> None:
    with pytest.raises(ReportError, match="accepted"):
        format_comparison(_rows(), "yaml")
    assert set(FORMATS) == {"table", "json", "csv", "markdown", "latex"}


def test_format_reports() -> None:
    reports = [fake_report("a", cpu_j=1.0), fake_report("b", cpu_j=2.0)]
    rows = list(csv.reader(io.StringIO(format_reports(reports, "csv"))))
    assert tuple(rows[0]) == LEDGER_COLUMNS and len(rows) == 3
    assert json.loads(format_reports(reports[:1], "json"))["name"] == "a"
    assert len(json.loads(format_reports(reports, "json"))) == 2
    table = format_reports(reports[:1], "table")
    assert "channel" in table and "cpu0" in table and "counter" in table


# -- loading -----------------------------------------------------------------------------------
def _save(report: Report, out: Path, dirname: str) -> Path:
    run_dir = out / dirname
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "report.json", report.to_dict())
    return run_dir


def test_load_folder_orders_by_start(tmp_path: Path) -> None:
    late = fake_report("late", cpu_j=1.0, minute=5)
    early = fake_report("early", cpu_j=1.0, minute=1)
    _save(late, tmp_path / "runs", "20260101T120000Z-a")  # sorts first by name
    _save(early, tmp_path / "runs", "20260101T120000Z-b")
    (tmp_path / "runs" / "runs.csv").write_text("ignored\n")
    assert len(expand_runs([tmp_path / "runs"])) == 2
    assert [r.name for r in load_reports([tmp_path / "runs"])] == ["early", "late"]
    # Explicit paths keep the order given.
    paths = expand_runs([tmp_path / "runs"])
    assert [r.name for r in load_reports(paths)] == ["late", "early"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        load_reports([tmp_path / "missing"])
    with pytest.raises(ReportError, match="no run given"):
        load_reports([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="neither a run directory"):
        load_reports([tmp_path / "empty"])


# -- helpers -----------------------------------------------------------------------------------
def test_number_formatting_and_tables() -> None:
    assert format_number(None) == "-"
    assert format_number(1234.5) == "1234"
    assert format_number(12.345) == "12.35"
    assert format_number(0.012345) == "0.01235"
    assert format_number(0) == "0"
    text = render_table(["name", "value"], [["a", "1.5"], ["bb", "10.25"]])
    lines = text.splitlines()
    assert lines[1].startswith("----")
    assert lines[2].endswith("  1.5") and lines[3].endswith("10.25")  # numbers right-aligned
    assert latex_escape(r"a_b & 100% {x} \ ~") == \
        r"a\_b \& 100\% \{x\} \textbackslash{} \textasciitilde{}"


# -- grouping, exclusions, statistics, warnings ---------------------------------------
def _series(name: str, energies: list[float], source: str | None = None,
            **fields: object) -> list:
    runs = [fake_report(name, cpu_j=e, minute=i, **fields) for i, e in enumerate(energies)]
    return [(source, r) for r in runs] if source is not None else runs


DENSE = [500.0, 510.0, 495.0, 505.0, 490.0]
SPARSE = [300.0, 305.0, 295.0, 310.0, 290.0]


def test_groups_by_source_when_several_arguments() -> None:
    runs = _series("train", DENSE, "runs/dense/") + _series("train", SPARSE, "runs/sparse/")
    rows = compare(runs)
    assert [(r["label"], r["n"], r["by"]) for r in rows] == [("dense", 5, "dir"),
                                                              ("sparse", 5, "dir")]
    dense, sparse = rows
    assert dense["energy_total_j"] == pytest.approx(statistics.fmean(DENSE))
    assert dense["energy_total_j_std"] == pytest.approx(statistics.stdev(DENSE))
    half = 2.7764451051977987 * statistics.stdev(DENSE) / math.sqrt(5)  # t(0.975, 4)
    assert dense["energy_total_j_ci_low"] == pytest.approx(statistics.fmean(DENSE) - half)
    assert dense["energy_total_j_cv"] == pytest.approx(
        statistics.stdev(DENSE) / statistics.fmean(DENSE))
    assert dense["energy_total_j_rel_diff"] == 0.0
    assert sparse["energy_total_j_rel_diff"] == pytest.approx(300 / 500 - 1)
    assert sparse["energy_total_j_rel_diff_ci_low"] < -0.4 < sparse[
        "energy_total_j_rel_diff_ci_high"]
    assert sparse["energy_total_j_p_value"] < 1e-6
    assert sparse["sources"] == ["runs/sparse/"]
    # One argument: by name (both sets share the name here: one group)
    one = compare([("runs/", r) for _, r in runs])
    assert [(r["label"], r["n"], r["by"]) for r in one] == [("train", 10, "name")]


def test_source_labels_are_shortened() -> None:
    from energymeter.analysis.groups import short_sources

    labels = short_sources(["/home/me/exp/runs/baseline", "/home/me/exp/runs/pruned/",
                            "/home/me/exp/runs/pruned/20260101T120000Z-x/report.json"])
    assert labels == {"/home/me/exp/runs/baseline": "baseline",
                      "/home/me/exp/runs/pruned/": "pruned",
                      "/home/me/exp/runs/pruned/20260101T120000Z-x/report.json":
                          "pruned/20260101T120000Z-x"}
    assert short_sources(["a/" + "x" * 60, "b"])["a/" + "x" * 60].startswith("…")


def test_duplicates_count_once() -> None:
    dense, sparse = _series("d", DENSE, "dense/"), _series("s", SPARSE, "sparse/")
    rows = compare(dense + sparse + dense)
    assert [(r["label"], r["n"]) for r in rows] == [("dense", 5), ("sparse", 5)]
    assert rows[0]["duplicates_dropped"] == 5
    assert any("5 duplicate runs dropped" in w for w in comparison_warnings(rows))
    # A folder and one of its runs: the run counts once, in the folder's group
    rows = compare(dense + [("dense/x", dense[0][1])])
    assert [(r["label"], r["n"], r["duplicates_dropped"]) for r in rows] == [("dense", 5, 1)]


def test_group_by_tag_command_group_and_no_group() -> None:
    runs = (_series("a", DENSE, tags={"method": "dense"}, command=("python", "d.py"))
            + _series("b", SPARSE, tags={"method": "sparse"}, group_id="g2")
            + [fake_report("c", cpu_j=1.0, tags={"lr": 3e-4})])
    rows = compare(runs, by="tag:method")
    assert [(r["label"], r["n"]) for r in rows] == [("method=dense", 5), ("method=sparse", 5),
                                                     ("method=(none)", 1)]
    assert [r["label"] for r in compare(runs, by="tag:lr")] == ["lr=(none)", "lr=0.0003"]
    assert [r["label"] for r in compare(runs, by="command")] == ["python d.py",
                                                                 "(no command)"]
    assert [r["label"] for r in compare(runs, by="group")] == ["(no group)", "g2"]
    rows = compare(runs, group=False)
    assert len(rows) == 11 and all(r["n"] == 1 and r["by"] == "run" for r in rows)
    for bad in ("colour", "tag:", "tag: "):
        with pytest.raises(ReportError, match="accepted: auto"):
            compare(runs, by=bad)


def test_warmup_runs_are_counted_not_compared() -> None:
    runs = [fake_report("t", cpu_j=900.0, warmup=True)] + _series("t", DENSE)
    (row,) = compare(runs)
    assert (row["n"], row["warmup"], len(row["warmup_run_ids"])) == (5, 1, 1)
    assert row["energy_total_j"] == pytest.approx(statistics.fmean(DENSE))
    headers, _ = comparison_table([row])
    assert headers[1] == "t (n=5, +1 warm-up)"
    (only,) = compare([fake_report("w", cpu_j=1.0, warmup=True)])
    assert only["n"] == 0 and only["energy_total_j"] is None
    assert any("warm-up" in w for w in only["warnings"])
    format_comparison([only], "table")


def test_nested_runs_are_left_out_or_compared_instead() -> None:
    parents = _series("job", DENSE)
    nested = [fake_report("inner", cpu_j=e - 100, minute=i, parent_run_id=p.run_id)
              for i, (e, p) in enumerate(zip(DENSE, parents, strict=True))]
    (row,) = compare(parents + nested, by="auto")
    assert (row["label"], row["n"], row["nested_excluded"]) == ("job", 5, 5)
    assert any("5 nested runs left out" in w for w in row["warnings"])
    (row,) = compare(parents + nested, nested=True)
    assert (row["label"], row["n"], row["parents_replaced"]) == ("inner", 5, 5)
    assert row["energy_total_j"] == pytest.approx(statistics.fmean(DENSE) - 100)
    # A parent not loaded: the nested run is an ordinary run
    assert [r["n"] for r in compare(nested)] == [5]


def test_nested_cycle_in_bad_files_keeps_one_run() -> None:
    a = fake_report("a", cpu_j=1.0, minute=0, run_id="aaaa", parent_run_id="bbbb")
    b = fake_report("b", cpu_j=1.0, minute=1, run_id="bbbb", parent_run_id="aaaa")
    assert [r["label"] for r in compare([a, b])] == ["a"]


def test_warnings_small_noisy_not_significant_and_mixed() -> None:
    base = _series("base", [100.0, 101.0, 99.0])
    noisy = _series("noisy", [80.0, 120.0, 100.0, 60.0, 140.0])
    rows = compare(base + noisy + _series("two", [50.0, 51.0]))
    warnings = comparison_warnings(rows)
    assert any(w.startswith("two: n=2: too few runs for a confidence interval") for w in warnings)
    assert not any(w.startswith("base: n=3") for w in warnings)
    assert any(w.startswith("noisy: energy total varies by 32 % between runs (CV > 10 %): noisy")
               for w in warnings)
    p = rows[1]["energy_total_j_p_value"]
    assert p >= 0.05
    assert any(w.startswith("noisy vs base: energy total differs by +0.0 %, not significant "
                            f"(p = {p:.2g})") for w in warnings)
    text = format_comparison(rows)
    assert f"p = {p:.2g}, not significant" in text and "×" not in text
    # a group mixing regions, PUE, carbon basis and hardware
    carbon = {"region": "SE", "pue": 1.0, "basis": "generation", "emissions_g": 1.0}
    mixed = (_series("m", [10.0, 11.0, 12.0], carbon=carbon)
             + [fake_report("m", cpu_j=10.0, run_id="deadbeef-1",
                            carbon={**carbon, "region": "DE", "pue": 1.4}),
                fake_report("m", cpu_j=10.0, run_id="cafebabe-1", gpu_j=5.0, carbon=carbon)])
    (row,) = compare(mixed)
    assert set(row["mixed"]) == {"region", "PUE", "hardware"}
    assert row["mixed"]["region"]["DE"] == ["deadbeef-1"]
    warnings = row["warnings"]
    assert any(w.startswith("m: runs differ in region: SE (4 runs); DE (1 run: deadbeef)")
               for w in warnings)
    assert any("runs differ in PUE: 1.0 (4 runs); 1.4 (1 run: deadbeef)" in w for w in warnings)
    assert any("runs differ in hardware" in w and "cafebabe" in w for w in warnings)
    basis = _series("b", [1.0, 1.0], carbon={**carbon, "basis": "lifecycle"})
    (row,) = compare(_series("b", [1.0, 1.0], carbon=carbon) + basis)
    assert "carbon basis" in row["mixed"]


def _model(tdp_w: float, source: str = "table") -> Channel:
    return Channel("cpu0", "cpu", "Xeon", "model", "model",
                   meta={"tdp_w": tdp_w, "idle_w": 0.3 * tdp_w, "tdp_source": source})


def test_a_group_mixing_hosts_models_or_baselines_says_so() -> None:
    """Two machines of one name, estimates from different TDPs, and runs with and without an
    idle baseline, averaged in one group: each is named, with the runs on each side."""
    same = [fake_report("h", cpu_j=10.0, host={"hostname": "node1"}) for _ in range(3)]
    other = fake_report("h", cpu_j=10.0, host={"hostname": "node2"}, run_id="0badc0de-1")
    (row,) = compare([*same, other])
    assert any(w.startswith("h: runs differ in host: node1 (3 runs); node2 (1 run: 0badc0de)")
               for w in row["warnings"])
    models = [fake_report("e", cpu_j=10.0, cpu=_model(125.0)) for _ in range(2)]
    models.append(fake_report("e", cpu_j=10.0, cpu=_model(8.0, "default"), run_id="facade00-1"))
    (row,) = compare(models)
    assert "hardware" not in row["mixed"]
    [warning] = [w for w in row["warnings"] if "runs differ in CPU energy model" in w]
    assert "TDP 125 W" in warning and "TDP 8 W, idle 2.4 W (default) (1 run: facade00)" in warning
    baseline = {"duration_s": 10.0, "power_w": {"cpu": 5.0}}
    runs = [fake_report("b", cpu_j=10.0, baseline=baseline) for _ in range(2)]
    (row,) = compare([*runs, fake_report("b", cpu_j=10.0, run_id="beefcafe-1")])
    assert any("runs differ in idle baseline: measured (2 runs); none (1 run: beefcafe)" in w
               for w in row["warnings"])


def test_groups_estimated_with_different_cpu_models_are_flagged() -> None:
    rows = compare([*[fake_report("a", cpu_j=10.0, cpu=_model(125.0)) for _ in range(3)],
                    *[fake_report("b", cpu_j=20.0, cpu=_model(65.0)) for _ in range(3)]])
    warnings = comparison_warnings(rows)
    assert any(w.startswith("cpu energy is estimated with different models (a: Xeon: TDP 125 W")
               and "b: Xeon: TDP 65 W" in w for w in warnings)
    same = compare([*[fake_report("a", cpu_j=10.0, cpu=_model(125.0)) for _ in range(3)],
                    *[fake_report("b", cpu_j=20.0, cpu=_model(125.0)) for _ in range(3)]])
    assert not any("different models" in w for w in comparison_warnings(same))


def test_groups_with_different_carbon_settings_are_flagged() -> None:
    carbon = {"region": "SE", "pue": 1.0, "emissions_g": 1.0}
    rows = compare(_series("a", DENSE, carbon=carbon)
                   + _series("b", SPARSE, carbon={**carbon, "region": "PL"}))
    assert any(w.startswith("emissions compare different carbon settings (a: SE, PUE 1.0; "
                            "b: PL, PUE 1.0)") for w in comparison_warnings(rows))


def test_peak_memory_energy_per_item_and_kinds() -> None:
    runs = [fake_report("x", cpu_j=100.0 + i, items=50.0, rss=2**20,
                        minute=i) for i in range(3)]
    runs = [Report(**{**r.__dict__, "resources": {**r.resources, "peak_memory_bytes": 2**21,
                                                  "memory_basis": "pss"}}) for r in runs]
    (row,) = compare(runs)
    assert row["peak_memory_bytes"] == 2**21 and row["memory_basis"] == "pss"
    assert row["energy_per_item_j"] == pytest.approx(101 / 50)
    headers, table = comparison_table([row])
    labels = [r[0] for r in table]
    assert "peak PSS (MiB)" in labels and "energy per item (J)" in labels
    (row,) = compare([fake_report("y", cpu_j=1.0, rss=3 * 2**20)])  # no PSS: the RSS
    assert row["peak_memory_bytes"] == 3 * 2**20 and row["memory_basis"] == "rss"
    assert "energy_per_item_j" not in row


def test_table_cells_footer_and_width() -> None:
    rows = compare(_series("a", DENSE, "dense/") + _series("b", SPARSE, "sparse/")
                   + _series("c", [500.0, 520.0, 480.0, 515.0, 485.0], "more/"))
    text = format_comparison(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["dense", "(n=5)", "sparse", "(n=5)", "more", "(n=5)"]
    assert max(len(line) for line in lines if not line.startswith("warning")) <= 100
    energy = lines.index(next(line for line in lines if line.startswith("energy total (J)")))
    assert "500.0 ± 9.8" in lines[energy] and "300.0 ± 9.8" in lines[energy]
    assert "−40.0 % [" in lines[energy + 1] and "+0.0 % [" in lines[energy + 1]
    assert "p < 0.001" in lines[energy + 2] and "not significant" in lines[energy + 2]
    assert any(line.startswith("± : half-width of the 95 % confidence interval") for line in lines)
    assert any("Welch's t-test" in line for line in lines)
    # Two groups: the difference on one line under the value
    two = format_comparison(rows[:2]).splitlines()
    assert two[3].strip().startswith("−40.0 % [") and two[3].rstrip().endswith("p < 0.001")
    md = format_comparison(rows, "markdown")  # as the paper tables: the difference under
    assert "| energy total (J) | 500.0 ± 9.8 | 300.0 ± 9.8 |" in md and "- warning:" in md
    assert "| difference |  | −40.0 % [" in md


def test_json_and_csv_carry_every_number() -> None:
    rows = compare(_series("a", DENSE, "dense/") + _series("b", SPARSE, "sparse/"))
    data = json.loads(format_comparison(rows, "json"))
    assert data[1]["energy_total_j_p_value"] == pytest.approx(rows[1]["energy_total_j_p_value"])
    assert data[1]["warnings"] == rows[1]["warnings"] and data[1]["mixed"] == {}
    parsed = list(csv.DictReader(io.StringIO(format_comparison(rows, "csv"))))
    for key in ("energy_total_j", "energy_total_j_std", "energy_total_j_ci_low",
                "energy_total_j_ci_high", "energy_total_j_cv", "energy_total_j_n",
                "energy_total_j_rel_diff", "energy_total_j_rel_diff_ci_low",
                "energy_total_j_rel_diff_ci_high", "energy_total_j_p_value"):
        assert float(parsed[1][key]) == pytest.approx(rows[1][key]), key


def test_target_in_compare() -> None:
    def logged(name: str, energy: float, minute: int, reach: bool = True) -> Report:
        logs = tuple({"t_s": t, "energy_j": energy * t / 10,
                      "metrics": {"acc": (0.95 if reach else 0.5) * t / 10}}
                     for t in (2.0, 5.0, 10.0))
        return fake_report(name, cpu_j=energy, minute=minute, logs=logs)

    runs = ([("d/", logged("d", e, i)) for i, e in enumerate(DENSE)]
            + [("s/", logged("s", e, i, reach=i != 4)) for i, e in enumerate(SPARSE)])
    rows = compare(runs, target="acc>=0.9")
    dense, sparse = rows
    assert dense["target"] == "acc ≥ 0.9" and dense["target_reached"] == 5
    # acc reaches 0.9 at 0.9/0.95 of the way from t = 5 to t = 10... linear: t = 10 * 0.9/0.95
    assert dense["time_to_target_s"] == pytest.approx(10 * 0.9 / 0.95)
    assert dense["energy_to_target_j"] == pytest.approx(statistics.fmean(DENSE) * 0.9 / 0.95)
    assert sparse["target_reached"] == 4 and sparse["energy_to_target_j_n"] == 4
    assert sparse["energy_to_target_j_p_value"] < 0.001
    assert any("s: 4 of 5 runs reached acc ≥ 0.9" in w for w in sparse["warnings"])
    text = format_comparison(rows)
    assert "energy to acc ≥ 0.9 (J)" in text and "time to acc ≥ 0.9 (s)" in text
    assert "reached acc ≥ 0.9" in text and "4 of 5" in text
    with pytest.raises(ReportError, match="accepted: METRIC=VALUE"):
        compare(runs, target="acc~0.9")
