"""Experiment metadata and helpers of a run: tags, values set after the fact, items counted,
repeats with warm-up, the idle baseline and early estimates."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from energymeter import Report, measure, repeat
from energymeter.errors import ConfigError
from energymeter.session.command import repeat_command, run_command
from energymeter.session.experiment import parse_tag
from tests.fakes.powercap import FakePowercap
from tests.timing import until

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]


def ledger_rows(out: Path) -> list[dict[str, str]]:
    with (out / "runs.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_tags_are_in_the_report_and_the_ledger(tmp_path: Path) -> None:
    with measure("tagged", out=tmp_path, powercap_root=tmp_path / "absent", region="SE",
                 tags={"method": "sparse", "lr": 3e-4, "pruned": True}) as m:
        pass
    r = Report.load(m.report.path)
    assert r.tags == {"method": "sparse", "lr": 3e-4, "pruned": True}
    (row,) = ledger_rows(tmp_path)
    assert json.loads(row["tags"]) == {"lr": 0.0003, "method": "sparse", "pruned": True}


@pytest.mark.parametrize("tags", [{"a": [1]}, {"": 1}, {"x": float("nan")}, ["a=1"], {1: "x"}])
def test_bad_tags_say_what_is_accepted(tmp_path: Path, tags: object) -> None:
    with pytest.raises(ConfigError, match="accepted: a mapping of names to strings"):
        measure("bad", out=tmp_path, tags=tags)


def test_cli_tags_read_numbers_as_numbers() -> None:
    assert parse_tag("lr=3e-4") == ("lr", 3e-4)
    assert parse_tag("method=sparse") == ("method", "sparse")
    assert parse_tag("flag=true") == ("flag", True)
    assert parse_tag("note=a=b") == ("note", "a=b")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_tag("nokey")


def test_set_before_and_after_stop_updates_report_and_ledger(tmp_path: Path) -> None:
    with measure("valued", out=tmp_path, powercap_root=tmp_path / "absent", region="SE") as m:
        m.set(dataset="filtered")
    m.set(final_acc=0.91)  # after the run: evaluation came later
    assert m.report.values == {"dataset": "filtered", "final_acc": 0.91}
    assert Report.load(m.report.path).values == {"dataset": "filtered", "final_acc": 0.91}
    (row,) = ledger_rows(tmp_path)  # the row was replaced, not duplicated
    assert json.loads(row["values"]) == {"dataset": "filtered", "final_acc": 0.91}


def test_count_gives_energy_per_item(rapl40: FakePowercap) -> None:
    with measure("items", powercap_root=rapl40.root, region="SE") as m:
        for _ in range(10):
            m.count(64)
        time.sleep(0.2)
    r = m.report
    assert r.items == 640
    assert r.energy_per_item_j == pytest.approx(r.total_energy_j / 640)
    assert Report.load(r.path).energy_per_item_j == r.energy_per_item_j
    with pytest.raises(Exception, match="accepted: a number of items >= 0"):
        m.count(-1)


def test_a_killed_run_keeps_its_metadata_items_and_values(rapl40: FakePowercap,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import time
        from energymeter import measure
        with measure("victim", out={str(out)!r}, powercap_root={str(rapl40.root)!r},
                     region="SE", tags={{"method": "dense"}}) as m:
            m.set(seed=3)
            m.count(100)
            time.sleep(1.2)
            m.count(50)
            print("ready", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(1.2)
    proc.kill()
    proc.wait()
    (run_dir,) = out.glob("*-victim-*")
    r = Report.load(run_dir)
    assert r.status == "interrupted" and r.tags == {"method": "dense"}
    assert r.values == {"seed": 3} and r.items == 150


def test_repeat_shares_a_group_and_marks_warmups(tmp_path: Path) -> None:
    calls = []

    def train(m) -> float:  # type: ignore[no-untyped-def]
        m.log(step=len(calls))
        calls.append(m)
        return 0.5

    result = repeat(train, n=3, warmup=1, out=tmp_path, powercap_root=tmp_path / "absent",
                    region="SE", tags={"method": "dense"})
    assert len(result.reports) == 3 and len(result.warmup_reports) == 1 and len(calls) == 4
    assert {r.group_id for r in (*result.reports, *result.warmup_reports)} == {result.group_id}
    assert [r.warmup for r in result.warmup_reports] == [True]
    assert not any(r.warmup for r in result.reports)
    assert all(r.tags == {"method": "dense"} and r.name == "test_repeat_shares_a_group_and_"
               "marks_warmups.<locals>.train" for r in result.reports)
    assert result.results == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="whole number"):
        repeat(train, n=0)


def test_cli_repeat_warmup_and_cooldown(tmp_path: Path) -> None:
    seen = []
    results = repeat_command([PY, "-c", "pass"], 2, warmup=1, cooldown_s=0.2,
                             on_run=lambda i, r: seen.append((i, time.monotonic())),
                             out=tmp_path, region="SE", powercap_root=tmp_path / "absent",
                             tags={"method": "x"})
    assert len(results) == 3 and [r.report.warmup for r in results] == [True, False, False]
    assert len({r.report.group_id for r in results}) == 1
    assert all(b[1] - a[1] >= 0.2 for a, b in zip(seen, seen[1:], strict=False))
    assert len(ledger_rows(tmp_path)) == 3


def test_repeats_stop_at_the_first_run_that_fails(tmp_path: Path) -> None:
    results = repeat_command(["sh", "-c", "exit 3"], 4, out=tmp_path, region="SE",
                             powercap_root=tmp_path / "absent")
    assert len(results) == 1 and results[0].exit_code == 3


def test_cli_run_repeat_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENERGYMETER_REGION": "SE",
           "ENERGYMETER_POWERCAP_ROOT": str(tmp_path / "absent")}
    proc = subprocess.run([PY, "-m", "energymeter", "run", "--out", str(tmp_path / "runs"),
                           "--repeat", "2", "--tag", "method=sparse", "--items", "1000",
                           "--json", str(tmp_path / "all.json"), "--", PY, "-c", "pass"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 run(s) in group" in proc.stderr
    data = json.loads((tmp_path / "all.json").read_text())
    assert len(data) == 2 and all(d["tags"] == {"method": "sparse"} for d in data)
    assert all(d["items"] == 1000 and d["energy_per_item_j"] > 0 for d in data)


def test_a_nested_run_inherits_tags_and_group(tmp_path: Path) -> None:
    inner = ("from energymeter import measure\n"
             "with measure('inner', region='SE') as m:\n"
             "    pass\n")
    result = run_command([PY, "-c", inner], out=tmp_path, region="SE",
                         powercap_root=tmp_path / "absent", tags={"method": "sparse"},
                         group_id="g1", env={**os.environ, "PYTHONPATH": str(REPO),
                                             "ENERGYMETER_OUT": str(tmp_path)})
    assert result.exit_code == 0
    (inner_dir,) = tmp_path.glob("*-inner-*")
    nested = Report.load(inner_dir)
    assert nested.tags == {"method": "sparse"} and nested.group_id == "g1"
    assert nested.parent_run_id == result.report.run_id


def test_idle_baseline_gross_idle_net_and_reuse(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from energymeter.probes.proc import CpuSeconds
    from energymeter.session import baseline

    # An idle machine as /proc/stat would say (this one may be busy with other jobs, and a
    # baseline measured under load is never reused).
    ticks = iter(range(1, 10**6))
    monkeypatch.setattr(baseline, "cpu_seconds",
                        lambda: CpuSeconds((t := next(ticks)) * 0.01, 0.0, t * 10.0))
    fake = FakePowercap(tmp_path / "pc", power_w={"package-0": 40.0}, dram=False)
    with fake.start():
        with measure("first", powercap_root=fake.root, region="SE", out=tmp_path / "runs",
                     baseline_s=0.5) as m:
            fake.set_power("package-0", 60.0)  # the run draws 20 W over the idle 40 W
            time.sleep(0.6)
        fake.set_power("package-0", 40.0)
        b = m.report.baseline
        # Tolerances add what the fake's real-time counters measurably lagged (FakePowercap
        # .lag_j): over the 0.5 s baseline, its 0.05 s windows, and the run.
        idle_w_tol = 0.05 * 40 + fake.lag_j(60.0) / 0.5
        assert b["source"] == "measured"
        assert abs(b["power_w"]["cpu0"] - 40) <= idle_w_tol
        cpu = b["channels"]["cpu0"]
        d = m.report.duration_s
        assert abs(cpu["gross_j"] - 60 * d) <= 0.05 * 60 * d + fake.lag_j(60.0)
        assert abs(cpu["idle_j"] - 40 * d) <= idle_w_tol * d
        assert abs(cpu["net_j"] - 20 * d) <= 0.15 * 20 * d + fake.lag_j(60.0) + idle_w_tol * d
        assert b["net_total_j"] == cpu["net_j"]
        assert b["power_std_w"]["cpu0"] < 2 + fake.lag_j(60.0) / 0.05
        with measure("second", powercap_root=fake.root, region="SE", out=tmp_path / "runs",
                     baseline_s=0.5) as m2:
            pass
        assert m2.report.baseline["source"] == "reused"
        assert m2.report.baseline["measured_at"] == b["measured_at"]
    fake.close()
    lines = (tmp_path / "runs" / "baselines.jsonl").read_text().splitlines()
    assert len(lines) == 1


def test_a_baseline_measured_under_load_is_flagged(tmp_path: Path) -> None:
    """Two busy loops on every CPU of the machine while the baseline is measured: its busy
    CPU share is recorded, it is flagged, and the run says what to do. Reused, it still is."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]

    def spinning(pid: int) -> bool:  # its user time (clock ticks) has started to grow
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11]) > 5

    try:
        assert until(lambda: all(spinning(h.pid) for h in hogs))
        with measure("busy", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0,
                     baseline_s=0.5) as m:
            pass
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    b = m.report.baseline
    assert b["busy_cpu_share"] > 0.5 and b["under_load"] is True
    [warning] = [w for w in m.report.warnings if "idle baseline was measured while" in w]
    assert "measure the baseline on an idle machine" in warning
    with measure("again", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0,
                 baseline_s=0.5) as m2:
        pass
    # A flagged baseline is never reused: the next run measures again.
    assert m2.report.baseline["source"] == "measured"
    assert not any("(reused)" in w for w in m2.report.warnings)


