"""Estimated CPU energy for machines without a readable energy counter (VMs, CI, containers).

This probe is opened by discovery only when no other probe measures a ``cpu`` channel. It never
measures anything: it *models* package power from the system-wide CPU utilisation,

    power_w = idle_w + (tdp_w - idle_w) * utilisation

and integrates that power between successive reads. Its channel carries ``method="model"`` and it
records one warning saying so, so that a report never shows the number as if it were measured.

Inputs of the model
-------------------
* ``tdp_w``: the Thermal Design Power of the CPU model named in ``/proc/cpuinfo`` ("model name"),
  looked up in the table shipped as ``energymeter/data/cpu_tdp_codecarbon.csv`` (from CodeCarbon,
  MIT licence, see ``energymeter/data/NOTICE.md``), times the number of physical packages
  (distinct ``physical id`` values). When the model is not in the table:
  :data:`DEFAULT_W_PER_LOGICAL_CPU` × the number of logical CPUs.
* ``idle_w``: :data:`IDLE_FRACTION` × ``tdp_w``.
* ``utilisation``: busy / total CPU time over the interval, from ``psutil.cpu_times()`` deltas
  (``/proc/stat`` on Linux); busy = total − idle − iowait. ``guest``/``guest_nice`` are left out
  of the total because the kernel already counts them in ``user``/``nice``. ``steal`` counts as
  busy, as in ``psutil.cpu_percent``.

Integration
-----------
Power is linear in utilisation, so the mean power over an interval is the power at the interval's
mean utilisation, and the cumulative time counters give that mean exactly:
``u = Δbusy / Δtotal``. The energy of an interval is therefore
``(idle_w + (tdp_w − idle_w) × u) × dt`` — exact for the model, whatever happened inside the
interval. (A trapezoid of two instantaneous powers would need instantaneous utilisations, which do
not exist: utilisation is only defined over an interval.)

Virtual machines
----------------
On a VM (``hypervisor`` in the CPU flags) the table's TDP is the whole physical package, while
the guest has a few of its threads: charging it the whole package made the estimate jump ~30×
between a VM whose CPU is in the table and one whose CPU is not. The package TDP is therefore
scaled by the guest's share of the package's hardware threads, ``logical_cpus / threads``. The
package's thread count is known when the model name states its cores (AMD: "EPYC 7763 64-Core
Processor"; SMT-2 assumed: 128 threads); otherwise it cannot be known from inside the guest,
and the per-logical-CPU default applies, saying why. The ``cpu_tdp_w`` setting overrides all
of this with the full-load power the user knows (e.g. a cloud provider's per-vCPU figure).

Limits, stated in the docs and the warning: TDP is a thermal design figure, not a measured power;
real package power at full load can be above or below it; DRAM is not modelled.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .._lazy import LazyLogger, LazyPattern
from .base import Channel, DiscoveryContext, Probe, Unavailable
from .proc import (
    ProcStatTimes,
    count_packages,
    cpu_model_name,
    cpu_seconds,
    read_cpuinfo,
    under_hypervisor,
)

log = LazyLogger("energymeter")

# -- constants of the model --------------------------------------------------------------------

#: Shipped TDP table (package ``energymeter.data``), loaded lazily at discovery, never at import.
TDP_TABLE_RESOURCE = "cpu_tdp_codecarbon.csv"

#: Watts per logical CPU when the CPU model is not in the table. A rough assumption: TDP divided
#: by hardware threads is 2-6 W for current parts (Xeon Gold 6248: 150 W / 40 = 3.8 W;
#: EPYC 7763: 280 W / 128 = 2.2 W; Ryzen 9 5950X: 105 W / 32 = 3.3 W; Core i7-8700: 65 W / 12
#: = 5.4 W; Core i7-1165G7: 28 W / 8 = 3.5 W), and Cloud Carbon Footprint's coefficient for a
#: fully busy AWS vCPU is 3.5 W. 4 W sits in the middle; on a cloud VM it scales with the vCPUs
#: the guest was given rather than with the (unknown) size of the host's package.
DEFAULT_W_PER_LOGICAL_CPU = 4.0

#: Idle power as a fraction of TDP. A rough assumption: idle package power is commonly 20-40 % of
#: TDP on servers (Cloud Carbon Footprint's AWS coefficients give 0.74 W idle / 3.5 W busy per
#: vCPU = 21 %; SPECpower_ssj2008 servers typically idle at 25-40 % of full-load power), lower on
#: laptops with deep C-states. 0.3 is the middle of the server range, where estimates are used most.
IDLE_FRACTION = 0.3

#: ``/proc/stat`` counts CPU time in USER_HZ ticks (1/100 s): utilisation over shorter windows is
#: noise. Reported as the channel's resolution so that such windows are flagged.
CPU_TIMES_RESOLUTION_S = 0.01
_STAT_MIN_GAP_NS = int(CPU_TIMES_RESOLUTION_S * 1e9)

# Vendor words at the start of a table name. Every table entry without one is an AMD part
# (Opteron/Phenom/Athlon numbers, A-series, FX, Sempron), except one ARMv8 line.
_VENDORS = ("intel", "amd", "apple")

# -- name normalisation ------------------------------------------------------------------------

_NORMALISE_STEPS: tuple[tuple[LazyPattern, str], ...] = (
    (LazyPattern(r"\((?:r|tm|c)\)|[®™©]"), ""),  # trademark marks ("FX(tm)-8350")
    (LazyPattern(r"\bcore2\b"), "core 2 "),  # "Core(TM)2 Duo" -> "core 2 duo"
    (LazyPattern(r"\([^)]*\)"), " "),  # "(OEM Only)", "(Cascadelake)", "(9M Cache, ...)"
    (LazyPattern(r"@?\s*\d+(?:\.\d+)?\s*[gm]hz\b"), " "),  # "@ 2.50GHz"
    (LazyPattern(r"\bwith\s+radeon\b.*$|\bradeon\s+r\d+\b.*$"), " "),  # "with Radeon Graphics"
    (LazyPattern(r",?\s*\d+\s+compute\s+cores\b.*$"), " "),  # "10 COMPUTE CORES 4C+6G"
    (LazyPattern(r"\b\d+(?:st|nd|rd|th)\s+gen(?:eration)?\b"), " "),  # "12th Gen"
    (LazyPattern(r"\b(?:\d+|dual|triple|quad|six|eight|ten|twelve|sixteen|hexa|octa)"
                r"[- ]cores?\b"), " "),  # "16-Core", "Eight-Core"
    (LazyPattern(r"\b(?:cpu|processor|apu|intel|amd|genuineintel|authenticamd)\b"), " "),
    (LazyPattern(r"[,\s]+"), " "),
)


_DIGIT_RUN = LazyPattern(r"\d+")
_CORES_IN_NAME = LazyPattern(r"\b(\d+)-Core\b", re.IGNORECASE)
#: Hardware threads per core assumed for a package whose name states its cores.
SMT_THREADS_PER_CORE = 2


def package_threads_from_name(model_name: str) -> int | None:
    """Hardware threads of the package named ``model_name`` when the name states its cores
    ("AMD EPYC 7763 64-Core Processor" -> 128, SMT-2 assumed), else None."""
    match = _CORES_IN_NAME.search(model_name)
    return int(match.group(1)) * SMT_THREADS_PER_CORE if match else None


def normalise_cpu_name(name: str) -> str:
    """Lower-case CPU model name without marks, frequency, core-count words and filler words.

    ``"Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"`` -> ``"xeon gold 6248"``;
    ``"AMD Ryzen 9 5950X 16-Core Processor"`` -> ``"ryzen 9 5950x"``. Applied identically to
    ``/proc/cpuinfo`` names and to table names, so that equal parts compare equal.
    """
    text = name.lower()
    for pattern, repl in _NORMALISE_STEPS:
        text = pattern.sub(repl, text)
    return text.strip()


def _vendor(name: str) -> str | None:
    low = name.lower()
    if "intel" in low:
        return "intel"
    if "amd" in low:
        return "amd"
    if "apple" in low:
        return "apple"
    return None


class TdpEntry(NamedTuple):
    name: str  # the table's own Name, as shipped
    tdp_w: float
    vendor: str


TdpTable = Mapping[tuple[str, ...], TdpEntry]


def _significant(tokens: tuple[str, ...]) -> bool:
    """An entry may match only if it names a model number (a token of >= 2 chars with a digit):
    family-only names ("xeon") would match any CPU of the family."""
    return any(len(t) >= 2 and any(ch.isdigit() for ch in t) for t in tokens)


def parse_tdp_table(text: str) -> dict[tuple[str, ...], TdpEntry]:
    """Index a ``Name,TDP`` CSV by normalised name tokens (first entry wins on duplicates)."""
    table: dict[tuple[str, ...], TdpEntry] = {}
    for row in csv.DictReader(io.StringIO(text)):
        name = (row.get("Name") or "").strip()
        try:
            tdp_w = float(row.get("TDP") or "")
        except ValueError:
            continue
        if not name or tdp_w <= 0:
            continue
        tokens = tuple(normalise_cpu_name(name).split())
        if not tokens or not _significant(tokens):
            continue
        first = name.split()[0].lower().strip('"')
        vendor = first if first in _VENDORS else "amd"
        table.setdefault(tokens, TdpEntry(name, tdp_w, vendor))
    return table


@functools.lru_cache(maxsize=1)
def _tdp_table_text() -> str:
    from ..data import read_text

    return read_text(TDP_TABLE_RESOURCE)


@functools.lru_cache(maxsize=1)
def load_tdp_table() -> dict[tuple[str, ...], TdpEntry]:
    """The whole shipped TDP table, indexed (about 45 ms: discovery uses
    :func:`_candidate_table` instead)."""
    return parse_tdp_table(_tdp_table_text())


def _candidate_table(tokens: tuple[str, ...]) -> dict[tuple[str, ...], TdpEntry]:
    """The part of the shipped table that can match ``tokens``.

    A match must contain a model-number token of the model name (see :func:`_significant`),
    so its raw line contains one of the model name's digit runs; only those lines are parsed
    and normalised. A model name without digits can match nothing."""
    digits = set(_DIGIT_RUN.findall(" ".join(tokens)))
    if not digits:
        return {}
    header, _, body = _tdp_table_text().partition("\n")
    lines = [line for line in body.splitlines() if any(d in line for d in digits)]
    return parse_tdp_table("\n".join([header, *lines]))


def match_tdp(model_name: str, table: TdpTable | None = None) -> TdpEntry | None:
    """The table entry for ``model_name``, or ``None``.

    An entry matches when its normalised name equals, or appears as a contiguous whole-token
    sequence in, the normalised model name; the longest match wins (most tokens, then most
    characters). Entries of another vendor never match (a bare Opteron "6238" must not match an
    Intel "Xeon Gold 6238").
    """
    tokens = tuple(normalise_cpu_name(model_name).split())
    if table is None:
        table = _candidate_table(tokens)
    vendor = _vendor(model_name)
    best: TdpEntry | None = None
    best_key = (0, 0)
    for start in range(len(tokens)):
        for end in range(len(tokens), start, -1):
            key = (end - start, sum(len(t) for t in tokens[start:end]))
            if key <= best_key:
                continue
            entry = table.get(tokens[start:end])
            if entry is None or (vendor is not None and entry.vendor != vendor):
                continue
            best, best_key = entry, key
    return best


# -- the probe ---------------------------------------------------------------------------------


def _busy_total_s(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds; steal counts as busy, as in ``psutil.cpu_percent``."""
    seconds = cpu_seconds(times)
    return seconds.busy_s + seconds.steal_s, seconds.total_s


