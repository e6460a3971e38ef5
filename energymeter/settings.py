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

from ._lazy import LazyLogger
from .errors import ConfigError

log = LazyLogger("energymeter")

ENV_PREFIX = "ENERGYMETER_"
MIN_INTERVAL_S = 0.001

#: ``ENERGYMETER_*`` variables that are not settings (no warning for them): the run id and
#: directory ``energymeter run`` gives the measured command, and what the live carbon
#: providers read (an API token, endpoint URLs for tests and proxies).
NON_SETTING_ENV = (
    "ENERGYMETER_RUN_ID",
    "ENERGYMETER_RUN_DIR",
    "ENERGYMETER_RUN_TAGS",
    "ENERGYMETER_GROUP_ID",
    "ENERGYMETER_WARMUP",
    "ENERGYMETER_ELECTRICITYMAPS_TOKEN",
    "ENERGYMETER_ELECTRICITYMAPS_URL",
    "ENERGYMETER_GB_CARBON_URL",
    "ENERGYMETER_JOB_ID",
    "ENERGYMETER_NODE",
)

#: Upper bounds, each with its reason (a larger value is a typo or a unit mix-up):
#: sampling and gauge periods: an hour (a longer period leaves no timeline and no peaks; totals
#: come from boundary reads whatever the period).
MAX_INTERVAL_S = 3600.0
#: live carbon polls: a day (grid intensity changes every hour or half hour).
MAX_CARBON_POLL_S = 86400.0
#: one request to a live carbon provider: five minutes.
MAX_CARBON_TIMEOUT_S = 300.0
#: power usage effectiveness: 3 (surveyed data centres average about 1.5, the least efficient
#: about 2.5; above 3 the facility uses twice the IT load for itself: not a data centre).
MAX_PUE = 3.0
#: electricity price: a million per kWh, beyond any tariff in any currency.
MAX_PRICE_PER_KWH = 1e6
#: The largest cpu_tdp_w: eight 500 W packages (the biggest servers have 8 sockets).
MAX_CPU_TDP_W = 4000.0
#: the currency: a code or symbol (EUR, SEK, $) of at most this many characters.
MAX_CURRENCY_CHARS = 8

#: Accepted values of the settings that are a choice (the CLI and carbon code read them here).
CARBON_TABLES = ("auto", "ember", "electricitymaps")
CARBON_PROVIDERS = ("none", "electricitymaps", "gb")
#: What each rank of a distributed job measures (docs/distributed.md): ``node``: local rank 0
#: measures the node, the others record phases and logs; ``own``: each rank its own GPU(s);
#: ``all``: each rank everything it sees.
RANK_MODES = ("node", "own", "all")
#: The energy bases a figure can be on (energymeter.report.bases): the whole machine's, the
#: run's own share, or net of the idle baseline.
ENERGY_BASES = ("machine", "attributed", "net")

