"""A methods paragraph for a paper: how the runs given were measured, built from their reports
alone (never from the machine reading them): hardware, the method behind each energy figure
(hardware counter, integrated power, or a model's estimate with its TDP and where that came
from), the sampling interval, the carbon inputs, the PUE, the measurement's own overhead, the
runs and groups (warm-up runs excluded) and the statistics, and a citation of energymeter.

Where the runs differ (methods, hardware, regions, intervals, versions) the paragraph says so
instead of describing one of them; an estimated figure is called estimated.

>>> from energymeter.analysis import find_runs
>>> from energymeter.analysis.cite import methods_paragraph
>>> print(methods_paragraph(find_runs(["runs/dense", "runs/sparse"]), "latex"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from ..report.tables import latex_comment, latex_escape, markdown_escape
from ..stats import ALPHA, CONFIDENCE
from .compare import MIN_RUNS
from .groups import group_runs

if TYPE_CHECKING:
    from ..report import Report

#: The formats of :func:`methods_paragraph` (``bibtex``: the citation entry alone).
CITE_FORMATS = ("text", "markdown", "latex", "bibtex")

#: energymeter as software to cite: the fields of ``CITATION.cff`` at the repository's root
#: (tests/test_cite.py checks that the two agree). No URL: none is published yet.
CITATION: Mapping[str, str] = {
    "title": "energymeter",
    "authors": "energymeter developers",
    "license": "MIT",
    "key": "energymeter",
    "description": "measures the energy, power and carbon emissions of computations",
}

_CITE = "\ue000"  # where the citation goes; replaced after the text is escaped

_KIND_NAMES = {"cpu": "CPU package", "dram": "DRAM", "gpu": "GPU", "soc": "SoC",
               "psys": "platform (psys)"}
_SOURCE_NAMES = {"rapl": "RAPL energy counters (Linux powercap)",
                 "nvml": "cumulative energy counters read through NVIDIA's NVML"}
_BASIS = {"generation": "generation-based", "consumption": "consumption-based"}
_REGION_SOURCES = {"timezone": "the region inferred from the system time zone",
                   "default": "the world average, as no region was set"}


# -- small helpers -----------------------------------------------------------------------------
def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _and(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _float(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, a boolean, or too large)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _num(value: Any) -> str:
    number = _float(value)
    return str(value) if number is None else f"{number:.4g}"


def _counted(values: Iterable[str]) -> dict[str, int]:
    """Each distinct value with how many runs have it, most common first."""
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _one_or_many(values: Mapping[str, int], total: int) -> str:
    """``value`` when all runs share it, else ``a (3 runs) or b (2 runs)``."""
    if len(values) == 1:
        return next(iter(values))
    shown = [f"{v} ({_plural(n, 'run')})" for v, n in values.items()]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2g} %"


# -- facts from the reports --------------------------------------------------------------------
def _hardware(report: Report) -> str:
    """``2 × Intel Xeon Gold 6248 CPUs (80 logical CPUs) and 4 × NVIDIA A100 GPUs``."""
    parts = []
    for kind, word in (("cpu", "CPU"), ("gpu", "GPU"), ("soc", "SoC")):
        devices = _counted(c.channel.device or f"unidentified {word}" for c in report.channels
                           if c.channel.kind == kind and not c.channel.is_subzone)
        if kind == "cpu" and devices and all(c.channel.method == "model"
                                             for c in report.channels
                                             if c.channel.kind == "cpu"):
            probes = report.host.get("probes")
            packages = next((p.get("packages") for p in probes
                             if isinstance(p, Mapping) and p.get("source") == "model"),
                            None) if isinstance(probes, list) else None
            if isinstance(packages, int) and 1 < packages < 10**6:
                devices = {d: packages for d in devices}
        for device, n in devices.items():
            text = f"{n} × {device} {word}s" if n > 1 else f"{device} {word}"
            if kind == "cpu" and isinstance(report.host.get("logical_cpus"), int):
                text += f" ({_plural(report.host['logical_cpus'], 'logical CPU')})"
            parts.append(text)
    return _and(parts) or "hardware without an energy channel"


def _tdp_source(meta: Mapping[str, Any], logical_cpus: Any) -> str:
    source = str(meta.get("tdp_source", "unknown"))
    tdp = meta.get("tdp_w")
    if source == "setting":
        return "set by the experimenter (the cpu_tdp_w setting)"
    if source.startswith("default"):
        per_cpu = ""
        if _float(tdp) is not None and isinstance(logical_cpus, int) and logical_cpus > 0:
            per_cpu = f" of {_float(tdp) / logical_cpus:.3g} W per logical CPU"
        why = ("on a virtual machine, whose share of the host's processor is unknown"
               if "VM" in source else "as the CPU model is not in its TDP table")
        return f"energymeter's default{per_cpu}, {why}"
    if source.startswith("table:"):
        name = source[len("table:"):].replace(" (VM share)", "")
        text = f"the TDP of {name} in energymeter's CPU table (derived from CodeCarbon's)"
        if source.endswith("(VM share)"):
            text += ", scaled to the virtual machine's share of the processor's threads"
        return text
    return f"source {source}"


def _model_text(runs: Sequence[Report]) -> str:
    """What the estimated CPU channels of ``runs`` assumed: TDP, its source, idle power."""
    assumptions = _counted(
        f"a TDP of {_num(c.channel.meta.get('tdp_w', '?'))} W "
        f"({_tdp_source(c.channel.meta, r.host.get('logical_cpus'))})"
        + (f" and an idle power of {_pct(c.channel.meta['idle_w'] / c.channel.meta['tdp_w'])} "
           "of TDP" if _float(c.channel.meta.get("idle_w")) is not None
           and (_float(c.channel.meta.get("tdp_w")) or 0) > 0 else "")
        for r in runs for c in r.channels
        if c.channel.kind == "cpu" and c.channel.method == "model" and not c.channel.is_subzone)
    return ("CPU energy was not measured: no CPU energy counter could be read, so it was "
            "estimated by energymeter's model as idle power + (TDP − idle power) × CPU "
            "utilisation (from /proc/stat), with "
            + _one_or_many(assumptions, len(runs))
            + "; such an estimate can differ substantially from the real consumption")


def _method_text(kinds: Sequence[str], method: str, source: str,
                 runs: Sequence[Report]) -> str:
    names = _and([_KIND_NAMES.get(k, k) for k in kinds])
    verb = "was" if len(kinds) == 1 else "were"
    if method == "counter":
        where = _SOURCE_NAMES.get(source, f"hardware energy counters ({source})")
        return f"{names} energy {verb} read from {where}"
    if method == "integrated":
        periods = _counted(f"{c.channel.resolution_s:.3g} s" for r in runs for c in r.channels
                           if c.channel.kind in kinds and c.channel.method == "integrated"
                           and c.channel.resolution_s)
        every = f" every {_one_or_many(periods, len(runs))}" if periods else ""
        via = "NVIDIA's NVML" if source == "nvml" else source or "the driver"
        return (f"{names} energy {verb} obtained by polling power through {via}{every} "
                "and integrating it over time (trapezoid rule)")
    if method == "mixed":
        return _mixed_text(kinds, runs)
    if kinds == ["cpu"]:
        return _model_text(runs)
    return f"{names} energy {verb} estimated by a model ({source}), not measured"


def _mixed_text(kinds: Sequence[str], runs: Sequence[Report]) -> str:
    """How much of the energy of channels measured only in part was estimated."""
    parts = [(r, c) for r in runs for c in r.channels
             if c.channel.kind in kinds and c.channel.method == "mixed"]
    shares = [s for _, c in parts if (s := c.estimated_share) is not None]
    with_part = len({r.run_id for r, _ in parts})
    names = _and([_KIND_NAMES.get(k, k) for k in kinds])
    spread = (f"{_pct(min(shares))} to {_pct(max(shares))}" if len(set(shares)) > 1
              else _pct(shares[0]) if shares else "part")
    measured = sorted({str(c.to_dict().get("measured_method") or "counter") for _, c in parts})
    return (f"in {_plural(with_part, 'run')}, {names} energy was measured "
            f"({_and(measured)}) for part of the run and estimated for the rest "
            f"({spread} of it), after its energy source stopped answering (the reports mark "
            "such channels 'mixed' and give the estimated joules)")


def _method_label(methods: str) -> str:
    """``counter:rapl+model:model`` as ``hardware counter (rapl) and estimated (model)``."""
    words = {"counter": "hardware counter", "integrated": "integrated power",
             "model": "estimated", "mixed": "partly measured, partly estimated"}
    return _and([f"{words.get(m, m)} ({s})" if s and s != m else words.get(m, m)
                 for m, _, s in (p.partition(":") for p in methods.split("+"))])


def _methods(runs: Sequence[Report]) -> list[str]:
    """Sentences: how each energy kind was obtained (and where runs differ in it)."""
    kinds = [k for k in _KIND_NAMES if any(c.channel.kind == k and not c.channel.is_subzone
                                           for r in runs for c in r.channels)]
    how: dict[tuple[str, str], list[str]] = {}  # (method, source) -> kinds, in kind order
    sentences = []
    for kind in kinds:
        per_run = _counted("+".join(sorted({f"{c.channel.method}:{c.channel.source}"
                                             for c in r.channels if c.channel.kind == kind
                                             and not c.channel.is_subzone})) or "none"
                           for r in runs)
        if len(per_run) > 1:
            shown = ", ".join(f"{_method_label(m)} ({_plural(n, 'run')})"
                              for m, n in per_run.items())
            sentences.append(f"{_KIND_NAMES[kind]} energy was obtained by different methods "
                             f"across runs ({shown}): those figures are not directly "
                             "comparable")
        for pair in {p for m in per_run for p in m.split("+") if p != "none"}:
            method, _, source = pair.partition(":")
            how.setdefault((method, source), []).append(kind)
    order = {"counter": 0, "integrated": 1, "model": 2}
    described = [_method_text(sorted(ks, key=list(_KIND_NAMES).index), m, s, runs)
                 for (m, s), ks in sorted(how.items(), key=lambda kv: order.get(kv[0][0], 3))]
    if described:
        sentences.insert(0, "; ".join(described))
    if "psys" in kinds:
        sentences.append("platform (psys) energy was recorded beside the others but is not "
                         "part of the totals, which it already contains")
    missing = [n for k, n in (("dram", "DRAM"), ("gpu", "GPUs")) if k not in kinds]
    sentences.append("the figures include no energy of "
                     + (" or ".join(missing) + ", nor of " if missing else "")
                     + "storage, networking, fans or power-supply losses")
    return sentences


def _attribution_rules(runs: Sequence[Report]) -> str:
    """Where the attributed figures departed from the per-interval rule: runs too short for
    it (one run-wide ratio), CPU time sampling missed (placed at the end, or spread)."""
    blocks = [r.attribution for r in runs if r.attribution]
    parts = []
    short = sum(1 for b in blocks if "run-wide" in str(b.get("cpu_rule", "")))
    if short:
        parts.append(f"for {_plural(short, 'run')} shorter than three such intervals, one "
                     "ratio over the whole run was used")
    placed = sum(1 for b in blocks if (_float(b.get("cpu_time_placed_at_end_s")) or 0) > 0)
    scales = [s for b in blocks if "run-wide" not in str(b.get("cpu_rule", ""))
              and (s := _float(b.get("cpu_time_scale"))) and s > 1.0]
    if placed:
        parts.append(f"for {_plural(placed, 'run')} the CPU time of the command's last "
                     "interval, which sampling cannot see, was taken from the kernel's "
                     "account")
    if scales:
        parts.append(f"CPU time of processes too short-lived to be sampled (from the kernel's "
                     f"account) was spread over {_plural(len(scales), 'run')} in proportion to "
                     f"what was sampled (up to ×{max(scales):.2f})")
    return ("; " + "; ".join(parts)) if parts else ""


def _basis(runs: Sequence[Report], basis: str) -> str:
    """What the figures are of: the whole machine's energy, the runs' own share, or net of
    the idle baseline; and, for the machine's, how busy other processes kept it."""
    from ..report.bases import energy_on

    lacking = [r for r in runs if energy_on(r, basis) is None]
    others = [v for r in runs if (v := _float((r.cpu_attribution or {}).get("other_share")))
              is not None]
    busy = (f"; other processes used {_pct(sum(others) / len(others))} of the machine's busy "
            f"CPU time on average (at most {_pct(max(others))})" if others else "")
    if basis == "machine":
        own = any(r.energy_on("attributed") is not None for r in runs)
        return ("the energy figures are those of the whole machine, including any other load "
                "on it" + busy + ("; the reports also give each run's own share "
                                  "(attributed energy), not used here" if own else ""))
    if basis == "attributed":
        gpus = any(c.channel.kind == "gpu" for r in runs for c in r.channels)
        gauges = _counted(_num(v) + " s" for r in runs
                          if isinstance(v := r.settings.get("gauge_interval_s"), (int, float)))
        every = f" (every {_one_or_many(gauges, len(runs))})" if gauges else ""
        text = ("the energy figures are each run's own share of the energy measured "
                f"(attributed): per interval between two reads of the process gauges{every}, "
                "the CPU, DRAM and platform energy "
                "times the share of the machine's busy CPU time used by the run's processes "
                "(/proc), and intervals in which the machine was otherwise idle counted whole"
                + ("; each GPU's energy times the run's share of its SM utilisation (NVML "
                   "per-process samples), else of its memory, a GPU with no other process "
                   "counted whole" if gpus else "") + busy + _attribution_rules(runs))
    else:
        durations = _counted(_num(r.baseline.get("duration_s")) + " s" for r in runs
                             if r.baseline and _float(r.baseline.get("duration_s")) is not None)
        loaded = sum(1 for r in runs if (r.baseline or {}).get("under_load"))
        text = ("the energy figures are net of idle: each run's energy minus the idle power "
                "of the machine, measured before it"
                + (f" over {_one_or_many(durations, len(runs))}" if durations else "")
                + ", times the run's duration"
                + (f"; for {_plural(loaded, 'run')} the baseline was measured while other "
                   "processes kept the machine busy, so its idle power is overstated and the "
                   "net energy understated" if loaded else ""))
    if lacking:
        text += (f"; {_plural(len(lacking), 'run')} had no such figure and "
                 f"{'is' if len(lacking) == 1 else 'are'} counted with the whole machine's "
                 "energy")
    return text


