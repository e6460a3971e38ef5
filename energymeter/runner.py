"""Run a command under a :class:`~energymeter.meter.Meter` (``energymeter run``) and the live
power monitor (``energymeter monitor``).

:func:`run_command` checks the command, starts the meter in this process, then the child with
:class:`subprocess.Popen` (no pipes: the child's stdin, stdout and stderr are ours, byte for
byte). The meter's host probe measures this process's tree, which holds the child and every
grandchild. The child's exit code comes back in :class:`RunResult`, or ``128 + N`` when it died
of signal ``N``.

Signals
-------
``SIGINT``, ``SIGTERM``, ``SIGHUP`` and ``SIGQUIT`` sent to this process are forwarded to the
child and mark the run ``interrupted``; ``SIGUSR1`` and ``SIGUSR2`` are forwarded and change
nothing else (batch schedulers use them to ask for a checkpoint). This process never dies of
them: it waits for the child, then writes the report.

They are blocked in this process with :func:`signal.pthread_sigmask` *before* the meter starts
its threads (which inherit the mask) and taken with :func:`signal.sigtimedwait`, whose
``si_code`` tells a ``kill()`` (``SI_USER``) from a signal the kernel generated for the
terminal (``SI_KERNEL``: Ctrl-C, Ctrl-\\, hang-up). The child is in our process group, so the
terminal already delivered the latter to it: it is not sent a second time. The signals are
unblocked in the main thread only while the child is spawned, so that it starts with an
unblocked mask; one arriving in that window is caught by a Python handler and forwarded (its
origin cannot be told there). A signal this process inherited as ignored (``nohup``, ``&`` in a
non-interactive shell) stays ignored, and the child inherits that.

When :func:`run_command` is called outside the main thread (where signal handlers cannot be set)
no signal is forwarded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, EnergyMeterError

if TYPE_CHECKING:
    from .meter import Meter, Snapshot
    from .probes import Channel
    from .report import Report

#: Signals that end a measured command: forwarded, and the run is marked ``interrupted``.
INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: Signals only forwarded (checkpoint requests from batch schedulers).
FORWARDED_ONLY = (signal.SIGUSR1, signal.SIGUSR2)

#: ``siginfo.si_code`` values (Linux ``<asm-generic/siginfo.h>``); the signal module lacks them.
SI_USER = 0
SI_KERNEL = 0x80

#: The most often a live status callback is called.
STATUS_PERIOD_S = 1.0
#: The longest wait between two looks at the child, should its SIGCHLD go astray.
_POLL_S = 0.25
#: Default refresh period of :func:`monitor`.
MONITOR_REFRESH_S = 1.0

log = logging.getLogger("energymeter")

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")

RUN_ID_ENV = "ENERGYMETER_RUN_ID"
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


# -- signals -----------------------------------------------------------------------------------
class _SignalGate:
    """Blocks ``signals`` (and SIGCHLD) in this thread and those it starts, and hands them out
    through :meth:`wait`. A no-op outside the main thread."""

    def __init__(self, signals: Sequence[int]) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.signals = tuple(s for s in signals if signal.getsignal(s) != signal.SIG_IGN) \
            if self.active else ()
        self._waited = (*self.signals, signal.SIGCHLD)
        # Signals caught by the Python handler (arrived while unblocked): origin unknown.
        self.caught: list[int] = []
        self._old_handlers: dict[int, Any] = {}
        self._old_mask: set[int] | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.caught.append(signum)

    def __enter__(self) -> _SignalGate:
        if self.active:
            for sig in self.signals:
                self._old_handlers[sig] = signal.signal(sig, self._handler)
            self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._waited)
        return self

    @contextlib.contextmanager
    def unblocked(self) -> Iterator[None]:
        """Unblock in this thread for the block (so that a child spawned in it starts with an
        unblocked mask); a signal arriving meanwhile goes to :attr:`caught`."""
        if not self.active:
            yield
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self._waited)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, self._waited)

    def wait(self, timeout_s: float) -> tuple[int, int | None] | None:
        """The next signal as ``(signum, si_code)`` (``si_code`` None when caught by the
        handler), SIGCHLD included, or None after ``timeout_s``."""
        if self.caught:
            return self.caught.pop(0), None
        if not self.active:
            time.sleep(timeout_s)
            return None
        info = signal.sigtimedwait(self._waited, max(timeout_s, 0.0))
        if info is None:
            return None
        return info.si_signo, info.si_code

    def drain(self) -> list[int]:
        """Take every pending signal now (without waiting)."""
        taken = list(self.caught)
        self.caught.clear()
        if self.active:
            while (info := signal.sigtimedwait(self._waited, 0)) is not None:
                if info.si_signo != signal.SIGCHLD:
                    taken.append(info.si_signo)
        return taken

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        self.drain()
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if self._old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)


def exit_code_of(returncode: int) -> int:
    """A shell's exit code for a :class:`subprocess.Popen` return code (``-N`` → ``128+N``)."""
    return 128 - returncode if returncode < 0 else returncode


