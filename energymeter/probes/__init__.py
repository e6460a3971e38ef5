"""Probe registry and discovery.

Each hardware family lives in one module exposing ``discover(ctx) -> list[Probe | Unavailable]``.
Adding hardware = adding one module and naming it in :data:`REGISTRY`. The estimated CPU model is
opened only when no other probe measures a ``cpu`` channel.
"""

from __future__ import annotations

import atexit
import importlib
import os
import threading
from dataclasses import dataclass

from .._lazy import LazyLogger
from .base import Channel, DiscoveryContext, Probe, Unavailable
from .presence import PRECHECKS

__all__ = [
    "Channel",
    "Discovery",
    "DiscoveryContext",
    "Probe",
    "Unavailable",
    "discover",
    "discover_cached",
]

log = LazyLogger("energymeter")

# Measured-energy probes, in discovery order. ``cpumodel`` (fallback) and ``process`` (gauges
# of the process tree only) are added by discover() itself.
REGISTRY: tuple[str, ...] = ("rapl", "nvml", "amdsmi", "hwmon", "jetson")


@dataclass(frozen=True)
class Discovery:
    probes: tuple[Probe, ...]
    unavailable: tuple[Unavailable, ...]
    # Warnings probes gave when they opened (e.g. "CPU energy is estimated"): they hold for
    # every run that uses these probes, so discovery keeps them instead of the first run.
    notes: tuple[str, ...] = ()

    @property
    def channels(self) -> tuple[Channel, ...]:
        return tuple(c for p in self.probes for c in p.channels)


def _run(name: str, ctx: DiscoveryContext, **kwargs: object) -> list[Probe | Unavailable]:
    try:
        precheck = PRECHECKS.get(name)
        missing = precheck(ctx) if precheck is not None else None
        if missing is not None:  # cannot be here: its module is not even imported
            return [missing]
        module = importlib.import_module(f"{__name__}.{name}")
        return list(module.discover(ctx, **kwargs))
    except Exception as exc:  # a broken probe must never break the user's program
        log.warning("probe %s failed during discovery: %r", name, exc)
        return [Unavailable(name, f"discovery failed: {type(exc).__name__}: {exc}",
                            "please report this with `energymeter probes --json` output")]


def discover(ctx: DiscoveryContext) -> Discovery:
    """Open every probe that works on this machine; list the others with reason and hint."""
    probes: list[Probe] = []
    missing: list[Unavailable] = []

    def take(results: list[Probe | Unavailable]) -> None:
        for r in results:
            (missing if isinstance(r, Unavailable) else probes).append(r)  # type: ignore[arg-type]

    served = False  # RAPL read through an energymeter daemon
    if ctx.energy and ctx.gpus_only:
        take(_run("nvml", ctx))
        take(_run("process", ctx))
        return Discovery(tuple(probes), tuple(missing),
                         tuple(w for p in probes for w in p.drain_warnings()))
    if ctx.energy and ctx.daemon != "off":
        found = _run("daemon", ctx)
        served = any(isinstance(r, Probe) for r in found)
        # With "auto", no daemon is the usual case: not worth a line in every report.
        take([r for r in found if served or ctx.daemon != "auto" or isinstance(r, Probe)])
    for name in REGISTRY if ctx.energy else ():
        if name == "rapl" and served:
            continue
        if name == "hwmon":  # amd_energy sockets duplicate RAPL packages: once, from RAPL
            rapl_cpu = any(c.kind == "cpu" and c.source.startswith("rapl")
                           for p in probes for c in p.channels)
            take(_run(name, ctx, skip_overlapping=rapl_cpu))
            continue
        take(_run(name, ctx))
    if ctx.energy and not any(c.kind == "cpu" for p in probes for c in p.channels):
        why = "; ".join(f"{u.source}: {u.reason}" for u in missing if u.source == "rapl")
        take(_run("cpumodel", ctx, why=why or "no CPU energy counter found"))
    take(_run("process", ctx))
    notes = tuple(w for p in probes for w in p.drain_warnings())
    return Discovery(tuple(probes), tuple(missing), notes)


_cache: dict[tuple, Discovery] = {}
_cache_lock = threading.Lock()


def discover_cached(ctx: DiscoveryContext) -> Discovery:
    """:func:`discover` once per process and context (probes stay open until exit).

    Keyed by pid, so a forked child never shares its parent's probe objects."""
    key = (os.getpid(), ctx.pid, ctx.include_root, ctx.cpu_tdp_w, str(ctx.powercap_root),
           id(ctx.pynvml), ctx.env.get("CUDA_VISIBLE_DEVICES"), ctx.nvml_module, ctx.energy,
           ctx.daemon, ctx.gpus_only)
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = discover(ctx)
            _cache[key] = found
        return found


def close_cached() -> None:
    """Close this process's cached probes (at exit; tests call it to start afresh).

    A forked child never closes the probes it inherited from its parent."""
    with _cache_lock:
        for key in [k for k in _cache if k[0] == os.getpid()]:
            for probe in _cache.pop(key).probes:
                if probe.hung:  # a call never returned: closing could block forever
                    log.debug("not closing hung probe %s", probe.source)
                    continue
                probe.close()


atexit.register(close_cached)
