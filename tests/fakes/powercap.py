"""A fake Linux powercap (RAPL) sysfs tree in a temporary directory, shared by all tests.

Build one, point the code under test at its root, drive its counters::

    from tests.fakes.powercap import FakePowercap

    fake = FakePowercap(tmp_path / "powercap", sockets=2, dram=True,
                        power_w={"package-0": 40.0, "package-1/dram": 5.0})
    ctx = fake.context()                     # DiscoveryContext(powercap_root=fake.root)
    monkeypatch.setenv(*fake.env_item())     # or ENERGYMETER_POWERCAP_ROOT=<fake.root>
    fake.advance(2.5)                        # deterministic: integrate 2.5 s of power exactly
    fake.true_energy_j("package-0")          # -> 100.0 (truth since creation, never wrapped)
    with fake.start(period_s=0.001):         # real time: counters follow time.monotonic()
        ...                                  # a 5 s measurement at 40 W sees 200 J
    fake.close()                             # (or use it as a fixture and close at teardown)

Zones and keys. Each zone has a *key*: the zone name for top-level zones (``package-0``,
``package-0-die-1``, ``psys``), ``<parent name>/<name>`` for sub-zones (``package-0/dram``,
``package-1/core``) and ``mmio:<name>`` for MMIO copies (``mmio:package-0``). Wherever a key is
expected, a bare zone name that is unique among non-MMIO zones also works (``"dram"`` on a
one-socket tree). :attr:`FakePowercap.keys` lists them.

Which zones (``FakePowercap(root, ...)`` keyword arguments):

- ``sockets`` packages ``package-N`` at ``intel-rapl:N``; ``dies=M`` replaces each package with
  M top-level ``package-N-die-D`` zones (``dies_with_package=True`` keeps the plain package too);
- per package (or per die): sub-zones ``core``, ``uncore``, ``dram`` (in that order, like a
  desktop Intel part), each switched by its flag;
- ``psys``: the platform zone as Linux >= 5.10 registers it (commit f1e8d7560d30; linux
  drivers/powercap/intel_rapl_common.c rapl_package_register_powercap, rapl_init_domains): one
  top-level zone registered right after its *master* package's sub-zones (``psys_package``,
  default 0), named ``psys`` for package 0 and ``psys-N`` for package N > 0. E.g.
  ``sockets=2, psys=True, psys_package=1`` gives ``intel-rapl:0`` package-0 (``:0:0`` dram),
  ``intel-rapl:1`` package-1 (``:1:0`` dram), ``intel-rapl:2`` psys-1, as on a Sapphire Rapids
  whose master is socket 1 (pass ``psys_energy_unit_nj=10**9`` for its 1 J unit).
  ``psys_before_5_10=True`` is the older layout (rapl_add_platform_domain: one ``psys``, read on
  CPU 0, after every package);
- ``mmio_duplicate``: ``intel-rapl-mmio:0`` named ``package-0``, counting the same energy as the
  MSR ``package-0`` (linux drivers/thermal/intel/int340x_thermal/processor_thermal_rapl.c
  registers package 0 only, with PACKAGE and DRAM domains; the probe must deduplicate it);
  ``mmio_dram=True`` adds ``intel-rapl-mmio:0:0`` ``dram`` (key ``mmio:package-0/dram``): a copy
  of the MSR ``package-0/dram`` if there is one, else (``dram=False``) a counter only the MMIO
  door shows, as when MSR 0x619 reads 0 (rapl_check_domain registers a domain only if its
  counter reads non-zero). Needs the MSR tree (client CPUs);
- ``tpmi``: an ``intel-rapl-tpmi`` tree (linux drivers/powercap/intel_rapl_tpmi.c): per socket
  ``package-N`` with a ``dram`` sub-zone (if ``dram``), and with ``psys`` a top-level ``psys``
  after package 0 (``psys-N`` after every package N > 0 too with ``psys_per_package``, a case
  upstream neither documents nor rules out; names from intel_rapl_common.c rapl_init_domains).
  ``tpmi=True`` means *no* MSR tree: intel_rapl_common.c ``rapl_ids[]`` lists no TPMI-era CPU
  (Granite Rapids, Sierra Forest...), so ``intel_rapl_msr`` is not even instantiated there, and
  the 6.5/6.6 intel_rapl_tpmi.c registered ``"intel-rapl"`` itself (``tpmi_control=
  "intel-rapl"``). ``msr=True`` with ``tpmi=True`` raises unless ``synthetic=True``: a layout no
  mainline kernel shows, kept only for a defensive test (keys ``tpmi:package-0``...);
- :meth:`FakePowercap.amd` builds the AMD Zen shape (intel_rapl_msr.c rapl_msr_priv_amd:
  ``package-N`` with a ``core`` sub-zone, no DRAM, energy unit 15258 nJ, no constraint files,
  ``enabled`` reading 0).

Zone directories are named ``<parent>:<id>`` with the id in hexadecimal, as
drivers/powercap/powercap_sys.c names them (``"%s:%x"``): the eleventh is ``intel-rapl:a``.
Files and modes as powercap_sys.c creates them: ``energy_uj`` 0400 (root only since Linux 5.10),
``name`` and ``max_energy_range_uj`` 0444, ``enabled`` 0644, and with ``max_power_w``
``constraint_0_{name,max_power_uw}`` 0444 and ``constraint_0_{power_limit_uw,time_window_us}``
0644.

Power. ``power_w`` maps keys to a power source: a number (constant watts), a sequence of
``(duration_s, power_w)`` segments (piecewise constant from creation; the last power holds after
the end) or a callable ``t_s -> watts`` (integrated with the midpoint rule on steps of at most
1 ms, so "truth" is that integral). Defaults: package 40 W, die 20 W, core 25 W, uncore 2 W,
dram 5 W, psys 60 W. :meth:`FakePowercap.set_power` changes a source from the current time on.

Counters, as linux drivers/powercap/intel_rapl_common.c makes them: the hardware counts whole
energy units ``E`` (nJ, ``energy_unit_nj``: 61035 on Intel = ESU 14, 15258 on AMD; per-key
mapping allowed; ``dram_energy_unit_nj=15300`` for a server's DRAM, ``psys_energy_unit_nj=10**9``
for Sapphire Rapids' psys) in a 32-bit register, shown as ``energy_uj = raw * E // 1000``, with
``max_energy_range_uj = 0xffffffff * E // 1000``; after the top count it steps to 0 over one
more unit (period ``2**32 * E / 1000`` uJ). ``quantize=True`` gives exactly that; the default
keeps a 1 uJ resolution (the value is ``floor(initial_energy_uj + energy) mod period``, shown as
``max_energy_range_uj`` over the top unit) so that energies stay exact to the microjoule for the
many tests that compare with ``pytest.approx``; range and wrap are the kernel's either way.
``max_energy_range_uj=`` (int or per-key mapping) instead makes a synthetic range no kernel
shows, only to make counters wrap every few seconds (120_000_000 uJ wraps every 3 s at 40 W):
values run 0..max_energy_range_uj and wrap to 0 (period ``max + 1``, which the probe falls back
to for ranges no energy unit gives). ``initial_energy_uj`` sets where counters start (e.g. just
below the range, to wrap at once). Values are written as fixed-width zero-padded
integers with a single ``os.pwrite`` on a descriptor kept open (never truncated), so a concurrent
``pread`` never sees a torn or shortened number.

Layouts (``layout=``): ``"sysfs"`` (default) is what a real ``/sys/class/powercap`` looks like:
the zone directories nest under a control-type directory (kept in ``<root>/.sysfs-devices``) and
the root holds symlinks to the control type and to every zone, and each zone has a
``subsystem`` symlink back to the root (a loop for naive walkers). ``"flat"`` puts every zone
directory straight under the root (no control-type dir); ``"nested"`` has real directories
``<root>/intel-rapl/intel-rapl:0/intel-rapl:0:0`` and no symlinks.

Permissions. Tests run as root here, and root ignores file modes, so ``chmod 000`` cannot make
``energy_uj`` unreadable. :meth:`FakePowercap.deny` therefore does both: ``chmod 000`` (effective
for non-root users) and marks the zone so that :meth:`FakePowercap.opener` — a drop-in
``os.open`` to pass as ``rapl.discover(ctx, opener=fake.opener)`` — raises a real
``PermissionError(EACCES)`` for it, exactly as the kernel does for non-root on Linux >= 5.10.

Other helpers: :meth:`~FakePowercap.write_raw` (garbage or odd formatting in ``energy_uj``),
:meth:`~FakePowercap.write_cpuinfo` (a /proc/cpuinfo to pass as ``cpuinfo_path``),
:meth:`~FakePowercap.energy_path`, :meth:`~FakePowercap.zone_path`,
:meth:`~FakePowercap.counter_uj`.
"""

