"""One job's runs merged into one report: every device counted once, every node accounted for.

A distributed job (torchrun, SLURM, MPI) leaves one run per rank, each with a ``job`` block
(:mod:`energymeter.session.launch`). :func:`merge` sums the job over its nodes:

* every device once: a GPU is known by its UUID on its node, any other channel (RAPL zone,
  CPU model) by its id on its node; when several runs measured the same device (``ranks=all``,
  ``own`` ranks sharing a CPU) the run that covered the longest time gives its energy, and the
  others are listed under ``job.deduplicated``;
* runs nested in another run of the job (``measure()`` inside ``energymeter run``) are
  covered by their parent and left out of the energy;
* the time span runs from the first run's start to the last one's end;
* a node the job ran on (SLURM's node list, the launcher's node count) without a run that
  measured its energy is reported in ``job.missing_nodes`` and a warning, never ignored;
* a run whose figures fail the checks of what a run may hold (:func:`rank_problem`: energies
  that are not cumulative joules, a duration out of range, negative or non-finite resources,
  phases or emissions) adds nothing: it is listed under ``job.excluded_runs`` with a warning
  naming its run directory and why, so no negative or non-finite number enters a total.

The result is a :class:`~energymeter.report.Report` (``run_id`` ``job-<id>``) whose channels
are named ``<node>:<channel>``, whose phases are the ranks' phases summed over nodes (matched
by name, parent and occurrence) and whose ``job`` block holds the per-node breakdown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ReportError
from ..store.readers import MAX_DURATION_S, MAX_NUMBER, check_joules, mean_power_w

if TYPE_CHECKING:
    from ..report import ChannelEnergy, Phase, Report

#: How the merged statuses rank: the job's status is the worst of its runs'.
_STATUS_ORDER = ("failed", "interrupted", "running", "completed")
#: Below this share of its ranks' time measured, a node's energy is said to be incomplete.
COVERAGE_WARN = 0.9
#: The most host names a SLURM node list is expanded to.
MAX_NODELIST = 100_000
#: The ``id_source`` of a job id derived from torchrun's rendezvous address (not unique over
#: time: its runs are split where they do not overlap in time).
DERIVED_ID_SOURCE = "MASTER_ADDR:MASTER_PORT"


def job_id(report: Report) -> str | None:
    """The job id of ``report`` (``None`` for a run under no launcher)."""
    value = (report.job or {}).get("id")
    return None if value is None else str(value)


def _node(report: Report) -> str:
    node = (report.job or {}).get("node") or report.host.get("hostname") or "?"
    return str(node)


def _rank(report: Report) -> int | None:
    rank = (report.job or {}).get("rank")
    return rank if isinstance(rank, int) else None


#: The resources of a run that merging adds up or takes the largest of: amounts, never negative.
_SUMMED_RESOURCES = ("cpu_time_s", "read_bytes", "write_bytes", "peak_rss_bytes",
                     "peak_gpu_memory_bytes")


def _amount(value: Any) -> bool:
    """Whether ``value`` is a finite number from 0 to :data:`MAX_NUMBER` (booleans are not)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and 0.0 <= float(value) <= MAX_NUMBER)


