"""Run a command under a :class:`~energymeter.Meter` (what ``energymeter run`` does).

:func:`run_command` checks the command, starts the meter in this process, then the child with
:class:`subprocess.Popen` (no pipes: the child's stdin, stdout and stderr are ours, byte for
byte). The meter's process probe measures this process's tree, which holds the child and every
grandchild. The child's exit code comes back in :class:`RunResult`, or ``128 + N`` when it died
of signal ``N``.

Signals sent to this process are forwarded to the child as :mod:`.signals` describes (the run
is then ``interrupted``); this process never dies of them. When :func:`run_command` is called
outside the main thread (where signal handlers cannot be set) no signal is forwarded.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EnergyMeterError
from ..report import Report
from .meter import RUN_ID_ENV, Meter, Snapshot
from .signals import (
    FORWARDED_ONLY,
    INTERRUPTING,
    Forwarder,
    SignalGate,
    exit_code_of,
    foreground_job,
    isolate_child,
)

#: The most often a live status callback is called.
STATUS_PERIOD_S = 1.0
#: The longest wait between two looks at the child, should its SIGCHLD go astray.
_POLL_S = 0.25

log = logging.getLogger("energymeter")

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")

#: The variable through which the command learns its run directory.
RUN_DIR_ENV = "ENERGYMETER_RUN_DIR"


class RunError(EnergyMeterError):
    """``energymeter run`` could not run the command (or not write its report).

    ``exit_code`` is what the CLI exits with: 127 (not found), 126 (not executable), or the
    child's own code when only the report could not be written. ``report`` is the report of
    the run when one was written."""

    def __init__(self, message: str, exit_code: int, report: Report | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


class CommandNotFoundError(RunError):
    """The command does not exist (exit code 127, as in a shell)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 127)


class CommandNotExecutableError(RunError):
    """The command exists but cannot be executed (exit code 126, as in a shell)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 126)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_command` returns: the exit code to pass on and the run's report."""

    exit_code: int
    report: Report