def _interval(runs: Sequence[Report]) -> str | None:
    values = _counted(_num(v) + " s" for r in runs
                      if isinstance(v := r.settings.get("interval_s",
                                                        r.overhead.get("interval_s")),
                                    (int, float)))
    if not values:
        return None
    return ("every channel was read at the start and end of each run, which give its totals, "
            f"and every {_one_or_many(values, len(runs))} in between for the power time series "
            "and peaks")


def _carbon(runs: Sequence[Report]) -> list[str]:
    with_carbon = [r for r in runs if r.carbon]
    if not with_carbon:
        return []

    def setting(r: Report) -> str:
        cb = r.carbon or {}
        name = cb.get("name")
        where = f"{name} ({cb.get('region')})" if name and name != cb.get("region") \
            else str(cb.get("region"))
        basis = _BASIS.get(str(cb.get("basis")), cb.get("basis"))
        year = f" for {cb.get('year')}" if cb.get("year") else ""
        text = (f"{_num(cb.get('g_per_kwh'))} gCO2e/kWh, the "
                + (f"{basis} " if basis else "") + f"annual average{year} for {where}"
                + (f" from {cb.get('source')}" if cb.get("source") else ""))
        if cb.get("provider") not in (None, "table"):
            share = _float(cb.get("live_energy_share"))
            text += (f", taken live from {cb.get('provider')}"
                     + (f" for {_pct(share)} of the energy"
                        if share is not None and share < 1 else ""))
        origin = _REGION_SOURCES.get(str(cb.get("region_source")))
        if origin:
            text += f", {origin}"
        return text

    def pue(r: Report) -> str:
        value = (r.carbon or {}).get("pue")
        default = r.settings.get("origins", {}).get("pue") == "default" if isinstance(
            r.settings.get("origins"), Mapping) else False
        return _num(value) + (" (energymeter's default: no facility overhead)"
                              if default and value == 1.0 else "")

    def short(r: Report) -> str:
        cb = r.carbon or {}
        return (f"{_num(cb.get('g_per_kwh'))} gCO2e/kWh for {cb.get('region')} "
                f"({cb.get('basis')}, {cb.get('source')}, {cb.get('year')})")

    intensities = _counted(setting(r) for r in with_carbon)
    pues = _counted(pue(r) for r in with_carbon)
    sentences = []
    if len(intensities) > 1:
        intensities = _counted(short(r) for r in with_carbon)
    if len(intensities) == 1 and len(pues) == 1:
        sentences.append("emissions were computed as energy × PUE × the carbon intensity of "
                         f"electricity, with a PUE of {next(iter(pues))} and "
                         f"{next(iter(intensities))}")
    else:
        sentences.append("emissions were computed as energy × PUE × the carbon intensity of "
                         "electricity, but the runs differ in these inputs: a PUE of "
                         f"{_one_or_many(pues, len(with_carbon))}; an intensity of "
                         f"{_one_or_many(intensities, len(with_carbon))}; their emissions "
                         "reflect the grid and facility as well as the computation")
    if len(with_carbon) < len(runs):
        sentences.append(f"{_plural(len(runs) - len(with_carbon), 'run')} "
                         f"{'has' if len(runs) - len(with_carbon) == 1 else 'have'} no "
                         "emissions figure")
    return sentences