def rank_problem(report: Report) -> str | None:
    """Why the figures of one run of a job cannot enter the job's totals, or ``None`` when they
    can: its duration must be seconds from 0 to ``MAX_DURATION_S``, each channel's energy
    cumulative joules (:func:`~energymeter.store.readers.check_joules`, the sampler's rule)
    and its powers finite, each phase's energies finite joules >= 0, the resources summed or
    compared and the carbon figures merged (emissions, PUE, price) finite amounts >= 0 (or
    absent). These are the loader's checks, made strict where a figure enters a total: a
    report built in memory is checked too."""
    if not (isinstance(report.duration_s, (int, float))
            and 0.0 <= report.duration_s <= MAX_DURATION_S):
        return f"duration_s is {report.duration_s!r} (seconds from 0 to {MAX_DURATION_S:g})"
    for i, ce in enumerate(report.channels):
        try:
            check_joules(ce.energy_j)
        except ValueError as exc:
            return f"channels[{i}] ({ce.channel.id}).energy_j: {exc}"
        for key in ("mean_power_w", "peak_power_w"):
            value = getattr(ce, key)
            if value is not None and not (isinstance(value, (int, float))
                                          and math.isfinite(value)):
                return f"channels[{i}] ({ce.channel.id}).{key} is {value!r} (a finite number)"
    for p in report.phases:
        for cid, joules in p.energy_by_channel.items():
            try:
                check_joules(joules)
            except ValueError as exc:
                return f"phase {p.name!r}, channel {cid}: {exc}"
    for key in _SUMMED_RESOURCES:
        value = report.resources.get(key)
        if value is not None and not _amount(value):
            return f"resources.{key} is {value!r} (a finite number >= 0, or null)"
    for key in ("emissions_g", "pue", "price_per_kwh"):  # what _carbon multiplies and adds
        value = (report.carbon or {}).get(key)
        if value is not None and not _amount(value):
            return f"carbon.{key} is {value!r} (a finite number >= 0, or null)"
    return None


def expand_nodelist(text: str) -> list[str] | None:
    """The host names of a SLURM node list (``gpu[01-03,07],login1``), or ``None`` when it is
    not in that form."""
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,\[]*", text):
        match = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\]([^\[\]]*)", part)
        if match is None:
            if "[" in part or "]" in part or not part:
                return None
            names.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            bounds = item.split("-")
            if not all(b.isdigit() for b in bounds) or len(bounds) > 2:
                return None
            width = len(bounds[0])
            low, high = int(bounds[0]), int(bounds[-1])
            if high < low or high - low > 100_000:
                return None
            if len(names) + high - low + 1 > MAX_NODELIST:
                return None
            names += [f"{prefix}{n:0{width}d}{suffix}" for n in range(low, high + 1)]
    return names


def split_jobs(reports: Iterable[Report]) -> dict[str, list[Report]]:
    """``reports`` under a launcher, by job (key: the job id; a job id derived from torchrun's
    rendezvous address is split into runs that overlap in time, keyed ``id@start``). Runs
    with no job id are left out; a run reached twice counts once."""
    seen: set[str] = set()
    by_id: dict[str, list[Report]] = {}
    for report in reports:
        jid = job_id(report)
        if jid is None or report.run_id in seen:
            continue
        seen.add(report.run_id)
        by_id.setdefault(jid, []).append(report)
    out: dict[str, list[Report]] = {}
    for jid, runs in by_id.items():
        if all((r.job or {}).get("id_source") != DERIVED_ID_SOURCE for r in runs):
            out[jid] = runs
            continue
        runs = sorted(runs, key=lambda r: r.started_at)
        clusters: list[list[Report]] = []
        end: datetime | None = None
        for run in runs:
            if end is None or run.started_at > end:
                clusters.append([])
                end = run.ended_at
            clusters[-1].append(run)
            end = max(end, run.ended_at)
        for cluster in clusters:
            key = jid if len(clusters) == 1 else f"{jid}@{cluster[0].started_at.isoformat()}"
            out[key] = cluster
    return out


def _device_key(node: str, channel: Any) -> str:
    uuid = channel.meta.get("uuid") if channel.kind == "gpu" else None
    return f"{node}/{uuid}" if uuid else f"{node}/{channel.kind}/{channel.id}"


def _worst(statuses: Iterable[str]) -> str:
    found = set(statuses)
    return next((s for s in _STATUS_ORDER if s in found), "completed")


