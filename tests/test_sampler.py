from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from energymeter.sampling.aggregate import Aggregator, peak_window_s
from energymeter.sampling.sampler import MAX_CONSECUTIVE_FAILURES, Sampler
from energymeter.store import SamplesWriter, read_samples
from tests.fakes.probes import ConstantPowerProbe, FailingProbe


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


def test_thread_samples_writes_and_flushes(tmp_path: Path) -> None:
    probe = ConstantPowerProbe(power_w=10.0, gauges={"rss_bytes": 123.0})
    energies = []
    s = make([probe], tmp_path, on_energy=energies.append)
    s.begin()
    s.start()
    time.sleep(0.3)
    t_s, energy = s.stop()
    assert s.ticks >= 10
    assert abs(energy["cpu0"] - 10.0 * t_s) < 0.05 * 10 * t_s
    header, rows = read_samples(tmp_path / "samples.csv")
    assert header == ["t_s", "cpu0_j", "rss_bytes"]
    assert len(rows) >= s.ticks  # every tick plus the boundary reads
    assert any(r[2] == "123.0" for r in rows) and any(r[2] == "" for r in rows)
    assert energies == sorted(energies) and energies[-1] == energy["cpu0"]
    assert abs(s.aggregator.peak_power_w["cpu0"] - 10.0) < 1.5
    assert s.aggregator.gauge_peak["rss_bytes"] == 123.0
    assert 0 <= s.thread_cpu_s < t_s


def test_probe_failing_three_times_is_dropped_others_continue() -> None:
    bad = FailingProbe(fail_on=lambda n: n >= 3, channel_id="gpu0", kind="gpu")
    good = ConstantPowerProbe(power_w=5.0)
    s = make([bad, good])
    s.begin()
    last_good = None
    for _ in range(6):
        _, energy = s.read()
        last_good = last_good if last_good is not None else energy["gpu0"]
    assert bad.reads == 2 + MAX_CONSECUTIVE_FAILURES  # not read again once dropped
    assert energy["gpu0"] == s.read()[1]["gpu0"]  # frozen at its last good value
    assert energy["cpu0"] > 0
    warnings = s.warnings
    assert any("simulated failure" in w for w in warnings)
    assert any("dropped after 3 consecutive errors" in w and "gpu0" in w for w in warnings)


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
        assert any("dropped" in w and "gpu0" in w for w in s.warnings), value

    ghost = _BadValueProbe({"gpu0": 1.0, "ghost": 2.0})
    s = make([ghost])
    s.begin()
    for _ in range(4):
        _, energy = s.read()
    assert set(energy) == {"gpu0"}
    assert any("'ghost'" in w and "not declare" in w for w in s.warnings)
    assert not any("dropped" in w for w in s.warnings)
