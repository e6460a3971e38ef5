from __future__ import annotations

import csv
import multiprocessing as mp
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from energymeter.errors import ReportError
from energymeter.store import (
    EventLog,
    SamplesWriter,
    append_ledger,
    make_run_dir,
    read_events,
    read_samples,
    run_dir_started_at,
    safe_name,
    write_json_atomic,
)

COLUMNS = ("run_id", "name", "payload")


def _append_many(out: str, worker: int, rows: int) -> None:
    for i in range(rows):
        append_ledger(Path(out), {"run_id": f"{worker}-{i}", "name": "w" * 50,
                                  "payload": "x" * 3000}, COLUMNS)


def test_concurrent_ledger_appends_never_tear(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 40)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open(tmp_path / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 * 40
    assert all(r["payload"] == "x" * 3000 and r["name"] == "w" * 50 for r in rows)
    assert len({r["run_id"] for r in rows}) == 320
    assert (tmp_path / "runs.csv").read_text().count("run_id,name,payload") == 1


def test_run_dir_name(tmp_path: Path) -> None:
    when = datetime(2026, 11, 21, 10, 0, 0, tzinfo=timezone.utc)
    path = make_run_dir(tmp_path, "my run/1", "abcdef0123456789", when)
    assert path.name == "20261121T100000Z-my-run-1-abcdef01" and path.is_dir()
    assert safe_name("../..") == "run"


def test_samples_writer_and_torn_last_row(tmp_path: Path) -> None:
    w = SamplesWriter(tmp_path / "samples.csv", ["cpu0", "gpu0"], ["rss_bytes"])
    w.row(0.0, {"cpu0": 0.0, "gpu0": 0.0}, {"rss_bytes": 10})
    w.row(0.1, {"cpu0": 4.0}, None)
    w.close()
    with open(tmp_path / "samples.csv", "a") as fh:
        fh.write("0.2,8.0")  # a writer killed mid-row
    header, rows = read_samples(tmp_path / "samples.csv")
    assert header == ["t_s", "cpu0_j", "gpu0_j", "rss_bytes"]
    assert rows == [["0.000000", "0.0", "0.0", "10"], ["0.100000", "4.0", "", ""]]


def test_writer_abandoned_in_fork_child_writes_nothing(tmp_path: Path) -> None:
    w = SamplesWriter(tmp_path / "samples.csv", ["cpu0"], [])
    w.row(0.0, {"cpu0": 1.0}, None)  # buffered, not flushed
    pid = os.fork()
    if pid == 0:  # child: its copy of the buffer must never reach the file
        w.close()
        os._exit(0)
    os.waitpid(pid, 0)
    w.close()
    assert (tmp_path / "samples.csv").read_text() == "t_s,cpu0_j\n0.000000,1.0\n"


def test_events_round_trip(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.event("start", run_id="r")
    log.event("log", t_s=1.5, metrics={"loss": 0.3})
    log.close()
    assert read_events(tmp_path / "events.jsonl") == [
        {"event": "start", "run_id": "r"},
        {"event": "log", "t_s": 1.5, "metrics": {"loss": 0.3}},
    ]
    with pytest.raises(ReportError, match="does not exist"):
        read_events(tmp_path / "nope.jsonl")


def test_write_json_atomic_replaces(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(ValueError):
        write_json_atomic(target, {"a": float("nan")})
    assert '"a": 2' in target.read_text()


def test_event_log_from_several_threads_writes_each_event_once(tmp_path: Path) -> None:
    import threading

    log = EventLog(tmp_path / "events.jsonl")
    other: list[threading.Thread] = []

    class Interleaving(list):
        def clear(self) -> None:  # another thread logs between a flush's join and its clear
            if not other:
                other.append(threading.Thread(target=log.event, args=("other",)))
                other[0].start()
                other[0].join(timeout=0.2)
            super().clear()

    log._buf = Interleaving()
    log.event("first")
    other[0].join()
    log.close()
    assert [e["event"] for e in read_events(tmp_path / "events.jsonl")] == ["first", "other"]


def test_ledger_with_other_columns_is_written_by_name(tmp_path: Path) -> None:
    (tmp_path / "runs.csv").write_text("name,run_id\nold,1\n")  # an older ledger's columns
    append_ledger(tmp_path, {"run_id": "2", "name": "new", "payload": "p"}, COLUMNS)
    with open(tmp_path / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"name": "old", "run_id": "1"}, {"name": "new", "run_id": "2"}]


def test_run_dir_name_gives_back_its_start(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    started = datetime(2026, 11, 22, 8, 15, 42, 123456, tzinfo=timezone.utc)
    path = make_run_dir(tmp_path, "a/b c", "0123456789abcdef", started)
    assert run_dir_started_at(path.name) == started.replace(microsecond=0)
    assert run_dir_started_at("runs.csv") is None and run_dir_started_at("") is None


def test_deferred_events_wait_for_a_flush_and_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.event("start")
    log.event_later("phase_start", name="a")
    log.event_later("phase", name="a")
    assert [e["event"] for e in read_events(path)] == ["start"]  # no system call yet
    log.flush()
    assert [e["event"] for e in read_events(path)] == ["start", "phase_start", "phase"]
    log.event_later("log", t_s=2.0)
    log.event("stop")  # an immediate event writes what was deferred before it, in order
    assert [e["event"] for e in read_events(path)][-2:] == ["log", "stop"]
    log.close()


def test_a_running_meters_phases_reach_events_jsonl_within_the_flush_deadline(
        tmp_path: Path) -> None:
    """phase() defers its events to the sampler's flush: a run killed now loses at most the
    last FLUSH_EVERY_S of them, as of samples.csv."""
    import time

    from energymeter import measure
    from energymeter.sampling.sampler import FLUSH_EVERY_S

    with measure("deferred", out=tmp_path, region="SE", interval_s=0.05) as m:
        with m.phase("a"):
            pass
        ended = time.monotonic()
        names: list[str] = []
        while time.monotonic() - ended < FLUSH_EVERY_S + 1.0:
            names = [e["event"] for e in read_events(m.path / "events.jsonl")]
            if "phase" in names:
                break
            time.sleep(0.02)
        assert names[:3] == ["start", "phase_start", "phase"], names
    events = read_events(m.path / "events.jsonl")
    assert [e["event"] for e in events] == ["start", "phase_start", "phase", "stop"]
    assert events[2]["name"] == "a"
