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

import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._lazy import LazyLogger
from ..errors import ConfigError, EnergyMeterError
from ..report import Report
from ..settings import ENV_PREFIX, settings_dict
from . import experiment
from .meter import RUN_ID_ENV, Meter, Snapshot
from .signals import (
    FORWARDED_ONLY,
    INTERRUPTING,
    Adoption,
    Forwarder,
    SignalGate,
    describe_processes,
    end_watchdog,
    exit_code_of,
    has_controlling_terminal,
    join_group,
    watchdog,
)

#: The most often a live status callback is called.
STATUS_PERIOD_S = 1.0
#: The longest wait between two looks at the child, should its SIGCHLD go astray.
_POLL_S = 0.25
#: The longest cool-down between repeated runs (a day).
MAX_COOLDOWN_S = 86400.0

log = LazyLogger("energymeter")

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
    tags: Mapping[str, Any] | None = None,
    group_id: str | None = None,
    warmup: bool = False,
    items: float | None = None,
    **settings: Any,
) -> RunResult:
    """Run ``cmd`` as a child process and measure it; return its exit code and report.

    ``shell``: run ``sh -c " ".join(cmd)``. ``name``: the run's name (default: the program's
    base name). ``on_status``: called with a :class:`~.meter.Snapshot` at most every
    ``status_period_s`` seconds while the child runs (live displays). ``env``: the environment
    the settings are read from and the child gets (default ``os.environ``), plus
    ``ENERGYMETER_RUN_ID`` and ``ENERGYMETER_RUN_DIR`` (and the run's tags, group and warm-up
    flag, which a ``measure()`` in the command inherits). ``tags``, ``group_id``, ``warmup``:
    the run's experiment metadata (:class:`~.meter.Meter`); ``items``: the number of items
    (samples, tokens) the command processed, for the energy per item. Other keyword arguments
    are :class:`~energymeter.Settings` fields (``None`` = not set).

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

    with SignalGate(INTERRUPTING + FORWARDED_ONLY) as gate, Adoption(gate.active) as adoption:
        # The meter's threads start here and inherit the blocked mask.
        # The command's resources, not this wrapper's: only the processes it starts count.
        # An out that cannot be written: the command runs all the same, measured in memory.
        meter = Meter(run_name, command=list(argv), env=base_env, children_only=True,
                      tags=tags, group_id=group_id, warmup=warmup, fallback_to_memory=True,
                      **settings).start()
        child_env = {**base_env, **_explicit_settings_env(meter), RUN_ID_ENV: meter.run_id,
                     **experiment.child_env(meter.tags, meter.group_id, meter.warmup)}
        if meter.path is not None:
            child_env[RUN_DIR_ENV] = str(meter.path)
        else:  # measured in memory: no directory to name (nor an outer run's)
            child_env.pop(RUN_DIR_ENV, None)
        # Whatever the command starts inherits this: how its leftovers are told from
        # children other threads of this program start meanwhile.
        adoption.marker = f"{RUN_ID_ENV}={meter.run_id}".encode()
        # With a terminal the child shares our process group, as the shell made it (job
        # control); without one (batch) it gets its own, so that group-wide signals reach it
        # once, through us. Off the main thread nothing is forwarded: nothing is isolated.
        isolated = gate.active and not has_controlling_terminal()
        guard = watchdog() if isolated else None  # leads the command's group, from its start
        if guard is not None:  # a few hundred KB of sh: not the command's
            meter.exclude_process(guard.pid)
            adoption.exclude(guard.pid)
        try:
            with gate.unblocked():
                proc = subprocess.Popen(
                    argv, env=child_env,
                    **(join_group(guard.pid if guard else None) if isolated else {}))
        except OSError as exc:
            end_watchdog(guard)
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            report = meter.stop("failed", exit_code=code)
            raise RunError(f"{argv[0]}: cannot execute: {exc.strerror or exc}", code,
                           report) from None
        except ValueError as exc:  # e.g. an argument or variable holding a NUL byte
            end_watchdog(guard)
            report = meter.stop("failed", exit_code=126)
            raise RunError(f"{argv[0]}: cannot execute: {exc}", 126, report) from None
        adoption.exclude(proc.pid)  # its Popen reaps it
        group = (guard.pid if guard else proc.pid) if isolated else None
        adoption.group = group
        forwarder = Forwarder(proc.pid, group)
        status_calls = _StatusCalls(meter, on_status, status_period_s)
        try:
            interrupted, usage = _wait_child(proc, gate, forwarder, status_calls, adoption)
            # Before the watchdog stands down: it still guards the processes left running.
            if _left_behind(adoption, meter, gate, forwarder, status_calls,
                            wait=meter.settings.wait_orphans and not interrupted):
                interrupted = True
        finally:
            end_watchdog(guard)
        if usage is not None:
            meter.record_command_rusage(usage)
        # Signals arriving from here on are taken and dropped: the child is gone.
        gate.drain()
        code = exit_code_of(proc.returncode)
        if interrupted or proc.returncode < 0:
            status = "interrupted"
        else:
            status = "completed" if code == 0 else "failed"
        if items is not None:
            meter.count(items)
        try:
            report = meter.stop(status, exit_code=code)
        except OSError as exc:
            raise RunError(f"could not write the report of the run in {meter.path}: {exc}",
                           code) from exc
    assert report is not None  # stop() returns None only in a forked child
    return RunResult(code, report)


def repeat_command(
    cmd: Sequence[str],
    n: int,
    *,
    warmup: int = 0,
    cooldown_s: float = 0.0,
    on_run: Callable[[int, RunResult], None] | None = None,
    **kwargs: Any,
) -> list[RunResult]:
    """Run ``cmd`` ``warmup + n`` times with :func:`run_command` (same keyword arguments), the
    runs sharing a new ``group_id``; the first ``warmup`` are recorded as warm-up runs (left
    out of comparisons). ``cooldown_s`` seconds pass between runs, unmeasured. ``on_run`` is
    called after each run with its index and result. The repeats end early at a run that did
    not complete (non-zero exit, interrupted) or a signal during a cool-down (whose
    :class:`RunResult` is then the last one, its exit code ``128 + N``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"repeat n={n!r}; accepted: a whole number of runs >= 1")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup={warmup!r}; accepted: a whole number of runs >= 0")
    if not (isinstance(cooldown_s, (int, float)) and 0 <= cooldown_s <= MAX_COOLDOWN_S):
        raise ConfigError(f"cooldown_s={cooldown_s!r}; accepted: seconds from 0 to "
                          f"{MAX_COOLDOWN_S:g}")
    group_id = experiment.new_group_id()
    results: list[RunResult] = []
    for i in range(warmup + n):
        if i and cooldown_s:
            signum = _cool_down(cooldown_s)
            if signum is not None:
                results[-1] = RunResult(128 + signum, results[-1].report)
                break
        result = run_command(cmd, group_id=group_id, warmup=i < warmup, **kwargs)
        results.append(result)
        if on_run is not None:
            on_run(i, result)
        if result.exit_code != 0 or result.report.status != "completed":
            break
    return results