# -- run ---------------------------------------------------------------------------------------
def _start_meter(name: str, argv: Sequence[str], settings: Mapping[str, Any],
                 env: Mapping[str, str] | None) -> Meter:
    from .meter import Meter

    meter = Meter(name, command=list(argv), env=env, **settings)
    return meter.start()


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
    base name). ``on_status``: called with a :class:`~energymeter.meter.Snapshot` at most every
    ``status_period_s`` seconds while the child runs (live displays). ``env``: the environment
    the settings are read from and the child gets (default ``os.environ``), plus
    ``ENERGYMETER_RUN_ID`` and ``ENERGYMETER_RUN_DIR``. Other keyword arguments are
    :class:`~energymeter.config.Settings` fields (``None`` = not set).

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

    with _SignalGate(INTERRUPTING + FORWARDED_ONLY) as gate:
        # The meter's threads start here and inherit the blocked mask.
        meter = _start_meter(run_name, argv, settings, base_env)
        child_env = {**base_env, RUN_ID_ENV: meter.run_id, RUN_DIR_ENV: str(meter.path)}
        try:
            with gate.unblocked():
                proc = subprocess.Popen(argv, env=child_env)
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            report = meter.stop("failed", exit_code=code)
            raise RunError(f"{argv[0]}: cannot execute: {exc.strerror or exc}", code,
                           report) from None
        except ValueError as exc:  # e.g. an argument or variable holding a NUL byte
            report = meter.stop("failed", exit_code=126)
            raise RunError(f"{argv[0]}: cannot execute: {exc}", 126, report) from None
        interrupted = _wait_child(proc, meter, gate, on_status, status_period_s)
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


def _wait_child(proc: subprocess.Popen[bytes], meter: Meter, gate: _SignalGate,
                on_status: Callable[[Snapshot], None] | None, status_period_s: float) -> bool:
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
            signum, code = got
            if signum == signal.SIGCHLD:
                continue
            if signum in INTERRUPTING:
                interrupted = True
            # A terminal's signal already reached the child (same foreground process group).
            if code != SI_KERNEL and proc.poll() is None:
                proc.send_signal(signum)
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


# -- monitor -----------------------------------------------------------------------------------
def _seconds(what: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number == number and 0 < number < float("inf")):
        raise ConfigError(f"{what} is {value!r}; accepted: a number of seconds > 0, e.g. 1.0")
    return number


@dataclass(frozen=True)
class MonitorRow:
    """One refresh of :func:`monitor`: the snapshot and the channels it covers."""

    snapshot: Snapshot
    channels: tuple[Channel, ...]