def merge(reports: Iterable[Report | tuple[str | None, Report]], *,
          job: str | None = None, expected_nodes: int | Sequence[str] | None = None,
          ) -> Report:
    """The merged report of one job's runs (see the module's description).

    ``reports``: the job's runs (reports or ``(source, report)`` pairs from
    :func:`~energymeter.analysis.find_runs`); with ``job``, only the runs of that job id are
    taken from them. ``expected_nodes``: the nodes the job ran on, as a count or names
    (default: what the runs' ``job`` blocks say: SLURM's node list or the launcher's node
    count). Raises :class:`ReportError` when no run matches or the runs belong to several
    jobs (naming them)."""
    distinct, merged_inputs = _distinct_runs(reports)
    runs = _select_job(distinct, job)
    jid = str(job_id(runs[0]))
    excluded = _excluded(runs, jid)
    nested = _nested(runs, excluded)
    nested_ids = {r.run_id for r in nested}
    top = [r for r in runs if r.run_id not in nested_ids and r.run_id not in excluded]
    kept, deduplicated = _each_device_once(top)
    channels, kept_by_run, merged_id = _merged_channels(kept)
    started = min(r.started_at for r in runs)
    phases = _merged_phases(top, kept_by_run, merged_id, started)
    nodes = _nodes(runs, kept)
    expected = _expected_nodes(runs, expected_nodes)
    warnings, missing = _job_warnings(runs, excluded, merged_inputs, nodes, expected,
                                      deduplicated)
    job_info = _job_block(jid, runs, started, len(nested), nodes, expected, missing,
                          deduplicated, excluded)
    return _merged_report(runs, top, job_info, channels, phases, kept_by_run, warnings)


def _distinct_runs(reports: Iterable[Report | tuple[str | None, Report]]
                   ) -> tuple[list[Report], int]:
    """The runs among ``reports`` (reports or ``(source, report)`` pairs), each once, and
    how many saved merges were among them (left out: their runs are counted, not them
    again)."""
    runs: list[Report] = []
    seen: set[str] = set()
    merged_inputs = 0
    for item in reports:
        report = item[1] if isinstance(item, tuple) else item
        if (report.job or {}).get("merged"):
            merged_inputs += 1  # a saved merge: its runs are counted, not it again
            continue
        if report.run_id not in seen:
            seen.add(report.run_id)
            runs.append(report)
    return runs, merged_inputs


def _select_job(runs: list[Report], job: str | None) -> list[Report]:
    """The runs of job ``job`` (or, without one, of the only job ``runs`` belong to).
    ReportError when there is none, or when the runs (or the job id) name several jobs."""
    jobs = split_jobs(runs)
    if job is not None:
        if job in jobs:
            return jobs[job]
        # A rendezvous address reused by torchrun jobs at different times.
        keys = [k for k in jobs if k.startswith(f"{job}@")]
        if len(keys) > 1:
            raise ReportError(f"job {job!r} names {len(keys)} jobs that reused its "
                              f"rendezvous address at different times: "
                              f"{', '.join(keys)}; give one of them")
        if not keys:
            raise ReportError(f"no run of job {job!r} was found; runs record their job id "
                              "when started under torchrun, SLURM or MPI (or "
                              "ENERGYMETER_JOB_ID)")
        return jobs[keys[0]]
    if not runs:
        raise ReportError("nothing to merge: give the runs of one job")
    no_job = [r for r in runs if job_id(r) is None]
    if no_job:
        raise ReportError(f"{len(no_job)} run(s) have no job id ({no_job[0].name}, "
                          f"{no_job[0].run_id[:8]}...): merging needs runs started under "
                          "torchrun, SLURM or MPI (or with ENERGYMETER_JOB_ID)")
    if len(jobs) > 1:
        raise ReportError(f"these runs belong to {len(jobs)} jobs "
                          f"({', '.join(list(jobs)[:10])}); merge one job at a time "
                          "(--job ID)")
    return next(iter(jobs.values()))


def _nested(runs: Sequence[Report], excluded: Mapping[str, str]) -> list[Report]:
    """The runs covered by another run of the job: nested in a run on their node that
    measured (``measure()`` inside ``energymeter run``) and was not excluded. One nested in a
    wrapper on another node (srun exports ENERGYMETER_RUN_ID to every node) is not."""
    by_id = {r.run_id: r for r in runs}
    return [r for r in runs if r.parent_run_id in by_id
            and r.parent_run_id not in excluded
            and _node(by_id[r.parent_run_id]) == _node(r)
            and by_id[r.parent_run_id].channels]