def _cool_down(seconds: float) -> int | None:
    """Wait ``seconds`` between repeats; an interrupting signal meanwhile ends the wait (and
    the repeats): its number is returned."""
    with SignalGate(INTERRUPTING) as gate:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            got = gate.wait(left)
            if got is not None and got.signum != signal.SIGCHLD:
                return got.signum
    return None


def _explicit_settings_env(meter: Meter) -> dict[str, str]:
    """The settings given to this run explicitly (options), and its out folder, as
    ``ENERGYMETER_*`` variables: a ``measure()`` inside the command is measured the same way
    (same region, PUE...) and writes its run beside this one."""
    out = {f"{ENV_PREFIX}OUT": str(meter.path.parent)} if meter.path is not None else {}
    values = settings_dict(meter.settings)
    for name, origin in values["origins"].items():
        if origin == "argument" and values[name] is not None:
            out[ENV_PREFIX + name.upper()] = str(values[name])
    return out


def _reap(proc: subprocess.Popen[bytes]) -> Any:
    """Reap ``proc`` if it has ended (its ``returncode`` set) and return the kernel's account
    of it (``resource.struct_rusage``: its peak RSS and CPU time with those of the processes
    it waited for), else None."""
    if proc.returncode is not None:
        return None
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere: let Popen find its code
        proc.poll()
        return None
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