def test_an_idle_baseline_is_not_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """The machine's CPU times as /proc/stat would give them: 2 % busy is idle enough."""
    from energymeter.probes.proc import CpuSeconds
    from energymeter.session import baseline

    times = iter([CpuSeconds(100.0, 0.0, 1000.0), CpuSeconds(102.0, 0.0, 1100.0)])
    monkeypatch.setattr(baseline, "cpu_seconds", lambda: next(times))
    with measure("idle", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0,
                 baseline_s=0.2) as m:
        pass
    b = m.report.baseline
    assert b["busy_cpu_share"] == pytest.approx(0.02) and b["under_load"] is False
    assert not any("idle baseline" in w for w in m.report.warnings)


def test_estimate_total_projects_with_an_interval(rapl40: FakePowercap) -> None:
    with measure("estimate", powercap_root=rapl40.root, region="SE") as m:
        estimates = []
        slept_s = 0.0  # what the epochs really took (a busy machine wakes a sleep late)
        for epoch in range(1, 5):
            t0 = time.monotonic()
            time.sleep(0.15)
            slept_s += time.monotonic() - t0
            estimates.append(m.estimate_total(epoch, 10))
    first, last = estimates[0], estimates[-1]
    assert first.energy_low_j is None and first.intervals == 1  # one interval: no spread yet
    assert last.intervals == 4
    assert last.energy_low_j <= last.energy_j <= last.energy_high_j
    # 40 + 5 W; the projection scales the measured energy by 10/4, lag included
    assert abs(last.energy_j - 45.0 * last.duration_s) \
        <= 0.1 * 45.0 * last.duration_s + 2.5 * rapl40.lag_j(45.0)
    assert last.duration_s == pytest.approx(10 / 4 * slept_s, rel=0.2)
    assert last.emissions_g is not None and "projected at 4/10" in last.summary()
    with pytest.raises(ConfigError, match="0 < done <= total"), \
            measure("bad", powercap_root=rapl40.root, region="SE") as m:
        m.estimate_total(11, 10)


