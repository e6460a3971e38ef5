"""What ``energymeter probes`` shows: the hardware found, the channels a run would measure and
by which method, and every source that could not be used, with the reason and the fix.

:func:`inspect_probes` runs discovery afresh (with the same settings a run would use) and returns
a JSON-able dict; :func:`format_probes` turns it into text. Nothing here prints.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

from .probes.base import KINDS

#: What each measurement method means, shown beside the channels.
METHOD_MEANING = {
    "counter": "hardware energy counter (measured)",
    "integrated": "power readings integrated over time (measured)",
    "model": "estimated by a model, not measured",
}


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_facts(cpuinfo_text: str | None = None) -> dict[str, Any]:
    """CPU model name, sockets and logical/physical CPU counts of this machine."""
    from .probes.cpumodel import count_packages, model_name_from_cpuinfo

    text = _read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    physical: int | None = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "model": model_name_from_cpuinfo(text) or platform.processor() or "unknown CPU",
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
    other keyword arguments are :class:`~energymeter.config.Settings` fields
    (``powercap_root``...). Returns ``cpu``, ``powercap_root``, ``rapl_zones``, ``gpus``,
    ``channels`` (each with ``measured``), ``measurable`` (method per kind), ``gauges``,
    ``unavailable`` (``source``, ``reason``, ``hint``), ``notes`` and ``probes`` (raw
    descriptions). Raises :class:`~energymeter.errors.ConfigError` for bad settings.
    """
    from .config import resolve_settings
    from .probes import DiscoveryContext, discover

    env = dict(os.environ if env is None else env)
    s = resolve_settings({k: v for k, v in settings.items() if v is not None}, env=env)
    discovery = discover(DiscoveryContext(powercap_root=s.powercap_root, pid=os.getpid(),
                                          interval_s=s.interval_s, pynvml=pynvml, env=env))
    try:
        described = [p.describe() for p in discovery.probes]
        channels = [c for p in discovery.probes for c in p.channels]
        gauges = list(dict.fromkeys(g for p in discovery.probes for g in p.gauge_names))
    finally:
        for probe in discovery.probes:
            probe.close()

    rapl_zones: list[dict[str, Any]] = []
    gpus: list[dict[str, Any]] = []
    gpu_driver: dict[str, Any] = {}
    for desc in described:
        if desc.get("source") == "rapl":
            rapl_zones += list(desc.get("zones", []))
        if desc.get("source") == "nvml":
            gpu_driver.update({k: desc[k] for k in ("driver_version", "nvml_version")
                               if k in desc})
    for c in channels:
        if c.kind == "gpu":
            gpus.append({"channel": c.id, "name": c.device, "method": c.method,
                         "source": c.source, **dict(c.meta)})

    measurable: dict[str, str] = {}
    for kind in KINDS:
        methods = sorted({c.method for c in channels if c.kind == kind and c.part_of is None})
        if methods:
            measurable[kind] = "+".join(methods)
    return {
        "cpu": cpu_facts(cpuinfo_text),
        "powercap_root": str(s.powercap_root),
        "powercap_root_origin": s.origin("powercap_root"),
        "rapl_zones": rapl_zones,
        "gpus": gpus,
        "gpu_driver": gpu_driver,
        "channels": [{**c.to_dict(), "measured": c.method != "model"} for c in channels],
        "measurable": measurable,
        "gauges": gauges,
        "unavailable": [u.to_dict() for u in discovery.unavailable],
        "notes": list(discovery.notes),
        "probes": described,
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def format_probes(info: Mapping[str, Any]) -> str:
    """The text ``energymeter probes`` prints for :func:`inspect_probes` output."""
    from .compare import render_table

    cpu = info["cpu"]
    lines = [f"CPU:   {cpu['model']} ({_plural(cpu['sockets'], 'socket')}, "
             f"{_plural(cpu['logical_cpus'] or 0, 'logical CPU')})"]
    zones = info["rapl_zones"]
    root = info["powercap_root"]
    if zones:
        shown = ", ".join(f"{z.get('name')} -> {z.get('channel')}" for z in zones)
        lines.append(f"RAPL:  {_plural(len(zones), 'zone')} under {root}: {shown}")
    else:
        lines.append(f"RAPL:  no readable zone under {root}")
    gpus = info["gpus"]
    if gpus:
        driver = info.get("gpu_driver", {}).get("driver_version")
        lines.append(f"GPUs:  {len(gpus)}" + (f" (driver {driver})" if driver else ""))
        for g in gpus:
            extra = ", ".join(f"{k} {g[k]}" for k in ("uuid", "power_limit_w") if g.get(k))
            lines.append(f"       {g['channel']}: {g['name']}" + (f" ({extra})" if extra else ""))
    else:
        lines.append("GPUs:  none found")

    lines += ["", "Channels a run measures:"]
    if info["channels"]:
        rows = [[c["id"] + (f" (in {c['part_of']})" if c.get("part_of") else ""), c["kind"],
                 c["device"] or "-", c["source"], c["method"],
                 METHOD_MEANING.get(c["method"], "")] for c in info["channels"]]
        lines.append(render_table(("channel", "kind", "device", "source", "method", "meaning"),
                                  rows, ["l"] * 6))
    else:
        lines.append("  none: no energy can be measured here")
    if info["measurable"]:
        lines.append("By kind: " + ", ".join(f"{k} {m}" for k, m in info["measurable"].items()))
    if info["gauges"]:
        lines.append("Gauges: " + ", ".join(info["gauges"]))

    if info["unavailable"]:
        lines += ["", "Unavailable:"]
        for u in info["unavailable"]:
            lines.append(f"  {u['source']}: {u['reason']}")
            if u.get("hint"):
                lines.append(f"    fix: {u['hint']}")
    if info["notes"]:
        lines += ["", "Notes:"]
        lines += [f"  {note}" for note in info["notes"]]
    return "\n".join(lines) + "\n"