class _StatusCalls:
    """Calls ``on_status`` with the meter's snapshot at most every ``period_s`` seconds; a
    callback that fails is dropped for the rest of the run."""

    def __init__(self, meter: Meter, on_status: Callable[[Snapshot], None] | None,
                 period_s: float) -> None:
        self.meter = meter
        self.on_status = on_status
        self.period_s = period_s
        self.next = time.monotonic() + period_s

    def timeout(self) -> float:
        """How long to wait for a signal before the next look (or call)."""
        if self.on_status is None:
            return _POLL_S
        return min(_POLL_S, self.next - time.monotonic())

    def tick(self) -> None:
        """Call ``on_status`` if it is due."""
        if self.on_status is None or time.monotonic() < self.next:
            return
        try:
            self.on_status(self.meter.snapshot())
        except OSError as exc:  # e.g. the terminal went away: stop the display, not the run
            log.debug("live status disabled: %r", exc)
            self.on_status = None
        except Exception as exc:  # noqa: BLE001 - a display must never end a measured run
            log.warning("live status callback failed, disabled for this run: %r", exc)
            self.on_status = None
        self.next = time.monotonic() + self.period_s


def _wait_child(proc: subprocess.Popen[bytes], gate: SignalGate, forwarder: Forwarder,
                status: _StatusCalls, adoption: Adoption) -> tuple[bool, Any]:
    """Wait for ``proc``, forwarding signals, calling the live status and reaping the orphans
    adopted meanwhile; whether an interrupting signal was received, and the kernel's account
    of the child (its rusage)."""
    interrupted = False
    usage = None
    while True:
        usage = _reap(proc)
        if proc.returncode is not None:
            break
        got = gate.wait(status.timeout())
        if got is not None:
            if got.signum == signal.SIGCHLD:
                adoption.reap()  # an adopted orphan (or the child: reaped above) ended
                continue
            if got.signum in INTERRUPTING:
                interrupted = True
            if proc.returncode is None:
                forwarder.forward(got)
            continue
        status.tick()
    return interrupted, usage


def _left_behind(adoption: Adoption, meter: Meter, gate: SignalGate, forwarder: Forwarder,
                 status: _StatusCalls, *, wait: bool) -> bool:
    """The processes the command left running when it exited: named in a warning of the
    run; with ``wait`` (setting ``wait_orphans``, and the run not interrupted already)
    measured until they have all ended, signals forwarded to them as to the command. A
    second interrupting signal meanwhile ends the wait (one they ignore must not keep the
    run going: a background job of ``sh`` ignores SIGINT). Whether an interrupting signal
    arrived meanwhile."""
    pids = adoption.left_behind()
    if not pids:
        return False
    n = len(pids)
    named = describe_processes(pids, meter.settings.redact)
    what = (f"{n} process{'es' if n > 1 else ''} the command started "
            f"{'were' if n > 1 else 'was'} still running when it exited ({named})")
    they, their = ("they", "their") if n > 1 else ("it", "its")
    if not wait:
        hint = ("the run was interrupted: not waited for" if meter.settings.wait_orphans else
                f"use --wait-orphans (setting wait_orphans) to measure until {they} "
                f"end{'' if n > 1 else 's'}")
        meter.warn(f"{what}; {their} work after that is not measured: {hint}")
        return False
    log.warning("the command exited; measuring until the %d process%s it left running "
                "end%s (%s)", n, "es" if n > 1 else "", "" if n > 1 else "s", named)
    interrupts = 0
    began = time.monotonic()
    while live := adoption.left_behind():
        got = gate.wait(status.timeout())
        if got is None:
            status.tick()
            continue
        if got.signum == signal.SIGCHLD:
            continue
        repeat = forwarder.is_repeat(got)
        forwarder.forward_left_behind(got, live)
        if got.signum not in INTERRUPTING or repeat:
            continue
        interrupts += 1
        if interrupts > 1:
            meter.warn(f"{what}: measured for {time.monotonic() - began:.1f} s after the "
                       f"command, until the run was interrupted with {len(live)} still "
                       "running (wait_orphans)")
            return True
        log.warning("%s passed on to the %d process%s still running; send it again to stop "
                    "waiting", signal.Signals(got.signum).name, len(live),
                    "es" if len(live) > 1 else "")
    meter.warn(f"{what}: measured until {they} ended, {time.monotonic() - began:.1f} s "
               "after the command (wait_orphans)")
    return interrupts > 0



