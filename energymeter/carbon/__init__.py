"""Carbon intensity of electricity and the emissions of a measurement.

Offline by default: intensities come from tables shipped with the package (Ember yearly
country data, generation-based; Electricity Maps 2025 yearly zone data, consumption-based).
A live provider (Electricity Maps API, GB Carbon Intensity API) is contacted only when the
user sets ``carbon_provider``. See ``docs/carbon.md``.

>>> from energymeter.carbon import intensity
>>> intensity("SE-SE3").g_per_kwh
20.0
"""

from __future__ import annotations

from .account import J_PER_KWH, CarbonAccount
from .region import detect_timezone, resolve_region, tz_country
from .static import Intensity, RegionInfo, intensity, list_regions

__all__ = [
    "J_PER_KWH",
    "CarbonAccount",
    "Intensity",
    "RegionInfo",
    "detect_timezone",
    "intensity",
    "list_regions",
    "resolve_region",
    "tz_country",
]
