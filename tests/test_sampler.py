from __future__ import annotations

import statistics
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from energymeter.errors import ProbeError
from energymeter.sampling.aggregate import Aggregator, peak_window_s
from energymeter.sampling.sampler import (
    MAX_CONSECUTIVE_FAILURES,
    CallTimeout,
    Sampler,
    TimedCaller,
)
from energymeter.store import SamplesWriter, read_samples
from tests.fakes.probes import ConstantPowerProbe, FailingProbe
from tests.timing import SimClock, until


def make(probes, tmp_path: Path | None = None, interval_s: float = 0.01, **kw):
    ids = [c.id for p in probes for c in p.channels]
    writer = None
    if tmp_path is not None:
        gauges = [g for p in probes for g in p.gauge_names]
        writer = SamplesWriter(tmp_path / "samples.csv", ids, gauges)
    return Sampler(probes, interval_s=interval_s, gauge_interval_s=0.05,
                   aggregator=Aggregator(ids, peak_window_s(interval_s, [])), writer=writer,
                   counted_ids=ids, **kw)


def test_boundary_reads_are_relative_to_begin(tmp_path: Path) -> None:
    clock = [100.0]
    probe = ConstantPowerProbe(power_w=40.0, clock=lambda: clock[0])
    clock[0] = 150.0  # energy before begin() is not the run's
    s = make([probe], tmp_path)
    assert s.begin()[1] == {"cpu0": 0.0}
    clock[0] = 155.0
    assert s.read()[1] == {"cpu0": 200.0}


