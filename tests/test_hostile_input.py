"""Hostile and damaged run files: every reader (``Report.load``,
``Report.from_dict``, ``read_events``, ``iter_samples``, the rebuild) turns bad input into a
:class:`ReportError` naming the file and what is expected, never another exception; a report it
does accept serialises again as strict JSON; a line far longer than any real one costs bounded
memory."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energymeter.analysis import compare, format_comparison
from energymeter.errors import ReportError
from energymeter.report import Report
from energymeter.report.render import format_reports
from energymeter.store import iter_samples, read_events
from energymeter.store.readers import MAX_LINE_BYTES
from tests.test_cli import invoke
from tests.test_report import make_report

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

START = {
    "event": "start", "run_id": "0123456789abcdef", "name": "victim",
    "started_at": "2026-11-21T10:00:00+00:00", "parent_run_id": None, "command": ["x"],
    "channels": [{"id": "cpu0", "kind": "cpu", "device": "Xeon", "source": "rapl",
                  "method": "counter"}],
    "gauges": ["rss_bytes"], "settings": {"interval_s": 0.1, "region": "SE"},
    "carbon_region": "SE", "region_source": "argument", "notes": [], "unavailable": [],
}
SAMPLES = "t_s,cpu0_j,rss_bytes\n0.000000,0.0,100\n0.500000,20.0,\n1.000000,40.0,200\n"


def write_run(run_dir: Path, events: list[dict[str, Any]] | bytes | None = None,
              samples: str | bytes = SAMPLES) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if events is None:
        events = [START]
    if not isinstance(events, bytes):
        events = "".join(json.dumps(e) + "\n" for e in events).encode()
    (run_dir / "events.jsonl").write_bytes(events)
    (run_dir / "samples.csv").write_bytes(samples.encode() if isinstance(samples, str)
                                          else samples)
    return run_dir


def check_accepted(report: Report) -> None:
    """What a loaded report must survive: strict JSON, the ledger row, every rendering and
    comparison with a sane run."""
    json.loads(report.to_json())
    report.to_row()
    for fmt in ("table", "json", "csv", "markdown", "latex"):
        format_reports([report], fmt)
    rows = compare([report, make_report()], group=False)
    for fmt in ("table", "json", "csv", "markdown"):
        format_comparison(rows, fmt)


# -- report.json --------------------------------------------------------------------------------
def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


VALID = make_report().to_dict()

HOSTILE_DICTS = [
    ("top-level list", [1, 2, 3], "JSON object"),
    ("duration text", _set(VALID, "duration_s", "abc"), "duration_s"),
    ("duration negative", _set(VALID, "duration_s", -1.0), "duration_s"),
    ("duration bool", _set(VALID, "duration_s", True), "duration_s"),
    ("huge energies", _set(_set(VALID, "channels.0.energy_j", 1e308),
                           "channels.2.energy_j", 1e308), "channels[0].energy_j"),
    ("run_id number", _set(VALID, "run_id", 5), "run_id"),
    ("status list", _set(VALID, "status", ["completed"]), "status"),
    ("started_at number", _set(VALID, "started_at", 5), "started_at"),
    ("channels object", _set(VALID, "channels", {"a": 1}), "channels"),
    ("channel a number", _set(VALID, "channels.0", 7), "channels[0]"),
    ("channel kind", _set(VALID, "channels.0.kind", "warp"), "channels[0].kind"),
    ("channel meta list", _set(VALID, "channels.4.meta", [1]), "channels[4].meta"),
    ("channel no id", _set(VALID, "channels.0", {"kind": "cpu", "energy_j": 1.0}),
     "channels[0].id"),
    ("phase start text", _set(VALID, "phases.0.start_s", "0"), "phases[0].start_s"),
    ("phase energies list", _set(VALID, "phases.0.energy_by_channel_j", [1]),
     "phases[0].energy_by_channel_j"),
    ("phase name dict", _set(VALID, "phases.1.name", {}), "phases[1].name"),
    ("log not an object", _set(VALID, "logs.0", "loss"), "logs[0]"),
    ("log metrics list", _set(VALID, "logs.0.metrics", [1]), "logs[0].metrics"),
    ("carbon emissions text", _set(VALID, "carbon.emissions_g", "lots"), "carbon.emissions_g"),
    ("carbon list", _set(VALID, "carbon", [1]), "carbon"),
    ("resources text", _set(VALID, "resources.cpu_time_s", "x"), "resources.cpu_time_s"),
    ("resources list", _set(VALID, "resources", []), "resources"),
    ("command text", _set(VALID, "command", "python train.py"), "command"),
    ("command numbers", _set(VALID, "command", [1, 2]), "command"),
    ("exit code text", _set(VALID, "exit_code", "1"), "exit_code"),
    ("warnings numbers", _set(VALID, "warnings", [1]), "warnings"),
    ("host list", _set(VALID, "host", [1]), "host"),
    ("unavailable text", _set(VALID, "unavailable", "none"), "unavailable"),
    ("nan in host", _set(VALID, "host", {"x": float("nan")}), "host"),
]


@pytest.mark.parametrize("block, key", [("carbon", k) for k in
                                        ("emissions_g", "g_per_kwh", "pue", "region")]
                         + [("resources", k) for k in ("cpu_time_s", "peak_rss_bytes",
                                                       "peak_gpu_memory_bytes")])
def test_null_figures_are_accepted_and_rendered(block: str, key: str) -> None:
    check_accepted(Report.from_dict(_set(VALID, f"{block}.{key}", None)))


@pytest.mark.parametrize("data, needle", [c[1:] for c in HOSTILE_DICTS],
                         ids=[c[0] for c in HOSTILE_DICTS])
def test_hostile_report_json_is_a_report_error_naming_file_and_key(
        tmp_path: Path, data: Any, needle: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data, allow_nan=True))
    with pytest.raises(ReportError) as info:
        Report.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)
    with pytest.raises(ReportError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        Report.from_dict(data)


def _valid_text() -> str:
    return json.dumps(VALID)


HOSTILE_TEXTS = [
    ("1e309", _valid_text().replace('"duration_s": 10.0', '"duration_s": 1e309'),
     "duration_s must be a finite number"),
    ("NaN", _valid_text().replace('"duration_s": 10.0', '"duration_s": NaN'), "duration_s"),
    ("-Infinity in host", _valid_text().replace('"host": {}', '"host": {"x": -Infinity}'),
     "host.x"),
    ("huge int", _valid_text().replace('"exit_code": 0', '"exit_code": ' + "9" * 5000),
     "digits"),
    ("deep nesting", _valid_text().replace('"host": {}', '"host": ' + "[" * 100_000
                                           + "]" * 100_000), "deep"),
    ("moderate nesting", _valid_text().replace('"host": {}', '"host": {"a": ' + "[" * 500
                                               + "]" * 500 + "}"), "deep"),
    ("not JSON", "{", "not valid JSON"),
]


@pytest.mark.parametrize("text, needle", [c[1:] for c in HOSTILE_TEXTS],
                         ids=[c[0] for c in HOSTILE_TEXTS])
def test_hostile_report_json_text(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(text)
    with pytest.raises(ReportError) as info:
        Report.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_report_json_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b'{"schema": "\xff\xfe"}')
    with pytest.raises(ReportError, match="UTF-8"):
        Report.load(path)


def test_report_json_too_big_is_refused_without_reading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from energymeter.report import model

    monkeypatch.setattr(model, "MAX_REPORT_BYTES", 1000)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(VALID))
    with pytest.raises(ReportError, match="larger than"):
        Report.load(path)


def test_a_valid_report_still_loads(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(VALID))
    assert Report.load(tmp_path) == make_report()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """``base`` (JSON data) with 1 to 3 of its values replaced by arbitrary JSON or removed."""
    data = copy.deepcopy(base)
    paths = list(_paths(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):  # an earlier mutation changed the shape
            continue
    return data


def mutated_reports() -> Any:
    return mutated(VALID)


def _from_dict_or_report_error(data: Any) -> None:
    try:
        report = Report.from_dict(data)
    except ReportError:
        return
    check_accepted(report)


@FUZZ
@given(mutated_reports())
def test_fuzz_mutated_report_dicts(data: Any) -> None:
    _from_dict_or_report_error(data)


@FUZZ
@given(JSON_VALUES)
def test_fuzz_arbitrary_json_into_from_dict(data: Any) -> None:
    _from_dict_or_report_error(data)


# -- events.jsonl and samples.csv ---------------------------------------------------------------
HOSTILE_EVENTS = [
    ("list line", b"[1,2,3]\n" + json.dumps(START).encode() + b"\n", "line 1"),
    ("number line", json.dumps(START).encode() + b"\n5\n{}\n", "line 2"),
    ("nan", json.dumps(START).encode() + b'\n{"event": "log", "t_s": NaN}\n{}\n', "line 2"),
    ("1e309", json.dumps(START).encode() + b'\n{"event": "log", "t_s": 1e309}\n{}\n', "line 2"),
    ("not utf-8", json.dumps(START).encode() + b'\n{"event": "\xff"}\n{}\n', "line 2"),
    ("deep", json.dumps(START).encode() + b"\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n{}\n",
     "line 2"),
]


@pytest.mark.parametrize("data, needle", [c[1:] for c in HOSTILE_EVENTS],
                         ids=[c[0] for c in HOSTILE_EVENTS])
def test_hostile_events_lines_name_file_and_line(tmp_path: Path, data: bytes,
                                                 needle: str) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    with pytest.raises(ReportError) as info:
        read_events(path)
    assert str(path) in str(info.value) and needle in str(info.value)


START_BAD = [
    ("channels not a list", {**START, "channels": "cpu0"}, "channels"),
    ("channel kind", {**START, "channels": [{"id": "c", "kind": "warp"}]}, "kind"),
    ("started_at", {**START, "started_at": 5}, "started_at"),
    ("run_id", {**START, "run_id": None}, "run_id"),
    ("settings list", {**START, "settings": [1]}, "settings"),
    ("notes number", {**START, "notes": 3}, "notes"),
]


@pytest.mark.parametrize("start, needle", [c[1:] for c in START_BAD],
                         ids=[c[0] for c in START_BAD])
def test_hostile_start_event_is_a_report_error(tmp_path: Path, start: dict,
                                               needle: str) -> None:
    run_dir = write_run(tmp_path / "run", [start])
    with pytest.raises(ReportError) as info:
        Report.load(run_dir)
    assert "events.jsonl" in str(info.value) and needle in str(info.value)


def test_hostile_phase_and_log_events_are_report_errors(tmp_path: Path) -> None:
    for bad in ({"event": "phase", "name": "p", "start_s": "a", "end_s": 1.0},
                {"event": "phase", "name": 5, "start_s": 0.0, "end_s": 1.0},
                {"event": "log", "t_s": 1.0, "energy_j": 2.0, "metrics": [1]},
                {"event": "stop", "status": "exploded"}):
        run_dir = write_run(tmp_path / f"run-{id(bad)}", [START, bad])
        with pytest.raises(ReportError, match="events.jsonl line 2"):
            Report.load(run_dir)


def test_samples_with_non_finite_or_huge_values_are_skipped(tmp_path: Path) -> None:
    rows = ["1.5,inf,", "1.6,nan,", "1.7,1e309,", "1.8,1e300,", "1e300,50.0,", "1.9,-1e300,",
            "0.2,60.0,"]  # the last goes back in time
    run_dir = write_run(tmp_path / "run", samples=SAMPLES + "\n".join(rows) + "\n")
    report = Report.load(run_dir)
    check_accepted(report)
    assert report.duration_s == 1.0 and report.channels[0].energy_j == 40.0
    assert "7 unreadable row(s) of samples.csv skipped" in report.warnings


@pytest.mark.parametrize("samples, needle", [
    (b"", "empty"),
    (b"\xff\xfe,cpu0_j\n0.0,1.0\n", "UTF-8"),
    (b"cpu0_j,t_s\n1.0,0.0\n", "t_s"),
    (b"t_s" + b",x" * (MAX_LINE_BYTES // 2) + b"\n", "longer than"),
])
def test_hostile_samples_header(tmp_path: Path, samples: bytes, needle: str) -> None:
    path = tmp_path / "samples.csv"
    path.write_bytes(samples)
    with pytest.raises(ReportError) as info:
        iter_samples(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_samples_rows_with_bad_bytes_are_counted(tmp_path: Path) -> None:
    samples = SAMPLES.encode() + b"1.5,\xff\xfe,\n1.6,\"4\",\n1.7,4,5,6\n"
    run_dir = write_run(tmp_path / "run", samples=samples)
    report = Report.load(run_dir)
    assert "3 unreadable row(s) of samples.csv skipped" in report.warnings


def _peak_while(fn: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


LONG = 40 * 2**20  # tens of MB: what a 1 GB line would do, scaled down


def test_a_huge_events_line_costs_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with path.open("wb") as fh:
        fh.write(json.dumps(START).encode() + b"\n")
        fh.write(b'{"event": "log", "metrics": {"x": "' + b"a" * LONG + b'"}}\n')
        fh.write(b'{"event": "log", "t_s": 1.0, "energy_j": 2.0, "metrics": {}}\n')
    skipped: list[str] = []
    events, peak = _peak_while(lambda: read_events(path, skipped=skipped))
    assert [e["event"] for e in events] == ["start", "log"]
    assert skipped and "line 2" in skipped[0] and "longer than" in skipped[0]
    assert peak < 3 * MAX_LINE_BYTES < LONG / 2
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.replace(path, run_dir / "events.jsonl")
    (run_dir / "samples.csv").write_text(SAMPLES)
    report, peak = _peak_while(lambda: Report.load(run_dir))
    assert peak < 3 * MAX_LINE_BYTES
    assert any("line 2" in w and "skipped" in w for w in report.warnings)
    assert len(report.logs) == 1


def test_a_huge_samples_line_costs_bounded_memory(tmp_path: Path) -> None:
    # A big samples.csv is scanned with pandas (report/fastscan.py), imported on first use:
    # imported here, so that the peak measured is the line's, not the library's import (the
    # test failed when run alone, passed after tests that imported pandas).
    with contextlib.suppress(ImportError):  # without pandas, rows are read one by one
        import pandas  # noqa: F401
    run_dir = write_run(tmp_path / "run")
    with (run_dir / "samples.csv").open("ab") as fh:
        fh.write(b"1.5," + b"9" * LONG + b",\n")
        fh.write(b"2.0,80.0,\n")
    report, peak = _peak_while(lambda: Report.load(run_dir))
    assert peak < 3 * MAX_LINE_BYTES < LONG / 2
    assert report.duration_s == 2.0 and report.channels[0].energy_j == 80.0
    assert "1 unreadable row(s) of samples.csv skipped" in report.warnings


def _rebuild_or_report_error(run_dir: Path) -> None:
    try:
        report = Report.load(run_dir)
    except ReportError as exc:
        assert str(run_dir) in str(exc)
        return
    check_accepted(report)


GOOD_EVENTS = "".join(json.dumps(e) + "\n" for e in (
    START, {"event": "phase_start", "name": "p", "t_s": 0.2},
    {"event": "log", "t_s": 0.4, "energy_j": 16.0, "metrics": {"loss": 0.5}},
)).encode()


@st.composite
def damaged(draw: st.DrawFn, good: bytes) -> bytes:
    """``good`` with a few bytes flipped, cut or inserted, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("flip", "cut", "insert")))
        if op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 20))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(damaged(GOOD_EVENTS))
