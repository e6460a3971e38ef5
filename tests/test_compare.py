"""energymeter.analysis: loading, grouping (mean ± std, n), ratios and output formats."""

from __future__ import annotations

import csv
import io
import json
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


def fake_report(name: str, *, cpu_j: float, duration_s: float = 10.0, gpu_j: float | None = None,
                dram_j: float | None = None, rss: int = 100 * 2**20, gpu_mem: int = 0,
                cpu: Channel = CPU, status: str = "completed", minute: int = 0,
                emissions_g: float | None = None) -> Report:
    channels = [ChannelEnergy(cpu, cpu_j, cpu_j / duration_s)]
    if dram_j is not None:
        channels.append(ChannelEnergy(DRAM, dram_j, dram_j / duration_s))
    if gpu_j is not None:
        channels.append(ChannelEnergy(GPU, gpu_j, gpu_j / duration_s))
    start = T0 + timedelta(minutes=minute)
    total = sum(c.energy_j for c in channels)
    carbon = {"region": "SE", "g_per_kwh": 36.0, "pue": 1.0,
              "emissions_g": total / 3.6e6 * 36.0 if emissions_g is None else emissions_g}
    return Report(run_id=f"{name}-{minute:04d}-0000000000", name=name, status=status,
                  started_at=start, ended_at=start + timedelta(seconds=duration_s),
                  duration_s=duration_s, channels=tuple(channels), carbon=carbon,
                  resources={"cpu_time_s": 1.0, "peak_rss_bytes": rss,
                             "peak_gpu_memory_bytes": gpu_mem})


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
    assert comparison_warnings(compare([fake_report("a", cpu_j=1.0)])) == []


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
    assert "110.0 ± 14.1" in energy
    assert "55.00 (×0.50)" in energy
    assert "×ratio" in text


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
    assert cols[i:i + 3] == ["energy_total_j", "energy_total_j_std", "energy_total_j_ratio"]


def test_markdown_and_latex_formats() -> None:
    md = format_comparison(_rows(), "markdown")
    assert md.splitlines()[1].startswith("|---|")
    assert "| energy total (J) |" in md
    tex = format_comparison(_rows(), "latex")
    assert r"\begin{tabular}{lrr}" in tex
    assert r"new\_model" in tex and r"$\pm$" in tex and r"$\times$" in tex


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
