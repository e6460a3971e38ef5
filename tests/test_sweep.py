"""Studies (``energymeter sweep``, ``energymeter.sweep()``): the schedule (pure, property
tests), the grid and command templates, runs end to end through the CLI and in Python, the
tags and groups ``compare`` reads, resuming after a crash, and a changed plan refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energymeter
from energymeter.analysis import compare, find_runs, group_runs
from energymeter.errors import ConfigError
from energymeter.report import Report
from energymeter.session.command import CommandNotFoundError
from energymeter.session.sweep import (
    ORDERS,
    SCHEMA,
    Slot,
    check_commands,
    fill_command,
    finished_runs,
    grid_variants,
    make_schedule,
    parse_grid,
    plan,
    sweep,
)
from tests.test_cli import invoke

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
FAST = {"region": "SE", "interval_s": 0.01}


def reports_in(out: Path) -> list[Report]:
    return [found.report for found in find_runs([out])]


# -- the schedule (pure) -----------------------------------------------------------------------
SCHEDULES = st.tuples(st.integers(1, 7), st.integers(1, 5), st.integers(0, 3),
                      st.sampled_from(ORDERS), st.integers(-2**63, 2**63))


@settings(max_examples=150)
@given(SCHEDULES)
def test_every_slot_once_warmups_first_and_rounds_balanced(args: tuple) -> None:
    n, repeat, warmup, order, seed = args
    schedule = make_schedule(n, repeat, warmup=warmup, order=order, seed=seed)
    runs = warmup + repeat
    # Every (variant, repeat) exactly once.
    assert len(schedule) == n * runs
    assert Counter((s.variant, s.repeat) for s in schedule) == {
        (v, k): 1 for v in range(1, n + 1) for k in range(1, runs + 1)}
    # Per variant: repeats in order, its warm-ups first and marked.
    for v in range(1, n + 1):
        mine = [s for s in schedule if s.variant == v]
        assert [s.repeat for s in mine] == list(range(1, runs + 1))
        assert [s.warmup for s in mine] == [k <= warmup for k in range(1, runs + 1)]
    # Balance: after any prefix, the variants' run counts differ by at most one; each round
    # of n slots is one run of every variant.
    done: Counter[int] = Counter()
    for i, slot in enumerate(schedule, start=1):
        done[slot.variant] += 1
        counts = [done[v] for v in range(1, n + 1)]
        assert max(counts) - min(counts) <= 1
        if i % n == 0:
            assert len(set(counts)) == 1
    for k in range(runs):
        block = schedule[k * n:(k + 1) * n]
        assert sorted(s.variant for s in block) == list(range(1, n + 1))
        if order == "round-robin":
            assert [s.variant for s in block] == list(range(1, n + 1))
    # Same arguments, same schedule.
    assert make_schedule(n, repeat, warmup=warmup, order=order, seed=seed) == schedule


def test_the_random_order_depends_on_the_seed_and_shuffles_rounds() -> None:
    schedules = {make_schedule(6, 4, seed=seed) for seed in range(5)}
    assert len(schedules) == 5
    rounds = [tuple(s.variant for s in make_schedule(6, 4, seed=0)[k * 6:(k + 1) * 6])
              for k in range(4)]
    assert len(set(rounds)) > 1  # not one fixed order repeated
    assert make_schedule(2, 1, order="round-robin") == (Slot(1, 1, False), Slot(2, 1, False))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"repeat": 0}, "repeat=0"), ({"warmup": -1}, "warmup=-1"), ({"order": "shuffled"},
                                                                 "random, round-robin"),
    ({"seed": 1.5}, "seed=1.5"), ({"repeat": 10**6}, "at most"),
])
def test_bad_schedule_arguments_say_what_is_accepted(kwargs: dict, match: str) -> None:
    args = {"n_variants": 2, "repeat": 1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        make_schedule(args.pop("n_variants"), args.pop("repeat"), **args)


# -- the grid and the command ------------------------------------------------------------------
def test_grid_is_the_cartesian_product_in_grid_order_with_typed_tags() -> None:
    grid = parse_grid(["method=dense,sparse", "lr=1e-3, 3e-4"])
    assert grid == {"method": ["dense", "sparse"], "lr": ["1e-3", "3e-4"]}
    variants = grid_variants(grid)
    assert [v.index for v in variants] == [1, 2, 3, 4]
    assert [v.label for v in variants] == ["method=dense lr=1e-3", "method=dense lr=3e-4",
                                           "method=sparse lr=1e-3", "method=sparse lr=3e-4"]
    assert variants[0].tags == {"method": "dense", "lr": 0.001}  # as --tag reads it
    python = grid_variants({"n": [1, 2], "fast": [True]})
    assert [dict(v.tags) for v in python] == [{"n": 1, "fast": True}, {"n": 2, "fast": True}]
    assert python[0].texts == {"n": "1", "fast": "True"}


@pytest.mark.parametrize(("grid", "match"), [
    ({}, "at least one axis"), ({"method": "dense"}, "non-empty list"),
    ({"method": []}, "non-empty list"), ({"study": ["a"]}, "sets itself"),
    ({"repeat": ["a"]}, "sets itself"), ({"1x": ["a"]}, "letters, digits"),
    ({"m": ["a", "a"]}, "twice"), ({"m": [[1]]}, "list"), ({"m": [float("nan")]}, "finite"),
])
def test_bad_grids_are_refused(grid: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        grid_variants(grid)


@pytest.mark.parametrize(("specs", "match"), [
    (["method"], "AXIS=V1,V2"), (["=a"], "AXIS=V1,V2"), (["m=a,,b"], "empty value"),
    (["m=a", "m=b"], "given twice"), (["sweep_axes=a"], "sets itself"),
])
def test_bad_grid_options_are_refused(specs: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_grid(specs)


def test_the_command_template_fills_axes_only() -> None:
    variant = grid_variants({"method": ["sparse"], "lr": ["3e-4"]})[0]
    assert fill_command(["python", "-c", "print({'a': 1})", "--m={method}", "{lr}{lr}",
                         "{other}"], variant) == [
        "python", "-c", "print({'a': 1})", "--m=sparse", "3e-43e-4", "{other}"]


def test_a_variant_whose_program_is_missing_is_found_before_anything_runs() -> None:
    check_commands([PY, "{m}"], {"m": ["a", "b"]})
    with pytest.raises(CommandNotFoundError, match="nosuch-b"):
        check_commands(["nosuch-{m}"], {"m": ["b"]})


# -- end to end through the CLI ----------------------------------------------------------------
SCRIPT = "import sys; print('variant', *sys.argv[1:])"


def test_cli_sweep_tags_groups_and_compare(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    code, stdout, stderr = invoke(
        "sweep", "--out", str(out), "--region", "SE", "--interval", "0.01",
        "--grid", "method=dense,sparse", "--grid", "lr=1e-3,3e-4", "--repeat", "2",
        "--warmup", "1", "--study", "s1", "--tag", "host=ci", "--", PY, "-c", SCRIPT,
        "{method}", "{lr}")
    assert code == 0, stderr
    assert "study s1: 4 variant(s)" in stderr and "12 of 12 run(s) completed" in stderr
    reports = reports_in(out)
    assert len(reports) == 12
    assert {r.status for r in reports} == {"completed"}
    for r in reports:
        assert r.tags["study"] == "s1" and r.tags["sweep_axes"] == "method,lr"
        assert r.tags["host"] == "ci"
        assert r.warmup == (r.tags["repeat"] == 1)
        assert list(r.command[-2:]) == [r.tags["method"], {0.001: "1e-3", 0.0003: "3e-4"}[
            r.tags["lr"]]]
    # One repeat group per variant; the schedule file names them.
    by_variant: dict[int, set[str | None]] = {}
    for r in reports:
        by_variant.setdefault(r.tags["variant"], set()).add(r.group_id)
    assert all(len(g) == 1 for g in by_variant.values()) and len(by_variant) == 4
    saved = json.loads((out / "sweeps" / "s1.json").read_text())
    assert saved["schema"] == SCHEMA and saved["plan"]["seed"] == 0
    assert saved["group_ids"] == [by_variant[v].pop() for v in (1, 2, 3, 4)]
    # Runs happened in the schedule's order, which is balanced.
    ran = sorted(reports, key=lambda r: r.started_at)
    assert [(r.tags["variant"], r.tags["repeat"]) for r in ran] == [
        (s["variant"], s["repeat"]) for s in saved["schedule"]]
    # compare --by auto: one group per variant, in grid order, n = repeats.
    rows = compare(find_runs([out]))
    assert [g["label"] for g in rows] == [
        "method=dense lr=0.001", "method=dense lr=0.0003", "method=sparse lr=0.001",
        "method=sparse lr=0.0003"]
    assert [(g["n"], g["warmup"]) for g in rows] == [(2, 1)] * 4
    code, text, _ = invoke("compare", str(out), "--format", "csv")
    assert code == 0 and "method=sparse lr=0.0003" in text
    # --by group gives the same four groups.
    assert len(group_runs(reports, by="group").groups) == 4


def test_auto_grouping_needs_one_study(tmp_path: Path) -> None:
    def run(study: str, method: str) -> Report:
        with energymeter.measure("t", out=tmp_path, tags={
                "study": study, "sweep_axes": "method", "method": method,
                "variant": 1}, **FAST) as m:
            pass
        assert m.report is not None
        return m.report

    same = [run("a", "x"), run("a", "y"), run("a", "x")]
    grouping = group_runs(same)
    assert grouping.by == "tags:method"
    assert [(g.label, len(g.runs)) for g in grouping.groups] == [("method=x", 2),
                                                                   ("method=y", 1)]
    assert group_runs([*same, run("b", "x")]).by == "name"  # two studies: as before
    assert group_runs(same, by="name").by == "name"  # asked for: as asked


def test_output_passes_through_and_a_failing_run_does_not_stop_the_sweep(
        tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENERGYMETER_REGION": "SE"}
    script = "import sys; print('out', sys.argv[1]); sys.exit(int(sys.argv[1]))"
    base = [PY, "-m", "energymeter", "sweep", "--out", str(tmp_path / "runs"),
            "--grid", "code=0,3,4", "--order", "round-robin", "--interval", "0.01"]
    proc = subprocess.run([*base, "--", PY, "-c", script, "{code}"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr  # the first failure's code
    assert proc.stdout.split("\n") == ["out 0", "out 3", "out 4", ""]  # ours on stderr only
    assert "failed (exit 3)" in proc.stderr and "failed (exit 4)" in proc.stderr
    assert "1 of 3 run(s) completed" in proc.stderr
    proc = subprocess.run([*base, "--stop-on-failure", "--", PY, "-c", script, "{code}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout.split("\n") == ["out 0", "out 3", ""]


def test_a_run_killed_alone_fails_and_the_sweep_goes_on(tmp_path: Path) -> None:
    kill = "import os, signal, sys; sys.argv[1] == 'k' and os.kill(os.getpid(), signal.SIGKILL)"
    result = sweep([PY, "-c", kill, "{m}"], {"m": ["k", "ok"]}, order="round-robin",
                   out=tmp_path, **FAST)
    assert [r.status for r in result.runs] == ["interrupted", "completed"]
    assert not result.stopped and result.exit_code == 128 + signal.SIGKILL


def test_resume_after_the_sweep_is_killed_skips_finished_runs(tmp_path: Path) -> None:
    """The third command kills its parent, the sweep (SIGKILL: no cleanup); run again, the
    sweep runs the rest, the killed slot included, and nothing twice."""
    log = tmp_path / "calls.txt"
    script = ("import os, signal, sys\n"
              "with open(sys.argv[1], 'a') as f: f.write(sys.argv[2] + '\\n')\n"
              "if len(open(sys.argv[1]).read().split()) == 3:\n"
              "    os.kill(os.getppid(), signal.SIGKILL)\n")
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENERGYMETER_REGION": "SE"}
    args = [PY, "-m", "energymeter", "sweep", "--out", str(out), "--grid", "m=a,b,c",
            "--repeat", "2", "--study", "crash", "--interval", "0.01", "--", PY, "-c",
            script, str(log), "{m}"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert len(log.read_text().split()) == 3
    found = finished_runs(out, "crash")
    assert len(found.done) == 2 and len(found.unfinished) == 1 and found.count == 3
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "2 of 6 run(s) completed earlier: skipped" in second.stderr
    assert "1 earlier run(s) of this study did not complete" in second.stderr
    calls = log.read_text().split()
    assert len(calls) == 7  # 6 slots, the killed one twice
    assert Counter(calls) == Counter("aabbcc") + Counter([calls[2]])
    saved = json.loads((out / "sweeps" / "crash.json").read_text())
    assert [c for c in calls[3:]] == [  # the rest, in the schedule's order
        "abc"[s["variant"] - 1] for s in saved["schedule"][2:]]
    assert finished_runs(out, "crash").done == {(v, k) for v in (1, 2, 3) for k in (1, 2)}
    third = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and "6 of 6 run(s) completed earlier" in third.stderr
    assert len(log.read_text().split()) == 7


def test_a_changed_plan_is_refused_with_exit_2(tmp_path: Path) -> None:
    out = str(tmp_path / "runs")
    base = ["sweep", "--out", out, "--region", "SE", "--study", "fixed"]
    code, _, stderr = invoke(*base, "--grid", "m=a,b", "--", PY, "-c", "pass")
    assert code == 0, stderr
    for change in (["--grid", "m=a,b,c"], ["--grid", "m=a,b", "--seed", "1"],
                   ["--grid", "m=a,b", "--order", "round-robin"],
                   ["--grid", "m=a,b", "--repeat", "2"]):
        code, _, stderr = invoke(*base, *change, "--", PY, "-c", "pass")
        assert code == 2, change
        assert "was planned as: grid m=a,b; order random (seed 0); repeat 1" in stderr
        assert "cannot change" in stderr and "another --study" in stderr
    code, _, stderr = invoke(*base, "--grid", "m=a,b", "--", PY, "-c", "pass;")
    assert code == 2 and "command" in stderr
    assert len(reports_in(Path(out))) == 2  # nothing more ran


def test_runs_of_a_study_without_its_schedule_are_not_resumed(tmp_path: Path) -> None:
    sweep([PY, "-c", "pass"], {"m": ["a"]}, study="lost", out=tmp_path, **FAST)
    (tmp_path / "sweeps" / "lost.json").unlink()
    with pytest.raises(ConfigError, match="holds 1 run"):
        sweep([PY, "-c", "pass"], {"m": ["a"]}, study="lost", out=tmp_path, **FAST)


def test_dry_run_prints_the_schedule_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    code, stdout, stderr = invoke("sweep", "--out", str(out), "--grid", "m=a,b", "--repeat",
                                  "2", "--warmup", "1", "--dry-run", "--", "nosuch", "{m}")
    assert code == 0, stderr
    lines = stdout.strip().split("\n")
    assert lines[0].split("\t") == ["position", "variant", "repeat", "warmup", "done", "tags"]
    assert len(lines) == 1 + 6 and "dry run: nothing is written" in stderr
    assert lines[1].split("\t")[3] == "true" and lines[-1].split("\t")[3] == "false"
    assert not out.exists()


def test_cli_refuses_bad_input_with_exit_2_or_127(tmp_path: Path) -> None:
    out = str(tmp_path / "runs")
    assert invoke("sweep", "--out", out, "--grid", "m=a", "--repaet", "3", "--", "true")[0] \
        == 2
    code, _, stderr = invoke("sweep", "--out", out, "--grid", "m", "--", "true")
    assert code == 2 and "AXIS=V1,V2" in stderr
    code, _, stderr = invoke("sweep", "--out", out, "--grid", "m=a", "--study", "../x", "--",
                             "true")
    assert code == 2 and "--study dense-vs-sparse" in stderr
    code, _, stderr = invoke("sweep", "--out", out, "--grid", "m=a", "--tag", "study=x", "--",
                             "true")
    assert code == 2 and "set by the sweep" in stderr
    code, _, stderr = invoke("sweep", "--out", out, "--grid", "m=a", "--", "nosuch-{m}")
    assert code == 127 and "nosuch-a" in stderr
    assert not (tmp_path / "runs" / "sweeps").exists()  # nothing planned for nothing


def test_help_has_examples() -> None:
    code, out, _ = invoke("sweep", "--help")
    assert code == 0 and "Examples:" in out
    assert "energymeter sweep" in out.split("Examples:", 1)[1]
    code, out, _ = invoke("--help")
    assert "sweep" in out


# -- from Python -------------------------------------------------------------------------------
def test_python_sweep_of_a_function_records_failures_and_resumes(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    def train(method: str, n: int, meter: energymeter.Meter) -> str:
        calls.append((method, n))
        meter.count(n)
        if method == "bad":
            raise ValueError("diverged")
        return f"{method}{n}"

    grid = {"method": ["ok", "bad"], "n": [10]}
    result = energymeter.sweep(train, grid, repeat=2, warmup=1, study="py", out=tmp_path,
                               **FAST)
    assert energymeter.sweep is sweep
    assert len(calls) == 6 and result.exit_code == 1 and not result.completed
    ok = [r for r in result.runs if r.variant.tags["method"] == "ok"]
    bad = [r for r in result.runs if r.variant.tags["method"] == "bad"]
    assert [r.result for r in ok] == ["ok10"] * 3 and [r.status for r in ok] == ["completed"] * 3
    assert [r.status for r in bad] == ["failed"] * 3
    assert all(isinstance(r.error, ValueError) for r in bad)
    assert all(r.report is not None and r.report.items == 10 for r in result.runs)
    assert [r.report.warmup for r in ok if r.report] == [True, False, False]
    # Again: the completed slots are skipped, the failed ones run again.
    calls.clear()
    again = energymeter.sweep(train, grid, repeat=2, warmup=1, study="py", out=tmp_path,
                              **FAST)
    assert calls == [("bad", 10)] * 3
    assert [r.status for r in again.runs].count("skipped") == 3
    with pytest.raises(ValueError, match="diverged"):
        energymeter.sweep(train, grid, repeat=2, warmup=1, study="py", out=tmp_path,
                          stop_on_failure=True, **FAST)
    assert len(calls) == 4  # stopped at the first


def test_a_second_sweep_of_a_running_study_is_refused(tmp_path: Path) -> None:
    import fcntl

    plan([PY, "-c", "pass"], {"m": ["a"]}, study="busy", out=tmp_path)
    fd = os.open(tmp_path / "sweeps" / ".busy.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another sweep of study busy"):
            sweep([PY, "-c", "pass"], {"m": ["a"]}, study="busy", out=tmp_path, **FAST)
    finally:
        os.close(fd)
    assert sweep([PY, "-c", "pass"], {"m": ["a"]}, study="busy", out=tmp_path,
                 **FAST).completed


def test_cooldown_passes_between_runs_only(tmp_path: Path) -> None:
    result = sweep([PY, "-c", "pass"], {"m": ["a", "b"]}, cooldown_s=0.3, out=tmp_path,
                   **FAST)
    first, second = (r.report for r in result.runs)
    assert first is not None and second is not None
    gap = (second.started_at - first.ended_at).total_seconds()
    assert gap >= 0.3


def test_sigint_during_a_run_ends_the_sweep_after_that_run(tmp_path: Path) -> None:
    """Ctrl-C (here SIGINT to the sweep) is passed to the command, as `run` does, and ends
    the sweep: the run is interrupted, no other starts, the exit code is the command's."""
    import time

    started = tmp_path / "started"
    script = ("import pathlib, sys, time\n"
              "pathlib.Path(sys.argv[1]).write_text(sys.argv[2])\n"
              "time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENERGYMETER_REGION": "SE"}
    proc = subprocess.Popen([PY, "-m", "energymeter", "sweep", "--out", str(tmp_path / "runs"),
                             "--grid", "m=a,b,c", "--study", "stop", "--", PY, "-c", script,
                             str(started), "{m}"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # waits for the command to start; no timing is asserted
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    reports = reports_in(tmp_path / "runs")
    assert [r.status for r in reports] == ["interrupted"]
    assert "0 of 3 run(s) completed" in stderr and "run the same command again" in stderr


def test_compare_leaves_out_attempts_a_resumed_sweep_ran_again() -> None:
    from energymeter.analysis import compare, comparison_warnings
    from tests.test_compare import fake_report

    tags = {"study": "s1", "sweep_axes": "method", "method": "dense", "variant": 1}
    runs = [fake_report("t", cpu_j=10.0, minute=i, tags={**tags, "repeat": i})
            for i in (1, 2)]
    killed = fake_report("t", cpu_j=3.0, minute=3, status="interrupted",
                         tags={**tags, "repeat": 3})
    retried = fake_report("t", cpu_j=10.0, minute=4, tags={**tags, "repeat": 3})
    [row] = compare([*runs, killed, retried])
    assert row["n"] == 3 and killed.run_id not in row["run_ids"]
    assert row["retried_excluded"] == 1
    assert any("later attempt of the same run completed" in w
               for w in comparison_warnings([row]))
    # Without a completed retry, the failed attempt is still compared (and flagged).
    [row] = compare([*runs, killed])
    assert row["n"] == 3 and row["statuses"] == {"completed": 2, "interrupted": 1}


def test_a_misspelt_placeholder_is_refused_and_an_unused_grid_warned() -> None:
    from energymeter.errors import ConfigError
    from energymeter.session.sweep import placeholder_warnings

    with pytest.raises(ConfigError, match=r"\{selct\}.*did you mean \{select\}"):
        placeholder_warnings(["python", "t.py", "--select", "{selct}"], ["select"])
    assert placeholder_warnings(["python", "t.py", "--select", "{select}"], ["select"]) == []
    [same] = placeholder_warnings(["python", "t.py"], ["select"])
    assert "every variant runs the same command" in same
    # Braces that are no axis and look like none (a Python f-string): passed, and said so.
    [passed] = placeholder_warnings(["python", "-c", "print(f'{x}')", "{select}"], ["select"])
    assert "{x}" in passed and "passed as written" in passed