from __future__ import annotations

import errno
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

PowerSource = float | Sequence[tuple[float, float]] | Callable[[float], float]

# linux drivers/powercap/intel_rapl_common.c: the energy status register is 32 bits
# (ENERGY_STATUS_MASK GENMASK(31, 0)); a domain's unit is an integer number of nanojoules,
# rd->energy_unit = (ENERGY_UNIT_SCALE * MICROJOULE_PER_JOULE) >> ESU with ENERGY_UNIT_SCALE 1000;
# energy_uj = raw * unit // 1000 and max_energy_range_uj = 0xffffffff * unit // 1000
# (rapl_unit_xlate, get_max_energy_counter).
COUNTER_BITS = 32
ENERGY_UNIT_SCALE = 1000
INTEL_ENERGY_UNIT_NJ = 10**9 >> 14  # 61035: ESU 14, Intel client and server packages
AMD_ENERGY_UNIT_NJ = 10**9 >> 16  # 15258: ESU 16, AMD Zen (MSR_AMD_RAPL_POWER_UNIT)
SERVER_DRAM_ENERGY_UNIT_NJ = 15300  # rapl_defaults_hsw_server .dram_domain_energy_unit
SPR_PSYS_ENERGY_UNIT_NJ = 10**9  # rapl_defaults_spr_server .psys_domain_energy_unit (1 J)