def _overhead(runs: Sequence[Report]) -> str | None:
    shares = [v for r in runs
              if (v := _float(r.overhead.get("sampler_cpu_fraction"))) is not None]
    if not shares:
        return None
    mean = sum(shares) / len(shares)
    most = f" (at most {_pct(max(shares))})" if len(shares) > 1 else ""
    return ("the measurement itself (energymeter's sampling thread) used "
            f"{_pct(mean)} of one CPU core{' on average' if len(shares) > 1 else ''}{most}, "
            "within the energy measured")


def _baseline(runs: Sequence[Report], basis: str = "machine") -> str | None:
    with_baseline = [r for r in runs if r.baseline]
    if not with_baseline or basis == "net":
        return None
    durations = _counted(_num(r.baseline.get("duration_s")) + " s" for r in with_baseline
                         if r.baseline and _float(r.baseline.get("duration_s")) is not None)
    measured = f", measured over {_one_or_many(durations, len(runs))}," if durations else ""
    return (f"an idle baseline of the machine{measured} was recorded with "
            f"{'the run' if len(runs) == 1 else _plural(len(with_baseline), 'run')}: the "
            f"figures are {'gross energy' if basis == 'machine' else 'not net of it'}; the "
            "reports also give idle and net energy")


def _versions(runs: Sequence[Report]) -> dict[str, int]:
    return _counted(str(r.software.get("energymeter")) if r.software.get("energymeter")
                    else "?" for r in runs)


