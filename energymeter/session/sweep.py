"""Studies: variants × repeats, interleaved (:func:`sweep`; ``energymeter sweep`` on the
command line).

A sweep runs every variant of a small grid (the cartesian product of tag axes, e.g.
``method=dense,sparse`` × ``lr=1e-3,3e-4``) ``warmup + repeat`` times, each run measured as
``energymeter run`` measures a command (:func:`~.command.run_command`) or as :func:`repeat`
measures a function (a :class:`~.meter.Meter` around each call).

**Order.** The whole schedule is fixed before the first run (:func:`make_schedule`): round
``k`` holds the ``k``-th run of every variant (the first ``warmup`` rounds are the warm-up
runs), so at any moment every variant has had the same number of runs, give or take one.
``round-robin`` takes the variants in grid order in every round; ``random`` (default) shuffles
each round with a seeded generator (``seed``, default 0, recorded). This is a randomised
complete block design: the rounds spread slow drift (thermal state, other tenants, a clock
that throttles) over all variants alike, and the shuffle within a round keeps a variant from
always following the same neighbour (whose heat or caches it would inherit), which a fixed
round-robin cannot.

**Records.** Every run is tagged ``study=<id>``, its variant's axis values, ``variant=<i>``
(1-based, grid order), ``repeat=<j>`` (1-based among the variant's runs, warm-ups first) and
``sweep_axes=<axis,axis>``; each variant is one repeat group (``group_id``), and its first
``warmup`` runs are warm-up runs (left out of comparisons). ``compare --by auto`` groups a
study's runs by its axes.

**Resuming.** The plan and schedule are written to ``<out>/sweeps/<study>.json`` before the
first run. Run again with the same study, the sweep skips the slots that have a ``completed``
run in ``<out>`` (found by the ``study``, ``variant`` and ``repeat`` tags of the run
directories' ``report.json``; runs nested in another are not counted) and runs the rest in
schedule order: a run that failed, was interrupted or was killed is run again. A study's plan
(grid, order, seed, repeats, warm-ups, command or function) cannot change: that is refused
with a :class:`~energymeter.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import _ids
from .._lazy import LazyLogger
from ..errors import ConfigError, ReportError
from ..report import Report
from ..settings import resolve_settings
from ..store import EVENTS_NAME, REPORT_NAME, write_json_atomic
from ..store.readers import parse_json
from ..store.rundir import output_error
from . import experiment
from .command import (
    INTERRUPTING,
    MAX_COOLDOWN_S,
    RunError,
    _cool_down,
    build_argv,
    resolve_program,
    run_command,
)

log = LazyLogger("energymeter")

#: The schema of a study's schedule file.
SCHEMA = "energymeter.sweep/1"
#: The accepted run orders.
ORDERS = ("random", "round-robin")
#: The default seed of the random order.
DEFAULT_SEED = 0
#: The folder of ``out`` that holds the studies' schedule files.
SWEEPS_DIR = "sweeps"
#: Tags a sweep sets on every run: no axis or extra tag may have these names.
RESERVED_TAGS = ("study", "variant", "repeat", "sweep_axes")
#: The largest schedule accepted (variants × runs per variant).
MAX_RUNS = 100_000
#: The longest study name (it names a file).
MAX_STUDY_CHARS = 100

_AXIS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STUDY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
#: A run that died of one of these itself (crash, OOM killer) failed; a run ended by an
#: interrupting signal (Ctrl-C, SIGTERM from a scheduler) ends the sweep.
_STOPPING_CODES = frozenset(128 + int(s) for s in INTERRUPTING)


# -- the grid and the schedule (pure) ----------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One point of the grid. ``index``: 1-based, in grid order (the last axis varies
    fastest); ``tags``: each axis's value as a tag (``lr=1e-3`` is the number 0.001, as
    ``--tag`` reads it); ``texts``: each value as written (what fills ``{axis}`` in a command);
    ``group_id``: the variant's repeat group (set when a study is planned)."""

    index: int
    tags: Mapping[str, Any]
    texts: Mapping[str, str]
    group_id: str = ""

    @property
    def label(self) -> str:
        """``method=dense lr=1e-3``: the variant's values as written."""
        return " ".join(f"{axis}={text}" for axis, text in self.texts.items())


