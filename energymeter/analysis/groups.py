"""Which runs are compared, and in which groups: duplicates dropped (a run reached twice
counts once), nested runs left out (or compared instead of their parents), warm-up runs
counted apart, and the runs grouped ``by`` name, argument, command, repeat group or tag.

:func:`group_runs` returns a :class:`Grouping`; nothing here computes a statistic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from ..report.render import run_labels
from ..store import REPORT_NAME

if TYPE_CHECKING:
    from ..report import Report

#: The accepted values of ``by`` (``tag:KEY`` with a tag name for KEY).
BY_CHOICES = ("auto", "name", "dir", "command", "group", "job", "tag:KEY")
BY_HELP = ("auto (by the sweep's axes when every run is of one `energymeter sweep` study, "
           "else by argument when several RUN arguments are given, else by name), name, dir "
           "(the RUN argument each run came from), command, group (the repeat group), job "
           "(each distributed job's runs merged into one: energymeter.merge), "
           "tag:KEY (the value of tag KEY)")

#: The longest group label shown; longer ones keep their end, after an ellipsis.
MAX_LABEL = 40


def check_by(by: str) -> str:
    """``by`` if it is one of :data:`BY_CHOICES` (``tag:KEY`` with a non-empty KEY), else a
    :class:`ReportError` saying what is accepted."""
    key = by[len("tag:"):].strip() if by.startswith("tag:") else None
    if by in BY_CHOICES[:-1] or key:
        return by if key is None else f"tag:{key}"
    raise ReportError(f"--by {by!r} is not understood; accepted: {BY_HELP}, e.g. "
                      "--by tag:method")


@dataclass(frozen=True)
class Group:
    """Runs compared together. ``runs`` enter the statistics; ``warmup_runs`` are counted but
    not compared. ``duplicates``: copies of these runs reached again and dropped;
    ``nested_excluded``: runs nested in these runs and left out; ``parents_replaced``: with
    ``nested``, the parents left out because their nested runs are compared instead."""

    key: str
    label: str
    runs: tuple[Report, ...]
    warmup_runs: tuple[Report, ...] = ()
    sources: tuple[str, ...] = ()
    duplicates: int = 0
    nested_excluded: int = 0
    parents_replaced: int = 0
    #: Attempts of a sweep's slot that did not complete, left out because a later attempt of
    #: the same slot (study, variant, repeat) completed (the sweep was resumed).
    retried: int = 0


@dataclass(frozen=True)
class Grouping:
    """The groups of a comparison, in order of first appearance. ``by`` is what they were
    grouped by (``auto`` resolved; ``run`` for one group per run). ``nested`` maps a run id to
    the loaded runs nested in it (used for energy-to-target, whatever is compared)."""

    by: str
    groups: tuple[Group, ...]
    nested: Mapping[str, tuple[Report, ...]] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return sum(g.duplicates for g in self.groups)

    @property
    def nested_excluded(self) -> int:
        return sum(g.nested_excluded for g in self.groups)


def _pairs(runs: Iterable[Report | tuple[str | None, Report]]
           ) -> list[tuple[str | None, Report]]:
    out: list[tuple[str | None, Report]] = []
    for item in runs:
        if isinstance(item, tuple):
            source, report = item
            out.append((None if source is None else str(source), report))
        else:
            out.append((None, item))
    return out


def _normal_source(source: str) -> PurePath:
    path = PurePath(source)
    return path.parent if path.name == REPORT_NAME else path


def short_sources(sources: Sequence[str]) -> dict[str, str]:
    """A label for each argument: its path without the leading folders all of them share (so
    ``runs/dense`` and ``runs/sparse`` read ``dense`` and ``sparse``), a trailing
    ``report.json`` dropped, at most :data:`MAX_LABEL` characters (the end kept)."""
    normal = {s: _normal_source(s) for s in sources}
    distinct = list(dict.fromkeys(normal.values()))
    common = 0
    if len(distinct) > 1:
        parts = [p.parts for p in distinct]
        shortest = min(len(p) for p in parts)
        while common < shortest - 1 and len({p[common] for p in parts}) == 1:
            common += 1
    labels = {}
    for source, path in normal.items():
        text = "/".join(path.parts[common:]).replace("//", "/") or str(path)
        labels[source] = _shorten(text)
    return labels


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_LABEL else "…" + text[-(MAX_LABEL - 1):]


def _tag_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _key(by: str, source: str | None, report: Report) -> str:
    if by == "name":
        return report.name
    if by == "dir":
        if source is not None:
            return str(_normal_source(source))
        return str(report.path.parent) if report.path is not None else "(no folder)"
    if by == "command":
        return " ".join(report.command) if report.command else "(no command)"
    if by == "group":
        return report.group_id or "(no group)"
    if by == "job":
        job = report.job or {}
        return (f"job {report.run_id.removeprefix('job-')}" if job.get("merged")
                else f"(no job) {report.name}")
    if by.startswith("tag:"):
        tag = by[len("tag:"):]
        value = report.tags.get(tag)
        return f"{tag}=(none)" if value is None else f"{tag}={_tag_text(value)}"
    if by.startswith("tags:"):  # a sweep's axes (auto)
        return " ".join(f"{t}={_tag_text(report.tags.get(t))}" for t in by[5:].split(","))
    return report.run_id  # "run": one group per run


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _slot(report: Report) -> tuple[Any, Any, Any] | None:
    """The sweep slot a run filled (study, variant, repeat), or None outside a sweep."""
    tags = report.tags
    if all(k in tags for k in ("study", "variant", "repeat")):
        return tags["study"], tags["variant"], tags["repeat"]
    return None


def _retried(reports: Sequence[Report]) -> set[str]:
    """Run ids of a sweep's attempts that did not complete where a later attempt of the same
    slot did (a resumed sweep runs a failed or killed slot again)."""
    done = {_slot(r) for r in reports if r.status == "completed" and _slot(r) is not None}
    return {r.run_id for r in reports
            if r.status != "completed" and _slot(r) is not None and _slot(r) in done}


def _sweep_axes(reports: Sequence[Report]) -> str | None:
    """``a,b`` when every run is of one study of ``energymeter sweep`` (the same ``study``
    and ``sweep_axes`` tags), whose axes are ``a`` and ``b``; else None."""
    marks = {(r.tags.get("study"), r.tags.get("sweep_axes")) for r in reports}
    if len(marks) != 1:
        return None
    study, axes = marks.pop()
    return axes if isinstance(study, str) and isinstance(axes, str) and axes else None


def _merged_jobs(pairs: list[tuple[str | None, Report]]) -> list[tuple[str | None, Report]]:
    """Each job's runs replaced by their merged report (:func:`~.merge.merge`), placed where
    its first run was; runs under no launcher stay as they are."""
    from .merge import merge, split_jobs

    jobs = split_jobs(r for _, r in pairs)
    member = {r.run_id: key for key, runs in jobs.items() for r in runs}
    out: list[tuple[str | None, Report]] = []
    done: set[str] = set()
    for source, report in pairs:
        key = member.get(report.run_id)
        if key is None:
            out.append((source, report))
        elif key not in done:
            done.add(key)
            out.append((source, merge(jobs[key])))
    return out


def _top(report: Report, parents: Mapping[str, Report]) -> Report:
    """The outermost loaded run ``report`` is nested in (itself if none)."""
    while report.run_id in parents:
        report = parents[report.run_id]
    return report


def group_runs(runs: Iterable[Report | tuple[str | None, Report]], *, by: str = "auto",
               group: bool = True, nested: bool = False) -> Grouping:
    """Group ``runs`` (reports, or ``(source, report)`` pairs from
    :func:`~energymeter.analysis.find_runs`) for a comparison.

    * A run reached twice (same ``run_id``) counts once, where it was first reached.
    * A run whose ``parent_run_id`` is another loaded run (a ``measure()`` inside ``energymeter
      run``) is part of that run and left out; with ``nested`` the nested runs are compared
      and their parents left out instead.
    * ``by``: ``name``; ``dir`` (the source each run came from; a folder stands for its runs,
      labelled by :func:`short_sources`); ``command``; ``group`` (``group_id``); ``tag:KEY``
      (``KEY=value``, ``KEY=(none)`` without the tag); ``auto``: the axes of the sweep when
      every run has the same ``study`` and ``sweep_axes`` tags (``energymeter sweep``; ``by``
      is then ``tags:AXIS,AXIS`` and the groups come in the order of the sweep's ``variant``
      tags), else ``dir`` when the runs come from several sources, else ``name``.
      ``group=False``: one group per run.
    * Warm-up runs (``warmup``) go to :attr:`Group.warmup_runs`.
    * A sweep's attempt that did not complete is left out when a later attempt of the same
      slot (``study``, ``variant``, ``repeat`` tags) completed (:attr:`Group.retried`).

    Raises :class:`ReportError` for no run or an unknown ``by``."""
    pairs = _pairs(runs)
    if not pairs:
        raise ReportError("nothing to compare: give at least one run")
    by = check_by(by)
    if by == "job" and group:
        pairs = _merged_jobs(pairs)
    kept: list[tuple[str | None, Report]] = []
    copies: dict[str, int] = {}
    for source, report in pairs:
        if report.run_id in copies:
            copies[report.run_id] += 1
        else:
            copies[report.run_id] = 0
            kept.append((source, report))
    by_id = {r.run_id: r for _, r in kept}
    children: dict[str, list[Report]] = {}
    for _, report in kept:
        parent = by_id.get(report.parent_run_id or "")
        # A nested run starts after its parent: the order also breaks cycles of bad files.
        if parent is not None and ((parent.started_at, parent.run_id)
                                   < (report.started_at, report.run_id)):
            children.setdefault(parent.run_id, []).append(report)
    parents = {r.run_id: by_id[p] for p, rs in children.items() for r in rs}
    excluded: dict[str, int] = {}   # run id of the group's run -> nested runs left out
    replaced: dict[str, int] = {}
    chosen: list[tuple[str | None, Report]] = []
    for source, report in kept:
        if not nested and report.run_id in parents:
            top = _top(report, parents).run_id
            excluded[top] = excluded.get(top, 0) + 1
            copies[top] = copies.get(top, 0) + copies[report.run_id]
        elif nested and report.run_id in children:
            first = children[report.run_id][0].run_id  # counted with its first nested run
            while first in children:  # that is compared (nested runs nested again)
                first = children[first][0].run_id
            replaced[first] = replaced.get(first, 0) + 1
        else:
            chosen.append((source, report))
    retried_ids = _retried([r for _, r in chosen])
    retried_slots: dict[Any, int] = {}
    for _, report in chosen:
        if report.run_id in retried_ids:
            retried_slots[_slot(report)] = retried_slots.get(_slot(report), 0) + 1
    chosen = [(s, r) for s, r in chosen if r.run_id not in retried_ids]

    sources = [s for s, _ in pairs if s is not None]
    if not group:
        by = "run"
    elif by == "auto":
        axes = _sweep_axes([r for _, r in chosen])
        by = (f"tags:{axes}" if axes else
              "dir" if len({_normal_source(s) for s in sources}) > 1 else "name")
    short = short_sources(sources) if by == "dir" else {}
    members: dict[str, list[tuple[str | None, Report]]] = {}
    for source, report in chosen:
        members.setdefault(_key(by, source, report), []).append((source, report))
    if by.startswith("tags:"):  # a sweep's variants in grid order (its runs' is random)
        members = dict(sorted(members.items(), key=lambda kv: min(
            r.tags["variant"] if _is_int(r.tags.get("variant")) else 1 << 62 for _, r in kv[1])))
    groups: list[Group] = []
    labels: set[str] = set()
    per_run = (dict(zip([r.run_id for _, r in chosen], run_labels([r for _, r in chosen]),
                        strict=True)) if by == "run" else {})
    for key, items in members.items():
        first_source, first = items[0]
        if by == "run":
            label = per_run[first.run_id]
        elif by == "dir" and first_source is not None:
            label = short[first_source]
        else:
            label = _shorten(key)
        base, number = label, 2
        while label in labels:
            label, number = f"{base} #{number}", number + 1
        labels.add(label)
        reports = [r for _, r in items]
        ids = [r.run_id for r in reports]
        groups.append(Group(
            key=key, label=label,
            runs=tuple(r for r in reports if not r.warmup),
            warmup_runs=tuple(r for r in reports if r.warmup),
            sources=tuple(dict.fromkeys(s for s, _ in items if s is not None)),
            duplicates=sum(copies.get(i, 0) for i in ids),
            nested_excluded=sum(excluded.get(i, 0) for i in ids),
            parents_replaced=sum(replaced.get(i, 0) for i in ids),
            retried=sum(retried_slots.get(_slot(r), 0) for r in reports)))
    return Grouping(by=by, groups=tuple(groups),
                    nested={k: tuple(v) for k, v in children.items()})