def monitor(
    *,
    refresh_s: float | None = None,
    duration_s: float | None = None,
    on_row: Callable[[MonitorRow], None] | None = None,
    on_start: Callable[[Meter], None] | None = None,
    name: str = "monitor",
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Report:
    """Measure the machine until SIGINT (Ctrl-C), SIGTERM, SIGHUP or ``duration_s``, calling
    ``on_row`` every ``refresh_s`` seconds (default :data:`MONITOR_REFRESH_S`) with the power of
    every channel since the previous row. Returns the report of the run (named ``monitor``).

    Ending with Ctrl-C or ``duration_s`` is the normal end (``completed``); SIGTERM or SIGHUP
    mark the run ``interrupted``. ``on_start`` is called with the started meter.
    """
    refresh = MONITOR_REFRESH_S if refresh_s is None else _seconds("refresh_s", refresh_s)
    if duration_s is not None:
        duration_s = _seconds("duration_s", duration_s)
    settings = {k: v for k, v in settings.items() if v is not None}
    status = "completed"
    with _SignalGate(INTERRUPTING) as gate:
        meter = _start_meter(name, ["energymeter", "monitor"], settings,
                             dict(os.environ if env is None else env))
        if on_start is not None:
            on_start(meter)
        begun = time.monotonic()
        end = begun + duration_s if duration_s is not None else None
        next_row = begun + refresh
        while True:
            now = time.monotonic()
            wake = next_row if end is None else min(next_row, end)
            got = gate.wait(wake - now)
            if got is not None:
                if got[0] == signal.SIGCHLD:
                    continue
                if got[0] != signal.SIGINT:
                    status = "interrupted"
                break
            now = time.monotonic()
            if now >= next_row:
                if on_row is not None:
                    try:
                        on_row(MonitorRow(meter.snapshot(), meter.channels))
                    except BrokenPipeError:  # `energymeter monitor | head`: the reader left
                        log.debug("monitor output closed; ending the monitor run")
                        break
                next_row += refresh * max(1, int((now - next_row) / refresh) + 1)
            if end is not None and now >= end:
                break
        report = meter.stop(status)
    assert report is not None
    return report


def _w(value: float) -> str:
    return f"{value:.1f}"


def _column_names(channels: Sequence[Channel]) -> list[str]:
    from .report import counted

    # "~": estimated by a model; "*": a sub-zone, already inside its parent's column.
    return (["time", "total"]
            + [c.id + ("~" if c.method == "model" else "") + ("" if counted(c) else "*")
               for c in channels]
            + ["energy"])


def _aligned(cells: Sequence[str], names: Sequence[str]) -> str:
    return " ".join(cell.rjust(max(len(name), 8)) for cell, name in zip(cells, names, strict=True))


def monitor_header(channels: Sequence[Channel]) -> list[str]:
    """The two header lines of the monitor table (names, then units), ``nvidia-smi dmon``
    style. A channel estimated by a model is marked ``~``, a sub-zone ``*``."""
    names = _column_names(channels)
    units = ["s", *["W"] * (len(channels) + 1), "J"]
    return ["#" + _aligned(names, names)[1:], "#" + _aligned(units, names)[1:]]


def monitor_line(row: MonitorRow) -> str:
    """One line of the monitor table for ``row`` (columns as :func:`monitor_header`)."""
    snap = row.snapshot
    cells = [f"{snap.t_s:.1f}", _w(snap.power_w),
             *[_w(snap.power_by_channel_w.get(c.id, 0.0)) for c in row.channels],
             f"{snap.energy_j:.1f}"]
    return _aligned(cells, _column_names(row.channels))


def status_line(snapshot: Snapshot) -> str:
    """The one-line live status of ``energymeter run``: elapsed, energy so far, power now."""
    t = snapshot.t_s
    elapsed = f"{int(t // 3600)}:{int(t % 3600 // 60):02d}:{int(t % 60):02d}" if t >= 3600 \
        else f"{int(t // 60)}:{int(t % 60):02d}"
    energy = snapshot.energy_j
    shown = f"{energy / 3600:.3f} Wh" if energy >= 3600 else f"{energy:.1f} J"
    return f"energymeter: {elapsed} elapsed, {shown}, {snapshot.power_w:.1f} W"


def write_report_json(report: Report, path: str | Path) -> Path:
    """Write ``report``'s JSON to ``path`` (atomically) and return the path."""
    from .storage import write_json_atomic

    target = Path(path)
    write_json_atomic(target, report.to_dict())
    return target