def _runs_text(groups: Sequence[Any], by: str) -> tuple[str, list[str]]:
    """What was measured (``5 runs of dense and 5 of sparse``) and sentences on warm-up,
    statuses, duplicates and nested runs."""
    runs = [r for g in groups for r in g.runs]
    notes = []
    if len(groups) == 1:
        g = groups[0]
        what = (f"one run ({g.runs[0].name})" if len(g.runs) == 1
                else f"{len(g.runs)} runs ({g.label})")
    else:
        what = (f"{len(runs)} runs in {len(groups)} groups ("
                + "; ".join(f"{g.label}: n = {len(g.runs)}" for g in groups) + ")")
    warm = [len(g.warmup_runs) for g in groups]
    if any(warm):
        if len(set(warm)) == 1 and len(groups) > 1:
            notes.append(f"in each group, {_plural(warm[0], 'warm-up run')} ran first and "
                         f"{'was' if warm[0] == 1 else 'were'} excluded from the figures")
        else:
            notes.append(f"{_plural(sum(warm), 'warm-up run')} before "
                         f"{'them' if len(runs) > 1 else 'it'} "
                         f"{'was' if sum(warm) == 1 else 'were'} measured but excluded "
                         "from the figures")
    statuses = _counted(r.status for r in runs if r.status != "completed")
    if statuses:
        shown = _and([f"{n} {s}" for s, n in statuses.items()])
        notes.append(f"not every run completed ({shown}): the figures of those cover only "
                     "the part of the work they did")
    if sum(g.nested_excluded for g in groups):
        notes.append(f"measurements nested inside {'the run' if len(runs) == 1 else 'these runs'}"
                     " (measure() within energymeter run) are part of "
                     f"{'it' if len(runs) == 1 else 'them'} and not counted separately")
    return what, notes


