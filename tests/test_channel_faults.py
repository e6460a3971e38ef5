"""Faults are per channel, suspended channels are retried, and warnings stay bounded. Reads
are driven explicitly on a simulated clock: no sleeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from energymeter.errors import ProbeError
from energymeter.notes import MAX_WARNINGS, WarningBook, bounded
from energymeter.probes import hwmon, rapl
from energymeter.probes.base import Channel, DiscoveryContext, PartialRead, Probe
from energymeter.probes.nvml import NvmlProbe
from energymeter.probes.nvml import discover as nvml_discover
from energymeter.sampling.aggregate import Aggregator, peak_window_s
from energymeter.sampling.sampler import RETRY_MAX_S, Sampler
from tests.fakes.nvml import FakeClock, FakeGPU, FakeNVML
from tests.fakes.powercap import FakePowercap
from tests.fakes.probes import ConstantPowerProbe, FailingProbe
from tests.timing import SimClock

STEP_S = 0.1


def sampler(probes: list[Probe], clock: SimClock, interval_s: float = STEP_S) -> Sampler:
    ids = [c.id for p in probes for c in p.channels]
    return Sampler(probes, interval_s=interval_s, gauge_interval_s=1.0,
                   aggregator=Aggregator(ids, peak_window_s(interval_s, [])), counted_ids=ids,
                   clock_ns=clock.ns)


def rapl_probe(fake: FakePowercap, clock: SimClock) -> rapl.RaplProbe:
    found = rapl.discover(fake.context(), clock_ns=clock.ns)
    (probe,) = [p for p in found if isinstance(p, rapl.RaplProbe)]
    return probe


def step(fake: FakePowercap, clock: SimClock, s: Sampler, garbage: str | None = None
         ) -> dict[str, float]:
    fake.advance(STEP_S)
    clock.advance(STEP_S)
    if garbage is not None:  # what a zone holds while it is broken
        fake.write_raw(garbage, "garbage\n")
    return s.read()[1]


# -- item 5: per channel faults ------------------------------------------------------------------
def test_garbage_in_one_rapl_zone_loses_nothing_of_the_others_nor_of_itself(
        tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path / "pc", sockets=1, dram=True,
                        power_w={"package-0": 40.0, "dram": 5.0})
    clock = SimClock(5.0)
    probe = rapl_probe(fake, clock)
    s = sampler([probe], clock)
    s.begin()
    for _ in range(10):
        step(fake, clock, s)
    during = []
    for _ in range(5):  # 0.5 s of garbage in the package's energy_uj
        during.append(step(fake, clock, s, garbage="package-0"))
    # DRAM is read as usual all along; the package stands at its last good value.
    assert [e["dram0"] for e in during] == pytest.approx(
        [5.0 * STEP_S * (11 + i) for i in range(5)])
    assert len({e["cpu0"] for e in during}) == 1
    # Suspended after 3 errors in a row, alone, by this sampler: the probe holds no state.
    assert s._skip[id(probe)] == frozenset({"cpu0"}) and probe.skip == frozenset()
    for _ in range(15):  # readable again; the retry comes 1 s after the suspension
        energy = step(fake, clock, s)
    t_s, energy = s.stop()
    elapsed_s = 30 * STEP_S
    assert t_s == pytest.approx(elapsed_s)
    # Nothing lost: the counter's energy over the gap is counted when it reads again.
    assert energy["cpu0"] == pytest.approx(40.0 * elapsed_s, abs=1e-5)
    assert energy["dram0"] == pytest.approx(5.0 * elapsed_s, abs=1e-5)
    # The gap's energy arriving in one interval is no power peak.
    assert s.aggregator.peak_power_w["cpu0"] == pytest.approx(40.0, rel=1e-3)
    warnings = s.warnings
    assert any("channel cpu0 (rapl)" in w and "suspended" in w for w in warnings)
    (summary,) = [w for w in warnings if "channel cpu0 (rapl) was out" in w]
    assert "recovered" in summary and "energy over the gap is counted" in summary
    assert "1.20 s" in summary  # first failure at 1.1 s, read well again at the retry, 2.3 s
    assert not any("dram0" in w for w in warnings)
    assert not s._skip[id(probe)]
    probe.close()
    fake.close()


def test_a_counter_wrap_during_an_outage_is_undone(tmp_path: Path) -> None:
    # 400 J range (wraps every 10 s at 40 W), starting 10 J below the top: it wraps 0.25 s
    # into the run, while the zone holds garbage; 60 W maximum: a wrap time of 6.7 s.
    fake = FakePowercap(tmp_path / "pc", sockets=1, dram=False, power_w={"package-0": 40.0},
                        max_energy_range_uj=400_000_000, initial_energy_uj=390_000_000,
                        max_power_w=60.0)
    clock = SimClock(5.0)
    probe = rapl_probe(fake, clock)
    s = sampler([probe], clock)
    s.begin()
    for _ in range(5):
        step(fake, clock, s, garbage="package-0")
    for _ in range(20):
        step(fake, clock, s)
    _, energy = s.stop()
    assert energy["cpu0"] == pytest.approx(40.0 * 25 * STEP_S, abs=1e-5)
    assert probe.describe()["zones"][0]["wraps"] == 1
    assert not any("wrap may have been missed" in w for w in probe.drain_warnings())
    probe.close()
    fake.close()


def test_a_value_above_the_counter_range_is_that_zones_error(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path / "pc", sockets=1, dram=True)
    clock = SimClock(5.0)
    probe = rapl_probe(fake, clock)
    fake.write_raw("package-0", f"{fake.counter_uj('dram') + 10**15}\n")
    with pytest.raises(PartialRead) as caught:
        probe.read()
    assert set(caught.value.errors) == {"cpu0"} and set(caught.value.values) == {"dram0"}
    assert "max_energy_range_uj" in caught.value.errors["cpu0"]
    probe.close()
    fake.close()


def test_a_whole_probe_failing_five_times_is_retried_and_read_again() -> None:
    clock = SimClock(5.0)
    flaky = FailingProbe(fail_on=lambda n: 3 <= n <= 7, channel_id="gpu0", kind="gpu",
                         power_w=20.0, clock=clock.s)
    good = ConstantPowerProbe(power_w=5.0, clock=clock.s)
    s = sampler([flaky, good], clock)
    s.begin()  # read 1
    calls = []
    for _ in range(120):  # 12 s
        clock.advance(STEP_S)
        _, energy = s.read()
        calls.append(flaky.reads)
    # Reads 3, 4, 5 fail: suspended; retries after 1, 2 and 4 s fail (6, 7), then succeed (8).
    assert flaky.reads > 8 and calls.count(5) == 10 and calls.count(6) == 20
    assert calls.count(7) == 40
    t_s, energy = s.stop()
    assert energy["gpu0"] == pytest.approx(20.0 * t_s)  # a counter: the gap is counted
    assert energy["cpu0"] == pytest.approx(5.0 * t_s)
    (summary,) = [w for w in s.warnings if "probe fake (channels gpu0) was out" in w]
    assert "recovered" in summary and "7.20 s" in summary
    assert any("simulated failure on read 3" in w and "(and 4 more times)" in w
               for w in s.warnings)


def test_a_channel_that_never_recovers_is_retried_at_most_ten_seconds_apart() -> None:
    clock = SimClock(5.0)
    broken = FailingProbe(fail_on=lambda n: n >= 2, clock=clock.s)
    s = sampler([broken], clock)
    s.begin()
    seen = []
    for _ in range(600):  # a minute
        clock.advance(STEP_S)
        s.read()
        seen.append(broken.reads)
    gaps = [seen.index(n + 1) - seen.index(n) for n in range(seen[0], seen[-1])]
    assert max(gaps) * STEP_S == pytest.approx(RETRY_MAX_S)
    s.stop()
    assert broken.reads == seen[-1] + 1  # the final read retries it
    (summary,) = [w for w in s.warnings if "had not recovered" in w]
    assert "t = 0.10 s" in summary and "t = 60.00 s" in summary


class _TwoChannels(ConstantPowerProbe):
    """Two channels; ``b`` returns NaN on the reads in ``bad``."""

    def __init__(self, bad: range, clock: SimClock) -> None:
        super().__init__(clock=clock.s)
        self.channels = (Channel("a", "cpu", "x", "fake", "counter"),
                         Channel("b", "dram", "x", "fake", "counter"))
        self.bad = bad

    def _read(self) -> dict[str, float]:
        self.reads += 1
        t = self._clock() - self._t0
        return {"a": 10.0 * t, "b": float("nan") if self.reads in self.bad else 1.0 * t}


def _two_seconds(kind: type[_TwoChannels]) -> tuple[dict[str, float], list[str]]:
    """20 reads of 0.1 s of a two-channel probe whose channel b is bad on reads 3 to 5: the
    last energies and the warnings."""
    clock = SimClock(5.0)
    s = sampler([kind(range(3, 6), clock)], clock)
    s.begin()
    for _ in range(20):
        clock.advance(STEP_S)
        _, energy = s.read()
    return energy, s.warnings


def test_a_bad_value_in_one_channel_is_that_channels_fault_alone() -> None:
    energy, warnings = _two_seconds(_TwoChannels)
    assert energy["a"] == pytest.approx(20.0) and energy["b"] == pytest.approx(2.0)
    assert any("channel b (fake) was out" in w and "recovered" in w for w in warnings)
    assert not any("channel a" in w for w in warnings)


class _Huge(_TwoChannels):
    """``b`` reads 1e19 J on the reads in ``bad``: finite, yet no report could load it."""

    def _read(self) -> dict[str, float]:
        values = super()._read()
        return {**values, "b": 1e19} if self.reads in self.bad else values


def test_a_value_no_report_could_hold_is_that_channels_fault() -> None:
    """The live path checks joules as every reader of the run does (store.readers
    .check_joules): above 1e18 J a report written live would not load back."""
    energy, warnings = _two_seconds(_Huge)
    assert energy["a"] == pytest.approx(20.0) and energy["b"] == pytest.approx(2.0)
    assert any("channel b (fake)" in w and "1e+19" in w and "at most 1e+18" in w
               for w in warnings)


def test_a_suspension_is_the_suspending_samplers_own(tmp_path: Path) -> None:
    """Found in review: suspensions lived on the (cached, shared) probe, so a nested meter
    silently lost a channel the outer one had suspended, and lifted the outer one's when it
    began or stopped."""
    fake = FakePowercap(tmp_path / "pc", power_w={"package-0": 40.0, "package-0/dram": 5.0})
    clock = SimClock(5.0)
    probe = rapl_probe(fake, clock)
    outer, inner = sampler([probe], clock), sampler([probe], clock)
    outer.begin()
    for _ in range(4):
        step(fake, clock, outer, garbage="package-0")
    assert outer._skip[id(probe)] == frozenset({"cpu0"})
    step(fake, clock, outer)  # readable again; the outer run retries it only later
    inner.begin()
    for _ in range(3):
        energy = step(fake, clock, inner)
    assert energy["cpu0"] == pytest.approx(40.0 * 3 * STEP_S)
    assert outer._skip[id(probe)] == frozenset({"cpu0"})  # untouched by the inner run
    inner.stop()
    assert outer._skip[id(probe)] == frozenset({"cpu0"})
    _, final = outer.stop()  # the final read retries it: the gap is counted
    assert final["cpu0"] == pytest.approx(40.0 * 8 * STEP_S, abs=1e-5)
    probe.close()
    fake.close()


def test_nvml_one_gpu_failing_does_not_take_the_others(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = FakeNVML([FakeGPU(name="NVIDIA A100-SXM4-80GB", arch="ampere", power_w=100.0),
                     FakeGPU(name="NVIDIA A100-SXM4-80GB", arch="ampere", power_w=200.0)],
                    clock=clock)
    found = nvml_discover(DiscoveryContext(pynvml=fake), start_poller=False, clock=clock)
    (probe,) = [p for p in found if isinstance(p, NvmlProbe)]
    first = probe.read()
    clock.advance(1.0)
    fake.fail(1, "nvmlDeviceGetTotalEnergyConsumption", "Unknown")  # lost: stays at last value
    fake.fail(0, "nvmlDeviceGetTotalEnergyConsumption", "Timeout")
    with pytest.raises(PartialRead) as caught:
        probe.read()
    assert set(caught.value.errors) == {"gpu0"} and "gpu1" in caught.value.values
    fake.clear_failures()
    clock.advance(1.0)
    values = probe.read(frozenset({"gpu1"}))  # a suspended channel is not called
    assert set(values) == {"gpu0"}
    assert values["gpu0"] - first["gpu0"] == pytest.approx(200.0, rel=0.01)  # gap counted
    probe.close()


def test_hwmon_one_unreadable_sensor_fails_alone(tmp_path: Path) -> None:
    from tests.fakes.hwmon import FakeHwmon

    fake = FakeHwmon(tmp_path)
    hw = fake.device("amd_energy", [("energy", 1, "Esocket0"), ("energy", 2, "Esocket1")])
    found = hwmon.discover(DiscoveryContext(sysfs_root=tmp_path))
    (probe,) = [p for p in found if isinstance(p, hwmon.HwmonProbe)]
    by_label = {c.meta["label"]: c.id for c in probe.channels}
    (fake.base / hw / "energy1_input").write_text("garbage\n")
    fake.add_energy(hw, 2, 5.0)
    with pytest.raises(PartialRead) as caught:
        probe.read()
    assert set(caught.value.errors) == {by_label["Esocket0"]}
    assert caught.value.values == {by_label["Esocket1"]: pytest.approx(5.0)}
    fake.set_energy_uj(hw, 1, 7_000_000)  # readable again: the gap is counted
    assert probe.read()[by_label["Esocket0"]] == pytest.approx(7.0)
    probe.close()


# -- item 6a: bounded warnings -------------------------------------------------------------------
class _SawTooth(ConstantPowerProbe):
    """A counter that drops back every other read (what a buggy driver was seen to do)."""

    def _read(self) -> dict[str, float]:
        self.reads += 1
        return {"cpu0": self.reads * 1.5 - (self.reads % 2) * 10.0 + 10.0}


def test_a_saw_tooth_gives_a_bounded_number_of_warnings_with_repeats_counted() -> None:
    clock = SimClock(5.0)
    s = sampler([_SawTooth(clock=clock.s)], clock)
    s.begin()
    for _ in range(200):
        clock.advance(STEP_S)
        s.read()
    s.stop()
    (warning,) = s.warnings
    assert warning.startswith("channel cpu0 went backwards (")
    assert warning.endswith("(and 99 more times)")  # 100 drops in 201 reads, one kept


def test_warning_book_caps_distinct_warnings_and_says_how_many_more() -> None:
    book = WarningBook()
    for i in range(2487):
        book.add(f"something different {i}")
    messages = book.messages()
    assert len(messages) == MAX_WARNINGS + 1
    assert messages[-1].startswith(f"{2487 - MAX_WARNINGS} more warnings not shown")
    assert len(bounded([*messages, *messages, "x" * 10**6])) == MAX_WARNINGS + 1
    assert max(len(m) for m in bounded(["x" * 10**6])) < 2100


def test_a_probes_own_warnings_are_bounded() -> None:
    probe = ConstantPowerProbe()
    for i in range(1000):
        probe.warn(f"reset at {i} mJ", key=("reset", "cpu0"))
        probe.warn(f"distinct {i}")
    drained = probe.drain_warnings()
    assert drained[0] == "reset at 0 mJ (and 999 more times)"
    assert len(drained) == MAX_WARNINGS + 1 and "not shown" in drained[-1]
    assert probe.drain_warnings() == []


def test_a_saw_tooth_rapl_counter_makes_a_small_report(tmp_path: Path) -> None:
    """End to end: a RAPL zone whose counter drops back every other read, through
    measure(): the report stays small and says how often it happened."""
    from energymeter import measure

    fake = FakePowercap(tmp_path / "pc", sockets=1, dram=False)
    with measure("saw", powercap_root=fake.root, region="SE", interval_s=3600,
                 out=tmp_path / "runs") as m:
        for i in range(200):
            fake.write_raw("package-0", f"{1_000_000 * (i % 2) + i * 1000 + 5_000_000}\n")
            m.log(step=i)  # a boundary read
    report = m.report
    resets = [w for w in report.warnings if "dropped from" in w]
    assert len(resets) == 1 and "more times)" in resets[0]
    assert len(report.warnings) < 10
    assert len(json.dumps(report.to_dict()["warnings"])) < 5_000
    fake.close()


def test_probe_error_classes() -> None:
    assert issubclass(PartialRead, ProbeError)
    err = PartialRead({"a": 1.0}, {"b": "broken"})
    assert err.values == {"a": 1.0} and "b: broken" in str(err)
