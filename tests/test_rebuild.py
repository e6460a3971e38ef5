"""The rebuild of a run without ``report.json``: a live run shows as
``running``, a phase open at a kill is kept (ended at the last flushed sample, marked), the
rebuilt summary names what exists, and the run's own recorded settings alone decide its
carbon and cost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from energymeter import measure
from energymeter.errors import ReportError, UsageError
from energymeter.report import Report
from energymeter.report.rebuild import LIVE_HEARTBEAT_S, save_rebuilt
from tests.test_hostile_input import SAMPLES, START, write_run

REPO = Path(__file__).resolve().parents[1]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def live_start(**changes: Any) -> dict[str, Any]:
    """A start event written by this very process, now, on this host."""
    return {**START, "started_at": _now(), "pid": os.getpid(),
            "hostname": socket.gethostname(), **changes}


# -- item 27: a run in progress is `running` ---------------------------------------------------
def test_a_run_whose_writer_is_alive_and_fresh_is_running(tmp_path: Path) -> None:
    report = Report.load(write_run(tmp_path / "run", [live_start()]))
    assert report.status == "running"
    assert any("still running" in w and "last flushed sample at 1.00 s" in w
               for w in report.warnings)
    assert not any("killed" in w for w in report.warnings)
    json.loads(report.to_json())
    assert Report.from_dict(report.to_dict()).status == "running"


@pytest.mark.parametrize("why", ["stale samples", "other host", "no keys", "pid reused",
                                 "dead pid", "stopped"])
def test_a_run_that_is_not_alive_stays_interrupted(tmp_path: Path, why: str) -> None:
    start = live_start()
    events = [start]
    if why == "other host":
        start["hostname"] = socket.gethostname() + "-elsewhere"
    elif why == "no keys":
        del start["pid"], start["hostname"]
    elif why == "pid reused":  # this process started long after the run did
        start["started_at"] = (datetime.now(timezone.utc) - timedelta(days=3650)).isoformat()
    elif why == "dead pid":
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        start["pid"] = proc.pid
    elif why == "stopped":
        events.append({"event": "stop", "status": "completed", "exit_code": 0})
    run_dir = write_run(tmp_path / "run", events)
    if why == "stale samples":
        old = time.time() - LIVE_HEARTBEAT_S - 5
        os.utime(run_dir / "samples.csv", (old, old))
    report = Report.load(run_dir)
    assert report.status == ("completed" if why == "stopped" else "interrupted")


def test_running_is_not_a_stop_status(tmp_path: Path) -> None:
    with measure("x", powercap_root=tmp_path / "absent", region="SE") as m, \
            pytest.raises(UsageError, match="accepted: completed, failed, interrupted"):
        m.stop("running")


def _start_victim(out: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    script = textwrap.dedent(f"""
        import time
        from energymeter import measure
        with measure("victim", out={str(out)!r}, powercap_root={str(tmp_path / "absent")!r},
                     region="SE", interval_s=0.05) as m:
            with m.phase("done-phase"):
                time.sleep(0.1)
            with m.phase("outer"), m.phase("inner"):
                print("ready", flush=True)
                time.sleep(60)
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_live_measure_is_running_then_interrupted_once_killed(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = _start_victim(out, tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(1.3)  # the sampler flushes at least once a second
        (run_dir,) = out.glob("*-victim-*")
        live = Report.load(run_dir)
        assert live.status == "running"
        assert any("still running" in w for w in live.warnings)
        assert {p.name: p.open_at_end for p in live.phases} == {
            "done-phase": False, "outer": True, "inner": True}
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    dead = Report.load(run_dir)
    assert dead.status == "interrupted"
    phases = {p.name: p for p in dead.phases}
    assert phases["inner"].parent == "outer" and phases["outer"].parent is None
    assert phases["inner"].open_at_end and phases["outer"].open_at_end
    assert not phases["done-phase"].open_at_end
    assert phases["outer"].end_s == dead.duration_s > phases["outer"].start_s
    assert any("phase 'inner' was still open" in w for w in dead.warnings)


# -- item 28: the phase open at a kill ---------------------------------------------------------
def test_an_open_phase_ends_at_the_last_row_with_interpolated_energy(tmp_path: Path) -> None:
    events = [START,
              {"event": "phase_start", "name": "epoch", "t_s": 0.0},
              {"event": "phase", "name": "epoch", "parent": None, "start_s": 0.0,
               "end_s": 0.25, "energy_by_channel_j": {"cpu0": 10.0}},
              {"event": "phase_start", "name": "epoch", "t_s": 0.25}]  # the next epoch
    report = Report.load(write_run(tmp_path / "run", events))
    assert report.status == "interrupted"
    first, second = report.phases
    assert (first.start_s, first.end_s, first.open_at_end) == (0.0, 0.25, False)
    assert (second.start_s, second.end_s, second.open_at_end) == (0.25, 1.0, True)
    # cumulative joules 0, 20, 40 at 0, 0.5, 1.0 s: 10 J at 0.25 s, so 30 J in the phase
    assert second.energy_by_channel == pytest.approx({"cpu0": 30.0})
    assert any("phase 'epoch' was still open" in w and "1.00 s" in w for w in report.warnings)
    data = report.to_dict()
    assert data["phases"][1]["open_at_end"] is True and "open_at_end" not in data["phases"][0]
    back = Report.from_dict(json.loads(report.to_json()))
    assert back.phases[1].open_at_end and not back.phases[0].open_at_end


def test_a_phase_started_after_the_last_flush(tmp_path: Path) -> None:
    events = [START, {"event": "phase_start", "name": "late", "t_s": 5.0}]
    (phase,) = Report.load(write_run(tmp_path / "run", events)).phases
    assert (phase.start_s, phase.end_s, phase.open_at_end) == (5.0, 5.0, True)
    assert phase.energy_by_channel == {"cpu0": 0.0}


# -- item 29: what the rebuilt summary claims, and DIR/report.json ------------------------------
def test_rebuilt_summary_does_not_claim_a_missing_report_json(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    text = Report.load(run_dir).summary()
    assert str(run_dir / "report.json") not in text
    assert f"run: {run_dir} (rebuilt" in text


def test_load_of_a_missing_report_json_rebuilds_its_run(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    report = Report.load(run_dir / "report.json")
    assert report.run_id == START["run_id"] and report.path == run_dir
    with pytest.raises(ReportError, match="does not exist"):
        Report.load(tmp_path / "elsewhere" / "report.json")


def test_save_rebuilt_writes_report_and_ledger_once(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "out" / "run")
    report = Report.load(run_dir)
    saved, ledger = save_rebuilt(report)
    assert saved == run_dir / "report.json" and ledger == tmp_path / "out" / "runs.csv"
    again = Report.load(run_dir)
    assert again == report and again.status == "interrupted"
    assert f"report: {run_dir / 'report.json'}" in again.summary()
    assert ledger.read_text().count(START["run_id"]) == 1
    with pytest.raises(ReportError, match="never overwritten"):
        save_rebuilt(report)
    running = Report.load(write_run(tmp_path / "out" / "live", [live_start()]))
    with pytest.raises(ReportError, match="still running"):
        save_rebuilt(running)
    assert not (tmp_path / "out" / "live" / "report.json").exists()


# -- item 30: the run's own settings, not the reader's -----------------------------------------
RECORDED = {"out": "runs", "interval_s": 0.1, "gauge_interval_s": 1.0, "region": "SE",
            "pue": 1.0, "carbon_table": "auto", "carbon_provider": "none",
            "carbon_poll_s": 900.0, "carbon_timeout_s": 2.0, "price_per_kwh": None,
            "currency": "EUR", "powercap_root": "/sys/class/powercap",
            "origins": {"region": "argument"}}


@pytest.mark.parametrize("pyproject", [
    "[tool.energymeter]\nprice_per_kwh = 0.3\npue = 1.5\ncurrency = 'SEK'\n",
    "[tool.energymeter\n",  # broken: must not matter either
])
def test_rebuild_ignores_the_readers_pyproject_and_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pyproject: str) -> None:
    run_dir = write_run(tmp_path / "run", [{**START, "settings": RECORDED}])
    reader = tmp_path / "reader"
    reader.mkdir()
    (reader / "pyproject.toml").write_text(pyproject)
    monkeypatch.chdir(reader)
    monkeypatch.setenv("ENERGYMETER_PRICE_PER_KWH", "0.5")
    monkeypatch.setenv("ENERGYMETER_PUE", "1.7")
    report = Report.load(run_dir)
    assert report.carbon is not None
    assert "cost" not in report.carbon and "price_per_kwh" not in report.carbon
    assert report.carbon["pue"] == 1.0
    assert not any("carbon not recomputed" in w for w in report.warnings)


def test_rebuild_keeps_a_recorded_price(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = write_run(tmp_path / "run", [{**START, "settings": {**RECORDED,
                                                                  "price_per_kwh": 0.2}}])
    monkeypatch.chdir(tmp_path)
    carbon = Report.load(run_dir).carbon
    assert carbon is not None and carbon["price_per_kwh"] == 0.2
    assert carbon["cost"] == pytest.approx(40.0 / 3.6e6 * 0.2)


def test_samples_fixture_is_what_the_tests_assume() -> None:
    assert SAMPLES.splitlines()[-1].startswith("1.000000,40.0")


@pytest.mark.parametrize("fast_scan_bytes", [0, float("inf")], ids=["fast scan", "row loop"])
def test_an_empty_last_cell_keeps_the_channels_last_value(tmp_path: Path,
                                                          fast_scan_bytes: float) -> None:
    """A cumulative channel's energy is its last readable value: a last row that leaves its
    cell empty (a gauge-only row) does not make it 0 J, in the loop or the fast scan."""
    from energymeter.report.rebuild import rebuild_fields

    run_dir = write_run(tmp_path / "run",
                        samples=SAMPLES + "1.500000,60.0,\n2.000000,,300\n")
    fields = rebuild_fields(run_dir, fast_scan_bytes=fast_scan_bytes)
    assert fields["channels"][0].energy_j == 60.0
    assert fields["duration_s"] == 2.0
    assert fields["resources"]["peak_rss_bytes"] == 300