_T = TypeVar("_T")


def _overlapping(items: Sequence[_T], span: Callable[[_T], tuple[datetime, datetime]]
                 ) -> list[list[_T]]:
    """``items`` (in order of their start) in groups that overlap in time: an item starting
    at or after the end of every earlier item of the group starts a new group. Groups keep
    the items' order."""
    clusters: list[list[_T]] = []
    end: datetime | None = None
    for item in items:
        begin, finish = span(item)
        if end is None or begin >= end:
            clusters.append([])
            end = finish
        clusters[-1].append(item)
        end = max(end, finish)
    return clusters


def _each_device_once(top: Sequence[Report]
                      ) -> tuple[dict[str, list[tuple[Report, ChannelEnergy]]],
                                 list[dict[str, Any]]]:
    """Each device once at any time, by device key: among runs that measured it over
    overlapping times the one that covered it longest gives its energy (then the lowest
    rank, then run id); runs one after another (srun steps, repeats, train then test) add
    up. Also the ``job.deduplicated`` entries of the readings left out."""
    readings: dict[str, list[tuple[Report, ChannelEnergy]]] = {}
    for run in top:
        for ce in run.channels:
            readings.setdefault(_device_key(_node(run), ce.channel), []).append((run, ce))
    kept: dict[str, list[tuple[Report, ChannelEnergy]]] = {}
    deduplicated: list[dict[str, Any]] = []
    for key, items in readings.items():
        items.sort(key=lambda rc: (rc[0].started_at, rc[0].run_id))
        for cluster in _overlapping(items, lambda rc: (rc[0].started_at, rc[0].ended_at)):
            best = min(cluster, key=lambda rc: (-rc[0].duration_s, _rank(rc[0]) if _rank(
                rc[0]) is not None else 1 << 30, rc[0].run_id))
            kept.setdefault(key, []).append(best)
            if len(cluster) > 1:
                deduplicated.append({"device": key, "kept_run": best[0].run_id,
                                     "dropped_runs": [r.run_id for r, _ in cluster
                                                      if r is not best[0]]})
    return kept, deduplicated


def _merged_channels(kept: Mapping[str, Sequence[tuple[Report, ChannelEnergy]]]
                     ) -> tuple[list[ChannelEnergy], dict[str, set[str]],
                                dict[tuple[str, str], str]]:
    """The merged channels (``<node>:<channel>``, sorted by id), one per kept device, its
    readings summed; the channel ids each run gives, by run id; and each (run id, channel
    id)'s merged id."""
    from ..probes import Channel
    from ..report import ChannelEnergy

    kept_by_run: dict[str, set[str]] = {}
    merged_id: dict[tuple[str, str], str] = {}  # (run id, its channel id) -> merged id
    channels: list[ChannelEnergy] = []
    for chosen in kept.values():
        first_run, first = chosen[0]
        node = _node(first_run)
        c = first.channel
        cid = f"{node}:{c.id}"
        for run, ce in chosen:
            kept_by_run.setdefault(run.run_id, set()).add(ce.channel.id)
            merged_id[(run.run_id, ce.channel.id)] = cid
        energy = sum(ce.energy_j for _, ce in chosen)
        seconds = sum(run.duration_s for run, _ in chosen)
        peaks = [ce.peak_power_w for _, ce in chosen if ce.peak_power_w is not None]
        run_ids = [run.run_id for run, _ in chosen]
        channel = Channel(cid, c.kind, c.device, c.source, c.method,
                          f"{node}:{c.part_of}" if c.part_of else None, c.resolution_s,
                          {**c.meta, "node": node,
                           "run_id": run_ids[0] if len(run_ids) == 1 else run_ids})
        channels.append(ChannelEnergy(channel, energy, mean_power_w(energy, seconds),
                                      max(peaks) if peaks else None))
    channels.sort(key=lambda ce: ce.channel.id)
    return channels, kept_by_run, merged_id