@dataclass(frozen=True)
class Slot:
    """One scheduled run: which variant, its 1-based ``repeat`` among the variant's runs
    (warm-ups first) and whether it is a warm-up run."""

    variant: int
    repeat: int
    warmup: bool


def _check_count(what: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"sweep {what}={value!r}; accepted: a whole number >= {minimum}")
    return value


def _check_axis(axis: Any) -> str:
    if not isinstance(axis, str) or not _AXIS.match(axis):
        raise ConfigError(f"grid axis {axis!r}; accepted: a name of letters, digits and _ "
                          "not starting with a digit (it fills {name} in the command and "
                          "is a keyword argument of the function), e.g. method or lr")
    if axis in RESERVED_TAGS:
        raise ConfigError(f"grid axis {axis!r} is a tag the sweep sets itself; accepted: any "
                          f"other name (not {', '.join(RESERVED_TAGS)})")
    return axis


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``AXIS=V1,V2`` (``--grid``, repeatable) as ``{axis: [values as written]}``. Raises
    :class:`ConfigError` for a spec without ``=``, an empty value, an axis given twice or a
    value given twice."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        axis, sep, values = spec.partition("=")
        axis = axis.strip()
        if not sep or not axis:
            raise ConfigError(f"--grid {spec!r} is not understood; accepted: AXIS=V1,V2,..., "
                              "e.g. --grid method=dense,sparse --grid lr=1e-3,3e-4")
        _check_axis(axis)
        if axis in grid:
            raise ConfigError(f"--grid {axis} is given twice; accepted: each axis once, its "
                              f"values separated by commas, e.g. --grid {axis}=a,b")
        texts = [v.strip() for v in values.split(",")]
        if any(not t for t in texts):
            raise ConfigError(f"--grid {spec!r} has an empty value; accepted: values "
                              f"separated by commas, e.g. --grid {axis}=a,b")
        grid[axis] = texts
    return grid


def grid_variants(grid: Mapping[str, Sequence[Any]]) -> tuple[Variant, ...]:
    """The variants of ``grid`` (``{axis: values}``), the cartesian product in grid order.

    Values that are strings (from the command line) become tags as ``--tag`` reads them
    (``1e-3`` is the number 0.001; the command gets the text as written); other values
    (from Python: strings, numbers, true/false) are the tags, and ``str(value)`` their text.
    Raises :class:`ConfigError` for no axis, an axis without values, a value given twice or
    a value that cannot be a tag."""
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"sweep grid={grid!r}; accepted: a mapping of at least one axis to "
                          "its values, e.g. {'method': ['dense', 'sparse']} or --grid "
                          "method=dense,sparse")
    axes: list[tuple[str, list[tuple[Any, str]]]] = []
    for axis, values in grid.items():
        _check_axis(axis)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"grid axis {axis}={values!r}; accepted: a non-empty list of "
                              f"values, e.g. {{'{axis}': ['a', 'b']}}")
        points: list[tuple[Any, str]] = []
        for value in values:
            if isinstance(value, str):
                tag = experiment.parse_tag(f"{axis}={value}")[1]
                text = value
            else:
                tag, text = value, str(value)
            experiment.check_tags({axis: tag})
            if any(text == t for _, t in points) or any(_same(tag, g) for g, _ in points):
                raise ConfigError(f"grid axis {axis} has the value {text!r} twice; accepted: "
                                  "distinct values")
            points.append((tag, text))
        axes.append((axis, points))
    names = [a for a, _ in axes]
    variants = []
    for index, combo in enumerate(itertools.product(*(p for _, p in axes)), start=1):
        variants.append(Variant(index=index,
                                tags={a: tag for a, (tag, _) in zip(names, combo, strict=True)},
                                texts={a: t for a, (_, t) in zip(names, combo, strict=True)}))
    return tuple(variants)


def _same(a: Any, b: Any) -> bool:
    """Equal as tags (``1`` and ``True`` are not)."""
    return type(a) is type(b) and a == b