def _statistics(groups: Sequence[Any]) -> str | None:
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    sizes = [len(g.runs) for g in groups]
    if len(groups) == 1 and sizes[0] == 1:
        return "the figures come from a single run, so their variability is not known"
    text = (f"we report the mean ± the half-width of the {level} confidence interval of the "
            "mean (Student's t, n − 1 degrees of freedom) over the runs of each group")
    if len(groups) == 1:
        text = text.replace(" of each group", "")
    if len(groups) > 1:
        first = groups[0].label
        text += (f", and each group's difference from {first} as the ratio of the means − 1 "
                 f"with its {level} confidence interval (delta method on the log ratio), "
                 f"tested with Welch's two-sided t-test (significance level {ALPHA:.2g})")
    if any(1 < n < MIN_RUNS for n in sizes) or (len(groups) > 1 and min(sizes) < 2):
        text += (f"; with fewer than {MIN_RUNS} runs in a group, its interval is wide and "
                 "its test weak")
    return text


# -- assembling --------------------------------------------------------------------------------
def cite_facts(runs: Sequence[Report | tuple[str | None, Report]], *, by: str = "auto",
               nested: bool = False) -> dict[str, Any]:
    """The facts the paragraph states, as plain data: ``groups`` (label, n, warm-up runs),
    ``runs`` (compared), ``versions``, ``hardware``, ``methods`` (per kind: method:source ->
    number of runs), ``intervals_s``, ``carbon`` (one entry per distinct setting) and
    ``overhead`` (sampler CPU fraction per run). Grouped as :func:`~energymeter.analysis.
    compare` groups them (``by``, ``nested``); raises :class:`ReportError` without runs."""
    groups = _groups(runs, by, nested)
    compared = [r for g in groups for r in g.runs]
    methods: dict[str, dict[str, int]] = {}
    for kind in _KIND_NAMES:
        found = _counted("+".join(sorted({f"{c.channel.method}:{c.channel.source}"
                                          for c in r.channels if c.channel.kind == kind
                                          and not c.channel.is_subzone}))
                         for r in compared)
        found.pop("", None)
        if found:
            methods[kind] = found
    return {
        "groups": [{"label": g.label, "n": len(g.runs), "warmup": len(g.warmup_runs)}
                   for g in groups],
        "runs": len(compared),
        "versions": _versions(compared),
        "hardware": _counted(_hardware(r) for r in compared),
        "methods": methods,
        "intervals_s": _counted(_num(r.settings.get("interval_s")) for r in compared
                                if r.settings.get("interval_s") is not None),
        "carbon": [dict(c) for c in {tuple(sorted((k, str(v)) for k, v in r.carbon.items()
                                                  if k in ("region", "g_per_kwh", "basis",
                                                           "source", "year", "pue",
                                                           "provider"))): None
                                     for r in compared if r.carbon}],
        "overhead": [r.overhead.get("sampler_cpu_fraction") for r in compared],
    }


