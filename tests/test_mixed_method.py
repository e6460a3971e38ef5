"""Method ``mixed``: a channel measured in part and estimated in part.

The daemon probe (``energymeter daemon`` serving root-only RAPL) loses its daemon mid-run: the
CPU then goes on with the estimated model (or in-process RAPL counters where readable), and the
report says which joules were estimated, from when, and how large a share, in its JSON, its
summary and its figures. The daemon is the real one (a subprocess, killed with SIGKILL) over
the fake powercap tree of ``tests/test_daemon.py``, whose fixtures are reused.

The runs sample every 60 s, so that no sampler tick falls inside them: the probe is read only
by the boundary reads and ``snapshot()`` calls the test makes, and the last read the daemon
answered is known exactly (``before``)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import energymeter
from energymeter.errors import ReportError
from energymeter.probes import close_cached
from energymeter.probes.base import METHOD_MEANING, METHODS, Channel
from energymeter.report import Report
from energymeter.report.render import summary
from energymeter.report.values import ChannelEnergy, EstimatedPart, channel_energies
from energymeter.store import REPORT_NAME
from tests.fakes.powercap import FakePowercap
from tests.test_daemon import _start_daemon, _stop, rapl, shared_dir  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    """Each test discovers its own probes (a cached daemon probe would outlive its daemon)."""
    close_cached()
    yield
    close_cached()


def _run(sock: Path, out: Path, proc: subprocess.Popen[str] | None, *, name: str = "dies"
         ) -> tuple[Report, dict[str, float], dict[str, float], float]:
    """A run through the daemon at ``sock``: read at about 0.6 s (``before``), the daemon
    killed (when ``proc``), read again at once (``after``: the fallback's first read), then
    0.5 s more. Returns the report, both reads' energies and the time of ``before``."""
    with energymeter.measure(name, daemon=str(sock), region="SE", out=out,
                             interval_s=60) as m:
        time.sleep(0.6)  # more than the probe's window for the power at loss (0.5 s)
        before = m.snapshot()
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        after = m.snapshot()
        time.sleep(0.5)
    assert m.report is not None
    return m.report, before.energy_by_channel_j, after.energy_by_channel_j, before.t_s


def _channel(report: Report, cid: str) -> ChannelEnergy:
    return next(c for c in report.channels if c.channel.id == cid)



def _run_killing_the_daemon(folder: Path, powercap: Any, tmp_path: Path) -> tuple[Any, ...]:
    """:func:`_run` against a daemon started for it (stopped after): the report, the reads
    before and after, the last answered read's time, and the daemon's socket."""
    sock = folder / "d.sock"
    proc = _start_daemon(sock, powercap, "--allow-all")
    try:
        return (*_run(sock, tmp_path / "runs", proc), sock)
    finally:
        _stop(proc)

def test_a_daemon_that_dies_without_rapl_makes_the_cpu_channel_mixed(
        shared_dir: Path, rapl: FakePowercap, tmp_path: Path,  # noqa: F811 - fixtures
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(tmp_path / "none"))  # no RAPL here
    report, before, after, before_t_s, _ = _run_killing_the_daemon(shared_dir, rapl, tmp_path)
    cpu, dram = _channel(report, "cpu0"), _channel(report, "dram0")
    assert cpu.channel.method == "mixed" and cpu.channel.source == "rapl via daemon"
    part = cpu.estimated
    assert part is not None and part.measured_method == "counter"
    # Estimated: the gap at the daemon's last power, then all the model counted; measured:
    # what the daemon counted until its last answer, exactly.
    gap_j, model_j = after["cpu0"] - before["cpu0"], cpu.energy_j - after["cpu0"]
    assert gap_j > 0 and model_j > 0
    assert part.estimated_j == pytest.approx(gap_j + model_j, rel=1e-9)
    assert cpu.energy_j - part.estimated_j == pytest.approx(before["cpu0"], rel=1e-9)
    assert cpu.estimated_share == pytest.approx(part.estimated_j / cpu.energy_j)
    assert 0 < cpu.estimated_share < 1
    # Estimated from the daemon's last answer (the read at `before`) to the end of the run.
    assert abs(part.from_s - before_t_s) <= report.overhead["max_read_span_s"] + 1e-3
    assert part.until_s is None
    # dram0 is not modelled: only the gap is estimated, and it ended there.
    assert dram.channel.method == "mixed" and dram.estimated is not None
    assert dram.estimated.estimated_j == pytest.approx(after["dram0"] - before["dram0"])
    assert dram.estimated.until_s is not None and dram.estimated.until_s >= part.from_s
    assert dram.energy_j == pytest.approx(after["dram0"])  # not measured after that

    # report.json: the keys, and a load that gives the same report back.
    saved = json.loads((report.path / REPORT_NAME).read_text())
    [entry] = [c for c in saved["channels"] if c["id"] == "cpu0"]
    assert entry["method"] == "mixed" and entry["measured_method"] == "counter"
    assert entry["estimated_j"] == part.estimated_j
    assert entry["estimated_share"] == pytest.approx(part.estimated_j / entry["energy_j"])
    assert entry["estimated_from_s"] == part.from_s and "estimated_until_s" not in entry
    loaded = Report.load(report.path)
    assert loaded == report
    assert loaded.to_dict()["channels"] == saved["channels"]
    assert report.methods("cpu") == "mixed"
    with open(report.path.parent / "runs.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["cpu_method"] == "mixed"

    # The summary says how much, what share and since when.
    share = part.estimated_j / cpu.energy_j * 100
    expected = (f"cpu {cpu.energy_j:.1f} J (mixed: {part.estimated_j:.1f} J, {share:.0f} %, "
                f"estimated after {part.from_s:.1f} s)")
    assert expected in summary(report)
    assert "dram" in summary(report) and "estimated from" in summary(report)
    assert "not measured" in " ".join(report.warnings)

    # The timeline: solid until estimation began, dashed and marked after; the breakdown
    # hatches the estimated part of the cpu bar only.
    fig = report.plot("timeline")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    [marked] = [label for label in lines if label.startswith("cpu0 (estimated after")]
    assert lines[marked].get_linestyle() == "--" and lines["cpu0"].get_linestyle() == "-"
    solid_x = [x for x, y in zip(*lines["cpu0"].get_data(), strict=True) if y == y]
    dashed_x = [x for x, y in zip(*lines[marked].get_data(), strict=True) if y == y]
    assert max(solid_x) < part.from_s <= max(dashed_x)
    assert any("partly estimated" in label for label in lines)  # the total
    fig.savefig(tmp_path / "timeline.png")
    fig = report.plot("breakdown")
    bars = [p for p in fig.axes[0].patches if p.get_height() > 0]
    hatched = [p for p in bars if p.get_hatch()]
    assert len(hatched) == 2  # the estimated parts of cpu and dram on top of their bars
    cpu_hatched = max(hatched, key=lambda p: p.get_height())
    assert cpu_hatched.get_height() == pytest.approx(part.estimated_j)  # in J: < 1 kJ
    fig.savefig(tmp_path / "breakdown.png")


def test_a_daemon_that_never_dies_stays_a_counter(
        shared_dir: Path, rapl: FakePowercap, tmp_path: Path,  # noqa: F811 - fixtures
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(tmp_path / "none"))
    sock = shared_dir / "d.sock"
    proc = _start_daemon(sock, rapl, "--allow-all")
    try:
        report, _, _, _ = _run(sock, tmp_path / "runs", None, name="lives")
    finally:
        _stop(proc)
    for c in report.channels:
        assert c.channel.method == "counter" and c.estimated is None
        assert c.estimated_j == 0 and c.estimated_share is None
    [entry, *_] = json.loads((report.path / REPORT_NAME).read_text())["channels"]
    assert not {"measured_method", "estimated_j", "estimated_share"} & set(entry)
    assert "mixed" not in summary(report) and "estimated" not in summary(report)


def test_fallback_to_in_process_rapl_estimates_only_the_gap(
        shared_dir: Path, rapl: FakePowercap, tmp_path: Path,  # noqa: F811 - fixtures
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(rapl.root))  # root: RAPL readable
    report, before, after, before_t_s, _ = _run_killing_the_daemon(shared_dir, rapl, tmp_path)
    cpu = _channel(report, "cpu0")
    assert cpu.channel.method == "mixed" and cpu.estimated is not None
    # Only the gap between the daemon's last answer and the in-process counters' first read.
    assert cpu.estimated.estimated_j == pytest.approx(after["cpu0"] - before["cpu0"])
    assert abs(cpu.estimated.from_s - before_t_s) <= report.overhead["max_read_span_s"] + 1e-3
    assert cpu.estimated.until_s is not None
    assert cpu.estimated.from_s <= cpu.estimated.until_s < report.duration_s
    assert cpu.estimated_share is not None and cpu.estimated_share < 0.5
    # The rest is measured: the counters' energy over the run, gap estimate included.
    assert cpu.energy_j == pytest.approx(40.0 * report.duration_s, rel=0.01)
    assert "estimated from" in summary(report)
    assert Report.load(report.path) == report
    fig = report.plot("timeline")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(label.startswith("cpu0 (estimated ") and "–" in label for label in labels)


def test_a_later_run_on_the_model_is_estimated_whole(
        shared_dir: Path, rapl: FakePowercap, tmp_path: Path,  # noqa: F811 - fixtures
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Estimates are per run: the next run of the process on the same (cached) probe, whose
    CPU the model estimates from its start, is ``model`` (all of it estimated), not mixed."""
    monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(tmp_path / "none"))
    sock = _run_killing_the_daemon(shared_dir, rapl, tmp_path)[4]
    with energymeter.measure("next", daemon=str(sock), region="SE", out=tmp_path / "runs",
                             interval_s=60) as m:
        time.sleep(0.2)
    assert m.report is not None
    cpu = _channel(m.report, "cpu0")
    assert cpu.channel.method == "model" and cpu.estimated is not None
    assert cpu.estimated.estimated_j == cpu.energy_j and cpu.estimated_share == 1.0
    assert cpu.estimated.from_s == 0.0
    assert "cpu" in summary(m.report) and "(estimated)" in summary(m.report)
    assert Report.load(m.report.path) == m.report


# -- the report's rules, without a daemon -------------------------------------------------------
CPU = Channel("cpu0", "cpu", "Xeon", "rapl via daemon", "counter")


def test_mixed_is_a_method_with_a_meaning() -> None:
    assert "mixed" in METHODS
    assert METHOD_MEANING["mixed"] == "partly measured, partly estimated by a model"


@pytest.mark.parametrize(("estimated_j", "method"), [
    (0.0, "counter"), (-1.0, "counter"), (2.5, "mixed"), (10.0, "model"), (12.0, "model")])
def test_the_estimated_share_decides_the_method(estimated_j: float, method: str) -> None:
    [c] = channel_energies([CPU], {"cpu0": 10.0}, 5.0, {}, {"cpu0": (estimated_j, 3.0, None)})
    assert c.channel.method == method
    assert (c.estimated is None) == (method == "counter")
    if c.estimated is not None:
        assert c.estimated.estimated_j == min(estimated_j, 10.0)
        assert c.estimated_share == pytest.approx(min(estimated_j, 10.0) / 10.0)
    assert ChannelEnergy.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_a_model_channel_stays_model_and_times_are_clamped_to_the_run() -> None:
    model = Channel("cpu0", "cpu", "Xeon", "model", "model")
    [c] = channel_energies([model], {"cpu0": 10.0}, 5.0, {}, {"cpu0": (2.0, 1.0, None)})
    assert c.channel.method == "model" and c.estimated is None and c.estimated_j == 10.0
    [c] = channel_energies([CPU], {"cpu0": 10.0}, 5.0, {}, {"cpu0": (2.0, -4.0, 9.0)})
    assert c.estimated == EstimatedPart(2.0, 0.0, 5.0, "counter")


@pytest.mark.parametrize(("change", "match"), [
    ({"estimated_j": None}, "estimated_j"),
    ({"estimated_j": 20.0}, "at most energy_j"),
    ({"measured_method": "model"}, "measured_method must be one of counter, integrated"),
    ({"estimated_from_s": -1.0}, "estimated_from_s"),
    ({"method": "counter"}, "mixed or model"),
])
def test_a_mixed_channel_that_does_not_add_up_is_refused(change: dict, match: str) -> None:
    [c] = channel_energies([CPU], {"cpu0": 10.0}, 5.0, {}, {"cpu0": (2.0, 3.0, None)})
    data = {**c.to_dict(), **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ReportError, match=match):
        ChannelEnergy.from_dict(data, "report.json", "channels[0]")