# -- the command -------------------------------------------------------------------------------
def _check_file(path: str, shown: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CommandNotFoundError(f"{shown}: no such file") from None
    except NotADirectoryError:
        raise CommandNotFoundError(f"{shown}: no such file (a parent is not a directory)") \
            from None
    except PermissionError:
        raise CommandNotExecutableError(f"{shown}: permission denied") from None
    if stat.S_ISDIR(st.st_mode):
        raise CommandNotExecutableError(f"{shown}: is a directory, not a program")
    if not os.access(path, os.X_OK):
        raise CommandNotExecutableError(
            f"{shown}: permission denied (not executable; `chmod +x {shown}` or run it through "
            "its interpreter, e.g. `python script.py`)")
    return path


def resolve_program(program: str, env: Mapping[str, str] | None = None) -> str:
    """The path that executing ``program`` would run, searched in ``PATH`` as a shell does.

    Raises :class:`CommandNotFoundError` (exit 127) or :class:`CommandNotExecutableError`
    (exit 126: a directory, or a file without execute permission)."""
    if not program:
        raise CommandNotFoundError("the command is empty; give a program to run, e.g. "
                                   "`energymeter run -- python train.py`")
    if "/" in program:
        return _check_file(program, program)
    env = os.environ if env is None else env
    path_var = env.get("PATH", os.defpath)
    denied: str | None = None
    for folder in path_var.split(os.pathsep):
        candidate = os.path.join(folder or ".", program)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        raise CommandNotExecutableError(f"{program}: permission denied ({denied} is not "
                                        "executable)")
    raise CommandNotFoundError(f"{program}: command not found (searched PATH)")


def build_argv(cmd: Sequence[str], *, shell: bool = False) -> list[str]:
    """The argv to execute: ``cmd`` itself, or ``["sh", "-c", " ".join(cmd)]`` with ``shell``."""
    cmd = [str(c) for c in cmd]
    if not cmd:
        raise CommandNotFoundError("no command given; e.g. `energymeter run -- python train.py`")
    if shell:
        return ["sh", "-c", " ".join(cmd)]
    return cmd


# Programs that run a script named by a later argument: a run of ``python train.py`` is named
# after ``train``, which is what a user looks for in a list of runs.
_INTERPRETERS = re.compile(r"^(python[0-9.]*|pypy[0-9.]*|bash|sh|zsh|node|ruby|perl|Rscript"
                           r"|julia|torchrun|accelerate|deepspeed)$")


def default_name(cmd: Sequence[str], *, shell: bool = False) -> str:
    """A run's default name: the script's stem when the program is an interpreter
    (``python train.py`` → ``train``, not with ``-c``/``-m``), else the program's base name (the
    first word with ``shell``)."""
    words = [str(c) for c in cmd]
    if shell:
        words = " ".join(words).split()
        # Skip leading variable assignments (``FOO=1 python x.py``).
        words = words[next((i for i, w in enumerate(words) if not _ASSIGNMENT.match(w)),
                           len(words)):] or ["sh"]
    if not words:
        return "run"
    program = os.path.basename(words[0].rstrip("/")) or "run"
    if _INTERPRETERS.match(program):
        args = iter(words[1:])
        for arg in args:
            if arg in ("-c", "-m", "-e", "--"):
                break
            if arg in ("-X", "-W"):  # python options whose value is the next word
                next(args, None)
            elif not arg.startswith("-") and any(ch.isalpha() for ch in arg):
                stem = os.path.splitext(os.path.basename(arg.rstrip("/")))[0]
                return stem or program
    return program


# -- run ---------------------------------------------------------------------------------------
def run_command(
    cmd: Sequence[str],
    *,
    shell: bool = False,
    name: str | None = None,
    on_status: Callable[[Snapshot], None] | None = None,
    status_period_s: float = STATUS_PERIOD_S,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> RunResult:
    """Run ``cmd`` as a child process and measure it; return its exit code and report.

    ``shell``: run ``sh -c " ".join(cmd)``. ``name``: the run's name (default: the program's
    base name). ``on_status``: called with a :class:`~.meter.Snapshot` at most every
    ``status_period_s`` seconds while the child runs (live displays). ``env``: the environment
    the settings are read from and the child gets (default ``os.environ``), plus
    ``ENERGYMETER_RUN_ID`` and ``ENERGYMETER_RUN_DIR``. Other keyword arguments are
    :class:`~energymeter.Settings` fields (``None`` = not set).

    Raises :class:`CommandNotFoundError` / :class:`CommandNotExecutableError` before anything
    is measured or written, and :class:`~energymeter.errors.ConfigError` for bad settings,
    before the child starts. The run's status is ``completed`` (exit 0), ``failed`` (non-zero
    exit) or ``interrupted`` (the child died of a signal, or this process received one of
    :data:`INTERRUPTING`).
    """
    argv = build_argv(cmd, shell=shell)
    base_env = dict(os.environ if env is None else env)
    resolve_program(argv[0], base_env)
    settings = {k: v for k, v in settings.items() if v is not None}
    run_name = name or default_name(cmd, shell=shell)

    with SignalGate(INTERRUPTING + FORWARDED_ONLY) as gate:
        # The meter's threads start here and inherit the blocked mask.
        # The command's resources, not this wrapper's: only the processes it starts count.
        meter = Meter(run_name, command=list(argv), env=base_env, children_only=True,
                      **settings).start()
        child_env = {**base_env, RUN_ID_ENV: meter.run_id, RUN_DIR_ENV: str(meter.path)}
        # In the foreground of a terminal the child shares our process group, as the shell
        # made it; elsewhere it gets its own, so that group-wide signals reach it once.
        isolated = not foreground_job()
        try:
            with gate.unblocked():
                proc = subprocess.Popen(argv, env=child_env,
                                        **(isolate_child() if isolated else {}))
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            report = meter.stop("failed", exit_code=code)
            raise RunError(f"{argv[0]}: cannot execute: {exc.strerror or exc}", code,
                           report) from None
        except ValueError as exc:  # e.g. an argument or variable holding a NUL byte
            report = meter.stop("failed", exit_code=126)
            raise RunError(f"{argv[0]}: cannot execute: {exc}", 126, report) from None
        interrupted = _wait_child(proc, meter, gate, Forwarder(proc.pid, isolated), on_status,
                                  status_period_s)
        # Signals arriving from here on are taken and dropped: the child is gone.
        gate.drain()
        code = exit_code_of(proc.returncode)
        if interrupted or proc.returncode < 0:
            status = "interrupted"
        else:
            status = "completed" if code == 0 else "failed"
        try:
            report = meter.stop(status, exit_code=code)
        except OSError as exc:
            raise RunError(f"could not write the report of the run in {meter.path}: {exc}",
                           code) from exc
    assert report is not None  # stop() returns None only in a forked child
    return RunResult(code, report)


def _wait_child(proc: subprocess.Popen[bytes], meter: Meter, gate: SignalGate,
                forwarder: Forwarder, on_status: Callable[[Snapshot], None] | None,
                status_period_s: float) -> bool:
    """Wait for ``proc``, forwarding signals and calling ``on_status``; whether an
    interrupting signal was received."""
    interrupted = False
    next_status = time.monotonic() + status_period_s
    while proc.poll() is None:
        timeout = _POLL_S
        if on_status is not None:
            timeout = min(timeout, next_status - time.monotonic())
        got = gate.wait(timeout)
        if got is not None:
            if got.signum == signal.SIGCHLD:
                continue
            if got.signum in INTERRUPTING:
                interrupted = True
            if proc.poll() is None:
                forwarder.forward(got)
            continue
        if on_status is not None and time.monotonic() >= next_status:
            try:
                on_status(meter.snapshot())
            except OSError as exc:  # e.g. the terminal went away: stop the display, not the run
                log.debug("live status disabled: %r", exc)
                on_status = None
            except Exception as exc:  # noqa: BLE001 - a display must never end a measured run
                log.warning("live status callback failed, disabled for this run: %r", exc)
                on_status = None
            next_status = time.monotonic() + status_period_s
    return interrupted


