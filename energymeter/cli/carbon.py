"""``energymeter carbon [REGION]``: the carbon intensity a run would use, or every region."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ..errors import ConfigError
from ..report.tables import format_number, render_table
from .common import CONTEXT, echo, fail, options, setting_option

_REGION_SOURCES = {
    "argument": "given", "env": "from $ENERGYMETER_REGION",
    "pyproject": "from [tool.energymeter] in pyproject.toml",
    "timezone": "inferred from the time zone", "default": "not set: world average",
}


@click.command(context_settings=CONTEXT, short_help="Carbon intensity of a region, or --list.")
@click.argument("region", required=False)
@click.option("--list", "list_all", is_flag=True, help="List every region code and intensity.")
@options(setting_option("carbon_table"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def carbon(region: str | None, list_all: bool, carbon_table: str | None, as_json: bool) -> None:
    """Show the carbon intensity of electricity used for REGION (or for this machine).

    Without REGION, the region a run would use: ENERGYMETER_REGION, pyproject.toml, else
    inferred from the time zone, else the world average. Intensities come from tables shipped
    with energymeter (no network): Ember (countries, generation-based) and Electricity Maps
    2025 (grid zones, consumption-based).

    \b
    Examples:
      energymeter carbon
      energymeter carbon SE-SE3
      energymeter carbon --list --carbon-table electricitymaps
      energymeter carbon FR --json
    """
    from ..carbon import intensity, list_regions, resolve_region
    from ..settings import resolve_settings

    try:
        settings = resolve_settings({"carbon_table": carbon_table, "region": region})
        table = settings.carbon_table
        if list_all:
            if region is not None:
                raise ConfigError("give either REGION or --list, not both")
            regions = list_regions(table)
            if as_json:
                echo(json.dumps([r._asdict() for r in regions], indent=2), json=True)
                return
            rows = [[r.code, r.name, format_number(r.g_per_kwh, 1), r.basis, r.source]
                    for r in regions]
            echo(render_table(("code", "name", "gCO2e/kWh", "basis", "source"), rows,
                              ["l", "l", "r", "l", "l"]))
            return
        code, source, warnings = resolve_region(settings)
        found = intensity(code, table)
    except ConfigError as exc:
        fail(str(exc))
    if as_json:
        echo(json.dumps({**asdict(found), "region_source": source,
                         "warnings": warnings}, indent=2), json=True)
        return
    lines = [
        f"region:     {found.region} ({found.name}), {_REGION_SOURCES.get(source, source)}",
        f"intensity:  {format_number(found.g_per_kwh, 1)} gCO2e/kWh (annual average, "
        "lifecycle)",
        f"basis:      {found.basis}",
        f"source:     {found.source}",
        f"year:       {found.year}",
        f"table:      {found.table}",
    ]
    lines += [f"warning:    {w}" for w in warnings]
    echo("\n".join(lines))