def make_schedule(n_variants: int, repeat: int, *, warmup: int = 0, order: str = "random",
                  seed: int = DEFAULT_SEED) -> tuple[Slot, ...]:
    """The schedule of ``n_variants`` variants run ``warmup + repeat`` times each: round ``k``
    (``k`` = 1 … ``warmup + repeat``) holds the ``k``-th run of every variant, a warm-up run
    for ``k <= warmup``. ``round-robin``: each round in grid order; ``random``: each round
    shuffled by ``random.Random(seed)``. The same arguments give the same schedule."""
    _check_count("variants", n_variants, 1)
    _check_count("repeat", repeat, 1)
    _check_count("warmup", warmup, 0)
    if order not in ORDERS:
        raise ConfigError(f"sweep order={order!r}; accepted: {', '.join(ORDERS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"sweep seed={seed!r}; accepted: a whole number, e.g. 0")
    if n_variants * (warmup + repeat) > MAX_RUNS:
        raise ConfigError(f"the sweep would run {n_variants} variants × {warmup + repeat} "
                          f"= {n_variants * (warmup + repeat)} runs; accepted: at most "
                          f"{MAX_RUNS} (fewer values or repeats)")
    rng = random.Random(seed)
    slots: list[Slot] = []
    for k in range(1, warmup + repeat + 1):
        variants = list(range(1, n_variants + 1))
        if order == "random":
            rng.shuffle(variants)
        slots += [Slot(v, k, k <= warmup) for v in variants]
    return tuple(slots)


def fill_command(template: Sequence[str], variant: Variant) -> list[str]:
    """``template`` with ``{axis}`` replaced by the variant's value (as written) in every
    word; other braces are left as they are."""
    words = []
    for word in template:
        word = str(word)
        for axis, text in variant.texts.items():
            word = word.replace("{" + axis + "}", text)
        words.append(word)
    return words


def new_study_id(now: datetime | None = None) -> str:
    """A new study id: ``sweep-<UTC time>-<4 hex digits>``."""
    now = now or datetime.now(timezone.utc)
    return f"sweep-{now.strftime('%Y%m%dT%H%M%SZ')}-{_ids.random_id()[:4]}"


def check_study(study: Any) -> str:
    """``study`` if it can name a study (it names a file), else :class:`ConfigError`."""
    if not isinstance(study, str) or not _STUDY.match(study) or len(study) > MAX_STUDY_CHARS:
        raise ConfigError(f"study {study!r}; accepted: letters, digits, '.', '_' and '-', "
                          f"starting with a letter or digit, at most {MAX_STUDY_CHARS} "
                          "characters, e.g. --study dense-vs-sparse")
    return study


# -- a planned study ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPlan:
    """A study ready to run: its variants (with their group ids), its schedule, the slots
    already completed by earlier sweeps of it (``done``: ``(variant, repeat)`` pairs), the
    run directories of its earlier runs that did not complete (``unfinished``: ``compare``
    counts them, with their status, unless they are removed), and where its schedule file
    is (``path``; written unless planned with ``write=False``)."""

    study: str
    out: Path
    path: Path
    axes: tuple[str, ...]
    variants: tuple[Variant, ...]
    schedule: tuple[Slot, ...]
    done: frozenset[tuple[int, int]]
    unfinished: tuple[Path, ...]
    order: str
    seed: int
    repeat: int
    warmup: int
    resumed: bool

    def variant(self, index: int) -> Variant:
        return self.variants[index - 1]

    @property
    def remaining(self) -> tuple[Slot, ...]:
        """The slots still to run, in schedule order."""
        return tuple(s for s in self.schedule if (s.variant, s.repeat) not in self.done)


@dataclass(frozen=True)
class SweepRun:
    """One slot of a sweep: ``position`` (1-based, in the schedule), its variant, repeat and
    warm-up flag; ``skipped`` when an earlier sweep of the study completed it. After it ran:
    its ``report`` (None if none could be made), ``exit_code`` (the command's; for a function
    0, or 1 when it raised), the function's ``result`` and the ``error`` it raised (or the
    :class:`~.command.RunError` of a command that could not run)."""

    position: int
    variant: Variant
    repeat: int
    warmup: bool
    skipped: bool = False
    report: Report | None = None
    exit_code: int | None = None
    result: Any = None
    error: BaseException | None = None

    @property
    def status(self) -> str:
        """``skipped``, ``pending`` (not run yet), else the run's status (``completed``,
        ``failed``, ``interrupted``)."""
        if self.skipped:
            return "skipped"
        if self.report is not None:
            return self.report.status
        return "pending" if self.exit_code is None else "failed"

    @property
    def ok(self) -> bool:
        return self.skipped or (self.status == "completed" and self.exit_code == 0)


@dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` returns. ``runs``: the skipped slots and those run now, in schedule
    order (slots not reached after a stop are absent); ``stopped``: the sweep ended before its
    schedule did (``stop_on_failure``, or an interrupting signal), with ``stop_code`` then the
    code it ended with."""

    plan: SweepPlan
    runs: tuple[SweepRun, ...]
    stopped: bool = False
    stop_code: int | None = None

    @property
    def study(self) -> str:
        return self.plan.study

    @property
    def completed(self) -> bool:
        """Whether every slot of the schedule has a completed run."""
        return (len(self.runs) == len(self.plan.schedule) and not self.stopped
                and all(r.ok for r in self.runs))

    @property
    def failures(self) -> tuple[SweepRun, ...]:
        return tuple(r for r in self.runs if not r.ok)

    @property
    def exit_code(self) -> int:
        """0 when every slot completed, else the first failed run's exit code (1 if it had
        none), or the code of a signal that stopped the sweep during a cool-down."""
        if self.completed:
            return 0
        for run in self.runs:
            if not run.ok:
                return run.exit_code or 1
        return self.stop_code or 1

    @property
    def reports(self) -> tuple[Report, ...]:
        """The reports of the runs made now, in the order they ran."""
        return tuple(r.report for r in self.runs if r.report is not None)


# -- planning and resuming ---------------------------------------------------------------------
def _target_record(target: Any, shell: bool) -> dict[str, Any]:
    if callable(target):
        return {"function": f"{getattr(target, '__module__', '?')}."
                            f"{getattr(target, '__qualname__', type(target).__name__)}"}
    if isinstance(target, (str, bytes)) or not isinstance(target, Sequence) or not target:
        raise ConfigError(f"sweep target={target!r}; accepted: a function (called with each "
                          "variant's values as keyword arguments) or a command as a list of "
                          "words, e.g. ['python', 'train.py', '--method', '{method}']")
    return {"command": [str(w) for w in target], "shell": bool(shell)}


def _plan_record(axes: Sequence[str], variants: Sequence[Variant], target: dict[str, Any],
                 order: str, seed: int, repeat: int, warmup: int) -> dict[str, Any]:
    """What defines a study: changing any of it is refused."""
    return {"grid": {a: list(dict.fromkeys(v.texts[a] for v in variants)) for a in axes},
            "variant_tags": [dict(v.tags) for v in variants], "order": order, "seed": seed,
            "repeat": repeat, "warmup": warmup, "target": target}


def _describe(plan: Mapping[str, Any]) -> str:
    grid = " ".join(f"{a}={','.join(map(str, v))}" for a, v in plan.get("grid", {}).items())
    target = plan.get("target", {})
    what = (f"function {target['function']}" if "function" in target
            else f"command {' '.join(target.get('command', []))!r}")
    return (f"grid {grid}; order {plan.get('order')} (seed {plan.get('seed')}); repeat "
            f"{plan.get('repeat')}, warm-up {plan.get('warmup')}; {what}")


def _load_schedule(path: Path) -> dict[str, Any]:
    try:
        data = parse_json(path.read_bytes(), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read the study's schedule {path}: {exc.strerror or exc}; "
                          "accepted: a readable file written by energymeter sweep") from None
    except ReportError as exc:
        raise ConfigError(f"{exc}; it is a study's schedule: remove it to start the study "
                          "again, or choose another --study") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ConfigError(f"{path} is not a schedule of energymeter sweep (schema "
                          f"{SCHEMA}); remove it, or choose another --study")
    return data


def _stored_plan(data: Mapping[str, Any], path: Path, n_variants: int
                 ) -> tuple[list[str], list[Slot]]:
    """The group ids and the schedule of a stored study, checked."""
    bad = ConfigError(f"{path} is a damaged schedule of energymeter sweep; remove it to start "
                      "the study again, or choose another --study")
    groups = data.get("group_ids")
    slots = data.get("schedule")
    if (not isinstance(groups, list) or len(groups) != n_variants
            or not all(isinstance(g, str) and g for g in groups) or not isinstance(slots, list)):
        raise bad
    schedule = []
    for item in slots:
        if not (isinstance(item, dict) and isinstance(item.get("variant"), int)
                and isinstance(item.get("repeat"), int)
                and isinstance(item.get("warmup"), bool)
                and 1 <= item["variant"] <= n_variants):
            raise bad
        schedule.append(Slot(item["variant"], item["repeat"], item["warmup"]))
    if len({(s.variant, s.repeat) for s in schedule}) != len(schedule):
        raise bad
    return groups, schedule


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class StudyRuns:
    """The runs of a study found in ``out``: the ``(variant, repeat)`` slots with a completed
    run (``done``), the directories of the runs that did not complete (``unfinished``: failed,
    interrupted, or killed before their ``report.json``), and how many runs there are."""

    done: frozenset[tuple[int, int]] = frozenset()
    unfinished: tuple[Path, ...] = ()
    count: int = 0


#: The most of a run's events.jsonl read for its start event (tags); it is far shorter.
_MAX_START_EVENT_BYTES = 1 << 20


def _run_record(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``report.json``, else (a run killed before writing it) its start event with
    ``status`` unset; None when neither is there."""
    path = run_dir / REPORT_NAME
    try:
        data = parse_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        path = run_dir / EVENTS_NAME
        try:
            with path.open("rb") as fh:
                line = fh.readline(_MAX_START_EVENT_BYTES)
        except FileNotFoundError:
            return None  # not a run directory
        data = parse_json(line, str(path)) if line.strip() else None
        if not isinstance(data, dict) or data.get("event") != "start":
            return None
        data = {**data, "status": None}
    return data if isinstance(data, dict) else None


def finished_runs(out: Path, study: str) -> StudyRuns:
    """The runs of ``study`` in ``out``: read from each run directory's ``report.json`` (or
    the start event of a run killed before it); runs nested in another are left out. A run
    whose files cannot be read is logged and counts as not completed."""
    done: set[tuple[int, int]] = set()
    unfinished: list[Path] = []
    count = 0
    try:
        entries = sorted(os.scandir(out), key=lambda e: e.name)
    except FileNotFoundError:
        return StudyRuns()
    except OSError as exc:
        raise output_error(f"cannot list the runs in {out}", out, exc) from exc
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or entry.name == SWEEPS_DIR:
            continue
        try:
            data = _run_record(Path(entry.path))
        except (OSError, ReportError) as exc:
            log.warning("sweep: cannot read the run %s (%s): it counts as not completed",
                        entry.path, getattr(exc, "strerror", None) or exc)
            continue
        tags = data.get("tags") if data is not None else None
        if not isinstance(tags, dict) or tags.get("study") != study or \
                data.get("parent_run_id"):
            continue
        count += 1
        variant, repeat = tags.get("variant"), tags.get("repeat")
        if data.get("status") == "completed" and _is_int(variant) and _is_int(repeat):
            done.add((variant, repeat))
        else:
            unfinished.append(Path(entry.path))
    return StudyRuns(frozenset(done), tuple(unfinished), count)


def plan(target: Callable[..., Any] | Sequence[str], grid: Mapping[str, Sequence[Any]],
         repeat: int = 1, *, warmup: int = 0, order: str = "random",
         seed: int = DEFAULT_SEED, study: str | None = None, shell: bool = False,
         out: str | Path | None = None, write: bool = True,
         env: Mapping[str, str] | None = None) -> SweepPlan:
    """Plan a study: its variants and schedule, or those of the study of that name already
    in ``out`` (resolved as the ``out`` setting), with the slots it completed. With ``write``
    a new study's schedule is written to ``<out>/sweeps/<study>.json``.

    Raises :class:`ConfigError` for bad arguments, a study whose plan differs from the one
    given, a study with runs in ``out`` but no schedule file, or an ``out`` that cannot be
    written (:class:`~energymeter.errors.OutputError`)."""
    _check_count("repeat", repeat, 1)
    _check_count("warmup", warmup, 0)
    variants = grid_variants(grid)
    axes = tuple(variants[0].tags)
    target_record = _target_record(target, shell)
    fresh = make_schedule(len(variants), repeat, warmup=warmup, order=order, seed=seed)
    study = new_study_id() if study is None else check_study(study)
    out_path = Path(resolve_settings({"out": out}, env=env).out)
    path = out_path / SWEEPS_DIR / f"{study}.json"
    wanted = _plan_record(axes, variants, target_record, order, seed, repeat, warmup)
    found = finished_runs(out_path, study)
    if path.exists():
        data = _load_schedule(path)
        stored = data.get("plan")
        if stored != wanted:
            raise ConfigError(
                f"study {study} ({path}) was planned as: {_describe(stored or {})}; now: "
                f"{_describe(wanted)}. A study's plan cannot change (its runs would not be "
                "comparable): run it again with the same options to resume it, or start a new "
                "study with another --study")
        groups, schedule = _stored_plan(data, path, len(variants))
        resumed = True
    else:
        if found.count:
            raise ConfigError(
                f"{out_path} holds {found.count} run(s) of study {study} but not its schedule "
                f"({path}): it cannot be resumed; choose another --study (or restore the "
                "file)")
        groups = [experiment.new_group_id() for _ in variants]
        schedule = list(fresh)
        resumed = False
    variants = tuple(Variant(v.index, v.tags, v.texts, g)
                     for v, g in zip(variants, groups, strict=True))
    if write and not resumed:
        record = {"schema": SCHEMA, "study": study,
                  "created_at": datetime.now(timezone.utc).isoformat(),
                  "plan": wanted, "axes": list(axes), "group_ids": groups,
                  "variants": [{"variant": v.index, "tags": dict(v.tags),
                                "group_id": v.group_id} for v in variants],
                  "schedule": [{"variant": s.variant, "repeat": s.repeat,
                                "warmup": s.warmup} for s in schedule]}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, record)
        except OSError as exc:
            raise output_error(f"cannot write the study's schedule {path}", out_path,
                               exc) from exc
    known = {(s.variant, s.repeat) for s in schedule}
    return SweepPlan(study=study, out=out_path, path=path, axes=axes, variants=variants,
                     schedule=tuple(schedule), done=found.done & known,
                     unfinished=found.unfinished, order=order,
                     seed=seed, repeat=repeat, warmup=warmup, resumed=resumed)


@contextmanager
def _study_lock(plan: SweepPlan) -> Iterator[None]:
    """Hold ``<out>/sweeps/.<study>.lock``: two sweeps of one study at once would run the
    same slots. :class:`ConfigError` when another holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock = plan.path.with_name(f".{plan.study}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise output_error(f"cannot create the study's lock {lock}", plan.out, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another sweep of study {plan.study} is running (it holds "
                              f"{lock}); wait for it to end, or choose another --study") \
                from None
        yield
    finally:
        os.close(fd)


# -- running -----------------------------------------------------------------------------------
def _takes_meter(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    p = parameters.get("meter")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _run_tags(plan: SweepPlan, slot: Slot, extra: Mapping[str, Any]) -> dict[str, Any]:
    variant = plan.variant(slot.variant)
    return {**extra, **variant.tags, "study": plan.study, "variant": variant.index,
            "repeat": slot.repeat, "sweep_axes": ",".join(plan.axes)}


def _check_extra_tags(tags: Mapping[str, Any] | None, axes: Sequence[str]) -> dict[str, Any]:
    extra = experiment.check_tags(tags)
    clash = sorted(set(extra) & (set(RESERVED_TAGS) | set(axes)))
    if clash:
        raise ConfigError(f"tag(s) {', '.join(clash)} are set by the sweep (its own tags and "
                          "the grid's axes); accepted: other tag names")
    return extra


def sweep(target: Callable[..., Any] | Sequence[str], grid: Mapping[str, Sequence[Any]],
          repeat: int = 1, *, warmup: int = 0, cooldown_s: float = 0.0,
          order: str = "random", seed: int = DEFAULT_SEED, study: str | None = None,
          stop_on_failure: bool = False, name: str | None = None,
          tags: Mapping[str, Any] | None = None, shell: bool = False,
          items: float | None = None, on_start: Callable[[SweepRun], None] | None = None,
          on_run: Callable[[SweepRun], None] | None = None,
          on_status: Callable[[Any], None] | None = None,
          **settings: Any) -> SweepResult:
    """Run every variant of ``grid`` ``warmup + repeat`` times, interleaved, as one study.

    ``target``: a function, called as ``fn(**variant)`` (the variant's values as keyword
    arguments; also ``meter=`` the running :class:`~energymeter.Meter` when it has a
    parameter of that name) inside a meter, as :func:`~energymeter.repeat` does; or a command
    as a list of words in which ``{axis}`` is replaced by the variant's value, run and measured
    as ``energymeter run`` does (:func:`~.command.run_command`; ``shell``, ``items`` and
    ``on_status`` as there). ``grid``: ``{axis: [values]}``, the cartesian product.

    ``order`` ``random`` (default: each round of runs shuffled with ``seed``) or
    ``round-robin``; ``warmup``: each variant's first runs, recorded as warm-up runs;
    ``cooldown_s``: seconds between runs, unmeasured; ``study``: the study's id (default a new
    one), to resume a study in ``out`` (the slots it completed are skipped); ``tags``: more
    tags for every run; ``name``: the runs' name. Other keyword arguments are
    :class:`~energymeter.Settings` fields (``out``...). ``on_start`` / ``on_run`` are called
    with each :class:`SweepRun` before it starts / after it ended.

    A run that fails does not stop the sweep unless ``stop_on_failure``; for a function, its
    exception is then raised after its run is recorded (else it is logged and kept in
    :attr:`SweepRun.error`). A run ended by an interrupting signal (SIGINT, SIGTERM, SIGHUP,
    SIGQUIT) ends the sweep; ``KeyboardInterrupt`` propagates. Raises :class:`ConfigError`
    as :func:`plan` does, and before anything runs
    :class:`~.command.CommandNotFoundError` / :class:`~.command.CommandNotExecutableError`
    when a variant's program cannot be run."""
    if not (isinstance(cooldown_s, (int, float)) and not isinstance(cooldown_s, bool)
            and math.isfinite(cooldown_s) and 0 <= cooldown_s <= MAX_COOLDOWN_S):
        raise ConfigError(f"sweep cooldown_s={cooldown_s!r}; accepted: seconds from 0 to "
                          f"{MAX_COOLDOWN_S:g}")
    is_function = callable(target)
    if is_function and (shell or items is not None or on_status is not None):
        raise ConfigError("sweep of a function: shell, items and on_status are for commands "
                          "(count items with meter.count() in the function)")
    extra = _check_extra_tags(tags, list(grid_variants(grid)[0].tags))
    if not is_function:  # before anything runs or is written: 127/126 as `run` does
        for warning in check_commands(target, grid, shell=shell):
            log.warning("sweep: %s", warning)
    study_plan = plan(target, grid, repeat, warmup=warmup, order=order, seed=seed, study=study,
                      shell=shell, out=settings.get("out"))
    runs: list[SweepRun] = []
    with _study_lock(study_plan):
        done = study_plan.done
        ran_one = False
        for position, slot in enumerate(study_plan.schedule, start=1):
            variant = study_plan.variant(slot.variant)
            pending = SweepRun(position, variant, slot.repeat, slot.warmup)
            if (slot.variant, slot.repeat) in done:
                runs.append(SweepRun(position, variant, slot.repeat, slot.warmup,
                                     skipped=True))
                continue
            if ran_one and cooldown_s:
                if is_function:
                    time.sleep(cooldown_s)  # KeyboardInterrupt propagates, as in repeat()
                elif (signum := _cool_down(cooldown_s)) is not None:
                    return SweepResult(study_plan, tuple(runs), stopped=True,
                                       stop_code=128 + signum)
            ran_one = True
            if on_start is not None:
                on_start(pending)
            run_tags = _run_tags(study_plan, slot, extra)
            if is_function:
                done_run = _run_function(target, pending, run_tags, name, stop_on_failure,
                                         settings)
            else:
                done_run = _run_one_command(target, pending, run_tags, name, shell, items,
                                            on_status, settings)
            runs.append(done_run)
            if on_run is not None:
                on_run(done_run)
            if done_run.ok:
                continue
            if _stops(done_run) or stop_on_failure:
                return SweepResult(study_plan, tuple(runs), stopped=True,
                                   stop_code=done_run.exit_code)
    return SweepResult(study_plan, tuple(runs))


def placeholder_warnings(template: Sequence[str], axes: Sequence[str]) -> list[str]:
    """What the command's ``{...}`` placeholders leave doubtful: none of the grid's axes used
    (every variant runs the same command), or a ``{name}`` that is no axis (passed as
    written). Raises :class:`ConfigError` for a ``{name}`` that looks like a misspelt axis
    (``{selct}`` for ``select``): the study would compare identical commands."""
    import difflib
    import re

    text = " ".join(str(w) for w in template)
    used = [a for a in axes if "{" + a + "}" in text]
    others = sorted(set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}", text)) - set(axes))
    for name in others:
        close = difflib.get_close_matches(name, axes, n=1, cutoff=0.75)
        if close:
            raise ConfigError(f"the command has {{{name}}}, which is not an axis of the grid "
                              f"(axes: {', '.join(axes)}); did you mean {{{close[0]}}}?")
    warnings = [f"the command has {{{name}}}, which is not an axis of the grid (axes: "
                f"{', '.join(axes)}): it is passed as written" for name in others]
    if not used:
        shown = ", ".join("{" + a + "}" for a in axes)
        warnings.append(f"the command uses no axis of the grid ({shown}): every variant runs "
                        "the same command, the variants differing only in their tags")
    return warnings


def check_commands(template: Sequence[str], grid: Mapping[str, Sequence[Any]], *,
                   shell: bool = False) -> list[str]:
    """Raise :class:`~.command.CommandNotFoundError` (127) or
    :class:`~.command.CommandNotExecutableError` (126) when the program of a variant's
    command (``{axis}`` filled in) cannot be run; :class:`ConfigError` for a bad grid or a
    misspelt placeholder. Returns the :func:`placeholder_warnings`."""
    if isinstance(template, (str, bytes)) or not isinstance(template, Sequence):
        _target_record(template, shell)  # raises, saying what is accepted
    warnings = placeholder_warnings(template, list(grid))
    for variant in grid_variants(grid):
        resolve_program(build_argv(fill_command(template, variant), shell=shell)[0])
    return warnings


def _stops(run: SweepRun) -> bool:
    """Whether a run that did not complete ends the sweep: it was interrupted by a signal
    sent to the sweep (Ctrl-C, a scheduler's SIGTERM), not by one the command died of alone
    (a crash, the OOM killer's SIGKILL), which is a failed run."""
    if run.status != "interrupted":
        return False
    code = run.exit_code or 0
    return code < 128 or code in _STOPPING_CODES


def _run_one_command(template: Sequence[str], pending: SweepRun, tags: dict[str, Any],
                     name: str | None, shell: bool, items: float | None,
                     on_status: Callable[[Any], None] | None,
                     settings: Mapping[str, Any]) -> SweepRun:
    command = fill_command(template, pending.variant)
    try:
        result = run_command(command, shell=shell, name=name, on_status=on_status, tags=tags,
                             group_id=pending.variant.group_id, warmup=pending.warmup,
                             items=items, **settings)
    except RunError as exc:  # could not execute, or not write its report: a failed run
        log.warning("sweep: %s", exc)
        return _finished(pending, report=exc.report, exit_code=exc.exit_code, error=exc)
    return _finished(pending, report=result.report, exit_code=result.exit_code)


def _run_function(fn: Callable[..., Any], pending: SweepRun, tags: dict[str, Any],
                  name: str | None, stop_on_failure: bool,
                  settings: Mapping[str, Any]) -> SweepRun:
    from .meter import Meter

    meter = Meter(name or getattr(fn, "__qualname__", "run"), tags=tags,
                  group_id=pending.variant.group_id, warmup=pending.warmup, **settings)
    kwargs = dict(pending.variant.tags)
    if _takes_meter(fn):
        kwargs["meter"] = meter
    try:
        with meter:
            value = fn(**kwargs)
    except Exception as exc:  # the run is recorded failed; the sweep goes on unless told not to
        if stop_on_failure:
            raise
        log.warning("sweep: %s, repeat %d raised %r; its run is recorded as failed",
                    pending.variant.label, pending.repeat, exc)
        return _finished(pending, report=meter.report, exit_code=1, error=exc)
    return _finished(pending, report=meter.report, exit_code=0, result=value)


def _finished(pending: SweepRun, **values: Any) -> SweepRun:
    return SweepRun(pending.position, pending.variant, pending.repeat, pending.warmup,
                    **values)


__all__ = ["ORDERS", "RESERVED_TAGS", "SCHEMA", "Slot", "SweepPlan", "SweepResult",
           "StudyRuns", "SweepRun", "Variant", "check_commands", "fill_command", "finished_runs",
           "grid_variants", "make_schedule", "new_study_id", "parse_grid", "plan", "sweep"]
