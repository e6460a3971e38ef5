"""Compare runs: group them (:mod:`.groups`) and compute, per group and figure, n, mean,
standard deviation, the 95 % confidence interval of the mean and the coefficient of variation,
and between each group and the first the relative difference with its 95 % confidence interval
and Welch's p-value (:mod:`.stats`); what ``energymeter compare`` shows, rendered by
:mod:`.render`.

:func:`compare` returns plain data (a list of dicts, one per group). Nothing here prints, and
neither pandas nor numpy is needed.

>>> from energymeter.analysis import compare, find_runs
>>> rows = compare(find_runs(["runs/dense", "runs/sparse"]))    # doctest: +SKIP
>>> rows[1]["energy_total_j_rel_diff"], rows[1]["energy_total_j_p_value"]  # doctest: +SKIP
(-0.393, 2.1e-08)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from ..probes.base import KINDS, energy_summary
from ..report.bases import BASIS_LABEL, check_basis, energy_on
from ..stats import ALPHA, CONFIDENCE, relative_difference, summarize
from .groups import Group, group_runs
from .target import TARGET_FIGURES, Target, as_target, run_energy_to, target_text

if TYPE_CHECKING:
    from ..report import Report

_MIB = 2**20

#: A group with fewer runs than this gets a warning: its confidence interval means little.
MIN_RUNS = 3
#: A group whose total energy varies more than this (coefficient of variation) is noisy.
MAX_CV = 0.10

#: The statistics of every figure ``<key>`` in a row: ``<key>`` is the mean.
STAT_SUFFIXES = ("n", "std", "ci_low", "ci_high", "cv", "ratio", "rel_diff", "rel_diff_ci_low",
                 "rel_diff_ci_high", "p_value")

_FIXED_METRICS: tuple[tuple[str, str, str, float], ...] = (
    ("duration_s", "duration", "s", 1.0),
    ("mean_power_w", "mean power", "W", 1.0),
    ("emissions_g", "emissions", "gCO2e", 1.0),
    ("peak_memory_bytes", "peak memory", "MiB", _MIB),
    ("peak_gpu_memory_bytes", "peak GPU memory", "MiB", _MIB),
)
_MEMORY_LABELS = {"rss": "peak RSS", "pss": "peak PSS"}
#: The idle baseline's figures, where runs measured one (--baseline): its power, the idle
#: energy over each run's duration, and the machine's energy net of it. On every basis.
_BASELINE_METRICS: tuple[tuple[str, str, str, float], ...] = (
    ("baseline_power_w", "idle baseline power", "W", 1.0),
    ("baseline_idle_j", "idle energy over the run", "J", 1.0),
    ("baseline_net_j", "energy net of idle", "J", 1.0),
)


# -- figures -----------------------------------------------------------------------------------
def on_basis(key: str) -> bool:
    """Whether figure ``key`` of a comparison is on its energy basis (energy, mean power,
    emissions; not the figures to a target, which are the machine's)."""
    return (key.startswith("energy_") and "to_target" not in key) or key in (
        "mean_power_w", "emissions_g")


def _baseline_figure(key: str) -> Callable[[Report], float | None]:
    def get(r: Report) -> float | None:
        b = r.baseline
        if not b:
            return None
        if key == "power_w":
            power = [float(v) for cid, v in (b.get("power_w") or {}).items()
                     if cid in b.get("channels", {}) and _in_total(r, cid)]
            return sum(power) if power else None
        value = b.get({"idle_j": "idle_total_j", "net_j": "net_total_j"}[key])
        return None if value is None else float(value)
    return get


def _in_total(report: Report, cid: str) -> bool:
    return any(c.channel.id == cid and c.channel.in_total for c in report.channels)


def metric_list(kinds: Iterable[str], *, per_item: bool = False,
                target: Target | str | None = None, memory_basis: str | None = None,
                basis: str | None = None, baseline: bool = False
                ) -> list[tuple[str, str, str, float]]:
    """(key, label, unit, divisor from SI) of every figure compared, with the energy ``kinds``
    given, energy per item when ``per_item``, energy, time and emissions to ``target`` when
    given (a tuple, or its text ``val_acc ≥ 0.9``); the memory row is labelled by its
    ``memory_basis`` (``rss``/``pss``); with ``basis``, the figures on it say which
    (``energy total, attributed``); with ``baseline``, the idle baseline's power, the idle
    energy over each run and the energy net of it."""
    if basis is not None:
        return [(key, f"{label}, {BASIS_LABEL[basis]}" if on_basis(key) else label, unit, div)
                for key, label, unit, div in metric_list(
                    kinds, per_item=per_item, target=target, memory_basis=memory_basis,
                    baseline=baseline)]
    kinds = set(kinds)
    ordered = [k for k in KINDS if k in kinds] + sorted(kinds - set(KINDS))
    metrics = [("energy_total_j", "energy total", "J", 1.0)]
    metrics += [(f"energy_{k}_j", f"energy {k}" + (" (not in total)" if k == "psys" else ""),
                 "J", 1.0) for k in ordered]
    if per_item:
        metrics.append(("energy_per_item_j", "energy per item", "J", 1.0))
    if baseline:
        metrics += list(_BASELINE_METRICS)
    if target is not None:
        text = target if isinstance(target, str) else target_text(target)
        metrics += [("energy_to_target_j", f"energy to {text}", "J", 1.0),
                    ("time_to_target_s", f"time to {text}", "s", 1.0),
                    ("emissions_to_target_g", f"emissions to {text}", "gCO2e", 1.0)]
    memory = _MEMORY_LABELS.get(memory_basis or "", "peak memory")
    return metrics + [(k, memory if k == "peak_memory_bytes" else label, unit, div)
                      for k, label, unit, div in _FIXED_METRICS]


def _resource(report: Report, *keys: str) -> float | None:
    for key in keys:
        value = report.resources.get(key)
        if value is not None:
            return float(value)
    return None


def memory_basis(report: Report) -> str:
    """What ``peak_memory_bytes`` of ``report`` is: ``pss`` or ``rss`` (the fallback)."""
    if report.resources.get("peak_memory_bytes") is None:
        return "rss"
    return str(report.resources.get("memory_basis", "rss")).lower()


class _OnBasis:
    """Each run's energy on one basis, read once per run; a run without that basis gives its
    machine energy, and :meth:`used` says so (the comparison warns that it mixes bases)."""

    def __init__(self, basis: str) -> None:
        self.basis = basis
        self._seen: dict[int, Any] = {}

    def __call__(self, r: Report) -> Any:
        key = id(r)
        if key not in self._seen:
            self._seen[key] = energy_on(r, self.basis) or energy_on(r, "machine")
        return self._seen[key]

    def used(self, r: Report) -> str:
        """The basis ``r``'s figures are on, as a comparison shows it."""
        energy = self(r)
        if energy.basis != self.basis:
            return f"{energy.basis} (no {self.basis} figure)"
        if energy.whole:
            return f"{energy.basis} ({', '.join(energy.whole)} whole)"
        return energy.basis


def items_of(report: Report, nested: Sequence[Report] = ()) -> float | None:
    """The items a run counted (``Meter.count``), or, where it counted none, those its nested
    runs counted (a script's own ``measure()`` under ``energymeter run``, as its logs are
    used for energy to a target)."""
    if report.items:
        return report.items
    inner = [r.items for r in nested if r.items]
    return float(sum(inner)) if inner else None


def _getters(kinds: Iterable[str], on: _OnBasis | None = None,
             items: Callable[[Report], float | None] | None = None
             ) -> dict[str, Callable[[Report], float | None]]:
    on = on or _OnBasis("machine")
    count = items or (lambda r: r.items)

    def energy(kind: str) -> Callable[[Report], float | None]:
        def get(r: Report) -> float | None:
            value = on(r).by_kind.get(kind)
            return None if value is None else float(value)
        return get

    def emissions(r: Report) -> float | None:
        """Emissions in proportion to the basis' share of the run's machine energy."""
        value, machine = r.emissions_g, r.total_energy_j
        if value is None or on(r).total_j < 0:  # net of an idle baseline that drew more
            return None
        return float(value) * (on(r).total_j / machine if machine > 0 else 1.0)

    def per_item(r: Report) -> float | None:
        n = count(r)
        return on(r).total_j / n if n else None

    return {
        "energy_total_j": lambda r: on(r).total_j,
        **{f"energy_{k}_j": energy(k) for k in kinds},
        "energy_per_item_j": per_item,
        "duration_s": lambda r: r.duration_s,
        "mean_power_w": lambda r: (on(r).total_j / r.duration_s if r.duration_s > 0
                                   else None),  # no power over no time
        "emissions_g": emissions,
        # 0: the run's processes ended before the first gauge read (not sampled), no figure
        "peak_memory_bytes": lambda r: _resource(r, "peak_memory_bytes", "peak_rss_bytes")
        or None,
        "peak_gpu_memory_bytes": lambda r: _resource(r, "peak_gpu_memory_bytes"),
        "baseline_power_w": _baseline_figure("power_w"),
        "baseline_idle_j": _baseline_figure("idle_j"),
        "baseline_net_j": _baseline_figure("net_j"),
    }


# -- rows --------------------------------------------------------------------------------------
def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _methods(runs: Sequence[Report]) -> dict[str, str]:
    methods: dict[str, str] = {}
    for kind in (k for k in KINDS if any(k in r.energy_j["by_kind"] for r in runs)):
        found = sorted({m for r in runs for m in r.methods(kind).split("+") if m})
        methods[kind] = "+".join(found)
    return methods


def _hardware(report: Report) -> str:
    parts = sorted(f"{c.channel.kind} {c.channel.device or '?'} ({c.channel.method})"
                   for c in report.channels if not c.channel.is_subzone)
    return " + ".join(parts) or "(no channel)"


def _carbon(report: Report, key: str) -> str:
    value = (report.carbon or {}).get(key)
    return "(none)" if value is None else str(value)


def cpu_model(report: Report) -> str:
    """How a run's CPU energy was estimated (its model's TDP, idle power and where the TDP
    came from), or "measured" when no CPU channel is a model: runs estimated with different
    models are different numbers."""
    models = sorted({f"{c.channel.device or '?'}: TDP {c.channel.meta.get('tdp_w', '?'):g} W, "
                     f"idle {c.channel.meta.get('idle_w', '?'):g} W "
                     f"({c.channel.meta.get('tdp_source', '?')})"
                     for c in report.channels
                     if c.channel.kind == "cpu" and c.channel.method == "model"
                     and isinstance(c.channel.meta.get("tdp_w"), (int, float))
                     and isinstance(c.channel.meta.get("idle_w"), (int, float))})
    return "; ".join(models) or "measured"


def _host(report: Report) -> str:
    return str(report.host.get("hostname") or "(unknown)")


def _baseline(report: Report) -> str:
    return "measured" if report.baseline else "none"


#: What runs of one group must share, and how each is read. ``host`` only matters where the
#: hardware looks the same (two machines of one name are still two machines); where it
#: differs, the hardware warning says more.
_MIX_FIELDS: tuple[tuple[str, Callable[[Report], str]], ...] = (
    ("region", lambda r: _carbon(r, "region")),
    ("PUE", lambda r: _carbon(r, "pue")),
    ("carbon basis", lambda r: _carbon(r, "basis")),
    ("hardware", _hardware),
    ("host", _host),
    ("CPU energy model", cpu_model),
    ("idle baseline", _baseline),
)


def _mixed(runs: Sequence[Report], on: _OnBasis | None = None
           ) -> dict[str, dict[str, list[str]]]:
    """For each of :data:`_MIX_FIELDS` (and the energy basis each run's figures are on) on
    which ``runs`` differ: value -> run ids."""
    out: dict[str, dict[str, list[str]]] = {}
    fields = _MIX_FIELDS if on is None else (*_MIX_FIELDS, ("energy basis", on.used))
    for name, read in fields:
        if name == "host" and "hardware" in out:
            continue
        values: dict[str, list[str]] = {}
        for r in runs:
            values.setdefault(read(r), []).append(r.run_id)
        if len(values) > 1:
            out[name] = dict(sorted(values.items(), key=lambda kv: -len(kv[1])))
    return out


def _group_row(g: Group, by: str, metrics: Sequence[str],
               getters: Mapping[str, Callable[[Report], float | None]],
               targets: Mapping[str, dict[str, Any]], target: Target | None
               ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    runs = g.runs
    row: dict[str, Any] = {
        "label": g.label, "name": (runs or g.warmup_runs)[0].name, "by": by, "key": g.key,
        "n": len(runs), "warmup": len(g.warmup_runs),
        "run_ids": [r.run_id for r in runs],
        "warmup_run_ids": [r.run_id for r in g.warmup_runs],
        "sources": list(g.sources), "statuses": _counts(r.status for r in runs),
        "methods": _methods(runs),
        "memory_basis": "+".join(sorted({memory_basis(r) for r in runs})) or None,
        "duplicates_dropped": g.duplicates, "nested_excluded": g.nested_excluded,
        "parents_replaced": g.parents_replaced, "retried_excluded": g.retried,
    }
    values: dict[str, list[float]] = {}
    if target is not None:
        results = [targets[r.run_id] for r in runs]
        row["target"] = target_text(target)
        row["target_reached"] = sum(1 for t in results if t["reached"])
        row["target_notes"] = sorted({t["note"] for t in results
                                      if t["note"] and t["reached"]})
        for figure, key in TARGET_FIGURES:
            values[key] = [t[figure] for t in results
                           if t["reached"] and t[figure] is not None]
    for key in metrics:
        if key in getters:
            values[key] = [v for v in (getters[key](r) for r in runs) if v is not None]
        summary = summarize(values[key])
        row[key] = summary.mean
        for field in ("n", "std", "ci_low", "ci_high", "cv"):
            row[f"{key}_{field}"] = getattr(summary, field)
        for field in ("ratio", "rel_diff", "rel_diff_ci_low", "rel_diff_ci_high", "p_value"):
            row[f"{key}_{field}"] = None
    return row, values


class _PhaseOf:
    """Each run's phase ``name`` (every occurrence summed: a phase run once per epoch counts
    all its epochs), from the run or, where it has none of that name, the runs nested in it
    (a script's own ``measure()`` under ``energymeter run``): ``(energy summary, seconds,
    occurrences)`` or None."""

    def __init__(self, name: str, nested: Mapping[str, Sequence[Report]]) -> None:
        self.name, self._nested = name, nested
        self._seen: dict[int, Any] = {}

    def __call__(self, r: Report) -> tuple[dict[str, Any], float, int] | None:
        if id(r) not in self._seen:
            self._seen[id(r)] = self._find(r)
        return self._seen[id(r)]

    def _find(self, r: Report) -> tuple[dict[str, Any], float, int] | None:
        for source in (r, *self._nested.get(r.run_id, ())):
            found = [p for p in source.phases if p.name == self.name]
            if not found:
                continue
            per_channel: dict[str, float] = {}
            for p in found:
                for cid, joules in p.energy_by_channel.items():
                    per_channel[cid] = per_channel.get(cid, 0.0) + joules
            summary = energy_summary([c.channel for c in source.channels], per_channel)
            return summary, sum(p.duration_s for p in found), len(found)
        return None


def _phase_getters(kinds: Iterable[str], of: _PhaseOf
                   ) -> dict[str, Callable[[Report], float | None]]:
    def energy(kind: str | None) -> Callable[[Report], float | None]:
        def get(r: Report) -> float | None:
            found = of(r)
            if found is None:
                return None
            value = found[0]["total"] if kind is None else found[0]["by_kind"].get(kind)
            return None if value is None else float(value)
        return get

    def seconds(r: Report) -> float | None:
        found = of(r)
        return None if found is None else found[1]

    def power(r: Report) -> float | None:
        found = of(r)
        return None if found is None or found[1] <= 0 else found[0]["total"] / found[1]

    return {"energy_total_j": energy(None), **{f"energy_{k}_j": energy(k) for k in kinds},
            "duration_s": seconds, "mean_power_w": power}


#: The figures a per-phase comparison has: a phase's energy, duration and mean power.
PHASE_METRICS = ("energy_total_j", "duration_s", "mean_power_w")


def compare(runs: Sequence[Report | tuple[str | None, Report]], *, by: str = "auto",
            group: bool = True, nested: bool = False, target: str | Target | None = None,
            confidence: float = CONFIDENCE, basis: str = "machine",
            phase: str | None = None) -> list[dict[str, Any]]:
    """One dict per group of ``runs`` (reports, or ``(source, report)`` pairs from
    :func:`~energymeter.analysis.find_runs`), grouped as :func:`~energymeter.analysis.groups.
    group_runs` does (``by`` auto|name|dir|command|group|tag:KEY; ``group=False``: one per run;
    duplicates counted once; nested runs left out unless ``nested``; warm-up runs counted, not
    compared).

    Each row has ``label``, ``name``, ``by`` (what the runs were grouped by: ``run`` for one
    per run), ``key``, ``n`` (runs compared), ``warmup`` (warm-up runs
    left out), ``run_ids``, ``warmup_run_ids``, ``sources``, ``statuses`` (count per status),
    ``methods`` (per energy kind), ``memory_basis``, ``duplicates_dropped``,
    ``nested_excluded``, ``parents_replaced``, ``warnings`` (about this group, or the
    comparison), ``mixed`` (what its runs differ in: region, PUE, carbon basis, hardware ->
    value -> run ids) and, for every figure ``<key>`` (``energy_total_j``, ``energy_<kind>_j``,
    ``energy_per_item_j`` where items were counted, ``energy_to_target_j``,
    ``time_to_target_s``, ``emissions_to_target_g`` with ``target``, ``duration_s``,
    ``mean_power_w``, ``emissions_g``, ``peak_memory_bytes``, ``peak_gpu_memory_bytes``; SI
    units): ``<key>`` (the mean), ``<key>_n``, ``_std``, ``_ci_low``, ``_ci_high`` (the
    ``confidence`` interval of the mean, Student's t), ``_cv``, and against the first group
    ``_rel_diff`` (``mean / first mean - 1``; 0 for the first), ``_rel_diff_ci_low``,
    ``_rel_diff_ci_high`` (delta method on the log ratio), ``_p_value`` (Welch's t-test,
    two-sided) and ``_ratio`` (``mean / first mean``). A figure that cannot be computed is None.
    With ``target`` (``"val_acc=0.9"``, see :func:`~energymeter.report.target.parse_target`)
    also ``target``, ``target_reached`` (runs that reached it) and ``target_notes``.

    ``basis`` (``machine``, ``attributed``, ``net``; :mod:`energymeter.report.bases`) is the
    energy the energy, mean power, per-item and emissions figures are of; each row has
    ``basis``, and ``mixed["energy basis"]`` where some of its runs lack it (they give their
    machine energy, and the row warns) or count a channel whole. Targets stay on the machine
    basis (the energy at a logged metric is the machine's).

    ``phase``: compare that phase of each run instead of the whole run (its energy, total and
    per kind, duration and mean power; every occurrence of the name summed, found in the run
    or the runs nested in it); each row has ``phase`` and ``phase_missing`` (runs without it,
    left out of its figures, and warned). Phases are on the machine basis."""
    on = _OnBasis(check_basis(basis))
    _check_phase(phase, basis, target)
    grouping = group_runs(runs, by=by, group=group, nested=nested)
    parsed = as_target(target) if target is not None else None
    compared = [r for g in grouping.groups for r in g.runs]
    metrics, getters, of = _figures(compared, grouping, on, parsed, phase)
    targets: dict[str, dict[str, Any]] = {}
    if parsed is not None:
        targets = {r.run_id: run_energy_to(r, parsed, grouping.nested.get(r.run_id, ()))
                   for r in compared}
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, list[float]]] = []
    for g in grouping.groups:
        row, values = _group_row(g, grouping.by, metrics, getters, targets, parsed)
        rows.append(row)
        samples.append(values)
    _differences(rows, samples, metrics, confidence)
    for row, g in zip(rows, grouping.groups, strict=True):
        _describe_group(row, g, on, phase, of)
    _add_warnings(rows, [g.runs for g in grouping.groups], grouped=grouping.by != "run")
    missing = missing_tag(grouping.by, [r for g in grouping.groups
                                        for r in (*g.runs, *g.warmup_runs)])
    if missing:
        for row in rows:
            row["warnings"].insert(0, missing)
    return rows