Parser = Callable[[str, Any, str], Any]
"""``parse(name, value, where)``: the value converted to the field's type, or ConfigError."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- parsers -------------------------------------------------------------------------------------
def _number(name: str, value: Any, where: str) -> float:
    if isinstance(value, bool):  # True is 1 to Python, not a number of seconds to anyone
        raise ConfigError(f"{name} from {where} must be a number, not true/false "
                          f"(got {value!r})")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} from {where} must be a number, got {_show(value)}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} from {where} must be a finite number, got {_show(value)}")
    return number


def _at_most(name: str, number: float, maximum: float, where: str, unit: str,
             why: str) -> float:
    if number > maximum:
        raise ConfigError(f"{name} from {where} is {number!r}; accepted: at most "
                          f"{maximum:g}{unit} ({why})")
    return number


def _seconds(minimum: float = 0.0, *, inclusive: bool = False, example: str = "",
             maximum: float = MAX_INTERVAL_S, why: str = "an hour") -> Parser:
    def parse(name: str, value: Any, where: str) -> float:
        number = _number(name, value, where)
        if inclusive and number < minimum:
            raise ConfigError(f"{name} from {where} is {number!r}; accepted: at least "
                              f"{minimum} s{example}")
        if not inclusive and number <= minimum:
            raise ConfigError(f"{name} from {where} must be > {minimum:g} s, got {number!r}")
        return _at_most(name, number, maximum, where, " s", why)
    return parse


def _pue(name: str, value: Any, where: str) -> float:
    number = _number(name, value, where)
    if number < 1.0:
        raise ConfigError(
            f"{name} from {where} is {number!r}; accepted: a power usage effectiveness >= 1.0 "
            "(1.0 = no facility overhead, typical data centres 1.1-1.6)")
    return _at_most(name, number, MAX_PUE, where, "",
                    "data centres average about 1.5, the least efficient about 2.5")


def _price(name: str, value: Any, where: str) -> float:
    number = _number(name, value, where)
    if number < 0:
        raise ConfigError(f"{name} from {where} must be >= 0, got {number!r}")
    return _at_most(name, number, MAX_PRICE_PER_KWH, where, " per kWh",
                    "beyond any tariff in any currency")


def _cpu_tdp(name: str, value: Any, where: str) -> float:
    number = _number(name, value, where)
    if number <= 0:
        raise ConfigError(f"{name} from {where} must be > 0 W, got {number!r}; accepted: the "
                          "full-load power of the CPUs this machine sees, e.g. 8.5")
    return _at_most(name, number, MAX_CPU_TDP_W, where, " W",
                    "more than eight of the largest server packages")


def _path(name: str, value: Any, where: str) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} from {where} must be a path (a string), got {_show(value)}")
    if not value.strip():
        raise ConfigError(f"{name} from {where} must be a non-empty path, got {value!r}")
    return Path(os.path.expanduser(value))


def _region(name: str, value: Any, where: str) -> str | None:
    if not isinstance(value, str):
        raise ConfigError(f"{name} from {where} must be a string, a region code such as SE, "
                          f"SWE or SE-SE3, got {_show(value)}")
    return value.strip() or None


def _currency(name: str, value: Any, where: str) -> str:
    text = value.strip().upper() if isinstance(value, str) else ""
    if not 1 <= len(text) <= MAX_CURRENCY_CHARS or not text.isprintable():
        raise ConfigError(f"{name} from {where} must be a currency code or symbol of 1 to "
                          f"{MAX_CURRENCY_CHARS} characters (e.g. EUR), got {_show(value)}")
    return text


def _redact(name: str, value: Any, where: str) -> str:
    """``default``, ``none``, or extra regular expressions separated by spaces (a list of them
    in pyproject.toml), each checked here (energymeter/redact.py applies them)."""
    import re

    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} from {where} must be a string, got {_show(value)}; accepted: "
                          "default, none, or regular expressions separated by spaces")
    text = " ".join(value.split())
    if text.lower() in ("", "default", "none"):
        return text.lower() or "default"
    for pattern in text.split(" "):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{name} from {where}: {pattern!r} is not a valid regular expression ({exc}); "
                "accepted: default, none, or regular expressions separated by spaces (\\s for "
                "a space inside one)") from None
    return text


def _daemon(name: str, value: Any, where: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = value.strip() if isinstance(value, str) else ""
    if text.lower() in ("auto", "off"):
        return text.lower()
    if not text:
        raise ConfigError(f"{name} from {where} must be auto, off or the path of the daemon's "
                          f"socket, got {_show(value)}")
    return os.path.expanduser(text)


def _module(name: str, value: Any, where: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not all(part.isidentifier() for part in text.split(".")):
        raise ConfigError(f"{name} from {where} must be a Python module name such as pynvml, "
                          f"got {_show(value)}")
    return text


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(name: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} from {where} is {_show(value)}; accepted: "
                      f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)}")


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
                 example=" (the sampler's shortest period), e.g. 0.1",
                 why="an hour: a longer period leaves no timeline and no peaks"),
        f"Sampling interval in seconds, {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} (totals come "
        "from boundary reads and do not depend on it).", flag="--interval", metavar="SECONDS"))
    gauge_interval_s: float = field(default=1.0, metadata=_meta(
        _seconds(why="an hour"),
        "Period of memory/utilisation gauges in seconds (at most an hour)."))
    region: str | None = field(default=None, metadata=_meta(
        _region, "Carbon region: country (SE, SWE) or grid zone (SE-SE3); see `energymeter "
        "carbon --list` [default: from the time zone].", flag="--region", metavar="CODE",
        optional=True))
    pue: float = field(default=1.0, metadata=_meta(
        _pue, f"Power usage effectiveness of the facility, 1.0 to {MAX_PUE:g}.", flag="--pue"))
    carbon_table: str = field(default="auto", metadata=_meta(
        _choice(CARBON_TABLES), "Carbon-intensity table.", flag="--carbon-table",
        choices=CARBON_TABLES))
    carbon_provider: str = field(default="none", metadata=_meta(
        _choice(CARBON_PROVIDERS), "Live carbon-intensity provider (network only when set).",
        choices=CARBON_PROVIDERS))
    carbon_poll_s: float = field(default=900.0, metadata=_meta(
        _seconds(maximum=MAX_CARBON_POLL_S,
                 why="a day: grid intensity changes every hour or half hour"),
        "Seconds between polls of the live carbon provider."))
    carbon_timeout_s: float = field(default=2.0, metadata=_meta(
        _seconds(maximum=MAX_CARBON_TIMEOUT_S, why="five minutes"),
        "Timeout of one request to the live carbon provider, in seconds."))
    price_per_kwh: float | None = field(default=None, metadata=_meta(
        _price, "Electricity price per kWh, to report the cost.", flag="--price",
        metavar="PRICE", optional=True))
    currency: str = field(default="EUR", metadata=_meta(
        _currency, "Currency of the price.", flag="--currency"))
    powercap_root: Path = field(default=Path("/sys/class/powercap"), metadata=_meta(
        _path, "RAPL sysfs root (containers, tests)."))
    baseline_s: float = field(default=0.0, metadata=_meta(
        _seconds(0.0, inclusive=True, example=" (0: no baseline), e.g. 30"),
        "Seconds of idle measured before the run, to report gross, idle and net energy (0: "
        "none; this host's baseline from the last hour is reused).", flag="--baseline",
        metavar="SECONDS"))
    cpu_tdp_w: float | None = field(default=None, metadata=_meta(
        _cpu_tdp, "Full-load power (W) of the CPUs this machine sees, for the estimated CPU "
        "model where no energy counter is readable (e.g. a cloud provider's figure for this "
        "VM) [default: from the CPU TDP table].", optional=True))
    ranks: str = field(default="node", metadata=_meta(
        _choice(RANK_MODES), "Under torchrun, SLURM or MPI, what each rank measures: node "
        "(local rank 0 measures the node's devices, other ranks record phases and logs only), "
        "own (each rank its own GPU(s) and its share of the CPU), all (every rank everything "
        "it sees; merging de-duplicates). See docs/distributed.md.", flag="--ranks",
        choices=RANK_MODES))
    daemon: str = field(default="auto", metadata=_meta(
        _daemon, "Read RAPL through an `energymeter daemon`: auto (its default socket "
        "/run/energymeter/energymeter.sock when it answers), off, or the socket's path.",
        flag="--daemon", metavar="auto|off|PATH"))
    nvml_module: str = field(default="pynvml", metadata=_meta(
        _module, "The NVML bindings module to import (default pynvml from nvidia-ml-py; "
        "another name for simulators and tests)."))
    redact: str = field(default="default", metadata=_meta(
        _redact, "What is hidden of the recorded command: default (secrets: token/password/"
        "key options, NAME=value, Authorization headers, URL passwords; see docs/privacy.md), "
        "none, or extra regular expressions separated by spaces."))
    wait_orphans: bool = field(default=False, metadata=_meta(
        _bool, "When the command exits, measure on until the processes it left running "
        "(background jobs, daemons) have ended too, passing signals on to them (`energymeter "
        "run` only) [default: false: they are named in a warning and the run ends with the "
        "command, as a script ends without waiting for its background jobs].",
        flag="--wait-orphans"))
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {path}: it is not UTF-8 text (byte {exc.start}); TOML "
                          "files are UTF-8: fix or remove it") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or remove [tool.energymeter]") from exc
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"[tool] in {path} must be a table (of tools' settings), got "
                          f"{_show(tool)}")
    table = tool.get("energymeter", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.energymeter] in {path} must be a table, got {_show(table)}")
    unknown = sorted(set(table) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [tool.energymeter] of {path}; "
            f"accepted: {', '.join(FIELD_NAMES)}"
        )
    return table


_warned_env: set[str] = set()


def warn_unknown_env(env: Mapping[str, str]) -> None:
    """Log a warning, once per process per name, for each ``ENERGYMETER_*`` variable of
    ``env`` that is neither a setting nor in :data:`NON_SETTING_ENV` (a misspelling does
    nothing otherwise), naming the closest known variable."""
    known = {ENV_PREFIX + name.upper() for name in FIELD_NAMES} | set(NON_SETTING_ENV)
    for name in list(env):
        if not name.startswith(ENV_PREFIX) or name in known or name in _warned_env:
            continue
        _warned_env.add(name)
        import difflib  # only now: importing energymeter stays cheap

        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]}?" if close else "the settings are "
                + ", ".join(ENV_PREFIX + n.upper() for n in FIELD_NAMES))
        log.warning("%s is not an energymeter setting and is ignored; %s", name, hint)


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
    warn_unknown_env(env)
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