def test_fuzz_events_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(data)
        try:
            events = read_events(path)
        except ReportError as exc:
            assert str(path) in str(exc)
        else:
            assert all(isinstance(e, dict) for e in events)
        _rebuild_or_report_error(write_run(Path(tmp) / "run", data))


EVENTS = [START, {"event": "phase_start", "name": "p", "t_s": 0.2},
          {"event": "phase", "name": "q", "parent": None, "start_s": 0.1, "end_s": 0.3,
           "energy_by_channel_j": {"cpu0": 8.0}},
          {"event": "log", "t_s": 0.4, "energy_j": 16.0, "metrics": {"loss": 0.5}},
          {"event": "stop", "status": "failed", "exit_code": 1}]
EVENT_KEYS = [(i, k) for i, e in enumerate(EVENTS) for k in e if k != "event"]
EVENT_KEYS += [(0, "channels.0." + k) for k in START["channels"][0]]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(EVENT_KEYS), JSON_VALUES), min_size=1, max_size=3),
       st.integers(1, len(EVENTS)))
def test_fuzz_mutated_events(changes: list[tuple[tuple[int, str], Any]], keep: int) -> None:
    events = copy.deepcopy(EVENTS[:keep])
    for (i, key), value in changes:
        try:
            events[i] = _set(events[i], key, value)
        except (IndexError, KeyError, TypeError, ValueError):  # shape changed before
            continue
    with tempfile.TemporaryDirectory() as tmp:
        _rebuild_or_report_error(write_run(Path(tmp) / "run", events))