class _TimedReadsProbe(ConstantPowerProbe):
    """Remembers when (its own monotonic clock) each read took its energy."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.read_at_s: list[float] = []

    def _read(self) -> dict[str, float]:
        self.read_at_s.append(self._clock())
        return {self.channels[0].id: self.power_w * (self.read_at_s[-1] - self._t0)}


def test_thread_samples_writes_and_flushes(tmp_path: Path) -> None:
    probe = _TimedReadsProbe(power_w=10.0, gauges={"rss_bytes": 123.0})
    energies = []
    s = make([probe], tmp_path, on_energy=energies.append)
    s.begin()
    s.start()
    assert until(lambda: s.ticks >= 10, timeout_s=60)  # however busy the machine is
    t_s, energy = s.stop()
    assert s.ticks >= 10
    header, rows = read_samples(tmp_path / "samples.csv")
    assert header == ["t_s", "cpu0_j", "rss_bytes"]
    assert len(rows) == len(probe.read_at_s) >= s.ticks  # every tick plus the boundary reads
    # How far each row's stamp is from when its energy was taken, as measured: a busy machine
    # preempts the sampler between its clock reads and the probe's (13.7 W against 10 W was
    # seen with a fixed tolerance). Every power the sampler computes is bounded by it.
    offsets = [r - float(row[0]) for r, row in zip(probe.read_at_s, rows, strict=True)]
    spread_s = max(offsets) - min(offsets) + 2e-6  # t_s is written to the microsecond
    assert abs(energy["cpu0"] - 10.0 * t_s) <= 10.0 * spread_s
    assert any(r[2] == "123.0" for r in rows) and any(r[2] == "" for r in rows)
    assert energies == sorted(energies) and energies[-1] == energy["cpu0"]
    window_s = s.aggregator.window_s
    assert abs(s.aggregator.peak_power_w["cpu0"] - 10.0) <= 10.0 * spread_s / window_s
    assert s.aggregator.gauge_peak["rss_bytes"] == 123.0
    assert 0 <= s.thread_cpu_s < t_s


def test_a_probe_failing_three_times_is_suspended_and_retried_others_continue() -> None:
    clock = SimClock()
    bad = FailingProbe(fail_on=lambda n: n >= 3, channel_id="gpu0", kind="gpu",
                       clock=clock.s)
    good = ConstantPowerProbe(power_w=5.0, clock=clock.s)
    s = make([bad, good], clock_ns=clock.ns)
    s.begin()
    for _ in range(6):
        clock.advance(0.1)
        _, energy = s.read()
    assert bad.reads == 2 + MAX_CONSECUTIVE_FAILURES  # not called while suspended
    assert energy["gpu0"] == s.read()[1]["gpu0"]  # stands at its last good value
    assert energy["cpu0"] == pytest.approx(5.0 * 0.6)
    clock.advance(1.0)  # the first retry is due
    s.read()
    assert bad.reads == 3 + MAX_CONSECUTIVE_FAILURES
    warnings = s.warnings
    assert any("simulated failure" in w for w in warnings)
    assert any("3 reads in a row failed: suspended" in w and "gpu0" in w for w in warnings)
    assert any("gpu0" in w and "had not recovered" in w for w in warnings)


def test_intermittent_failure_is_not_dropped() -> None:
    flaky = FailingProbe(fail_on=lambda n: n % 2 == 0)
    s = make([flaky])
    s.begin()
    for _ in range(10):
        s.read()
    assert flaky.reads == 11 and any("simulated" in w for w in s.warnings)
    assert not any("dropped" in w for w in s.warnings)


def test_memory_is_constant_in_run_length(tmp_path: Path) -> None:
    probes = [ConstantPowerProbe(channel_id=f"cpu{i}", power_w=1.0) for i in range(4)]
    s = make(probes, tmp_path)
    s.begin()

    def reads(n: int) -> None:
        for i in range(n):
            s.read(gauges=i % 5 == 0)
            if i % 1000 == 999:
                s._writer.flush()  # what the thread does once a second

    # Both measurements are taken in the steady state (peak window full, buffer just flushed):
    # what those hold depends on the machine's speed, not on the run's length.
    tracemalloc.start()
    reads(2000)
    before = tracemalloc.get_traced_memory()[0]
    reads(20000)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 200_000  # 20k rows of 5 floats would be megabytes


class _BadValueProbe(ConstantPowerProbe):
    """Good reads, then ``value`` (what a buggy probe or driver might hand back)."""

    def __init__(self, value: object) -> None:
        super().__init__(channel_id="gpu0", kind="gpu")
        self.value = value

    def _read(self) -> dict[str, float]:
        good = super()._read()
        return good if self.reads <= 2 else self.value  # type: ignore[return-value]


def test_non_numbers_and_undeclared_channels_from_a_probe_never_reach_the_user() -> None:
    for value in ({"gpu0": None}, {"gpu0": "garbage"}, {"gpu0": float("nan")},
                  {"gpu0": float("inf")}):
        s = make([_BadValueProbe(value), ConstantPowerProbe(power_w=5.0)])
        s.begin()
        s.start()
        time.sleep(0.1)
        assert s._thread.is_alive(), value  # the sampler thread did not die
        t_s, energy = s.stop()
        assert set(energy) == {"gpu0", "cpu0"} and energy["cpu0"] > 0
        assert 0 <= energy["gpu0"] < float("inf"), value  # frozen at its last good value
        assert any("suspended" in w and "gpu0" in w for w in s.warnings), value

    ghost = _BadValueProbe({"gpu0": 1.0, "ghost": 2.0})
    s = make([ghost])
    s.begin()
    for _ in range(4):
        _, energy = s.read()
    assert set(energy) == {"gpu0"}
    assert any("'ghost'" in w and "not declare" in w for w in s.warnings)
    assert not any("dropped" in w for w in s.warnings)


# -- stamps, gauges, bad values, hung probes, flush lag, skipped ticks -------------------
class _SlowGaugeProbe(ConstantPowerProbe):
    """100 W of energy whose gauges take ``gauge_s`` to read (a slow psutil walk, say)."""

    def __init__(self, gauge_s: float, **kw: object) -> None:
        super().__init__(power_w=100.0, gauges={"slow_gauge": 1.0}, **kw)  # type: ignore[arg-type]
        self.gauge_s = gauge_s

    def _gauges(self) -> dict[str, float]:
        time.sleep(self.gauge_s)
        return super()._gauges()


def test_rows_are_stamped_when_energy_is_read_not_after_slow_gauges(tmp_path: Path) -> None:
    probe = _SlowGaugeProbe(0.03)
    s = make([probe], tmp_path, interval_s=0.01)
    s.begin()
    s.start()
    time.sleep(1.0)
    s.stop()
    _, rows = read_samples(tmp_path / "samples.csv")
    points = [(float(r[0]), float(r[1]), r[2] != "") for r in rows]  # t, J, gauge row?
    into_gauge_rows, out_of_gauge_rows = [], []
    for (t0, e0, g0), (t1, e1, g1) in zip(points, points[1:], strict=False):
        if t1 - t0 > 0.005:
            (into_gauge_rows if g1 else out_of_gauge_rows if g0 else []).append(
                (e1 - e0) / (t1 - t0))
    assert len(into_gauge_rows) >= 5 and len(out_of_gauge_rows) >= 5
    # Stamped after the 30 ms gauges, intervals ending on a gauge row read low and the next
    # ones high (97 W mean, 130 W peaks were seen); stamped at the energy read both are 100 W
    # (medians: scheduler jitter on a loaded machine moves single intervals, not the median).
    assert statistics.median(into_gauge_rows) == pytest.approx(100.0, rel=0.05)
    assert statistics.median(out_of_gauge_rows) == pytest.approx(100.0, rel=0.05)


class _BrokenGaugesProbe(ConstantPowerProbe):
    def _gauges(self) -> dict[str, float]:
        raise RuntimeError("psutil exploded")


def test_gauges_that_fail_never_drop_energy() -> None:
    clock = SimClock()
    probe = _BrokenGaugesProbe(power_w=50.0, gauges={"g": 1.0}, clock=clock.s)
    s = make([probe], clock_ns=clock.ns)
    s.begin()
    for _ in range(10):
        clock.advance(0.02)
        t_s, energy = s.read(gauges=True)
    assert energy["cpu0"] == pytest.approx(50.0 * t_s) and energy["cpu0"] > 0
    assert probe.reads == 11  # read every time: the energy channel was never dropped
    assert any("gauges given up" in w for w in s.warnings)
    assert not any("suspended" in w for w in s.warnings)


class _ScriptedProbe(ConstantPowerProbe):
    """Returns the values of ``script`` in turn (what a buggy custom probe might do)."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.script = list(script)

    def _read(self) -> dict[str, float]:
        self.reads += 1
        return {"cpu0": self.script.pop(0)}