def _groups(runs: Sequence[Report | tuple[str | None, Report]], by: str, nested: bool
            ) -> list[Any]:
    if not runs:
        raise ReportError("no run given; pass run directories, report.json files or an out "
                          "folder")
    grouping = group_runs(runs, by=by, nested=nested)
    groups = [g for g in grouping.groups if g.runs]
    if not groups:
        raise ReportError("every run given is a warm-up run: there is no measured run to "
                          "describe")
    return groups


def _verb(runs: Sequence[Report]) -> str:
    """What was done to the energy of ``runs``: ``measured``, ``estimated`` (every figure a
    model's), or ``measured (GPU) and estimated (CPU)``."""
    measured: list[str] = []
    estimated: list[str] = []
    for kind, name in _KIND_NAMES.items():
        methods = {c.channel.method for r in runs for c in r.channels
                   if c.channel.kind == kind and not c.channel.is_subzone}
        if not methods or kind == "psys":
            continue
        if methods <= {"model"}:
            estimated.append(name)
        elif methods & {"model", "mixed"}:
            estimated.append(f"part of the {name}")
            measured.append(name)
        else:
            measured.append(name)
    if not estimated:
        return "measured"
    if not measured:
        return "estimated"
    return f"measured ({_and(measured)}) and estimated ({_and(estimated)})"


