"""Settings, resolved once: explicit argument > ENERGYMETER_* environment > pyproject > default.

This module is the only home of every setting's default, accepted values, parsing and help text
(the metadata of each :class:`Settings` field). Every entry point (``measure()``, ``Meter``, the
CLI, whose options are generated from the same metadata) builds a :class:`Settings` through
:func:`resolve_settings`; no option is re-declared with its own default elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "ENERGYMETER_"
MIN_INTERVAL_S = 0.001

#: Accepted values of the settings that are a choice (the CLI and carbon code read them here).
CARBON_TABLES = ("auto", "ember", "electricitymaps")
CARBON_PROVIDERS = ("none", "electricitymaps", "gb")

Parser = Callable[[str, Any, str], Any]
"""``parse(name, value, where)``: the value converted to the field's type, or ConfigError."""


# -- parsers -------------------------------------------------------------------------------------
def _number(name: str, value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} from {where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} from {where} must be a finite number, got {value!r}")
    return number


def _seconds(minimum: float = 0.0, *, inclusive: bool = False,
             example: str = "") -> Parser:
    def parse(name: str, value: Any, where: str) -> float:
        number = _number(name, value, where)
        if inclusive and number < minimum:
            raise ConfigError(f"{name} from {where} is {number!r}; accepted: at least "
                              f"{minimum} s{example}")
        if not inclusive and number <= minimum:
            raise ConfigError(f"{name} from {where} must be > {minimum:g} s, got {number!r}")
        return number
    return parse


def _pue(name: str, value: Any, where: str) -> float:
    number = _number(name, value, where)
    if number < 1.0:
        raise ConfigError(
            f"{name} from {where} is {number!r}; accepted: a power usage effectiveness >= 1.0 "
            "(1.0 = no facility overhead, typical data centres 1.1-1.6)")
    return number


def _price(name: str, value: Any, where: str) -> float:
    number = _number(name, value, where)
    if number < 0:
        raise ConfigError(f"{name} from {where} must be >= 0, got {number!r}")
    return number


def _path(name: str, value: Any, where: str) -> Path:
    return Path(os.path.expanduser(str(value)))


def _text(name: str, value: Any, where: str) -> str | None:
    return str(value).strip() or None


def _upper(name: str, value: Any, where: str) -> str:
    return str(value).strip().upper()


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(name: str, value: Any, where: str) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"{name} from {where} is {value!r}; accepted: {', '.join(choices)}")
        return text
    return parse


def _meta(parse: Parser, help: str, *, flag: str | None = None, metavar: str | None = None,
          choices: tuple[str, ...] | None = None, optional: bool = False) -> dict[str, Any]:
    """Field metadata: ``parse``, ``help``, the CLI ``flag`` (None: not a CLI option),
    ``metavar``, ``choices`` and whether ``None`` is a valid value (``optional``)."""
    return {"parse": parse, "help": help, "flag": flag, "metavar": metavar, "choices": choices,
            "optional": optional}