def _check_phase(phase: str | None, basis: str, target: Any) -> None:
    """A per-phase comparison is on the machine basis and reaches no target."""
    if phase is not None and basis != "machine":
        raise ReportError(f"phase {phase!r}: a phase's energy is the machine's (phases are "
                          "not attributed); compare phases on basis machine")
    if phase is not None and target is not None:
        raise ReportError("phase and target cannot be combined: a target is reached over a "
                          "whole run")


def _figures(compared: Sequence[Report], grouping: Any, on: _OnBasis, parsed: Target | None,
             phase: str | None
             ) -> tuple[list[str], dict[str, Callable[[Report], float | None]],
                        _PhaseOf | None]:
    """The figures compared (their keys), how each is read from a run, and the phase looked
    up (None for whole runs); :class:`ReportError` for a phase no run has."""
    kinds = {k for r in compared for k in r.energy_j["by_kind"]}

    def counted(r: Report) -> float | None:
        return items_of(r, grouping.nested.get(r.run_id, ()))

    per_item = any(counted(r) for r in compared)
    baseline = any(r.baseline for r in compared)
    metrics = [key for key, *_ in metric_list(kinds, per_item=per_item, target=parsed,
                                              baseline=baseline)]
    if phase is None:
        return metrics, _getters(kinds, on, counted), None
    of = _PhaseOf(phase, grouping.nested)
    getters = _phase_getters(kinds, of)
    if not any(of(r) for r in compared):
        have = sorted({p.name for r in compared for p in r.phases}
                      | {p.name for r in compared for n in grouping.nested.get(r.run_id, ())
                         for p in n.phases})
        raise ReportError(f"no run has a phase named {phase!r}; the runs' phases are: "
                          f"{', '.join(have) if have else '(none)'}")
    return [m for m in metrics if m in getters], getters, of