def max_range_uj(energy_unit_nj: int) -> int:
    """``max_energy_range_uj`` the kernel shows for a domain with this unit."""
    return ((1 << COUNTER_BITS) - 1) * energy_unit_nj // ENERGY_UNIT_SCALE


DEFAULT_MAX_ENERGY_RANGE_UJ = max_range_uj(INTEL_ENERGY_UNIT_NJ)  # 262_143_328_850
AMD_MAX_ENERGY_RANGE_UJ = max_range_uj(AMD_ENERGY_UNIT_NJ)  # 65_532_610_987
# Modes: linux drivers/powercap/powercap_sys.c (energy_uj S_IRUSR since 5.10, CVE-2020-8694;
# name and max_energy_range_uj DEVICE_ATTR_RO; enabled DEVICE_ATTR_RW; constraint_N_power_limit_uw
# and _time_window_us S_IWUSR | S_IRUGO; constraint_N_name and _max_power_uw S_IRUGO).
ENERGY_MODE = 0o400
RO_MODE = 0o444
RW_MODE = 0o644
DEFAULT_POWER_W = {
    "package": 40.0, "die": 20.0, "core": 25.0, "uncore": 2.0, "dram": 5.0, "psys": 60.0,
}
CALLABLE_STEP_S = 0.001
LAYOUTS = ("sysfs", "flat", "nested")
# Control type names: intel_rapl_msr.c "intel-rapl"; intel_rapl_tpmi.c "intel-rapl-tpmi" (it
# registered "intel-rapl" in Linux 6.5/6.6: pass tpmi_control="intel-rapl" with msr=False);
# int340x_thermal/processor_thermal_rapl.c "intel-rapl-mmio".
MSR, TPMI, MMIO = "intel-rapl", "intel-rapl-tpmi", "intel-rapl-mmio"


def integrate_j(source: PowerSource, t0_s: float, t1_s: float) -> float:
    """Energy in J of ``source`` over ``[t0_s, t1_s]`` (times relative to the source's start)."""
    if t1_s <= t0_s:
        return 0.0
    if isinstance(source, (int, float)):
        return float(source) * (t1_s - t0_s)
    if callable(source):
        steps = max(1, math.ceil((t1_s - t0_s) / CALLABLE_STEP_S))
        dt = (t1_s - t0_s) / steps
        return sum(float(source(t0_s + (i + 0.5) * dt)) for i in range(steps)) * dt
    energy_j = 0.0
    start = 0.0
    last_w = 0.0
    for duration_s, power_w in source:
        end = start + duration_s
        lo, hi = max(start, t0_s), min(end, t1_s)
        if hi > lo:
            energy_j += power_w * (hi - lo)
        start, last_w = end, power_w
    if t1_s > start:  # the last power holds after the trace ends
        energy_j += last_w * (t1_s - max(start, t0_s))
    return energy_j


def _check_source(key: str, source: PowerSource) -> None:
    if isinstance(source, (int, float)):
        if source < 0 or not math.isfinite(source):
            raise ValueError(f"power for {key!r} must be a finite number >= 0 W, got {source!r}")
    elif not callable(source):
        for segment in source:
            duration_s, power_w = segment
            if duration_s < 0 or power_w < 0:
                raise ValueError(f"power trace for {key!r} has a negative segment {segment!r}")