@FUZZ
@given(damaged(SAMPLES.encode()))
def test_fuzz_samples_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.csv"
        path.write_bytes(data)
        try:
            header, rows = iter_samples(path)
            list(rows)
        except ReportError as exc:
            assert str(path) in str(exc)
        _rebuild_or_report_error(write_run(Path(tmp) / "run", samples=data))


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("text", [
    "[1,2,3]", json.dumps(_set(VALID, "duration_s", "abc")),
    _valid_text().replace('"duration_s": 10.0', '"duration_s": 1e309'),
    json.dumps(_set(_set(VALID, "channels.0.energy_j", 1e308), "channels.2.energy_j", 1e308)),
], ids=["list", "duration-text", "1e309", "energy-1e308"])
def test_cli_on_a_hostile_report_exits_2_with_one_line(tmp_path: Path, command: str,
                                                       text: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(text)
    code, out, err = invoke(command, str(run_dir))
    assert code == 2 and out == ""
    assert err.startswith("energymeter: error: ") and err.count("\n") == 1
    assert "report.json" in err and "Traceback" not in err


def test_cli_on_hostile_run_files_exits_2(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", b"[1,2,3]\n" + GOOD_EVENTS)
    code, out, err = invoke("report", str(run_dir))
    assert code == 2 and err.startswith("energymeter: error: ") and "events.jsonl" in err


def test_start_event_with_a_foreign_host_is_not_running(tmp_path: Path) -> None:
    """Keys of a live-run check with odd values do not break the rebuild."""
    for pid, host in ((os.getpid(), "elsewhere"), ("me", socket.gethostname()),
                      (-1, socket.gethostname()), (2**80, socket.gethostname()),
                      (os.getpid(), 5)):
        run_dir = write_run(tmp_path / f"run-{pid}-{host}",
                            [{**START, "pid": pid, "hostname": host}])
        assert Report.load(run_dir).status == "interrupted"