def _merged_phases(top: Sequence[Report], kept_by_run: Mapping[str, set[str]],
                   merged_id: Mapping[tuple[str, str], str], started: datetime
                   ) -> tuple[Phase, ...]:
    """The phases summed over the runs that measured, matched by (parent, name,
    occurrence), times from the job's start, in order of start."""
    from ..report import Phase

    phases: dict[tuple[str | None, str, int], dict[str, Any]] = {}
    for run in top:
        kept_run = kept_by_run.get(run.run_id)
        if not kept_run:
            continue
        offset = (run.started_at - started).total_seconds()
        count: dict[tuple[str | None, str], int] = {}
        for p in run.phases:
            n = count[(p.parent, p.name)] = count.get((p.parent, p.name), -1) + 1
            slot = phases.setdefault((p.parent, p.name, n), {
                "start_s": offset + p.start_s, "end_s": offset + p.end_s, "energy": {},
                "below": False, "open": False})
            slot["start_s"] = min(slot["start_s"], offset + p.start_s)
            slot["end_s"] = max(slot["end_s"], offset + p.end_s)
            slot["below"] |= p.below_resolution
            slot["open"] |= p.open_at_end
            for cid, e in p.energy_by_channel.items():
                if cid in kept_run:
                    mid = merged_id[(run.run_id, cid)]
                    slot["energy"][mid] = slot["energy"].get(mid, 0.0) + e
    return tuple(sorted(
        (Phase(name, s["start_s"], s["end_s"], s["energy"], parent, s["below"], s["open"])
         for (parent, name, _), s in phases.items()), key=lambda p: p.start_s))


def _nodes(runs: Sequence[Report], kept: Mapping[str, Sequence[tuple[Report, ChannelEnergy]]]
           ) -> dict[str, dict[str, Any]]:
    """The job's nodes (in node rank order where the launcher gives one, else by name): who
    ran there, who measured, what it measured (kept readings, by kind) and over what time."""
    nodes: dict[str, dict[str, Any]] = {}
    for run in runs:
        info = nodes.setdefault(_node(run), {
            "node": _node(run), "node_rank": (run.job or {}).get("node_rank"), "runs": [],
            "ranks": [], "measured_by": [], "energy_j": {"total": 0.0, "by_kind": {}}})
        info["runs"].append(run.run_id)
        if _rank(run) is not None and _rank(run) not in info["ranks"]:
            info["ranks"].append(_rank(run))
    for run, ce in (rc for chosen in kept.values() for rc in chosen):
        info = nodes[_node(run)]
        if run.run_id not in info["measured_by"]:
            info["measured_by"].append(run.run_id)
        if ce.channel.in_total:
            info["energy_j"]["total"] += ce.energy_j
            by_kind = info["energy_j"]["by_kind"]
            by_kind[ce.channel.kind] = by_kind.get(ce.channel.kind, 0.0) + ce.energy_j
    nodes = dict(sorted(nodes.items(), key=lambda item: (
        item[1]["node_rank"] if isinstance(item[1]["node_rank"], int) else 1 << 30, item[0])))
    by_id = {r.run_id: r for r in runs}
    for info in nodes.values():
        info["ranks"].sort()
        measuring = [by_id[r] for r in info["measured_by"]]
        if measuring:
            first = min(r.started_at for r in measuring)
            last = max(r.ended_at for r in measuring)
            info.update(started_at=first.isoformat(), ended_at=last.isoformat(),
                        duration_s=(last - first).total_seconds())
    return nodes