@dataclass
class _FakeZone:
    key: str
    name: str
    control: str
    address: tuple[int, ...]
    kind: str  # key of DEFAULT_POWER_W
    max_energy_range_uj: int
    initial_uj: int
    max_power_w: float | None
    mirror_of: str | None = None  # MMIO/TPMI copies count their MSR zone's energy
    energy_unit_nj: int | None = None  # None: a synthetic range (test accelerator), see doc
    enabled: str = "1"
    source: PowerSource = 0.0
    source_start_s: float = 0.0
    energy_uj: float = 0.0  # truth since creation, in uJ (not wrapped, not floored)
    real_dir: Path | None = None
    visible_dir: Path | None = None
    fd: int = -1
    width: int = 1
    truncate_next: bool = False

    @property
    def dirname(self) -> str:
        # powercap_sys.c powercap_register_zone: dev_set_name(..., "%s:%x", parent, id)
        return self.control + "".join(f":{i:x}" for i in self.address)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            continue
    fds.clear()


class FakePowercap:
    """A powercap tree under ``root`` with simulated RAPL counters (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        *,
        sockets: int = 1,
        dies: int = 0,
        dies_with_package: bool = False,
        dram: bool = True,
        core: bool = False,
        uncore: bool = False,
        psys: bool = False,
        mmio_duplicate: bool = False,
        mmio_dram: bool = False,
        msr: bool | None = None,
        tpmi: bool = False,
        tpmi_control: str = TPMI,
        psys_per_package: bool = False,
        psys_package: int = 0,
        psys_before_5_10: bool = False,
        synthetic: bool = False,
        energy_unit_nj: int | Mapping[str, int] = INTEL_ENERGY_UNIT_NJ,
        dram_energy_unit_nj: int | None = None,
        psys_energy_unit_nj: int | None = None,
        max_energy_range_uj: int | Mapping[str, int] | None = None,
        quantize: bool = False,
        power_w: Mapping[str, PowerSource] | None = None,
        initial_energy_uj: int | Mapping[str, int] = 0,
        max_power_w: float | Mapping[str, float] | None = None,
        layout: str = "sysfs",
        model_name: str = "Intel(R) Xeon(R) Fake CPU @ 2.00GHz",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} not in {LAYOUTS}")
        if sockets < 1 or dies < 0:
            raise ValueError("sockets must be >= 1 and dies >= 0")
        if msr is None:
            msr = not tpmi  # a TPMI machine has no MSR RAPL (see the module docstring)
        if not (msr or tpmi):
            raise ValueError("a tree needs msr=True or tpmi=True")
        if tpmi and tpmi_control == MSR and msr:
            raise ValueError("Linux 6.5/6.6 TPMI registered 'intel-rapl' itself: use msr=False")
        if tpmi and msr and not synthetic:
            raise ValueError(
                "no mainline kernel shows MSR and TPMI RAPL zones together (intel_rapl_common.c "
                "rapl_ids[] has no TPMI-era CPU): drop msr=True, or pass synthetic=True for a "
                "defensive test of a layout that does not exist")
        if not 0 <= psys_package < sockets:
            raise ValueError(f"psys_package {psys_package} is not one of the {sockets} packages")
        if (mmio_dram or mmio_duplicate) and not msr:
            raise ValueError("intel-rapl-mmio (client CPUs) comes with the MSR tree: msr=True")
        self.root = Path(root)
        self.layout = layout
        self.model_name = model_name
        self.sockets = sockets
        self.quantize = quantize
        self._lock = threading.RLock()
        self._now_s = 0.0
        self._thread: threading.Thread | None = None
        #: Real-time mode: the longest real time between two counter updates so far (s).
        self.max_lag_s = 0.0
        self._stop_event = threading.Event()
        self._denied: set[str] = set()
        self._fds: list[int] = []
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)

        self._zones: dict[str, _FakeZone] = {}
        self._build_zones(sockets, dies, dies_with_package, dram, core, uncore, psys,
                          mmio_duplicate or mmio_dram, mmio_dram, msr, tpmi, tpmi_control,
                          psys_per_package, psys_package, psys_before_5_10)
        for zone in self._zones.values():
            if max_energy_range_uj is None:  # what a kernel shows: a 32-bit count of units
                unit = int(self._per_key(energy_unit_nj, zone, INTEL_ENERGY_UNIT_NJ))
                if zone.kind == "dram" and dram_energy_unit_nj is not None:
                    unit = dram_energy_unit_nj
                if zone.kind == "psys" and psys_energy_unit_nj is not None:
                    unit = psys_energy_unit_nj
                if unit < 1:
                    raise ValueError(f"energy_unit_nj of {zone.key!r} must be >= 1")
                zone.energy_unit_nj = unit
                zone.max_energy_range_uj = max_range_uj(unit)
            else:
                zone.max_energy_range_uj = int(self._per_key(max_energy_range_uj, zone,
                                                             DEFAULT_MAX_ENERGY_RANGE_UJ))
            if zone.max_energy_range_uj <= 0:
                raise ValueError(f"max_energy_range_uj of {zone.key!r} must be > 0")
            zone.initial_uj = int(self._per_key(initial_energy_uj, zone, 0))
            zone.width = len(str(zone.max_energy_range_uj))
            # A number applies to package, die and psys zones; a mapping to the keys it names.
            if zone.kind in ("package", "die", "psys") or isinstance(max_power_w, Mapping):
                zone.max_power_w = self._per_key(max_power_w, zone, None)
            zone.source = DEFAULT_POWER_W[zone.kind]
        for key, source in (power_w or {}).items():
            zone = self._zone(key)
            _check_source(zone.key, source)
            zone.source = source
        self._write_tree()

    @classmethod
    def amd(cls, root: Path | str, **kwargs: Any) -> FakePowercap:
        """The tree of an AMD Zen CPU: ``package-N`` with a ``core`` sub-zone, no DRAM zone."""
        options: dict[str, Any] = {
            "dram": False, "core": True, "energy_unit_nj": AMD_ENERGY_UNIT_NJ,
            "model_name": "AMD EPYC 7763 64-Core Processor",
        }
        options.update(kwargs)
        fake = cls(root, **options)
        # intel_rapl_msr.c rapl_msr_priv_amd has energy status registers only (no power limit,
        # no power info): rapl_detect_powerlimit drops every constraint, and "enabled" reads
        # 0 (powercap_sys.c enabled_show: get_enable fails -> mode false).
        for zone in fake._zones.values():
            assert zone.real_dir is not None
            (zone.real_dir / "enabled").write_text("0\n", encoding="ascii")
        return fake

    # -- construction -----------------------------------------------------------------------
    def _build_zones(self, sockets: int, dies: int, dies_with_package: bool, dram: bool,
                     core: bool, uncore: bool, psys: bool, mmio: bool, mmio_dram: bool,
                     msr: bool, tpmi: bool, tpmi_control: str, psys_per_package: bool,
                     psys_package: int, psys_before_5_10: bool) -> None:
        """Zones in the order the kernel registers them, ids from each parent's idr
        (powercap_sys.c idr_alloc): a package, then its sub-zones (intel_rapl_common.c
        rapl_package_register_powercap: core, uncore, dram in rapl_domain_names order), then
        the package's platform domain, if it has it, at parent NULL (a top-level zone)."""
        index = 0

        def add(key: str, name: str, control: str, address: tuple[int, ...], kind: str,
                mirror_of: str | None = None) -> None:
            self._zones[key] = _FakeZone(key, name, control, address, kind, 0, 0, None,
                                         mirror_of=mirror_of)

        def add_subzones(parent: str, address: tuple[int, ...]) -> None:
            sub = 0
            for flag, name in ((core, "core"), (uncore, "uncore"), (dram, "dram")):
                if flag:
                    add(f"{parent}/{name}", name, MSR, (*address, sub), name)
                    sub += 1

        # MSR psys (linux drivers/powercap/intel_rapl_common.c): since 5.10 (commit
        # f1e8d7560d30, "enumerate Psys RAPL domain together with package RAPL domain") only
        # the master package reads a non-zero MSR_PLATFORM_ENERGY_STATUS (rapl_check_domain),
        # so one platform zone is registered with it, right after its sub-zones, named "psys"
        # for package 0 and "psys-N" for package N > 0 (rapl_init_domains). Before 5.10,
        # rapl_add_platform_domain read it on CPU 0 and registered one "psys" after every
        # package (intel_rapl_msr.c rapl_msr_probe).
        psys_name = "psys" if psys_package == 0 or psys_before_5_10 else f"psys-{psys_package}"
        if msr:
            for socket in range(sockets):
                if dies == 0 or dies_with_package:
                    name = f"package-{socket}"
                    add(name, name, MSR, (index,), "package")
                    add_subzones(name, (index,))
                    index += 1
                for die in range(dies):
                    name = f"package-{socket}-die-{die}"
                    add(name, name, MSR, (index,), "die")
                    if not dies_with_package:
                        add_subzones(name, (index,))
                    index += 1
                if psys and not psys_before_5_10 and socket == psys_package:
                    add(psys_name, psys_name, MSR, (index,), "psys")
                    index += 1
            if psys and psys_before_5_10:
                add("psys", "psys", MSR, (index,), "psys")
        if tpmi:
            # intel_rapl_tpmi.c: per package, domains PACKAGE, MEMORY (dram) and SYSTEM (psys:
            # "psys" for package 0, "psys-N" for the others, rapl_init_domains); psys is a
            # top-level zone registered after its package. No core/uncore domain. Whether more
            # than one package has a SYSTEM domain is not documented: psys_per_package draws
            # that case. Zones are copies of the MSR ones only in a synthetic tree.
            top = 0
            for socket in range(sockets):
                name = f"package-{socket}"
                mirror = name if msr and name in self._zones else None
                key = f"tpmi:{name}" if msr else name
                add(key, name, tpmi_control, (top,), "package", mirror_of=mirror)
                if dram:
                    dram_key = f"{name}/dram"
                    add(f"tpmi:{dram_key}" if msr else dram_key, "dram", tpmi_control, (top, 0),
                        "dram", mirror_of=dram_key if msr and dram_key in self._zones else None)
                top += 1
                if psys and (socket == 0 or psys_per_package):
                    pname = "psys" if socket == 0 else f"psys-{socket}"
                    mirror = pname if msr and pname in self._zones else None
                    add(f"tpmi:{pname}" if msr else pname, pname, tpmi_control, (top,), "psys",
                        mirror_of=mirror)
                    top += 1
        if mmio:
            # int340x_thermal/processor_thermal_rapl.c: rapl_add_package(0, ...) only, with
            # the PACKAGE and DRAM domains (rapl_mmio_default.regs), each registered only if
            # its counter reads non-zero (intel_rapl_common.c rapl_check_domain). The same
            # hardware counters as MSR's package-0 (and its dram, if MSR shows one).
            if "package-0" not in self._zones:
                raise ValueError("intel-rapl-mmio is a client CPU's: it needs MSR package-0")
            add("mmio:package-0", "package-0", MMIO, (0,), "package", mirror_of="package-0")
            if mmio_dram:
                add("mmio:package-0/dram", "dram", MMIO, (0, 0), "dram",
                    mirror_of="package-0/dram" if "package-0/dram" in self._zones else None)

    def _per_key(self, value: Any, zone: _FakeZone, default: Any) -> Any:
        if not isinstance(value, Mapping):
            return default if value is None else value
        for key, item in value.items():
            if self._zone(key) is zone:
                return item
        if zone.mirror_of is not None:
            return self._per_key(value, self._zones[zone.mirror_of], default)
        return default

    def _write_tree(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        base = self.root / ".sysfs-devices" if self.layout == "sysfs" else self.root
        for zone in self._zones.values():
            if self.layout == "flat":
                real = self.root / zone.dirname
            else:
                real = base / zone.control
                for depth in range(1, len(zone.address) + 1):
                    real = real / (zone.control
                                   + "".join(f":{i:x}" for i in zone.address[:depth]))
            zone.real_dir = real
            zone.visible_dir = self.root / zone.dirname if self.layout != "nested" else real
            real.mkdir(parents=True, exist_ok=True)
            self._write_file(real / "name", zone.name + "\n", RO_MODE)
            self._write_file(real / "max_energy_range_uj", f"{zone.max_energy_range_uj}\n",
                             RO_MODE)
            self._write_file(real / "enabled", f"{zone.enabled}\n", RW_MODE)
            if zone.max_power_w is not None:
                uw = round(zone.max_power_w * 1e6)
                self._write_file(real / "constraint_0_name", "long_term\n", RO_MODE)
                self._write_file(real / "constraint_0_max_power_uw", f"{uw}\n", RO_MODE)
                self._write_file(real / "constraint_0_power_limit_uw", f"{uw}\n", RW_MODE)
                self._write_file(real / "constraint_0_time_window_us", "999424\n", RW_MODE)
            fd = os.open(real / "energy_uj", os.O_RDWR | os.O_CREAT | os.O_TRUNC, ENERGY_MODE)
            os.fchmod(fd, ENERGY_MODE)  # whatever the umask
            self._fds.append(fd)
            zone.fd = fd
        for control in {z.control for z in self._zones.values()}:
            if self.layout != "flat":
                self._write_file(base / control / "enabled", "1\n", RW_MODE)
            if self.layout == "sysfs":
                os.symlink(os.path.relpath(base / control, self.root), self.root / control)
        if self.layout == "sysfs":
            for zone in self._zones.values():
                assert zone.real_dir is not None and zone.visible_dir is not None
                os.symlink(os.path.relpath(zone.real_dir, self.root), zone.visible_dir)
                os.symlink(os.path.relpath(self.root, zone.real_dir), zone.real_dir / "subsystem")
        with self._lock:
            for zone in self._zones.values():
                self._write_counter(zone)

    @staticmethod
    def _write_file(path: Path, text: str, mode: int = RO_MODE) -> None:
        path.write_text(text, encoding="ascii")
        os.chmod(path, mode)

    # -- lookups ----------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        """Every zone key, in creation order."""
        return list(self._zones)

    def _zone(self, key: str) -> _FakeZone:
        zone = self._zones.get(key)
        if zone is not None:
            return zone
        matches = [z for z in self._zones.values() if z.name == key and z.mirror_of is None]
        if len(matches) == 1:
            return matches[0]
        what = "ambiguous" if matches else "unknown"
        raise KeyError(f"{what} fake powercap zone {key!r}; keys: {', '.join(self._zones)}")

    def zone_path(self, key: str) -> Path:
        """The zone directory as reached from the root (a symlink in the sysfs layout)."""
        path = self._zone(key).visible_dir
        assert path is not None
        return path

    def energy_path(self, key: str) -> Path:
        return self.zone_path(key) / "energy_uj"

    def context(self, **kwargs: Any) -> Any:
        """A ``DiscoveryContext`` reading this tree (extra fields as keyword arguments)."""
        from energymeter.probes.base import DiscoveryContext

        return DiscoveryContext(powercap_root=self.root, **kwargs)

    def env_item(self) -> tuple[str, str]:
        """``("ENERGYMETER_POWERCAP_ROOT", str(root))``, e.g. for ``monkeypatch.setenv``."""
        return "ENERGYMETER_POWERCAP_ROOT", str(self.root)

    def write_cpuinfo(self, path: Path | str, model_name: str | None = None) -> Path:
        """Write a minimal /proc/cpuinfo (2 logical CPUs per socket) to ``path``."""
        model = model_name or self.model_name
        blocks = []
        for cpu in range(2 * self.sockets):
            blocks.append(f"processor\t: {cpu}\nvendor_id\t: Fake\nmodel name\t: {model}\n"
                          f"physical id\t: {cpu // 2}\ncore id\t\t: {cpu % 2}\n")
        path = Path(path)
        path.write_text("\n".join(blocks) + "\n", encoding="ascii")
        return path

    # -- simulation -------------------------------------------------------------------------
    @property
    def now_s(self) -> float:
        """Simulated seconds since creation."""
        with self._lock:
            return self._now_s

    def clock_ns(self) -> int:
        """Simulated time in nanoseconds: the clock to give the probe in deterministic mode
        (``rapl.discover(..., clock_ns=fake.clock_ns)``), so that its wrap checks see the
        seconds :meth:`advance` simulated."""
        return round(self.now_s * 1e9)

    def true_energy_j(self, key: str) -> float:
        """Energy of the zone since creation in J: exact, never wrapped."""
        with self._lock:
            zone = self._zone(key)
            if zone.mirror_of is not None:
                zone = self._zones[zone.mirror_of]
            return zone.energy_uj / 1e6

    def counter_uj(self, key: str) -> int:
        """The value ``energy_uj`` holds now."""
        with self._lock:
            return self._counter_value(self._zone(key))

    def set_power(self, key: str, source: PowerSource) -> None:
        """Use ``source`` for the zone from the current simulated time on (traces and callables
        see t = 0 at this moment)."""
        with self._lock:
            zone = self._zone(key)
            _check_source(zone.key, source)
            zone.source = source
            zone.source_start_s = self._now_s

    def advance(self, seconds: float) -> None:
        """Deterministic mode: integrate ``seconds`` of power and write the new counters."""
        if seconds < 0:
            raise ValueError(f"cannot advance by a negative time {seconds!r}")
        if self._thread is not None:
            raise RuntimeError("advance() while running in real time; call stop() first")
        with self._lock:
            self._advance_to(self._now_s + seconds)

    def _advance_to(self, t_s: float) -> None:
        t0 = self._now_s
        if t_s <= t0:
            return
        for zone in self._zones.values():
            if zone.mirror_of is None:
                zone.energy_uj += 1e6 * integrate_j(
                    zone.source, t0 - zone.source_start_s, t_s - zone.source_start_s)
        self._now_s = t_s
        for zone in self._zones.values():
            self._write_counter(zone)

    def _counter_value(self, zone: _FakeZone) -> int:
        energy_uj = (self._zones[zone.mirror_of] if zone.mirror_of else zone).energy_uj
        unit = zone.energy_unit_nj
        if unit is None:  # synthetic range: 0..max, then 0 again (no kernel shows such ranges)
            return (zone.initial_uj + math.floor(energy_uj)) % (zone.max_energy_range_uj + 1)
        if self.quantize:
            # The hardware counts whole units in 32 bits; the kernel shows raw * unit // 1000.
            raw = (zone.initial_uj * ENERGY_UNIT_SCALE // unit
                   + math.floor(energy_uj * ENERGY_UNIT_SCALE / unit)) % (1 << COUNTER_BITS)
            return raw * unit // ENERGY_UNIT_SCALE
        # 1 uJ resolution, the kernel's range and period (2**32 units): the value over the top
        # unit reads max_energy_range_uj, as the hardware's top count does.
        period = Fraction((1 << COUNTER_BITS) * unit, ENERGY_UNIT_SCALE)
        value = math.floor((zone.initial_uj + math.floor(energy_uj)) % period)
        return min(value, zone.max_energy_range_uj)

    def _write_counter(self, zone: _FakeZone) -> None:
        data = f"{self._counter_value(zone):0{zone.width}d}\n".encode("ascii")
        if zone.truncate_next:
            os.ftruncate(zone.fd, 0)
            zone.truncate_next = False
        os.pwrite(zone.fd, data, 0)

    def write_raw(self, key: str, text: str) -> None:
        """Write ``text`` verbatim as the zone's ``energy_uj`` (garbage, odd padding...). The next
        counter update overwrites it."""
        with self._lock:
            zone = self._zone(key)
            os.ftruncate(zone.fd, 0)
            os.pwrite(zone.fd, text.encode("ascii", errors="replace"), 0)
            zone.truncate_next = True

    # -- real time --------------------------------------------------------------------------
    def start(self, period_s: float = 0.001) -> FakePowercap:
        """Real-time mode: a thread advances the simulation with ``time.monotonic()`` every
        ``period_s``. Returns ``self`` (``with fake.start(): ...`` stops on exit)."""
        if self._thread is not None:
            return self
        self._stop_event.clear()
        t0_real, t0_sim = time.monotonic(), self.now_s

        self.max_lag_s = 0.0

        def run() -> None:
            last = time.monotonic()
            while not self._stop_event.wait(period_s):
                with self._lock:
                    now = time.monotonic()
                    self._advance_to(t0_sim + now - t0_real)
                # Between two updates the counters stand still while real time goes on: on a
                # busy machine this thread waits for a core, and a reader sees energy up to
                # the longest gap old. Tests derive their tolerances from it.
                self.max_lag_s = max(self.max_lag_s, now - last)
                last = now
            with self._lock:
                self._advance_to(t0_sim + time.monotonic() - t0_real)

        self._thread = threading.Thread(target=run, name="fake-powercap", daemon=True)
        self._thread.start()
        return self

    def lag_j(self, power_w: float) -> float:
        """How far a span's energy read from the real-time counters can be from ``power_w`` ×
        its duration: at each of its two ends the counters may stand up to :attr:`max_lag_s`
        behind (this thread waited for a core). Tests add it to their relative tolerance, so
        that a busy machine widens them by what it measurably did and a quiet one does not."""
        return 2.0 * power_w * self.max_lag_s

    def stop(self) -> None:
        """Stop real-time mode (counters are brought up to date first). Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop_event.set()
            thread.join()

    def __enter__(self) -> FakePowercap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def close(self) -> None:
        """Stop the thread and close the counter files (the tree stays on disk)."""
        self.stop()
        with self._lock:
            self._finalizer()

    # -- permissions ------------------------------------------------------------------------
    def deny(self, key: str) -> None:
        """Make the zone's ``energy_uj`` unreadable: ``chmod 000`` and, because root ignores
        modes, :meth:`opener` raises ``PermissionError`` for it."""
        path = self._zone(key).real_dir
        assert path is not None
        os.chmod(path / "energy_uj", 0)
        self._denied.add(os.path.realpath(path / "energy_uj"))

    def allow(self, key: str) -> None:
        """Undo :meth:`deny`."""
        path = self._zone(key).real_dir
        assert path is not None
        os.chmod(path / "energy_uj", ENERGY_MODE)
        self._denied.discard(os.path.realpath(path / "energy_uj"))

    def opener(self, path: str, flags: int, mode: int = 0o777) -> int:
        """``os.open`` that fails with ``PermissionError(EACCES)`` on denied zones."""
        if os.path.realpath(path) in self._denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return os.open(path, flags, mode)