@dataclass(frozen=True)
class Settings:
    """Every knob of a measurement. Field names are also the ``ENERGYMETER_<NAME>`` variables
    and the keys of ``[tool.energymeter]`` in ``pyproject.toml``."""

    out: Path = field(default=Path("energymeter-runs"), metadata=_meta(
        _path, "Folder of run directories and the runs.csv ledger.", flag="--out",
        metavar="DIR"))
    interval_s: float = field(default=0.1, metadata=_meta(
        _seconds(MIN_INTERVAL_S, inclusive=True,
                 example=" (the sampler's shortest period), e.g. 0.1"),
        "Sampling interval in seconds (totals come from boundary reads and do not depend on "
        "it).", flag="--interval", metavar="SECONDS"))
    gauge_interval_s: float = field(default=1.0, metadata=_meta(
        _seconds(), "Period of memory/utilisation gauges in seconds."))
    region: str | None = field(default=None, metadata=_meta(
        _text, "Carbon region: country (SE, SWE) or grid zone (SE-SE3); see `energymeter "
        "carbon --list` [default: from the time zone].", flag="--region", metavar="CODE",
        optional=True))
    pue: float = field(default=1.0, metadata=_meta(
        _pue, "Power usage effectiveness of the facility, >= 1.0.", flag="--pue"))
    carbon_table: str = field(default="auto", metadata=_meta(
        _choice(CARBON_TABLES), "Carbon-intensity table.", flag="--carbon-table",
        choices=CARBON_TABLES))
    carbon_provider: str = field(default="none", metadata=_meta(
        _choice(CARBON_PROVIDERS), "Live carbon-intensity provider (network only when set).",
        choices=CARBON_PROVIDERS))
    carbon_poll_s: float = field(default=900.0, metadata=_meta(
        _seconds(), "Seconds between polls of the live carbon provider."))
    carbon_timeout_s: float = field(default=2.0, metadata=_meta(
        _seconds(), "Timeout of one request to the live carbon provider, in seconds."))
    price_per_kwh: float | None = field(default=None, metadata=_meta(
        _price, "Electricity price per kWh, to report the cost.", flag="--price",
        metavar="PRICE", optional=True))
    currency: str = field(default="EUR", metadata=_meta(
        _upper, "Currency of the price.", flag="--currency"))
    powercap_root: Path = field(default=Path("/sys/class/powercap"), metadata=_meta(
        _path, "RAPL sysfs root (containers, tests)."))
    # Where each field's value came from: "argument", "env", "pyproject" or "default".
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")


SETTING_FIELDS = tuple(f for f in fields(Settings) if f.name != "origins")
FIELD_NAMES = tuple(f.name for f in SETTING_FIELDS)
_BY_NAME = {f.name: f for f in SETTING_FIELDS}


def default(name: str) -> Any:
    """The default of setting ``name`` (the one place defaults are declared)."""
    return _BY_NAME[name].default


def setting_field(name: str) -> dataclasses.Field[Any]:
    """The dataclass field of setting ``name`` (its ``metadata`` has parse, help, flag...)."""
    return _BY_NAME[name]


def parse_setting(name: str, value: Any, where: str) -> Any:
    """``value`` of setting ``name`` converted and validated; ``where`` names its origin in
    error messages. Raises :class:`ConfigError` saying what is accepted."""
    meta = _BY_NAME[name].metadata
    if value is None:
        if meta["optional"]:
            return None
        raise ConfigError(f"{name} from {where} must not be empty")
    return meta["parse"](name, value, where)


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
    unknown = sorted(set(table) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [tool.energymeter] of {path}; "
            f"accepted: {', '.join(FIELD_NAMES)}"
        )
    return table


def resolve_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pyproject: bool = True,
) -> Settings:
    """Build :class:`Settings` from explicit ``overrides`` (``None`` values are ignored), the
    environment and ``pyproject.toml`` of ``cwd`` (default: the working directory; not read at
    all with ``pyproject=False``, e.g. to rebuild a run from its recorded settings alone).
    Raises :class:`ConfigError` on any bad value."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(FIELD_NAMES)}"
        )
    env = os.environ if env is None else env
    project = read_pyproject(cwd) if pyproject else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in FIELD_NAMES:
        env_name = ENV_PREFIX + name.upper()
        if name in overrides:
            values[name] = parse_setting(name, overrides[name], "argument")
            origins[name] = "argument"
        elif env.get(env_name, "") != "":
            values[name] = parse_setting(name, env[env_name], f"${env_name}")
            origins[name] = "env"
        elif name in project:
            values[name] = parse_setting(name, project[name], "pyproject.toml")
            origins[name] = "pyproject"
    return dataclasses.replace(Settings(), **values, origins=origins)


def settings_dict(settings: Settings) -> dict[str, Any]:
    """``settings`` as plain JSON data (paths as strings) with the origin of each value: what a
    report records under ``settings``."""
    out: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = getattr(settings, name)
        out[name] = str(value) if isinstance(value, Path) else value
    out["origins"] = {k: settings.origin(k) for k in FIELD_NAMES}
    return out