class CpuModelProbe(Probe):
    """Estimated CPU energy: ``idle_w + (tdp_w - idle_w) × utilisation``, integrated over time.

    ``cpu_times``: callable returning a ``psutil.cpu_times()``-like named tuple (default
    ``psutil.cpu_times``); ``clock_ns``: monotonic clock in nanoseconds (default
    ``time.monotonic_ns``). Both are injectable for tests. ``why``: why no counter could be used,
    repeated in the warning. ``tdp_source``: ``"table:<Name>"`` or ``"default"``.
    """

    source = "model"
    may_block = False  # /proc/stat: read inline

    def __init__(
        self,
        tdp_w: float,
        idle_w: float,
        *,
        model_name: str = "unknown CPU",
        tdp_source: str = "default",
        why: str = "no CPU energy counter found",
        how: str = "",
        packages: int = 1,
        logical_cpus: int = 0,
        cpu_times: Callable[[], Any] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if tdp_w <= 0 or not 0 <= idle_w <= tdp_w:
            raise ValueError(f"need tdp_w > 0 and 0 <= idle_w <= tdp_w, got {tdp_w}, {idle_w}")
        self._stat: ProcStatTimes | None = None
        if cpu_times is None:
            try:  # one pread per boundary read on Linux
                self._stat = cpu_times = ProcStatTimes()
            except OSError:
                import psutil

                cpu_times = psutil.cpu_times
        self.tdp_w = float(tdp_w)
        self.idle_w = float(idle_w)
        self.model_name = model_name
        self.tdp_source = tdp_source
        self.why = why
        self.packages = packages
        self.logical_cpus = logical_cpus
        self._cpu_times = cpu_times
        self._clock_ns = clock_ns
        meta = {
            "tdp_w": self.tdp_w,
            "idle_w": self.idle_w,
            "tdp_source": tdp_source,
            "model_name": model_name,
        }
        channel = Channel(
            id="cpu0",
            kind="cpu",
            device=model_name,
            source="model",
            method="model",
            resolution_s=CPU_TIMES_RESOLUTION_S,
            meta=meta,
        )
        super().__init__((channel,))
        self._energy_j = 0.0
        self._utilisation = 0.0
        self._last_ns = self._stat_ns = clock_ns()
        self._last_busy_s, self._last_total_s = _busy_total_s(cpu_times())
        if not how:
            how = f"TDP {self.tdp_w:g} W from {tdp_source}"
        idle_pct = 100.0 * self.idle_w / self.tdp_w
        self.warn(
            f"CPU energy is ESTIMATED, not measured ({why}); model: {how}, "
            f"idle {idle_pct:.0f} % of TDP, utilisation from /proc/stat"
        )

    def _read(self) -> dict[str, float]:
        now_ns = self._clock_ns()
        # /proc/stat counts in 1/100 s ticks: a read within a tick of the last one could only
        # see noise, so it keeps the utilisation it has (as when no tick elapsed) and costs no
        # system call (phases entered and left in a tight loop).
        if now_ns - self._stat_ns >= _STAT_MIN_GAP_NS:
            self._stat_ns = now_ns
            busy_s, total_s = (self._stat.busy_total_s() if self._stat is not None
                               else _busy_total_s(self._cpu_times()))
            d_total = total_s - self._last_total_s
            d_busy = busy_s - self._last_busy_s
            if d_total > 0:
                # Counters can jitter (idle going back a tick on some kernels): clamp to [0, 1].
                self._utilisation = min(1.0, max(0.0, d_busy / d_total))
                self._last_busy_s, self._last_total_s = busy_s, total_s
            # else: no tick elapsed since the last read; keep the utilisation and baseline.
        dt_s = (now_ns - self._last_ns) / 1e9
        if dt_s > 0:
            power_w = self.idle_w + (self.tdp_w - self.idle_w) * self._utilisation
            self._energy_j += power_w * dt_s
            self._last_ns = now_ns
        return {"cpu0": self._energy_j}

    def close(self) -> None:
        if self._stat is not None:
            self._stat.close()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            {
                "estimated": True,
                "why": self.why,
                "model_name": self.model_name,
                "tdp_w": self.tdp_w,
                "idle_w": self.idle_w,
                "idle_fraction": self.idle_w / self.tdp_w,
                "tdp_source": self.tdp_source,
                "packages": self.packages,
                "logical_cpus": self.logical_cpus,
                "utilisation_source": "/proc/stat",
            }
        )
        return out