def _job_warnings(runs: Sequence[Report], excluded: Mapping[str, str], merged_inputs: int,
                  nodes: Mapping[str, dict[str, Any]], expected: int | list[str] | None,
                  deduplicated: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The merged report's warnings, in order: runs excluded, saved merges left out, nodes
    measured for too short a time, nodes missing, devices de-duplicated, then the runs' own
    warnings; and the missing nodes (``job.missing_nodes``)."""
    warnings = [f"{_where(run)} left out of the job's totals: its figures fail the checks "
                f"({excluded[run.run_id]})" for run in runs if run.run_id in excluded]
    if merged_inputs:
        warnings.append(f"{merged_inputs} merged job report(s) among the inputs were left out "
                        "(their runs are merged, not them again)")
    warnings += _coverage_warnings(runs, nodes)
    missing, absent_warnings = _missing_nodes(nodes, expected)
    warnings += absent_warnings
    if deduplicated:
        warnings.append(f"{len(deduplicated)} device(s) were measured by more than one run of "
                        "the job; each is counted once (job.deduplicated)")
    return warnings + _rank_warnings(runs), missing


def _coverage_warnings(runs: Sequence[Report], nodes: Mapping[str, dict[str, Any]]
                       ) -> list[str]:
    """A warning for each node whose measuring run covers much less time than its ranks ran
    (below :data:`COVERAGE_WARN` of it): energy is missing."""
    by_id = {r.run_id: r for r in runs}
    warnings: list[str] = []
    for name, info in nodes.items():
        if not info["measured_by"]:
            continue
        on_node = [by_id[r] for r in info["runs"]]
        ranks_s = (max(r.ended_at for r in on_node)
                   - min(r.started_at for r in on_node)).total_seconds()
        if ranks_s > 0 and info["duration_s"] < COVERAGE_WARN * ranks_s:
            warnings.append(f"node {name}: its energy was measured for "
                            f"{info['duration_s']:.1f} s of the {ranks_s:.1f} s its ranks ran "
                            "(the measuring run started late or ended early): energy outside "
                            "that time is missing")
    return warnings


def _missing_nodes(nodes: Mapping[str, dict[str, Any]], expected: int | list[str] | None
                   ) -> tuple[list[str], list[str]]:
    """The nodes whose energy the job lacks (nodes with runs that did not measure, then
    expected nodes that left no run) and a warning for each kind."""
    missing: list[str] = []
    warnings: list[str] = []
    for name in [n for n, info in nodes.items() if not info["measured_by"]]:
        missing.append(name)
        warnings.append(f"node {name}: runs of ranks {nodes[name]['ranks'] or '?'} are here but "
                        "none measured its energy (its measuring run, local rank 0, is missing "
                        "or failed to start): the job's energy lacks this node")
    measured_nodes = [n for n, info in nodes.items() if info["measured_by"]]
    if isinstance(expected, list):
        absent = [n for n in expected if n not in nodes]
        missing += absent
        if absent:
            warnings.append(f"{len(absent)} of the job's {len(expected)} nodes left no run: "
                            f"{', '.join(absent)}; the job's energy lacks them")
    elif isinstance(expected, int) and expected > len(measured_nodes):
        ranks = {info.get("node_rank") for info in nodes.values() if info["measured_by"]}
        absent = [f"node rank {i}" for i in range(expected) if i not in ranks] \
            if all(isinstance(r, int) for r in ranks) else []
        missing += [a for a in absent if a not in missing]
        warnings.append(f"the job ran on {expected} nodes but only {len(measured_nodes)} "
                        "measured their energy" + (f" (missing: {', '.join(absent)})"
                                                   if absent else "")
                        + ": the job's energy lacks the others")
    return missing, warnings


def _rank_warnings(runs: Sequence[Report]) -> list[str]:
    """The runs' own warnings, each once, naming where it came from (``[node rank 1, ...]``);
    a rank's "this run measured no energy" (expected of every rank but one per node) is left
    out."""
    origin: dict[str, list[str]] = {}
    for run in runs:
        for w in run.warnings:
            if w.startswith("this run measured no energy"):
                continue  # expected of every rank but one per node
            origin.setdefault(w, []).append(f"{_node(run)} rank {_rank(run)}"
                                            if _rank(run) is not None else _node(run))
    return [f"[{', '.join(dict.fromkeys(where))}] {w}" for w, where in origin.items()]


def _first_rank(runs: Sequence[Report]) -> Report:
    """The run of the lowest rank (the earliest among equals; runs with no rank last)."""
    return min(runs, key=lambda r: (_rank(r) if _rank(r) is not None else 1 << 30,
                                    r.started_at))


def _job_block(jid: str, runs: Sequence[Report], started: datetime, nested_runs: int,
               nodes: Mapping[str, dict[str, Any]], expected: int | list[str] | None,
               missing: list[str], deduplicated: list[dict[str, Any]],
               excluded: Mapping[str, str]) -> dict[str, Any]:
    """The merged report's ``job`` block: the job's id, launcher and span, its nodes and
    runs, and what was left out (missing nodes, de-duplicated devices, excluded runs)."""
    first = _first_rank(runs)
    job_info = {
        "id": jid, "merged": True, "launcher": (first.job or {}).get("launcher"),
        "span_s": (max(r.ended_at for r in runs) - started).total_seconds(),
        "runs": len(runs), "nested_runs_excluded": nested_runs,
        "nodes": list(nodes.values()),
        "expected_nodes": expected if expected is not None else None,
        "missing_nodes": missing, "deduplicated": deduplicated,
        "excluded_runs": [{"run_id": r.run_id, "path": str(r.path) if r.path else None,
                           "node": _node(r), "rank": _rank(r), "reason": excluded[r.run_id]}
                          for r in runs if r.run_id in excluded],
        "rank_runs": [{"run_id": r.run_id, "node": _node(r), "rank": _rank(r),
                       "local_rank": (r.job or {}).get("local_rank"),
                       "measures": (r.job or {}).get("measures"), "status": r.status}
                      for r in sorted(runs, key=lambda r: (_node(r), _rank(r) or 0))],
    }
    if (first.job or {}).get("slurm"):
        job_info["slurm"] = dict(first.job["slurm"])  # type: ignore[index]
    return job_info


def _merged_report(runs: Sequence[Report], top: Sequence[Report], job_info: dict[str, Any],
                   channels: Sequence[ChannelEnergy], phases: tuple[Phase, ...],
                   kept_by_run: Mapping[str, set[str]], warnings: Sequence[str]) -> Report:
    """The :class:`~energymeter.report.Report` of the job: its identity (``job-<id>``, the
    runs' name, the worst status of the runs that count), time span, the merged figures, and
    what the runs have in common (software, command and tags of the first rank)."""
    from ..report import Report

    jid = job_info["id"]
    first = _first_rank(runs)
    names = {r.name for r in runs}
    started = min(r.started_at for r in runs)
    ended = max(r.ended_at for r in runs)
    total_j = sum(ce.energy_j for ce in channels if ce.channel.in_total)
    nodes = [info["node"] for info in job_info["nodes"]]
    derived = any((r.job or {}).get("id_source") == DERIVED_ID_SOURCE for r in runs)
    return Report(
        # A rendezvous address is reused by later jobs: its start tells them apart.
        run_id=f"job-{jid}@{started.isoformat()}" if derived else f"job-{jid}",
        name=names.pop() if len(names) == 1 else f"job {jid}",
        status=_worst(r.status for r in top), started_at=started, ended_at=ended,
        duration_s=job_info["span_s"], channels=tuple(channels), phases=phases,
        carbon=_carbon(top, kept_by_run, total_j), resources=_resources(top),
        host={"hostname": ", ".join(nodes), "nodes": nodes},
        software=dict(first.software), warnings=tuple(warnings),
        command=first.command, exit_code=_exit_code(top),
        tags={k: v for k, v in first.tags.items() if all(r.tags.get(k) == v for r in runs)},
        job=job_info)


def _excluded(runs: Sequence[Report], jid: str) -> dict[str, str]:
    """The runs of job ``jid`` whose figures fail the checks (:func:`rank_problem`), by run
    id, with why: they add nothing (they still show where they ran). ReportError when that is
    every run."""
    excluded = {r.run_id: problem for r in runs if (problem := rank_problem(r)) is not None}
    if len(excluded) == len(runs):
        bad = runs[0]
        raise ReportError(f"no run of job {jid} can be merged: every one fails the checks "
                          f"of its figures (e.g. {_where(bad)}: {excluded[bad.run_id]})")
    return excluded


def _where(run: Report) -> str:
    """A run of a job as messages name it: node, rank and run directory (or run id)."""
    rank = _rank(run)
    return (f"node {_node(run)}" + (f" rank {rank}" if rank is not None else "")
            + f" ({run.path if run.path is not None else 'run ' + run.run_id})")


def _expected_nodes(runs: Sequence[Report], given: int | Sequence[str] | None
                    ) -> int | list[str] | None:
    if given is not None:
        return given if isinstance(given, int) else list(given)
    for run in runs:
        nodelist = ((run.job or {}).get("slurm") or {}).get("nodelist")
        if isinstance(nodelist, str):
            names = expand_nodelist(nodelist)
            if names:
                return names
    counts = [(r.job or {}).get("nodes") for r in runs]
    counts = [c for c in counts if isinstance(c, int) and c > 0]
    return max(counts) if counts else None


def _exit_code(runs: Sequence[Report]) -> int | None:
    codes = [r.exit_code for r in runs if r.exit_code is not None]
    return next((c for c in codes if c != 0), codes[0] if codes else None)


def _resources(runs: Sequence[Report]) -> dict[str, Any]:
    """Summed CPU time and I/O over every rank's process tree; the largest peak memory."""
    out: dict[str, Any] = {}
    for key in ("cpu_time_s", "read_bytes", "write_bytes"):
        values = [r.resources.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, (int, float))]
        out[key] = sum(numbers) if numbers else None
    for key in ("peak_rss_bytes", "peak_gpu_memory_bytes"):
        numbers = [v for r in runs if isinstance(v := r.resources.get(key), (int, float))]
        out[key] = max(numbers) if numbers else None
    return out


def _carbon(runs: Sequence[Report], kept: Mapping[str, set[str]], total_j: float
            ) -> dict[str, Any] | None:
    """Emissions summed over the measuring runs, each run's scaled to the share of its energy
    that the merge kept (a de-duplicated device is not counted twice in carbon either)."""
    blocks = []
    for run in runs:
        ids = kept.get(run.run_id)
        if not ids or not run.carbon or run.carbon.get("emissions_g") is None:
            continue
        run_total = run.total_energy_j
        kept_j = sum(ce.energy_j for ce in run.channels
                     if ce.channel.id in ids and ce.channel.in_total)
        share = kept_j / run_total if run_total > 0 else 0.0
        blocks.append((run.carbon, share, kept_j))
    if not blocks:
        return None
    emissions = sum(float(b["emissions_g"]) * share for b, share, _ in blocks)
    first = dict(blocks[0][0])
    same = all((b.get("region"), b.get("g_per_kwh"), b.get("pue"))
               == (first.get("region"), first.get("g_per_kwh"), first.get("pue"))
               for b, _, _ in blocks)
    pues = {b.get("pue") for b, _, _ in blocks}
    pue = pues.pop() if len(pues) == 1 else None
    facility_j = sum(kept_j * float(b.get("pue") or 1.0) for b, _, kept_j in blocks)
    keep = ("region", "region_source", "name", "g_per_kwh", "basis", "source", "year",
            "table", "provider")  # per-run figures (cost, live shares, timelines) are not
    out = {k: first[k] for k in keep if k in first} if same else {
        "region": "mixed", "region_source": "merged", "name": "several regions",
        "basis": first.get("basis"), "source": "per-node intensities of the merged runs",
        "provider": "table"}
    out.update(pue=pue, it_energy_j=total_j, facility_energy_j=facility_j,
               it_energy_kwh=total_j / 3.6e6, facility_energy_kwh=facility_j / 3.6e6,
               emissions_g=emissions)
    if not same:
        out["g_per_kwh"] = emissions / (facility_j / 3.6e6) if facility_j > 0 else None
    prices = {(b.get("price_per_kwh"), b.get("currency")) for b, _, _ in blocks}
    if len(prices) == 1:
        price, currency = prices.pop()
        if isinstance(price, (int, float)):
            out.update(price_per_kwh=price, currency=currency,
                       cost=price * facility_j / 3.6e6)
    return out
