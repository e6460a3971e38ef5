"""What ``energymeter probes`` shows: the hardware found, the channels a run would measure and
by which method, and every source that could not be used, with the reason and the fix.

:func:`inspect_probes` runs discovery afresh (with the same settings a run would use) and returns
a JSON-able dict (``energymeter probes`` renders it). Nothing here prints.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from ..settings import resolve_settings
from . import discover
from .base import KINDS, Channel, DiscoveryContext, Probe
from .proc import count_packages, cpu_model_name, read_cpuinfo


def cpu_facts(cpuinfo_text: str | None = None) -> dict[str, Any]:
    """CPU model name, sockets and logical/physical CPU counts of this machine."""
    text = read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    physical: int | None = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "model": cpu_model_name(text),
        "sockets": count_packages(text),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "machine": platform.machine(),
    }


def inspect_probes(
    *,
    env: Mapping[str, str] | None = None,
    pynvml: Any = None,
    cpuinfo_text: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Discover the probes as a run with these settings would, describe them and close them.

    ``env``: the environment (default ``os.environ``: ``ENERGYMETER_*``,
    ``CUDA_VISIBLE_DEVICES``); ``pynvml``: an NVML module to use instead of nvidia-ml-py (tests);
    other keyword arguments are :class:`~energymeter.settings.Settings` fields
    (``powercap_root``...). Returns ``cpu``, ``powercap_root``, ``rapl_zones``,
    ``rapl_control_types`` (what each RAPL control type has, and what of it is read), ``gpus``,
    ``channels`` (each with ``measured``), ``measurable`` (method per kind), ``gauges``,
    ``unavailable`` (``source``, ``reason``, ``hint``), ``notes`` and ``probes`` (raw
    descriptions). Raises :class:`~energymeter.errors.ConfigError` for bad settings.
    """
    env = dict(os.environ if env is None else env)
    s = resolve_settings({k: v for k, v in settings.items() if v is not None}, env=env)
    discovery = discover(DiscoveryContext(powercap_root=s.powercap_root, pid=os.getpid(),
                                          cpu_tdp_w=s.cpu_tdp_w, pynvml=pynvml, env=env,
                                          nvml_module=s.nvml_module, daemon=s.daemon))
    described, channels, gauges = _describe_and_close(discovery.probes)
    rapl_zones, rapl_control_types = _rapl_facts(described)
    return {
        "daemon": daemon_status(s.daemon, described),
        "cpu": cpu_facts(cpuinfo_text),
        "powercap_root": str(s.powercap_root),
        "powercap_root_origin": s.origin("powercap_root"),
        "rapl_zones": rapl_zones,
        "rapl_control_types": rapl_control_types,
        "gpus": _gpu_rows(channels),
        "gpu_driver": _gpu_driver(described),
        "channels": [{**c.to_dict(), "measured": c.method != "model"} for c in channels],
        "measurable": _measurable_methods(channels),
        "gauges": gauges,
        "unavailable": [u.to_dict() for u in discovery.unavailable],
        "notes": list(discovery.notes),
        "probes": described,
    }


def _describe_and_close(
        probes: Sequence[Probe]) -> tuple[list[dict[str, Any]], list[Channel], list[str]]:
    """Each probe's description, every channel and the gauge names (each once, in order),
    the probes closed afterwards (also when describing one fails)."""
    try:
        described = [p.describe() for p in probes]
        channels = [c for p in probes for c in p.channels]
        gauges = list(dict.fromkeys(g for p in probes for g in p.gauge_names))
    finally:
        for probe in probes:
            probe.close()
    return described, channels, gauges


def _rapl_facts(described: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, str]]:
    """The RAPL probes' zones and control types (what each has, and what of it is read)."""
    rapl_zones: list[dict[str, Any]] = []
    rapl_control_types: dict[str, str] = {}
    for desc in described:
        if desc.get("source") == "rapl":
            rapl_zones += list(desc.get("zones", []))
            rapl_control_types.update(desc.get("control_types") or {})
    return rapl_zones, rapl_control_types


def _gpu_driver(described: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The NVIDIA driver and NVML versions the NVML probe reports."""
    gpu_driver: dict[str, Any] = {}
    for desc in described:
        if desc.get("source") == "nvml":
            gpu_driver.update({k: desc[k] for k in ("driver_version", "nvml_version")
                               if k in desc})
    return gpu_driver


def _gpu_rows(channels: Sequence[Channel]) -> list[dict[str, Any]]:
    """One row per GPU channel: its id, device name, method, source and metadata."""
    return [{"channel": c.id, "name": c.device, "method": c.method, "source": c.source,
             **dict(c.meta)} for c in channels if c.kind == "gpu"]


def _measurable_methods(channels: Sequence[Channel]) -> dict[str, str]:
    """Per kind (in :data:`KINDS` order), the methods its channels are measured by, sorted and
    joined by '+' (sub-zones left out; kinds without a channel absent)."""
    measurable: dict[str, str] = {}
    for kind in KINDS:
        methods = sorted({c.method for c in channels if c.kind == kind and not c.is_subzone})
        if methods:
            measurable[kind] = "+".join(methods)
    return measurable


def daemon_status(setting: str, described: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether an ``energymeter daemon`` serves this machine to this user: ``setting``, the
    ``socket``, ``serving`` and the daemon's facts, or ``reason`` when it does not."""
    from .daemon import query, socket_path

    path = socket_path(setting)
    if path is None:
        return {"setting": setting, "serving": False, "reason": "daemon=off"}
    used = next((d for d in described if d.get("source") == "daemon"), None)
    if used is not None:
        return {"setting": setting, "socket": str(path), "serving": True, **used["daemon"]}
    if not os.path.exists(path):
        return {"setting": setting, "socket": str(path), "serving": False,
                "reason": "no socket there (no daemon runs)"}
    try:
        hello = query(path)
    except OSError as exc:
        return {"setting": setting, "socket": str(path), "serving": False,
                "reason": f"it does not answer this user: {exc}"}
    return {"setting": setting, "socket": str(path), "serving": False,
            "reason": "it answers but serves no RAPL counter", "pid": hello.get("pid")}