def discover(
    ctx: DiscoveryContext,
    why: str = "no CPU energy counter found",
    *,
    model_name: str | None = None,
    cpuinfo_text: str | None = None,
    logical_cpus: int | None = None,
    table: TdpTable | None = None,
    cpu_times: Callable[[], Any] | None = None,
    clock_ns: Callable[[], int] = time.monotonic_ns,
) -> list[Probe | Unavailable]:
    """Open the estimated CPU probe. Everything read from the machine is injectable:
    ``cpuinfo_text`` (default ``/proc/cpuinfo``), ``model_name`` (default from cpuinfo),
    ``logical_cpus`` (default ``os.cpu_count()``), ``table`` (default the shipped table)."""
    if cpu_times is None and not os.path.exists("/proc/stat"):
        missing = _psutil_missing()
        if missing is not None:
            return [missing]
    if cpuinfo_text is None:
        cpuinfo_text = read_cpuinfo()
    if model_name is None:
        model_name = cpu_model_name(cpuinfo_text)
    if logical_cpus is None:
        logical_cpus = os.cpu_count() or 1
    packages = count_packages(cpuinfo_text)
    entry = _table_entry(model_name, table)
    tdp = _choose_tdp(model_name, entry, setting_w=ctx.cpu_tdp_w, packages=packages,
                     logical_cpus=logical_cpus, vm=under_hypervisor(cpuinfo_text))
    probe = CpuModelProbe(
        tdp.tdp_w,
        IDLE_FRACTION * tdp.tdp_w,
        model_name=model_name,
        tdp_source=tdp.source,
        why=why,
        how=tdp.how,
        packages=packages,
        logical_cpus=logical_cpus,
        cpu_times=cpu_times,
        clock_ns=clock_ns,
    )
    return [probe]


