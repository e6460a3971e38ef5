"""Settings, resolved once: explicit argument > ENERGYMETER_* environment > pyproject > default.

Every entry point (``measure()``, ``Meter``, the CLI) builds a :class:`Settings` through
:func:`resolve_settings`; no option is re-declared with its own default elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "ENERGYMETER_"
MIN_INTERVAL_S = 0.001
CARBON_TABLES = ("auto", "ember", "electricitymaps")
CARBON_PROVIDERS = ("none", "electricitymaps", "gb")


@dataclass(frozen=True)
class Settings:
    """Every knob of a measurement. Field names are also the ``ENERGYMETER_<NAME>`` variables
    and the keys of ``[tool.energymeter]`` in ``pyproject.toml``."""

    out: Path = Path("energymeter-runs")
    interval_s: float = 0.1
    gauge_interval_s: float = 1.0
    region: str | None = None
    pue: float = 1.0
    carbon_table: str = "auto"
    carbon_provider: str = "none"
    carbon_poll_s: float = 900.0
    carbon_timeout_s: float = 2.0
    price_per_kwh: float | None = None
    currency: str = "EUR"
    powercap_root: Path = Path("/sys/class/powercap")
    # Where each field's value came from: "argument", "env", "pyproject" or "default".
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")


_SETTING_FIELDS = tuple(f for f in fields(Settings) if f.name != "origins")
_FIELD_NAMES = tuple(f.name for f in _SETTING_FIELDS)


def _convert(name: str, value: Any, where: str) -> Any:
    """Coerce ``value`` to the type of field ``name`` and validate it."""
    if value is None:
        if name in ("region", "price_per_kwh"):
            return None
        raise ConfigError(f"{name} from {where} must not be empty")
    try:
        if name in ("out", "powercap_root"):
            return Path(os.path.expanduser(str(value)))
        if name in ("interval_s", "gauge_interval_s", "pue", "carbon_poll_s", "carbon_timeout_s",
                    "price_per_kwh"):
            number = float(value)
        elif name == "region":
            text = str(value).strip()
            return text or None
        else:
            return str(value).strip().lower() if name != "currency" else str(value).strip().upper()
    except (TypeError, ValueError):
        raise ConfigError(f"{name} from {where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} from {where} must be a finite number, got {value!r}")
    if name == "interval_s" and number < MIN_INTERVAL_S:
        raise ConfigError(
            f"interval_s from {where} is {number!r}; accepted: at least {MIN_INTERVAL_S} s "
            "(the sampler's shortest period), e.g. 0.1"
        )
    if name == "gauge_interval_s" and number <= 0:
        raise ConfigError(f"gauge_interval_s from {where} must be > 0 s, got {number!r}")
    if name == "pue" and number < 1.0:
        raise ConfigError(
            f"pue from {where} is {number!r}; accepted: a power usage effectiveness >= 1.0 "
            "(1.0 = no facility overhead, typical data centres 1.1-1.6)"
        )
    if name in ("carbon_poll_s", "carbon_timeout_s") and number <= 0:
        raise ConfigError(f"{name} from {where} must be > 0 s, got {number!r}")
    if name == "price_per_kwh" and number < 0:
        raise ConfigError(f"price_per_kwh from {where} must be >= 0, got {number!r}")
    return number


def _check_choice(name: str, value: str, where: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} from {where} is {value!r}; accepted: {', '.join(choices)}")


def read_pyproject(cwd: Path | None = None) -> dict[str, Any]:
    """Return ``[tool.energymeter]`` of ``pyproject.toml`` in ``cwd`` (empty if absent)."""
    path = (cwd or Path.cwd()) / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or remove [tool.energymeter]") from exc
    table = data.get("tool", {}).get("energymeter", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.energymeter] in {path} must be a table")
    unknown = sorted(set(table) - set(_FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [tool.energymeter] of {path}; "
            f"accepted: {', '.join(_FIELD_NAMES)}"
        )
    return table


def resolve_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build :class:`Settings` from explicit ``overrides`` (``None`` values are ignored), the
    environment and ``pyproject.toml``. Raises :class:`ConfigError` on any bad value."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(_FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(_FIELD_NAMES)}"
        )
    env = os.environ if env is None else env
    project = read_pyproject(cwd)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for f in _SETTING_FIELDS:
        env_name = ENV_PREFIX + f.name.upper()
        if f.name in overrides:
            values[f.name] = _convert(f.name, overrides[f.name], "argument")
            origins[f.name] = "argument"
        elif env.get(env_name, "") != "":
            values[f.name] = _convert(f.name, env[env_name], f"${env_name}")
            origins[f.name] = "env"
        elif f.name in project:
            values[f.name] = _convert(f.name, project[f.name], "pyproject.toml")
            origins[f.name] = "pyproject"
    settings = dataclasses.replace(Settings(), **values, origins=origins)
    _check_choice("carbon_table", settings.carbon_table, "settings", CARBON_TABLES)
    _check_choice("carbon_provider", settings.carbon_provider, "settings", CARBON_PROVIDERS)
    return settings
