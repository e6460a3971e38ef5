"""``energymeter probes``: what can be measured here, how, and fixes
(:func:`energymeter.probes.inspect.inspect_probes`, rendered here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from ..errors import ConfigError
from ..probes.base import METHOD_MEANING
from ..report.tables import render_table
from .common import CONTEXT, echo, fail, setup_logging


@click.command(context_settings=CONTEXT, short_help="What can be measured here, how, and fixes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def probes(as_json: bool) -> None:
    """Show what can be measured here, how, and how to fix what cannot.

    Lists the CPU, RAPL zones and GPUs found, the channels a run would measure with their
    method (counter: hardware energy counter; integrated: power readings over time; model:
    estimated), and for every unavailable source the reason and the fix. Reads the powercap
    root from ENERGYMETER_POWERCAP_ROOT (or pyproject.toml).

    \b
    Examples:
      energymeter probes
      ENERGYMETER_POWERCAP_ROOT=/host/sys/class/powercap energymeter probes --json
    """
    from ..probes.inspect import inspect_probes

    setup_logging()
    try:
        info = inspect_probes()
    except ConfigError as exc:
        fail(str(exc))
    if as_json:
        echo(json.dumps(info, indent=2, default=str), json=True)
    else:
        echo(format_probes(info), nl=False)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def format_probes(info: Mapping[str, Any]) -> str:
    """The text ``energymeter probes`` prints for :func:`inspect_probes` output."""
    cpu = info["cpu"]
    lines = [f"CPU:   {cpu['model']} ({_plural(cpu['sockets'], 'socket')}, "
             f"{_plural(cpu['logical_cpus'] or 0, 'logical CPU')})"]
    daemon = info.get("daemon") or {}
    if daemon.get("serving"):
        lines.append(f"Daemon: serving RAPL at {daemon.get('socket')} (pid {daemon.get('pid')}, "
                     f"energymeter {daemon.get('version')}, every {daemon.get('interval_s')} s)")
    elif daemon.get("setting") != "off":
        lines.append(f"Daemon: none used ({daemon.get('socket')}: {daemon.get('reason')})")
    zones = info["rapl_zones"]
    root = info["powercap_root"]
    if zones:
        shown = ", ".join(f"{z.get('name')} -> {z.get('channel')}" for z in zones)
        lines.append(f"RAPL:  {_plural(len(zones), 'zone')} under {root}: {shown}")
    else:
        lines.append(f"RAPL:  no readable zone under {root}")
    for control, what in (info.get("rapl_control_types") or {}).items():
        lines.append(f"       {control}: {what}")
    gpus = info["gpus"]
    if gpus:
        driver = info.get("gpu_driver", {}).get("driver_version")
        lines.append(f"GPUs:  {len(gpus)}" + (f" (driver {driver})" if driver else ""))
        for g in gpus:
            extra = ", ".join(f"{k} {g[k]}" for k in ("uuid", "power_limit_w") if g.get(k))
            lines.append(f"       {g['channel']}: {g['name']}" + (f" ({extra})" if extra else ""))
            if g.get("mig_share") is not None:
                basis = g.get("mig_share_basis") or g.get("mig_share_method")
                lines.append(f"         MIG: {g['mig_share']:.1%} of the GPU's energy attributed "
                             f"to the visible slices: {basis}")
            elif g.get("mig_share_unavailable"):
                lines.append(f"         MIG: no share ({g['mig_share_unavailable']})")
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