def test_a_channel_going_backwards_counts_nothing_for_that_interval() -> None:
    s = make([_ScriptedProbe([0.0, 10.0, 20.0, 5.0, 15.0])])
    energies = [s.begin()[1]["cpu0"]] + [s.read()[1]["cpu0"] for _ in range(4)]
    assert energies == [0.0, 10.0, 20.0, 20.0, 30.0]
    assert any("went backwards" in w and "cpu0" in w for w in s.warnings)


def test_negative_joules_are_the_probes_error_never_a_negative_total() -> None:
    s = make([_ScriptedProbe([1.0, 2.0, -5.0, -6.0, -7.0, -8.0])])
    energies = [s.begin()[1]["cpu0"]] + [s.read()[1]["cpu0"] for _ in range(5)]
    assert min(energies) >= 0 and energies[-1] == 1.0
    assert any("-5.0" in w and ">= 0" in w for w in s.warnings)
    assert any("suspended" in w for w in s.warnings)


class _SlowReadProbe(ConstantPowerProbe):
    """Energy computed as the read starts, then ``delay_s`` more inside the read."""

    def __init__(self, delay_s: float, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.delay_s = delay_s

    def _read(self) -> dict[str, float]:
        value = super()._read()
        time.sleep(self.delay_s)
        return value


def test_time_zero_is_the_first_reads_own_stamp() -> None:
    s = make([_SlowReadProbe(0.02, power_w=100.0)])
    begun = time.monotonic()
    t0, energy0 = s.begin()
    first_s = time.monotonic() - begun
    assert t0 == 0.0 and energy0 == {"cpu0": 0.0}
    time.sleep(0.2)
    begun = time.monotonic()
    t_s, energy = s.read()
    second_s = time.monotonic() - begun
    # Energy and duration from the same reads: each stamp (the middle of its read) is at most
    # half its read's measured length from when the energy was taken (a fixed 6 % failed when
    # a loaded machine stretched the 20 ms read); t = 0 stamped at begin_run() would be off
    # by more than that.
    assert abs(energy["cpu0"] - 100.0 * t_s) <= 100.0 * (first_s + second_s) / 2
    assert s.started_wall_ns > 0


class _HangingProbe(ConstantPowerProbe):
    """A probe whose ``hang_on``-th read (or gauges) never returns, as a wedged driver does."""

    def __init__(self, hang_on: int, in_gauges: bool = False, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.hang_on = hang_on
        self.in_gauges = in_gauges
        self.forever = threading.Event()

    def _read(self) -> dict[str, float]:
        value = super()._read()
        if not self.in_gauges and self.reads >= self.hang_on:
            self.forever.wait()
        return value

    def _gauges(self) -> dict[str, float]:
        if self.in_gauges and self.reads >= self.hang_on:
            self.forever.wait()
        return super()._gauges()


@pytest.mark.parametrize("in_gauges", [False, True])
def test_a_probe_call_that_never_returns_cannot_hang_the_program(in_gauges: bool) -> None:
    hanging = _HangingProbe(hang_on=3, in_gauges=in_gauges, channel_id="gpu0", kind="gpu",
                            power_w=20.0, gauges={"gpu0_memory_used_bytes": 1.0})
    good = ConstantPowerProbe(power_w=5.0)
    s = make([hanging, good], interval_s=0.05, read_timeout_s=0.3)
    s.begin()
    s.start()
    durations = []
    for _ in range(6):
        begun = time.monotonic()
        _, energy = s.read(gauges=True)
        durations.append(time.monotonic() - begun)
        time.sleep(0.05)
    stuck_at = energy["gpu0"]
    hanging.forever.set()  # the call returns at last: the probe is read again
    time.sleep(0.2)
    begun = time.monotonic()
    t_s, energy = s.stop()
    stop_s = time.monotonic() - begun
    assert max(durations) < 0.3 + 0.25  # one read waited out the timeout, none hung
    assert stop_s < 0.05 + 2 * 0.3 + 0.25  # interval + a timeout per may-block probe
    assert energy["cpu0"] == pytest.approx(5.0 * t_s, rel=0.1)
    # A counter probe loses nothing: read again after the gap, its total covers it.
    assert energy["gpu0"] == pytest.approx(20.0 * t_s, rel=0.1)
    if in_gauges:  # a stuck gauge never costs energy
        assert stuck_at == pytest.approx(20.0 * 0.5, rel=0.5)
        assert any("gauges call did not return" in w and "gauges are left out" in w
                   for w in s.warnings)
    else:
        assert any("read call did not return" in w and "energy is left out" in w
                   for w in s.warnings)
    assert any("answered after" in w for w in s.warnings)
    assert not hanging.hung


class _LateStartCaller(TimedCaller):
    """A helper thread that gets to run only after ``delay_s`` (as one waiting for the GIL
    behind the user's long C call does)."""

    delay_s = 0.5

    def _serve(self, jobs):  # type: ignore[no-untyped-def]
        time.sleep(self.delay_s)
        super()._serve(jobs)


def test_a_call_is_timed_from_its_start_not_from_its_queueing() -> None:
    caller = _LateStartCaller(timeout_s=0.1)
    assert caller.call(lambda: 42) == 42  # started 0.5 s late, ran in no time: no timeout
    caller.close()
    quick = TimedCaller(timeout_s=0.1)
    with pytest.raises(CallTimeout):
        quick.call(lambda: time.sleep(0.5))  # ran too long: given up
    quick.close()


def test_rows_reach_disk_within_a_second_whatever_the_interval(tmp_path: Path) -> None:
    s = make([ConstantPowerProbe()], tmp_path, interval_s=2.5)
    s.begin()
    s.start()
    time.sleep(0.2)
    s.read()  # a boundary row between ticks
    time.sleep(1.3)
    _, rows = read_samples(tmp_path / "samples.csv")  # what a reader (or a kill) sees now
    s.stop()
    assert len(rows) >= 2  # the row at 0 s and the one at 0.2 s were flushed by 1.2 s


def test_ticks_skipped_under_load_are_counted() -> None:
    s = make([_SlowReadProbe(0.05)], interval_s=0.01)
    s.begin()
    s.start()
    time.sleep(0.5)
    s.stop()
    assert s.skipped_ticks > 10 and s.ticks < 15


def test_a_boundary_row_between_ticks_is_flushed_within_a_second(tmp_path: Path) -> None:
    s = make([ConstantPowerProbe()], tmp_path, interval_s=10.0)
    s.begin()
    s.start()
    time.sleep(1.3)  # the t=0 row is flushed by now
    t_boundary, _ = s.read()  # a phase or a log, between ticks 10 s apart
    time.sleep(1.3)
    _, rows = read_samples(tmp_path / "samples.csv")
    s.stop()
    assert any(float(r[0]) == pytest.approx(t_boundary, abs=1e-6) for r in rows)


class _FirstRunFails(ConstantPowerProbe):
    def __init__(self) -> None:
        super().__init__()
        self.began = 0

    def _first_run_began(self) -> None:
        self.began += 1
        if self.began == 1:
            raise ProbeError("transient failure while resynchronising")


def test_a_failed_begin_run_is_not_counted_as_a_run() -> None:
    probe = _FirstRunFails()
    with pytest.raises(ProbeError):
        probe.begin_run()
    probe.begin_run()  # counted from zero again: the hook runs
    probe.end_run()
    probe.begin_run()
    assert probe.began == 3


def test_buffered_events_are_flushed_after_samples_csv_was_given_up(tmp_path: Path) -> None:
    """A disk error on samples.csv gives that file up; the events buffered beside it (phases,
    logs) still reach events.jsonl within the flush deadline, not only at stop."""
    from energymeter.sampling.sampler import FLUSH_EVERY_S
    from energymeter.store import EventLog, read_events

    probe = ConstantPowerProbe("c0", "cpu", 10.0)
    writer = SamplesWriter(tmp_path / "samples.csv", ["c0"], [])

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    writer.flush = full_disk  # type: ignore[method-assign]
    events = EventLog(tmp_path / "events.jsonl")
    sampler = Sampler([probe], interval_s=0.05, gauge_interval_s=1.0,
                      aggregator=Aggregator(["c0"], 0.05), writer=writer, also_flush=(events,))
    sampler.begin()
    sampler.start()
    try:
        deadline = time.monotonic() + FLUSH_EVERY_S + 2.0
        while not any("samples.csv could not be written" in w for w in sampler.warnings):
            assert time.monotonic() < deadline, "samples.csv was never given up"
            time.sleep(0.02)
        events.event_later("phase", name="after")
        while not read_events(tmp_path / "events.jsonl"):
            assert time.monotonic() < deadline + FLUSH_EVERY_S, "events never flushed"
            time.sleep(0.02)
        assert [e["name"] for e in read_events(tmp_path / "events.jsonl")] == ["after"]
    finally:
        sampler.stop()
        events.close()