def _spread(groups: Sequence[Any], basis: str) -> str | None:
    """The spread observed: each group's coefficient of variation of its total energy."""
    sized = [g for g in groups if len(g.runs) >= 2]
    if not sized:
        return None
    cvs = []
    for g in sized:
        values = [e.total_j for r in g.runs if (e := r.energy_on(basis) or
                                                r.energy_on("machine")) is not None]
        mean = sum(values) / len(values)
        if mean <= 0:
            continue
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        cvs.append((g.label, std / mean))
    if not cvs:
        return None
    if len(cvs) == 1:
        return (f"the total energy varied between runs with a coefficient of variation of "
                f"{_pct(cvs[0][1])}")
    shown = "; ".join(f"{label}: {_pct(cv)}" for label, cv in cvs)
    return ("the total energy varied between the runs of each group with a coefficient of "
            f"variation of {shown}")


def _target(runs: Sequence[Report | tuple[str | None, Report]], target: Any, by: str,
            nested: bool) -> str | None:
    """How the energy to a target was obtained, and how many runs reached it."""
    from .target import as_target, target_results, target_text

    parsed = as_target(target)
    results = target_results(runs, parsed, by=by, nested=nested)
    reached = sum(1 for r in results["runs"] if r["reached"] and not r.get("warmup"))
    total = sum(1 for r in results["runs"] if not r.get("warmup"))
    return (f"the energy to reach {target_text(parsed)} is the energy used until the first "
            f"logged value of {parsed[0]} that reached it, interpolated linearly between that "
            "log and the previous one (metric, time and energy taken to move linearly between "
            f"logs); {reached} of {_plural(total, 'run')} reached it, and the means are over "
            "those that did")


def _sentences(runs: Sequence[Report | tuple[str | None, Report]], by: str,
               nested: bool, basis: str = "machine", target: Any = None) -> list[str]:
    groups = _groups(runs, by, nested)
    compared = [r for g in groups for r in g.runs]
    versions = _versions(compared)
    known = {v: n for v, n in versions.items() if v != "?"}
    if not known:
        tool = "energymeter (version not recorded)"
    elif len(versions) == 1:
        tool = f"energymeter {next(iter(known))}"
    else:
        tool = "energymeter " + _one_or_many({(v if v != "?" else "of unrecorded version"): n
                                              for v, n in versions.items()}, len(compared))
    what, notes = _runs_text(groups, by)
    hardware = _counted(_hardware(r) for r in compared)
    if len(hardware) == 1:
        where = f"hardware: {next(iter(hardware))}"
    else:
        where = ("hardware differs between runs: "
                 + "; ".join(f"{h} ({_plural(n, 'run')})" for h, n in hardware.items()))
    sentences = [f"We {_verb(compared)} the energy of {what} with {tool}{_CITE}, which reads "
                 "hardware energy counters where the machine exposes them and otherwise estimates "
                 "energy from a model, recording for each figure how it was obtained",
                 *notes, where, *_methods(compared), _basis(compared, basis)]
    sentences += [s for s in (_interval(compared), *_carbon(compared), _overhead(compared),
                              _baseline(compared, basis), _statistics(groups),
                              _spread(groups, basis),
                              _target(runs, target, by, nested) if target is not None
                              else None) if s]
    return [s[:1].upper() + s[1:] + "." for s in sentences]