def _differences(rows: list[dict[str, Any]], samples: Sequence[Mapping[str, list[float]]],
                 metrics: Sequence[str], confidence: float) -> None:
    """Each row's ratio, relative difference (with its interval) and p-value against the
    first row, figure by figure; none for a figure whose mean is ≤ 0 (net energy)."""
    for row, values in zip(rows, samples, strict=True):
        for key in metrics:
            first, mean = rows[0][key], row[key]
            if on_basis(key) and any(v is not None and v <= 0 for v in (first, mean)):
                row[f"{key}_ratio"] = row[f"{key}_rel_diff"] = None  # no ratio of a net ≤ 0
                continue
            row[f"{key}_ratio"] = mean / first if mean is not None and first else None
            if row is rows[0]:
                row[f"{key}_rel_diff"] = 0.0 if mean is not None else None
                continue
            diff = relative_difference(samples[0][key], values[key], confidence)
            row[f"{key}_rel_diff"] = diff.rel_diff
            row[f"{key}_rel_diff_ci_low"] = diff.ci_low
            row[f"{key}_rel_diff_ci_high"] = diff.ci_high
            row[f"{key}_p_value"] = diff.p_value


def _describe_group(row: dict[str, Any], g: Group, on: _OnBasis, phase: str | None,
                    of: _PhaseOf | None) -> None:
    """What a row's warnings are drawn from: its basis and the bases its runs are on, the
    phase and the runs without it, runs with energy ≤ 0, the other load its runs saw,
    baselines taken under load, and what its runs differ in."""
    row["basis"] = on.basis
    if of is not None:
        row["phase"] = phase
        row["phase_missing"] = [r.run_id for r in g.runs if of(r) is None]
    row["bases_used"] = sorted({on.used(r) for r in g.runs})
    row["not_positive"] = [r.run_id for r in g.runs if on.basis != "machine"
                           and on(r).basis == on.basis and on(r).total_j <= 0]
    others = [float(v) for r in g.runs
              if isinstance(v := (r.cpu_attribution or {}).get("other_share"), (int, float))]
    row["other_cpu_share"] = sum(others) / len(others) if others else None
    row["baselines_under_load"] = [r.run_id for r in g.runs
                                   if (r.baseline or {}).get("under_load")]
    row["mixed"] = _mixed(g.runs, on)


