"""Properties of the pure steps that long functions were split into: merging a job's runs
(``analysis/merge.py``), rebuilding a report from its files (``report/rebuild.py``), the
vectorised scan of ``samples.csv`` (``report/fastscan.py``) and the carbon block
(``carbon/account.py``).

The functions they came from keep their own tests (test_distributed, test_rebuild,
test_fastscan, test_carbon); these state what each step promises on its own.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.analysis.merge import (
    _distinct_runs,
    _missing_nodes,
    _overlapping,
    _rank_warnings,
)
from energymeter.carbon.account import J_PER_KWH, CarbonAccount, _emissions_g, _live_basis
from energymeter.carbon.static import intensity
from energymeter.report import Phase, Report
from energymeter.report.fastscan import _readable, _window_starts
from energymeter.report.rebuild import _drop_negative_gauges, _OpenPhase, _phases, _row_time
from energymeter.report.values import MAX_DURATION_S, MAX_ENERGY_J, MAX_NUMBER
from energymeter.settings import resolve_settings

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _run(run_id: str, *, node: str = "n1", rank: int | None = 0, merged: bool = False,
         warnings: tuple[str, ...] = ()) -> Report:
    job = {"id": "j", "node": node, "rank": rank, **({"merged": True} if merged else {})}
    return Report(run_id=run_id, name="train", status="completed", started_at=T0,
                  ended_at=T0 + timedelta(seconds=1), duration_s=1.0, warnings=warnings,
                  job=job)


# -- merge: groups of readings that overlap in time -------------------------------------------
spans = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), max_size=12).map(
    lambda items: sorted((T0 + timedelta(seconds=s), T0 + timedelta(seconds=s + d))
                         for s, d in items))


@settings(max_examples=200, deadline=None)
@given(items=spans)
def test_overlapping_groups_keep_every_item_in_order(items: list) -> None:
    groups = _overlapping(items, lambda span: span)
    assert [item for group in groups for item in group] == items
    assert all(groups)


@settings(max_examples=200, deadline=None)
@given(items=spans)
def test_overlapping_groups_overlap_inside_and_follow_each_other(items: list) -> None:
    groups = _overlapping(items, lambda span: span)
    end_before = None  # the latest end of every earlier group
    for group in groups:
        # A group starts at or after every earlier item's end...
        assert end_before is None or group[0][0] >= end_before
        # ...and each later item of it starts before the end of one earlier in it.
        end = group[0][1]
        for begin, finish in group[1:]:
            assert begin < end
            end = max(end, finish)
        end_before = end if end_before is None else max(end_before, end)


# -- merge: the runs given, each once ----------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(picks=st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), max_size=12))
def test_distinct_runs_takes_each_run_once_and_counts_saved_merges(picks: list) -> None:
    reports = [_run(f"r{i}", merged=merged) for i, merged, _ in picks]
    given_ = [("source", r) if as_pair else r
              for r, (_, _, as_pair) in zip(reports, picks, strict=True)]
    runs, merged_inputs = _distinct_runs(given_)
    assert merged_inputs == sum(merged for _, merged, _ in picks)
    expected = list(dict.fromkeys(f"r{i}" for i, merged, _ in picks if not merged))
    assert [r.run_id for r in runs] == expected


# -- merge: the runs' own warnings -------------------------------------------------------------
warning_texts = st.sampled_from(["disk slow", "clock skew", "this run measured no energy: x"])


@settings(max_examples=100, deadline=None)
@given(runs=st.lists(st.tuples(st.sampled_from(["n1", "n2"]), st.one_of(st.none(),
                                                                         st.integers(0, 3)),
                               st.lists(warning_texts, max_size=3)), max_size=6))
def test_rank_warnings_name_each_warning_once_with_where_it_came_from(runs: list) -> None:
    reports = [_run(f"r{i}", node=node, rank=rank, warnings=tuple(ws))
               for i, (node, rank, ws) in enumerate(runs)]
    out = _rank_warnings(reports)
    texts = [w for _, _, ws in runs for w in ws if not w.startswith("this run measured no")]
    assert len(out) == len(set(texts))
    for line, text in zip(out, dict.fromkeys(texts), strict=True):
        where = list(dict.fromkeys(
            f"{node} rank {rank}" if rank is not None else node
            for node, rank, ws in runs if text in ws))
        assert line == f"[{', '.join(where)}] {text}"


# -- merge: nodes whose energy the job lacks ---------------------------------------------------
def _nodes(measured: dict[str, bool], node_ranks: dict[str, int | None]) -> dict[str, dict]:
    return {name: {"node": name, "node_rank": node_ranks.get(name), "ranks": [0],
                   "measured_by": ["r"] if did else []} for name, did in measured.items()}


node_names = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=150, deadline=None)
@given(measured=st.dictionaries(node_names, st.booleans(), max_size=4),
       expected=st.lists(node_names, unique=True, max_size=4))
def test_missing_nodes_by_name(measured: dict[str, bool], expected: list[str]) -> None:
    missing, warnings = _missing_nodes(_nodes(measured, {}), expected)
    unmeasured = [n for n, did in measured.items() if not did]
    absent = [n for n in expected if n not in measured]
    assert missing == unmeasured + absent
    assert len(warnings) == len(unmeasured) + (1 if absent else 0)
    if absent:
        assert warnings[-1].startswith(f"{len(absent)} of the job's {len(expected)} nodes left")


@settings(max_examples=150, deadline=None)
@given(ranks=st.dictionaries(node_names, st.integers(0, 4), max_size=4),
       expected=st.integers(0, 6))
def test_missing_nodes_by_count_names_the_node_ranks_without_energy(
        ranks: dict[str, int], expected: int) -> None:
    missing, warnings = _missing_nodes(_nodes(dict.fromkeys(ranks, True), ranks), expected)
    measured = len(ranks)
    if expected <= measured:
        assert missing == [] and warnings == []
        return
    absent = [f"node rank {i}" for i in range(expected) if i not in set(ranks.values())]
    assert missing == absent
    assert len(warnings) == 1
    assert warnings[0].startswith(f"the job ran on {expected} nodes but only {measured} ")


# -- rebuild: a row's time ---------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(t_s=st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1, 2 * MAX_DURATION_S),
       previous=st.none() | st.floats(0, MAX_DURATION_S))
def test_row_time_is_seconds_in_range_and_in_order(t_s: float, previous: float | None) -> None:
    readable = 0.0 <= t_s <= MAX_DURATION_S and (previous is None or previous <= t_s)
    try:
        got = _row_time(repr(t_s), previous)
    except ValueError as exc:
        assert not readable
        assert "out of order or range" in str(exc) or t_s != t_s
    else:
        assert readable and got == t_s


@given(cell=st.sampled_from(["", "abc", "1,5", "0x10", " "]))
def test_row_time_of_text_is_unreadable(cell: str) -> None:
    try:
        _row_time(cell, None)
    except ValueError:
        return
    raise AssertionError(f"{cell!r} was read as a time")


# -- rebuild: gauges that went back -------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(resources=st.dictionaries(
    st.sampled_from(["cpu_time_s", "read_bytes", "write_bytes", "peak_rss_bytes",
                     "memory_basis"]),
    st.none() | st.integers(-5, 5) | st.floats(-1e6, 1e6) | st.just("rss")))
def test_negative_gauges_become_none_each_with_a_warning(resources: dict) -> None:
    out, warnings = _drop_negative_gauges(resources)
    negative = [k for k, v in resources.items() if isinstance(v, (int, float)) and v < 0]
    assert list(out) == list(resources)
    assert [k for k, v in out.items() if v is None] == \
        [k for k, v in resources.items() if v is None or k in negative]
    assert all(out[k] == v for k, v in resources.items() if k not in negative)
    assert warnings == [f"gauge {k} went backwards over samples.csv ({resources[k]!r}); "
                        "not reported" for k in negative]


# -- rebuild: phases still open at the end -------------------------------------------------------
joules = st.dictionaries(st.sampled_from(["cpu0", "gpu0", "dram0"]), st.floats(0, 1e6),
                         max_size=3)
open_phases = st.lists(st.builds(_OpenPhase, st.sampled_from(["a", "b"]), st.floats(0, 100),
                                 st.none() | st.just("a"), st.none() | joules), max_size=4)


@settings(max_examples=150, deadline=None)
@given(opened=open_phases, energy=joules, t_s=st.floats(0, 100),
       resolution_s=st.sampled_from([0.0, 1.0, 1000.0]), running=st.booleans(),
       ended=st.lists(st.floats(0, 100), max_size=3))
def test_open_phases_end_at_the_last_sample_with_a_warning_each(
        opened: list, energy: dict, t_s: float, resolution_s: float, running: bool,
        ended: list) -> None:
    done = [Phase("done", s, s + 1.0, {}) for s in ended]
    phases, warnings = _phases(done, opened, energy, t_s, resolution_s, running)
    assert [p.start_s for p in phases] == sorted(p.start_s for p in phases)
    assert [p for p in phases if not p.open_at_end] == sorted(done, key=lambda p: p.start_s)
    still = [p for p in phases if p.open_at_end]
    for p, got in zip(sorted(opened, key=lambda p: p.start_s), still, strict=True):
        assert (got.name, got.start_s, got.parent) == (p.name, p.start_s, p.parent)
        assert got.end_s == max(t_s, p.start_s)
        assert got.below_resolution == (got.end_s - got.start_s < resolution_s)
        begin = p.start_energy if p.start_energy is not None else energy
        assert got.energy_by_channel == {c: e - begin[c] for c, e in energy.items()
                                         if c in begin}
    for p, w in zip(opened, warnings, strict=True):
        assert w == (f"phase {p.name!r} was still open when the run "
                     f"{'was last flushed' if running else 'ended'}; it is shown as ending "
                     f"at the last flushed sample ({max(t_s, p.start_s):.2f} s)")


# -- fast scan: readable rows, as the row loop reads them ---------------------------------------
cells = st.sampled_from([math.nan, -1.0, 0.0, 2.5, 1e3, MAX_ENERGY_J, 2 * MAX_ENERGY_J,
                         math.inf])
times = st.sampled_from([math.nan, -1.0, 0.0, 0.5, 1.0, 1.0, 2.0, 3.0, MAX_DURATION_S + 1])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(times, cells, cells, st.sampled_from([math.nan, -5.0, 5.0,
                                                                     2 * MAX_NUMBER])),
                     max_size=15),
       prev_max=st.sampled_from([-math.inf, 0.0, 1.0, 2.5]))
def test_readable_rows_are_those_the_row_loop_reads(rows: list, prev_max: float) -> None:
    np = pytest.importorskip("numpy")
    t = np.array([r[0] for r in rows], dtype=float)
    e = np.array([r[1:3] for r in rows], dtype=float).reshape(len(rows), 2)
    g = np.array([r[3:] for r in rows], dtype=float).reshape(len(rows), 1)
    low = np.array([0.0])  # an amount: never negative
    valid, latest = _readable(t, e, g, low, prev_max)
    expected, seen = [], prev_max
    for time_s, e1, e2, gauge in rows:  # the row loop's checks, one row at a time
        passes = (0.0 <= time_s <= MAX_DURATION_S
                  and all(math.isnan(v) or 0.0 <= v <= MAX_ENERGY_J for v in (e1, e2))
                  and (math.isnan(gauge) or 0.0 <= gauge <= MAX_NUMBER))
        expected.append(passes and time_s >= seen)
        if passes:
            seen = max(seen, time_s)
    assert valid.tolist() == expected
    assert latest == seen


# -- fast scan: where each row's power window starts --------------------------------------------
@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.sampled_from([0.0, 0.05, 0.1, 0.25, 1.0]), min_size=1, max_size=20),
       first=st.integers(0, 19), window=st.sampled_from([0.1, 0.2, 0.5]))
def test_window_starts_at_the_last_row_a_window_older(steps: list, first: int,
                                                      window: float) -> None:
    np = pytest.importorskip("numpy")
    all_t = np.cumsum(steps)
    first = min(first, len(all_t) - 1)
    starts, use = _window_starts(all_t, first, window)
    for n, i in enumerate(range(first, len(all_t))):
        older = [j for j in range(len(all_t)) if all_t[j] <= all_t[i] - window]
        s = older[-1] if older else 0
        assert starts[n] == s
        assert bool(use[n]) == (s < i and all_t[i] - all_t[s] >= window)


# -- carbon: emissions and the basis of a live intensity -----------------------------------------
@settings(max_examples=200, deadline=None)
@given(it_j=st.floats(0, 1e12), pue=st.sampled_from([1.0, 1.1, 1.58]),
       table_g=st.floats(0, 1500))
def test_emissions_with_the_table_in_force_are_exactly_e_pue_i(it_j: float, pue: float,
                                                                table_g: float) -> None:
    facility_kwh = it_j * pue / J_PER_KWH
    assert _emissions_g(it_j, facility_kwh, it_j * table_g, 0.0, pue, table_g) == \
        facility_kwh * table_g


@settings(max_examples=200, deadline=None)
@given(it_j=st.floats(1.0, 1e12), live_share=st.floats(0.01, 1.0),
       pue=st.sampled_from([1.0, 1.1, 1.58]), table_g=st.floats(0, 1500),
       live_g=st.floats(0, 1500))
def test_emissions_of_a_live_intensity_are_its_time_weighted_sum(
        it_j: float, live_share: float, pue: float, table_g: float, live_g: float) -> None:
    live_j = it_j * live_share
    weighted_jg = live_j * live_g + (it_j - live_j) * table_g
    got = _emissions_g(it_j, it_j * pue / J_PER_KWH, weighted_jg, live_j, pue, table_g)
    assert got == pytest.approx(weighted_jg * pue / J_PER_KWH, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(share=st.floats(-0.5, 1.5), region=st.sampled_from(["SE", "DE", "FR"]),
       provider_basis=st.sampled_from(["lifecycle", "direct", "marginal"]))
def test_live_basis_names_who_gave_the_intensity(share: float, region: str,
                                                 provider_basis: str) -> None:
    static = intensity(region)
    basis, source = _live_basis(provider_basis, "Live API", static, share)
    if share >= 1.0:
        assert (basis, source) == (provider_basis, "Live API")
    elif share > 0:
        assert basis == (provider_basis if provider_basis == static.basis else "mixed")
        assert source == (f"Live API; {static.source} while it failed "
                          f"({1 - share:.0%} of the energy)")
    else:
        assert (basis, source) == (static.basis, f"{static.source} (live provider never "
                                                  "answered)")


@settings(max_examples=60, deadline=None)
@given(energy_j=st.floats(0, 1e10), pue=st.sampled_from([1.0, 1.2]),
       price=st.none() | st.sampled_from([0.1, 0.35]))
def test_a_static_carbon_block_is_e_pue_i_and_its_cost(energy_j: float, pue: float,
                                                       price: float | None) -> None:
    overrides = {"region": "SE", "pue": pue, "carbon_provider": "none",
                 **({"price_per_kwh": price, "currency": "EUR"} if price is not None else {})}
    settings_ = resolve_settings(overrides, env={}, pyproject=False)
    block = CarbonAccount.start(settings_, env={}, live=False).finish(energy_j)
    facility_kwh = energy_j * pue / J_PER_KWH
    assert block["it_energy_j"] == energy_j and block["facility_energy_kwh"] == facility_kwh
    assert block["emissions_g"] == facility_kwh * block["g_per_kwh"]
    assert block["provider"] == "table" and "live_energy_share" not in block
    assert ("cost" in block) == (price is not None)
    if price is not None:
        assert block["cost"] == facility_kwh * price and block["currency"] == "EUR"