def reference(version: str | None = None) -> str:
    """energymeter as a reference in plain text (``version``: the one used, when known)."""
    shown = f" (version {version})" if version else ""
    return (f"{CITATION['authors']}. {CITATION['title']}{shown} [Computer software]. "
            f"{CITATION['license']} License.")


def bibtex(version: str | None = None) -> str:
    """A BibTeX (biblatex ``@software``) entry for energymeter, key ``energymeter``, with
    ``version`` when known; no URL or year (none is published)."""
    fields = [("author", "{" + CITATION["authors"] + "}"), ("title", CITATION["title"])]
    if version:
        fields.append(("version", version))
    fields.append(("note", f"{CITATION['license']} License; "
                           f"{CITATION['description']}"))
    body = ",\n".join(f"  {k:<7} = {{{v}}}" for k, v in fields)
    return f"@software{{{CITATION['key']},\n{body}\n}}\n"


def methods_paragraph(runs: Sequence[Report | tuple[str | None, Report]], fmt: str = "text",
                      *, by: str = "auto", nested: bool = False, basis: str = "machine",
                      target: Any = None) -> str:
    """A methods paragraph describing how ``runs`` (reports, or ``(source, report)`` pairs
    from :func:`~energymeter.analysis.find_runs`) were measured, with a citation of
    energymeter, as ``text`` (``[1]`` and the reference under it), ``markdown`` (a footnote),
    ``latex`` (``\\cite{energymeter}``, special characters escaped, and the BibTeX entry as
    comment lines) or ``bibtex`` (the entry alone). Runs are grouped as
    :func:`~energymeter.analysis.compare` groups them (``by``, ``nested``). ``basis``: the
    energy basis of the figures the paragraph accompanies (machine, attributed, net), which
    it describes; ``target`` (``"val_acc=0.9"``): the energy-to-target figures a table uses,
    how they are obtained and how many runs reached it.

    Raises :class:`ReportError` for an unknown ``fmt`` or when no measured run is given, and
    :class:`~energymeter.errors.ConfigError` for an unknown ``basis``."""
    from ..report.bases import check_basis

    check_basis(basis)
    if fmt not in CITE_FORMATS:
        raise ReportError(f"format {fmt!r} unknown; accepted: {', '.join(CITE_FORMATS)}")
    groups = _groups(runs, by, nested)
    versions = [v for v in _versions([r for g in groups for r in g.runs]) if v != "?"]
    version = versions[0] if len(versions) == 1 else None
    if fmt == "bibtex":
        return bibtex(version)
    text = " ".join(_sentences(runs, by, nested, basis, target))
    render: dict[str, Callable[[], str]] = {
        "text": lambda: text.replace(_CITE, " [1]") + "\n\n[1] " + reference(version) + "\n",
        "markdown": lambda: (markdown_escape(text).replace(_CITE, "[^energymeter]")
                             + "\n\n[^energymeter]: " + markdown_escape(reference(version))
                             + "\n"),
        "latex": lambda: (latex_escape(text).replace("CO2e", r"CO\textsubscript{2}e")
                          .replace(_CITE, r"~\cite{" + CITATION["key"] + "}")
                          + "\n\n" + latex_comment("BibTeX entry for your .bib file (remove "
                                                   "the leading '% '):\n"
                                                   + bibtex(version).rstrip("\n"))
                          + "\n"),
    }
    return render[fmt]()