def missing_tag(by: str, runs: Sequence[Report]) -> str | None:
    """A warning when ``by`` is ``tag:KEY`` and no run of ``runs`` has tag KEY (a typo puts
    every run in one ``KEY=(none)`` group), naming the tags the runs do have."""
    if not by.startswith("tag:"):
        return None
    key = by[len("tag:"):]
    if any(key in r.tags for r in runs):
        return None
    have = sorted({k for r in runs for k in r.tags})
    return (f"no run has tag {key!r} (--by tag:{key}): every run is in one group; the runs' "
            f"tags are: {', '.join(have) if have else '(none)'}")


# -- warnings ----------------------------------------------------------------------------------
def _runs_text(ids: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(i[:8] for i in ids[:most])
    return shown + (", …" if len(ids) > most else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def signed(value: float, decimals: int = 1) -> str:
    """``value`` with its sign, a true minus sign for negatives (``−39.3``, ``+2.1``)."""
    return f"{value:+.{decimals}f}".replace("-", "−")


def percent(value: float) -> str:
    """A relative difference as ``−39.3 %``."""
    return f"{signed(100 * value)} %"


def p_text(p_value: float) -> str:
    """``p < 0.001`` or ``p = 0.46`` (two significant digits; three where two would round a
    significant value up to the significance level)."""
    if p_value < 0.001:
        return "p < 0.001"
    text = f"{p_value:.2g}"
    if p_value < ALPHA <= float(text):
        text = f"{p_value:.3g}"
    return f"p = {text}"


def _add_warnings(rows: list[dict[str, Any]], runs: Sequence[Sequence[Report]],
                  grouped: bool) -> None:
    """Set each row's ``warnings``: what makes its figures or the comparison doubtful (its
    own, then those about the comparison as a whole)."""
    everywhere = _comparison_wide(rows, runs)
    for row in rows:
        row["warnings"] = [*_row_warnings(row, rows[0], grouped), *everywhere]


def _comparison_wide(rows: Sequence[dict[str, Any]], runs: Sequence[Sequence[Report]]
                     ) -> list[str]:
    """Warnings about the groups together: a kind measured by different methods, CPU energy
    estimated with different models, emissions under different carbon settings."""
    everywhere: list[str] = []
    used = {row["label"]: row.get("bases_used") or [] for row in rows}
    if len({tuple(b) for b in used.values() if b}) > 1:
        shown = "; ".join(f"{label}: {' / '.join(b)}" for label, b in used.items() if b)
        everywhere.append(f"the groups' energy is on different bases ({shown}): their "
                          "difference mixes the whole machine's energy with a run's own share "
                          "or net energy")
    if rows and rows[0].get("basis", "machine") != "machine" and "target" in rows[0]:
        everywhere.append(f"energy to {rows[0]['target']} is the machine's: the energy at a "
                          f"logged metric is not split by basis ({rows[0]['basis']} applies "
                          "to the other energy figures)")
    kinds = {k for row in rows for k in row["methods"]}
    for kind in (k for k in KINDS if k in kinds):
        seen = {row["methods"][kind] for row in rows if kind in row["methods"]}
        if len(seen) > 1:
            everywhere.append(f"{kind} energy was obtained by different methods "
                              f"({', '.join(sorted(seen))}): its differences compare unlike "
                              "numbers")
    models = {row["label"]: sorted({cpu_model(r) for r in group} - {"measured"})
              for row, group in zip(rows, runs, strict=True)}
    if len({tuple(m) for m in models.values() if m}) > 1:
        shown = "; ".join(f"{label}: {' / '.join(m)}" for label, m in models.items() if m)
        everywhere.append(f"cpu energy is estimated with different models ({shown}): their "
                          "difference reflects the models' TDPs, not the computation")
    settings = {row["label"]: sorted({f"{_carbon(r, 'region')}, PUE {_carbon(r, 'pue')}"
                                      for r in group}) for row, group in zip(rows, runs,
                                                                             strict=True)}
    if len({tuple(s) for s in settings.values() if s}) > 1:
        shown = "; ".join(f"{label}: {' / '.join(s)}" for label, s in settings.items() if s)
        everywhere.append(f"emissions compare different carbon settings ({shown}): their "
                          "difference reflects the grid and the facility, not the computation")
    return everywhere


def _row_warnings(row: dict[str, Any], first: dict[str, Any], grouped: bool) -> list[str]:
    """One group's warnings: runs not completed, too few, noisy, not significantly different
    from the first, mixing what must not be mixed, estimated, dropped or nested runs, and
    its target."""
    label = row["label"]
    return [f"{label}{text}" for text in (
        *_count_warnings(row, grouped), *_spread_warnings(row, first),
        *_mix_warnings(row), *_basis_warnings(row), *_method_warnings(row),
        *_left_out_warnings(row), *_target_warnings(row))]


def _count_warnings(row: dict[str, Any], grouped: bool) -> list[str]:
    """Runs that did not complete; a group with no run, or too few for an interval."""
    n, w = row["n"], []
    bad = {s: k for s, k in row["statuses"].items() if s != "completed"}
    if bad:
        shown = ", ".join(f"{k} {s}" for s, k in bad.items())
        w.append(f": {shown} of {_plural(n, 'run')}")
    if grouped and n == 0:
        w.append(f": no run to compare (its {_plural(row['warmup'], 'run')} are warm-up "
                 "runs)")
    elif grouped and n < MIN_RUNS:
        w.append(f": n={n}: too few runs for a confidence interval to mean much (repeat "
                 f"{MIN_RUNS} or more times; 5 or more is better)")
    return w


def _spread_warnings(row: dict[str, Any], first: dict[str, Any]) -> list[str]:
    """Noisy energy (with the other load the runs saw), a difference that is not real."""
    w = []
    cv = row.get("energy_total_j_cv")
    if cv is not None and cv > MAX_CV:
        others = row.get("other_cpu_share")
        hint = ("; other processes used on average "
                f"{100 * others:.0f} % of the machine's busy CPU time: --basis attributed "
                "compares the runs' own share" if others is not None and others > 0.25
                and row.get("basis", "machine") == "machine" else "")
        w.append(f": energy total varies by {100 * cv:.0f} % between runs (CV > "
                 f"{100 * MAX_CV:.0f} %): noisy; look for other load on the machine, "
                 f"thermal or clock changes, or add warm-up runs{hint}")
    p = row.get("energy_total_j_p_value")
    if row is not first and p is not None and p >= ALPHA:
        rel = row["energy_total_j_rel_diff"]
        w.append(f" vs {first['label']}: energy total differs by {percent(rel)}, not "
                 f"significant ({p_text(p)}): these runs do not show a real difference")
    return w


def _mix_warnings(row: dict[str, Any]) -> list[str]:
    """What the group's runs differ in (region, PUE, hardware, host, model, basis...)."""
    w = []
    for name, values in row["mixed"].items():
        (common, ids), *others = values.items()
        shown = "; ".join(f"{v} ({_plural(len(i), 'run')}: {_runs_text(i)})"
                          for v, i in others)
        w.append(f": runs differ in {name}: {common} ({_plural(len(ids), 'run')}); "
                 f"{shown}; their figures are averaged together")
    return w


def _basis_warnings(row: dict[str, Any]) -> list[str]:
    """Runs without the phase compared, energy ≤ 0 on a net basis, loaded baselines."""
    w = []
    if row.get("phase_missing"):
        gone = row["phase_missing"]
        w.append(f": {_plural(len(gone), 'run')} ({_runs_text(gone)}) had no phase "
                 f"{row['phase']!r}: left out of its figures")
    if row.get("not_positive"):
        low = row["not_positive"]
        w.append(f": {_plural(len(low), 'run')} ({_runs_text(low)}) "
                 f"{'has' if len(low) == 1 else 'have'} {row['basis']} energy ≤ 0 (an idle "
                 "baseline that drew at least what the run did: it was not idle); relative "
                 "differences of such means are not shown")
    loaded = row.get("baselines_under_load") or []
    if loaded:
        w.append(f": the idle baseline of {_plural(len(loaded), 'run')} "
                 f"({_runs_text(loaded)}) was measured while other processes kept the machine "
                 "busy: its idle power is overstated and net energy understated")
    return w


def _method_warnings(row: dict[str, Any]) -> list[str]:
    """Energy a model estimated, whole or in part."""
    w = []
    for kind, method in row["methods"].items():
        if "model" in method:
            w.append(f": {kind} energy is estimated by a model, not measured")
        elif "mixed" in method:
            w.append(f": {kind} energy is partly estimated by a model (a channel's source "
                     "stopped answering; see each report's estimated_j)")
    return w


def _left_out_warnings(row: dict[str, Any]) -> list[str]:
    """Runs left out or replaced: retried attempts, duplicates, nested runs, parents."""
    w = []
    if row.get("retried_excluded"):
        w.append(f": {_plural(row['retried_excluded'], 'attempt')} of a sweep's runs that "
                 "did not complete left out: a later attempt of the same run completed (the "
                 "sweep was resumed)")
    if row["duplicates_dropped"]:
        w.append(f": {_plural(row['duplicates_dropped'], 'duplicate run')} dropped (a run "
                 "reached twice counts once)")
    if row["nested_excluded"]:
        w.append(f": {_plural(row['nested_excluded'], 'nested run')} left out (measured "
                 "inside a run compared here, they are part of it; --nested compares them "
                 "instead)")
    if row["parents_replaced"]:
        w.append(f": {_plural(row['parents_replaced'], 'run')} compared through the runs "
                 "nested in them (--nested)")
    return w


def _target_warnings(row: dict[str, Any]) -> list[str]:
    """Runs that did not reach the target; figures taken from nested runs; target notes."""
    if "target" not in row:
        return []
    w = []
    reached, n = row["target_reached"], row["n"]
    if reached < n:
        w.append(f": {reached} of {_plural(n, 'run')} reached {row['target']}")
    nested = [note for note in row["target_notes"] if note.startswith("from nested run")]
    if nested:  # one line for them all (the JSON rows keep each note)
        w.append(f": {row['target']}: for {_plural(len(nested), 'run')}, from the run nested "
                 "in each (the script's own measure() logged the metric), plus what each "
                 "spent before its nested run started")
    w += [f": {row['target']}: {note}" for note in row["target_notes"] if note not in nested]
    return w


def comparison_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every warning of :func:`compare` rows once, in order: runs not completed, too few runs,
    noisy energy, differences that are not significant, groups mixing regions, PUE, carbon
    bases, hardware, hosts, CPU energy models or runs with and without an idle baseline,
    groups estimated with different CPU models, energy kinds measured by different methods,
    estimated energy,
    duplicates dropped and nested runs left out."""
    return list(dict.fromkeys(w for row in rows for w in row.get("warnings", ())))
