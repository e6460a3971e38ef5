"""What every command of the CLI shares: options generated from the settings' own metadata,
output helpers and the exit code for bad input."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..report.tables import FORMATS
from ..settings import ENERGY_BASES, ENV_PREFIX, setting_field

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("energymeter")

#: Exit code for bad options, settings or runs (as click's own usage errors).
EXIT_USAGE = 2

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def setting_option(name: str) -> Callable[[F], F]:
    """The option of setting ``name`` (flag, help, accepted values, default shown) as its
    field metadata in :mod:`energymeter.settings` declares it. It defaults to ``None`` so that
    the usual resolution applies (option > ``ENERGYMETER_*`` > ``pyproject.toml`` > default)."""
    f = setting_field(name)
    meta = f.metadata
    if meta["flag"] is None:
        raise ValueError(f"setting {name} has no command-line flag")
    help_text = meta["help"]
    if "[default" not in help_text:
        default = "" if f.default is None else f"; default {f.default}"
        help_text = f"{help_text.rstrip('.')} [env {ENV_PREFIX}{name.upper()}{default}]."
    annotation = str(f.type)  # a string: the settings module uses postponed annotations
    if annotation == "bool":  # on/off: --x and --no-x, unset (None) when neither is given
        flag = meta["flag"]
        return click.option(f"{flag}/--no-{flag.removeprefix('--')}", name, default=None,
                            help=help_text)
    if meta["choices"]:
        kind: Any = click.Choice(meta["choices"])
    elif annotation.startswith("float"):
        kind = float
    elif annotation.startswith("Path"):
        kind = click.Path(file_okay=False)
    else:
        kind = None
    return click.option(meta["flag"], name, type=kind, default=None, metavar=meta["metavar"],
                        help=help_text)


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply ``decorators`` in the order written (the first is the top option in --help)."""
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


#: The carbon options shared by ``run`` and ``monitor``.
CARBON_OPTIONS = tuple(setting_option(n) for n in
                       ("region", "pue", "carbon_table", "price_per_kwh", "currency"))

# Checked by check_json_path before the command runs (one `energymeter: error:` line, exit 2).
JSON_OUT = click.option("--json", "json_path", type=click.Path(), default=None,
                        metavar="PATH", help="Also write the report's JSON to PATH (checked "
                                             "before anything runs).")
BASIS = click.option(
    "--basis", type=click.Choice(ENERGY_BASES), default="machine", show_default=True,
    help="Energy basis: machine (the whole machine's, every process on it), attributed (the "
         "run's own share: its processes' CPU time and GPU use, per interval) or net (minus "
         "the idle baseline, for runs measured with --baseline).")
FORMAT = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                      show_default=True, help="Output format.")


# -- output ------------------------------------------------------------------------------------
# C0 controls but tab and newline, DEL, and C1 controls: what a terminal may act on (ESC starts
# escape sequences, BEL rings, CR overwrites a line, U+009B is a one-byte CSI).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str, *, json: bool = False) -> str:
    """``text`` with every control character a terminal could act on written as visible text
    (``\\x1b``; ``\\u001b`` with ``json``, which is valid inside JSON strings). Tab and newline
    are kept: they are the structure of tables and multi-line output."""
    if json:
        return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def echo(message: str = "", *, err: bool = False, nl: bool = True, json: bool = False) -> None:
    """Print ``message`` (stdout, or stderr with ``err``) with its control characters escaped
    (:func:`escape_controls`): every command prints through this, so that names, commands,
    paths and warnings read from runs cannot drive the terminal. ``json``: the message is JSON
    (escapes stay valid JSON)."""
    click.echo(escape_controls(message, json=json), err=err, nl=nl)


def err(message: str) -> None:
    """One line on stderr, prefixed ``energymeter:`` (control characters escaped)."""
    echo(f"energymeter: {message}", err=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Say ``error: message`` on stderr and exit with ``code``."""
    err(f"error: {message}")
    sys.exit(code)


class _StderrHandler(logging.Handler):
    """Library warnings, one line each on stderr (``energymeter: warning: ...``), with one
    ``energymeter:`` prefix whatever the message began with. It remembers the ones that a
    run's report carries too (``in_report``), so that a summary need not repeat them."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().removeprefix("energymeter: ")
        try:
            err(f"{record.levelname.lower()}: {message}")
        except (OSError, ValueError):  # stderr closed: nothing left to tell
            self.handleError(record)
            return
        if getattr(record, "in_report", False):
            self.shown.add(message)


def shown_warnings() -> set[str]:
    """The report warnings already said on stderr as they happened (see :func:`setup_logging`),
    which a summary printed afterwards leaves out."""
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    return set() if handler is None else handler.shown


def setup_logging(quiet: bool = False) -> None:
    """Show the library's warnings (errors only with ``quiet``) on stderr. The level is the
    handler's: the logger itself is left as the host application configured it."""
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        log.addHandler(handler)
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)


_JSON_ACCEPTED = "accepted: a file path in an existing directory this user can write"


def check_json_path(path: str | None) -> None:
    """Exit 2 (before anything runs or is measured) unless ``--json PATH`` can be written: its
    directory exists and is writable, and PATH is not a directory."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        fail(f"--json {path} is a directory; {_JSON_ACCEPTED}")
    if not folder.exists():
        fail(f"--json {path}: the directory {folder} does not exist; {_JSON_ACCEPTED}")
    if not folder.is_dir():
        fail(f"--json {path}: {folder} is not a directory; {_JSON_ACCEPTED}")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"--json {path}: the directory {folder} is not writable; {_JSON_ACCEPTED}")


def write_report_json(report: Any, path: str) -> bool:
    """Write ``report``'s JSON (or a list of reports' JSON) to ``path`` (atomically; the
    user's path, so its folder may be a link); say so and return False on failure."""
    from ..store import write_json_atomic

    data = ([r.to_dict() for r in report] if isinstance(report, (list, tuple))
            else report.to_dict())
    try:
        write_json_atomic(Path(path), data, follow_dir=True)
    except OSError as exc:
        err(f"error: cannot write the report JSON to {path}: {exc}")
        return False
    return True


def load_runs(runs: tuple[str, ...]) -> list[Any]:
    """The reports named by ``runs`` (see :func:`energymeter.analysis.load_reports`), or exit 2
    naming the run that could not be read."""
    from ..analysis import load_reports
    from ..errors import ReportError

    try:
        return load_reports(runs)
    except ReportError as exc:
        fail(str(exc))


def silence_stdout() -> None:
    """Point stdout at /dev/null (its reader has gone), so that no later flush fails."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
