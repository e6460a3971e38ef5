"""CumulativeCounter (energymeter/probes/counter.py): wraps, resets and glitches of hardware
energy accumulators, as RAPL, NVML and amdsmi give them. Pure: no fake needed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from energymeter.probes.counter import GLITCH_READS, CumulativeCounter

BOUND = 1_000  # the most a counter may move between two readings, in its own unit
steps = st.lists(st.integers(0, BOUND), min_size=1, max_size=40)


@given(start=st.integers(0, 2**64 - 1), increments=steps)
def test_plausible_steps_and_64_bit_wraps_are_counted_exactly(start: int,
                                                              increments: list[int]) -> None:
    counter = CumulativeCounter(start, 2**64, restarts_from_zero=True)
    raw = start
    for inc in increments:
        raw = (raw + inc) % 2**64
        counter.advance(raw, BOUND)
    assert counter.total == sum(increments)
    assert counter.glitches == counter.resets == 0


@given(start=st.integers(10 * BOUND, 2**40), before=steps, after=steps,
       glitch=st.one_of(st.integers(-(2**40), -1), st.integers(BOUND * 3, 2**40)))
def test_one_glitch_is_ignored_and_the_next_good_reading_catches_up(
        start: int, before: list[int], after: list[int], glitch: int) -> None:
    """A reading that jumps up by more than the device can draw, or steps back without
    restarting from 0 (ROCm/amdsmi#115), adds nothing; nothing is lost either."""
    counter = CumulativeCounter(start, 2**64, restarts_from_zero=True)
    raw = start
    for inc in before:
        raw += inc
        counter.advance(raw, BOUND)
    bad = raw + glitch
    if 0 <= bad <= BOUND or bad < 0:  # a drop to near 0 is a real restart: not this test
        bad = raw - BOUND - 1 if raw - BOUND - 1 > BOUND else raw + 2 * BOUND + 1
    assert counter.advance(bad, BOUND) == 0
    assert counter.glitches == 1
    for inc in after:
        raw += inc
        # the interval that held the glitch is twice as long: so is the bound
        counter.advance(raw, 2 * BOUND)
    assert counter.total == sum(before) + sum(after)
    assert counter.resets == 0


def test_a_glitch_that_persists_becomes_the_new_baseline() -> None:
    counter = CumulativeCounter(5_000, restarts_from_zero=True)
    counter.advance(5_500, BOUND)
    for i in range(GLITCH_READS):
        assert counter.advance(900_000 + i, BOUND) == 0  # the first ones ignored, then taken
    assert (counter.glitches, counter.resets, counter.last) == (GLITCH_READS, 1,
                                                                  900_000 + GLITCH_READS - 1)
    counter.advance(900_100 + GLITCH_READS, BOUND)
    assert counter.total == 500 + 101  # before the jump, and after the new baseline


def test_a_restart_from_zero_counts_the_energy_since_it_once_confirmed() -> None:
    counter = CumulativeCounter(7_654_321, restarts_from_zero=True)
    counter.advance(7_654_821, BOUND)
    assert counter.advance(300, BOUND) == 0  # driver reload? not counted until confirmed
    assert counter.outcome == "pending"
    assert counter.advance(450, BOUND) == 450  # it goes on from 300: 300 since the restart
    assert (counter.outcome, counter.resets, counter.glitches, counter.total) == (
        "reset", 1, 0, 950)


def test_a_counter_that_does_not_restart_from_zero_keeps_its_rules() -> None:
    """RAPL's counter (a modulus, no restart from 0) has no glitch handling unless asked:
    an implausible drop is a reset counting nothing, as before."""
    counter = CumulativeCounter(900, modulus=1_000)
    assert counter.advance(100, 250) == 200  # a wrap within the bound
    assert counter.advance(50, 10) == 0  # no wrap this small: a reset, nothing counted
    assert (counter.wraps, counter.resets, counter.glitches) == (1, 1, 0)


def test_no_bound_no_glitch_handling() -> None:
    counter = CumulativeCounter(1_000, restarts_from_zero=True)
    assert counter.advance(10**12) == 10**12 - 1_000
    assert counter.glitches == 0


def test_a_small_step_back_stays_a_glitch_however_long_the_gap() -> None:
    """After a long gap the bound is large; a counter that steps back by a few percent has
    not restarted from 0 (ROCm/amdsmi#115), so its since-boot value is never counted."""
    counter = CumulativeCounter(5_000_000, restarts_from_zero=True)
    assert counter.advance(4_900_000, max_increase=10**9) == 0
    assert (counter.outcome, counter.resets, counter.glitches) == ("glitch", 0, 1)


def test_a_dip_to_near_zero_for_one_reading_loses_nothing() -> None:
    """intel/compute-runtime#938: a counter read ~0 once, then its true value again. The dip
    looks like a restart, so it is not counted until the next reading, which goes on from
    before it: a glitch, nothing lost, and the total never went down."""
    counter = CumulativeCounter(22_000_000, restarts_from_zero=True)
    counter.advance(22_000_070, BOUND)
    assert counter.advance(3 * BOUND // 4, BOUND) == 0  # a large dip: still not counted
    assert counter.total == 70
    counter.advance(22_000_210, BOUND)
    assert (counter.outcome, counter.resets, counter.glitches) == ("undone", 0, 1)
    counter.advance(22_000_280, BOUND)
    assert counter.total == 280  # every unit from the start, none of the dip's


def test_the_reading_after_a_dip_may_come_after_a_long_gap_then_a_short_one() -> None:
    """The bound after a dip spans both intervals: a long one (the dip's) and a short one."""
    counter = CumulativeCounter(22_000_000, restarts_from_zero=True)
    assert counter.advance(40, 60 * BOUND) == 0  # read after 60 "seconds"
    counter.advance(22_000_000 + 42 * BOUND, BOUND // 2)  # 42 of them used, read 0.5 s later
    assert (counter.outcome, counter.total) == ("undone", 42 * BOUND)


@given(start=st.integers(10 * BOUND, 2**40), steps_before=steps, steps_after=steps,
       dip=st.integers(0, BOUND), dip_at=st.integers(0, 40))
def test_a_total_never_goes_down(start: int, steps_before: list[int], steps_after: list[int],
                                 dip: int, dip_at: int) -> None:
    counter = CumulativeCounter(start, restarts_from_zero=True)
    raw, totals = start, [0]
    for i, inc in enumerate(steps_before + steps_after):
        if i == dip_at:
            counter.advance(dip, BOUND)
            totals.append(counter.total)
        raw += inc
        counter.advance(raw, 2 * BOUND)
        totals.append(counter.total)
    assert totals == sorted(totals)
    assert counter.total == raw - start  # the dip lost nothing


def test_a_real_restart_is_kept_when_the_counter_goes_on_from_it() -> None:
    counter = CumulativeCounter(22_000_000, restarts_from_zero=True)
    counter.advance(40, BOUND)
    counter.advance(120, BOUND)
    assert (counter.outcome, counter.resets, counter.total) == ("reset", 1, 120)


def test_a_wrong_modulus_never_gives_a_negative_wrap() -> None:
    counter = CumulativeCounter(900, modulus=500)  # a modulus that cannot hold 900
    assert counter.advance(100, 10**6) == 0
    assert (counter.wraps, counter.resets) == (0, 1)