def _psutil_missing() -> Unavailable | None:
    """Why the probe cannot run where there is no /proc/stat: psutil (its CPU times) is not
    installed; None when it is."""
    try:
        import psutil  # noqa: F401 - CPU times come from psutil where there is no /proc
    except ImportError:
        return Unavailable("cpumodel", "psutil is not installed",
                           "pip install psutil (a dependency of energymeter)")
    return None


def _table_entry(model_name: str, table: TdpTable | None) -> TdpEntry | None:
    """The TDP table's entry for ``model_name``; None when it has none or cannot be loaded
    (a warning: the default per-CPU power is used)."""
    try:
        return match_tdp(model_name, table)
    except (OSError, ModuleNotFoundError, UnicodeDecodeError) as exc:
        log.warning("cannot load the CPU TDP table, using the default per-CPU power: %r", exc)
        return None


class _TdpChoice(NamedTuple):
    """The full-load power the model uses, where it comes from (``tdp_source`` of the probe)
    and how it was obtained, in words (the probe's warning)."""

    tdp_w: float
    source: str
    how: str


def _choose_tdp(model_name: str, entry: TdpEntry | None, *, setting_w: float | None,
               packages: int, logical_cpus: int, vm: bool) -> _TdpChoice:
    """The CPU's TDP, by the first rule that applies: the ``cpu_tdp_w`` setting; the default
    per logical CPU when the model is not in the table; the table's entry times the packages
    on bare metal; on a VM, the entry times the guest's share of a package's hardware threads
    when the model name tells them, else the default per logical CPU."""
    default_w = DEFAULT_W_PER_LOGICAL_CPU * logical_cpus
    default_how = (f"TDP {default_w:g} W = default {DEFAULT_W_PER_LOGICAL_CPU:g} W × "
                   f"{logical_cpus} logical CPUs")
    if setting_w is not None:
        return _TdpChoice(setting_w, "setting",
                          f"TDP {setting_w:g} W from the cpu_tdp_w setting")
    if entry is None:
        return _TdpChoice(default_w, "default",
                          f"{default_how} ({model_name!r} is not in the table)")
    if not vm:
        tdp_w = entry.tdp_w * packages
        how = f"TDP {entry.tdp_w:g} W from table entry {entry.name!r}"
        if packages > 1:
            how += f" × {packages} packages = {tdp_w:g} W"
        return _TdpChoice(tdp_w, f"table:{entry.name}", how)
    package_threads = package_threads_from_name(model_name)
    if package_threads:
        # The guest's share of one package's threads; a guest larger than a package spans
        # several (never more than the sockets it sees).
        share = min(float(packages), logical_cpus / package_threads)
        tdp_w = entry.tdp_w * share
        return _TdpChoice(tdp_w, f"table:{entry.name} (VM share)",
                          f"TDP {tdp_w:.3g} W = table entry {entry.name!r} {entry.tdp_w:g} W "
                          f"× this VM's {logical_cpus} of {package_threads} hardware threads "
                          "per package")
    return _TdpChoice(default_w, "default (VM)",
                      f"{default_how}: on this VM the table's {entry.tdp_w:g} W for "
                      f"{entry.name!r} is the whole host package, whose thread count cannot "
                      "be told from inside the guest; set cpu_tdp_w to use a known figure")
