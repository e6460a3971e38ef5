"""End to end: folders of report.json files compared through `energymeter compare`
and `energymeter report --target` (grouping by argument and tag, duplicates, warm-up and nested
runs, the statistics printed, energy-to-target through a nested run's logs)."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import timedelta
from pathlib import Path

import pytest

from energymeter.analysis import energy_before, find_runs, load_reports, run_energy_to
from energymeter.errors import ReportError
from energymeter.report import Report
from energymeter.store import write_json_atomic
from tests.test_cli import invoke
from tests.test_compare import fake_report


def save(report: Report, folder: Path) -> Path:
    run_dir = folder / f"20260101T120000Z-{report.name}-{report.run_id[:8]}"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "report.json", report.to_dict())
    return run_dir


def experiment_run(method: str, energy_j: float, index: int, **fields: object) -> Report:
    """A 10 s run whose accuracy rises linearly to 0.95 (sparse: faster, to 0.95 at 8 s)."""
    end = 8.0 if method == "sparse" else 10.0
    logs = tuple({"t_s": t, "energy_j": energy_j * t / 10,
                  "metrics": {"epoch": i, "accuracy": round(0.95 * min(t, end) / end, 6)}}
                 for i, t in enumerate((2.0, 4.0, 6.0, 8.0, 10.0)))
    fields.setdefault("tags", {"method": method})
    return fake_report("train", cpu_j=energy_j, minute=index, logs=logs, **fields)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """dense/: 5 runs of about 500 ± 10 J; sparse/: 5 of about 300 ± 8 J."""
    rng = random.Random(11)
    for method, centre, spread in (("dense", 500, 10), ("sparse", 300, 8)):
        for i in range(5):
            save(experiment_run(method, rng.gauss(centre, spread), i), tmp_path / method)
    return tmp_path / "dense", tmp_path / "sparse"


def test_compare_two_folders(folders: tuple[Path, Path]) -> None:
    dense, sparse = folders
    code, out, err = invoke("compare", f"{dense}/", f"{sparse}/")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["dense", "(n=5)", "sparse", "(n=5)"]
    energy = next(i for i, line in enumerate(lines) if line.startswith("energy total (J)"))
    assert lines[energy].count("±") == 2
    assert "% [" in lines[energy + 1] and lines[energy + 1].rstrip().endswith("p < 0.001")
    assert "−" in lines[energy + 1]
    assert any(line.startswith("± : half-width of the 95 % confidence interval") for line in lines)
    assert max(len(line) for line in lines if not line.startswith("warning")) <= 100
    code, out, _ = invoke("compare", "--format", "json", str(dense), str(sparse))
    rows = json.loads(out)
    assert [(r["label"], r["n"]) for r in rows] == [("dense", 5), ("sparse", 5)]
    loaded = {r.run_id: r.total_energy_j for r in load_reports([dense, sparse])}
    mean_dense = sum(loaded[i] for i in rows[0]["run_ids"]) / 5
    mean_sparse = sum(loaded[i] for i in rows[1]["run_ids"]) / 5
    assert rows[0]["energy_total_j"] == pytest.approx(mean_dense)
    assert rows[1]["energy_total_j_rel_diff"] == pytest.approx(mean_sparse / mean_dense - 1)
    assert rows[1]["energy_total_j_rel_diff_ci_low"] < rows[1]["energy_total_j_rel_diff"] \
        < rows[1]["energy_total_j_rel_diff_ci_high"] < -0.3
    assert rows[1]["energy_total_j_p_value"] < 1e-6
    assert 0 < rows[0]["energy_total_j_ci_low"] < mean_dense < rows[0]["energy_total_j_ci_high"]


def test_compare_counts_a_folder_given_twice_once(folders: tuple[Path, Path]) -> None:
    dense, sparse = folders
    code, out, _ = invoke("compare", "--format", "json", str(dense), str(sparse), str(dense))
    assert code == 0
    rows = json.loads(out)
    assert [(r["label"], r["n"], r["duplicates_dropped"]) for r in rows] == [
        ("dense", 5, 5), ("sparse", 5, 0)]
    code, out, _ = invoke("compare", str(dense), str(sparse), str(dense))
    assert "warning: dense: 5 duplicate runs dropped (a run reached twice counts once)" in out
    # A folder and one of its runs
    one = sorted(dense.iterdir())[0]
    code, out, _ = invoke("compare", "--format", "json", str(dense), str(one))
    assert [r["n"] for r in json.loads(out)] == [5]


def test_compare_by_tag_in_one_folder(folders: tuple[Path, Path], tmp_path: Path) -> None:
    everything = tmp_path / "all"
    everything.mkdir()
    for folder in folders:
        for run in folder.iterdir():
            run.rename(everything / run.name)
    code, out, _ = invoke("compare", "--by", "tag:method", str(everything))
    assert code == 0
    assert out.splitlines()[0].split() == ["method=dense", "(n=5)", "method=sparse", "(n=5)"]
    code, out, _ = invoke("compare", str(everything))  # one argument: by name, one group
    assert out.splitlines()[0].split() == ["train", "(n=10)"]
    code, out, _ = invoke("compare", "--no-group", "--format", "json", str(everything))
    assert len(json.loads(out)) == 10


def test_bad_by_and_target_exit_2_before_reading(tmp_path: Path) -> None:
    for args in (("compare", "--by", "colour"), ("compare", "--target", "acc"),
                 ("report", "--target", "acc>0.9"), ("report", "--by", "tag:")):
        code, out, err = invoke(*args, str(tmp_path / "missing"))
        assert code == 2 and out == ""
        assert err.startswith("energymeter: error: ") and "accepted" in err, args


def test_report_target_per_run_and_per_group(folders: tuple[Path, Path]) -> None:
    dense, sparse = folders
    code, out, err = invoke("report", "--target", "accuracy=0.9", str(dense), str(sparse))
    assert code == 0, err
    assert out.startswith("energy to accuracy ≥ 0.9\n")
    assert out.count("train (") == 10 and "not reached" not in out
    code, out, _ = invoke("report", "--target", "accuracy=0.9", "--format", "json",
                          str(dense), str(sparse))
    result = json.loads(out)
    assert result["groups"] is None
    by_id = {r.run_id: r for r in load_reports([dense, sparse])}
    for run in result["runs"]:
        report = by_id[run["run_id"]]
        end = 8.0 if report.tags["method"] == "sparse" else 10.0
        assert run["duration_s"] == pytest.approx(end * 0.9 / 0.95, rel=1e-5)
        assert run["energy_j"] == pytest.approx(report.total_energy_j * run["duration_s"] / 10)
    code, out, _ = invoke("report", "--target", "accuracy=0.9", "--by", "dir",
                          str(dense), str(sparse))
    assert "dense (n=5)   5 of 5" in out and "sparse (n=5)  5 of 5" in out
    assert "±" in out
    code, out, _ = invoke("report", "--target", "accuracy>=0.99", "--by", "tag:method",
                          "--format", "json", str(dense))
    result = json.loads(out)
    assert [(g["label"], g["reached"], g["n"]) for g in result["groups"]] == [
        ("method=dense", 0, 5)]
    assert all(r["note"] == "not reached" for r in result["runs"])
    code, out, _ = invoke("report", "--target", "loss<=0.1", str(dense))
    assert out.count("metric not logged") == 5
    for fmt in ("csv", "markdown", "latex"):
        code, out, _ = invoke("report", "--target", "accuracy=0.9", "--by", "dir",
                              "--format", fmt, str(dense), str(sparse))
        assert code == 0 and out


def test_report_by_without_target_heads_each_group(folders: tuple[Path, Path]) -> None:
    code, out, _ = invoke("report", "--by", "dir", *map(str, folders))
    assert code == 0
    assert "== dense (5 runs)" in out and "== sparse (5 runs)" in out


def test_compare_with_warmup_and_target(folders: tuple[Path, Path]) -> None:
    dense, sparse = folders
    save(experiment_run("dense", 900.0, 9, warmup=True), dense)
    code, out, _ = invoke("compare", "--target", "accuracy=0.9", str(dense), str(sparse))
    assert code == 0
    assert out.splitlines()[0].split()[:5] == ["dense", "(n=5,", "+1", "warm-up)", "sparse"]
    assert "energy to accuracy ≥ 0.9 (J)" in out and "5 of 5" in out


# -- nested runs ---------------------------------------------------------------------------------
def nested_pair(tmp_path: Path, samples: bool = True) -> tuple[Report, Report, Path]:
    """`energymeter run` (10 J/s for 20 s, no logs) holding a measure() that starts 3.5 s in
    and logs accuracy."""
    parent = fake_report("job", cpu_j=200.0, duration_s=20.0, run_id="parent-0001",
                         command=("python", "train.py"))
    inner = experiment_run("dense", 150.0, 0, run_id="nested-0001", parent_run_id="parent-0001")
    inner = dataclasses.replace(inner, name="inner",
                                started_at=parent.started_at + timedelta(seconds=3.5))
    folder = tmp_path / "runs"
    parent_dir = save(parent, folder)
    save(inner, folder)
    if samples:
        rows = "".join(f"{t:.1f},{10.0 * t:.1f},0\n" for t in range(21))
        (parent_dir / "samples.csv").write_text("t_s,cpu0_j,rss_bytes\n" + rows)
    return parent, inner, folder


def test_target_through_a_nested_run(tmp_path: Path) -> None:
    _, inner, folder = nested_pair(tmp_path)
    parent = next(r for _, r in find_runs([folder]) if r.name == "job")
    assert energy_before(parent, 3.5) == pytest.approx(35.0)
    assert energy_before(parent, 0.0) == 0.0
    result = run_energy_to(parent, "accuracy=0.9", [inner])
    own = inner.energy_to("accuracy", 0.9)
    assert result["source"] == "nested" and result["reached"]
    assert result["energy_j"] == pytest.approx(35.0 + own["energy_j"])
    assert result["duration_s"] == pytest.approx(3.5 + own["duration_s"])
    assert result["emissions_g"] == pytest.approx(
        parent.emissions_g / parent.total_energy_j * result["energy_j"])
    assert "plus the 35 J spent before it" in result["note"]
    with pytest.raises(ReportError, match="ends before"):
        energy_before(parent, 99.0)
    # Through the CLI: the nested run is left out (part of its parent) and lends its logs
    code, out, _ = invoke("report", "--target", "accuracy=0.9", "--format", "json", str(folder))
    result = json.loads(out)
    assert [r["name"] for r in result["runs"]] == ["job"]
    assert result["runs"][0]["energy_j"] == pytest.approx(35.0 + own["energy_j"])
    assert result["notes"] == ["1 nested run(s) left out (part of a run shown; --nested shows "
                               "them instead)"]
    code, out, _ = invoke("report", "--target", "accuracy=0.9", "--nested", "--format", "json",
                          str(folder))
    assert [r["name"] for r in json.loads(out)["runs"]] == ["inner"]
    code, out, _ = invoke("compare", "--format", "json", str(folder))
    (row,) = json.loads(out)
    assert (row["label"], row["n"], row["nested_excluded"]) == ("job", 1, 1)
    code, out, _ = invoke("compare", "--nested", "--format", "json", str(folder))
    assert [(r["label"], r["parents_replaced"]) for r in json.loads(out)] == [("inner", 1)]


def test_target_through_a_nested_run_without_samples(tmp_path: Path) -> None:
    parent, inner, _ = nested_pair(tmp_path, samples=False)
    result = run_energy_to(parent, ("accuracy", 0.9, ">="), [inner])
    own = inner.energy_to("accuracy", 0.9)
    assert result["energy_j"] == pytest.approx(own["energy_j"])
    assert result["note"].startswith("figures of nested run nested-0 alone, from its start "
                                     "3.5 s into the run")
    assert run_energy_to(parent, "accuracy=0.99", [inner])["note"] == (
        "logged by nested run nested-0; not reached")
    assert run_energy_to(parent, "loss<=0.1", [inner])["logged"] is False