@pytest.mark.slow
def test_dense_against_pruned_example_runs_compared_in_one_command(tmp_path: Path) -> None:
    """The acceptance case: two groups of 5 runs of examples/train_mlp.py (dense, pruned) in
    one out dir; one compare gives mean ± CI per group and the difference with its CI and
    p-value; the same runs given twice count once; --target reads the example's logs."""
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENERGYMETER_REGION": "SE",
           "ENERGYMETER_POWERCAP_ROOT": str(tmp_path / "absent")}
    for method, prune in (("dense", "0"), ("pruned", "0.75")):
        proc = subprocess.run(
            [PY, "-m", "energymeter", "run", "--quiet", "--out", str(out), "--repeat", "5",
             "--tag", f"method={method}", "--", PY, str(REPO / "examples" / "train_mlp.py"),
             "--epochs", "3", "--samples", "6000", "--prune", prune],
            env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr

    def compare(*args: str) -> str:
        proc = subprocess.run([PY, "-m", "energymeter", "compare", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    table = compare(str(out), "--by", "tag:method", "--target", "val_acc=0.5")
    assert "method=dense (n=5)" in table and "method=pruned (n=5)" in table
    assert "±" in table and "half-width of the 95 % confidence interval" in table
    assert re.search(r"[+−-]\d+\.\d % \[[^]]+\], p [=<] ", table)  # difference, CI, p
    assert "energy to val_acc ≥ 0.5 (J)" in table and "5 of 5" in table
    rows = json.loads(compare(str(out), str(out), "--by", "tag:method", "--format", "json"))
    assert [r["n"] for r in rows] == [5, 5]  # the same 20 runs given twice: each counted once
    pruned = rows[1]
    assert pruned["energy_total_j_p_value"] is not None
    assert pruned["energy_total_j_rel_diff_ci_low"] < pruned["energy_total_j_rel_diff"]
    assert pruned["energy_total_j_rel_diff"] < pruned["energy_total_j_rel_diff_ci_high"]
